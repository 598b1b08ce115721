"""Process VMs through `isola-vmm --api-sock`: `PUT /process`, InstanceStart, the program on the console socket
(or isola-vmm's stdio), `GET /vm` with the exit status, SIGTERM, and the refusals, each naming its field.

Real isola-vmm processes on a real socket, real process VMs on this host's KVM; every isola-vmm a test starts is
killed at its end (and its VM with it: see `stop_all`), also when the test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from isola.host import procfs
from isola.vmm.kvm import system
from tests.conftest import amd64_asset
from tests.integration.test_vmm_api_socket import Served


@pytest.fixture(scope="module", autouse=True)
def _kvm_available() -> None:
    info = system.probe()
    if not info.usable:
        pytest.skip(f"no usable KVM: {info.problem}")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Socket paths must fit a unix socket: pytest's tmp_path may be too long."""
    path = Path(tempfile.mkdtemp(prefix="iva-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root directory with busybox as /bin/busybox."""
    busybox = amd64_asset("busybox")
    (tmp_path / "root" / "bin").mkdir(parents=True)
    shutil.copy2(busybox, tmp_path / "root" / "bin" / "busybox")
    return tmp_path / "root"


@pytest.fixture
def vmm(short_dir: Path) -> Iterator[Callable[..., Served]]:
    """Starts isola-vmm processes; at the end kills each with its whole process tree (the VM included)."""
    started: list[Served] = []

    def start(*extra: str, name: str = "api.sock") -> Served:
        served = Served(short_dir / name, *extra)
        started.append(served)
        return served

    yield start
    for served in started:
        stop_all(served)


def stop_all(served: Served) -> None:
    members = [procfs.Identity(s.pid, s.start_ticks) for s in procfs.tree(served.process.pid)]
    served.kill()
    for who in members:
        if procfs.running(who):
            os.kill(who.pid, signal.SIGKILL)


def wait_ended(served: Served, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (state := served.client.get("/vm").json())["state"] != "Ended":
        assert time.monotonic() < deadline, state
        time.sleep(0.02)
    assert isinstance(state, dict)
    return state


def receive_until(sock: socket.socket, marker: bytes, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def fault(served: Served, method: str, path: str, body: object) -> str:
    response = served.client.request(method, path, json=body)
    assert response.status_code == 400, response.text
    message = response.json()["fault_message"]
    assert isinstance(message, str)
    return message


def test_a_confined_process_vm_talks_over_the_console_socket(
    vmm: Callable[..., Served], root: Path, short_dir: Path
) -> None:
    console_path = short_dir / "console.sock"
    served = vmm("--console-sock", str(console_path))
    served.wait_serving()
    script = 'echo "pid $$"; ls /; read line; echo "got $line"; exit 5'
    process = {"program": "/bin/busybox", "args": ["sh", "-c", script], "root": str(root), "mem_size_mib": 64}
    assert served.put("/process", process).status_code == 204
    assert served.client.get("/vm").json() == {"state": "Not started"}
    assert served.client.get("/vm/config").json()["process"] == process
    assert served.client.get("/machine-config").json() == {"vcpu_count": 1, "mem_size_mib": 64}
    assert served.put("/actions", {"action_type": "InstanceStart"}).status_code == 204
    assert "no keyboard" in fault(served, "PUT", "/actions", {"action_type": "SendCtrlAltDel"})
    with socket.socket(socket.AF_UNIX) as console:
        console.connect(str(console_path))
        assert receive_until(console, b"bin\n") == b"pid 1\nbin\n"  # PID 1 of its namespace, / is the root
        console.sendall(b"yes\n")
        assert receive_until(console, b"got yes\n") == b"got yes\n"
    assert wait_ended(served) == {"state": "Ended", "exit_code": 5, "detail": "the program exited with status 5"}
    assert served.client.get("/").json()["state"] == "Ended"
    assert fault(served, "PUT", "/process", process).startswith("the VM is already running:")
    served.process.send_signal(signal.SIGTERM)
    assert served.finish() == 5  # isola-vmm's status is the program's
    assert "Traceback" not in served.stderr
    assert not (short_dir / "api.sock").exists() and not console_path.exists()


def test_without_a_console_socket_the_program_has_isola_vmms_stdio(vmm: Callable[..., Served]) -> None:
    busybox = amd64_asset("busybox")
    served = vmm()
    served.wait_serving()
    body = {"program": str(busybox), "args": ["sh", "-c", "echo out; echo err >&2; exit 3"], "mem_size_mib": 64}
    assert served.put("/process", body).status_code == 204
    assert served.put("/actions", {"action_type": "InstanceStart"}).status_code == 204
    assert wait_ended(served)["exit_code"] == 3
    served.process.send_signal(signal.SIGTERM)
    assert served.finish() == 3
    assert served.stdout == "out\n"
    assert "err\n" in served.stderr and "the program exited with status 3" in served.stderr


def test_sigterm_to_isola_vmm_ends_a_running_process_vm(vmm: Callable[..., Served], root: Path) -> None:
    served = vmm()
    served.wait_serving()
    assert served.put("/process", {"program": "/bin/busybox", "args": ["sleep", "600"], "root": str(root)}).is_success
    assert served.put("/actions", {"action_type": "InstanceStart"}).status_code == 204
    assert served.client.get("/vm").json() == {"state": "Running"}
    members = [procfs.Identity(s.pid, s.start_ticks) for s in procfs.tree(served.process.pid)]
    assert len(members) == 3  # isola-vmm, the launcher, the VM
    started = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    assert served.finish(timeout=10) in (128 + signal.SIGKILL, 128 + signal.SIGTERM)
    assert time.monotonic() - started < 5
    assert not any(procfs.running(who) for who in members)


def test_process_configuration_errors_name_the_field(vmm: Callable[..., Served], root: Path, tmp_path: Path) -> None:
    served = vmm()
    served.wait_serving()
    busybox = str(amd64_asset("busybox"))
    for body, start in [
        ({}, "process.program: is required"),
        ({"program": busybox, "colour": "red"}, "process.colour: unknown field"),
        ({"program": busybox, "args": "-c"}, "process.args:"),
        ({"program": busybox, "mem_size_mib": "64"}, "process.mem_size_mib:"),
        ({"program": "/nonexistent/program"}, "process.program: /nonexistent/program: no such file"),
        ({"program": "/bin/missing", "root": str(root)}, "process.program: /bin/missing: no such file in"),
        ({"program": "/bin/busybox", "root": "/nonexistent"}, "process.root: /nonexistent: not a directory"),
        ({"program": busybox, "mem_size_mib": 7}, "process.mem_size_mib: process VM memory must be"),
        ({"program": busybox, "max_processes": 0}, "process.max_processes: must be at least 1"),
        ({"program": busybox, "env": {"A=B": "c"}}, "process.env:"),
    ]:
        assert fault(served, "PUT", "/process", body).startswith(start), body
    assert served.put("/process", {"program": busybox}).status_code == 204
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"\0" * 512)
    for method, path, body, start in [
        ("PUT", "/boot-source", {"kernel_image_path": str(kernel)}, "process: "),
        ("PUT", "/drives/d", {"drive_id": "d", "path_on_host": str(kernel)}, "process: "),
        ("PUT", "/entropy", {}, "process: "),
        ("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 64}, "machine-config.vcpu_count: "),
    ]:
        message = fault(served, method, path, body)
        assert message.startswith(start) and (start != "process: " or path.split("/")[1] in message), message
    assert served.client.get("/vm").json() == {"state": "Not started"}

    second = vmm(name="second.sock")  # the other order: a boot source first
    second.wait_serving()
    assert second.put("/boot-source", {"kernel_image_path": str(kernel)}).status_code == 204
    assert "cannot have boot-source" in fault(second, "PUT", "/process", {"program": busybox})
