"""Hostile guests, generated: well-formed requests as Linux builds them, then corrupted by random mutations of
descriptors (address, length, flags, next), ring indices, heads and request headers; and random register writes.

The invariants, for every virtio device:
- nothing escapes `kick()` or a register access: a guest mistake ends in NEEDS_RESET or a per-request error;
- the device writes guest memory only inside buffers a descriptor marked device-writable, or the used ring;
- without mutations every request completes (the generator does reach the devices' real work);
- virtio-blk never changes the host outside its image: the image keeps its size, a file beside it is untouched;
- a device the guest broke works again after the driver resets it and sets it up anew.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isola.devices.bus import DeviceMemoryError, RamMemory
from isola.devices.virtio import mmio
from isola.devices.virtio.blk import VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VirtioBlk
from isola.devices.virtio.device import VirtioDevice
from isola.devices.virtio.net import VirtioNet
from isola.devices.virtio.queue import VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_WRITE
from isola.devices.virtio.rng import VirtioRng
from tests.unit.test_devices_support import Driver, DriverQueue

RAM_SIZE = 256 << 10
DATA = 0x30000  # random bytes from here to the end of RAM; requests' buffers are allocated below
QUEUE_SIZE = 16
IMAGE_SECTORS = 64

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class RecordingRam(RamMemory):
    """Guest RAM that remembers every range a device wrote."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.writes: list[tuple[int, int]] = []

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        super().write(gpa, data)
        self.writes.append((gpa, len(data)))


# -- requests, as a driver would build them --------------------------------------------------------------------

SECTOR = st.one_of(
    st.sampled_from([0, IMAGE_SECTORS - 2, IMAGE_SECTORS - 1, IMAGE_SECTORS]),
    st.integers(0, IMAGE_SECTORS + 2),
    st.sampled_from([1 << 55, (1 << 64) - 1]),
    st.integers(0, (1 << 64) - 1),
)
KIND = st.one_of(st.sampled_from([0, 1, 4, 8, 11, 13]), st.sampled_from([0, 1, 99]), st.integers(0, 0xFFFFFFFF))
SIZE = st.one_of(st.sampled_from([512, 1024]), st.sampled_from([0, 1, 16, 20, 511, 4096]), st.integers(0, 4096))


@dataclass
class Spec:
    """One chain: a 16-byte header (a virtio-blk request header; bytes of a frame to the others), more readable
    buffers, writable buffers and a final 1-byte one (blk's status), directly or through an indirect table."""

    kind: int
    sector: int
    readable: list[int]
    writable: list[int]
    indirect: bool


SPEC = st.builds(
    Spec,
    kind=KIND,
    sector=SECTOR,
    readable=st.lists(SIZE, max_size=2),
    writable=st.lists(SIZE, max_size=2),
    indirect=st.booleans(),
)

# -- corruption ------------------------------------------------------------------------------------------------

ADDRESS = st.one_of(
    st.tuples(st.just("data"), st.integers(0, RAM_SIZE - DATA)),
    st.tuples(st.just("ring"), st.integers(0, 0x200)),
    st.tuples(st.just("end"), st.integers(-64, 64)),
    st.tuples(st.just("wild"), st.integers(0, (1 << 64) - 1)),
)
LENGTH = st.one_of(
    st.integers(0, 40),
    st.sampled_from([15, 16, 17, 512, 513, 0x10000, 0xFFFFFFF0, 0xFFFFFFFF]),
    st.integers(0, 0xFFFFFFFF),
)
FLAGS = st.one_of(st.integers(0, 7), st.integers(0, 0xFFFF))
INDEX = st.one_of(st.integers(0, QUEUE_SIZE + 2), st.integers(0, 0xFFFF))
MUTATION = st.one_of(
    st.tuples(st.just("addr"), st.integers(0, 99), ADDRESS),
    st.tuples(st.just("len"), st.integers(0, 99), LENGTH),
    st.tuples(st.just("flags"), st.integers(0, 99), FLAGS),
    st.tuples(st.just("next"), st.integers(0, 99), INDEX),
    st.tuples(st.just("avail_idx"), st.integers(0, 99), INDEX),
    st.tuples(st.just("head"), st.integers(0, 99), INDEX),
)


