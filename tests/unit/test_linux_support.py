"""Shared by the Linux personality's tests: a register file, a small address space, a kernel on FlatMemory.

`FakeMM` stands in for `linux/mm.py`: it hands out pages bump-style and keeps just enough bookkeeping for
maps_text() and clear(); the kernel's own logic (file mmap, madvise, the sigreturn page) is what is tested.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import Any

from isola.emu.memory import FlatMemory
from isola.linux.abi.riscv64 import ABI, SYSCALLS, Rv64Cpu
from isola.linux.guest import PAGE_SIZE, PROT_READ, PROT_WRITE, SyscallError
from isola.linux.kernel import MASK64, Kernel

NR = {name: nr for nr, name in SYSCALLS.items()}
MEM_SIZE = 64 << 20
SCRATCH = 0x100000  # a read-write area for syscall arguments
SCRATCH_SIZE = 0x100000
STACK_TOP = 0x400000  # the guest stack: [STACK_TOP - 0x100000, STACK_TOP)
MAP_FIXED = 0x10
ENOMEM = 12


@dataclass
class Cpu:
    x: list[int] = field(default_factory=lambda: [0] * 32)
    f: list[int] = field(default_factory=lambda: [0] * 32)
    pc: int = 0
    fcsr: int = 0


class FakeMM:
    def __init__(self, mem: FlatMemory, base: int = 0x1000000) -> None:
        self.mem = mem
        self.next = base
        self.maps: dict[int, tuple[int, int]] = {}
        self.names: dict[int, tuple[str, int]] = {}
        self.cleared = 0
        self.brk_start = self.brk_end = 0x800000

    def mmap(self, addr: int, length: int, prot: int, flags: int, *, name: str = "", offset: int = 0) -> int:
        length = (length + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
        if flags & MAP_FIXED:
            start = addr
        else:
            start, self.next = self.next, self.next + length
        self.mem.map(start, length, prot)
        self.maps[start] = (length, prot)
        self.names[start] = (name, offset)
        return start

    def munmap(self, addr: int, length: int) -> None:
        self.mem.unmap(addr, (length + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE)
        self.maps.pop(addr, None)

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        self.mem.protect(addr, (length + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE, prot)

    def mremap(self, old: int, old_len: int, new_len: int, flags: int, new_addr: int = 0) -> int:
        raise SyscallError(ENOMEM)

    def brk(self, addr: int) -> int:
        if addr > self.brk_end:
            top = (addr + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
            cur = (self.brk_end + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
            if top > cur:
                self.mem.map(cur, top - cur, PROT_READ | PROT_WRITE)
            self.brk_end = addr
        return self.brk_end

    def maps_text(self) -> str:
        return "".join(f"{a:08x}-{a + n:08x} rw-p 00000000 00:00 0\n" for a, (n, _) in sorted(self.maps.items()))

    def clear(self) -> None:
        for start, (length, _) in list(self.maps.items()):
            self.mem.unmap(start, length)
        self.maps.clear()
        self.cleared += 1


def make_kernel(**kwargs: Any) -> tuple[Kernel[Rv64Cpu], FlatMemory, Cpu, io.StringIO]:
    """A kernel on 64 MiB of guest memory with a scratch area and a stack mapped; strace goes to a StringIO."""
    mem = FlatMemory(MEM_SIZE)
    mem.map(SCRATCH, SCRATCH_SIZE, PROT_READ | PROT_WRITE)
    mem.map(STACK_TOP - 0x100000, 0x100000, PROT_READ | PROT_WRITE)
    cpu = Cpu()
    cpu.x[2] = STACK_TOP - 0x1000
    trace = io.StringIO()
    options: dict[str, Any] = {"exe": "/usr/bin/guest-program", "host_signals": False, "strace": trace}
    options.update(kwargs)
    kernel = Kernel(ABI, mem, FakeMM(mem), cpu, **options)
    return kernel, mem, cpu, trace


def signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


def call(kernel: Kernel[Rv64Cpu], name: str, *args: int) -> int:
    """Make system call `name` as the guest would (arguments as unsigned registers); the result signed."""
    return signed(kernel.syscall(NR[name], tuple(a & MASK64 for a in args)))


class Scratch:
    """Bump allocation of argument space inside the scratch area."""

    def __init__(self, mem: FlatMemory, start: int = SCRATCH) -> None:
        self.mem = mem
        self.pos = start

    def alloc(self, size: int) -> int:
        addr = self.pos
        self.pos += (size + 15) // 16 * 16
        return addr

    def put(self, data: bytes) -> int:
        addr = self.alloc(len(data))
        self.mem.write(addr, data)
        return addr

    def cstr(self, text: str | bytes) -> int:
        raw = text.encode() if isinstance(text, str) else text
        return self.put(raw + b"\0")

    def u64(self, addr: int) -> int:
        return int(struct.unpack("<Q", self.mem.read(addr, 8))[0])

    def i32(self, addr: int) -> int:
        return int(struct.unpack("<i", self.mem.read(addr, 4))[0])
