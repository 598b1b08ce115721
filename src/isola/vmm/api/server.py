"""Serving the API on a unix socket until the VM ends or isola-vmm is told to stop.

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
from pathlib import Path
from types import FrameType

import uvicorn

from isola.host import unix_socket
from isola.vmm.api.app import create_app
from isola.vmm.api.controller import Boot, Controller
from isola.vmm.machine import ExitStatus

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def serve(path: Path, boot: Boot, *, document: object = None) -> ExitStatus | None:
    """Serve the API on `path` (configured from `document` first, when given) until the VM ends or a signal
    comes. Returns the VM's exit status, or None when no VM ran."""
    controller = Controller(boot)
    if document is not None:
        controller.load(document)
    sock = unix_socket.listen(path, "the API socket", backlog=128)
    identity = os.stat(path)
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
        server.should_exit = True

    controller.on_end = on_end
    previous = {signum: signal.signal(signum, on_signal) for signum in _SIGNALS}
    print(f"isola-vmm: serving the API on {path}", file=sys.stderr, flush=True)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        reason = f"isola-vmm got {signal.Signals(received[0]).name}" if received else "isola-vmm stopped"
        status = controller.shutdown(reason)
        sock.close()
        _remove_if_ours(path, identity)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status


def _remove_if_ours(path: Path, identity: os.stat_result) -> None:
    try:
        now = os.stat(path)
        if (now.st_dev, now.st_ino) == (identity.st_dev, identity.st_ino):
            path.unlink()
    except OSError:
        pass  # already gone, or replaced by someone else's: not ours to remove
