"""The guest's serial console on a unix socket, to attach to and detach from (`isola vm console PATH`).

The VMM side is `ConsoleServer`: the UART's output goes to `output()`, which never blocks, because it runs on
a vCPU thread in the middle of a port write. It keeps the last 64 KiB of output, so that an attaching client
first sees what the guest said recently (as `incus console --show-log` does), and queues what a client has
not read yet. One client is attached at a time; a new one takes over and the previous one is told and
disconnected, so a console left attached in a forgotten terminal never locks anyone out. What the client
sends is the console's input. A client that disconnects, vanishes mid-write or stops reading costs the VM
nothing: its queue is bounded and dropped with it. A server thread does all socket I/O.

The client side is `attach()`: the terminal goes raw (so Ctrl-C, Ctrl-D and the arrow keys reach the guest,
not the local shell) and is restored however the attachment ends; `Ctrl-]` detaches, as in `virsh console`
and telnet. The protocol is the bytes themselves, both ways.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import socket
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal, Protocol, TypeVar

from isola.errors import NotFoundError, PermissionDeniedError, UsageError
from isola.host import unix_socket

BACKLOG = 64 << 10
"""Output kept for the next client to attach."""
CLIENT_QUEUE = 1 << 20
"""Output a client may leave unread; beyond it the oldest is dropped (the guest never waits for a client)."""
DETACH = 0x1D  # Ctrl-]
DETACH_NAME = "Ctrl-]"
TAKEN_OVER = b"\r\n[isola-vmm: another client attached to this console]\r\n"
FINAL_FLUSH_SECONDS = 2.0

InputSink = Callable[[bytes], object]


class _HasConsoleInput(Protocol):
    def console_input(self, data: bytes) -> None: ...


_Vm = TypeVar("_Vm", bound=_HasConsoleInput)
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
AttachEnd = Literal["detached", "closed", "input ended"]


class ConsoleServer:
    """Serves one VM's console on the unix socket `path` (created 0600, removed by `close()`)."""

    def __init__(self, path: Path, *, backlog: int = BACKLOG, client_queue: int = CLIENT_QUEUE) -> None:
        self.path = path
        self._backlog_size = backlog
        self._client_queue = client_queue
        self._listener = unix_socket.listen(path, "the console socket", backlog=4)
        self._identity = _identity(path)
        self._lock = threading.Lock()
        self._backlog = bytearray()
        self._queue = bytearray()  # output the attached client has not been sent yet
        self._attached = False
        self._wake_pending = False
        self._stopping = False
        self._input: InputSink | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name=f"console {path.name}", daemon=True)
        self._thread.start()

    def __enter__(self) -> ConsoleServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- the VMM's side --------------------------------------------------------------------------------------

    def output(self, data: bytes) -> None:
        """Console output from the guest. Never blocks."""
        with self._lock:
            self._backlog += data
            if len(self._backlog) > self._backlog_size:
                del self._backlog[: len(self._backlog) - self._backlog_size]
            if not self._attached or self._stopping:
                return
            self._queue += data
            if len(self._queue) > self._client_queue:
                del self._queue[: len(self._queue) - self._client_queue]
            if not self._wake_pending:
                self._wake_pending = True
                self._wake()  # under the lock: close() cannot have closed the pipe yet

    def on_started(self, then: Callable[[_Vm], None] | None = None) -> Callable[[_Vm], None]:
        """A `launch.boot` on_started hook: the running VM's `console_input` becomes the clients' input, then
        `then` (another hook) runs."""

        def started(vm: _Vm) -> None:
            self.connect_input(vm.console_input)
            if then is not None:
                then(vm)

        return started

    def connect_input(self, sink: InputSink | None) -> None:
        """Where a client's keystrokes go from now on (the running VM's `console_input`); until then, and
        after None, they are dropped."""
        self._input = sink

    def close(self) -> None:
        """Send the attached client what it has not got yet (for a short while), disconnect it, remove the
        socket."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._wake()
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe already wakes the thread
            os.write(self._wake_w, b"\0")

    # -- the server thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        client: socket.socket | None = None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            try:
                while not self._stopping:
                    if client is not None:
                        with self._lock:
                            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._queue else 0)
                        selector.modify(client, wanted)
                    for key, events in selector.select():
                        if key.fileobj is self._listener:
                            client = self._take_over(selector, client)
                        elif key.fileobj == self._wake_r:
                            self._drain_wake()
                        elif key.fileobj is client and client is not None and not self._serve(client, events):
                            self._detach(selector, client)
                            client = None
            finally:
                if client is not None:
                    self._final_flush(client)
                    self._detach(selector, client)
                self._listener.close()
                if _identity(self.path) == self._identity:
                    self.path.unlink(missing_ok=True)

    def _take_over(self, selector: selectors.BaseSelector, old: socket.socket | None) -> socket.socket | None:
        try:
            new, _ = self._listener.accept()
        except OSError:
            return old
        if old is not None:
            with contextlib.suppress(OSError):
                old.send(TAKEN_OVER, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            self._detach(selector, old)
        new.setblocking(False)
        with self._lock:
            self._queue = bytearray(self._backlog)
            self._attached = True
        selector.register(new, selectors.EVENT_READ | selectors.EVENT_WRITE)
        return new

    def _detach(self, selector: selectors.BaseSelector, client: socket.socket) -> None:
        with self._lock:
            self._attached = False
            self._queue.clear()
        selector.unregister(client)
        client.close()

    def _drain_wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def _serve(self, client: socket.socket, events: int) -> bool:
        """Input from the client, output to it. False when the client is gone."""
        if events & selectors.EVENT_READ and not self._receive(client):
            return False
        return not events & selectors.EVENT_WRITE or self._send(client)

    def _receive(self, client: socket.socket) -> bool:
        """Keystrokes to the guest. False when the client is gone."""
        try:
            data = client.recv(4096)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        sink = self._input
        if sink is not None:
            sink(data)
        return True

    def _send(self, client: socket.socket) -> bool:
        """As much queued output as the client takes now. False when the client is gone."""
        with self._lock:
            chunk = bytes(self._queue[:65536])
        try:
            sent = client.send(chunk, socket.MSG_NOSIGNAL)
        except BlockingIOError:
            return True
        except OSError:
            return False
        with self._lock:
            del self._queue[:sent]
        return True

    def _final_flush(self, client: socket.socket) -> None:
        with self._lock:
            rest = bytes(self._queue)
        client.settimeout(FINAL_FLUSH_SECONDS)
        with contextlib.suppress(OSError):
            client.sendall(rest, socket.MSG_NOSIGNAL)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


# -- the client ------------------------------------------------------------------------------------------------


def connect(path: Path) -> socket.socket:
    """A connection to the console served at `path`, or an error that says why not."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(os.fsencode(path))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.ENOENT:
            raise NotFoundError(
                f"{path}: no such console socket", hint="start the VM with --console-sock PATH"
            ) from None
        if exc.errno == errno.ECONNREFUSED:
            raise NotFoundError(f"{path}: no VM is serving a console there (it has ended?)") from None
        if exc.errno == errno.EACCES:
            raise PermissionDeniedError(f"{path}: {exc.strerror}") from None
        if exc.errno == errno.ENOTSOCK:
            raise UsageError(f"{path} is not a socket") from None
        raise UsageError(f"{path}: cannot connect: {exc.strerror}") from None
    return sock


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[bool]:
    """`fd`'s terminal in raw mode for the duration, restored on the way out whatever happens (SIGTERM and
    SIGHUP included). Yields whether `fd` is a terminal at all; a pipe is left alone."""
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    handlers = _exit_on_signals() if threading.current_thread() is threading.main_thread() else {}
    try:
        tty.setraw(fd, termios.TCSAFLUSH)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _exit_on_signals() -> dict[int, _Handler]:
    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    return {signum: signal.signal(signum, leave) for signum in (signal.SIGTERM, signal.SIGHUP)}


