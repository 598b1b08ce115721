"""The `isola-vmm` command: `isola-vmm run --process ...` goes straight to the process VM's launcher, anything
else to the kernel-mode VMM (`launch.py`). Deciding here, before either is imported, keeps the device model,
ACPI and virtio (~25 ms of imports) out of a process VM's start-up."""

from __future__ import annotations

import sys


def entry() -> None:
    if sys.argv[1:2] == ["run"]:
        from isola.vmm.process import cli

        sys.exit(cli.main(sys.argv[2:]))
    from isola.vmm import launch

    sys.exit(launch.main())


if __name__ == "__main__":
    entry()
