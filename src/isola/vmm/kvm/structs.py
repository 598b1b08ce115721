"""The <linux/kvm.h> and <asm/kvm.h> structs isola passes to KVM, as ctypes structures (x86-64 layouts).

ctypes rather than `struct.pack` because KVM reads and writes these in place: a ctypes object is a writable
buffer `fcntl.ioctl` can hand to the kernel, and `KvmRun.from_buffer` overlays the vCPU's shared `kvm_run`
page so exit fields are read without copying. Sizes and offsets are pinned by tests/unit/test_vmm_structs.py,
whose expected numbers were taken from the C header, because a wrong layout here silently corrupts guest state.

Structs that end in a flexible array (`kvm_msrs`, `kvm_cpuid2`, `kvm_signal_mask`) are built per length by
`msrs_type`, `cpuid2_type` and `signal_mask_type`.
"""

from __future__ import annotations

import ctypes
import functools

u8 = ctypes.c_uint8
u16 = ctypes.c_uint16
u32 = ctypes.c_uint32
s32 = ctypes.c_int32
u64 = ctypes.c_uint64


class UserspaceMemoryRegion(ctypes.Structure):
    """struct kvm_userspace_memory_region: one guest-physical range backed by host memory (a "slot")."""

    _fields_ = (
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
    )


class Regs(ctypes.Structure):
    """struct kvm_regs: the general-purpose registers, RIP and RFLAGS."""

    _fields_ = tuple(
        (name, u64)
        for name in (
            "rax",
            "rbx",
            "rcx",
            "rdx",
            "rsi",
            "rdi",
            "rsp",
            "rbp",
            "r8",
            "r9",
            "r10",
            "r11",
            "r12",
            "r13",
            "r14",
            "r15",
            "rip",
            "rflags",
        )
    )


class Segment(ctypes.Structure):
    """struct kvm_segment: a segment register with its hidden (cached descriptor) part unpacked."""

    _fields_ = (
        ("base", u64),
        ("limit", u32),
        ("selector", u16),
        ("type", u8),
        ("present", u8),
        ("dpl", u8),
        ("db", u8),
        ("s", u8),
        ("l", u8),
        ("g", u8),
        ("avl", u8),
        ("unusable", u8),
        ("padding", u8),
    )


class Dtable(ctypes.Structure):
    """struct kvm_dtable: GDTR or IDTR."""

    _fields_ = (("base", u64), ("limit", u16), ("padding", u16 * 3))


class Sregs(ctypes.Structure):
    """struct kvm_sregs: segment and system registers (control registers, EFER, APIC base)."""

    _fields_ = (
        ("cs", Segment),
        ("ds", Segment),
        ("es", Segment),
        ("fs", Segment),
        ("gs", Segment),
        ("ss", Segment),
        ("tr", Segment),
        ("ldt", Segment),
        ("gdt", Dtable),
        ("idt", Dtable),
        ("cr0", u64),
        ("cr2", u64),
        ("cr3", u64),
        ("cr4", u64),
        ("cr8", u64),
        ("efer", u64),
        ("apic_base", u64),
        ("interrupt_bitmap", u64 * 4),
    )


class Fpu(ctypes.Structure):
    """struct kvm_fpu: x87 and SSE state in FXSAVE layout."""

    _fields_ = (
        ("fpr", (u8 * 16) * 8),
        ("fcw", u16),
        ("fsw", u16),
        ("ftwx", u8),
        ("pad1", u8),
        ("last_opcode", u16),
        ("last_ip", u64),
        ("last_dp", u64),
        ("xmm", (u8 * 16) * 16),
        ("mxcsr", u32),
        ("pad2", u32),
    )


class MsrEntry(ctypes.Structure):
    """struct kvm_msr_entry."""

    _fields_ = (("index", u32), ("reserved", u32), ("data", u64))


class CpuidEntry2(ctypes.Structure):
    """struct kvm_cpuid_entry2: one CPUID leaf (function) and sub-leaf (index) with its four result registers."""

    _fields_ = (
        ("function", u32),
        ("index", u32),
        ("flags", u32),
        ("eax", u32),
        ("ebx", u32),
        ("ecx", u32),
        ("edx", u32),
        ("padding", u32 * 3),
    )


class LapicState(ctypes.Structure):
    """struct kvm_lapic_state: the local APIC's 1 KiB register page, registers at their MMIO offsets."""

    _fields_ = (("regs", u8 * 1024),)


class PitConfig(ctypes.Structure):
    """struct kvm_pit_config (KVM_CREATE_PIT2)."""

    _fields_ = (("flags", u32), ("pad", u32 * 15))


class IrqLevel(ctypes.Structure):
    """struct kvm_irq_level (KVM_IRQ_LINE): `irq` is a GSI; `level` 1 asserts it, 0 deasserts it."""

    _fields_ = (("irq", u32), ("level", u32))


class Irqfd(ctypes.Structure):
    """struct kvm_irqfd: an eventfd whose signal injects an interrupt on `gsi` without a trip to user space."""

    _fields_ = (("fd", u32), ("gsi", u32), ("flags", u32), ("resamplefd", u32), ("pad", u8 * 16))


