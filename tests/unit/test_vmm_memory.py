"""Guest RAM as devices see it: bounds-checked reads and writes, and the split around the 32-bit MMIO hole."""

from __future__ import annotations

import pytest

from isola.devices.bus import DeviceMemoryError
from isola.errors import UsageError
from isola.vmm.memory import HIGH_RAM_START, LOW_RAM_LIMIT, MIB, GuestMemory


@pytest.fixture
def ram():
    mem = GuestMemory(4 * MIB)
    yield mem
    mem.close()


def test_one_range_below_the_hole(ram):
    assert [(r.gpa, r.size, r.offset) for r in ram.ranges] == [(0, 4 * MIB, 0)]
    assert ram.low_end == 4 * MIB
    assert ram.host_address > 0


def test_read_back_what_was_written(ram):
    ram.write(0x1000, b"hello")
    ram.write(4 * MIB - 2, bytearray(b"ok"))
    ram.write(0x2000, memoryview(b"view"))
    assert ram.read(0x1000, 5) == b"hello"
    assert ram.read(4 * MIB - 2, 2) == b"ok"
    assert ram.read(0x2000, 4) == b"view"
    assert ram.read(0x3000, 0) == b""


@pytest.mark.parametrize(
    ("gpa", "n"),
    [(4 * MIB, 1), (4 * MIB - 1, 2), (-1, 1), (0, -1), (LOW_RAM_LIMIT, 1), (HIGH_RAM_START, 1), (1 << 64, 1)],
)
def test_outside_ram_is_a_device_memory_error(ram, gpa, n):
    with pytest.raises(DeviceMemoryError):
        ram.read(gpa, n)
    if n >= 0:
        with pytest.raises(DeviceMemoryError):
            ram.write(gpa, bytes(n))


def test_large_ram_is_split_around_the_mmio_hole():
    mem = GuestMemory(LOW_RAM_LIMIT + 64 * MIB)  # reserved, not touched: the mapping is lazy
    try:
        assert [(r.gpa, r.size, r.offset) for r in mem.ranges] == [
            (0, LOW_RAM_LIMIT, 0),
            (HIGH_RAM_START, 64 * MIB, LOW_RAM_LIMIT),
        ]
        assert mem.low_end == LOW_RAM_LIMIT
        mem.write(HIGH_RAM_START, b"high")
        assert mem.read(HIGH_RAM_START, 4) == b"high"
        assert mem.read(LOW_RAM_LIMIT - 4, 4) == bytes(4)
        with pytest.raises(DeviceMemoryError):  # a range may not span the hole
            mem.read(LOW_RAM_LIMIT - 2, 4)
    finally:
        mem.close()


@pytest.mark.parametrize("size", [0, -MIB, MIB + 1])
def test_sizes_are_whole_mib(size):
    with pytest.raises(UsageError):
        GuestMemory(size)


def test_close_is_idempotent():
    mem = GuestMemory(MIB)
    mem.close()
    mem.close()
