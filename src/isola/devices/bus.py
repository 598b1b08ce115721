"""What a device model sees of a machine: guest-physical memory, an interrupt line, and its register window.

These are the only contracts between an engine (the KVM VMM, the RISC-V system emulator) and a device, so that
one virtio-blk serves both. `Bus` routes an access at an absolute address (a port number on the x86 port-I/O
bus, a guest-physical address on an MMIO bus) to the device whose window holds it.
"""

from __future__ import annotations

import bisect
import mmap
import threading
from typing import Protocol


class DeviceMemoryError(Exception):
    """A guest gave a device an address range that is not RAM. Devices catch it; it never reaches the engine."""


class PhysicalMemory(Protocol):
    """Guest-physical RAM as a device sees it (DMA). Both methods raise `DeviceMemoryError` outside RAM."""

    def read(self, gpa: int, n: int) -> bytes: ...

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None: ...


class IrqLine(Protocol):
    """A level-triggered interrupt line (the KVM VMM maps it to KVM_IRQ_LINE, an emulator to its PLIC)."""

    def set_level(self, high: bool) -> None: ...


class Device(Protocol):
    """One register window. `offset` is relative to the window's base; `size` is 1, 2, 4 or 8 bytes."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


class RamMemory:
    """Guest RAM `[base, base + size)` over an anonymous mapping: the PhysicalMemory of tests and emulators."""

    def __init__(self, size: int, base: int = 0) -> None:
        if size <= 0 or base < 0:
            raise ValueError(f"bad RAM range base={base:#x} size={size:#x}")
        self.base = base
        self.size = size
        self.buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def _offset(self, gpa: int, n: int) -> int:
        off = gpa - self.base
        if n < 0 or off < 0 or off + n > self.size:
            raise DeviceMemoryError(f"guest-physical range {gpa:#x}+{n:#x} is not RAM")
        return off

    def read(self, gpa: int, n: int) -> bytes:
        off = self._offset(gpa, n)
        return self.buf[off : off + n]

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        off = self._offset(gpa, len(data))
        self.buf[off : off + len(data)] = data


class Bus:
    """Non-overlapping windows `[base, base + length)`, each routed to one device at `offset = addr - base`.

    An access nobody claims reads all-ones and writes nowhere, as on a PC bus with nothing driving it; Linux's
    probes rely on that (an absent UART or keyboard controller reads 0xff). Windows are registered before the guest
    runs; lookups afterwards are lock-free reads of immutable lists, so vCPU threads may share one bus.
    """

    def __init__(self) -> None:
        # (bases, windows): windows are (base, length, device) sorted by base. Replaced as one tuple, so a
        # reader never sees the bases of one version with the windows of another.
        self._table: tuple[list[int], list[tuple[int, int, Device]]] = ([], [])
        self._lock = threading.Lock()

    def register(self, base: int, length: int, device: Device) -> None:
        if length <= 0 or base < 0:
            raise ValueError(f"bad window base={base:#x} length={length:#x}")
        with self._lock:
            bases, windows = self._table
            i = bisect.bisect_left(bases, base)
            for other_base, other_len, _ in windows[max(i - 1, 0) : i + 1]:
                if other_base < base + length and base < other_base + other_len:
                    raise ValueError(f"window {base:#x}+{length:#x} overlaps {other_base:#x}+{other_len:#x}")
            windows = [*windows[:i], (base, length, device), *windows[i:]]
            self._table = ([w[0] for w in windows], windows)

    def find(self, addr: int) -> tuple[int, Device] | None:
        """The device whose window holds `addr`, and `addr`'s offset in it."""
        bases, windows = self._table
        i = bisect.bisect_right(bases, addr) - 1
        if i < 0:
            return None
        base, length, device = windows[i]
        if addr >= base + length:
            return None
        return addr - base, device

    def read(self, addr: int, size: int) -> int:
        hit = self.find(addr)
        if hit is None:
            return (1 << (8 * size)) - 1
        offset, device = hit
        return device.read(offset, size)

    def write(self, addr: int, size: int, value: int) -> None:
        hit = self.find(addr)
        if hit is not None:
            offset, device = hit
            device.write(offset, size, value)
