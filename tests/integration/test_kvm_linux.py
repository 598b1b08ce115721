"""Debian's stock kernel booted by the VMM to a busybox /init: both boot entries, one and two vCPUs, poweroff
and panic.

Needs a KVM that runs guest kernel code natively (kvm_intel, kvm_amd). On kvm_pvm these skip: it emulates
guest kernel mode ~5000x slower, so a stock kernel cannot boot there (measurements §2d); the nested lane
(`python -m isola.vmm.nested -- .venv/bin/python -m pytest tests/integration/test_kvm_linux.py`) runs them under
a real kvm_amd inside TCG, at ~25 s per boot.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from isola.assets import initramfs
from isola.vmm.launch import DEFAULT_APPEND, attach_legacy_devices
from isola.vmm.machine import ExitKind, ExitStatus, Machine, MachineConfig
from tests.conftest import amd64_asset, skip_smp_in_nested_lane

# real_kvm: skipped with the reason where /dev/kvm cannot run guest kernels natively (kvm_pvm here);
# `make test-nested` runs this module inside the nested lane's L1 (kvm_amd).
pytestmark = [pytest.mark.slow, pytest.mark.real_kvm, pytest.mark.timeout(900)]

BOOT_TIMEOUT = 300.0
MARKER = "ISOLA-L2-INIT-OK"


@pytest.fixture(scope="module")
def kernel() -> Path:
    return amd64_asset("kernel")


def _initrd(tmp_path_factory: pytest.TempPathFactory, name: str, init: str) -> Path:
    out = tmp_path_factory.mktemp("initrd") / f"{name}.cpio.gz"
    initramfs.build(initramfs.busybox_image(amd64_asset("busybox"), init), out)
    return out


@pytest.fixture(scope="module")
def poweroff_initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    init = f"""#!/bin/sh
mkdir -p /proc && mount -t proc proc /proc
echo "{MARKER} cpus=$(grep -c ^processor /proc/cpuinfo) uptime=$(cut -d' ' -f1 /proc/uptime)"
sleep 1  # poweroff -f does not wait for the serial port to send what the tty still holds
poweroff -f
"""
    return _initrd(tmp_path_factory, "poweroff", init)


@pytest.fixture(scope="module")
def panic_initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _initrd(tmp_path_factory, "panic", "#!/bin/sh\necho about to die\nexit 3\n")


def boot(kernel: Path, initrd: Path, *, cpus: int = 1, protocol: int = 64, extra: str = "") -> tuple[ExitStatus, str]:
    console: list[bytes] = []
    with Machine(MachineConfig(cpus=cpus, memory_mib=256)) as m:
        attach_legacy_devices(m, console.append)
        m.load_linux(kernel, f"{DEFAULT_APPEND} quiet {extra}", initrd, protocol=64 if protocol == 64 else 32)
        status = m.run(timeout=BOOT_TIMEOUT)
    return status, b"".join(console).decode("utf-8", "replace")


@pytest.mark.parametrize("cpus", [1, 2])
def test_boots_to_init_and_powers_off(kernel, poweroff_initrd, cpus):
    skip_smp_in_nested_lane(cpus)
    status, console = boot(kernel, poweroff_initrd, cpus=cpus)
    assert f"{MARKER} cpus={cpus}" in console, console[-2000:]
    assert status.kind is ExitKind.POWEROFF, (status, console[-2000:])
    assert status.exit_code == 0


def test_32bit_entry_boots(kernel, poweroff_initrd):
    status, console = boot(kernel, poweroff_initrd, protocol=32)
    assert f"{MARKER} cpus=1" in console, console[-2000:]
    assert status.kind is ExitKind.POWEROFF


def test_panic_ends_the_machine_with_the_panic_line(kernel, panic_initrd):
    status, console = boot(kernel, panic_initrd)  # panic=-1: the guest resets at once, which becomes the error
    assert "about to die" in console
    assert status.kind is ExitKind.ERROR and status.exit_code == 1
    assert "Kernel panic - not syncing: Attempted to kill init!" in status.message
