"""The engine of kind `metal`: a tenant's program run directly on the host, through the `Engine` interface.

An instance is a state directory (`directory.MetalDir`), a cgroup (`cgroup.InstanceGroup`) with the spec's
memory and CPU limits, and, while it runs, a monitor process (`monitor`) that outlives whoever started it — the
vm engine's pattern, from `isola.monitor`. Nothing else isolates it: no namespaces beyond a new session (and a
network namespace when the platform attached the instance to a network), so the program sees every CPU feature
and /dev/kvm; it runs as root in `files/`, the tenant's working directory. That is what a lease is for: the
host belongs to one tenant, and cleaning (`clean`) leaves no trace of it afterwards.

`command` is the program (a host path, or a name looked up in PATH) and its arguments; `env` is added to a
minimal environment (PATH, HOME), never the daemon's. `networks` holds at most one path of a network namespace
that the platform prepared (`isola.platform.networks`); the program starts inside it. A resize writes the
cgroup's limits at once, running or not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from isola.engine import ExecResult, InstanceSpec, Kind, Resources, State, Stats, Status
from isola.errors import ConflictError, EngineError, InvalidSpecError, IsolaError, NotFoundError, UsageError
from isola.host import procfs, unix_socket
from isola.metal import enter
from isola.metal.cgroup import InstanceGroup
from isola.metal.directory import MetalDir
from isola.monitor import readiness
from isola.monitor.directory import EXIT, INSTANCE, MONITOR, check_id, open_existing

DEFAULT_STATE_ROOT = Path("/run/isola/metal")
STATE_ROOT_VARIABLE = "ISOLA_METAL_STATE"
"""Overrides the directory that holds one state directory per instance (tests use a temporary one)."""
END_SECONDS = 10.0
"""How long a killed program's monitor may take to record the end."""
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class MetalEngine:
    """`Engine` for kind `metal`. `state_root` holds the instances' directories (default `$ISOLA_METAL_STATE`,
    else /run/isola/metal)."""

    kind = Kind.METAL

    def __init__(self, state_root: Path | None = None) -> None:
        self.state_root = state_root or Path(os.environ.get(STATE_ROOT_VARIABLE) or DEFAULT_STATE_ROOT)

    # -- create and delete -----------------------------------------------------------------------------------

    def create(self, instance_id: str, spec: InstanceSpec) -> Status:
        """Validate `spec` and record the instance; nothing runs until `start`. A failed create leaves nothing."""
        check_id(instance_id)
        spec.validate()
        if spec.kind is not Kind.METAL:
            raise InvalidSpecError(f"the metal engine runs kind metal, not {spec.kind.value}", field="kind")
        if spec.image is not None:
            raise InvalidSpecError("a metal instance runs on the host as it is: no image", field="image")
        if spec.resources.disk_gib:
            raise InvalidSpecError("the metal engine gives no disks yet", field="resources.disk_gib")
        command = _command(spec)
        netns = _netns(spec.networks)
        for key, value in spec.env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise InvalidSpecError(f"{key!r}: a variable needs a name without '=' or NUL", field="env")
        final = MetalDir(self.state_root / instance_id)
        if len(os.fsencode(final.console)) > unix_socket.MAX_PATH:
            raise UsageError(f"{final.console}: too long for a unix socket", hint=f"a shorter ${STATE_ROOT_VARIABLE}")
        if final.path.exists():
            raise ConflictError(f"instance {instance_id} exists already")
        try:
            self.state_root.mkdir(mode=0o700, parents=True, exist_ok=True)
            building = MetalDir(Path(tempfile.mkdtemp(prefix=f".{instance_id}.", dir=self.state_root)))
        except OSError as exc:
            raise EngineError(f"cannot make a state directory in {self.state_root}: {exc.strerror}") from None
        try:
            building.files.mkdir(mode=0o700)
            env = {"PATH": BASE_PATH, "HOME": str(final.files), **spec.env}
            building.write(
                INSTANCE,
                {"id": instance_id, "command": command, "env": env, "netns": netns, "resources": _res(spec.resources)},
            )
            try:
                building.path.rename(final.path)
            except OSError:
                raise ConflictError(f"instance {instance_id} exists already") from None
        except BaseException:
            shutil.rmtree(building.path, ignore_errors=True)
            raise
        return Status(instance_id, State.CREATED)

    def delete(self, instance_id: str, force: bool = False) -> None:
        """Remove the instance: its processes (only with `force` while it runs), its cgroup, its files. The
        instance record goes last, so an instance that could not be removed entirely is still known (and a
        retry tries again) rather than forgotten with something left behind."""
        directory = self._dir(instance_id)
        group = InstanceGroup(instance_id)
        with directory.locked():
            if self._alive(directory) and directory.read(EXIT) is None and not force:
                raise ConflictError(f"instance {instance_id} is running: stop it first, or delete with force")
            if not group.kill_all():
                raise EngineError(f"instance {instance_id}: processes survived SIGKILL", hint=f"see {group.dirs[0]}")
            self._wait_ended(directory, END_SECONDS)
            group.remove()
            _remove_all_but_record(directory)
        directory.remove(INSTANCE, "lock")
        try:
            directory.path.rmdir()
        except OSError as exc:
            raise EngineError(f"cannot remove {directory.path}: {exc.strerror}") from None

    def clean(self, instance_ids: Sequence[str]) -> dict[str, str]:
        """Verify that nothing of these (deleted) instances is left on the host — no process, no cgroup, no
        file — and remove what is; what could not be removed, by instance id. Cleaning after a lease."""
        left: dict[str, str] = {}
        for instance_id in instance_ids:
            check_id(instance_id)
            group = InstanceGroup(instance_id)
            path = self.state_root / instance_id
            try:
                if group.exists():
                    if not group.kill_all():
                        raise EngineError(f"processes survived SIGKILL: {group.pids()}")
                    group.remove()
                if path.exists():
                    shutil.rmtree(path)
            except IsolaError as err:
                left[instance_id] = err.message
            except OSError as exc:
                left[instance_id] = f"cannot remove {exc.filename}: {exc.strerror}"
        return left

    # -- running ---------------------------------------------------------------------------------------------

    def start(self, instance_id: str) -> Status:
        """Make the cgroup, start the monitor, and return once the program runs. A stopped instance starts
        again (its console log goes on)."""
        directory = self._dir(instance_id)
        with directory.locked():
            if self.state(instance_id).state is State.STOPPED:
                self._wait_ended(directory, END_SECONDS)
            if self._alive(directory):
                raise ConflictError(f"instance {instance_id} is running already")
            record = _record(directory)
            if record["netns"] is not None and not os.path.exists(record["netns"]):
                raise ConflictError(f"its network namespace {record['netns']} is gone", hint="attach it again")
            group = InstanceGroup(instance_id)
            group.create(_resources(record))
            directory.remove(MONITOR, EXIT)
            readiness.spawn(directory, "isola.metal.monitor", "the program")
        return self.state(instance_id)

    def state(self, instance_id: str) -> Status:
        directory = self._dir(instance_id)
        known = readiness.recorded_status(instance_id, directory)
        if known is not None:
            return known
        return Status(instance_id, State.FAILED, detail="its monitor died without recording how the program ended")

    def stop(self, instance_id: str, timeout_s: float = 10.0) -> Status:
        """SIGTERM to the program; whatever of the instance still runs after `timeout_s` is killed."""
        status = self.state(instance_id)
        directory = self._dir(instance_id)
        if status.state is State.CREATED:
            raise ConflictError(f"instance {instance_id} has not been started")
        if not self._alive(directory):
            return status
        self._signal_program(directory, signal.SIGTERM)
        if not self._wait_ended(directory, timeout_s):
            InstanceGroup(instance_id).kill_all()
            self._wait_ended(directory, END_SECONDS)
        return self.state(instance_id)

    def kill(self, instance_id: str, signal: int) -> None:
        """SIGKILL ends every process of the instance; another signal goes to the program alone."""
        if not 1 <= signal <= 64:
            raise UsageError(f"signal {signal}: must be a signal number from 1 to 64")
        directory = self._dir(instance_id)
        if not self._alive(directory):
            raise ConflictError(f"instance {instance_id} is not running")
        if signal == _SIGKILL:
            InstanceGroup(instance_id).kill_all()
        elif not self._signal_program(directory, signal):
            raise ConflictError(f"instance {instance_id} is not running")

    def console(self, instance_id: str) -> str:
        return readiness.console_while_running(instance_id, self.state(instance_id), self._dir(instance_id))

    def log(self, instance_id: str) -> Path:
        """Everything the program wrote, kept after it ends."""
        return self._dir(instance_id).console_log

    def exec(self, instance_id: str, argv: list[str], env: Mapping[str, str] | None = None) -> ExecResult:
        """Run `argv` inside the running instance — its cgroup, its network namespace, its files/ — with its
        environment plus `env`."""
        directory = self._dir(instance_id)
        if self.state(instance_id).state is not State.RUNNING:
            raise ConflictError(f"instance {instance_id} is not running")
        if not argv or not all(isinstance(a, str) and a and "\0" not in a for a in argv[:1]):
            raise InvalidSpecError("is required: the program and its arguments", field="argv")
        record = _record(directory)
        group = InstanceGroup(instance_id)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                enter.argv(group.dirs, record["netns"], argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=directory.files,
                env={**record["env"], **(env or {})},
                start_new_session=True,
            )
            try:
                code = proc.wait()
            finally:
                if proc.poll() is None:  # the caller was interrupted: the command goes with its call
                    os.killpg(proc.pid, _SIGKILL)
                    proc.wait()
            out.seek(0)
            err.seek(0)
            return ExecResult(128 - code if code < 0 else code, out.read(), err.read())

    def stats(self, instance_id: str) -> Stats:
        """CPU time and memory of the instance's cgroup (every process of it); once it has ended, its CPU time."""
        directory = self._dir(instance_id)
        ended = directory.read(EXIT)
        if ended is not None:
            return Stats(cpu_ns=ended["cpu_ns"])
        if not self._alive(directory):
            return Stats()
        group = InstanceGroup(instance_id)
        return Stats(
            cpu_ns=group.cpu_ns(),
            memory_bytes=group.memory_bytes(),
            engine={"processes": float(len(group.pids()))},
        )

    def resize(self, instance_id: str, resources: Resources) -> Resources:
        """Record the new limits and, while the instance runs, write them into its cgroup at once. Memory
        below what the instance uses now is refused (the kernel would have to reclaim or kill)."""
        resources.validate()
        directory = self._dir(instance_id)
        if resources.disk_gib:
            raise InvalidSpecError("the metal engine gives no disks yet", field="resources.disk_gib")
        with directory.locked():
            record = _record(directory)
            if self._alive(directory) and directory.read(EXIT) is None:
                InstanceGroup(instance_id).limit(resources)
            record["resources"] = _res(resources)
            directory.write(INSTANCE, record)
        return resources

    # -- the instance's processes ----------------------------------------------------------------------------

    def _dir(self, instance_id: str) -> MetalDir:
        check_id(instance_id)
        return open_existing(MetalDir(self.state_root / instance_id), instance_id, "metal")

    def _alive(self, directory: MetalDir) -> bool:
        """Whether the monitor runs (the program's processes die with it or are killed when it records the end)."""
        running = directory.read(MONITOR)
        monitor = readiness.identity_from(running["monitor"]) if running else None
        return monitor is not None and procfs.running(monitor)

    def _signal_program(self, directory: MetalDir, signum: int) -> bool:
        running = directory.read(MONITOR) or {}
        program = readiness.identity_from(running.get("program"))
        if program is None or not procfs.running(program):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(program.pid, signum)
            return True
        return False

    def _wait_ended(self, directory: MetalDir, timeout: float) -> bool:
        return readiness.wait_ended(lambda: self._alive(directory), timeout)


