"""A real isolad for each test: its own unix socket, store and VM state root under a short /tmp directory.

Short, because the socket paths (the daemon's and each guest's console) must fit a unix socket. The fixture
stops the daemon and deletes every guest the test left (with force, straight through the vm engine, which
is what the daemon would have done) even when the test failed, then checks nothing of it runs any more.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from isola.host import unix_socket
from isola.platform.client import Client
from isola.vmm.engine import STATE_ROOT_VARIABLE, VmEngine
from isola.vmm.kvm import system

BUSYBOX = Path("/var/lib/isola/assets/amd64/busybox-static/bin/busybox")
START_SECONDS = 20.0


class Daemon:
    """One isolad process; `restart()` (optionally after SIGKILL) keeps the socket, store and guests."""

    def __init__(self, root: Path, tcp: str | None = None, options: tuple[str, ...] = ()) -> None:
        self.root = root
        self.socket = root / "d.sock"
        self.store = root / "isola.db"
        self.vm_state = root / "vm"
        self.log = root / "isolad.log"
        self.tcp = tcp
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None
        self.clients: list[Client] = []

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, STATE_ROOT_VARIABLE: str(self.vm_state), "ISOLA_SOCKET": str(self.socket)}

    def start(self) -> None:
        argv = [sys.executable, "-m", "isola.platform.daemon", "--socket", str(self.socket), "--store", str(self.store)]
        if self.tcp:
            argv += ["--tcp", self.tcp]
        argv += self.options
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + START_SECONDS
        while not unix_socket.serving(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"isolad did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def client(self, token: str | None = None) -> Client:
        """A client closed with the fixture."""
        self.clients.append(Client(self.socket, token))
        return self.clients[-1]


def short_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="isd-", dir="/tmp"))


def cleanup(root: Path, daemons: list[Daemon]) -> None:
    """Stop the daemons, delete every guest with force, remove the directory; fail if a guest survived."""
    try:
        for d in daemons:
            for client in d.clients:
                client.close()
            d.stop()
        vm_state = root / "vm"
        if vm_state.is_dir():
            engine = VmEngine(vm_state)
            for directory in vm_state.iterdir():
                if not directory.name.startswith("."):
                    engine.delete(directory.name, force=True)
            left = [p.name for p in vm_state.iterdir() if not p.name.startswith(".")]
            assert not left, f"guests outlived delete(force=True): {left}"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemon(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """`@pytest.mark.parametrize("daemon", [("--cpu-ratio", "16")], indirect=True)` passes isolad options."""
    root = short_root()
    d = Daemon(root, options=tuple(getattr(request, "param", ())))
    try:
        d.start()
        yield d
    finally:
        cleanup(root, [d])


@pytest.fixture
def busybox() -> Path:
    if not BUSYBOX.is_file():
        pytest.skip(f"{BUSYBOX} is missing: run `isola assets fetch --arch amd64`")
    info = system.probe()
    if not info.usable:
        pytest.skip(f"no usable KVM for process VMs: {info.problem}")
    return BUSYBOX


def vm_spec(name: str, *command: str | Path, **fields: object) -> dict[str, object]:
    return {"name": name, "kind": "vm", "mode": "process", "command": [str(c) for c in command], **fields}


def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    assert callable(check)
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)
