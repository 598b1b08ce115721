"""The monitor of one metal instance: the process that owns the tenant's program for as long as it runs.

    python -m isola.metal.monitor STATE_DIR READY_FD        (started by `MetalEngine.start`, never by people)

The vm engine's pattern (`isola.monitor`): it detaches, then — still single-threaded, so the code between fork
and exec is safe — starts the program in the instance's cgroup and network namespace, in a session of its own,
in the instance's `files/` directory, with the console (a unix socket with a backlog) as its stdin, stdout and
stderr and everything it writes kept in console.log. It records who is who (monitor.json), reports "ok", and
waits. When the program ends the instance ends with it, as a container's does with its PID 1: whatever it left
running in the cgroup is killed, and the end is recorded (exit.json) with the CPU time of the whole cgroup.

SIGTERM to the monitor is passed on to the program; the monitor stays to record the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from isola.errors import EngineError, InvalidSpecError
from isola.host import procfs
from isola.metal import enter
from isola.metal.cgroup import InstanceGroup
from isola.metal.directory import MetalDir
from isola.monitor import readiness, relay
from isola.monitor.directory import EXIT, INSTANCE, MONITOR
from isola.vmm.console_socket import ConsoleServer


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m isola.metal.monitor STATE_DIR READY_FD", file=sys.stderr)
        return 64
    directory, ready = MetalDir(Path(args[0])), int(args[1])
    readiness.detach()
    return monitor(directory, ready)


def monitor(directory: MetalDir, ready: int) -> int:
    record = directory.read(INSTANCE)
    if record is None:
        return readiness.refuse(ready, EngineError(f"{directory.path}: no instance record"))
    group = InstanceGroup(record["id"])
    dirs, netns = group.dirs, record.get("netns")
    try:
        program = subprocess.Popen(
            record["command"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=directory.files,
            env=record["env"],
            start_new_session=True,
            preexec_fn=lambda: enter.enter(dirs, netns),
        )
    except OSError as exc:
        err = InvalidSpecError(f"{record['command'][0]}: {exc.strerror}", field="command[0]")
        return readiness.refuse(ready, err)
    except subprocess.SubprocessError as exc:  # enter() failed in the child
        return readiness.refuse(ready, EngineError(f"cannot put the program into its cgroup: {exc}"))
    assert program.stdin is not None and program.stdout is not None
    os.set_blocking(program.stdin.fileno(), False)  # a program that does not read loses input, never the console
    log = open(directory.console_log, "ab", buffering=0)  # noqa: SIM115 - open until the program ends
    console = ConsoleServer(directory.console)
    console.connect_input(_feeder(program.stdin.fileno()))
    pump = threading.Thread(target=_pump, args=(program.stdout.fileno(), relay.tee(log, console)), daemon=True)
    pump.start()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(program.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    directory.write(
        MONITOR,
        {
            "monitor": readiness.identity_json(procfs.identity(os.getpid())),
            "program": readiness.identity_json(procfs.identity(program.pid)),
            "started_at": time.time(),
        },
    )
    readiness.ready(ready)
    _, status, _ = os.wait4(program.pid, 0)
    group.kill_all()  # the instance ends with its program
    pump.join(2.0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        code, detail = 128 - code, f"the program was killed by {signal.Signals(-code).name}"
    else:
        detail = f"the program exited with status {code}"
    directory.write(EXIT, {"exit_code": code, "detail": detail, "cpu_ns": group.cpu_ns(), "ended_at": time.time()})
    console.close()
    log.close()
    return 0


def _feeder(fd: int) -> Callable[[bytes], None]:
    def feed(data: bytes) -> None:
        with contextlib.suppress(OSError):  # full (EAGAIN), or nobody reads any more (EPIPE)
            os.write(fd, data)

    return feed


def _pump(fd: int, sink: Callable[[bytes], None]) -> None:
    """The program's output to `sink` until every writer has closed the pipe."""
    with contextlib.suppress(OSError):
        while data := os.read(fd, 65536):
            sink(data)


if __name__ == "__main__":
    sys.exit(main())
