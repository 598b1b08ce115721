"""Where isola-oci remembers a container between its invocations: one directory per container under --root,
holding state.json (written to a temporary name, then renamed) and locked with flock(2) while a command changes
it. The runtime's process does not live on: only the container's init does, so the status is worked out each
time from the init's pid, its start time (so a recycled pid is not mistaken for it) and whether `start` ran.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time

from isola.errors import ConflictError, InvalidSpecError, NotFoundError, PermissionDeniedError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, which costs ~2 ms
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ROOT = "/run/isola-oci"
STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"
"""The FIFO the created init waits to open for writing; `start` opens it for reading to let the init exec."""

_ID = re.compile(r"^[\w+.-]+$")


def check_id(container_id: str) -> str:
    """Container ids name directories: letters, digits and `_+.-` only, as runc allows."""
    if not _ID.match(container_id) or container_id in (".", ".."):
        raise InvalidSpecError(f"invalid container id {container_id!r}: use letters, digits and _+.- only")
    return container_id


def rfc3339(ns: int) -> str:
    """A UTC timestamp with nanoseconds, the form runc writes in `created`."""
    seconds, frac = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


def process_start(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (/proc/PID/stat field 22), or None if it is gone or a
    zombie: a container whose init is a zombie has stopped, whoever is yet to reap it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


class Record:
    """What state.json holds: the OCI state plus what later commands need (the config, the cgroups).
    A plain class: `start` changes `started`, and the dataclasses module is too slow to import here."""

    def __init__(
        self,
        *,
        id: str,
        pid: int,
        pid_start: int,
        bundle: str,
        rootfs: str,
        created: str,
        owner: str,
        annotations: dict[str, str],
        config: dict[str, Any],
        cgroups: dict[str, str],  # hierarchy mountpoint -> the container's cgroup directory in it
        started: bool = False,
    ) -> None:
        self.id = id
        self.pid = pid
        self.pid_start = pid_start
        self.bundle = bundle
        self.rootfs = rootfs
        self.created = created
        self.owner = owner
        self.annotations = annotations
        self.config = config
        self.cgroups = cgroups
        self.started = started

    def alive(self) -> bool:
        return self.pid > 0 and process_start(self.pid) == self.pid_start

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": self.pid,
            "pidStart": self.pid_start,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
            "annotations": self.annotations,
            "config": self.config,
            "cgroups": self.cgroups,
            "started": self.started,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Record:
        return cls(
            id=raw["id"],
            pid=raw["pid"],
            pid_start=raw["pidStart"],
            bundle=raw["bundle"],
            rootfs=raw["rootfs"],
            created=raw["created"],
            owner=raw["owner"],
            annotations=raw["annotations"],
            config=raw["config"],
            cgroups=raw["cgroups"],
            started=raw["started"],
        )


def oci_state(record: Record, status: str, version: str) -> dict[str, Any]:
    """The state JSON `isola-oci state` prints and hooks read on stdin (runtime-spec plus runc's fields)."""
    state: dict[str, Any] = {
        "ociVersion": version,
        "id": record.id,
        "pid": record.pid if status != "stopped" else 0,
        "status": status,
        "bundle": record.bundle,
        "rootfs": record.rootfs,
        "created": record.created,
        "owner": record.owner,
    }
    if record.annotations:
        state["annotations"] = record.annotations
    return state


class Store:
    """The --root directory."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def dir(self, container_id: str) -> str:
        return os.path.join(self.root, check_id(container_id))

    def reserve(self, container_id: str) -> str:
        """Make the container's directory; fails if the id is taken. mkdir is the atomic claim."""
        path = self.dir(container_id)
        try:
            os.makedirs(self.root, mode=0o711, exist_ok=True)
            os.mkdir(path, 0o711)
        except FileExistsError:
            raise ConflictError(f"container {container_id!r} already exists") from None
        except PermissionError:
            raise PermissionDeniedError(f"cannot write the state directory {self.root}") from None
        return path

    def write(self, record: Record) -> None:
        """Replace state.json atomically: a reader sees the old or the new record, never half of one."""
        path = os.path.join(self.dir(record.id), STATE_FILE)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(record.to_json(), f)
        os.rename(tmp, path)

    def read(self, container_id: str) -> Record:
        path = os.path.join(self.dir(container_id), STATE_FILE)
        try:
            with open(path, "rb") as f:
                return Record.from_json(json.loads(f.read()))
        except FileNotFoundError:
            raise NotFoundError(f"container {container_id!r} does not exist") from None
        except (ValueError, KeyError) as exc:
            raise ConflictError(f"container {container_id!r} has a damaged state file: {exc}") from None

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.exists(os.path.join(self.root, n, STATE_FILE)))

    def lock(self, container_id: str) -> Lock:
        return Lock(self.dir(container_id), container_id)


class Lock:
    """An exclusive flock on the container's directory, for the commands that change a container."""

    def __init__(self, path: str, container_id: str) -> None:
        self.path = path
        self.container_id = container_id
        self.fd = -1

    def __enter__(self) -> Lock:
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"container {self.container_id!r} does not exist") from None
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
                return self
            except OSError as exc:
                if exc.errno != errno.EINTR:
                    raise

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
