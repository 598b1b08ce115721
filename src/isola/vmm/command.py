"""The `isola-vmm` command: `isola-vmm run --process ...` goes straight to the process VM's launcher, anything
else to the kernel-mode VMM (`launch.py`). Deciding here, before either is imported, keeps the device model,
ACPI and virtio (~25 ms of imports) out of a process VM's start-up."""

from __future__ import annotations

import contextlib
import os
import sys


def entry() -> None:
    if sys.argv[1:2] == ["run"]:
        from isola.vmm.process import cli

        status = cli.main(sys.argv[2:])
        # Leave without the interpreter's teardown (~10 ms of freeing modules one object at a time): the VM
        # has ended, its output is written and the temporary root removed; only Python's buffers remain.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(status)
    from isola.vmm import launch

    sys.exit(launch.main())


if __name__ == "__main__":
    entry()
