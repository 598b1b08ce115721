"""A process's address space: the VMA list Linux keeps per mm, and mmap/munmap/mprotect/mremap/brk over it.

`GuestMemory` only knows pages; what a guest asks for is in mappings: ranges with a protection, a kind
(private/shared, anonymous/file) and a name, which split when part of one is unmapped or reprotected, merge
when neighbours become alike, and are what /proc/self/maps shows. This module keeps that list (sorted,
non-overlapping, page-aligned) and gives each call the errors Linux gives (as `SyscallError(errno)`), so the
syscall layer is a thin translation of registers. Memory contents are the engine's; only `mremap` moves data.

Simplifications, each invisible to single-threaded programs that do not inspect their own page tables:
- a file mapping is an anonymous mapping the syscall layer fills with `mem.poke`; this module only records its
  name and file offset. MAP_SHARED is therefore mapped like MAP_PRIVATE: writes never reach the file, and
  `mremap` of old_len 0 (which duplicates a shared mapping) is refused with EINVAL.
- stacks do not grow on demand (MAP_GROWSDOWN is recorded, PROT_GROWSDOWN ignored): the loader maps the whole
  stack up front.
- no guard gaps are kept around stacks, except that brk, like Linux, stays a page away from the next mapping.
"""

from __future__ import annotations

import bisect
import errno
from typing import NamedTuple

from isola.linux.guest import PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, GuestMemory, SyscallError

# <asm-generic/mman-common.h> and <linux/mman.h>; x86-64 and riscv64 use the generic values
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_GROWSDOWN = 0x100
MAP_FIXED_NOREPLACE = 0x100000
MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4
PROT_SEM = 0x8
PROT_GROWSDOWN = 0x01000000
PROT_GROWSUP = 0x02000000

PROT_RWX = PROT_READ | PROT_WRITE | PROT_EXEC
MMAP_MIN_ADDR = 0x10000  # Linux's default vm.mmap_min_addr: page 0 and its neighbours stay unmappable


