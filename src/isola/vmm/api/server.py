"""Serving the API on a unix socket until a kernel VM ends or isola-vmm is told to stop.

The socket is bound here rather than by uvicorn, to answer the common mistakes in one line: a path another
process serves on, a directory that does not exist or may not be written. A socket file left behind by a
process that died is replaced (nothing listens on it). On the way out, the socket file is removed — only if it
is still the one this process made.

uvicorn handles SIGTERM and SIGINT while it serves, then raises them again once it has shut down; handlers are
installed around it so that this second delivery only records which signal it was, and isola-vmm can stop the
VM, print its status line and exit with the VM's status instead of dying of the signal.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from isola.host import unix_socket
from isola.vmm.api.app import create_app
from isola.vmm.api.controller import Boot, Controller
from isola.vmm.api.process_vm import ProcessRunner
from isola.vmm.console_socket import ConsoleServer
from isola.vmm.machine import ExitStatus

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def serve(
    path: Path, boot: Boot, *, document: object = None, console: ConsoleServer | None = None
) -> ExitStatus | None:
    """Serve the API on `path` (configured from `document` first, when given) until a kernel VM ends or a signal
    comes; a process VM's program has its stdio on `console` (else isola-vmm's), and its end leaves the API
    serving. Returns the VM's exit status, or None when no VM ran."""
    controller = Controller(boot, run_process=ProcessRunner(console))
    if document is not None:
        controller.load(document)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(controller),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
    )
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        server.should_exit = True

    def on_end(status: ExitStatus) -> None:
        if not controller.runs_a_process:  # its exit status stays readable at GET /vm until a signal comes
            server.should_exit = True

    controller.on_end = on_end
    # The handlers come first: a client may signal as soon as the socket accepts connections.
    previous = {signum: signal.signal(signum, on_signal) for signum in _SIGNALS}
    try:
        sock = unix_socket.listen(path, "the API socket", backlog=128)
    except BaseException:
        _restore(previous)
        raise
    identity = os.stat(path)
    print(f"isola-vmm: serving the API on {path}", file=sys.stderr, flush=True)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        reason = f"isola-vmm got {signal.Signals(received[0]).name}" if received else "isola-vmm stopped"
        status = controller.shutdown(reason)
        sock.close()
        unix_socket.remove_if_ours(path, identity)
        _restore(previous)
    return status


def _restore(handlers: Mapping[signal.Signals, Any]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
