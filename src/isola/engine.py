"""The one interface every engine offers the platform: emulated, vm, container and metal alike.

The daemon drives guests only through `Engine`, never through an engine's internals, so a rung can be
rebuilt (or a second implementation added) without touching the platform. Each guest has its own monitor
process; an engine's methods address it by instance id and must work from a fresh process (after a daemon
restart), which is why they take ids, not objects.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from isola.errors import InvalidSpecError, UnsupportedError


class Kind(StrEnum):
    EMULATED = "emulated"
    VM = "vm"
    CONTAINER = "container"
    METAL = "metal"


class VmMode(StrEnum):
    KERNEL = "kernel"  # the guest boots its own kernel
    PROCESS = "process"  # one program at CPL3, its syscalls served by isola


class State(StrEnum):
    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class Resources:
    vcpus: int = 1
    memory_mib: int = 256
    disk_gib: int = 0

    def validate(self) -> None:
        if self.vcpus < 1:
            raise InvalidSpecError("must be at least 1", field="resources.vcpus")
        if self.memory_mib < 1:
            raise InvalidSpecError("must be at least 1", field="resources.memory_mib")
        if self.disk_gib < 0:
            raise InvalidSpecError("must not be negative", field="resources.disk_gib")


@dataclass(frozen=True)
class InstanceSpec:
    """What a tenant asks for. `mode` is required for `vm` and refused for every other kind."""

    name: str
    kind: Kind
    mode: VmMode | None = None
    resources: Resources = field(default_factory=Resources)
    image: str | None = None
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    networks: tuple[str, ...] = ()

    def validate(self) -> None:
        if not self.name or len(self.name) > 63 or not all(c.isalnum() or c in "-_." for c in self.name):
            raise InvalidSpecError("1-63 letters, digits, '-', '_' or '.'", field="name")
        if self.kind is Kind.VM and self.mode is None:
            raise InvalidSpecError("a vm needs a mode: kernel or process", field="mode")
        if self.kind is not Kind.VM and self.mode is not None:
            raise InvalidSpecError(f"only a vm has a mode, not a {self.kind.value}", field="mode")
        self.resources.validate()

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> InstanceSpec:
        """Build and validate a spec from JSON-like data, naming the field that is wrong."""
        known = {"name", "kind", "mode", "resources", "image", "command", "env", "networks"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise InvalidSpecError("unknown field", field=unknown[0])
        try:
            kind = Kind(str(doc.get("kind")))
        except ValueError:
            raise InvalidSpecError(f"must be one of {', '.join(k.value for k in Kind)}", field="kind") from None
        try:
            mode = VmMode(doc["mode"]) if doc.get("mode") is not None else None
        except ValueError:
            raise InvalidSpecError("must be kernel or process", field="mode") from None
        res = doc.get("resources", {})
        if not isinstance(res, Mapping) or set(res) - {"vcpus", "memory_mib", "disk_gib"}:
            raise InvalidSpecError("expected an object with vcpus, memory_mib, disk_gib", field="resources")
        for key, value in res.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidSpecError("must be an integer", field=f"resources.{key}")
        command = doc.get("command", [])
        if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
            raise InvalidSpecError("must be a list of strings", field="command")
        env = doc.get("env", {})
        if not isinstance(env, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise InvalidSpecError("must map strings to strings", field="env")
        networks = doc.get("networks", [])
        if not isinstance(networks, list) or not all(isinstance(n, str) for n in networks):
            raise InvalidSpecError("must be a list of network names", field="networks")
        name, image = doc.get("name"), doc.get("image")
        if not isinstance(name, str):
            raise InvalidSpecError("must be a string", field="name")
        if image is not None and not isinstance(image, str):
            raise InvalidSpecError("must be a string", field="image")
        spec = cls(name, kind, mode, Resources(**res), image, tuple(command), dict(env), tuple(networks))
        spec.validate()
        return spec


@dataclass(frozen=True)
class Status:
    """What an engine knows about one guest right now."""

    instance_id: str
    state: State
    monitor_pid: int | None = None
    exit_code: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Stats:
    """Usage counters. `engine` holds what only some rungs have: VM exits, emulator MIPS, …"""

    cpu_ns: int = 0
    memory_bytes: int = 0
    io_read_bytes: int = 0
    io_write_bytes: int = 0
    engine: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


@runtime_checkable
class Engine(Protocol):
    """One rung of the ladder. Methods raise `isola.errors` classes: NotFoundError for an unknown id,
    ConflictError for an operation the current state forbids, UnsupportedError for what this host or rung
    cannot do (e.g. live memory resize of a process VM)."""

    kind: Kind

    def create(self, instance_id: str, spec: InstanceSpec) -> Status: ...
    def start(self, instance_id: str) -> Status: ...
    def stop(self, instance_id: str, timeout_s: float = 10.0) -> Status: ...
    def kill(self, instance_id: str, signal: int) -> None: ...
    def delete(self, instance_id: str, force: bool = False) -> None: ...
    def state(self, instance_id: str) -> Status: ...
    def console(self, instance_id: str) -> str:
        """Path of a unix socket carrying the guest's console (bytes both ways)."""
        ...

    def exec(self, instance_id: str, argv: list[str], env: Mapping[str, str] | None = None) -> ExecResult: ...
    def stats(self, instance_id: str) -> Stats: ...
    def resize(self, instance_id: str, resources: Resources) -> Resources:
        """Apply what can be applied live; return the resources now in force."""
        ...


@runtime_checkable
class KeepsLog(Protocol):
    """An engine that keeps what each guest wrote to its console, readable after the guest ended (what
    `isola instance logs` shows). Optional: an engine without it answers logs with UnsupportedError."""

    def log(self, instance_id: str) -> Path: ...


# Where each rung's engine lives, as "module:attribute"; an engine issue adds its line when it lands.
ENGINES: dict[Kind, str] = {
    Kind.VM: "isola.vmm.engine:VmEngine",
    Kind.CONTAINER: "isola.container.engine:ContainerEngine",
    Kind.METAL: "isola.metal.engine:MetalEngine",
}


def engine_for(kind: Kind) -> Engine:
    """The engine that runs `kind`, or UnsupportedError if this isola has none yet."""
    where = ENGINES.get(kind)
    if where is None:
        raise UnsupportedError(f"isola has no {kind.value} engine yet")
    module, _, attr = where.partition(":")
    engine = getattr(importlib.import_module(module), attr)()
    if not isinstance(engine, Engine):
        raise UnsupportedError(f"{where} does not implement the engine interface")
    return engine