@dataclass
class Scenario:
    seed: int
    chains: list[list[Spec]]  # per queue
    mutations: list[tuple[str, int, object]]
    kicks: list[int]  # after one notify of each queue


SCENARIO = st.builds(
    Scenario,
    seed=st.integers(0, 1 << 32),
    chains=st.lists(st.lists(SPEC, max_size=4), min_size=2, max_size=2),
    mutations=st.lists(MUTATION, max_size=3),
    kicks=st.lists(st.integers(0, 2), max_size=3),
)


def resolve(queue: DriverQueue, where: tuple[str, int]) -> int:
    kind, value = where
    if kind == "data":
        return DATA + value
    if kind == "ring":
        return [queue.desc, queue.avail, queue.used_ring][value % 3] + value // 3
    if kind == "end":
        return max(RAM_SIZE + value, 0)
    return value


def offer(driver: Driver, mem: RecordingRam, scenario: Scenario) -> list[int]:
    """Lay out the scenario's chains on every queue, then corrupt them. Returns how many chains each queue got."""
    rng = random.Random(scenario.seed)
    mem.write(DATA, rng.randbytes(RAM_SIZE - DATA))
    descriptors: list[tuple[DriverQueue, int]] = []  # (queue, address of a descriptor) that mutations pick from
    offered = [0] * len(driver.queues)
    for queue, specs in zip(driver.queues, scenario.chains, strict=False):
        for spec in specs:
            count = 2 + len(spec.readable) + len(spec.writable)
            if len(queue.free) < (1 if spec.indirect else count):
                continue  # the ring is full
            header = struct.pack("<IIQ", spec.kind, 0, spec.sector)
            readable = [header, *(rng.randbytes(n) for n in spec.readable)]
            head = queue.add(readable, [*spec.writable, 1], indirect=spec.indirect)
            table = queue.inflight[head].table
            entries = [queue.desc + 16 * i for i in queue.chain_ids(head)]
            if table is not None:
                entries += [table + 16 * i for i in range(count)]
            descriptors += [(queue, at) for at in entries]
            offered[queue.index] += 1
    for kind, pick, value in scenario.mutations:
        queue = driver.queues[pick % len(driver.queues)]
        if kind == "avail_idx":
            assert isinstance(value, int)
            mem.write(queue.avail + 2, struct.pack("<H", value))
        elif kind == "head":
            assert isinstance(value, int)
            mem.write(queue.avail + 4 + 2 * (pick % queue.size), struct.pack("<H", value))
        elif descriptors:
            queue, at = descriptors[pick % len(descriptors)]
            if kind == "addr":
                assert isinstance(value, tuple)
                mem.write(at, struct.pack("<Q", resolve(queue, value)))
            else:
                assert isinstance(value, int)
                offset, fmt = {"len": (8, "<I"), "flags": (12, "<H"), "next": (14, "<H")}[kind]
                mem.write(at + offset, struct.pack(fmt, value))
    return offered


