"""Where everything lives in a process VM: one address space in which guest-virtual equals guest-physical.

    [0, ram)                      the program's memory: what `mm` hands out (ELF, brk, mmap, stack), 4 KiB pages
    [sys, sys + 2 MiB)            the system area (below), 4 KiB pages
    [sys + PAGE_TABLES, ...)      the page tables: in guest memory, but mapped at no virtual address at all
    [windows + i GiB, ...)        file window i: a regular file the program reads, mapped read-only (2 MiB pages)

`sys` is `ram` rounded up to 1 GiB, so the system area and each window have a page directory of their own and
all of it sits under one PML4 entry. Identity mapping keeps the VMM's side simple (a guest address is an
offset into a host mapping) and costs nothing in the guest: the CPU walks the same four levels either way.

The system area, page by page (`U` = user-accessible; everything else is supervisor-only):

    +0x00000  GDT                                 +0x05000  exception stubs (CPL 0)
    +0x01000  TSS, then its I/O permission bitmap +0x06000  exception stack (2 pages; TSS.RSP0 = +0x08000)
    +0x04000  IDT                                 +0x08000  U  syscall entry and fast paths (read+execute)
                                                  +0x09000  U  fast-path data: saved registers, fd table (rw)
                                                  +0x0A000  U  the write batch (64 KiB, rw)
"""

from __future__ import annotations

from isola.errors import UsageError

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
PAGE = 4 * KIB
LARGE_PAGE = 2 * MIB

GDT = 0x0000
TSS = 0x1000
IDT = 0x4000
EXCEPTION_STUBS = 0x5000
EXCEPTION_STACK_TOP = 0x8000
USER_CODE = 0x8000
USER_DATA = 0x9000
BATCH = 0xA000
BATCH_SIZE = 64 * KIB
SYSTEM_AREA_SIZE = 2 * MIB
PAGE_TABLES = SYSTEM_AREA_SIZE  # offset from `sys` of the first page-table page

# Segment selectors, the same numbers Linux uses, so a signal frame's cs/ss read as Linux's would.
KERNEL_CS = 0x10
KERNEL_DS = 0x18
USER32_CS = 0x23
USER_DS = 0x2B
USER_CS = 0x33
TSS_SELECTOR = 0x38

# Port numbers the guest side uses to reach the VMM (an OUT exits to user space).
SYSCALL_PORT = 0xD0
EXCEPTION_PORT_BASE = 0xE0  # + vector, for vectors 0-31

MAX_WINDOWS = 32
MAX_WINDOW_SIZE = 1 * GIB
MAX_RAM = 256 * GIB


class Layout:
    """The addresses of one process VM with `ram` bytes of program memory."""

    __slots__ = ("ram",)

    def __init__(self, ram: int) -> None:
        if ram % LARGE_PAGE or not 16 * MIB <= ram <= MAX_RAM:
            raise UsageError(f"process VM memory must be a multiple of 2 MiB between 16 MiB and {MAX_RAM // GIB} GiB")
        self.ram = ram

    @property
    def sys(self) -> int:
        return (self.ram + GIB - 1) // GIB * GIB

    @property
    def ram_page_directories(self) -> int:
        return self.sys // GIB

    @property
    def ram_page_tables(self) -> int:
        return self.ram // LARGE_PAGE

    @property
    def page_table_pages(self) -> int:
        """PML4, PDPT, the page directories (RAM, system area, windows), the page tables (RAM, system area)."""
        return 2 + self.ram_page_directories + 1 + MAX_WINDOWS + self.ram_page_tables + 1

    @property
    def system_slot_size(self) -> int:
        """The system area plus the page tables, in whole 2 MiB."""
        size = PAGE_TABLES + self.page_table_pages * PAGE
        return (size + LARGE_PAGE - 1) // LARGE_PAGE * LARGE_PAGE

    @property
    def windows(self) -> int:
        return self.sys + GIB

    def window(self, index: int) -> int:
        return self.windows + index * MAX_WINDOW_SIZE

    @property
    def top(self) -> int:
        """One past the highest guest-physical address in use: the CPU's physical address width must reach it."""
        return self.window(MAX_WINDOWS)
