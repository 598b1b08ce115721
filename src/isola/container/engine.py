"""The engine of kind `container`: `isola container`'s containers driven through the `Engine` interface.

An instance is a container of the containers layer (`isola.container.containers`) whose id and name are the
instance id: its directory under `$ISOLA_HOME/containers`, its overlayfs root over an image of the image store,
its OCI bundle with the default confinement, run by `isola-oci` and owned while it runs by a detached monitor
(`containers.monitor`) that outlives whoever started it. Everything is read back from that directory, so a
fresh engine (a restarted isolad) knows every instance by its id. This module only translates: the spec into
`RunOptions`, the container's record into a `Status`; the work is the containers layer's.

`image` names an image of this host's store (`isola image build` makes `busybox`); `command` replaces the
image's Cmd (empty: the image's own); `env` is added to the image's; `resources.memory_mib` is the memory limit
(and memory + swap, so no swap beyond it) and `resources.vcpus` a CFS quota, both resizable while it runs. The
container gets an empty network namespace of its own. It has no console socket: its output is in its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from isola.container.containers import lifecycle, logs, runtime
from isola.container.containers.bundle import MIN_MEMORY, RunOptions
from isola.container.containers.store import Container, ContainerStore, live_status, process_start
from isola.container.images.store import ImageStore
from isola.engine import ExecResult, InstanceSpec, Kind, Resources, State, Stats, Status
from isola.errors import (
    ConflictError,
    EngineError,
    InvalidSpecError,
    IsolaError,
    NotFoundError,
    UnsupportedError,
    UsageError,
)
from isola.monitor.directory import check_id

END_SECONDS = 10.0
"""How long a killed container's monitor may take to record the end."""
_SIGKILL = int(signal.SIGKILL)


