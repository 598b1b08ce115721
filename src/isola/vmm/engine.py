"""The engine of kind `vm`: KVM guests for the platform, in both modes, through the `Engine` interface.

Each instance is a state directory (`instance_dir`) and, while it runs, a monitor process (`monitor`) that
outlives whoever started it. Every method reads what it needs from the directory and from /proc, so a fresh
`VmEngine` — in a restarted daemon, in another process — knows every instance by its id; pids are checked
against their start times, so a pid the kernel gave to someone else is never signalled.

Mode `process` runs the spec's command (program + arguments) in a process VM: `image` is the directory that
becomes its `/` (`--root`); without one the program (a host path) is copied alone into the instance's own
root. The console is the program's stdin, stdout and stderr. `exec` runs another program in a second process VM
over the same root (`docker exec` for a one-program sandbox: the instance's PID namespace and memory stay its
own). Mode `kernel` boots the cached Debian kernel with `image` as the initramfs and `command` added to the
kernel command line, through `isola-vmm --config` with its serial console on the instance's console socket; a
host whose KVM cannot run guest kernels (kvm_pvm) refuses it at `start`, saying why.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from isola import paths
from isola.assets import manifest
from isola.engine import ExecResult, InstanceSpec, Kind, Resources, State, Stats, Status, VmMode
from isola.errors import (
    ConflictError,
    EngineError,
    InvalidSpecError,
    NotFoundError,
    UnsupportedError,
    UsageError,
)
from isola.host import procfs, unix_socket
from isola.monitor import readiness
from isola.monitor.directory import EXIT, INSTANCE, MONITOR, check_id, open_existing
from isola.vmm import config, launch
from isola.vmm.instance_dir import InstanceDir
from isola.vmm.process_child import ProcessConfig

DEFAULT_STATE_ROOT = Path("/run/isola/vm")
STATE_ROOT_VARIABLE = "ISOLA_VM_STATE"
"""Overrides the directory that holds one state directory per instance (tests use a temporary one)."""
END_SECONDS = 10.0
"""How long a SIGKILLed VM may take to be recorded as ended."""
ABANDONED_SECONDS = 60.0
"""A half-made state directory this old belongs to a create that was killed; the next create removes it."""

_SPEC_FIELDS = {
    "program": "command[0]",
    "args": "command",
    "env": "env",
    "root": "image",
    "memory_mib": "resources.memory_mib",
    "max_processes": "resources",
}
"""ProcessConfig's fields by the names the spec gives them, for errors."""
_KERNEL_FIELDS = {
    "boot-source.initrd_path": "image",
    "boot-source.boot_args": "command",
    "machine-config.vcpu_count": "resources.vcpus",
    "machine-config.mem_size_mib": "resources.memory_mib",
}