_SIGKILL = int(signal.SIGKILL)


def _command(spec: InstanceSpec) -> list[str]:
    if not spec.command:
        raise InvalidSpecError("is required: the program and its arguments", field="command")
    for i, arg in enumerate(spec.command):
        if "\0" in arg:
            raise InvalidSpecError("must not contain NUL bytes", field=f"command[{i}]")
    program = spec.command[0]
    found = program if "/" in program else shutil.which(program, path=BASE_PATH)
    if found is None or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise InvalidSpecError(f"{program}: no such program on the host", field="command[0]")
    return [os.path.abspath(found), *spec.command[1:]]


def _netns(networks: Sequence[str]) -> str | None:
    """The network namespace to start in: what the platform prepared for the instance's one network."""
    if len(networks) > 1:
        raise InvalidSpecError("a metal instance joins at most one network", field="networks")
    if not networks:
        return None
    if not networks[0].startswith("/") or not os.path.exists(networks[0]):
        raise InvalidSpecError(f"{networks[0]}: not a network namespace the platform prepared", field="networks[0]")
    return networks[0]


def _res(resources: Resources) -> dict[str, int]:
    return {"vcpus": resources.vcpus, "memory_mib": resources.memory_mib, "disk_gib": resources.disk_gib}


def _resources(record: dict[str, Any]) -> Resources:
    return Resources(**record["resources"])


def _record(directory: MetalDir) -> dict[str, Any]:
    record = directory.read(INSTANCE)
    if record is None:
        raise NotFoundError(f"there is no metal instance at {directory.path}")
    return record


def _remove_all_but_record(directory: MetalDir) -> None:
    """Everything in the state directory except instance.json and the lock; EngineError naming what resisted
    (a mount the tenant left under files/, an immutable file)."""
    for entry in directory.path.iterdir():
        if entry.name in (INSTANCE, "lock"):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            raise EngineError(
                f"cannot remove {exc.filename or entry}: {exc.strerror}", hint="cleaning stops here; fix and retry"
            ) from None
