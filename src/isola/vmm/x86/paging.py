"""Identity page tables for the 64-bit boot entry: the first 4 GiB mapped 1:1 with 2 MiB pages.

The 64-bit boot protocol needs the kernel, the zero page and the command line identity-mapped; mapping all of
the low 4 GiB covers any placement below 4 GiB and the MMIO hole too (the LAPIC, IOAPIC and virtio windows), at a
cost of six pages. Linux builds its own tables before it touches anything above.
"""

from __future__ import annotations

import struct

PAGE = 0x1000
PRESENT = 0x1
WRITABLE = 0x2
HUGE = 0x80  # PS: a page-directory entry maps a 2 MiB page
HUGE_PAGE = 2 << 20
GIB = 1 << 30
MAPPED_GIB = 4
SIZE = (2 + MAPPED_GIB) * PAGE
"""PML4, PDPT, and one page directory per GiB."""


def identity_4g(base: int) -> bytes:
    """The tables, to be written at guest-physical `base` (page-aligned); CR3 = `base`."""
    if base % PAGE:
        raise ValueError(f"page tables must be page-aligned, not at {base:#x}")
    pdpt = base + PAGE
    pml4 = struct.pack("<Q", pdpt | PRESENT | WRITABLE).ljust(PAGE, b"\0")
    pdpt_page = struct.pack(
        f"<{MAPPED_GIB}Q", *((base + (2 + i) * PAGE) | PRESENT | WRITABLE for i in range(MAPPED_GIB))
    ).ljust(PAGE, b"\0")
    directories = struct.pack(
        f"<{512 * MAPPED_GIB}Q", *(i * HUGE_PAGE | PRESENT | WRITABLE | HUGE for i in range(512 * MAPPED_GIB))
    )
    return pml4 + pdpt_page + directories
