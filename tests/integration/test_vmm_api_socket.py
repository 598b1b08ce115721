"""`isola-vmm --api-sock` as a client meets it: a real process serving on a real unix socket.

On a kvm_pvm host InstanceStart is refused with the reason and the API keeps serving; the `real_kvm` test boots
Debian's kernel through the API and sees the process exit with the VM's status (the nested lane runs it).
Only the standard library and httpx talk to the socket, so no pytest plugin is needed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from isola.assets import initramfs
from isola.vmm.kvm import system
from tests.conftest import amd64_asset
from tests.integration.test_vmm_cli import GREETING

VMM = [sys.executable, "-m", "isola.vmm.launch"]
START_TIMEOUT = 120.0
"""Seconds for isola-vmm to serve: Python and FastAPI start slowly under the nested lane's TCG."""


class Served:
    """An isola-vmm process serving the API, and a client for it."""

    def __init__(self, sock: Path, *extra: str) -> None:
        self.sock = sock
        self.process = subprocess.Popen(
            [*VMM, "--api-sock", str(sock), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://localhost", timeout=60
        )
        self.stdout = self.stderr = ""

    def wait_serving(self) -> None:
        """Until the socket accepts a connection (probed with a plain socket: httpcore leaks the socket of a
        unix connection that fails)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.finish()
                pytest.fail(f"isola-vmm exited with {self.process.returncode}: {self.stderr}")
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(self.sock))
                    return
                except OSError:
                    pass
            time.sleep(0.1)
        pytest.fail(f"isola-vmm did not serve on {self.sock} within {START_TIMEOUT:.0f} s")

    def put(self, path: str, body: object) -> httpx.Response:
        return self.client.put(path, json=body)

    def finish(self, timeout: float = 30) -> int:
        """Wait for the process to exit; its status."""
        self.stdout, self.stderr = self.process.communicate(timeout=timeout)
        self.client.close()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.finish()


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "isola-vmm.sock"


@pytest.fixture
def serve(sock: Path) -> Iterator[type[Served]]:
    """Starts isola-vmm processes, and kills those a failing test leaves behind."""
    started: list[Served] = []

    class Tracked(Served):
        def __init__(self, path: Path, *extra: str) -> None:
            super().__init__(path, *extra)
            started.append(self)

    yield Tracked
    for served in started:
        served.kill()


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VMM, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_a_refused_start_keeps_the_api_serving_until_sigterm(serve: type[Served], sock: Path, tmp_path: Path) -> None:
    if system.probe().provider != "kvm_pvm":
        pytest.skip("this host's KVM can boot kernels: the real_kvm test below starts one")
    kernel = tmp_path / "bzImage"  # kvm_pvm is refused before the kernel is read
    kernel.write_bytes(b"\0" * 4096)
    vmm = serve(sock)
    vmm.wait_serving()
    assert vmm.client.get("/").json()["state"] == "Not started"
    assert vmm.put("/boot-source", {"kernel_image_path": str(kernel)}).status_code == 204
    refused = vmm.put("/actions", {"action_type": "InstanceStart"})
    assert refused.status_code == 400 and "kvm_pvm" in refused.json()["fault_message"]
    assert vmm.client.get("/").json()["state"] == "Not started"
    assert vmm.client.get("/vm/config").json()["boot-source"] == {"kernel_image_path": str(kernel)}
    vmm.process.send_signal(signal.SIGTERM)
    assert vmm.finish() == 0, vmm.stderr
    assert not sock.exists()
    assert "Traceback" not in vmm.stderr


def test_sigint_ends_it_too_and_a_stale_socket_is_replaced(serve: type[Served], sock: Path) -> None:
    left_behind = socket.socket(socket.AF_UNIX)
    left_behind.bind(str(sock))
    left_behind.close()  # the file stays, nothing listens: what a killed isola-vmm leaves
    vmm = serve(sock)
    vmm.wait_serving()
    vmm.process.send_signal(signal.SIGINT)
    assert vmm.finish() == 0, vmm.stderr
    assert not sock.exists() and "Traceback" not in vmm.stderr


def test_a_socket_path_it_cannot_have_is_one_line(serve: type[Served], sock: Path, tmp_path: Path) -> None:
    first = serve(sock)
    first.wait_serving()
    in_use = run(["--api-sock", str(sock)])
    assert in_use.returncode == os.EX_CANTCREAT
    assert in_use.stderr == f"isola-vmm: {sock} is in use: another process is already serving there\n"
    assert first.client.get("/").status_code == 200  # the first one is untouched
    first.process.send_signal(signal.SIGTERM)
    assert first.finish() == 0

    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    not_a_socket = run(["--api-sock", str(a_file)])
    assert not_a_socket.returncode == os.EX_CANTCREAT and "is not a socket" in not_a_socket.stderr
    assert a_file.read_text() == "keep me"
    missing = run(["--api-sock", str(tmp_path / "no" / "such" / "dir.sock")])
    assert missing.returncode == os.EX_NOINPUT
    assert missing.stderr.count("\n") == 1 and "no such directory" in missing.stderr
    if os.geteuid() != 0:  # root writes anywhere
        read_only = tmp_path / "ro"
        read_only.mkdir(mode=0o500)
        denied = run(["--api-sock", str(read_only / "s.sock")])
        assert denied.returncode == os.EX_NOPERM and "Permission denied" in denied.stderr


def test_config_and_api_sock_serve_that_configuration(serve: type[Served], sock: Path, tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"\0" * 4096)
    document = {
        "boot-source": {"kernel_image_path": str(kernel), "boot_args": "console=ttyS0"},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 128},
    }
    doc = tmp_path / "vm.json"
    doc.write_text(json.dumps(document))
    vmm = serve(sock, "--config", str(doc))
    vmm.wait_serving()
    assert vmm.client.get("/vm/config").json() == {**document, "drives": [], "network-interfaces": []}
    assert vmm.client.get("/").json()["state"] == "Not started"  # it waits for InstanceStart
    vmm.process.send_signal(signal.SIGTERM)
    assert vmm.finish() == 0

    doc.write_text(json.dumps({**document, "machine-config": {"vcpu_count": 0}}))
    bad = run(["--api-sock", str(sock), "--config", str(doc)])
    assert bad.returncode == os.EX_DATAERR and "machine-config.vcpu_count" in bad.stderr
    assert not sock.exists()


@pytest.fixture
def hello_initrd(tmp_path: Path) -> Path:
    from isola.cli.vm import greeter_spec

    target = tmp_path / "hello.cpio.gz"
    initramfs.build(greeter_spec(amd64_asset("busybox"), amd64_asset("kernel")), target)
    return target


@pytest.mark.real_kvm
def test_a_vm_booted_through_the_api_powers_off_and_ends_isola_vmm(
    serve: type[Served], sock: Path, tmp_path: Path, hello_initrd: Path
) -> None:
    metrics = tmp_path / "metrics.jsonl"
    vmm = serve(sock, "--timeout", "300")
    vmm.wait_serving()
    boot_source = {
        "kernel_image_path": str(amd64_asset("kernel")),
        "initrd_path": str(hello_initrd),
        "boot_args": "console=ttyS0 reboot=k panic=-1 quiet",
    }
    assert vmm.put("/boot-source", boot_source).status_code == 204
    assert vmm.put("/machine-config", {"vcpu_count": 1, "mem_size_mib": 256}).status_code == 204
    assert vmm.put("/metrics", {"metrics_path": str(metrics)}).status_code == 204
    started = vmm.put("/actions", {"action_type": "InstanceStart"})
    assert started.status_code == 204, started.text
    # the guest needs seconds to reach its init and power off; the API answers meanwhile
    assert vmm.client.get("/").json()["state"] == "Running"
    assert vmm.put("/boot-source", boot_source).json()["fault_message"].startswith("the VM is already running")
    assert vmm.finish(timeout=300) == 0, vmm.stderr[-2000:]
    assert f"{GREETING}: Linux 6." in vmm.stdout
    assert "isola-vmm: poweroff:" in vmm.stderr
    assert not sock.exists()
    last = json.loads(metrics.read_text().splitlines()[-1])
    assert last["state"] == "Ended" and sum(sum(c.values()) for c in last["vm"]["vcpu_exits"]) > 0
