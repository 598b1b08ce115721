"""The console socket: the VMM's server with a fake console, and `isola vm console` driven through a pty."""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from isola.errors import ConflictError, NotFoundError, UsageError
from isola.vmm import console_socket
from isola.vmm.console_socket import TAKEN_OVER, ConsoleServer


class FakeVm:
    """What the server needs of a running VM: somewhere to type."""

    def __init__(self) -> None:
        self.typed = bytearray()
        self.event = threading.Event()

    def console_input(self, data: bytes) -> None:
        self.typed += data
        self.event.set()

    def wait_typed(self, expected: bytes, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while bytes(self.typed) != expected:
            assert time.monotonic() < deadline, f"typed {bytes(self.typed)!r}, expected {expected!r}"
            self.event.wait(0.05)
            self.event.clear()


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "console.sock"


@pytest.fixture
def server(sock_path: Path) -> Iterator[ConsoleServer]:
    with ConsoleServer(sock_path) as served:
        yield served


def client(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.settimeout(10)
    return sock


def receive(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


def receive_until(sock: socket.socket, marker: bytes) -> bytes:
    data = bytearray()
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"EOF before {marker!r}: {bytes(data[-200:])!r}"
        data += chunk
    return bytes(data)


def wait_for(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- the server ------------------------------------------------------------------------------------------------


def test_an_attaching_client_first_gets_the_last_64_kib(server: ConsoleServer, sock_path: Path) -> None:
    history = bytes(i % 251 for i in range(100_000))
    for start in range(0, len(history), 1000):
        server.output(history[start : start + 1000])
    with client(sock_path) as c:
        assert receive(c, console_socket.BACKLOG) == history[-console_socket.BACKLOG :]
        server.output(b"live")
        assert receive(c, 4) == b"live"


def test_input_goes_to_the_vm_once_connected(server: ConsoleServer, sock_path: Path) -> None:
    vm = FakeVm()
    with client(sock_path) as c:
        c.sendall(b"before the VM runs\n")  # nowhere to go yet: dropped
        time.sleep(0.1)
        server.connect_input(vm.console_input)
        c.sendall(b"ls -l\r")
        vm.wait_typed(b"ls -l\r")
        server.connect_input(None)


def test_on_started_connects_the_input_and_runs_the_next_hook(server: ConsoleServer, sock_path: Path) -> None:
    seen: list[FakeVm] = []
    vm = FakeVm()
    server.on_started(seen.append)(vm)
    assert seen == [vm]
    with client(sock_path) as c:
        c.sendall(b"typed")
        vm.wait_typed(b"typed")


def test_reconnecting_sees_what_happened_meanwhile(server: ConsoleServer, sock_path: Path) -> None:
    vm = FakeVm()
    server.connect_input(vm.console_input)
    with client(sock_path) as first:
        server.output(b"one\r\n")
        assert receive(first, 5) == b"one\r\n"
        first.sendall(b"a")
        vm.wait_typed(b"a")
    server.output(b"two\r\n")  # nobody attached: kept for the next one
    with client(sock_path) as second:
        assert receive(second, 10) == b"one\r\ntwo\r\n"
        second.sendall(b"b")
        vm.wait_typed(b"ab")


def test_a_new_client_takes_over(server: ConsoleServer, sock_path: Path) -> None:
    vm = FakeVm()
    server.connect_input(vm.console_input)
    server.output(b"hello\r\n")
    with client(sock_path) as first:
        assert receive(first, 7) == b"hello\r\n"
        second = client(sock_path)
        assert receive_until(first, TAKEN_OVER).endswith(TAKEN_OVER)
        assert first.recv(100) == b""  # then disconnected
        assert receive(second, 7) == b"hello\r\n"
        second.sendall(b"x")
        vm.wait_typed(b"x")
        second.close()


def test_a_client_that_stops_reading_costs_the_vm_nothing(sock_path: Path) -> None:
    with ConsoleServer(sock_path, client_queue=256 << 10) as server, client(sock_path) as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        chunk = b"x" * 1000
        started = time.monotonic()
        for _ in range(5000):  # 5 MB, far beyond what the socket and the queue hold
            server.output(chunk)
        assert time.monotonic() - started < 5  # output() never waited for the client
        assert len(server._queue) <= 256 << 10
        server.output(b"THE-END")
        got = receive_until(stuck, b"THE-END")
        assert len(got) < 5_000_000  # the oldest was dropped


def test_a_client_vanishing_mid_write_is_dropped(server: ConsoleServer, sock_path: Path) -> None:
    vanishing = client(sock_path)
    vanishing.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
    for _ in range(2000):
        server.output(b"y" * 1000)
    receive(vanishing, 1000)  # the server is in the middle of sending
    vanishing.close()
    for _ in range(2000):
        server.output(b"z" * 1000)  # still fine, nobody to send to
    wait_for(lambda: not server._attached)
    with client(sock_path) as next_client:
        server.output(b"still here")
        assert receive_until(next_client, b"still here").endswith(b"still here")


def test_close_sends_what_is_left_and_removes_the_socket(sock_path: Path) -> None:
    server = ConsoleServer(sock_path)
    with client(sock_path) as c:
        wait_for(lambda: server._attached)
        server.output(b"reboot: Power down\r\n")
        server.close()
        assert receive_until(c, b"Power down\r\n").endswith(b"reboot: Power down\r\n")
        assert c.recv(100) == b""
    assert not sock_path.exists()
    server.output(b"late output is harmless")
    server.close()  # twice is fine


def test_a_stale_socket_is_replaced_but_nothing_else(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(str(stale))  # bound, never listening, then closed: a leftover of a dead VMM
    with ConsoleServer(stale):
        assert stale.is_socket()
        assert oct(stale.stat().st_mode & 0o777) == oct(0o600)
        with pytest.raises(ConflictError, match="already serving"):
            ConsoleServer(stale)
    regular = tmp_path / "notes.txt"
    regular.write_text("keep me")
    with pytest.raises(ConflictError, match="not a socket"):
        ConsoleServer(regular)
    assert regular.read_text() == "keep me"
    with pytest.raises(UsageError, match="at most 107 bytes"):
        ConsoleServer(tmp_path / ("x" * 120))
    with pytest.raises(NotFoundError, match="no such directory"):
        ConsoleServer(tmp_path / "missing" / "console.sock")


def test_connect_says_why_it_cannot(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such console socket"):
        console_socket.connect(tmp_path / "nothing.sock")
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(str(stale))
    with pytest.raises(NotFoundError, match="no VM is serving"):
        console_socket.connect(stale)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotFoundError):  # a regular file refuses like a socket nobody serves
        console_socket.connect(tmp_path / "file")


# -- the client: `isola vm console` on a pty -------------------------------------------------------------------


class Terminal:
    """`isola vm console PATH` running on a pty we hold the master of."""

    def __init__(self, path: Path) -> None:
        self.master, self.slave = os.openpty()
        self.original = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "isola.cli", "vm", "console", str(path)],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            start_new_session=True,
        )
        self.seen = bytearray()

    def read_until(self, marker: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {marker!r} on the terminal: {bytes(self.seen)!r}"
            if select.select([self.master], [], [], remaining)[0]:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:  # EIO: every slave fd closed
                    break
        assert marker in self.seen, bytes(self.seen)
        return bytes(self.seen)

    def is_raw(self) -> bool:
        lflag = termios.tcgetattr(self.slave)[3]
        return not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)

    def restored(self) -> bool:
        return termios.tcgetattr(self.slave) == self.original

    def finish(self, timeout: float = 20) -> int:
        code = self.proc.wait(timeout)
        self.read_until(b"isola:", timeout=1)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def terminal(server: ConsoleServer, sock_path: Path) -> Iterator[Terminal]:
    term = Terminal(sock_path)
    try:
        yield term
    finally:
        term.close()


def test_attach_relays_raw_and_detaches_on_ctrl_bracket(server: ConsoleServer, terminal: Terminal) -> None:
    vm = FakeVm()
    server.connect_input(vm.console_input)
    server.output(b"earlier boot messages\r\n")
    terminal.read_until(b"detach with Ctrl-]")
    terminal.read_until(b"earlier boot messages")  # the backlog
    wait_for(terminal.is_raw)
    os.write(terminal.master, b"echo hi\x03\x04")  # Ctrl-C, Ctrl-D: to the guest, not signals or EOF
    vm.wait_typed(b"echo hi\x03\x04")
    server.output(b"from the guest\r\n")
    terminal.read_until(b"from the guest")
    os.write(terminal.master, b"last\x1d ignored after the detach key")
    assert terminal.proc.wait(20) == 0
    vm.wait_typed(b"echo hi\x03\x04last")
    assert terminal.restored()
    assert b"detached from" in terminal.read_until(b"detached from")


def test_the_vm_ending_ends_the_attachment_and_restores_the_terminal(sock_path: Path, tmp_path: Path) -> None:
    server = ConsoleServer(sock_path)
    term = Terminal(sock_path)
    try:
        term.read_until(b"detach with Ctrl-]")
        wait_for(term.is_raw)
        server.output(b"reboot: Power down\r\n")
        server.close()
        assert term.proc.wait(20) == 0
        assert term.restored()
        term.read_until(b"the console closed")
        assert b"reboot: Power down" in term.seen
    finally:
        server.close()
        term.close()


def test_sigterm_restores_the_terminal(server: ConsoleServer, terminal: Terminal) -> None:
    terminal.read_until(b"detach with Ctrl-]")
    wait_for(terminal.is_raw)
    terminal.proc.send_signal(signal.SIGTERM)
    terminal.proc.wait(20)
    assert terminal.restored()


def test_attaching_to_nothing_is_one_line_and_leaves_the_terminal_alone(tmp_path: Path) -> None:
    term = Terminal(tmp_path / "nothing.sock")
    try:
        assert term.proc.wait(20) == os.EX_NOINPUT
        text = term.read_until(b"no such console socket").decode()
        assert "Traceback" not in text
        assert term.restored()
    finally:
        term.close()