class VmEngine:
    """`Engine` for kind `vm`. `state_root` holds the instances' directories (default `$ISOLA_VM_STATE`, else
    /run/isola/vm)."""

    kind = Kind.VM

    def __init__(self, state_root: Path | None = None) -> None:
        self.state_root = state_root or Path(os.environ.get(STATE_ROOT_VARIABLE) or DEFAULT_STATE_ROOT)

    # -- create and delete -----------------------------------------------------------------------------------

    def create(self, instance_id: str, spec: InstanceSpec) -> Status:
        """Validate `spec` and record the instance; nothing runs until `start`. A failed create leaves nothing."""
        check_id(instance_id)
        spec.validate()
        if spec.kind is not Kind.VM:
            raise InvalidSpecError(f"the vm engine runs kind vm, not {spec.kind.value}", field="kind")
        if spec.networks:
            raise InvalidSpecError("the vm engine attaches no networks yet", field="networks")
        if spec.resources.disk_gib:
            raise InvalidSpecError("the vm engine gives no disks yet", field="resources.disk_gib")
        final = self.state_root / instance_id
        if final.exists():
            raise ConflictError(f"instance {instance_id} exists already")
        try:
            self.state_root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._sweep_abandoned()
            building = Path(tempfile.mkdtemp(prefix=f".{instance_id}.", dir=self.state_root))
        except OSError as exc:
            raise EngineError(f"cannot make a state directory in {self.state_root}: {exc.strerror}") from None
        try:
            directory = InstanceDir(building)
            unix_socket_room(InstanceDir(final).console)
            record: dict[str, Any] = {"id": instance_id, "spec": _spec_json(spec)}
            if spec.mode is VmMode.PROCESS:
                record["process"] = _process_config(spec, directory, InstanceDir(final)).to_json()
            else:
                directory.vm_document.write_text(_kernel_document(spec))
            directory.write(INSTANCE, record)
            try:
                building.rename(final)
            except OSError:
                raise ConflictError(f"instance {instance_id} exists already") from None
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        return Status(instance_id, State.CREATED)

    def _sweep_abandoned(self) -> None:
        """Remove the half-made state directories of creates that were killed before they finished (a create
        takes milliseconds: one older than ABANDONED_SECONDS has no creator left)."""
        now = time.time()
        for entry in self.state_root.glob(".*"):
            with contextlib.suppress(OSError):
                if entry.is_dir() and now - entry.stat().st_mtime > ABANDONED_SECONDS:
                    shutil.rmtree(entry)

    def delete(self, instance_id: str, force: bool = False) -> None:
        """Remove the instance; a running one only with `force`, which kills it first."""
        directory = self._dir(instance_id)
        with directory.locked():
            if self._alive(directory) and directory.read(EXIT) is not None:
                self._wait_ended(directory, END_SECONDS)  # the guest has ended; its monitor is closing down
            if self._alive(directory):
                if not force:
                    raise ConflictError(f"instance {instance_id} is running: stop it first, or delete with force")
                self._kill_all(directory)
                self._wait_ended(directory, END_SECONDS)
                if self._alive(directory):
                    raise EngineError(f"instance {instance_id} did not end within {END_SECONDS:.0f} s of SIGKILL")
            shutil.rmtree(directory.path)

    # -- running ---------------------------------------------------------------------------------------------

    def start(self, instance_id: str) -> Status:
        """Start the instance's monitor, and return once the VM runs. A stopped instance starts again (its
        console log goes on)."""
        directory = self._dir(instance_id)
        with directory.locked():
            status = self.state(instance_id)
            if status.state is State.STOPPED:
                self._wait_ended(directory, END_SECONDS)  # its monitor may still be closing the console
            if status.state is State.RUNNING or self._alive(directory):
                raise ConflictError(f"instance {instance_id} is running already")
            record = _record(directory)
            if record["spec"]["mode"] == VmMode.KERNEL:
                launch.check_host()
                record["argv"] = _kernel_argv(directory)
            else:
                record["argv"] = ProcessConfig.from_json(record["process"]).launcher_argv()
            record["mode"] = record["spec"]["mode"]
            directory.write(INSTANCE, record)
            directory.remove(MONITOR, EXIT)
            readiness.spawn(directory, "isola.vmm.monitor", "the VM")
        return self.state(instance_id)

    def state(self, instance_id: str) -> Status:
        directory = self._dir(instance_id)
        known = readiness.recorded_status(instance_id, directory)
        if known is not None:
            return known
        running = directory.read(MONITOR) or {}
        launcher = readiness.identity_from(running.get("launcher"))
        if launcher is not None and procfs.running(launcher):
            detail = f"its monitor died; the VM (isola-vmm pid {launcher.pid}) still runs: kill or delete with force"
        else:
            detail = "its monitor died without recording how the VM ended"
        return Status(instance_id, State.FAILED, detail=detail)

    def stop(self, instance_id: str, timeout_s: float = 10.0) -> Status:
        """Stop the VM as `docker stop` does: a process VM's program gets SIGTERM (to handle, or to die of) when
        its VM process takes signals, else the launcher gets it and kills the VM at once; a kernel VM's
        isola-vmm gets SIGINT and stops it. Whatever still runs after `timeout_s` is killed. A stopped instance
        stays as it is."""
        status = self.state(instance_id)
        directory = self._dir(instance_id)
        if status.state is State.CREATED:
            raise ConflictError(f"instance {instance_id} has not been started")
        if not self._alive(directory):
            return status
        running = directory.read(MONITOR) or {}
        vm, launcher = readiness.identity_from(running.get("vm")), readiness.identity_from(running.get("launcher"))
        if vm is not None and procfs.running(vm) and procfs.catches(vm.pid, signal.SIGTERM):
            _signal(vm, signal.SIGTERM)
        elif launcher is not None:
            _signal(launcher, signal.SIGINT if _record(directory)["mode"] == VmMode.KERNEL else signal.SIGTERM)
        if not self._wait_ended(directory, timeout_s):
            self._kill_all(directory)
            self._wait_ended(directory, END_SECONDS)
        return self.state(instance_id)

    def kill(self, instance_id: str, signal: int) -> None:
        """Send `signal` to the guest: SIGKILL ends the whole VM; another signal goes to a process VM's program
        (PID 1 of its namespace, to which the personality gives the default actions of any process) or to a
        kernel VM's isola-vmm."""
        if not 1 <= signal <= 64:
            raise UsageError(f"signal {signal}: must be a signal number from 1 to 64")
        directory = self._dir(instance_id)
        if not self._alive(directory):
            raise ConflictError(f"instance {instance_id} is not running")
        if signal == _SIGKILL:
            self._kill_all(directory)
            return
        running = directory.read(MONITOR) or {}
        vm, launcher = readiness.identity_from(running.get("vm")), readiness.identity_from(running.get("launcher"))
        target = vm if vm is not None and _record(directory)["mode"] == VmMode.PROCESS else launcher
        if target is None or not _signal(target, signal):
            raise ConflictError(f"instance {instance_id} is not running")

    def console(self, instance_id: str) -> str:
        return readiness.console_while_running(instance_id, self.state(instance_id), self._dir(instance_id))

    def log(self, instance_id: str) -> Path:
        """The console log: all a process VM's program wrote (kept after it ends); a kernel VM's isola-vmm
        messages."""
        return self._dir(instance_id).console_log

    def exec(self, instance_id: str, argv: list[str], env: Mapping[str, str] | None = None) -> ExecResult:
        """Run `argv` (a program inside the instance's root) in a process VM of its own over the same root, with
        the instance's environment plus `env`, and return what it did."""
        directory = self._dir(instance_id)
        record = _record(directory)
        if record["spec"]["mode"] == VmMode.KERNEL:
            raise UnsupportedError("a kernel VM runs no exec agent: use its console")
        if self.state(instance_id).state is not State.RUNNING:
            raise ConflictError(f"instance {instance_id} is not running")
        if not argv:
            raise InvalidSpecError("is required: the program and its arguments", field="argv")
        base = ProcessConfig.from_json(record["process"])
        command = replace(base, program=argv[0], args=tuple(argv[1:]), env={**base.env, **(env or {})})
        command.validate({**_SPEC_FIELDS, "program": "argv[0]", "args": "argv"})
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                command.launcher_argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )
            try:
                code = proc.wait()
            finally:
                if proc.poll() is None:  # the caller was interrupted: the VM goes with its call
                    os.killpg(proc.pid, _SIGKILL)
                    proc.wait()
            out.seek(0)
            err.seek(0)
            return ExecResult(128 - code if code < 0 else code, out.read(), err.read())

    def stats(self, instance_id: str) -> Stats:
        """CPU time and memory (PSS) of the VM's processes: isola-vmm, the VM, every guest process; once it has
        ended, its total CPU time."""
        directory = self._dir(instance_id)
        ended = directory.read(EXIT)
        if ended is not None:
            return Stats(cpu_ns=ended["cpu_ns"])
        running = directory.read(MONITOR)
        launcher = readiness.identity_from(running["launcher"]) if running else None
        if launcher is None or not procfs.exists(launcher):
            return Stats()
        members = procfs.tree(launcher.pid)
        return Stats(
            cpu_ns=sum(m.cpu_ns for m in members),
            memory_bytes=sum(procfs.pss_bytes(m.pid) for m in members),
            engine={"processes": float(len(members))},
        )

    def resize(self, instance_id: str, resources: Resources) -> Resources:
        """Nothing changes live: a VM's memory and vCPUs are fixed when it starts. While it is stopped (or not yet
        started) the new resources are recorded for the next start."""
        resources.validate()
        directory = self._dir(instance_id)
        with directory.locked():
            record = _record(directory)
            spec = InstanceSpec.from_dict(record["spec"])
            if resources == spec.resources:
                return resources
            if self._alive(directory):
                raise UnsupportedError(
                    "a running VM cannot change its vCPUs or memory", hint="stop it, resize it, start it again"
                )
            spec = replace(spec, resources=resources)
            record["spec"] = _spec_json(spec)
            if spec.mode is VmMode.PROCESS:
                _check_process_resources(spec)
                process = replace(ProcessConfig.from_json(record["process"]), memory_mib=resources.memory_mib)
                process.validate(_SPEC_FIELDS)
                record["process"] = process.to_json()
            else:
                directory.vm_document.write_text(_kernel_document(spec))
            directory.write(INSTANCE, record)
        return resources

    # -- the instance's processes ----------------------------------------------------------------------------

    def _dir(self, instance_id: str) -> InstanceDir:
        check_id(instance_id)
        return open_existing(InstanceDir(self.state_root / instance_id), instance_id, "vm")

    def _alive(self, directory: InstanceDir) -> bool:
        """Whether any of the instance's processes runs: its monitor, or a launcher that outlived it."""
        running = directory.read(MONITOR)
        if running is None:
            return False
        members = (running["monitor"], running["launcher"])
        return any(who is not None and procfs.running(who) for who in map(readiness.identity_from, members))

    def _kill_all(self, directory: InstanceDir) -> None:
        """SIGKILL the launcher's process group and the VM; the monitor then records the end."""
        running = directory.read(MONITOR) or {}
        launcher, vm = readiness.identity_from(running.get("launcher")), readiness.identity_from(running.get("vm"))
        if launcher is not None and procfs.exists(launcher):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launcher.pid, _SIGKILL)
        if vm is not None:
            _signal(vm, _SIGKILL)

    def _wait_ended(self, directory: InstanceDir, timeout: float) -> bool:
        return readiness.wait_ended(lambda: self._alive(directory), timeout)


