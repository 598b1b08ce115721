"""Starting an instance's monitor detached, and the one message it sends back: the guest runs, or why not.

The engine (`spawn`) runs `python -m MODULE STATE_DIR READY_FD` in a session of its own and waits for one JSON
line on a pipe. The monitor (`detach`, then `ready` or `refuse`) forks again at once — the engine reaps the
first child, and the monitor, a grandchild, belongs to no daemon, so a daemon can restart or die without taking
guests along — then writes `{"ok": true}` once the guest runs, or the isola error that stopped it, which the
engine raises as the same class. A monitor that dies before it says anything is reported with the last lines
of its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from isola import errors
from isola.engine import State, Status
from isola.errors import ConflictError, EngineError, IsolaError
from isola.host import procfs
from isola.monitor.directory import EXIT, MONITOR, InstanceDir

START_SECONDS = 30.0
"""How long `spawn` waits for the monitor to report that the guest runs."""


# -- the engine's side -----------------------------------------------------------------------------------------


def spawn(directory: InstanceDir, module: str, guest: str = "the guest", timeout: float = START_SECONDS) -> None:
    """Start `module`'s monitor for `directory` and return once it reports the guest running; otherwise raise
    what it reported (or what its log says). `guest` names the guest in that message ("the VM")."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    try:
        with open(directory.monitor_log, "ab") as log:
            first = subprocess.Popen(
                [sys.executable, "-m", module, str(directory.path), str(ready_w)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(ready_w,),
                start_new_session=True,
                cwd="/",
            )
        os.close(ready_w)
        ready_w = -1
        report = _read_report(ready_r, timeout)
        first.wait()
    finally:
        os.close(ready_r)
        if ready_w >= 0:
            os.close(ready_w)
    if report.get("ok"):
        return
    if "error" in report:
        cls = getattr(errors, str(report["error"]), EngineError)
        if not (isinstance(cls, type) and issubclass(cls, IsolaError)):
            cls = EngineError
        raise cls(str(report["message"]), hint=report.get("hint"))
    tail = directory.monitor_log.read_text(errors="replace").strip().splitlines()[-3:]
    raise EngineError(f"the monitor of {directory.path.name} did not start {guest}: {' / '.join(tail) or 'no report'}")


def _read_report(fd: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return {}
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    try:
        report = json.loads(data.split(b"\n")[0] or b"{}")
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


# -- the monitor's side ----------------------------------------------------------------------------------------


def detach() -> None:
    """Fork once more and go on in the grandchild; the first child exits at once, for the engine to reap."""
    if os.fork():
        os._exit(0)
    os.chdir("/")


def ready(fd: int) -> None:
    """Tell the engine the guest runs."""
    _report(fd, {"ok": True})


def refuse(fd: int, err: IsolaError) -> int:
    """Tell the engine why the guest could not start; the monitor's exit status."""
    _report(fd, {"error": type(err).__name__, "message": err.message, "hint": err.hint})
    return 1


def _report(fd: int, message: dict[str, object]) -> None:
    with contextlib.suppress(OSError):  # the engine gave up waiting: the records say the rest
        os.write(fd, (json.dumps(message) + "\n").encode())
    os.close(fd)


def identity_json(who: procfs.Identity | None) -> dict[str, int] | None:
    """An identity as monitor.json records it."""
    return None if who is None else {"pid": who.pid, "start_ticks": who.start_ticks}


def identity_from(doc: dict[str, int] | None) -> procfs.Identity | None:
    """An identity from monitor.json."""
    return None if doc is None else procfs.Identity(doc["pid"], doc["start_ticks"])


def recorded_status(instance_id: str, directory: InstanceDir) -> Status | None:
    """What the directory and /proc say about the guest: STOPPED (with how it ended), CREATED, RUNNING; None
    when its monitor died without recording an end (the engine knows what else may still run)."""
    ended = directory.read(EXIT)
    if ended is not None:
        return Status(instance_id, State.STOPPED, exit_code=ended["exit_code"], detail=ended["detail"])
    running = directory.read(MONITOR)
    if running is None:
        return Status(instance_id, State.CREATED)
    monitor = identity_from(running["monitor"])
    if monitor is not None and procfs.running(monitor):
        return Status(instance_id, State.RUNNING, monitor_pid=monitor.pid)
    ended = directory.read(EXIT)  # the monitor may have recorded the end just before it exited
    if ended is not None:
        return Status(instance_id, State.STOPPED, exit_code=ended["exit_code"], detail=ended["detail"])
    return None


def console_while_running(instance_id: str, status: Status, directory: InstanceDir) -> str:
    """The console socket's path: it exists only while the guest runs; after, its output is in the log."""
    if status.state is not State.RUNNING:
        raise ConflictError(
            f"instance {instance_id} is {status.state.value}: its console exists while it runs",
            hint=f"what it wrote is in {directory.console_log}",
        )
    return str(directory.console)


def wait_ended(alive: Callable[[], bool], timeout: float) -> bool:
    """Wait until `alive()` says none of the instance's processes runs (a monitor outlives its guest by the time
    it takes to record the end and close the console); whether that happened within `timeout`."""
    deadline = time.monotonic() + timeout
    while alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
