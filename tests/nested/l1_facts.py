"""What L1 looks like from the chroot, printed as one JSON line; test_lane.py runs it in L1 with ``python -m``.

A script of its own rather than ``python -c`` because L1 takes its command from a kernel command line of at
most 2 KiB, and because the same facts are the ones a person debugging the lane would want.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from isola.vmm.kvm import system
from tests.nested import kvm_hello


def _write_errno(path: Path) -> int:
    """0 if `path` could be written (the write stays in L1), else the errno."""
    try:
        path.write_text("written in L1\n")
    except OSError as exc:
        return exc.errno or -1
    return 0


def main() -> None:
    info = system.probe()
    project = Path.cwd()
    facts = {
        "kvm": {"usable": info.usable, "provider": info.provider, "api_version": info.api_version},
        "pyproject_sha256": hashlib.sha256((project / "pyproject.toml").read_bytes()).hexdigest(),
        "host_write_errno": _write_errno(Path("/etc/isola-nested-lane-probe")),
        "project_write_errno": _write_errno(project / "isola-nested-lane-probe"),
        "tmp_write_errno": _write_errno(Path("/tmp/probe")),
        "hello": asdict(kvm_hello.run()),
    }
    print("L1-FACTS " + json.dumps(facts), flush=True)


if __name__ == "__main__":
    main()