_SIGKILL = int(signal.SIGKILL)


def unix_socket_room(path: Path) -> None:
    """UsageError now, rather than at start, when the console socket's path is too long for a unix socket."""
    if len(os.fsencode(path)) > unix_socket.MAX_PATH:
        raise UsageError(
            f"{path}: too long for a unix socket ({unix_socket.MAX_PATH} bytes at most)",
            hint=f"use a shorter state directory (${STATE_ROOT_VARIABLE}) or instance id",
        )


def _spec_json(spec: InstanceSpec) -> dict[str, Any]:
    doc = asdict(spec)
    doc["kind"], doc["mode"] = spec.kind.value, spec.mode.value if spec.mode else None
    doc["command"], doc["networks"], doc["env"] = list(spec.command), list(spec.networks), dict(spec.env)
    return doc


def _record(directory: InstanceDir) -> dict[str, Any]:
    record = directory.read(INSTANCE)
    if record is None:
        raise NotFoundError(f"there is no vm instance at {directory.path}")
    return record


def _check_process_resources(spec: InstanceSpec) -> None:
    if spec.resources.vcpus != 1:
        raise InvalidSpecError("a process VM has exactly 1 vCPU", field="resources.vcpus")


def _process_config(spec: InstanceSpec, building: InstanceDir, final: InstanceDir) -> ProcessConfig:
    """The process VM the spec asks for. Without an image, the program is copied into the instance's root."""
    _check_process_resources(spec)
    if not spec.command:
        raise InvalidSpecError("is required: the program and its arguments", field="command")
    wanted = ProcessConfig(
        spec.command[0], spec.command[1:], dict(spec.env), spec.image, memory_mib=spec.resources.memory_mib
    )
    wanted.validate(_SPEC_FIELDS)
    if spec.image is not None:
        return replace(wanted, root=str(Path(spec.image).resolve()))
    program = Path(spec.command[0])
    building.root.mkdir(mode=0o755)
    try:
        shutil.copy2(program, building.root / program.name)
    except OSError as exc:
        raise InvalidSpecError(f"cannot copy {program}: {exc.strerror}", field="command[0]") from None
    return replace(wanted, program="/" + program.name, root=str(final.root))


