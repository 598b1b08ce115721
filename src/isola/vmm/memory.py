"""Guest RAM: one anonymous host mapping, laid out around the x86 32-bit MMIO hole, readable by devices.

The whole RAM is a single `mmap` so the VMM has one host range to reason about (RSS accounting, one place to
free). Guest-physical addresses see it as at most two ranges: `[0, min(size, 3 GiB))` and, for the rest,
`[4 GiB, ...)`. The 1 GiB between 3 GiB and 4 GiB stays unbacked because the IOAPIC (0xfec00000), the local APIC
(0xfee00000), KVM's TSS and identity-map pages and the virtio-mmio windows live there; accesses to it exit to
the VMM as MMIO. Each range becomes one KVM memory slot.

`GuestMemory` is also the devices' `PhysicalMemory`: a guest hands devices arbitrary addresses and lengths, so
every access is bounds-checked against the ranges and fails with `DeviceMemoryError`, never an IndexError or a
read of another range.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

from isola.devices.bus import DeviceMemoryError
from isola.errors import UsageError
from isola.host.mapping import Pin

MIB = 1 << 20
LOW_RAM_LIMIT = 0xC000_0000
"""Guest RAM below 4 GiB ends here at the latest; the 32-bit MMIO hole starts."""
HIGH_RAM_START = 1 << 32


@dataclass(frozen=True)
class RamRange:
    """One guest-physical range of RAM and where it lives in the host mapping."""

    gpa: int
    size: int
    offset: int
    """Offset of `gpa` in the host mapping."""

    @property
    def end(self) -> int:
        return self.gpa + self.size


class GuestMemory:
    """`size` bytes of guest RAM (whole MiB) in one private anonymous mapping."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size % MIB:
            raise UsageError(f"guest memory must be a positive number of MiB, not {size} bytes")
        self.size = size
        self._buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._pin = Pin(self._buf)  # KVM has the address: the mapping must outlive it (close() releases it)
        self.host_address = self._pin.address
        low = min(size, LOW_RAM_LIMIT)
        ranges = [RamRange(0, low, 0)]
        if size > low:
            ranges.append(RamRange(HIGH_RAM_START, size - low, low))
        self.ranges: tuple[RamRange, ...] = tuple(ranges)

    @property
    def low_end(self) -> int:
        """End of RAM below 4 GiB: where boot data (kernel, initrd, tables) must fit."""
        return self.ranges[0].end

    def _locate(self, gpa: int, n: int) -> int:
        if n >= 0:
            for r in self.ranges:
                if r.gpa <= gpa and gpa + n <= r.end:
                    return r.offset + gpa - r.gpa
        raise DeviceMemoryError(f"guest-physical range {gpa:#x}+{n:#x} is not RAM")

    def read(self, gpa: int, n: int) -> bytes:
        off = self._locate(gpa, n)
        return self._buf[off : off + n]

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        off = self._locate(gpa, len(data))
        self._buf[off : off + len(data)] = data

    def view(self, gpa: int, n: int) -> memoryview:
        """A writable view of `n` bytes of guest RAM at `gpa`, so that devices can have the kernel read files
        straight into it (`os.preadv`) instead of copying through `bytes` one buffer at a time. Release it (or
        drop it) before `close()`, which cannot unmap RAM that a view still exports."""
        off = self._locate(gpa, n)
        return memoryview(self._buf)[off : off + n]

    def close(self) -> None:
        """Unmap the RAM. Only after the VM is gone: KVM may still touch a registered slot until then."""
        if not self._buf.closed:
            self._pin.release()
            self._buf.close()
