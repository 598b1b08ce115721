"""vCPU state at a boot entry: the 32-bit boot protocol, the 64-bit one, PVH, and the state every vCPU starts with.

Both protocols come from Documentation/arch/x86/boot.rst: flat segments `__BOOT_CS`/`__BOOT_DS` from a GDT in
memory, interrupts off, %esi/%rsi = the zero page. The 32-bit entry runs with paging off at `code32_start`; the
64-bit entry runs in long mode at `code32_start + 0x200` (an ELF vmlinux: at its `e_entry`, `startup_64`) and
needs identity page tables. PVH (Xen's docs/misc/pvh.pandoc) is the 32-bit state again, with %ebx = the
`hvm_start_info` instead of %esi = a zero page. CR0 is set outright rather than OR-ed into KVM's reset value,
whose CD and NW bits (caching disabled) would otherwise stay set until Linux rewrites CR0, making the in-guest
decompression run uncached where the hardware honours it.

Only the bootstrap vCPU gets an entry; the others stay in KVM's wait-for-SIPI state until Linux starts them
through the local APIC.
"""

from __future__ import annotations

import struct

from isola.devices.bus import PhysicalMemory
from isola.vmm.kvm import structs
from isola.vmm.kvm.vcpu import Vcpu
from isola.vmm.x86 import gdt, paging
from isola.vmm.x86.bzimage import ENTRY_64_OFFSET
from isola.vmm.x86.layout import BOOT_STACK_ADDR, GDT_ADDR, PAGE_TABLES_ADDR

CR0_PE = 1 << 0
CR0_ET = 1 << 4
CR0_PG = 1 << 31
CR4_PAE = 1 << 5
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
RFLAGS_RESERVED = 1 << 1  # bit 1 always reads 1; IF stays clear

FCW_DEFAULT = 0x37F  # x87: all exceptions masked, 64-bit precision, round to nearest (FNINIT)
MXCSR_DEFAULT = 0x1F80  # SSE: all exceptions masked, round to nearest

APIC_LVT0 = 0x350
APIC_LVT1 = 0x360
APIC_MODE_NMI = 0x4
APIC_MODE_EXTINT = 0x7


def with_lint_modes(regs: bytes) -> bytes:
    """The LAPIC register page with LINT0 delivering ExtINT (the 8259) and LINT1 NMI, as firmware leaves it: Linux
    keeps this "virtual wire" wiring when there is no MP table, and checks it against the MP table otherwise."""
    page = bytearray(regs)
    for offset, mode in ((APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)):
        (lvt,) = struct.unpack_from("<I", page, offset)
        struct.pack_into("<I", page, offset, (lvt & ~0x700) | mode << 8)
    return bytes(page)


def init_vcpu_state(vcpu: Vcpu, *, lapic: bool) -> None:
    """What every vCPU needs before its first run besides CPUID and MSRs: a sane FPU and, with an in-kernel
    irqchip, the LINT wiring."""
    vcpu.set_fpu(structs.Fpu(fcw=FCW_DEFAULT, mxcsr=MXCSR_DEFAULT))
    if lapic:
        state = vcpu.get_lapic()
        state.regs[:] = list(with_lint_modes(bytes(state.regs)))
        vcpu.set_lapic(state)


def _load_segments(sregs: structs.Sregs, table: list[int]) -> None:
    sregs.gdt.base = GDT_ADDR
    sregs.gdt.limit = len(table) * 8 - 1
    sregs.idt.base = 0
    sregs.idt.limit = 0  # no IDT until Linux loads one: a fault before that is a clean triple fault
    sregs.cs = gdt.segment(table, gdt.BOOT_CS)
    data = gdt.segment(table, gdt.BOOT_DS)
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data
    sregs.tr = gdt.segment(table, gdt.BOOT_TSS)


def enter_protected_mode(vcpu: Vcpu, memory: PhysicalMemory, *, rip: int, rsi: int, rbx: int = 0) -> None:
    """32-bit protected mode, paging off, flat segments; RIP/RSI/RBX as given, every other register zero."""
    table = gdt.boot_gdt(long_mode=False)
    memory.write(GDT_ADDR, gdt.to_bytes(table))
    sregs = vcpu.get_sregs()
    _load_segments(sregs, table)
    sregs.cr0 = CR0_PE | CR0_ET
    sregs.cr3 = 0
    sregs.cr4 = 0
    sregs.efer = 0
    vcpu.set_sregs(sregs)
    vcpu.set_regs(structs.Regs(rip=rip, rsi=rsi, rbx=rbx, rflags=RFLAGS_RESERVED))


def enter_long_mode(vcpu: Vcpu, memory: PhysicalMemory, *, rip: int, rsi: int) -> None:
    """64-bit long mode at CPL 0 on identity page tables covering the low 4 GiB; RIP/RSI as given."""
    table = gdt.boot_gdt(long_mode=True)
    memory.write(GDT_ADDR, gdt.to_bytes(table))
    memory.write(PAGE_TABLES_ADDR, paging.identity_4g(PAGE_TABLES_ADDR))
    sregs = vcpu.get_sregs()
    _load_segments(sregs, table)
    sregs.cr0 = CR0_PE | CR0_ET | CR0_PG
    sregs.cr3 = PAGE_TABLES_ADDR
    sregs.cr4 = CR4_PAE
    sregs.efer = EFER_LME | EFER_LMA
    vcpu.set_sregs(sregs)
    vcpu.set_regs(structs.Regs(rip=rip, rsi=rsi, rsp=BOOT_STACK_ADDR, rbp=BOOT_STACK_ADDR, rflags=RFLAGS_RESERVED))


def linux_32bit(vcpu: Vcpu, memory: PhysicalMemory, *, code32_start: int, zero_page: int) -> None:
    """The 32-bit boot protocol: EIP = code32_start, ESI = zero page."""
    enter_protected_mode(vcpu, memory, rip=code32_start, rsi=zero_page)


def linux_64bit(vcpu: Vcpu, memory: PhysicalMemory, *, code32_start: int, zero_page: int) -> None:
    """The 64-bit boot protocol: RIP = code32_start + 0x200, RSI = zero page."""
    enter_long_mode(vcpu, memory, rip=code32_start + ENTRY_64_OFFSET, rsi=zero_page)


def linux_startup_64(vcpu: Vcpu, memory: PhysicalMemory, *, entry_point: int, zero_page: int) -> None:
    """The 64-bit boot protocol into an ELF vmlinux: RIP = its `e_entry` (`startup_64`), RSI = zero page."""
    enter_long_mode(vcpu, memory, rip=entry_point, rsi=zero_page)


def linux_pvh(vcpu: Vcpu, memory: PhysicalMemory, *, entry_point: int, start_info: int) -> None:
    """The PVH entry: EIP = the PHYS32_ENTRY note's address, EBX = `hvm_start_info`; CR0 = PE|ET, CR4 = 0, flat
    4 GiB CS/DS/SS and a 32-bit TSS, as the PVH ABI asks."""
    enter_protected_mode(vcpu, memory, rip=entry_point, rsi=0, rbx=start_info)
