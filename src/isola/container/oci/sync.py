"""The conversation between the runtime and the container's first processes while a container is created.

They share a SOCK_SEQPACKET socket pair, so each message arrives whole; a message is a small JSON object with a
`type`. The child asks for what only the runtime can do (write its uid/gid maps, run the runtime-namespace
hooks) and says when it is ready or why it failed. A child that dies without a word shows up as end-of-file.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from isola.errors import EngineError, InvalidSpecError, IsolaError, NotFoundError

MAX_MESSAGE = 65536


def pair() -> tuple[socket.socket, socket.socket]:
    """(runtime end, child end)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)


def send(sock: socket.socket, kind: str, **fields: Any) -> None:
    sock.send(json.dumps({"type": kind, **fields}).encode())


def receive(sock: socket.socket, *expected: str) -> dict[str, Any]:
    """The next message, which must be one of `expected`; an error message from the child is raised as the
    IsolaError it describes, end-of-file as an EngineError."""
    data = sock.recv(MAX_MESSAGE)
    if not data:
        raise EngineError("the container's init exited during set-up without saying why")
    message: dict[str, Any] = json.loads(data)
    if message["type"] == "error":
        _raise(message)
    if message["type"] not in expected:
        raise EngineError(f"unexpected message from the container's init: {message['type']}")
    return message


def wait_exec(sock: socket.socket) -> None:
    """Wait for a child's execve: the socket is close-on-exec in the child, so end-of-file means the program
    runs; anything else is the error message the child sent instead."""
    data = sock.recv(MAX_MESSAGE)
    if data:
        _raise(json.loads(data))


def _raise(message: dict[str, Any]) -> None:
    if message.get("field"):
        raise InvalidSpecError(message["message"], field=message["field"])
    if message.get("kind") == "NotFoundError":
        raise NotFoundError(message["message"])
    raise EngineError(message["message"])


def send_error(sock: socket.socket, exc: BaseException) -> None:
    """Tell the runtime why set-up failed, in one line."""
    field = None
    if isinstance(exc, InvalidSpecError):
        field, text = exc.field, exc.message.removeprefix(f"{exc.field}: ")
    elif isinstance(exc, IsolaError):
        text = exc.message
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        text = f"{type(exc).__name__}: {exc}"
    if os.environ.get("ISOLA_DEBUG"):  # the child's traceback, for bugs in isola itself
        import traceback

        text += "\n" + "".join(traceback.format_exception(exc))
    try:
        kind = type(exc).__name__
        sock.send(json.dumps({"type": "error", "message": text, "field": field, "kind": kind}).encode())
    except OSError:
        pass
