"""Host memory that KVM reaches by address: the address of a Python mmap, file mappings that duplicate no
descriptor, and protection changes.

KVM memory slots and `kvm_run` are plain host addresses, so the engines need three things Python's `mmap`
module does not give directly:

- the address of a mapping, held so that the mapping cannot be closed (and reused) while KVM still has it;
- a mapping of a file *without* the `dup()` that `mmap.mmap(fd, …)` makes for its own use: a process VM's
  program owns every low descriptor number, and a hidden duplicate of the vCPU or of one of its files there
  would be the program's to fstat, dup2 over or close;
- mprotect(2), which the process VM uses to make KVM's MMU notifier drop the guest's translations of a range.
"""

from __future__ import annotations

import ctypes
import mmap

from isola.host import libc


class Pin:
    """The host address of a Python mmap, valid while the pin is held: an exported buffer keeps `mmap.close()`
    from unmapping the memory under KVM (it raises BufferError instead)."""

    def __init__(self, buf: mmap.mmap) -> None:
        self._anchor: ctypes.c_char | None = ctypes.c_char.from_buffer(buf)
        self.address = ctypes.addressof(self._anchor)

    def release(self) -> None:
        self._anchor = None


class FileMapping:
    """mmap(2) of `length` bytes of `fd`, shared, made through libc so that no descriptor is duplicated.
    `view` is a byte memoryview of it; `close()` unmaps (after which no view may be used)."""

    def __init__(self, fd: int, length: int, *, writable: bool = False, offset: int = 0) -> None:
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self.length = length
        self.address: int = libc.call(
            "mmap", None, ctypes.c_size_t(length), prot, mmap.MAP_SHARED, fd, ctypes.c_long(offset),
            restype=ctypes.c_void_p,
        )  # fmt: skip
        self._array: ctypes.Array[ctypes.c_char] | None = (ctypes.c_char * length).from_address(self.address)
        self.view = memoryview(self._array).cast("B")

    def close(self) -> None:
        if self._array is None:
            return
        self.view.release()
        self._array = None
        libc.call("munmap", ctypes.c_void_p(self.address), ctypes.c_size_t(self.length))


def protect(address: int, length: int, prot: int) -> None:
    """mprotect(2) of a host range (PROT_* from the mmap module)."""
    libc.call("mprotect", ctypes.c_void_p(address), ctypes.c_size_t(length), prot)
