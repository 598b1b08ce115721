"""The monitor of one vm-engine instance: the process that owns a guest for as long as it runs.

    python -m isola.vmm.monitor STATE_DIR READY_FD        (started by `VmEngine.start`, never by people)

It detaches at once (a second fork: the engine's caller reaps the first child, and the monitor, in a session of
its own, belongs to no daemon, so a daemon can restart or die without taking guests along), then runs the
launcher as its child (`process_child`): for a process VM the guest's stdin, stdout and stderr are the console —
a unix socket served here with a backlog, so output written before anyone attaches is not lost — and a log file
of everything the guest wrote; a kernel VM serves its own serial console socket. When the VM runs, the
monitor writes who is who (monitor.json) and reports "ok" on READY_FD; if it cannot start the VM it reports the
error there instead, as JSON, for the engine to raise. When the VM ends it records how (exit.json) and exits.

SIGTERM to the monitor is passed on as a stop to the launcher; the monitor stays to record the end.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from isola.errors import EngineError, IsolaError
from isola.host import procfs
from isola.monitor import readiness, relay
from isola.monitor.directory import EXIT, INSTANCE, MONITOR
from isola.vmm.console_socket import ConsoleServer
from isola.vmm.instance_dir import InstanceDir
from isola.vmm.process_child import ProcessChild

KERNEL_CONSOLE_SECONDS = 60.0
"""How long a kernel-mode isola-vmm may take to serve its console socket (Python's start-up, a slow host)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m isola.vmm.monitor STATE_DIR READY_FD", file=sys.stderr)
        return 64
    directory, ready = InstanceDir(Path(args[0])), int(args[1])
    readiness.detach()  # the engine waits for the first child; the monitor is the grandchild, orphaned on purpose
    return monitor(directory, ready)


def monitor(directory: InstanceDir, ready: int) -> int:
    record = directory.read(INSTANCE)
    if record is None:
        return readiness.refuse(ready, EngineError(f"{directory.path}: no instance record"))
    log = open(directory.console_log, "ab", buffering=0)  # noqa: SIM115 - open until the VM ends
    console: ConsoleServer | None = None
    try:
        if record["mode"] == "process":
            console = ConsoleServer(directory.console)
            child = ProcessChild(record["argv"], output=relay.tee(log, console))
            console.connect_input(child.feed)
            vm = child.wait_started()
        else:
            child = ProcessChild(record["argv"], output=log.write, stop_signal=signal.SIGINT)
            vm = None
            _wait_for_socket(directory.console, child)
    except IsolaError as err:
        if console is not None:
            console.close()
        return readiness.refuse(ready, err)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        child.stop()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    directory.write(
        MONITOR,
        {
            "monitor": readiness.identity_json(procfs.identity(os.getpid())),
            "launcher": readiness.identity_json(child.identity),
            "vm": readiness.identity_json(vm),
            "started_at": time.time(),
        },
    )
    readiness.ready(ready)
    ended = child.wait()
    directory.write(
        EXIT,
        {"exit_code": ended.exit_code, "detail": ended.detail, "cpu_ns": ended.cpu_ns, "ended_at": time.time()},
    )
    if console is not None:
        console.close()
    log.close()
    return 0


def _wait_for_socket(path: Path, child: ProcessChild) -> None:
    deadline = time.monotonic() + KERNEL_CONSOLE_SECONDS
    while not path.exists():
        if child.ended():
            return  # it failed at once; its messages are in the log and its status in exit.json
        if time.monotonic() > deadline:
            child.kill()
            raise EngineError(f"isola-vmm did not serve its console on {path} within {KERNEL_CONSOLE_SECONDS:.0f} s")
        time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