def _kernel_document(spec: InstanceSpec) -> str:
    """The VM document for a kernel-mode spec: the cached Debian kernel, `image` as the initramfs."""
    if spec.image is None:
        raise InvalidSpecError("a kernel VM needs an initramfs to boot", field="image")
    try:
        kernel = manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "amd64", "kernel")
    except NotFoundError as err:
        raise UnsupportedError(f"no guest kernel: {err.message}", hint=err.hint) from None
    doc = {
        "boot-source": {
            "kernel_image_path": str(kernel),
            "initrd_path": str(Path(spec.image).resolve()),
            "boot_args": " ".join([launch.DEFAULT_APPEND, *spec.command]),
        },
        "machine-config": {"vcpu_count": spec.resources.vcpus, "mem_size_mib": spec.resources.memory_mib},
    }
    try:
        config.parse(doc)
    except InvalidSpecError as err:
        field = _KERNEL_FIELDS.get(err.field or "", err.field)
        message = err.message.removeprefix(f"{err.field}: ")
        raise InvalidSpecError(message, field=field) from None
    return json.dumps(doc, indent=1)


def _kernel_argv(directory: InstanceDir) -> list[str]:
    return [
        sys.executable,
        "-m",
        "isola.vmm.launch",
        "--config",
        str(directory.vm_document),
        "--console-sock",
        str(directory.console),
    ]


def _signal(who: procfs.Identity, signum: int) -> bool:
    """Signal `who` if it is still that process; whether it was."""
    if not procfs.exists(who):
        return False
    try:
        os.kill(who.pid, signum)
    except ProcessLookupError:
        return False
    return True
