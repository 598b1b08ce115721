"""isola-vmm and `isola vm run` as a user meets them: a VM document, direct flags, clear refusals.

The boots are `real_kvm` tests (the nested lane runs them); the refusals and bad documents run anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from isola import paths
from isola.assets import initramfs
from isola.vmm.kvm import system
from tests.conftest import amd64_asset, skip_smp_in_nested_lane

VMM = [sys.executable, "-m", "isola.vmm.launch"]
ISOLA = [sys.executable, "-m", "isola.cli"]
GREETING = "isola: hello from a VM"


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def hello_initrd(tmp_path: Path) -> Path:
    from isola.cli.vm import greeter_spec

    target = tmp_path / "hello.cpio.gz"
    initramfs.build(greeter_spec(amd64_asset("busybox"), amd64_asset("kernel")), target)
    return target


def test_a_bad_document_names_the_field(tmp_path: Path) -> None:
    doc = tmp_path / "vm.json"
    doc.write_text(json.dumps({"boot-source": {"kernel_image_path": "/nonexistent"}}))
    result = run([*VMM, "--config", str(doc)])
    assert result.returncode == os.EX_DATAERR
    assert "boot-source.kernel_image_path" in result.stderr and "Traceback" not in result.stderr
    doc.write_text("{not json")
    assert run([*VMM, "--config", str(doc)]).returncode == os.EX_DATAERR
    assert run(VMM).returncode == os.EX_USAGE


def test_a_host_that_cannot_boot_kernels_is_told_so_at_once() -> None:
    if system.probe().provider != "kvm_pvm":
        pytest.skip("this host's KVM can boot kernels")
    for cmd in ([*VMM, "--kernel", str(amd64_asset("kernel"))], [*ISOLA, "vm", "run"]):
        result = run(cmd, timeout=60)
        assert result.returncode == os.EX_UNAVAILABLE, result.stderr
        assert "kvm_pvm" in result.stderr and "Traceback" not in result.stderr


def test_the_default_initrd_greets_and_powers_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from isola.assets import cpio
    from isola.cli.vm import default_initrd

    kernel = amd64_asset("kernel")
    monkeypatch.setenv("ISOLA_HOME", str(tmp_path))
    monkeypatch.setattr(paths, "assets_dir", lambda: Path(paths.DEFAULT_HOME) / "assets")
    built = default_initrd(kernel)
    assert built == default_initrd(kernel)  # built once, then reused
    names = {e.name: e for e in cpio.read_archive(built)}
    assert "bin/busybox" in names and "poweroff -f" in names["init"].data.decode()
    order = names["lib/modules/order"].data.decode().split()
    assert {"virtio_mmio.ko", "virtio_blk.ko", "virtio_net.ko"} <= set(order)
    elsewhere = tmp_path / "vmlinuz-custom"  # a kernel outside a Debian package: a greeter without modules
    elsewhere.write_bytes(kernel.read_bytes())
    names = {e.name: e for e in cpio.read_archive(default_initrd(elsewhere))}
    assert "lib/modules/order" in names and not names["lib/modules/order"].data


@pytest.mark.real_kvm
@pytest.mark.parametrize("cpus", [1, 2])
def test_isola_vmm_boots_a_vm_document(tmp_path: Path, hello_initrd: Path, cpus: int) -> None:
    skip_smp_in_nested_lane(cpus)
    doc = tmp_path / "vm.json"
    doc.write_text(
        json.dumps(
            {
                "boot-source": {
                    "kernel_image_path": str(amd64_asset("kernel")),
                    "initrd_path": str(hello_initrd),
                    "boot_args": "console=ttyS0 reboot=k panic=-1 quiet",
                },
                "machine-config": {"vcpu_count": cpus, "mem_size_mib": 256},
            }
        )
    )
    result = run([*VMM, "--config", str(doc), "--timeout", "300"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{GREETING}: Linux 6." in result.stdout and f"{cpus} vCPU(s)" in result.stdout


@pytest.mark.real_kvm
def test_isola_vm_run_boots_with_disks(hello_initrd: Path, tmp_path: Path) -> None:
    result = run([*ISOLA, "vm", "run", "--initrd", str(hello_initrd), "--timeout", "300"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert GREETING in result.stdout
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    with_disks = run([*ISOLA, "vm", "run", "--initrd", str(hello_initrd), "--disk", str(disk), "--disk",
                      f"{disk},ro", "--timeout", "300"])  # fmt: skip
    assert with_disks.returncode != 0 and "in use by another VM" in with_disks.stderr  # one image, locked once
    other = tmp_path / "other.img"
    other.write_bytes(bytes(1 << 20))
    with_disks = run([*ISOLA, "vm", "run", "--initrd", str(hello_initrd), "--disk", str(disk), "--disk",
                      f"{other},ro", "--timeout", "300"])  # fmt: skip
    assert with_disks.returncode == 0, with_disks.stderr[-2000:]
    assert "devices: vda vdb" in with_disks.stdout, with_disks.stdout[-2000:]


@pytest.mark.real_kvm
def test_isola_vm_run_with_no_options_boots_something() -> None:
    """The defaults: Debian's kernel and a busybox greeter built from the assets (in a temporary directory when
    $ISOLA_HOME is read-only, as in the nested lane)."""
    result = run([*ISOLA, "vm", "run", "--timeout", "300"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert GREETING in result.stdout