class ContainerEngine:
    """`Engine` for kind `container`, over the containers store of `$ISOLA_HOME` (the detached monitors and
    `isola-oci` find it there too, so it is not a parameter)."""

    kind = Kind.CONTAINER

    def __init__(self) -> None:
        self.store = ContainerStore()

    # -- create and delete -----------------------------------------------------------------------------------

    def create(self, instance_id: str, spec: InstanceSpec) -> Status:
        """Validate `spec`, then make the container: record, root mounted, bundle written; nothing runs until
        `start`. A failed create leaves nothing (the containers layer undoes it)."""
        check_id(instance_id)
        opts = _options(spec)
        lifecycle.prepare(self.store, str(spec.image), opts, instance_id, False, container_id=instance_id)
        return Status(instance_id, State.CREATED)

    def delete(self, instance_id: str, force: bool = False) -> None:
        """Remove the container: its processes (only with `force` while it runs), its runtime state and cgroups,
        its root mount and its directory. The monitor is let record the end first, so that nothing writes into
        the directory while it goes."""
        c = self._get(instance_id)
        if live_status(c) == "running":
            if not force:
                raise ConflictError(f"instance {instance_id} is running: stop it first, or delete with force")
            with contextlib.suppress(IsolaError):  # it may have ended meanwhile; what counts is that it ends
                runtime.call("kill", "--all", instance_id, str(_SIGKILL))
        if not self._wait_recorded(instance_id, END_SECONDS):
            raise EngineError(f"instance {instance_id}: its monitor did not record the end in {END_SECONDS:g} s")
        lifecycle.remove(self.store, self._get(instance_id), force=True)
        if self.store.dir(instance_id).exists():
            raise EngineError(f"cannot remove {self.store.dir(instance_id)}", hint="is its root still mounted?")

    # -- running ---------------------------------------------------------------------------------------------

    def start(self, instance_id: str) -> Status:
        """Run the container under a monitor of its own and return once its program runs. An ended container
        starts again on its kept root (its log goes on). A failed start keeps the instance, `failed` with why."""
        c = self._get(instance_id)
        if self.state(instance_id).state is State.RUNNING:
            raise ConflictError(f"instance {instance_id} is running already")
        if c.status == "exited":
            lifecycle.mount_root(self.store, c)
            with self.store.update(instance_id) as c:
                c.status, c.exit_code, c.error, c.finished_at = "created", None, "", ""
        lifecycle.run_detached(self.store, c, keep_on_failure=True)
        return self.state(instance_id)

    def state(self, instance_id: str) -> Status:
        c = self._get(instance_id)
        if c.status == "created":
            return Status(instance_id, State.CREATED)
        if c.status == "exited":
            if c.error:
                return Status(instance_id, State.FAILED, exit_code=c.exit_code, detail=c.error)
            return Status(instance_id, State.STOPPED, exit_code=c.exit_code)
        if live_status(c) == "running" or process_start(c.monitor_pid) is not None:
            return Status(instance_id, State.RUNNING, monitor_pid=c.monitor_pid)  # or its monitor is recording the end
        return Status(instance_id, State.FAILED, detail="its monitor died without recording how the container ended")

    def stop(self, instance_id: str, timeout_s: float = 10.0) -> Status:
        """SIGTERM to the container's init, SIGKILL to all of it after `timeout_s` (docker stop)."""
        c = self._get(instance_id)
        if c.status == "created":
            raise ConflictError(f"instance {instance_id} has not been started")
        lifecycle.stop(self.store, c, timeout_s)
        self._wait_recorded(instance_id, END_SECONDS)
        return self.state(instance_id)

    def kill(self, instance_id: str, signal: int) -> None:
        """SIGKILL ends every process of the container; another signal goes to its init alone."""
        if not 1 <= signal <= 64:
            raise UsageError(f"signal {signal}: must be a signal number from 1 to 64")
        c = self._get(instance_id)
        if signal == _SIGKILL and live_status(c) == "running":
            runtime.call("kill", "--all", instance_id, str(signal))
        else:
            lifecycle.kill(c, signal)

    def console(self, instance_id: str) -> str:
        self._get(instance_id)
        raise UnsupportedError(
            "a container has no console socket: its init's output goes to its log",
            hint=f"read it with `isola instance logs`, or run commands with `isola instance exec` ({instance_id})",
        )

    def log(self, instance_id: str) -> Path:
        """What the container wrote, stdout and stderr in order as a console shows them, kept after it ends. The
        containers layer keeps docker's JSON lines; this plain copy is rewritten from them at each call."""
        self._get(instance_id)
        found, _ = logs.entries(self.store.log_path(instance_id))
        target = self.store.dir(instance_id) / "console.log"
        tmp = target.with_name(f".console.log.{uuid.uuid4().hex}")
        try:
            tmp.write_bytes(b"".join(data for _, data in found))
            os.replace(tmp, target)
        except FileNotFoundError:
            raise NotFoundError(f"there is no container instance {instance_id}") from None
        return target

    def exec(self, instance_id: str, argv: list[str], env: Mapping[str, str] | None = None) -> ExecResult:
        """Run `argv` in the running container (its namespaces, cgroups, root and confinement) with its
        environment plus `env`. A program that cannot be run answers 127 or 126, as `docker exec` does."""
        if not argv or not all(isinstance(a, str) and "\0" not in a for a in argv) or not argv[0]:
            raise InvalidSpecError("is required: the program and its arguments, without NUL bytes", field="argv")
        variables = _env(env or {}, "env")
        c = self._get(instance_id)
        if live_status(c) != "running":
            raise ConflictError(f"instance {instance_id} is not running")
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                code = lifecycle.exec_in(
                    c,
                    argv,
                    tty=False,
                    env=variables,
                    workdir=None,
                    user=None,
                    stdio=(subprocess.DEVNULL, out.fileno(), err.fileno()),
                )
            except runtime.CommandError as failed:
                return ExecResult(failed.status, b"", failed.message.encode() + b"\n")
            out.seek(0)
            err.seek(0)
            return ExecResult(128 - code if code < 0 else code, out.read(), err.read())

    def stats(self, instance_id: str) -> Stats:
        """CPU time, memory and processes of the container's cgroup (`isola-oci events --stats`) while it runs;
        nothing once it has ended (its cgroup is gone with it)."""
        c = self._get(instance_id)
        if live_status(c) != "running":
            return Stats()
        data = json.loads(runtime.call("events", "--stats", instance_id).stdout).get("data", {})
        cpu, memory, pids = data.get("cpu", {}), data.get("memory", {}), data.get("pids", {})
        return Stats(
            cpu_ns=int(cpu.get("usage", {}).get("total", 0)),
            memory_bytes=int(memory.get("usage", {}).get("usage", 0)),
            engine={"processes": float(pids.get("current", 0))},
        )

    def resize(self, instance_id: str, resources: Resources) -> Resources:
        """New memory and CPU limits: into the cgroups at once while it runs (memory below what it uses now is
        refused by the kernel), and into its bundle for the next start."""
        resources.validate()
        memory, cpus = _limits(resources)
        lifecycle.update_limits(self.store, self._get(instance_id), memory, cpus)
        return resources

    # -- helpers ---------------------------------------------------------------------------------------------

    def _get(self, instance_id: str) -> Container:
        check_id(instance_id)
        try:
            return self.store.read(instance_id)
        except NotFoundError:
            raise NotFoundError(f"there is no container instance {instance_id}") from None

    def _wait_recorded(self, instance_id: str, timeout: float) -> bool:
        """Whether the container's monitor has recorded its end (or died, so that nobody will) within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                c = self.store.read(instance_id)
            except NotFoundError:
                return True
            if c.status != "running" or (live_status(c) != "running" and process_start(c.monitor_pid) is None):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def _options(spec: InstanceSpec) -> RunOptions:
    """The containers layer's options for `spec`, every field checked here so that a bad one is named."""
    spec.validate()
    if spec.kind is not Kind.CONTAINER:
        raise InvalidSpecError(f"the container engine runs kind container, not {spec.kind.value}", field="kind")
    if not spec.image:
        raise InvalidSpecError("is required: an image of this host's store (`isola image ls`)", field="image")
    try:
        ImageStore().get(spec.image)
    except (NotFoundError, ConflictError) as err:
        raise InvalidSpecError(err.message, field="image", hint=err.hint) from None
    if spec.networks:
        raise InvalidSpecError(
            "a container attaches to no network yet (it has an empty one of its own)", field="networks"
        )
    for i, arg in enumerate(spec.command):
        if "\0" in arg:
            raise InvalidSpecError("must not contain NUL bytes", field=f"command[{i}]")
    memory, cpus = _limits(spec.resources)
    return RunOptions(command=list(spec.command), env=_env(spec.env, "env"), memory=memory, cpus=cpus)


def _limits(resources: Resources) -> tuple[int, float]:
    if resources.disk_gib:
        raise InvalidSpecError(
            "the container engine gives no disks: its root is an overlay", field="resources.disk_gib"
        )
    memory = resources.memory_mib << 20
    if memory < MIN_MEMORY:
        raise InvalidSpecError(f"must be at least {MIN_MEMORY >> 20} for a container", field="resources.memory_mib")
    return memory, float(resources.vcpus)


def _env(env: Mapping[str, str], field: str) -> list[str]:
    for key, value in env.items():
        if not key or "=" in key or " " in key or "\0" in key or "\0" in value:
            raise InvalidSpecError(f"{key!r}: a variable needs a name without '=', spaces or NUL", field=field)
    return [f"{key}={value}" for key, value in env.items()]
