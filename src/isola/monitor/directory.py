"""The state directory of one instance of an engine with a monitor per guest: what the engine and the instance's
monitor tell each other, so that any process — a restarted daemon, `isola` in a shell — knows the instance from
its id alone.

    <state root>/<id>/
      instance.json   written by create (and resize): the spec, and what the monitor runs
      monitor.json    written by the monitor once the guest runs: the identities of its processes
      exit.json       written by the monitor when the guest has ended: exit code, how it ended, CPU time
      console.sock    the console
      console.log     what the guest wrote
      monitor.log     the monitor's own stderr, where a bug in it would leave a traceback
      lock            held by the engine while it starts or deletes the instance

An engine adds its own files (a vm's root/, a metal instance's files/) through a subclass. Every record is JSON
written to a temporary file and renamed over the old one, so a reader never sees half of one, and a writer
killed midway leaves the previous record intact.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from isola.errors import NotFoundError, UsageError

INSTANCE = "instance.json"
MONITOR = "monitor.json"
EXIT = "exit.json"

D = TypeVar("D", bound="InstanceDir")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_id(instance_id: str) -> None:
    """UsageError unless `instance_id` can name a directory (and a cgroup) safely: no '/', no '..'."""
    if not isinstance(instance_id, str) or not _ID.fullmatch(instance_id):
        raise UsageError(f"{instance_id!r}: an instance id is 1-128 letters, digits, '-', '_' or '.'")


def open_existing(directory: D, instance_id: str, kind: str) -> D:
    """`directory` of instance `instance_id`, or NotFoundError when no instance of this engine has that id."""
    if not (directory.path / INSTANCE).is_file():
        raise NotFoundError(f"there is no {kind} instance {instance_id}")
    return directory


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
