"""A virtio driver for tests: lays out split rings in RamMemory and programs virtio-mmio as Linux does.

`Driver.probe()` follows drivers/virtio/virtio_mmio.c and virtio.c: check magic and version, reset, ACKNOWLEDGE,
DRIVER, read the device features, write the driver's, FEATURES_OK (and read it back), set up each queue
(QueueSel, QueueReady must read 0, QueueNumMax, QueueNum, the three addresses, QueueReady=1), DRIVER_OK.
`DriverQueue.add()` fills descriptors (optionally through an indirect table) and publishes the head in the
available ring; `kick()` writes QueueNotify; `used()` collects what the device returned.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from isola.devices.bus import RamMemory
from isola.devices.virtio import mmio
from isola.devices.virtio.device import (
    STATUS_ACKNOWLEDGE,
    STATUS_DRIVER,
    STATUS_DRIVER_OK,
    STATUS_FEATURES_OK,
    VIRTIO_F_INDIRECT_DESC,
    VIRTIO_F_VERSION_1,
    VirtioDevice,
)
from isola.devices.virtio.queue import VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE

RAM_SIZE = 4 << 20


class FakeIrq:
    """An IrqLine that remembers every level change."""

    def __init__(self) -> None:
        self.changes: list[bool] = []

    def high(self) -> bool:
        return bool(self.changes) and self.changes[-1]

    def set_level(self, high: bool) -> None:
        assert high != self.high(), "the device repeated a level it had already set"
        self.changes.append(high)


class Allocator:
    """A bump allocator over guest RAM (the driver's kmalloc), starting past page 0."""

    def __init__(self, start: int = 0x1000) -> None:
        self.next = start

    def alloc(self, size: int, align: int = 16) -> int:
        addr = -(-self.next // align) * align
        self.next = addr + max(size, 1)
        return addr


@dataclass
class Buffer:
    addr: int
    length: int


@dataclass
class Request:
    head: int
    readable: list[Buffer]
    writable: list[Buffer]
    table: int | None = None  # the indirect descriptor table, when the chain has one


@dataclass
class DriverQueue:
    driver: Driver
    index: int
    size: int
    desc: int
    avail: int
    used_ring: int
    avail_idx: int = 0
    last_used: int = 0
    free: list[int] = field(default_factory=list)
    inflight: dict[int, Request] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.free = list(range(self.size))

    @property
    def mem(self) -> RamMemory:
        return self.driver.mem

    def write_desc(self, table: int, index: int, addr: int, length: int, flags: int, nxt: int) -> None:
        self.mem.write(table + 16 * index, struct.pack("<QIHH", addr, length, flags, nxt))

    def add(self, readable: list[bytes], writable: list[int], *, indirect: bool = False) -> int:
        """Offer one chain: buffers holding `readable`, then empty buffers of the `writable` lengths."""
        bufs_r = [Buffer(self.driver.alloc.alloc(len(data)), len(data)) for data in readable]
        for buf, data in zip(bufs_r, readable, strict=True):
            self.mem.write(buf.addr, data)
        bufs_w = [Buffer(self.driver.alloc.alloc(n), n) for n in writable]
        for buf in bufs_w:
            self.mem.write(buf.addr, b"\xee" * buf.length)  # poison: the device must overwrite what it reports
        entries = [(b, 0) for b in bufs_r] + [(b, VIRTQ_DESC_F_WRITE) for b in bufs_w]
        table = None
        if indirect:
            table = self.driver.alloc.alloc(16 * len(entries))
            for i, (buf, flags) in enumerate(entries):
                last = i == len(entries) - 1
                self.write_desc(table, i, buf.addr, buf.length, flags | (0 if last else VIRTQ_DESC_F_NEXT), i + 1)
            head = self.free.pop(0)
            self.write_desc(self.desc, head, table, 16 * len(entries), VIRTQ_DESC_F_INDIRECT, 0)
        else:
            ids = [self.free.pop(0) for _ in entries]
            for i, (buf, flags) in enumerate(entries):
                last = i == len(entries) - 1
                nxt = 0 if last else ids[i + 1]
                self.write_desc(
                    self.desc, ids[i], buf.addr, buf.length, flags | (0 if last else VIRTQ_DESC_F_NEXT), nxt
                )
            head = ids[0]
        self.inflight[head] = Request(head, bufs_r, bufs_w, table)
        self.publish(head)
        return head

    def publish(self, head: int) -> None:
        """Put `head` in the available ring, then advance its index (the order Linux's barriers enforce)."""
        self.mem.write(self.avail + 4 + 2 * (self.avail_idx % self.size), struct.pack("<H", head))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.mem.write(self.avail + 2, struct.pack("<H", self.avail_idx))

    def kick(self) -> None:
        self.driver.write_reg(mmio.QUEUE_NOTIFY, self.index)

    def used(self) -> list[tuple[Request, int]]:
        """Chains the device returned since the last call, with the byte count it reported; frees them."""
        (idx,) = struct.unpack("<H", self.mem.read(self.used_ring + 2, 2))
        done = []
        while self.last_used != idx:
            slot = self.last_used % self.size
            head, length = struct.unpack("<II", self.mem.read(self.used_ring + 4 + 8 * slot, 8))
            request = self.inflight.pop(head)
            done.append((request, length))
            self.free.extend(self.chain_ids(head))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return done

    def chain_ids(self, head: int) -> list[int]:
        ids, index = [head], head
        while True:
            _, _, flags, nxt = struct.unpack("<QIHH", self.mem.read(self.desc + 16 * index, 16))
            if not flags & VIRTQ_DESC_F_NEXT:
                return ids
            ids.append(nxt)
            index = nxt

    def read(self, buf: Buffer, n: int | None = None) -> bytes:
        return self.mem.read(buf.addr, buf.length if n is None else n)


class Driver:
    """One virtio-mmio device with its own guest RAM, probed the way Linux probes it."""

    def __init__(self, device: VirtioDevice, *, mem: RamMemory | None = None) -> None:
        self.mem = RamMemory(RAM_SIZE) if mem is None else mem
        self.irq = FakeIrq()
        self.mmio = mmio.VirtioMmio(device, self.mem, self.irq)
        self.alloc = Allocator()
        self.queues: list[DriverQueue] = []

    def read_reg(self, offset: int) -> int:
        return self.mmio.read(offset, 4)

    def write_reg(self, offset: int, value: int) -> None:
        self.mmio.write(offset, 4, value)

    def read_config(self, offset: int, size: int) -> int:
        return self.mmio.read(mmio.CONFIG + offset, size)

    def add_status(self, bits: int) -> None:
        self.write_reg(mmio.STATUS, self.read_reg(mmio.STATUS) | bits)

    def probe(self, *, features: int | None = None, queue_size: int | None = None) -> int:
        """Bring the device up; `features` limits what the driver accepts. Returns the negotiated features."""
        assert self.read_reg(mmio.MAGIC_VALUE) == 0x74726976
        assert self.read_reg(mmio.VERSION_REG) == 2
        assert self.read_reg(mmio.DEVICE_ID) != 0
        self.write_reg(mmio.STATUS, 0)
        assert self.read_reg(mmio.STATUS) == 0
        self.add_status(STATUS_ACKNOWLEDGE)
        self.add_status(STATUS_DRIVER)
        offered = 0
        for sel in (1, 0):
            self.write_reg(mmio.DEVICE_FEATURES_SEL, sel)
            offered |= self.read_reg(mmio.DEVICE_FEATURES) << (32 * sel)
        assert offered & VIRTIO_F_VERSION_1
        accepted = offered if features is None else offered & (features | VIRTIO_F_VERSION_1)
        for sel in (1, 0):
            self.write_reg(mmio.DRIVER_FEATURES_SEL, sel)
            self.write_reg(mmio.DRIVER_FEATURES, (accepted >> (32 * sel)) & 0xFFFFFFFF)
        self.add_status(STATUS_FEATURES_OK)
        assert self.read_reg(mmio.STATUS) & STATUS_FEATURES_OK
        index = 0
        while self.setup_queue(index, queue_size):
            index += 1
        self.add_status(STATUS_DRIVER_OK)
        return accepted

    def setup_queue(self, index: int, size: int | None) -> bool:
        self.write_reg(mmio.QUEUE_SEL, index)
        assert self.read_reg(mmio.QUEUE_READY) == 0
        num_max = self.read_reg(mmio.QUEUE_NUM_MAX)
        if num_max == 0:
            return False
        num = min(size or num_max, num_max)
        desc = self.alloc.alloc(16 * num, 16)
        avail = self.alloc.alloc(6 + 2 * num, 2)
        used = self.alloc.alloc(6 + 8 * num, 4)
        for addr, length in ((desc, 16 * num), (avail, 6 + 2 * num), (used, 6 + 8 * num)):
            self.mem.write(addr, bytes(length))  # Linux's ring memory starts zeroed
        self.write_reg(mmio.QUEUE_NUM, num)
        for low, addr in ((mmio.QUEUE_DESC_LOW, desc), (mmio.QUEUE_DRIVER_LOW, avail), (mmio.QUEUE_DEVICE_LOW, used)):
            self.write_reg(low, addr & 0xFFFFFFFF)
            self.write_reg(low + 4, addr >> 32)
        self.write_reg(mmio.QUEUE_READY, 1)
        assert self.read_reg(mmio.QUEUE_READY) == 1
        self.queues.append(DriverQueue(self, index, num, desc, avail, used))
        return True

    def ack_interrupt(self) -> int:
        status = self.read_reg(mmio.INTERRUPT_STATUS)
        self.write_reg(mmio.INTERRUPT_ACK, status)
        return status


def test_driver_brings_a_device_up() -> None:
    from isola.devices.virtio.rng import VirtioRng

    driver = Driver(VirtioRng())
    features = driver.probe()
    assert features & VIRTIO_F_INDIRECT_DESC
    assert driver.read_reg(mmio.STATUS) == STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK
    assert len(driver.queues) == 1
    assert driver.queues[0].size == 256
