"""What the Linux personality needs from an engine: guest memory it can map, read and write.

Addresses are guest-virtual. Memory is managed in pages of `PAGE_SIZE`; `map`/`unmap`/`protect` take
page-aligned ranges (the personality's `mm` does the rounding and the bookkeeping of mappings). Accesses the
guest may not make raise `GuestFault`: a syscall turns it into EFAULT, an engine into SIGSEGV.
"""

from __future__ import annotations

from typing import Protocol

PAGE_SIZE = 4096
PAGE_SHIFT = 12

# <asm-generic/mman-common.h>, the same on every Linux architecture isola runs
PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
PROT_EXEC = 4


class GuestFault(Exception):
    """The guest touched `addr` in a way its mappings forbid (`access` is 'r', 'w' or 'x')."""

    def __init__(self, addr: int, access: str) -> None:
        super().__init__(f"guest {access} fault at {addr:#x}")
        self.addr = addr
        self.access = access


class GuestMemory(Protocol):
    size: int  # mappable addresses are [0, size)

    def map(self, addr: int, length: int, prot: int) -> None:
        """Back [addr, addr+length) with zero-filled pages of protection `prot`, replacing what was there."""
        ...

    def unmap(self, addr: int, length: int) -> None: ...
    def protect(self, addr: int, length: int, prot: int) -> None: ...
    def prot_at(self, addr: int) -> int | None:
        """The protection of the page holding `addr`, None if it is not mapped."""
        ...

    def read(self, addr: int, n: int) -> bytes:
        """Read as the guest would (needs PROT_READ on every page touched)."""
        ...

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Write as the guest would (needs PROT_WRITE on every page touched)."""
        ...

    def poke(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Write into mapped pages whatever their protection: the loader filling a read-only text segment."""
        ...

    def read_cstring(self, addr: int, limit: int = 4096) -> bytes:
        """The NUL-terminated string at `addr`, without the NUL; GuestFault past `limit` bytes or a mapping."""
        ...


class SyscallError(Exception):
    """A system call fails with `errno` (a host `errno` value: x86-64 and riscv64 Linux share them)."""

    def __init__(self, errno: int, message: str = "") -> None:
        super().__init__(message or f"errno {errno}")
        self.errno = errno
