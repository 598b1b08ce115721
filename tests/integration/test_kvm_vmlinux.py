"""Debian's kernel as an ELF vmlinux under the VMM: where `load_linux` puts it and the state vCPU 0 starts in for
the PVH and `startup_64` entries, what it refuses, and real boots through both entries to a busybox /init.

Loading runs against any usable /dev/kvm, kvm_pvm included (nothing runs in the guest). Booting is marked
`real_kvm`: it needs a KVM that runs guest kernel code natively, which here is the nested lane's L1
(`make test-nested`).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from isola.assets import initramfs
from isola.errors import FormatError, UsageError
from isola.vmm.kvm import system
from isola.vmm.launch import DEFAULT_APPEND, attach_legacy_devices
from isola.vmm.machine import ExitKind, ExitStatus, Machine, MachineConfig, Protocol
from isola.vmm.nested.image import pvh_kernel
from isola.vmm.x86 import boot_params, entry, gdt, mptable, vmlinux
from isola.vmm.x86.layout import ACPI_TABLES_ADDR, CMDLINE_ADDR, MPTABLE_ADDR, ZERO_PAGE_ADDR
from isola.vmm.x86.pvh import START_INFO_ADDR, XEN_HVM_START_MAGIC
from tests.conftest import amd64_asset, skip_smp_in_nested_lane

pytestmark = pytest.mark.timeout(900)

MIB = 1 << 20
BOOT_TIMEOUT = 300.0
MARKER = "ISOLA-L2-INIT-OK"
CMDLINE = "console=ttyS0 panic=-1 quiet"
TSS_BUSY_32 = 0xB


@pytest.fixture(scope="module")
def vmlinux_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vmlinux") / "vmlinux"
    pvh_kernel(amd64_asset("kernel"), out)
    return out


@pytest.fixture(scope="module")
def poweroff_initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    init = f"""#!/bin/sh
mkdir -p /proc && mount -t proc proc /proc
echo "{MARKER} cpus=$(grep -c ^processor /proc/cpuinfo) uptime=$(cut -d' ' -f1 /proc/uptime)"
sleep 1  # an ACPI power-off ends the VM at once: let the UART send what was written to the console first
poweroff -f
"""
    out = tmp_path_factory.mktemp("initrd") / "poweroff.cpio.gz"
    initramfs.build(initramfs.busybox_image(amd64_asset("busybox"), init), out)
    return out


@pytest.fixture
def kvm() -> None:
    info = system.probe()
    if not info.usable:
        pytest.skip(f"no usable KVM: {info.problem}")


# -- loading (no run)


def _check_common(m: Machine, image: vmlinux.Vmlinux, initrd: Path, initrd_span: tuple[int, int]) -> None:
    mem = m.memory
    for segment in image.segments:
        assert mem.read(segment.paddr, len(segment.data)) == segment.data
    assert mem.read(CMDLINE_ADDR, len(CMDLINE) + 1) == CMDLINE.encode() + b"\0"
    start, end = initrd_span
    assert end - start == initrd.stat().st_size and mem.read(start, end - start) == initrd.read_bytes()
    assert start >= image.footprint[1] and end <= 256 * MIB
    table = mptable.build(2, MPTABLE_ADDR)
    assert mem.read(MPTABLE_ADDR, len(table)) == table


def test_pvh_layout_and_entry_state(kvm, vmlinux_path, poweroff_initrd):
    image = vmlinux.parse(vmlinux_path.read_bytes())
    with Machine(MachineConfig(cpus=2, memory_mib=256)) as m:
        layout = m.load_linux(vmlinux_path, CMDLINE, poweroff_initrd)  # an ELF: PVH unless told otherwise
        assert (layout.protocol, layout.entry, layout.start_info, layout.zero_page) == (
            "pvh",
            image.pvh_entry,
            START_INFO_ADDR,
            0,
        )
        assert layout.kernel == image.footprint and layout.release == image.release
        _check_common(m, image, poweroff_initrd, layout.initrd)
        info = m.memory.read(START_INFO_ADDR, 4096)
        magic, version, _flags, nr_modules, modlist, cmdline, rsdp, memmap, entries = struct.unpack_from(
            "<IIIIQQQQI", info
        )
        assert (magic, version, nr_modules, cmdline) == (XEN_HVM_START_MAGIC, 1, 1, CMDLINE_ADDR)
        assert rsdp == ACPI_TABLES_ADDR
        initrd_addr, initrd_size = struct.unpack_from("<QQ", info, modlist - START_INFO_ADDR)
        assert (initrd_addr, initrd_addr + initrd_size) == layout.initrd
        e820 = boot_params.e820_map([(0, 256 * MIB)])
        assert entries == len(e820)
        assert [struct.unpack_from("<QQI", info, memmap - START_INFO_ADDR + 24 * i) for i in range(entries)] == [
            (e.addr, e.size, e.type) for e in e820
        ]
        assert m.memory.read(ZERO_PAGE_ADDR, 4096) == bytes(4096)  # PVH has no zero page

        regs, sregs = m.vcpus[0].get_regs(), m.vcpus[0].get_sregs()
        assert (regs.rip, regs.rbx, regs.rsi, regs.rflags) == (image.pvh_entry, START_INFO_ADDR, 0, 2)
        assert (sregs.cr0, sregs.cr4, sregs.efer) == (entry.CR0_PE | entry.CR0_ET, 0, 0)
        for segment in (sregs.cs, sregs.ds, sregs.es, sregs.ss):
            assert (segment.base, segment.limit, segment.g, segment.present) == (0, 0xFFFF_FFFF, 1, 1)
        assert (sregs.cs.selector, sregs.cs.db, sregs.cs.l) == (gdt.BOOT_CS, 1, 0)
        assert (sregs.tr.type, sregs.tr.base, sregs.tr.limit) == (TSS_BUSY_32, 0, 0x67)
        assert m.vcpus[1].get_regs().rip != layout.entry  # the AP waits for Linux's SIPI


def test_startup_64_layout_and_entry_state(kvm, vmlinux_path, poweroff_initrd):
    image = vmlinux.parse(vmlinux_path.read_bytes())
    with Machine(MachineConfig(cpus=2, memory_mib=256)) as m:
        layout = m.load_linux(vmlinux_path, CMDLINE, poweroff_initrd, protocol=64)
        assert (layout.protocol, layout.entry, layout.zero_page, layout.start_info) == (
            64,
            image.entry,
            ZERO_PAGE_ADDR,
            0,
        )
        _check_common(m, image, poweroff_initrd, layout.initrd)
        zp = m.memory.read(ZERO_PAGE_ADDR, 4096)
        assert zp[0x202:0x206] == b"HdrS"
        assert struct.unpack_from("<I", zp, 0x228)[0] == CMDLINE_ADDR
        assert struct.unpack_from("<Q", zp, 0x70)[0] == ACPI_TABLES_ADDR  # acpi_rsdp_addr
        initrd_addr, initrd_size = struct.unpack_from("<II", zp, 0x218)
        assert (initrd_addr, initrd_addr + initrd_size) == layout.initrd
        assert m.memory.read(START_INFO_ADDR, 64) == bytes(64)  # no PVH start info
        regs, sregs = m.vcpus[0].get_regs(), m.vcpus[0].get_sregs()
        assert (regs.rip, regs.rsi) == (image.entry, ZERO_PAGE_ADDR)
        assert sregs.cs.l == 1 and sregs.cr0 & entry.CR0_PG and sregs.efer & entry.EFER_LMA


def without_pvh_note(data: bytes) -> bytes:
    """`data` with its PHYS32_ENTRY note renamed to another type: a kernel built without CONFIG_PVH."""
    header = struct.pack("<III", 4, 8, vmlinux.XEN_ELFNOTE_PHYS32_ENTRY) + b"Xen\0"
    assert data.count(header) == 1
    return data.replace(header, struct.pack("<III", 4, 8, 0x7F) + b"Xen\0")


def test_refusals(kvm, vmlinux_path):
    data = vmlinux_path.read_bytes()
    with Machine(MachineConfig(cpus=1, memory_mib=256)) as m:
        with pytest.raises(FormatError, match="has no PVH entry"):
            m.load_linux(without_pvh_note(data), CMDLINE)
        with pytest.raises(UsageError, match="no 32-bit one"):
            m.load_linux(vmlinux_path, CMDLINE, protocol=32)
        with pytest.raises(UsageError, match="the PVH entry is in the ELF vmlinux"):
            m.load_linux(amd64_asset("kernel"), CMDLINE, protocol="pvh")
        with pytest.raises(UsageError, match="at most 2047 bytes"):
            m.load_linux(vmlinux_path, "x" * 2048)
        with pytest.raises(FormatError, match="is truncated"):
            m.load_linux(data[: 8 * MIB], CMDLINE)
        image = vmlinux.parse(data)
        assert m.load_linux(without_pvh_note(data), CMDLINE, protocol=64).entry == image.entry
    needed = f"needs {-(-image.footprint[1] // MIB)} MiB of guest memory to load"
    with Machine(MachineConfig(cpus=1, memory_mib=64)) as m, pytest.raises(UsageError, match=needed):
        m.load_linux(vmlinux_path, CMDLINE)


# -- booting (real_kvm)


def boot(kernel: Path, initrd: Path, *, protocol: Protocol, cpus: int = 1) -> tuple[ExitStatus, str]:
    console: list[bytes] = []
    with Machine(MachineConfig(cpus=cpus, memory_mib=256)) as m:
        attach_legacy_devices(m, console.append)
        m.load_linux(kernel, f"{DEFAULT_APPEND} quiet", initrd, protocol=protocol)
        status = m.run(timeout=BOOT_TIMEOUT)
    return status, b"".join(console).decode("utf-8", "replace")


@pytest.mark.slow
@pytest.mark.real_kvm
@pytest.mark.parametrize(("protocol", "cpus"), [("pvh", 1), (64, 1), ("pvh", 2)])
def test_boots_to_init_and_powers_off(vmlinux_path, poweroff_initrd, protocol, cpus):
    skip_smp_in_nested_lane(cpus)
    status, console = boot(vmlinux_path, poweroff_initrd, protocol=protocol, cpus=cpus)
    assert f"{MARKER} cpus={cpus}" in console, console[-2000:]
    assert status.kind is ExitKind.POWEROFF and status.exit_code == 0, (status, console[-2000:])
