"""Guest memory of the emulator: one private anonymous host mapping where guest address == offset.

User-mode emulation needs no MMU: like qemu-user, the guest's virtual addresses index host memory directly.
The mapping is reserved once (untouched pages cost nothing) and is MAP_PRIVATE, so `os.fork()` of the
emulator gives the child a copy-on-write copy of the guest, exactly as fork(2) gives the guest.

Per page, two bytearrays carry what the translated code checks on its fast paths:
- `readable[p]` is 1 when the page may be read;
- `fast_write[p]` is 1 when a store needs no further thought: the page is writable *and* holds no translated
  code. Any other store takes `store_slow()`, which faults, or tells the translator to drop the blocks
  translated from that page before the write lands (self-modifying code, JITs, a loader patching text).
"""

from __future__ import annotations

import mmap
from collections.abc import Callable

from isola.linux.guest import PAGE_SHIFT, PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, GuestFault

MAPPED = 0x80  # in `prot`: the page is mapped (PROT_NONE pages are mapped too)
DEFAULT_SIZE = 1 << 32
_WRITABLE_UNLESS_CODE = bytes((1,)) + bytes(255)  # code[] byte -> fast_write[] byte for a writable page


class FlatMemory:
    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        if size % PAGE_SIZE:
            raise ValueError("guest memory size must be a multiple of the page size")
        self.size = size
        self.buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        pages = size >> PAGE_SHIFT
        # The tables only the slow paths read are private anonymous mappings too: zero pages the kernel
        # provides lazily, where a bytearray of a million pages is written in full when it is made (about
        # 0.5 ms each, a noticeable part of a warm start). The two the fast paths index stay bytearrays,
        # a little quicker to index.
        self.prot = mmap.mmap(-1, pages, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.code = mmap.mmap(-1, pages, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.readable = bytearray(pages)
        self.fast_write = bytearray(pages)
        # Called with a page number before a write lands on a page holding translated code.
        self.on_code_write: Callable[[int], None] = self.unmark_code

    # -- mappings (page-aligned; the personality's mm does the rounding and bookkeeping) --------------------

    def _pages(self, addr: int, length: int) -> range:
        if addr % PAGE_SIZE or length % PAGE_SIZE or addr < 0 or addr + length > self.size:
            raise ValueError(f"bad page range {addr:#x}+{length:#x}")
        return range(addr >> PAGE_SHIFT, (addr + length) >> PAGE_SHIFT)

    def _set_prot(self, page: int, prot: int) -> None:
        self.prot[page] = MAPPED | prot
        self.readable[page] = 1 if prot & PROT_READ else 0
        self.fast_write[page] = 1 if prot & PROT_WRITE and not self.code[page] else 0

    def _set_prot_pages(self, pages: range, prot: int) -> None:
        """`_set_prot` for a run of pages at once: a new program's 8 MiB stack alone is 2,048 of them."""
        a, b = pages.start, pages.stop
        n = b - a
        self.prot[a:b] = bytes((MAPPED | prot,)) * n
        self.readable[a:b] = (b"\1" if prot & PROT_READ else b"\0") * n
        self.fast_write[a:b] = self.code[a:b].translate(_WRITABLE_UNLESS_CODE) if prot & PROT_WRITE else bytes(n)

    def map(self, addr: int, length: int, prot: int) -> None:
        pages = self._pages(addr, length)
        self._forget_code(pages)
        if length:
            self.buf.madvise(mmap.MADV_DONTNEED, addr, length)  # private anonymous: back to zero pages
        self._set_prot_pages(pages, prot)

    def unmap(self, addr: int, length: int) -> None:
        pages = self._pages(addr, length)
        self._forget_code(pages)
        if length:
            self.buf.madvise(mmap.MADV_DONTNEED, addr, length)
        for p in pages:
            self.prot[p] = self.readable[p] = self.fast_write[p] = 0

    def protect(self, addr: int, length: int, prot: int) -> None:
        for p in self._pages(addr, length):
            if self.prot[p] & MAPPED:
                self._set_prot(p, prot)

    def prot_at(self, addr: int) -> int | None:
        if not 0 <= addr < self.size:
            return None
        prot = self.prot[addr >> PAGE_SHIFT]
        return prot & ~MAPPED if prot & MAPPED else None

    # -- translated code ------------------------------------------------------------------------------------

    def mark_code(self, page: int) -> None:
        """The translator made blocks from `page`: stores to it must go through `store_slow`."""
        self.code[page] = 1
        self.fast_write[page] = 0

    def unmark_code(self, page: int) -> None:
        self.code[page] = 0
        prot = self.prot[page]
        self.fast_write[page] = 1 if prot & MAPPED and prot & PROT_WRITE else 0

    def _forget_code(self, pages: range) -> None:
        for p in pages:
            if self.code[p]:
                self.on_code_write(p)

    # -- access as the guest -----------------------------------------------------------------------------

    def check(self, addr: int, n: int, need: int, access: str) -> None:
        """GuestFault unless every page of [addr, addr+n) is mapped with `need`."""
        if addr < 0 or addr + n > self.size:
            raise GuestFault(addr, access)
        for p in range(addr >> PAGE_SHIFT, ((addr + max(n, 1) - 1) >> PAGE_SHIFT) + 1):
            prot = self.prot[p]
            if not prot & MAPPED or prot & need != need:
                raise GuestFault(max(addr, p << PAGE_SHIFT), access)

    def read(self, addr: int, n: int) -> bytes:
        self.check(addr, n, PROT_READ, "r")
        return self.buf[addr : addr + n]

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        self.check(addr, n, PROT_WRITE, "w")
        self._store(addr, data)

    def poke(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        self.check(addr, len(data), 0, "w")
        self._store(addr, data)

    def _store(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if n:
            for p in range(addr >> PAGE_SHIFT, ((addr + n - 1) >> PAGE_SHIFT) + 1):
                if self.code[p]:
                    self.on_code_write(p)
            self.buf[addr : addr + n] = data

    def store_slow(self, addr: int, data: bytes) -> None:
        """A store from translated code whose fast path declined: fault, or invalidate code, then write."""
        self.write(addr, data)

    def fetch_check(self, addr: int, n: int) -> None:
        """Instruction fetch needs PROT_EXEC (and the page mapped)."""
        self.check(addr, n, PROT_EXEC, "x")

    def read_cstring(self, addr: int, limit: int = 4096) -> bytes:
        end = addr
        while True:
            self.check(end, 1, PROT_READ, "r")
            page_end = min(((end >> PAGE_SHIFT) + 1) << PAGE_SHIFT, addr + limit)
            nul = self.buf.find(b"\0", end, page_end)
            if nul >= 0:
                return self.buf[addr:nul]
            if page_end >= addr + limit:
                raise GuestFault(addr + limit, "r")
            end = page_end
