"""The ACPI tables of an isola microVM: RSDP → XSDT → FADT (→ DSDT) and MADT, in the BIOS area at 0xE0000.

Why ACPI at all: Debian's kernel is built without `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`, so `virtio_mmio.device=`
does nothing and the only way it learns about a virtio-mmio device is a DSDT entry with the id `LNRO0005`
(the id Linux's virtio_mmio driver matches). The same tables give `poweroff` and `reboot` a real path to the
VMM: the FADT declares a *hardware-reduced* platform (ACPI 6.5 §4.1: no PM1 blocks, no SCI, no PM timer) whose
sleep control register is an I/O port isola decodes (`isola.devices.acpi_pm`), and `\\_S5_` says which value
means "soft off". The MADT replaces the MP table's CPU and IOAPIC list when the guest uses ACPI; the MP table
stays for `acpi=off`.

Every table starts with the 36-byte SDT header and sums to zero. Tables are laid out one after the other,
8-byte aligned, from `base`; the RSDP comes first so a guest scanning 0xE0000-0xFFFFF for "RSD PTR " finds it
(and the zero page's `acpi_rsdp_addr` points at it too).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from isola.vmm.acpi import aml
from isola.vmm.x86.mptable import checksum

OEM_ID = b"ISOLA "
OEM_TABLE_ID = b"ISOLAVMM"
CREATOR_ID = b"ISLA"
HYPERVISOR_ID = b"ISOLAVMM"

_HEADER = struct.Struct("<4sIBB6s8sI4sI")
_RSDP = struct.Struct("<8sB6sBIIQB3x")
_GAS = struct.Struct("<BBBBQ")  # generic address structure: space, bit width, bit offset, access size, address
FADT_LENGTH = 276
FADT_REVISION = 6
FADT_MINOR = 5

GAS_SYSTEM_IO = 1
GAS_ACCESS_BYTE = 1

# FADT flags (ACPI 6.5 table 5.10)
FADT_WBINVD = 1 << 0
FADT_PWR_BUTTON = 1 << 4  # 1: no fixed-feature power button
FADT_SLP_BUTTON = 1 << 5
FADT_RESET_REG_SUP = 1 << 10
FADT_HW_REDUCED_ACPI = 1 << 20
# IA-PC boot architecture flags (table 5.11)
IAPC_8042 = 1 << 1
IAPC_VGA_NOT_PRESENT = 1 << 2
IAPC_MSI_NOT_SUPPORTED = 1 << 3

MADT_PCAT_COMPAT = 1
MADT_LAPIC = 0
MADT_IOAPIC = 1
MADT_LAPIC_NMI = 4
MADT_ENABLED = 1
ALL_PROCESSORS = 0xFF
LINT1 = 1

VIRTIO_MMIO_HID = "LNRO0005"
KEYBOARD_HID = "PNP0303"
S5_SLEEP_TYPE = 5
"""The value in `\\_S5_` that the guest writes (shifted into SLP_TYP) to power off."""


@dataclass(frozen=True)
class VirtioMmioSlot:
    """A virtio-mmio window and its interrupt, as the DSDT announces it."""

    base: int
    size: int
    gsi: int


@dataclass(frozen=True)
class IsaDevice:
    """A legacy device at fixed ports with an ISA interrupt (COM1, the keyboard controller, the RTC).

    A hardware-reduced platform has no legacy PIC, so Linux maps no ISA interrupt on its own: a driver gets
    IRQ n only if the DSDT lists a device that uses it.
    """

    name: str
    hid: str
    """Its EISA PNP id, like PNP0501 for a 16550 UART."""
    ports: tuple[tuple[int, int], ...]
    """(first port, count) ranges."""
    irq: int


@dataclass(frozen=True)
class Platform:
    """What the tables describe: the CPUs, interrupt controllers, power/reset ports and virtio devices."""

    cpus: int
    lapic_addr: int
    ioapic_addr: int
    ioapic_id: int
    sleep_control_port: int
    sleep_status_port: int
    reset_port: int
    reset_value: int
    virtio: Sequence[VirtioMmioSlot] = ()
    isa: Sequence[IsaDevice] = ()


def _sdt(signature: bytes, revision: int, body: bytes) -> bytes:
    """A system description table: header + body, checksummed."""
    length = _HEADER.size + len(body)
    header = _HEADER.pack(signature, length, revision, 0, OEM_ID, OEM_TABLE_ID, 1, CREATOR_ID, 1)
    table = bytearray(header + body)
    table[9] = checksum(table)
    return bytes(table)


def _gas_io(port: int) -> bytes:
    return _GAS.pack(GAS_SYSTEM_IO, 8, 0, GAS_ACCESS_BYTE, port)


def rsdp(xsdt_addr: int) -> bytes:
    """The ACPI 2.0+ root pointer; the 32-bit RSDT address is 0, so the guest uses the XSDT."""
    head = _RSDP.pack(b"RSD PTR ", 0, OEM_ID, 2, 0, _RSDP.size, xsdt_addr, 0)
    first = bytearray(head)
    first[8] = checksum(first[:20])
    first[32] = checksum(first)
    return bytes(first)


def xsdt(tables: Sequence[int]) -> bytes:
    return _sdt(b"XSDT", 1, b"".join(struct.pack("<Q", addr) for addr in tables))


def fadt(platform: Platform, dsdt_addr: int) -> bytes:
    """A hardware-reduced FADT: everything zero but the DSDT, flags, reset register and sleep registers."""
    body = bytearray(FADT_LENGTH - _HEADER.size)

    def put(offset: int, fmt: str, *values: int) -> None:
        struct.pack_into(fmt, body, offset - _HEADER.size, *values)

    i8042 = any(device.hid == KEYBOARD_HID for device in platform.isa)
    boot_arch = IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | (IAPC_8042 if i8042 else 0)
    put(109, "<H", boot_arch)
    put(112, "<I", FADT_WBINVD | FADT_PWR_BUTTON | FADT_SLP_BUTTON | FADT_RESET_REG_SUP | FADT_HW_REDUCED_ACPI)
    body[116 - _HEADER.size : 128 - _HEADER.size] = _gas_io(platform.reset_port)
    put(128, "<B", platform.reset_value)
    put(40, "<I", dsdt_addr)
    put(131, "<B", FADT_MINOR)
    put(140, "<Q", dsdt_addr)  # X_DSDT
    body[244 - _HEADER.size : 256 - _HEADER.size] = _gas_io(platform.sleep_control_port)
    body[256 - _HEADER.size : 268 - _HEADER.size] = _gas_io(platform.sleep_status_port)
    body[268 - _HEADER.size : 276 - _HEADER.size] = HYPERVISOR_ID
    return _sdt(b"FACP", FADT_REVISION, bytes(body))


def madt(platform: Platform) -> bytes:
    """One enabled local APIC per vCPU (APIC id = vCPU index), the IOAPIC at GSI 0, NMI on every LINT1.

    No interrupt source overrides: KVM's default routing sends GSI n to IOAPIC pin n, and the only legacy
    interrupts a hardware-reduced guest uses (COM1 on 4, the keyboard on 1) keep the ISA defaults."""
    entries = [struct.pack("<BBBBI", MADT_LAPIC, 8, cpu, cpu, MADT_ENABLED) for cpu in range(platform.cpus)]
    entries.append(struct.pack("<BBBBII", MADT_IOAPIC, 12, platform.ioapic_id, 0, platform.ioapic_addr, 0))
    entries.append(struct.pack("<BBBHB", MADT_LAPIC_NMI, 6, ALL_PROCESSORS, 0, LINT1))
    return _sdt(b"APIC", 5, struct.pack("<II", platform.lapic_addr, MADT_PCAT_COMPAT) + b"".join(entries))


def dsdt(platform: Platform) -> bytes:
    """The ISA devices and the virtio-mmio devices under `\\_SB_` (virtio interrupts are level-triggered,
    active-high: the devices hold their line up until the driver acknowledges) and the soft-off sleep state."""
    isa = [
        aml.device(
            device.name,
            [
                aml.name("_HID", aml.eisa_id(device.hid)),
                aml.name("_UID", aml.integer(i)),
                aml.name(
                    "_CRS",
                    aml.resource_template(
                        [*(aml.io_port(base, count) for base, count in device.ports), aml.irq_no_flags(device.irq)]
                    ),
                ),
            ],
        )
        for i, device in enumerate(platform.isa)
    ]
    virtio = [
        aml.device(
            f"V{i:03X}",
            [
                aml.name("_HID", aml.string(VIRTIO_MMIO_HID)),
                aml.name("_UID", aml.integer(i)),
                aml.name(
                    "_CRS",
                    aml.resource_template(
                        [aml.memory32_fixed(slot.base, slot.size), aml.extended_irq(slot.gsi, edge=False)]
                    ),
                ),
            ],
        )
        for i, slot in enumerate(platform.virtio)
    ]
    # \_S5_: SLP_TYPa, SLP_TYPb and two reserved entries (ACPI 6.5 §7.4.2)
    s5 = aml.name("\\_S5_", aml.package([aml.integer(S5_SLEEP_TYPE), aml.integer(0), aml.integer(0), aml.integer(0)]))
    return _sdt(b"DSDT", 2, aml.scope("\\_SB_", [*isa, *virtio]) + s5)


def _align(value: int, to: int = 8) -> int:
    return -(-value // to) * to


def build(platform: Platform, base: int) -> bytes:
    """All tables as one blob to be written at guest-physical `base`, the RSDP first (at `base` itself), then
    the XSDT, DSDT, FADT and MADT, each 8-byte aligned."""
    dsdt_table, madt_table = dsdt(platform), madt(platform)
    sizes = (_RSDP.size, _HEADER.size + 2 * 8, len(dsdt_table), FADT_LENGTH, len(madt_table))
    addrs, offset = [], 0
    for size in sizes:
        addrs.append(base + offset)
        offset = _align(offset + size)
    _, xsdt_addr, dsdt_addr, fadt_addr, madt_addr = addrs
    tables = (rsdp(xsdt_addr), xsdt([fadt_addr, madt_addr]), dsdt_table, fadt(platform, dsdt_addr), madt_table)
    blob = bytearray()
    for addr, table in zip(addrs, tables, strict=True):
        blob += bytes(addr - base - len(blob)) + table
    return bytes(blob)
