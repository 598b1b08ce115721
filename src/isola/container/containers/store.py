"""Where `isola container` remembers containers: one directory per container under `$ISOLA_HOME/containers`,
holding its record (`container.json`, replaced atomically), its OCI bundle, its overlayfs upper and work
directories, the root mount point and its log.

A small JSON store rather than the platform's SQLite store, on purpose: everything a container owns already lives
in its directory, so one `rm -r` is the whole clean-up and a half-made container is found by its directory alone;
the monitor of a detached container writes the exit status without opening a database whose schema another
component migrates; and the records are read by a person debugging a container with `cat`. Writers take an
flock on the directory's `lock` file; names are reserved under the store's own lock, so two `run --name x`
cannot both win.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from isola import paths
from isola.errors import ConflictError, NotFoundError, UsageError

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
RECORD = "container.json"


@dataclass
class Container:
    id: str
    name: str
    image: str  # as the user named it
    image_id: str
    command: list[str]
    created: str
    status: str = "created"  # created, running, exited
    pid: int = 0
    pid_start: int = 0
    exit_code: int | None = None
    started_at: str = ""
    finished_at: str = ""
    auto_remove: bool = False
    tty: bool = False
    monitor_pid: int = 0
    error: str = ""  # why it could not start, when it could not (docker's State.Error)
    config: dict[str, Any] = field(default_factory=dict)  # the flags, as docker inspect's HostConfig shows them

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def process_start(pid: int) -> int | None:
    """`pid`'s start time (clock ticks since boot), or None when it is gone or a zombie: with the recorded start
    time this tells a running container from a recycled pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(b")") + 2 :].split()
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


class ContainerStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or paths.home() / "containers"

    def dir(self, container_id: str) -> Path:
        return self.root / container_id

    def log_path(self, container_id: str) -> Path:
        return self.dir(container_id) / "log.jsonl"

    @contextmanager
    def _lock(self, path: Path) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def containers(self) -> list[Container]:
        if not self.root.is_dir():
            return []
        found = []
        for d in self.root.iterdir():
            c = self._read(d / RECORD)
            if c is not None:
                found.append(c)
        return sorted(found, key=lambda c: c.created, reverse=True)

    def _read(self, path: Path) -> Container | None:
        try:
            return Container(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def read(self, container_id: str) -> Container:
        """The container with exactly this id: for callers that hold an id (the engine), which must not fall
        back to names and prefixes the way `get` does for a person's reference."""
        container = self._read(self.dir(container_id) / RECORD)
        if container is None:
            raise NotFoundError(f"no such container: {container_id}")
        return container

    def get(self, ref: str) -> Container:
        """A container by name, full id or unique id prefix, as docker finds them."""
        containers = self.containers()
        for c in containers:
            if ref in (c.name, c.id):
                return c
        matches = [c for c in containers if len(ref) >= 3 and c.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ConflictError(f"container id prefix {ref!r} is ambiguous")
        raise NotFoundError(f"no such container: {ref}")

    def create(self, name: str | None, container_id: str | None = None, **fields: Any) -> Container:
        """Reserve a name and a directory for a new container (under the store lock). `container_id` is for a
        caller that already has an id for it (the engine: the platform's instance id); else a random one."""
        self.root.mkdir(parents=True, exist_ok=True)
        container_id = container_id or secrets.token_hex(32)
        with self._lock(self.root / ".lock"):
            if name is None:
                name = f"isola_{container_id[:8]}"
            elif not _NAME.match(name):
                raise UsageError(f"invalid container name {name!r}: use letters, digits and _.- only")
            if any(c.name == name for c in self.containers()):
                raise ConflictError(f'the container name "{name}" is already in use', hint="`isola container rm` it")
            try:
                self.dir(container_id).mkdir(mode=0o700)
            except FileExistsError:
                raise ConflictError(f"container {container_id} exists already") from None
            container = Container(id=container_id, name=name, created=now(), **fields)
            self.write(container)
        return container

    def write(self, container: Container) -> None:
        path = self.dir(container.id) / RECORD
        tmp = path.with_name(f".{RECORD}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps(container.to_json(), indent=1))
        os.rename(tmp, path)

    @contextmanager
    def update(self, container_id: str) -> Iterator[Container]:
        """Read-modify-write of one record under its lock."""
        d = self.dir(container_id)
        if not d.is_dir():
            raise NotFoundError(f"no such container: {container_id}")
        with self._lock(d / "lock"):
            container = self._read(d / RECORD)
            if container is None:
                raise NotFoundError(f"no such container: {container_id}")
            yield container
            self.write(container)

    def forget(self, container_id: str) -> None:
        shutil.rmtree(self.dir(container_id), ignore_errors=True)

    def images_in_use(self) -> set[str]:
        return {c.image_id for c in self.containers()}


def live_status(c: Container) -> str:
    """The status as it is now: a container recorded as running whose init is gone (its monitor was killed,
    the host rebooted) has exited, whatever the record says."""
    if c.status == "running" and process_start(c.pid) != c.pid_start:
        return "exited"
    return c.status
