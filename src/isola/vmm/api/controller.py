"""What the REST API controls: the VM's configuration before it starts, the VM while it runs, and its metrics.

Independent of HTTP, so it can be driven and tested directly. The configuration is kept as the pieces of a
Firecracker VM document (`isola.vmm.config`); every change is checked by `config.parse` as soon as the
document has a boot source (the one field it cannot do without), and once more, whole, on InstanceStart. So a
bad kernel path fails the PUT that gave it, and the API accepts exactly the documents `--config` accepts.

A process VM (`PUT /process`, instead of a boot source) is checked by `ProcessConfig.validate`, the same
rules `isola-vmm run --process` applies, and refused next to a boot source or devices. It runs as a child
process (`process_vm`), waited for by the same thread; when its program ends, isola-vmm keeps serving, so that
`GET /vm` can tell the exit status (a kernel VM's end ends isola-vmm, as in Firecracker).

A kernel VM runs in this process, in a thread that calls `boot()`. InstanceStart waits for that thread to report
either that the vCPUs run or why the VM could not start (this host's KVM, a kernel that does not load); in the
second case the controller is back in "Not started", with its configuration, to be corrected and tried again.
When the VM ends, `on_end` gets its exit status: isola-vmm then shuts down, like Firecracker does.
"""

from __future__ import annotations

import copy
import enum
import errno
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from isola import __version__
from isola.errors import ConflictError, InvalidSpecError, IsolaError, NotFoundError, UsageError
from isola.vmm import config
from isola.vmm.api.process_vm import ProcessGuest, ProcessRunner, config_from_body
from isola.vmm.machine import ExitKind, ExitStatus
from isola.vmm.process_child import DEFAULT_MEMORY_MIB, ProcessConfig

APP_NAME = "isola-vmm"
DEFAULT_INSTANCE_ID = "anonymous-instance"
METRICS_INTERVAL = 60.0
"""Seconds between two metrics lines, as in Firecracker."""


class Guest(Protocol):
    """The running VM as the API sees it (`launch.RunningVm`)."""

    def send_ctrl_alt_del(self) -> None: ...

    def metrics(self) -> dict[str, object]: ...

    def stop(self, reason: str = ...) -> None: ...


class Boot(Protocol):
    """`launch.boot`: runs `vm` until it ends, calling `on_started` once its vCPUs run."""

    def __call__(self, vm: config.VmConfig, *, on_started: Callable[[Guest], None]) -> ExitStatus: ...


class RunProcess(Protocol):
    """`process_vm.ProcessRunner`: runs a process VM until it ends, calling `on_started` once it runs."""

    def __call__(self, process: ProcessConfig, *, on_started: Callable[[ProcessGuest], None]) -> ExitStatus: ...


class State(enum.Enum):
    NOT_STARTED = "Not started"
    STARTING = "Starting"
    RUNNING = "Running"
    ENDED = "Ended"


_PRE_BOOT_REFUSAL = "the VM is already running: {what} can only be changed before InstanceStart"


