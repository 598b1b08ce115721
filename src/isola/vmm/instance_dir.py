"""The state directory of one instance of the vm engine: what the engine and the instance's monitor tell each
other, so that any process — a restarted daemon, `isola` in a shell — knows the instance from its id alone.

    <state root>/<id>/        (default /run/isola/vm/<id>: runtime state, gone with a reboot, as the guests are)
      instance.json   written by create (and resize): the spec, and what the monitor runs
      monitor.json    written by the monitor once the VM runs: its own and the launcher's and the VM's identities
      exit.json       written by the monitor when the VM has ended: exit code, how it ended, CPU time
      console.sock    the console (process mode: the monitor serves it; kernel mode: isola-vmm's --console-sock)
      console.log     process mode: all the guest wrote; kernel mode: isola-vmm's own messages
      monitor.log     the monitor's own stderr, where a bug in it would leave a traceback
      root/           process mode without an image: the program alone, the VM's /
      vm.json         kernel mode: the VM document isola-vmm boots
      lock            held by the engine while it starts or deletes the instance

Every record is JSON written to a temporary file and renamed over the old one, so a reader never sees half
of one, and a writer killed midway leaves the previous record intact.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

INSTANCE = "instance.json"
MONITOR = "monitor.json"
EXIT = "exit.json"


class InstanceDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def console(self) -> Path:
        return self.path / "console.sock"

    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def monitor_log(self) -> Path:
        return self.path / "monitor.log"

    @property
    def root(self) -> Path:
        return self.path / "root"

    @property
    def vm_document(self) -> Path:
        return self.path / "vm.json"

    def read(self, name: str) -> dict[str, Any] | None:
        """The record `name`, or None when it has not been written."""
        try:
            doc = json.loads((self.path / name).read_text())
        except FileNotFoundError:
            return None
        assert isinstance(doc, dict)
        return doc

    def write(self, name: str, doc: dict[str, Any]) -> None:
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=self.path)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(doc, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path / name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def remove(self, *names: str) -> None:
        for name in names:
            (self.path / name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the instance's lock: one start or delete at a time, whichever process asks."""
        with open(self.path / "lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
