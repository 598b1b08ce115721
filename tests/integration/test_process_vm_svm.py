"""Process mode where `syscall` enters CPL 0 (VMX/SVM), the path kvm_pvm never takes: plain returns through the
stub's `sysretq`, exceptions and signal handlers, rt_sigreturn and new images loaded with user CS/SS.

Marked `real_kvm`: it runs where /dev/kvm is hardware-assisted, which on a kvm_pvm host means inside the
nested lane's L1 (kvm_amd; `make test-nested`). Everything runs natively there too, and the outputs must match.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_process_vm import busybox, deterministic_bytes, no_traceback, run_vm
from tests.integration.test_process_vm_hostile import (
    FIXTURES,
    LINUX_TRAPS,
    LOOSE_TRAPS,
    trap_results,
)

pytestmark = [pytest.mark.real_kvm, pytest.mark.slow, pytest.mark.timeout(900)]

ENV = {"PATH": "/bin", "LC_ALL": "C"}
CASES = {
    "echo": ["echo", "hello from CPL 0"],
    "pipeline-fork-exec": ["sh", "-c", "seq 1 300 | grep 7 | wc -l"],
    "signal-handler": ["sh", "-c", "trap 'echo got USR1' USR1; kill -USR1 $$; echo after"],
    "sha256": ["sha256sum", "data.bin"],
    "gzip-roundtrip": ["sh", "-c", "gzip -c data.bin | gzip -dc | sha256sum"],
    "exit-status": ["sh", "-c", "exit 7"],
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("svm-root")
    (where / "bin").mkdir()
    shutil.copy2(busybox(), where / "bin" / "busybox")
    for name in ("sh", "echo", "seq", "grep", "wc", "sha256sum", "gzip", "kill"):
        (where / "bin" / name).symlink_to("busybox")
    (where / "data.bin").write_bytes(deterministic_bytes(200 * 1024, 5))
    return where


@pytest.mark.parametrize("name", CASES)
def test_busybox_matches_native_through_sysretq(name: str, root: Path) -> None:
    args = CASES[name]
    ours = run_vm("/bin/busybox", args, root=root, env=ENV, options=["--stats"], timeout=600)
    theirs = subprocess.run(
        [str(root / "bin" / "busybox"), *args], cwd=root, env=ENV, capture_output=True, timeout=600, check=False
    )
    no_traceback(ours)
    assert ours.stdout == theirs.stdout, (ours.stdout[-2000:], ours.stderr[-2000:])
    assert ours.returncode == theirs.returncode, ours.stderr[-2000:]
    assert b"syscall entry: CPL 0 (VMX/SVM: sysretq)" in ours.stderr, ours.stderr[-2000:]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("needs gcc and a static libc (Debian: gcc, libc6-dev)")
    out = tmp_path_factory.mktemp("svm-programs")
    programs = {}
    for name in ("traps", "die"):
        target = out / name
        result = subprocess.run(
            [gcc, "-static", "-O1", "-o", str(target), str(FIXTURES / f"{name}.c")],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        programs[name] = target
    return programs


def test_exceptions_at_cpl0_signal_as_on_linux(built: dict[str, Path]) -> None:
    """~40 trapping and privileged instructions: the exception enters CPL 0 through the IDT and the handler's
    return (rt_sigreturn) goes back to CPL 3 with user CS/SS loaded by the VMM. Checked against what Linux on
    hardware answers (LINUX_TRAPS): the same program run natively in L1 is not a reference, since L1 is QEMU's
    TCG, which gets some of these wrong (`int1` is SIGILL there, and `iretq` to ring 0 ends the program)."""
    result = run_vm(str(built["traps"]), [], options=["--memory", "256"], timeout=600)
    no_traceback(result)
    ours = trap_results(result)
    for name, expected in LINUX_TRAPS.items():
        assert ours[name] == expected, (name, ours[name])
    harmless = {"cpuid", "rdtsc", "syscall_enosys", "enosys", *LOOSE_TRAPS}
    survived = [name for name, line in ours.items() if name not in harmless and not line.startswith("sig=")]
    assert not survived, survived  # every privileged instruction trapped
    # `int1` (icebp) is not checked: TCG raises #UD for it where hardware raises #DB (L1 natively gets SIGILL too)


@pytest.mark.parametrize(
    ("args", "status", "line"),
    [
        (["store", "0x10"], 139, rb"isola-vmm: guest SIGSEGV at pc=0x[0-9a-f]+ addr=0x10\n"),
        (["abort"], 134, rb"isola-vmm: guest killed by SIGABRT\n"),
        (["exit", "42"], 42, rb""),
    ],
)
def test_ways_to_end(built: dict[str, Path], args: list[str], status: int, line: bytes) -> None:
    result = run_vm(str(built["die"]), args, options=["--memory", "256"], timeout=600)
    assert result.returncode == status, result.stderr[-2000:]
    assert result.stdout == b"before\n"
    assert re.fullmatch(line, result.stderr), result.stderr
