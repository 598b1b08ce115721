"""Serving on a unix socket path: the API socket and the console socket share the rules.

A path that holds a socket nobody listens on is what a killed VMM leaves behind, and is replaced; a socket
someone serves on, or any other file, is refused, so a typo never deletes a file or steals a live VMM's
socket. The socket is created 0600: whoever may connect controls the VM.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

from isola.errors import ConflictError, EngineError, NotFoundError, PermissionDeniedError, UsageError

MAX_PATH = 107
"""sun_path holds 108 bytes with the terminating NUL."""


def serving(path: Path) -> bool:
    """Whether some process accepts connections on `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as probe:
        try:
            probe.connect(os.fsencode(path))
        except OSError:
            return False
    return True


def listen(path: Path, what: str, *, backlog: int = 16) -> socket.socket:
    """A listening socket at `path`; `what` ("the API socket") names it in the one-line errors."""
    if len(os.fsencode(path)) > MAX_PATH:
        raise UsageError(f"{path}: a unix socket path is at most {MAX_PATH} bytes", hint="use a shorter path")
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise UsageError(f"cannot use {path} as {what}: {exc.strerror}") from None
    else:
        if not stat.S_ISSOCK(mode):
            raise ConflictError(f"{path} exists and is not a socket; give a new path for {what}")
        if serving(path):
            raise ConflictError(f"{path} is in use: another process is already serving there")
        path.unlink(missing_ok=True)  # left behind by a process that died
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        old_umask = os.umask(0o177)
        try:
            listener.bind(os.fsencode(path))
        finally:
            os.umask(old_umask)
        listener.listen(backlog)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.ENOENT:
            raise NotFoundError(f"{path.parent}: no such directory for {what}") from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PermissionDeniedError(f"cannot create {what} {path}: {exc.strerror}") from None
        if exc.errno == errno.EADDRINUSE:
            raise ConflictError(f"{path} is in use: another process is already serving there") from None
        raise EngineError(f"cannot create {what} {path}: {exc.strerror}") from None
    return listener


def remove_if_ours(path: Path, identity: os.stat_result) -> None:
    """Remove the socket at `path` when the server is done, if it is still the one `identity` (its stat right
    after `listen`) describes: another process may have taken the path over since."""
    try:
        now = os.stat(path)
        if (now.st_dev, now.st_ino) == (identity.st_dev, identity.st_ino):
            path.unlink()
    except OSError:
        pass  # already gone, or someone else's now: not ours to remove
