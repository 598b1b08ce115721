"""A process VM's memory: the program's RAM, which the VMM reads and writes like the emulator's flat memory,
with every change of a page's protection mirrored into the guest's page tables.

RAM is the emulator's `FlatMemory` (one private anonymous mapping, guest address == offset, a protection byte
per page) because the personality's view of guest memory is the same in both engines; here the hardware
enforces the protections too. The mapping is also the KVM memory slot at guest-physical 0, and it is private, so
`os.fork()` gives a child VM a copy-on-write copy of the program.

Tightening a page (unmap, mprotect to less) must drop translations the guest may still hold (see
`paging.py`): `map` and `unmap` discard the host pages (MADV_DONTNEED, which also zero-fills a fresh map);
`protect` briefly write-protects the host range, which is enough for KVM's MMU notifier to zap it.
"""

from __future__ import annotations

import mmap
from array import array

from isola.emu.memory import FlatMemory
from isola.host.mapping import Pin, protect
from isola.linux.guest import PAGE_SHIFT, PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE
from isola.vmm.process.paging import PageTables, leaf


class ProcessMemory(FlatMemory):
    def __init__(self, size: int, tables: PageTables) -> None:
        super().__init__(size)
        self.tables = tables
        self._ptes = tables.ram_ptes
        self._pin = Pin(self.buf)
        self.host_address = self._pin.address

    def _set_prot(self, page: int, prot: int) -> None:
        super()._set_prot(page, prot)
        self._ptes[page] = leaf(
            page << PAGE_SHIFT, bool(prot & PROT_READ), bool(prot & PROT_WRITE), bool(prot & PROT_EXEC)
        )

    def _set_prot_pages(self, pages: range, prot: int) -> None:
        super()._set_prot_pages(pages, prot)
        flags = leaf(0, bool(prot & PROT_READ), bool(prot & PROT_WRITE), bool(prot & PROT_EXEC))
        if flags:  # the PTE of page p is (p << 12) | flags: an arithmetic progression
            ptes = array("Q", range(pages.start << PAGE_SHIFT | flags, pages.stop << PAGE_SHIFT | flags, PAGE_SIZE))
        else:
            ptes = array("Q", bytes(8 * len(pages)))
        self._ptes[pages.start : pages.stop] = ptes

    def unmap(self, addr: int, length: int) -> None:
        super().unmap(addr, length)
        for p in self._pages(addr, length):
            self._ptes[p] = 0

    def protect(self, addr: int, length: int, prot: int) -> None:
        super().protect(addr, length, prot)
        if length:
            self.invalidate(addr, length)

    def invalidate(self, addr: int, length: int) -> None:
        """Make the guest forget its translations of [addr, addr+length): a round trip of the host mapping
        through read-only fires KVM's MMU notifier for the range."""
        start = self.host_address + addr
        protect(start, length, mmap.PROT_READ)
        protect(start, length, mmap.PROT_READ | mmap.PROT_WRITE)

    def close(self) -> None:
        self._pin.release()
        self.buf.close()
