"""The memory system calls over the real address space (`linux/mm.py`), not the unit tests' fake."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

from isola.emu.memory import FlatMemory
from isola.linux.abi.riscv64 import ABI, Rv64Cpu
from isola.linux.guest import PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE
from isola.linux.kernel import AT_FDCWD, Kernel
from isola.linux.mm import AddressSpace
from tests.unit.test_linux_support import Cpu, Scratch, call

MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED = 0x02, 0x20, 0x10
SCRATCH = 0x100000


def kernel() -> tuple[Kernel[Rv64Cpu], FlatMemory, AddressSpace]:
    mem = FlatMemory(64 << 20)
    aspace = AddressSpace(mem, mmap_base=48 << 20)
    aspace.mmap(SCRATCH, 0x100000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    aspace.set_brk_start(0x400000)
    return Kernel(ABI, mem, aspace, Cpu(), exe="/bin/guest", host_signals=False), mem, aspace


def test_file_maps_are_named_and_filled(tmp_path: Path) -> None:
    k, mem, aspace = kernel()
    s = Scratch(mem, SCRATCH)
    f = tmp_path / "libfoo.so"
    f.write_bytes(b"A" * PAGE_SIZE + b"B" * 100)
    fd = call(k, "openat", AT_FDCWD, s.cstr(str(f)), os.O_RDONLY, 0)
    addr = call(k, "mmap", 0, 2 * PAGE_SIZE, PROT_READ, MAP_PRIVATE, fd, PAGE_SIZE)
    assert mem.read(addr, 101) == b"B" * 100 + b"\0"
    vma = aspace.find(addr)
    assert vma is not None and vma.name == str(f) and vma.offset == PAGE_SIZE
    maps = s.alloc(4096)
    mfd = call(k, "openat", AT_FDCWD, s.cstr("/proc/self/maps"), os.O_RDONLY, 0)
    n = call(k, "read", mfd, maps, 4096)
    text = mem.read(maps, n).decode()
    assert text == aspace.maps_text()
    assert f"{addr:08x}-{addr + 2 * PAGE_SIZE:08x} r--p {PAGE_SIZE:08x} 00:00 0" in text and str(f) in text
    os.close(fd)
    os.close(mfd)


def test_anonymous_maps_brk_and_mremap() -> None:
    k, mem, aspace = kernel()
    addr = call(k, "mmap", 0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    mem.write(addr, b"keep me")
    moved = call(k, "mremap", addr, PAGE_SIZE, 64 * PAGE_SIZE, 1, 0)  # MREMAP_MAYMOVE
    assert mem.read(moved, 7) == b"keep me"
    assert call(k, "munmap", moved, 64 * PAGE_SIZE) == 0 and aspace.find(moved) is None
    assert call(k, "brk", 0) == 0x400000
    assert call(k, "brk", 0x402000) == 0x402000
    mem.write(0x401FFF, b"x")
    assert call(k, "mprotect", 0x400000, PAGE_SIZE, PROT_READ) == 0
    assert mem.prot_at(0x400000) == PROT_READ
    assert call(k, "mmap", 0x1000, PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == (
        -errno.EPERM
    )  # below mmap_min_addr


def test_the_sigreturn_page_is_an_ordinary_mapping() -> None:
    k, mem, aspace = kernel()
    vma = aspace.find(k.sigreturn_addr)
    assert vma is not None and vma.prot == PROT_READ | PROT_EXEC
    assert struct.unpack("<II", mem.buf[k.sigreturn_addr : k.sigreturn_addr + 8]) == (0x08B00893, 0x00000073)
