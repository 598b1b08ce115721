"""The nested lane: tests that need a hardware-assisted KVM run in L1, a TCG guest whose CPU has SVM.

    from isola.vmm.nested import run_in_l1
    result = run_in_l1(["python", "-m", "pytest", "-m", "real_kvm", "tests/nested"], timeout=900)
    result.status, result.output, result.summary()

``python -m isola.vmm.nested -- COMMAND...`` does the same from a shell (``make test-nested``). See `lane` for
how L1 is launched and what it sees, and `image` for what L1 boots.
"""

from isola.vmm.nested.image import L1Assets, prepare
from isola.vmm.nested.lane import L1Result, LaneError, LaneTimeoutError, project_dir, run_in_l1

__all__ = ["L1Assets", "L1Result", "LaneError", "LaneTimeoutError", "prepare", "project_dir", "run_in_l1"]
