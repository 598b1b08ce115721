"""Attaching a terminal (or a pipe) to an instance's console WebSocket.

On a terminal, it is raw while attached (Ctrl-C and Ctrl-D go to the guest) and restored on the way out;
Ctrl-] detaches. From a pipe, stdin is sent until it ends, then what the guest still writes is shown until it
has been quiet for `QUIET_SECONDS`, so `echo ls | isola instance console x` ends by itself. The guest's end
closes the WebSocket, which ends the attach too.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from isola.platform.client import error_from

DETACH = b"\x1d"  # Ctrl-]
QUIET_SECONDS = 0.5


def attach(ws: ClientConnection) -> str:
    """Bridge stdin/stdout and `ws` until one side ends; why it ended ("detached", "the guest ended", …).
    A refusal from the daemon is raised as its isola error."""
    first = _first_frame(ws)
    if isinstance(first, str):
        raise error_from(0, json.loads(first))
    ended = threading.Event()
    last_output = [time.monotonic()]

    def output() -> None:
        with contextlib.suppress(ConnectionClosed):
            if first:
                _write(first)
            for frame in ws:
                if isinstance(frame, bytes):
                    _write(frame)
                    last_output[0] = time.monotonic()
        ended.set()

    reader = threading.Thread(target=output, daemon=True)
    reader.start()
    tty_in = os.isatty(0)
    with _raw(tty_in):
        while not ended.is_set():
            if not select.select([0], [], [], 0.1)[0]:
                continue
            data = os.read(0, 4096)
            if not data:  # a pipe ended: wait for the guest to go quiet
                while not ended.is_set() and time.monotonic() - last_output[0] < QUIET_SECONDS:
                    ended.wait(0.05)
                ws.close()
                return "input ended"
            if tty_in and DETACH in data:
                data = data[: data.index(DETACH)]
                if data:
                    ws.send(data)
                ws.close()
                return "detached"
            try:
                ws.send(data)
            except ConnectionClosed:
                break
    return "the guest ended"


def _first_frame(ws: ClientConnection) -> bytes | str:
    """The daemon sends a text frame only to refuse; the guest may also say nothing for a while."""
    try:
        return ws.recv(timeout=0.3)
    except TimeoutError:
        return b""
    except ConnectionClosed:
        return b""


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@contextlib.contextmanager
def _raw(tty_in: bool) -> Iterator[None]:
    if not tty_in:
        yield
        return
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