class Ioeventfd(ctypes.Structure):
    """struct kvm_ioeventfd: a guest write to (`addr`, `len`) signals `fd` instead of exiting to user space."""

    _fields_ = (
        ("datamatch", u64),
        ("addr", u64),
        ("len", u32),
        ("fd", s32),
        ("flags", u32),
        ("pad", u8 * 36),
    )


class Translation(ctypes.Structure):
    """struct kvm_translation (KVM_TRANSLATE): a guest-linear address through the vCPU's current page tables."""

    _fields_ = (
        ("linear_address", u64),
        ("physical_address", u64),
        ("valid", u8),
        ("writeable", u8),
        ("usermode", u8),
        ("pad", u8 * 5),
    )


class _ExceptionEvent(ctypes.Structure):
    _fields_ = (("injected", u8), ("nr", u8), ("has_error_code", u8), ("pending", u8), ("error_code", u32))


class _InterruptEvent(ctypes.Structure):
    _fields_ = (("injected", u8), ("nr", u8), ("soft", u8), ("shadow", u8))


class _NmiEvent(ctypes.Structure):
    _fields_ = (("injected", u8), ("pending", u8), ("masked", u8), ("pad", u8))


class _SmiEvent(ctypes.Structure):
    _fields_ = (("smm", u8), ("pending", u8), ("smm_inside_nmi", u8), ("latched_init", u8))


class VcpuEvents(ctypes.Structure):
    """struct kvm_vcpu_events: pending exceptions/interrupts/NMIs; part of the sync-regs area."""

    _fields_ = (
        ("exception", _ExceptionEvent),
        ("interrupt", _InterruptEvent),
        ("nmi", _NmiEvent),
        ("sipi_vector", u32),
        ("flags", u32),
        ("smi", _SmiEvent),
        ("triple_fault_pending", u8),
        ("reserved", u8 * 26),
        ("exception_has_payload", u8),
        ("exception_payload", u64),
    )


class SyncRegs(ctypes.Structure):
    """struct kvm_sync_regs (x86): register state KVM mirrors in kvm_run so an exit needs no GET/SET ioctls."""

    _fields_ = (("regs", Regs), ("sregs", Sregs), ("events", VcpuEvents))


class IoExitInfo(ctypes.Structure):
    """kvm_run.io: port I/O; the data is `count` items of `size` bytes at `data_offset` into kvm_run."""

    _fields_ = (("direction", u8), ("size", u8), ("port", u16), ("count", u32), ("data_offset", u64))


class MmioExitInfo(ctypes.Structure):
    """kvm_run.mmio: an access to a guest-physical address no memory slot backs."""

    _fields_ = (("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8))


class FailEntryInfo(ctypes.Structure):
    """kvm_run.fail_entry: the hardware refused VM entry (invalid guest state)."""

    _fields_ = (("hardware_entry_failure_reason", u64), ("cpu", u32))


class InternalErrorInfo(ctypes.Structure):
    """kvm_run.internal: KVM itself gave up, typically an instruction its emulator does not handle."""

    _fields_ = (("suberror", u32), ("ndata", u32), ("data", u64 * 16))


class SystemEventInfo(ctypes.Structure):
    """kvm_run.system_event: the guest asked for shutdown, reset or reported a crash."""

    _fields_ = (("type", u32), ("ndata", u32), ("data", u64 * 16))


class _ExitUnion(ctypes.Union):
    _fields_ = (
        ("io", IoExitInfo),
        ("mmio", MmioExitInfo),
        ("fail_entry", FailEntryInfo),
        ("internal", InternalErrorInfo),
        ("system_event", SystemEventInfo),
        ("padding", u8 * 256),
    )


class _SyncUnion(ctypes.Union):
    _fields_ = (("regs", SyncRegs), ("padding", u8 * 2048))


class KvmRun(ctypes.Structure):
    """struct kvm_run: the page shared with KVM through mmap of the vCPU fd (exit reason and exit data)."""

    _fields_ = (
        ("request_interrupt_window", u8),
        ("immediate_exit", u8),
        ("padding1", u8 * 6),
        ("exit_reason", u32),
        ("ready_for_interrupt_injection", u8),
        ("if_flag", u8),
        ("flags", u16),
        ("cr8", u64),
        ("apic_base", u64),
        ("exit", _ExitUnion),
        ("kvm_valid_regs", u64),
        ("kvm_dirty_regs", u64),
        ("s", _SyncUnion),
    )


@functools.cache
def msrs_type(count: int) -> type[ctypes.Structure]:
    """struct kvm_msrs with room for `count` entries."""
    return type(
        f"Msrs{count}",
        (ctypes.Structure,),
        {"_fields_": (("nmsrs", u32), ("pad", u32), ("entries", MsrEntry * count))},
    )


@functools.cache
def cpuid2_type(count: int) -> type[ctypes.Structure]:
    """struct kvm_cpuid2 with room for `count` entries."""
    return type(
        f"Cpuid2_{count}",
        (ctypes.Structure,),
        {"_fields_": (("nent", u32), ("padding", u32), ("entries", CpuidEntry2 * count))},
    )


@functools.cache
def signal_mask_type(nbytes: int) -> type[ctypes.Structure]:
    """struct kvm_signal_mask followed by a kernel sigset of `nbytes` bytes (8 on x86-64)."""
    return type(
        f"SignalMask{nbytes}",
        (ctypes.Structure,),
        {"_fields_": (("len", u32), ("sigset", u8 * nbytes))},
    )
