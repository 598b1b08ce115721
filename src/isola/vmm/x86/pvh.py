"""The PVH boot information: `struct hvm_start_info` (Xen's public `arch-x86/hvm/start_info.h`, version 1).

PVH is Xen's boot ABI, which Linux (CONFIG_PVH) accepts from any hypervisor: the kernel starts in 32-bit
protected mode at the address of its `XEN_ELFNOTE_PHYS32_ENTRY` note, with %ebx pointing at this structure. It
replaces the zero page: the command line, the initrd (module 0 of the module list), the memory map and the ACPI
RSDP all come from here, and Linux builds its own `boot_params` from them before `startup_64`.

Everything lives in one page at `START_INFO_ADDR`: the structure, then the module list, then the memory map. The
memory map is the e820 map the zero page would carry (`boot_params.e820_map`): PVH's memmap entry types are the
e820 types.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from isola.errors import UsageError
from isola.vmm.x86.boot_params import E820_MAX_ENTRIES, E820Entry

START_INFO_ADDR = 0x6000
"""The page below the zero page (Firecracker's place for it too); usable RAM that Linux copies out of at once."""

XEN_HVM_START_MAGIC = 0x336EC578
START_INFO_VERSION = 1
"""Version 1 is the first with the memory map; Linux needs one unless it runs on Xen."""

# magic, version, flags, nr_modules, modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr, memmap_entries, reserved
START_INFO = struct.Struct("<IIIIQQQQII")  # 56 bytes
MODLIST_ENTRY = struct.Struct("<QQQQ")  # paddr, size, cmdline_paddr, reserved: 32 bytes
MEMMAP_ENTRY = struct.Struct("<QQII")  # addr, size, type, reserved: 24 bytes


def build(
    address: int,
    *,
    cmdline_addr: int,
    e820: Sequence[E820Entry],
    initrd_addr: int = 0,
    initrd_size: int = 0,
    rsdp_addr: int = 0,
) -> bytes:
    """The start info, module list and memory map, to be written at `address`: at most 56 + 32 + 128 * 24
    bytes, one page.

    Without an initrd the module list is empty and its address 0. `rsdp_addr` 0 means "no RSDP given": Linux then
    looks for ACPI tables in the BIOS areas itself, as with a zero page.
    """
    if len(e820) > E820_MAX_ENTRIES:
        raise UsageError(f"{len(e820)} memory map entries, a PVH kernel takes {E820_MAX_ENTRIES}")
    modules = [MODLIST_ENTRY.pack(initrd_addr, initrd_size, 0, 0)] if initrd_size else []
    modlist_addr = address + START_INFO.size if modules else 0
    memmap_addr = address + START_INFO.size + MODLIST_ENTRY.size * len(modules)
    memmap = [MEMMAP_ENTRY.pack(e.addr, e.size, e.type, 0) for e in e820]
    header = START_INFO.pack(
        XEN_HVM_START_MAGIC,
        START_INFO_VERSION,
        0,  # flags: no SIF_* applies outside Xen
        len(modules),
        modlist_addr,
        cmdline_addr,
        rsdp_addr,
        memmap_addr,
        len(memmap),
        0,
    )
    return header + b"".join(modules) + b"".join(memmap)
