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
import errno
import os
import signal
import socket
import stat
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from isola.errors import ConflictError, PermissionDeniedError, UsageError
from isola.vmm.api.app import create_app
from isola.vmm.api.controller import Boot, Controller
from isola.vmm.machine import ExitStatus

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def bind_unix_socket(path: Path) -> socket.socket:
    """A listening unix socket at `path`; a one-line IsolaError when it cannot be had."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise UsageError(f"cannot use {path} as the API socket: {exc.strerror}") from None
    else:
        if not stat.S_ISSOCK(mode):
            raise ConflictError(f"{path} exists and is not a socket; give a new path for the API socket")
        if _someone_listens(path):
            raise ConflictError(f"{path} is in use: another process serves on it")
        path.unlink()  # left behind by a process that died
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PermissionDeniedError(f"cannot create the API socket {path}: {exc.strerror}") from None
        if exc.errno == errno.EADDRINUSE:
            raise ConflictError(f"{path} is in use: another process serves on it") from None
        raise UsageError(f"cannot create the API socket {path}: {exc.strerror or exc}") from None
    return sock


def _someone_listens(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def serve(path: Path, boot: Boot, *, document: object = None) -> ExitStatus | None:
    """Serve the API on `path` (configured from `document` first, when given) until the VM ends or a signal
    comes. Returns the VM's exit status, or None when no VM ran."""
    controller = Controller(boot)
    if document is not None:
        controller.load(document)
    sock = bind_unix_socket(path)
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