def attach(path: Path, *, stdin: int = 0, stdout: int = 1, notice: Callable[[str], None] | None = None) -> AttachEnd:
    """Attach this terminal to the console at `path` until Ctrl-] (or the end of input, or the VMM closing
    the console). `notice` gets the lines for the user (default: stderr)."""
    say = notice or (lambda line: print(line, file=sys.stderr, flush=True))
    sock = connect(path)
    with sock:
        say(f"isola: attached to {path}; detach with {DETACH_NAME}")
        with raw_terminal(stdin):
            end = _relay(sock, stdin, stdout)
    say(
        {
            "detached": f"isola: detached from {path}",
            "closed": "isola: the console closed (the VM ended, or another client attached)",
            "input ended": f"isola: end of input; detached from {path}",
        }[end]
    )
    return end


def _relay(sock: socket.socket, stdin: int, stdout: int) -> AttachEnd:
    with selectors.DefaultSelector() as selector:
        selector.register(stdin, selectors.EVENT_READ)
        selector.register(sock, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj == stdin:
                    typed = os.read(stdin, 4096)
                    if not typed:
                        return "input ended"
                    detach = typed.find(DETACH)
                    try:
                        sock.sendall(typed if detach < 0 else typed[:detach])
                    except OSError:
                        return "closed"
                    if detach >= 0:
                        return "detached"
                else:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        return "closed"
                    if not data:
                        return "closed"
                    _write_all(stdout, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