def page_up(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _fail(code: int) -> SyscallError:
    return SyscallError(code, errno.errorcode[code])


class Vma(NamedTuple):
    start: int
    end: int
    prot: int  # PROT_READ | PROT_WRITE | PROT_EXEC
    flags: int  # MAP_SHARED or MAP_PRIVATE, | MAP_ANONYMOUS, | MAP_GROWSDOWN
    name: str = ""  # a file's path, "[heap]", "[stack]", or "" for anonymous memory
    offset: int = 0  # file offset of `start`; 0 for anonymous memory

    @property
    def file_backed(self) -> bool:
        return not self.flags & MAP_ANONYMOUS

    def slice(self, start: int, end: int) -> Vma:
        offset = self.offset + (start - self.start) if self.file_backed else 0
        return self._replace(start=start, end=end, offset=offset)

    def mergeable_with(self, nxt: Vma) -> bool:
        """Linux merges neighbours that nothing distinguishes, so maps shows one line for them."""
        return (
            self.end == nxt.start
            and (self.prot, self.flags, self.name) == (nxt.prot, nxt.flags, nxt.name)
            and (not self.file_backed or self.offset + (self.end - self.start) == nxt.offset)
        )


class AddressSpace:
    """The mappings of one process over `mem`. New mappings without an address go top-down below `mmap_base`."""

    def __init__(self, mem: GuestMemory, *, mmap_base: int, min_addr: int = MMAP_MIN_ADDR) -> None:
        self.mem = mem
        self.mmap_base = mmap_base
        self.min_addr = min_addr
        self._vmas: list[Vma] = []
        self.start_brk = 0
        self.cur_brk = 0

    # -- queries ------------------------------------------------------------------------------------------

    @property
    def vmas(self) -> tuple[Vma, ...]:
        return tuple(self._vmas)

    def find(self, addr: int) -> Vma | None:
        """The mapping holding `addr`."""
        i = bisect.bisect_right(self._vmas, addr, key=lambda v: v.start) - 1
        return self._vmas[i] if i >= 0 and addr < self._vmas[i].end else None

    def _span(self, start: int, end: int) -> tuple[int, int]:
        """Index range of the mappings that intersect [start, end)."""
        lo = bisect.bisect_right(self._vmas, start, key=lambda v: v.end)
        hi = bisect.bisect_left(self._vmas, end, key=lambda v: v.start)
        return lo, max(lo, hi)

    def is_free(self, start: int, end: int) -> bool:
        lo, hi = self._span(start, end)
        return lo == hi

    def _gaps(self, lo: int, hi: int) -> list[tuple[int, int]]:
        gaps, cur = [], lo
        for v in self._vmas[slice(*self._span(lo, hi))]:
            if v.start > cur:
                gaps.append((cur, v.start))
            cur = max(cur, v.end)
        if cur < hi:
            gaps.append((cur, hi))
        return gaps

    def unmapped_area(self, length: int, *, align: int = PAGE_SIZE) -> int:
        """Where Linux would put a new mapping of `length` bytes: the highest free range below `mmap_base`,
        else (that area being full) the lowest free range anywhere; ENOMEM when nothing fits."""
        for lo, hi in reversed(self._gaps(self.min_addr, min(self.mmap_base, self.mem.size))):
            start = (hi - length) & ~(align - 1)
            if start >= lo:
                return start
        for lo, hi in self._gaps(self.min_addr, self.mem.size):
            start = (lo + align - 1) & ~(align - 1)
            if start + length <= hi:
                return start
        raise _fail(errno.ENOMEM)

    def maps_text(self) -> str:
        """/proc/self/maps. Device and inode are shown as 00:00 0: guest files have no device here."""
        lines = []
        for v in self._vmas:
            perms = "".join(
                c if v.prot & bit else "-" for c, bit in (("r", PROT_READ), ("w", PROT_WRITE), ("x", PROT_EXEC))
            )
            perms += "s" if v.flags & MAP_TYPE == MAP_SHARED else "p"
            line = f"{v.start:08x}-{v.end:08x} {perms} {v.offset:08x} 00:00 0 "
            lines.append(f"{line:<72} {v.name}" if v.name else line)
        return "".join(line + "\n" for line in lines)

    # -- list surgery (no memory effects) -----------------------------------------------------------------

    def _carve(self, start: int, end: int) -> list[Vma]:
        """Remove [start, end) from the list, splitting mappings at its edges; returns the removed pieces."""
        lo, hi = self._span(start, end)
        if lo == hi or start >= end:
            return []
        hit = self._vmas[lo:hi]
        keep = []
        if hit[0].start < start:
            keep.append(hit[0].slice(hit[0].start, start))
        if hit[-1].end > end:
            keep.append(hit[-1].slice(end, hit[-1].end))
        self._vmas[lo:hi] = keep
        return [v.slice(max(v.start, start), min(v.end, end)) for v in hit]

    def _insert(self, vma: Vma) -> None:
        """Add `vma` (its range must be free) and merge it with alike neighbours."""
        i = bisect.bisect_left(self._vmas, vma.start, key=lambda v: v.start)
        if i < len(self._vmas) and vma.mergeable_with(self._vmas[i]):
            vma = vma._replace(end=self._vmas.pop(i).end)
        if i > 0 and self._vmas[i - 1].mergeable_with(vma):
            i -= 1
            vma = self._vmas[i]._replace(end=vma.end)
            self._vmas[i] = vma
        else:
            self._vmas.insert(i, vma)

    def _unmap(self, start: int, end: int) -> None:
        for v in self._carve(start, end):
            self.mem.unmap(v.start, v.end - v.start)

    # -- system calls -------------------------------------------------------------------------------------

    def mmap(self, addr: int, length: int, prot: int, flags: int, *, name: str = "", offset: int = 0) -> int:
        """mmap(2) placement and bookkeeping; the new pages are zero. A file mapping (flags without
        MAP_ANONYMOUS) is named `name` at file `offset`; the caller copies the file's bytes in."""
        kind = flags & MAP_TYPE
        if length <= 0 or kind not in (MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE) or offset % PAGE_SIZE:
            raise _fail(errno.EINVAL)
        size = page_up(length)
        if size > self.mem.size:
            raise _fail(errno.ENOMEM)
        if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
            if addr % PAGE_SIZE:
                raise _fail(errno.EINVAL)
            if addr + size > self.mem.size:
                raise _fail(errno.ENOMEM)
            if addr < self.min_addr:
                raise _fail(errno.EPERM)
            if flags & MAP_FIXED_NOREPLACE and not self.is_free(addr, addr + size):
                raise _fail(errno.EEXIST)
            start = addr
            self._unmap(start, start + size)
        else:
            hint = max(page_up(addr), self.min_addr)
            usable = addr != 0 and hint + size <= self.mem.size and self.is_free(hint, hint + size)
            start = hint if usable else self.unmapped_area(size)
        self.mem.map(start, size, prot & PROT_RWX)
        kept = (MAP_SHARED if kind == MAP_SHARED_VALIDATE else kind) | flags & (MAP_ANONYMOUS | MAP_GROWSDOWN)
        self._insert(Vma(start, start + size, prot & PROT_RWX, kept, name, 0 if kept & MAP_ANONYMOUS else offset))
        return start

    def munmap(self, addr: int, length: int) -> None:
        size = page_up(length)
        if addr % PAGE_SIZE or size <= 0 or addr + size > self.mem.size:
            raise _fail(errno.EINVAL)
        self._unmap(addr, addr + size)

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """Like Linux, a hole in the range fails with ENOMEM after the mappings before it were changed."""
        if addr % PAGE_SIZE or prot & ~(PROT_RWX | PROT_SEM | PROT_GROWSDOWN | PROT_GROWSUP):
            raise _fail(errno.EINVAL)
        if length == 0:
            return
        end = addr + page_up(length)
        covered = addr
        for v in self._vmas[slice(*self._span(addr, end))]:
            if v.start > covered:
                break
            covered = min(v.end, end)
        if covered > addr:
            for piece in self._carve(addr, covered):
                self._insert(piece._replace(prot=prot & PROT_RWX))
            self.mem.protect(addr, covered - addr, prot & PROT_RWX)
        if covered < end:
            raise _fail(errno.ENOMEM)

    def mremap(self, old: int, old_len: int, new_len: int, flags: int, new_addr: int = 0) -> int:
        """Shrink in place, grow in place when the pages after are free, else move (MREMAP_MAYMOVE, copying
        the contents) to a new area or to `new_addr` (MREMAP_FIXED, replacing what is there)."""
        maymove, fixed, dontunmap = flags & MREMAP_MAYMOVE, flags & MREMAP_FIXED, flags & MREMAP_DONTUNMAP
        if (
            flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP)
            or old % PAGE_SIZE
            or ((fixed or dontunmap) and not maymove)
            or (dontunmap and page_up(old_len) != page_up(new_len))
        ):
            raise _fail(errno.EINVAL)
        old_len, new_len = page_up(old_len), page_up(new_len)
        if new_len <= 0 or old_len <= 0:
            raise _fail(errno.EINVAL)
        vma = self.find(old)
        if vma is None or old + old_len > vma.end:
            raise _fail(errno.EFAULT)
        if fixed:
            overlap = new_addr < old + old_len and old < new_addr + new_len
            if new_addr % PAGE_SIZE or new_addr + new_len > self.mem.size or overlap:
                raise _fail(errno.EINVAL)
            return self._move(vma, old, old_len, new_len, new_addr, keep_old=bool(dontunmap))
        if new_len <= old_len and not dontunmap:
            self._unmap(old + new_len, old + old_len)
            return old
        end = old + new_len
        if old + old_len == vma.end and end <= self.mem.size and self.is_free(vma.end, end) and not dontunmap:
            self.mem.map(vma.end, end - vma.end, vma.prot)
            self._insert(vma.slice(vma.end, end))
            return old
        if not maymove:
            raise _fail(errno.ENOMEM)
        return self._move(vma, old, old_len, new_len, self.unmapped_area(new_len), keep_old=bool(dontunmap))

    def _move(self, vma: Vma, old: int, old_len: int, new_len: int, dest: int, *, keep_old: bool) -> int:
        moved = vma.slice(old, old + old_len)
        self._unmap(dest, dest + new_len)
        if new_len < old_len:
            self._unmap(old + new_len, old + old_len)
            old_len = new_len
        self.mem.protect(old, old_len, PROT_READ)  # the old pages go away: let them be read whatever their prot
        data = self.mem.read(old, old_len)
        self._unmap(old, old + old_len)
        if keep_old:  # MREMAP_DONTUNMAP: the old range stays mapped, emptied
            self.mem.map(old, old_len, moved.prot)
            self._insert(moved)
        self.mem.map(dest, new_len, moved.prot)
        self.mem.poke(dest, data)
        self._insert(moved._replace(start=dest, end=dest + new_len))
        return dest

    def set_brk_start(self, addr: int) -> None:
        """Where the program break starts (exec puts it after the highest segment)."""
        self.start_brk = self.cur_brk = addr

    def brk(self, addr: int) -> int:
        """brk(2) as the kernel implements it: the new break, or on any failure the old one (no errno)."""
        if addr < self.start_brk:
            return self.cur_brk
        new_top, old_top = page_up(addr), page_up(self.cur_brk)
        if new_top > old_top:
            nxt = self._vmas[self._span(old_top, self.mem.size)[0] :]
            if new_top > self.mem.size or (nxt and new_top + PAGE_SIZE > nxt[0].start):
                return self.cur_brk
            self.mem.map(old_top, new_top - old_top, PROT_READ | PROT_WRITE)
            self._insert(Vma(old_top, new_top, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, "[heap]"))
        elif new_top < old_top:
            self._unmap(new_top, old_top)
        self.cur_brk = addr
        return addr

    def clear(self) -> None:
        """Drop every mapping and the break: execve starts from an empty mm."""
        for v in self._vmas:
            self.mem.unmap(v.start, v.end - v.start)
        self._vmas.clear()
        self.start_brk = self.cur_brk = 0
