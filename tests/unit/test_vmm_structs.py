"""KVM struct layouts and ioctl numbers against <linux/kvm.h> (x86-64).

Every expected number below was printed by a C program compiled against the host's linux-libc-dev headers
(`sizeof`, `offsetof`, and the `KVM_*` macros), so a drift in the ctypes definitions fails here rather than
as a guest that mysteriously gets the wrong registers.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from isola.vmm.kvm import ioctls, structs

SIZES = {
    structs.Regs: 144,
    structs.Sregs: 312,
    structs.Segment: 24,
    structs.Dtable: 16,
    structs.Fpu: 416,
    structs.MsrEntry: 16,
    structs.CpuidEntry2: 40,
    structs.LapicState: 1024,
    structs.PitConfig: 64,
    structs.IrqLevel: 8,
    structs.Irqfd: 32,
    structs.Ioeventfd: 64,
    structs.Translation: 24,
    structs.VcpuEvents: 64,
    structs.SyncRegs: 520,
    structs.KvmRun: 2352,
    structs.UserspaceMemoryRegion: 32,
}


@pytest.mark.parametrize(("struct", "size"), SIZES.items(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_struct_sizes_match_the_header(struct, size):
    assert ctypes.sizeof(struct) == size


def test_flexible_array_headers_match_the_header():
    assert ctypes.sizeof(structs.msrs_type(0)) == 8  # struct kvm_msrs
    assert ctypes.sizeof(structs.cpuid2_type(0)) == 8  # struct kvm_cpuid2
    assert ctypes.sizeof(structs.signal_mask_type(0)) == 4  # struct kvm_signal_mask
    assert ctypes.sizeof(structs.cpuid2_type(3)) == 8 + 3 * 40
    assert structs.msrs_type(2).entries.offset == 8


def _offset(struct: Any, path: str) -> int:
    total = 0
    for name in path.split("."):
        total += getattr(struct, name).offset
        struct = next(f[1] for f in struct._fields_ if f[0] == name)
    return total


KVM_RUN_OFFSETS = {
    "immediate_exit": 1,
    "exit_reason": 8,
    "if_flag": 13,
    "cr8": 16,
    "apic_base": 24,
    "exit.io.direction": 32,
    "exit.io.size": 33,
    "exit.io.port": 34,
    "exit.io.count": 36,
    "exit.io.data_offset": 40,
    "exit.mmio.phys_addr": 32,
    "exit.mmio.data": 40,
    "exit.mmio.len": 48,
    "exit.mmio.is_write": 52,
    "exit.internal.suberror": 32,
    "exit.internal.ndata": 36,
    "exit.internal.data": 40,
    "exit.system_event.type": 32,
    "exit.system_event.ndata": 36,
    "exit.system_event.data": 40,
    "exit.fail_entry.hardware_entry_failure_reason": 32,
    "exit.fail_entry.cpu": 40,
    "kvm_valid_regs": 288,
    "kvm_dirty_regs": 296,
    "s": 304,
    "s.regs.sregs": 304 + 144,
    "s.regs.events": 304 + 456,
}


@pytest.mark.parametrize(("path", "offset"), KVM_RUN_OFFSETS.items())
def test_kvm_run_offsets_match_the_header(path, offset):
    assert _offset(structs.KvmRun, path) == offset


@pytest.mark.parametrize(
    ("struct", "path", "offset"),
    [
        (structs.Sregs, "tr", 144),
        (structs.Sregs, "gdt", 192),
        (structs.Sregs, "cr0", 224),
        (structs.Sregs, "efer", 264),
        (structs.Sregs, "apic_base", 272),
        (structs.Sregs, "interrupt_bitmap", 280),
        (structs.Fpu, "fcw", 128),
        (structs.Fpu, "last_ip", 136),
        (structs.Fpu, "xmm", 152),
        (structs.Fpu, "mxcsr", 408),
        (structs.CpuidEntry2, "flags", 8),
        (structs.CpuidEntry2, "eax", 12),
        (structs.Ioeventfd, "fd", 20),
        (structs.Ioeventfd, "flags", 24),
        (structs.Irqfd, "resamplefd", 12),
        (structs.VcpuEvents, "nmi", 12),
        (structs.VcpuEvents, "sipi_vector", 16),
        (structs.VcpuEvents, "flags", 20),
        (structs.VcpuEvents, "smi", 24),
        (structs.VcpuEvents, "triple_fault_pending", 28),
        (structs.VcpuEvents, "exception_has_payload", 55),
        (structs.Regs, "rip", 128),
        (structs.Regs, "rflags", 136),
    ],
)
def test_field_offsets_match_the_header(struct, path, offset):
    assert _offset(struct, path) == offset


IOCTL_NUMBERS = {
    "KVM_GET_API_VERSION": 0xAE00,
    "KVM_CREATE_VM": 0xAE01,
    "KVM_CHECK_EXTENSION": 0xAE03,
    "KVM_GET_VCPU_MMAP_SIZE": 0xAE04,
    "KVM_GET_SUPPORTED_CPUID": 0xC008AE05,
    "KVM_CREATE_VCPU": 0xAE41,
    "KVM_SET_USER_MEMORY_REGION": 0x4020AE46,
    "KVM_SET_TSS_ADDR": 0xAE47,
    "KVM_SET_IDENTITY_MAP_ADDR": 0x4008AE48,
    "KVM_CREATE_IRQCHIP": 0xAE60,
    "KVM_IRQ_LINE": 0x4008AE61,
    "KVM_IRQFD": 0x4020AE76,
    "KVM_CREATE_PIT2": 0x4040AE77,
    "KVM_IOEVENTFD": 0x4040AE79,
    "KVM_RUN": 0xAE80,
    "KVM_GET_REGS": 0x8090AE81,
    "KVM_SET_REGS": 0x4090AE82,
    "KVM_GET_SREGS": 0x8138AE83,
    "KVM_SET_SREGS": 0x4138AE84,
    "KVM_TRANSLATE": 0xC018AE85,
    "KVM_GET_MSRS": 0xC008AE88,
    "KVM_SET_MSRS": 0x4008AE89,
    "KVM_SET_SIGNAL_MASK": 0x4004AE8B,
    "KVM_SET_FPU": 0x41A0AE8D,
    "KVM_GET_LAPIC": 0x8400AE8E,
    "KVM_SET_LAPIC": 0x4400AE8F,
    "KVM_SET_CPUID2": 0x4008AE90,
}


@pytest.mark.parametrize(("name", "number"), IOCTL_NUMBERS.items())
def test_ioctl_numbers_match_the_header(name, number):
    assert getattr(ioctls, name) == number


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KVM_EXIT_IO", 2),
        ("KVM_EXIT_HLT", 5),
        ("KVM_EXIT_MMIO", 6),
        ("KVM_EXIT_SHUTDOWN", 8),
        ("KVM_EXIT_FAIL_ENTRY", 9),
        ("KVM_EXIT_INTR", 10),
        ("KVM_EXIT_INTERNAL_ERROR", 17),
        ("KVM_EXIT_SYSTEM_EVENT", 24),
        ("KVM_CAP_SET_IDENTITY_MAP_ADDR", 37),
        ("KVM_CAP_SYNC_REGS", 74),
        ("KVM_SYNC_X86_REGS", 1),
        ("KVM_IOEVENTFD_FLAG_PIO", 2),
        ("KVM_IOEVENTFD_FLAG_DEASSIGN", 4),
    ],
)
def test_constants_match_the_header(name, value):
    assert getattr(ioctls, name) == value


def test_run_overlay_reads_fields_where_kvm_writes_them():
    page = bytearray(ctypes.sizeof(structs.KvmRun))
    page[8:12] = (2).to_bytes(4, "little")  # exit_reason = KVM_EXIT_IO
    page[32:48] = (
        bytes([1, 4]) + (0x3F8).to_bytes(2, "little") + (3).to_bytes(4, "little") + (0x1000).to_bytes(8, "little")
    )
    run = structs.KvmRun.from_buffer(page)
    assert run.exit_reason == ioctls.KVM_EXIT_IO
    io = run.exit.io
    assert (io.direction, io.size, io.port, io.count, io.data_offset) == (1, 4, 0x3F8, 3, 0x1000)