def writable_ranges(driver: Driver, mem: RamMemory) -> list[tuple[int, int]]:
    """Where a device may write: every used ring, and every device-writable buffer any descriptor describes,
    in the queues' tables or in a table an indirect descriptor points at (read here independently of the device)."""

    def descriptors(table: int, count: int) -> Iterator[tuple[int, int, int]]:
        for i in range(count):
            try:
                addr, length, flags, _ = struct.unpack("<QIHH", mem.read(table + 16 * i, 16))
            except DeviceMemoryError:
                return
            yield addr, length, flags

    ranges: list[tuple[int, int]] = []
    for queue in driver.queues:
        ranges.append((queue.used_ring, 6 + 8 * queue.size))
        main = list(descriptors(queue.desc, queue.size))
        indirect = [(addr, length // 16) for addr, length, flags in main if flags & VIRTQ_DESC_F_INDIRECT]
        for addr, count in [(queue.desc, queue.size), *indirect]:
            ranges += [
                (a, n) for a, n, flags in descriptors(addr, min(count, queue.size)) if flags & VIRTQ_DESC_F_WRITE
            ]
    return ranges


def check_writes(driver: Driver, mem: RecordingRam, allowed: list[tuple[int, int]]) -> None:
    """Every device write lies inside an allowed range, until the device overwrote the rings it reads."""
    rings = [(q.desc, 16 * q.size) for q in driver.queues] + [(q.avail, 6 + 2 * q.size) for q in driver.queues]
    for gpa, n in mem.writes:
        assert any(lo <= gpa and gpa + n <= lo + length for lo, length in allowed), f"write {gpa:#x}+{n}"
        if any(gpa < lo + length and lo < gpa + n for lo, length in rings):
            return  # the guest made the device overwrite its own rings: later writes follow chains not seen here


def attack(driver: Driver, mem: RecordingRam, scenario: Scenario, on_kick: Callable[[], None] | None = None) -> None:
    offered = offer(driver, mem, scenario)
    allowed = writable_ranges(driver, mem)
    mem.writes.clear()
    for index in [*range(len(driver.queues)), *scenario.kicks]:
        if on_kick is not None:
            on_kick()
        driver.mmio.kick(index)  # index 2 is past every device's queues: ignored
    check_writes(driver, mem, allowed)
    if not scenario.mutations:
        assert not driver.mmio.needs_reset, driver.mmio.error
        for queue in driver.queues:
            used = queue.used()
            for request, length in used:
                assert length <= sum(buf.length for buf in request.writable)
            if isinstance(driver.mmio.device, VirtioNet) and queue.index == VirtioNet.RX_QUEUE:
                assert len(used) <= offered[queue.index]  # only as many as frames arrived
            else:
                assert len(used) == offered[queue.index]


def fresh_driver(device: VirtioDevice) -> tuple[Driver, RecordingRam]:
    mem = RecordingRam(RAM_SIZE)
    driver = Driver(device, mem=mem)
    driver.probe(queue_size=QUEUE_SIZE)
    return driver, mem


def recover(driver: Driver) -> None:
    """What a guest driver does after NEEDS_RESET: reset and set the device up again on new rings."""
    driver.queues.clear()
    driver.alloc.next = DATA  # fresh memory for the new rings and buffers
    driver.probe(queue_size=QUEUE_SIZE)
    assert not driver.mmio.needs_reset


# -- the devices under attack ----------------------------------------------------------------------------------


@contextmanager
def disk(*, read_only: bool = False) -> Iterator[tuple[Path, VirtioBlk]]:
    with tempfile.TemporaryDirectory() as tmp:
        image, neighbour = Path(tmp) / "disk.img", Path(tmp) / "neighbour.img"
        content = os.urandom(IMAGE_SECTORS * 512)
        image.write_bytes(content)
        neighbour.write_bytes(b"sentinel" * 512)
        device = VirtioBlk(image, read_only=read_only)
        try:
            yield image, device
        finally:
            device.close()
        assert image.stat().st_size == IMAGE_SECTORS * 512
        if read_only:
            assert image.read_bytes() == content
        assert neighbour.read_bytes() == b"sentinel" * 512
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["disk.img", "neighbour.img"]


@FUZZ
@given(SCENARIO, st.booleans())
def test_fuzz_blk(scenario: Scenario, read_only: bool) -> None:
    with disk(read_only=read_only) as (image, device):
        driver, mem = fresh_driver(device)
        attack(driver, mem, scenario)
        recover(driver)
        queue = driver.queues[0]
        queue.add([struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 2)], [512, 1])
        queue.kick()
        [(request, _)] = queue.used()
        assert queue.read(request.writable[1]) == bytes([VIRTIO_BLK_S_OK])
        assert queue.read(request.writable[0]) == image.read_bytes()[1024:1536]


@FUZZ
@given(SCENARIO)
def test_fuzz_rng(scenario: Scenario) -> None:
    driver, mem = fresh_driver(VirtioRng())
    attack(driver, mem, scenario)
    recover(driver)
    queue = driver.queues[0]
    queue.add([], [32])
    queue.kick()
    assert [length for _, length in queue.used()] == [32]


@FUZZ
@given(SCENARIO, st.lists(st.integers(0, 2000), max_size=4))
def test_fuzz_net(scenario: Scenario, incoming: list[int]) -> None:
    guest_side, host_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with guest_side, host_side:
        driver, mem = fresh_driver(VirtioNet(guest_side.fileno(), b"\x02\0\0\0\0\x01"))
        frames = iter(incoming)

        def arrive() -> None:
            size = next(frames, None)
            if size is not None:
                host_side.send(os.urandom(size))

        attack(driver, mem, scenario, on_kick=arrive)
        recover(driver)
        host_side.setblocking(False)
        while True:
            try:
                host_side.recv(1 << 17)
            except BlockingIOError:
                break
        tx = driver.queues[VirtioNet.TX_QUEUE]
        tx.add([bytes(12) + b"frame"], [])
        tx.kick()
        assert host_side.recv(100) == bytes(12) + b"frame"


# -- the transport's registers ---------------------------------------------------------------------------------

REGISTER = st.one_of(
    st.sampled_from(
        [
            mmio.DEVICE_FEATURES_SEL,
            mmio.DRIVER_FEATURES,
            mmio.DRIVER_FEATURES_SEL,
            mmio.QUEUE_SEL,
            mmio.QUEUE_NUM,
            mmio.QUEUE_READY,
            mmio.QUEUE_NOTIFY,
            mmio.INTERRUPT_ACK,
            mmio.STATUS,
            mmio.QUEUE_DESC_LOW,
            mmio.QUEUE_DESC_HIGH,
            mmio.QUEUE_DRIVER_LOW,
            mmio.QUEUE_DRIVER_HIGH,
            mmio.QUEUE_DEVICE_LOW,
            mmio.QUEUE_DEVICE_HIGH,
        ]
    ),
    st.integers(0, mmio.MMIO_WINDOW_SIZE - 1),
)
VALUE = st.one_of(st.integers(0, 16), st.sampled_from([0x100, 0x1000, DATA, 0xFFFFFFFF]), st.integers(0, 0xFFFFFFFF))
ACCESS = st.tuples(st.booleans(), REGISTER, st.sampled_from([1, 2, 4, 4, 4, 8]), VALUE)


@FUZZ
@given(st.integers(0, 2), st.lists(ACCESS, max_size=60), st.integers(0, 1 << 32))
def test_fuzz_registers(which: int, accesses: list[tuple[bool, int, int, int]], seed: int) -> None:
    with disk() as (_, blk):
        guest_side, host_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with guest_side, host_side:
            device = [blk, VirtioRng(), VirtioNet(guest_side.fileno(), b"\x02\0\0\0\0\x01")][which]
            mem = RecordingRam(RAM_SIZE)
            mem.write(0, random.Random(seed).randbytes(RAM_SIZE))
            driver = Driver(device, mem=mem)
            for is_write, offset, size, value in accesses:
                if is_write:
                    driver.mmio.write(offset, size, value & ((1 << (8 * size)) - 1))
                else:
                    assert 0 <= driver.mmio.read(offset, size) < 1 << (8 * size)
            assert driver.irq.high() == (driver.read_reg(mmio.INTERRUPT_STATUS) != 0)
            recover(driver)
