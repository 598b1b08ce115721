"""The process VM's page tables: four levels, built once by the VMM, with only leaf entries changing later.

Every table the program's memory could ever need is made up front (for 1 GiB of RAM: 512 page tables, 2 MiB of
zeros the host allocates only where entries are written), so `mmap` and friends only ever write leaf entries:
a PTE per 4 KiB page of RAM and a 2 MiB PDE per piece of a file window. Upper levels are all present, writable
and user-accessible; a page's access is what its leaf says. The tables themselves are mapped at no virtual
address, so no guest code, at any privilege, can reach them.

A leaf the VMM loosens (absent → present, read-only → writable) needs nothing more: neither the CPU nor KVM's
shadow MMU caches an absent or a more restrictive entry beyond the fault that reports it. A leaf it tightens
does need the stale translation dropped, and the guest has no kernel to run `invlpg`. The owner of the host
memory behind the page does it instead (`memory.ProcessMemory`): changing the host mapping of a page makes KVM's
MMU notifier zap every translation of it and flush the guest's TLB, with shadow paging (kvm_pvm) and with
nested paging (SVM/VMX) alike.
"""

from __future__ import annotations

import struct

from isola.vmm.process import layout
from isola.vmm.process.layout import GIB, LARGE_PAGE, PAGE, Layout

PRESENT = 1 << 0
WRITABLE = 1 << 1
USER = 1 << 2
LARGE = 1 << 7
NO_EXECUTE = 1 << 63
_TABLE = PRESENT | WRITABLE | USER  # an upper-level entry: the leaf decides
_QWORD = struct.Struct("<Q")

# The system area's pages: (offset, pages, flags).
SYSTEM_PAGES = (
    (layout.GDT, 1, PRESENT | WRITABLE | NO_EXECUTE),
    (layout.TSS, 3, PRESENT | WRITABLE | NO_EXECUTE),
    (layout.IDT, 1, PRESENT | NO_EXECUTE),
    (layout.EXCEPTION_STUBS, 1, PRESENT),
    (layout.EXCEPTION_STACK_TOP - 2 * PAGE, 2, PRESENT | WRITABLE | NO_EXECUTE),
    (layout.USER_CODE, 1, PRESENT | USER),
    (layout.USER_DATA, 1, PRESENT | WRITABLE | USER | NO_EXECUTE),
    (layout.BATCH, layout.BATCH_SIZE // PAGE, PRESENT | WRITABLE | USER | NO_EXECUTE),
)


class PageTables:
    """The tables inside `system` (the host mapping of the system slot), in the order `Layout` counts them:
    PML4, PDPT, RAM page directories, the system area's directory, window directories, RAM page tables, the
    system area's page table."""

    def __init__(self, lay: Layout, system: memoryview) -> None:
        self.layout = lay
        self._system = system
        self._pd_ram = 2
        self._pd_sys = self._pd_ram + lay.ram_page_directories
        self._pd_windows = self._pd_sys + 1
        self._pt_ram = self._pd_windows + layout.MAX_WINDOWS
        self._pt_sys = self._pt_ram + lay.ram_page_tables
        start = layout.PAGE_TABLES + self._pt_ram * PAGE
        self.ram_ptes = system[start : start + lay.ram_page_tables * PAGE].cast("Q")
        """One PTE per 4 KiB page of RAM, indexed by page number (the RAM page tables are contiguous)."""

    @property
    def root(self) -> int:
        """CR3: the guest-physical address of the PML4."""
        return self._gpa(0)

    def _gpa(self, index: int) -> int:
        return self.layout.sys + layout.PAGE_TABLES + index * PAGE

    def _set(self, index: int, entry: int, value: int) -> None:
        _QWORD.pack_into(self._system, layout.PAGE_TABLES + index * PAGE + entry * 8, value)

    def build(self) -> None:
        """Link every level and map the system area. RAM starts with no page present."""
        lay = self.layout
        self._set(0, 0, self._gpa(1) | _TABLE)
        for g in range(lay.ram_page_directories):
            self._set(1, g, self._gpa(self._pd_ram + g) | _TABLE)
        for k in range(lay.ram_page_tables):
            self._set(self._pd_ram + k // 512, k % 512, self._gpa(self._pt_ram + k) | _TABLE)
        self._set(1, lay.sys // GIB, self._gpa(self._pd_sys) | _TABLE)
        self._set(self._pd_sys, 0, self._gpa(self._pt_sys) | _TABLE)
        for offset, pages, flags in SYSTEM_PAGES:
            for i in range(pages):
                page = offset // PAGE + i
                self._set(self._pt_sys, page, (lay.sys + page * PAGE) | flags)
        for w in range(layout.MAX_WINDOWS):
            self._set(1, lay.window(w) // GIB, self._gpa(self._pd_windows + w) | _TABLE)

    def map_window(self, index: int, size: int) -> None:
        """Window `index` readable by the program for `size` bytes (rounded up to 2 MiB pages)."""
        base = self.layout.window(index)
        for i in range((size + LARGE_PAGE - 1) // LARGE_PAGE):
            self._set(self._pd_windows + index, i, (base + i * LARGE_PAGE) | PRESENT | USER | LARGE | NO_EXECUTE)

    def unmap_window(self, index: int) -> None:
        for i in range(512):
            self._set(self._pd_windows + index, i, 0)


def leaf(gpa: int, readable: bool, writable: bool, executable: bool) -> int:
    """A user PTE for the page at `gpa`: absent when nothing may touch it (x86 cannot express write-only or
    execute-only; a writable or executable page is readable too, as on Linux/x86)."""
    if not (readable or writable or executable):
        return 0
    return gpa | PRESENT | USER | (WRITABLE if writable else 0) | (0 if executable else NO_EXECUTE)
