"""The conversation between the runtime and the container's first processes while a container is created.

A pipe each way: the child asks for what only the runtime can do (write its uid/gid maps, run the
runtime-namespace hooks) and says when it is ready or why it failed. A message is a small dict with a `type`,
marshalled (both ends are the same Python, and marshal needs no import) behind a 4-byte length. A child that
dies without a word shows up as end-of-file, since every write end is close-on-exec and the runtime keeps none
of the child's.

Pipes rather than a socket pair: the socket module (with selectors, array and its enums) is the largest import a
`run` would otherwise pay for, and nothing here needs more than a byte stream.
"""

from __future__ import annotations

import marshal
import os

from isola.errors import EngineError, InvalidSpecError, IsolaError, NotFoundError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_HEADER = 4


class Channel:
    """One end of the runtime <-> child conversation: the pipe it reads and the pipe it writes."""

    __slots__ = ("read_fd", "write_fd")

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                os.close(fd)
        self.read_fd = self.write_fd = -1

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = os.read(self.read_fd, size - len(data))
            if not chunk:
                return data
            data += chunk
        return data

    def raw_receive(self) -> dict[str, Any] | None:
        """The next message, or None at end-of-file (every writer gone)."""
        header = self._read(_HEADER)
        if len(header) < _HEADER:
            return None
        size = int.from_bytes(header, "little")
        body = self._read(size)
        if len(body) < size:
            return None
        message: dict[str, Any] = marshal.loads(body)
        return message


def pair() -> tuple[Channel, Channel]:
    """(runtime end, child end), all four descriptors close-on-exec."""
    to_runtime_r, to_runtime_w = os.pipe2(os.O_CLOEXEC)
    to_child_r, to_child_w = os.pipe2(os.O_CLOEXEC)
    return Channel(to_runtime_r, to_child_w), Channel(to_child_r, to_runtime_w)


def send(channel: Channel, kind: str, /, **fields: Any) -> None:
    body = marshal.dumps({"type": kind, **fields})
    data = len(body).to_bytes(_HEADER, "little") + body
    while data:
        data = data[os.write(channel.write_fd, data) :]


def receive(channel: Channel, *expected: str) -> dict[str, Any]:
    """The next message, which must be one of `expected`; an error message from the child is raised as the
    IsolaError it describes, end-of-file as an EngineError."""
    message = channel.raw_receive()
    if message is None:
        raise EngineError("the container's init exited during set-up without saying why")
    if message["type"] == "error":
        raise_error(message)
    if message["type"] not in expected:
        raise EngineError(f"unexpected message from the container's init: {message['type']}")
    return message


def wait_exec(channel: Channel) -> None:
    """Wait for a child's execve: its write end is close-on-exec, so end-of-file means the program runs;
    anything else is the error message the child sent instead."""
    message = channel.raw_receive()
    if message is not None:
        raise_error(message)


def raise_error(message: dict[str, Any]) -> None:
    """Raise the IsolaError an error message (from `error_message`) describes."""
    if message.get("field"):
        raise InvalidSpecError(message["message"], field=message["field"])
    if message.get("kind") == "NotFoundError":
        raise NotFoundError(message["message"])
    raise EngineError(message["message"])


def error_message(exc: BaseException) -> dict[str, Any]:
    """Why set-up failed, in one line, as a message for the runtime."""
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
    return {"type": "error", "message": text, "field": field, "kind": type(exc).__name__}


def send_error(channel: Channel, exc: BaseException) -> None:
    """Tell the runtime why set-up failed."""
    try:
        message = error_message(exc)
        send(channel, message.pop("type"), **message)
    except OSError:
        pass