class Controller:
    def __init__(
        self,
        boot: Boot,
        *,
        run_process: RunProcess | None = None,
        instance_id: str = DEFAULT_INSTANCE_ID,
        metrics_interval: float = METRICS_INTERVAL,
        on_end: Callable[[ExitStatus], None] | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.on_end = on_end
        self.requests = 0
        """HTTP requests served, and those answered with an error: the API's own metrics."""
        self.faults = 0
        self._boot = boot
        self._run_process: RunProcess = run_process or ProcessRunner()
        self._metrics_interval = metrics_interval
        self._lock = threading.Lock()
        self._doc: dict[str, Any] = {"machine-config": {}, "drives": {}, "network-interfaces": {}}
        """The configuration; drives and interfaces keyed by id, in the order they were first put."""
        self._state = State.NOT_STARTED
        self._guest: Guest | None = None
        self._thread: threading.Thread | None = None
        self._ended = threading.Event()
        self._metrics: _MetricsWriter | None = None
        self._final_metrics: dict[str, object] | None = None
        """The VM's last counters, taken as it ended, for the metrics lines written after."""
        self.exit_status: ExitStatus | None = None

    # --- configuration -------------------------------------------------------------------------------------

    def load(self, document: object) -> None:
        """Take a whole VM document (`--config`), validated like any other change."""
        config.parse(document)
        assert isinstance(document, Mapping)  # parse accepts nothing else
        pieces = {
            "boot-source": dict(document["boot-source"]),
            "machine-config": dict(document.get("machine-config", {})),
            "drives": {d["drive_id"]: dict(d) for d in document.get("drives", [])},
            "network-interfaces": {n["iface_id"]: dict(n) for n in document.get("network-interfaces", [])},
        }
        if "entropy" in document:
            pieces["entropy"] = dict(document["entropy"])

        def replace(doc: dict[str, Any]) -> None:
            doc.clear()
            doc.update(pieces)

        self._change("the configuration", replace)

    def put_boot_source(self, body: dict[str, Any]) -> None:
        self._change("the boot source", lambda doc: doc.__setitem__("boot-source", body))

    def put_machine_config(self, body: dict[str, Any]) -> None:
        self._change("the machine configuration", lambda doc: doc.__setitem__("machine-config", body))

    def patch_machine_config(self, body: dict[str, Any]) -> None:
        self._change("the machine configuration", lambda doc: doc["machine-config"].update(body))

    def put_drive(self, drive_id: str, body: dict[str, Any]) -> None:
        self._change("drives", lambda doc: doc["drives"].__setitem__(drive_id, body))

    def patch_drive(self, drive_id: str, body: dict[str, Any]) -> None:
        self._change("drives", lambda doc: _existing(doc["drives"], drive_id, "drive", "drives").update(body))

    def put_network_interface(self, iface_id: str, body: dict[str, Any]) -> None:
        self._change("network interfaces", lambda doc: doc["network-interfaces"].__setitem__(iface_id, body))

    def patch_network_interface(self, iface_id: str, body: dict[str, Any]) -> None:
        self._change(
            "network interfaces",
            lambda doc: _existing(doc["network-interfaces"], iface_id, "interface", "network-interfaces").update(body),
        )

    def put_entropy(self, body: dict[str, Any]) -> None:
        self._change("the entropy device", lambda doc: doc.__setitem__("entropy", body))

    def put_process(self, body: dict[str, Any]) -> None:
        self._change("the process", lambda doc: doc.__setitem__("process", body))

    @property
    def runs_a_process(self) -> bool:
        """Whether the VM configured (or started) is a process VM."""
        with self._lock:
            return "process" in self._doc

    def machine_config(self) -> dict[str, int]:
        """The machine configuration with config's defaults filled in: what InstanceStart would boot."""
        with self._lock:
            given = self._doc["machine-config"]
            memory = given.get("mem_size_mib", config.VmConfig.memory_mib)
            if "process" in self._doc:  # a process VM's memory: its own, else machine-config's, else the launcher's
                memory = self._doc["process"].get("mem_size_mib") or given.get("mem_size_mib") or DEFAULT_MEMORY_MIB
            return {"vcpu_count": given.get("vcpu_count", config.VmConfig.vcpus), "mem_size_mib": memory}

    def vm_config(self) -> dict[str, Any]:
        """The configuration as a VM document that `isola-vmm --config` accepts (a process VM's is the
        `process` piece, which only the API takes)."""
        machine = self.machine_config()
        with self._lock:
            doc = _document(self._doc)
        doc["machine-config"] = machine
        doc.setdefault("drives", [])
        doc.setdefault("network-interfaces", [])
        return doc

    def _change(self, what: str, change: Callable[[dict[str, Any]], object]) -> None:
        """Apply `change` to a copy of the configuration and keep it only if it is still valid."""
        with self._lock:
            if self._state is not State.NOT_STARTED:
                raise ConflictError(_PRE_BOOT_REFUSAL.format(what=what))
            candidate = copy.deepcopy(self._doc)
            change(candidate)
            if "process" in candidate:
                _process_config(candidate)
            elif "boot-source" in candidate:
                config.parse(_document(candidate))
            self._doc = candidate

    # --- the VM --------------------------------------------------------------------------------------------

    def instance_info(self) -> dict[str, str]:
        return {"id": self.instance_id, "state": self._public_state(), "vmm_version": __version__, "app_name": APP_NAME}

    def vm_state(self) -> dict[str, object]:
        """The state, and once the VM has ended its exit status and how it ended."""
        with self._lock:
            ended = self.exit_status if self._state is State.ENDED else None
        if ended is None:
            return {"state": self._public_state()}
        return {"state": "Ended", "exit_code": ended.exit_code, "detail": ended.message}

    def _public_state(self) -> str:
        return {State.STARTING: "Not started", State.ENDED: "Ended"}.get(self._state, self._state.value)

    def start(self) -> None:
        """Boot the configured VM and return once its vCPUs run; raise why when it cannot start."""
        with self._lock:
            if self._state is not State.NOT_STARTED:
                raise ConflictError("the VM is already running")
            if "process" in self._doc:
                process = _process_config(self._doc)

                def run_vm(on_started: Callable[[Guest], None]) -> ExitStatus:
                    return self._run_process(process, on_started=on_started)
            else:
                vm = config.parse(_document(self._doc))

                def run_vm(on_started: Callable[[Guest], None]) -> ExitStatus:
                    return self._boot(vm, on_started=on_started)

            self._state = State.STARTING
        ready = threading.Event()
        failure: list[BaseException] = []

        def started(guest: Guest) -> None:
            with self._lock:
                self._guest = guest
                self._state = State.RUNNING
            ready.set()

        def run() -> None:
            try:
                status = run_vm(started)
            except BaseException as exc:
                if not ready.is_set():
                    failure.append(exc)
                    ready.set()
                    return
                status = _crash(exc)
            self._finish(status)
            ready.set()  # in case boot() ended the VM without ever reporting it started

        self._thread = threading.Thread(target=run, name="vmm", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            with self._lock:
                self._state = State.NOT_STARTED
            raise failure[0]

    def _finish(self, status: ExitStatus) -> None:
        with self._lock:
            guest = self._guest
        final = guest.metrics() if guest is not None else None
        with self._lock:
            self._final_metrics = final
            self._state = State.ENDED
            self._guest = None
            self.exit_status = status
        self._ended.set()
        if self.on_end is not None:
            self.on_end(status)

    def send_ctrl_alt_del(self) -> None:
        self._running_guest().send_ctrl_alt_del()

    def _running_guest(self) -> Guest:
        with self._lock:
            guest = self._guest
        if guest is None:
            raise ConflictError("the VM is not running: InstanceStart first")
        return guest

    def wait(self, timeout: float | None = None) -> ExitStatus | None:
        """The VM's exit status once it has ended (None if it did not end within `timeout`)."""
        self._ended.wait(timeout)
        return self.exit_status

    def shutdown(self, reason: str, timeout: float = 30.0) -> ExitStatus | None:
        """Stop the VM if it runs and wait for its end; then close the metrics. None if no VM ran.

        A VM still starting (a signal during InstanceStart) is stopped as soon as it reports that it runs."""
        deadline = time.monotonic() + timeout
        stopped = False
        while (thread := self._thread) is not None and thread.is_alive():
            if time.monotonic() >= deadline:
                self.exit_status = ExitStatus(ExitKind.ERROR, f"the VM did not stop within {timeout:.0f} s")
                break
            with self._lock:
                guest = self._guest
            if guest is not None and not stopped:
                guest.stop(reason)
                stopped = True
            thread.join(0.05)
        if self._metrics is not None:
            self._metrics.close(self.metrics_line)
        return self.exit_status

    # --- metrics -------------------------------------------------------------------------------------------

    def set_metrics(self, path: str) -> None:
        """Start writing metrics to `path`: one JSON line per FlushMetrics, and one every metrics interval."""
        with self._lock:
            if self._state is not State.NOT_STARTED:
                raise ConflictError(_PRE_BOOT_REFUSAL.format(what="the metrics file"))
            if self._metrics is not None:
                raise ConflictError(f"metrics already go to {self._metrics.path}; they cannot be redirected")
            self._metrics = _MetricsWriter(path, self.metrics_line, self._metrics_interval)

    def flush_metrics(self) -> None:
        if self._metrics is None:
            raise UsageError("there is no metrics file: PUT /metrics first")
        self._metrics.write(self.metrics_line())

    def metrics_line(self) -> dict[str, object]:
        """One metrics record. Counters are totals since isola-vmm started (Firecracker's are per interval)."""
        with self._lock:
            guest, state, final = self._guest, self._state, self._final_metrics
        return {
            "utc_timestamp_ms": time.time_ns() // 1_000_000,
            "state": state.value,
            "api": {"requests": self.requests, "faults": self.faults},
            "vm": guest.metrics() if guest is not None else final,
        }


def _existing(table: dict[str, dict[str, Any]], key: str, kind: str, path: str) -> dict[str, Any]:
    if key not in table:
        raise NotFoundError(f"there is no {kind} {key!r} to update: PUT /{path}/{key} first")
    return table[key]


def _document(pieces: dict[str, Any]) -> dict[str, Any]:
    """The VM document `config.parse` reads, from the pieces the controller keeps."""
    doc: dict[str, Any] = {}
    if "boot-source" in pieces:
        doc["boot-source"] = dict(pieces["boot-source"])
    if pieces["machine-config"]:
        doc["machine-config"] = dict(pieces["machine-config"])
    if pieces["drives"]:
        doc["drives"] = [dict(d) for d in pieces["drives"].values()]
    if pieces["network-interfaces"]:
        doc["network-interfaces"] = [dict(n) for n in pieces["network-interfaces"].values()]
    if "entropy" in pieces:
        doc["entropy"] = dict(pieces["entropy"])
    if "process" in pieces:
        doc["process"] = dict(pieces["process"])
    return doc


_KERNEL_ONLY = ("boot-source", "drives", "network-interfaces", "entropy")


def _process_config(pieces: dict[str, Any]) -> ProcessConfig:
    """The process VM the pieces describe, refused next to what only a kernel VM has."""
    for key in _KERNEL_ONLY:
        if pieces.get(key) or (key in ("boot-source", "entropy") and key in pieces):  # entropy's body is {}
            raise UsageError(f"process: a process VM runs one program with no kernel or devices; it cannot have {key}")
    machine = pieces["machine-config"]
    if machine.get("vcpu_count", 1) != 1:
        raise InvalidSpecError("a process VM has 1 vCPU", field="machine-config.vcpu_count")
    body = pieces["process"]
    if "mem_size_mib" in body and "mem_size_mib" in machine and body["mem_size_mib"] != machine["mem_size_mib"]:
        raise InvalidSpecError("differs from machine-config.mem_size_mib: give one", field="process.mem_size_mib")
    process = config_from_body(body, machine.get("mem_size_mib"))
    process.validate()
    return process


def _crash(exc: BaseException) -> ExitStatus:
    """The VM thread failed after the VM started: an error status, and for a bug the traceback."""
    if isinstance(exc, IsolaError):
        return ExitStatus(ExitKind.ERROR, str(exc))
    traceback.print_exception(exc, file=sys.stderr)
    return ExitStatus(ExitKind.ERROR, f"isola-vmm bug: {exc!r}")


class _MetricsWriter:
    """Appends JSON lines to a file or FIFO, on demand and every `interval` seconds until closed.

    Opened non-blocking like Firecracker's, so a FIFO without a reader is refused at once rather than hanging
    the API, and a full FIFO drops a line instead of stalling the VMM."""

    def __init__(self, path: str, line: Callable[[], dict[str, object]], interval: float) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            self._fd = os.open(path, flags, 0o644)
        except OSError as exc:
            reason = "a FIFO needs a reader first" if exc.errno == errno.ENXIO else exc.strerror
            raise UsageError(f"metrics_path: cannot open {path}: {reason}") from None
        self._write_lock = threading.Lock()
        self._closed = threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._periodic, args=(line, interval), name="metrics", daemon=True)
        self._thread.start()

    def write(self, record: dict[str, object]) -> None:
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._write_lock:
            if self._closed.is_set():
                return
            try:
                os.write(self._fd, data)
            except BlockingIOError:
                pass  # a FIFO whose reader is behind: this line is lost, the next one may fit
            except OSError as exc:
                raise IsolaError(f"cannot write metrics to {self.path}: {exc.strerror}") from None

    def _periodic(self, line: Callable[[], dict[str, object]], interval: float) -> None:
        while not self._closed.wait(interval):
            try:
                self.write(line())
            except IsolaError as err:
                if not self._warned:
                    print(f"isola-vmm: {err}", file=sys.stderr)
                    self._warned = True

    def close(self, line: Callable[[], dict[str, object]]) -> None:
        """Write a last line (so the VM's final counters are not lost), then stop."""
        if self._closed.is_set():
            return
        try:
            self.write(line())
        except IsolaError as err:
            print(f"isola-vmm: {err}", file=sys.stderr)
        with self._write_lock:
            self._closed.set()
            os.close(self._fd)
        self._thread.join()
