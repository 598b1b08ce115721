"""An Intel MultiProcessor Specification 1.4 table: how a guest without ACPI learns its CPUs and IOAPIC.

Without it (or ACPI's MADT) Linux boots only the CPU it started on. The table lists one processor entry per
vCPU (APIC id = vCPU index, vCPU 0 the bootstrap processor), one ISA bus, the in-kernel IOAPIC, ISA IRQs 0-23
wired to IOAPIC pins 0-23 (KVM's default GSI routing, so a device raising GSI n reaches pin n), and the local
interrupts every LAPIC needs: the 8259 as ExtINT on LINT0 and NMI on LINT1. Linux finds the floating pointer by
scanning the last KiB of base memory (0x9fc00), which e820 marks reserved.
"""

from __future__ import annotations

import struct

from isola.errors import UsageError
from isola.vmm.x86.layout import IOAPIC_ADDR, LAPIC_ADDR

SPEC_REV = 4  # MP spec 1.4
LAPIC_VERSION = 0x14
IOAPIC_VERSION = 0x11
ISA_IRQS = 24
MAX_CPUS = 254  # APIC ids 0..253; the IOAPIC takes the next id

CPU_ENABLED = 0x1
CPU_BOOTSTRAP = 0x2
CPU_SIGNATURE = 0x600  # family 6: informational only, Linux reads CPUID
CPU_FEATURES = 0x201  # FPU, APIC

ENTRY_PROCESSOR = 0
ENTRY_BUS = 1
ENTRY_IOAPIC = 2
ENTRY_IO_INTERRUPT = 3
ENTRY_LOCAL_INTERRUPT = 4
INT_TYPE_INT = 0
INT_TYPE_NMI = 1
INT_TYPE_EXTINT = 3
ALL_LAPICS = 0xFF

FLOATING = struct.Struct("<4sIBBB5s")  # signature, config table address, length/16, revision, checksum, features
HEADER = struct.Struct("<4sHBB8s12sIHHIHBB")
PROCESSOR = struct.Struct("<BBBBII8x")
BUS = struct.Struct("<BB6s")
IOAPIC = struct.Struct("<BBBBI")
INTERRUPT = struct.Struct("<BBHBBBB")  # type, interrupt type, flags, source bus, source IRQ, dest id, dest pin


def checksum(data: bytes | bytearray) -> int:
    """The byte that makes `data` (with a zero in the checksum field) sum to 0 mod 256: MP and ACPI tables alike."""
    return -sum(data) & 0xFF


def build(cpus: int, address: int) -> bytes:
    """The floating pointer and the configuration table right after it, to be written at `address`."""
    if not 1 <= cpus <= MAX_CPUS:
        raise UsageError(f"the MP table describes 1 to {MAX_CPUS} vCPUs, not {cpus}")
    ioapic_id = cpus
    entries = [
        PROCESSOR.pack(
            ENTRY_PROCESSOR,
            apic_id,
            LAPIC_VERSION,
            CPU_ENABLED | (CPU_BOOTSTRAP if apic_id == 0 else 0),
            CPU_SIGNATURE,
            CPU_FEATURES,
        )
        for apic_id in range(cpus)
    ]
    entries.append(BUS.pack(ENTRY_BUS, 0, b"ISA   "))
    entries.append(IOAPIC.pack(ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, CPU_ENABLED, IOAPIC_ADDR))
    entries += [INTERRUPT.pack(ENTRY_IO_INTERRUPT, INT_TYPE_INT, 0, 0, irq, ioapic_id, irq) for irq in range(ISA_IRQS)]
    entries.append(INTERRUPT.pack(ENTRY_LOCAL_INTERRUPT, INT_TYPE_EXTINT, 0, 0, 0, ALL_LAPICS, 0))
    entries.append(INTERRUPT.pack(ENTRY_LOCAL_INTERRUPT, INT_TYPE_NMI, 0, 0, 0, ALL_LAPICS, 1))
    body = b"".join(entries)

    def header(check: int) -> bytes:
        return HEADER.pack(
            b"PCMP", HEADER.size + len(body), SPEC_REV, check, b"ISOLA   ", b"isola-vmm   ", 0, 0, len(entries),
            LAPIC_ADDR, 0, 0, 0,
        )  # fmt: skip

    table = header(checksum(header(0) + body)) + body
    config_addr = address + FLOATING.size

    def floating(check: int) -> bytes:
        return FLOATING.pack(b"_MP_", config_addr, 1, SPEC_REV, check, bytes(5))

    return floating(checksum(floating(0))) + table
