"""The Linux zero page (`struct boot_params`, Documentation/arch/x86/zero-page.rst): what a bootloader tells the
kernel about the machine, and the e820 memory map inside it.

Built from all zeros plus the image's own setup header, then the fields a loader owns. Linux reads nothing
here that isola does not set deliberately: no screen, EDD, APM or EFI info, so those stay zero.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from isola.errors import UsageError
from isola.vmm.x86.bzimage import CAN_USE_HEAP, SETUP_HEADER_OFFSET, SetupHeader
from isola.vmm.x86.layout import EBDA_START, HIMEM_START

ZERO_PAGE_SIZE = 0x1000

# Field offsets in struct boot_params (zero-page.rst; setup-header fields from boot.rst)
ACPI_RSDP_ADDR = 0x070
E820_ENTRIES = 0x1E8
SENTINEL = 0x1EF
VID_MODE = 0x1FA
TYPE_OF_LOADER = 0x210
LOADFLAGS = 0x211
CODE32_START = 0x214
RAMDISK_IMAGE = 0x218
RAMDISK_SIZE = 0x21C
HEAP_END_PTR = 0x224
CMD_LINE_PTR = 0x228
E820_TABLE = 0x2D0
E820_MAX_ENTRIES = 128
E820_ENTRY = struct.Struct("<QQI")  # addr, size, type: 20 bytes, packed

E820_RAM = 1
E820_RESERVED = 2

VID_MODE_NORMAL = 0xFFFF
LOADER_UNDEFINED = 0xFF  # "boot loader ID 0xff": not one of the registered loaders
HEAP_END = 0xFE00  # end of the real-mode setup heap; the conventional value every loader writes
PAGE = 0x1000


@dataclass(frozen=True)
class E820Entry:
    addr: int
    size: int
    type: int


def e820_map(ram: Sequence[tuple[int, int]]) -> list[E820Entry]:
    """The memory map for RAM ranges `[(start, end), ...]`, the first starting at 0.

    Below 1 MiB only `[0, 0x9fc00)` is usable: the last KiB of base memory holds the MP table, and
    0xa0000-0xfffff is where a PC has VGA memory and the BIOS, which Linux must not treat as RAM.
    """
    (low_start, low_end), *high = ram
    if low_start != 0 or low_end <= HIMEM_START:
        raise UsageError(f"guest RAM must start at 0 and extend past 1 MiB, not [{low_start:#x}, {low_end:#x})")
    entries = [
        E820Entry(0, EBDA_START, E820_RAM),
        E820Entry(EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
        E820Entry(HIMEM_START, low_end - HIMEM_START, E820_RAM),
    ]
    entries += [E820Entry(start, end - start, E820_RAM) for start, end in high]
    return entries


def place_initrd(size: int, header: SetupHeader, ram_end: int, kernel_end: int) -> int:
    """Where the initrd goes: page-aligned, as high as RAM and the kernel's `initrd_addr_max` allow, so the
    kernel decompresses below it without overlap. Raises if it would collide with the kernel's footprint."""
    top = min(ram_end, header.initrd_addr_max + 1)
    addr = (top - size) // PAGE * PAGE
    if addr < kernel_end:
        raise UsageError(
            f"not enough guest memory: a {size >> 20} MiB initrd below {top:#x} would overlap the kernel, "
            f"which needs memory up to {kernel_end:#x}; give the VM more memory"
        )
    return addr


def build(
    header: SetupHeader,
    *,
    code32_start: int,
    cmdline_addr: int,
    e820: Sequence[E820Entry],
    initrd_addr: int = 0,
    initrd_size: int = 0,
    acpi_rsdp_addr: int = 0,
) -> bytes:
    """The 4 KiB zero page. `acpi_rsdp_addr` (boot protocol 2.14) saves the kernel its scan for the RSDP; 0
    means "none given"."""
    if len(e820) > E820_MAX_ENTRIES:
        raise UsageError(f"{len(e820)} e820 entries, the zero page holds {E820_MAX_ENTRIES}")
    page = bytearray(ZERO_PAGE_SIZE)
    page[SETUP_HEADER_OFFSET : SETUP_HEADER_OFFSET + len(header.raw)] = header.raw
    page[SENTINEL] = 0  # a nonzero sentinel tells the kernel the loader copied garbage over the header
    struct.pack_into("<H", page, VID_MODE, VID_MODE_NORMAL)
    page[TYPE_OF_LOADER] = LOADER_UNDEFINED
    page[LOADFLAGS] = header.loadflags | CAN_USE_HEAP
    struct.pack_into("<I", page, CODE32_START, code32_start)
    struct.pack_into("<II", page, RAMDISK_IMAGE, initrd_addr, initrd_size)
    struct.pack_into("<H", page, HEAP_END_PTR, HEAP_END)
    struct.pack_into("<I", page, CMD_LINE_PTR, cmdline_addr)
    struct.pack_into("<Q", page, ACPI_RSDP_ADDR, acpi_rsdp_addr)
    page[E820_ENTRIES] = len(e820)
    for i, entry in enumerate(e820):
        E820_ENTRY.pack_into(page, E820_TABLE + i * E820_ENTRY.size, entry.addr, entry.size, entry.type)
    return bytes(page)
