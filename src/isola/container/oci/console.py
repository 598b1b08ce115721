"""The container's terminal, handed to whoever asked for it.

runc's protocol, which conmon and containerd speak: the caller listens on a unix socket and passes its path as
--console-socket; the runtime connects, and the container's init sends the pty master over it as SCM_RIGHTS
ancillary data, with the terminal's name as the (otherwise unused) payload. Nothing else is said on the socket.

For `run` in the foreground the runtime is its own caller: it receives the master over a socket pair and
copies bytes between its own terminal (put in raw mode) and the container's until the container exits.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import termios
import tty
from collections.abc import Iterator

from isola.errors import NotFoundError, UsageError
from isola.host import pty


def connect(path: str) -> socket.socket:
    """Connect to the caller's console socket (before the container's root changes, while its path resolves)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except FileNotFoundError:
        sock.close()
        raise NotFoundError(f"--console-socket {path}: no such socket") from None
    except OSError as exc:
        sock.close()
        raise UsageError(f"--console-socket {path}: cannot connect: {exc.strerror}") from None
    return sock


def send_master(sock: socket.socket, master: int, name: str) -> None:
    socket.send_fds(sock, [name.encode()], [master])


def receive_master(sock: socket.socket) -> int:
    """The pty master sent by `send_master`."""
    _, fds, _, _ = socket.recv_fds(sock, 4096, 1)
    if not fds:
        raise OSError("no terminal arrived on the console socket")
    return fds[0]


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The caller's terminal in raw mode for the duration (keys go to the container, ^C included)."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def proxy(master: int) -> None:
    """Copy stdin to the container's terminal and its output to stdout until the container's side closes.
    The terminal follows the size of ours (SIGWINCH)."""
    if os.isatty(0):
        with contextlib.suppress(OSError):
            pty.set_size(master, *pty.get_size(0))
        signal.signal(signal.SIGWINCH, lambda *_: _copy_size(master))
    inputs = [master, 0]
    while True:
        try:
            ready, _, _ = select.select(inputs, [], [])
        except InterruptedError:
            continue
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every slave fd closed, the container is gone
                return
            if not data:
                return
            os.write(1, data)
        if 0 in ready:
            data = os.read(0, 65536)
            if data:
                os.write(master, data)
            else:
                inputs.remove(0)


def _copy_size(master: int) -> None:
    with contextlib.suppress(OSError):
        pty.set_size(master, *pty.get_size(0))
