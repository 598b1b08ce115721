"""virtio-mmio, virtio-blk, virtio-rng and virtio-net driven by a Linux-like driver over RamMemory (no KVM)."""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from isola.devices.bus import RamMemory
from isola.devices.virtio import mmio
from isola.devices.virtio.blk import (
    VIRTIO_BLK_F_DISCARD,
    VIRTIO_BLK_F_FLUSH,
    VIRTIO_BLK_F_RO,
    VIRTIO_BLK_S_IOERR,
    VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
    VirtioBlk,
)
from isola.devices.virtio.device import STATUS_FEATURES_OK, STATUS_NEEDS_RESET, VIRTIO_F_INDIRECT_DESC
from isola.devices.virtio.net import HDR_LEN, VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VirtioNet, parse_mac
from isola.devices.virtio.queue import VIRTQ_DESC_F_NEXT, SplitQueue, VirtqueueError
from isola.devices.virtio.rng import VirtioRng
from isola.errors import ConflictError, NotFoundError, UsageError
from tests.unit.test_devices_support import RAM_SIZE, Driver, DriverQueue

SECTORS = 256  # a 128 KiB image


# -- the transport ---------------------------------------------------------------------------------------


def test_identity_registers() -> None:
    driver = Driver(VirtioRng())
    assert driver.read_reg(mmio.MAGIC_VALUE) == 0x74726976
    assert driver.read_reg(mmio.VERSION_REG) == 2
    assert driver.read_reg(mmio.DEVICE_ID) == 4
    assert driver.read_reg(mmio.CONFIG_GENERATION) == 0
    assert driver.mmio.read(mmio.MAGIC_VALUE, 1) == 0  # registers answer 32-bit accesses only


def test_features_without_version_1_are_refused() -> None:
    driver = Driver(VirtioRng())
    driver.write_reg(mmio.STATUS, 3)
    driver.write_reg(mmio.DRIVER_FEATURES_SEL, 0)
    driver.write_reg(mmio.DRIVER_FEATURES, 0)
    driver.write_reg(mmio.DRIVER_FEATURES_SEL, 1)
    driver.write_reg(mmio.DRIVER_FEATURES, 0)  # no VERSION_1: a legacy driver
    driver.add_status(STATUS_FEATURES_OK)
    assert not driver.read_reg(mmio.STATUS) & STATUS_FEATURES_OK


def test_features_the_device_did_not_offer_are_refused() -> None:
    driver = Driver(VirtioRng())
    driver.write_reg(mmio.STATUS, 3)
    driver.write_reg(mmio.DRIVER_FEATURES_SEL, 1)
    driver.write_reg(mmio.DRIVER_FEATURES, 1)
    driver.write_reg(mmio.DRIVER_FEATURES_SEL, 0)
    driver.write_reg(mmio.DRIVER_FEATURES, 1 << 29)  # EVENT_IDX is not offered
    driver.add_status(STATUS_FEATURES_OK)
    assert not driver.read_reg(mmio.STATUS) & STATUS_FEATURES_OK


def test_queue_beyond_the_last_reads_num_max_zero() -> None:
    driver = Driver(VirtioRng())
    driver.probe()
    driver.write_reg(mmio.QUEUE_SEL, 1)
    assert driver.read_reg(mmio.QUEUE_NUM_MAX) == 0
    driver.write_reg(mmio.QUEUE_READY, 1)  # ignored, not a crash
    assert driver.read_reg(mmio.QUEUE_READY) == 0


def test_reset_lowers_the_line_and_forgets_queues() -> None:
    driver = Driver(VirtioRng())
    driver.probe()
    queue = driver.queues[0]
    queue.add([], [16])
    queue.kick()
    assert driver.irq.high()
    driver.write_reg(mmio.STATUS, 0)
    assert not driver.irq.high()
    assert driver.read_reg(mmio.STATUS) == 0
    assert driver.read_reg(mmio.INTERRUPT_STATUS) == 0
    driver.write_reg(mmio.QUEUE_SEL, 0)
    assert driver.read_reg(mmio.QUEUE_READY) == 0


def test_kicks_before_driver_ok_wait_for_it() -> None:
    driver = Driver(VirtioRng())
    driver.probe()
    driver.write_reg(mmio.STATUS, driver.read_reg(mmio.STATUS) & ~4)  # not yet live (as between setup steps)
    queue = driver.queues[0]
    queue.add([], [8])
    queue.kick()
    assert queue.used() == []
    driver.add_status(4)  # DRIVER_OK: what was offered is processed
    assert len(queue.used()) == 1


def test_queue_layout_outside_ram_needs_reset() -> None:
    driver = Driver(VirtioRng(), mem=RamMemory(1 << 20))
    driver.write_reg(mmio.STATUS, 3)
    driver.write_reg(mmio.QUEUE_SEL, 0)
    driver.write_reg(mmio.QUEUE_NUM, 256)
    driver.write_reg(mmio.QUEUE_DESC_LOW, 0)
    driver.write_reg(mmio.QUEUE_DESC_HIGH, 1)  # 4 GiB: beyond RAM
    driver.write_reg(mmio.QUEUE_READY, 1)
    assert driver.read_reg(mmio.QUEUE_READY) == 0
    assert driver.read_reg(mmio.STATUS) & STATUS_NEEDS_RESET
    assert driver.read_reg(mmio.INTERRUPT_STATUS) == mmio.INTERRUPT_CONFIG_CHANGE
    assert driver.irq.high()
    assert driver.mmio.error is not None and "queue layout" in driver.mmio.error


def test_interrupt_ack_lowers_the_line() -> None:
    driver = Driver(VirtioRng())
    driver.probe()
    queue = driver.queues[0]
    queue.add([], [4])
    queue.add([], [4])
    queue.kick()
    assert driver.irq.changes == [True]  # one rising edge for two chains
    assert driver.ack_interrupt() == mmio.INTERRUPT_USED_BUFFER
    assert driver.irq.changes == [True, False]


def test_device_in_error_state_processes_nothing_until_reset() -> None:
    driver = Driver(VirtioRng())
    driver.probe()
    queue = driver.queues[0]
    queue.write_desc(queue.desc, 0, 0x2000, 16, VIRTQ_DESC_F_NEXT, 0)  # 0 -> 0: a loop
    queue.publish(0)
    queue.kick()
    assert driver.mmio.needs_reset
    assert driver.mmio.error is not None and "loop" in driver.mmio.error
    queue.add([], [4])
    queue.kick()
    assert queue.used() == []
    driver.probe()  # the driver resets and starts over
    assert not driver.read_reg(mmio.STATUS) & STATUS_NEEDS_RESET
    queue = driver.queues[-1]
    queue.add([], [4])
    queue.kick()
    assert len(queue.used()) == 1


# -- the split queue on its own ----------------------------------------------------------------------------


def make_queue(size: int = 8, *, indirect: bool = True) -> tuple[RamMemory, SplitQueue]:
    mem = RamMemory(1 << 16)
    return mem, SplitQueue(mem, size, 0x1000, 0x2000, 0x3000, indirect=indirect)


def put_desc(mem: RamMemory, table: int, index: int, addr: int, length: int, flags: int, nxt: int = 0) -> None:
    mem.write(table + 16 * index, struct.pack("<QIHH", addr, length, flags, nxt))


def offer(mem: RamMemory, heads: list[int], size: int = 8, idx: int | None = None) -> None:
    for i, head in enumerate(heads):
        mem.write(0x2000 + 4 + 2 * (i % size), struct.pack("<H", head))
    mem.write(0x2002, struct.pack("<H", len(heads) if idx is None else idx))


@pytest.mark.parametrize(
    ("size", "desc"),
    [(0, 0x1000), (3, 0x1000), (65536, 0x1000), (8, 0x1008), (8, 0xFFF0), (8, 1 << 40)],
    ids=["zero", "not-power-of-two", "too-big", "misaligned", "desc-past-ram", "far-away"],
)
def test_bad_queue_layouts(size: int, desc: int) -> None:
    from isola.devices.bus import DeviceMemoryError

    mem = RamMemory(1 << 16)
    with pytest.raises((VirtqueueError, DeviceMemoryError)):
        SplitQueue(mem, size, desc, 0x2000, 0x3000, indirect=False)


def test_pop_reads_a_mixed_chain_and_push_used_publishes() -> None:
    mem, queue = make_queue()
    put_desc(mem, 0x1000, 5, 0x4000, 16, VIRTQ_DESC_F_NEXT, 2)
    put_desc(mem, 0x1000, 2, 0x5000, 100, VIRTQ_DESC_F_NEXT | 2, 7)
    put_desc(mem, 0x1000, 7, 0x6000, 1, 2)
    offer(mem, [5])
    chain = queue.pop()
    assert chain is not None
    assert (chain.head, chain.readable, chain.writable) == (5, [(0x4000, 16)], [(0x5000, 100), (0x6000, 1)])
    assert queue.pop() is None
    queue.push_used(5, 101)
    assert struct.unpack("<HHII", mem.read(0x3000, 12)) == (0, 1, 5, 101)


@pytest.mark.parametrize(
    "case",
    ["head-out-of-range", "next-out-of-range", "loop", "readable-after-writable", "idx-too-far", "huge-chain"],
)
def test_malformed_chains_are_rejected(case: str) -> None:
    mem, queue = make_queue()
    heads, idx = [0], None
    if case == "head-out-of-range":
        heads = [8]
    elif case == "next-out-of-range":
        put_desc(mem, 0x1000, 0, 0x4000, 4, VIRTQ_DESC_F_NEXT, 8)
    elif case == "loop":
        put_desc(mem, 0x1000, 0, 0x4000, 4, VIRTQ_DESC_F_NEXT, 1)
        put_desc(mem, 0x1000, 1, 0x4000, 4, VIRTQ_DESC_F_NEXT, 0)
    elif case == "readable-after-writable":
        put_desc(mem, 0x1000, 0, 0x4000, 4, VIRTQ_DESC_F_NEXT | 2, 1)
        put_desc(mem, 0x1000, 1, 0x4000, 4, 0)
    elif case == "idx-too-far":
        idx = 9  # nine new heads in an eight-entry ring
    elif case == "huge-chain":
        for i in range(8):  # eight times 16 MiB of the same small RAM: more than the chain cap
            put_desc(mem, 0x1000, i, 0x4000, 16 << 20, VIRTQ_DESC_F_NEXT | 2, i + 1)
    offer(mem, heads, idx=idx)
    with pytest.raises(VirtqueueError):
        queue.pop()


@pytest.mark.parametrize("case", ["not-negotiated", "nested", "with-next", "empty", "ragged", "too-long", "not-head"])
def test_malformed_indirect_tables_are_rejected(case: str) -> None:
    mem, queue = make_queue(indirect=case != "not-negotiated")
    table = 0x8000
    put_desc(mem, table, 0, 0x4000, 4, 0)
    length, flags = 16, 4
    if case == "nested":
        put_desc(mem, table, 0, 0x9000, 16, 4)
    elif case == "with-next":
        flags |= VIRTQ_DESC_F_NEXT
    elif case == "empty":
        length = 0
    elif case == "ragged":
        length = 20
    elif case == "too-long":
        length = 16 * 9
    if case == "not-head":
        put_desc(mem, 0x1000, 0, 0x4000, 4, VIRTQ_DESC_F_NEXT, 1)
        put_desc(mem, 0x1000, 1, table, 16, 4)
    else:
        put_desc(mem, 0x1000, 0, table, length, flags, 1)
    offer(mem, [0])
    with pytest.raises(VirtqueueError):
        queue.pop()


def test_indirect_loop_is_rejected() -> None:
    mem, queue = make_queue()
    put_desc(mem, 0x8000, 0, 0x4000, 4, VIRTQ_DESC_F_NEXT, 1)
    put_desc(mem, 0x8000, 1, 0x4000, 4, VIRTQ_DESC_F_NEXT, 0)
    put_desc(mem, 0x1000, 0, 0x8000, 32, 4)
    offer(mem, [0])
    with pytest.raises(VirtqueueError, match="loop"):
        queue.pop()


def test_scatter_and_gather_cross_buffers() -> None:
    mem, queue = make_queue()
    put_desc(mem, 0x1000, 0, 0x4000, 3, VIRTQ_DESC_F_NEXT, 1)
    put_desc(mem, 0x1000, 1, 0x4100, 5, VIRTQ_DESC_F_NEXT, 2)
    put_desc(mem, 0x1000, 2, 0x5000, 2, VIRTQ_DESC_F_NEXT | 2, 3)
    put_desc(mem, 0x1000, 3, 0x5100, 4, 2)
    mem.write(0x4000, b"abc")
    mem.write(0x4100, b"defgh")
    offer(mem, [0])
    chain = queue.pop()
    assert chain is not None
    assert queue.gather(chain) == b"abcdefgh"
    assert queue.gather(chain, 4) == b"abcd"
    assert queue.scatter(chain, b"XYZW", 1) == 4
    assert mem.read(0x5000, 2) == b"\0X" and mem.read(0x5100, 4) == b"YZW\0"
    assert queue.scatter(chain, b"0123456789") == 6  # room for 6 only


# -- virtio-blk ----------------------------------------------------------------------------------------------


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(SECTORS * 512))
    return path


@pytest.fixture
def blk(image: Path) -> Iterator[tuple[Driver, DriverQueue, VirtioBlk]]:
    device = VirtioBlk(image, serial="isola-disk-1")
    driver = Driver(device)
    driver.probe()
    yield driver, driver.queues[0], device
    device.close()


def blk_request(
    queue: DriverQueue, kind: int, sector: int, data: bytes = b"", read_len: int = 0, *, indirect: bool = False
) -> tuple[int, bytes, int]:
    """One request as Linux builds it (header, data, status in separate buffers): (status, data read, used len)."""
    header = struct.pack("<IIQ", kind, 0, sector)
    readable = [header, data] if data else [header]
    writable = [read_len, 1] if read_len else [1]
    queue.add(readable, writable, indirect=indirect)
    queue.kick()
    [(request, length)] = queue.used()
    status = queue.read(request.writable[-1])[0]
    got = queue.read(request.writable[0]) if read_len else b""
    return status, got, length


def test_blk_config_and_features(blk: tuple[Driver, DriverQueue, VirtioBlk]) -> None:
    driver, _, _ = blk
    assert driver.read_config(0, 4) | driver.read_config(4, 4) << 32 == SECTORS
    assert driver.read_config(12, 4) == 254  # seg_max
    driver.write_reg(mmio.DEVICE_FEATURES_SEL, 0)
    features = driver.read_reg(mmio.DEVICE_FEATURES)
    assert features & VIRTIO_BLK_F_FLUSH and features & VIRTIO_BLK_F_DISCARD and not features & VIRTIO_BLK_F_RO


@pytest.mark.parametrize("indirect", [False, True], ids=["direct", "indirect"])
def test_blk_write_then_read_back(blk: tuple[Driver, DriverQueue, VirtioBlk], image: Path, indirect: bool) -> None:
    driver, queue, _ = blk
    data = os.urandom(4096)
    assert blk_request(queue, VIRTIO_BLK_T_OUT, 8, data, indirect=indirect) == (VIRTIO_BLK_S_OK, b"", 1)
    assert image.read_bytes()[8 * 512 : 8 * 512 + 4096] == data
    status, got, length = blk_request(queue, VIRTIO_BLK_T_IN, 8, read_len=4096, indirect=indirect)
    assert (status, got, length) == (VIRTIO_BLK_S_OK, data, 4097)
    assert driver.irq.high()
    assert driver.ack_interrupt() == mmio.INTERRUPT_USED_BUFFER
    assert not driver.irq.high()


def test_blk_request_split_across_odd_buffers(blk: tuple[Driver, DriverQueue, VirtioBlk], image: Path) -> None:
    """The device must not assume Linux's framing: header and data may share and straddle buffers."""
    _, queue, _ = blk
    data = os.urandom(1024)
    stream = struct.pack("<IIQ", VIRTIO_BLK_T_OUT, 0, 3) + data
    queue.add([stream[:5], stream[5:700], stream[700:]], [1])
    queue.kick()
    [(request, _)] = queue.used()
    assert queue.read(request.writable[0]) == bytes([VIRTIO_BLK_S_OK])
    assert image.read_bytes()[3 * 512 : 5 * 512] == data
    queue.add([struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 3)], [100, 924, 1])  # data and status: 1025 bytes
    queue.kick()
    [(request, length)] = queue.used()
    assert length == 1025
    assert queue.read(request.writable[0]) + queue.read(request.writable[1]) == data
    assert queue.read(request.writable[2]) == bytes([VIRTIO_BLK_S_OK])


def test_blk_out_of_range_is_an_io_error(blk: tuple[Driver, DriverQueue, VirtioBlk], image: Path) -> None:
    _, queue, _ = blk
    before = image.read_bytes()
    assert blk_request(queue, VIRTIO_BLK_T_OUT, SECTORS - 1, bytes(1024))[0] == VIRTIO_BLK_S_IOERR
    assert blk_request(queue, VIRTIO_BLK_T_OUT, 1 << 60, bytes(512))[0] == VIRTIO_BLK_S_IOERR
    assert blk_request(queue, VIRTIO_BLK_T_IN, SECTORS, read_len=512)[0] == VIRTIO_BLK_S_IOERR
    assert blk_request(queue, VIRTIO_BLK_T_OUT, 0, bytes(100))[0] == VIRTIO_BLK_S_IOERR  # not whole sectors
    assert blk_request(queue, VIRTIO_BLK_T_IN, SECTORS - 1, read_len=512)[:2] == (VIRTIO_BLK_S_OK, before[-512:])
    assert image.read_bytes() == before


def test_blk_flush_get_id_and_unknown(blk: tuple[Driver, DriverQueue, VirtioBlk]) -> None:
    _, queue, _ = blk
    assert blk_request(queue, VIRTIO_BLK_T_FLUSH, 0)[0] == VIRTIO_BLK_S_OK
    status, ident, length = blk_request(queue, VIRTIO_BLK_T_GET_ID, 0, read_len=20)
    assert (status, ident, length) == (VIRTIO_BLK_S_OK, b"isola-disk-1".ljust(20, b"\0"), 21)
    assert blk_request(queue, 99, 0)[0] == VIRTIO_BLK_S_UNSUPP


def test_blk_discard_and_write_zeroes(blk: tuple[Driver, DriverQueue, VirtioBlk], image: Path) -> None:
    _, queue, _ = blk
    size = image.stat().st_size
    for kind, sector, flags in ((VIRTIO_BLK_T_DISCARD, 16, 0), (VIRTIO_BLK_T_WRITE_ZEROES, 64, 0)):
        segment = struct.pack("<QII", sector, 16, flags)
        assert blk_request(queue, kind, 0, segment)[0] == VIRTIO_BLK_S_OK
        assert image.read_bytes()[sector * 512 : (sector + 16) * 512] == bytes(16 * 512)
    unmap = struct.pack("<QII", 96, 8, 1)
    assert blk_request(queue, VIRTIO_BLK_T_WRITE_ZEROES, 0, unmap)[0] == VIRTIO_BLK_S_OK
    assert image.read_bytes()[96 * 512 : 104 * 512] == bytes(8 * 512)
    assert blk_request(queue, VIRTIO_BLK_T_DISCARD, 0, unmap)[0] == VIRTIO_BLK_S_UNSUPP  # unmap flag on discard
    past_end = struct.pack("<QII", SECTORS - 4, 8, 0)
    assert blk_request(queue, VIRTIO_BLK_T_DISCARD, 0, past_end)[0] == VIRTIO_BLK_S_IOERR
    assert image.stat().st_size == size


def test_blk_read_only(image: Path) -> None:
    before = image.read_bytes()
    device = VirtioBlk(image, read_only=True)
    try:
        driver = Driver(device)
        features = driver.probe()
        assert features & VIRTIO_BLK_F_RO and not features & VIRTIO_BLK_F_DISCARD
        queue = driver.queues[0]
        assert blk_request(queue, VIRTIO_BLK_T_OUT, 0, bytes(512))[0] == VIRTIO_BLK_S_IOERR
        segment = struct.pack("<QII", 0, 8, 0)
        assert blk_request(queue, VIRTIO_BLK_T_WRITE_ZEROES, 0, segment)[0] == VIRTIO_BLK_S_IOERR
        assert blk_request(queue, VIRTIO_BLK_T_IN, 0, read_len=512)[:2] == (VIRTIO_BLK_S_OK, before[:512])
        assert blk_request(queue, VIRTIO_BLK_T_FLUSH, 0)[0] == VIRTIO_BLK_S_OK
    finally:
        device.close()
    assert image.read_bytes() == before


def test_blk_request_without_status_byte_needs_reset(blk: tuple[Driver, DriverQueue, VirtioBlk]) -> None:
    driver, queue, _ = blk
    queue.add([struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0)], [])
    queue.kick()
    assert driver.mmio.needs_reset


def test_blk_write_from_outside_ram_leaves_the_image_alone(
    blk: tuple[Driver, DriverQueue, VirtioBlk], image: Path
) -> None:
    driver, queue, _ = blk
    before = image.read_bytes()
    head = queue.add([struct.pack("<IIQ", VIRTIO_BLK_T_OUT, 0, 0), bytes(512)], [1])
    assert head == 0  # a fresh queue: the data buffer is descriptor 1, the status 2
    queue.write_desc(queue.desc, 1, driver.mem.size - 256, 512, VIRTQ_DESC_F_NEXT, 2)  # straddles the end of RAM
    queue.kick()
    assert driver.mmio.needs_reset
    assert image.read_bytes() == before


def test_blk_open_errors(tmp_path: Path, image: Path) -> None:
    with pytest.raises(NotFoundError):
        VirtioBlk(tmp_path / "missing.img")
    with pytest.raises(UsageError):
        VirtioBlk(tmp_path)
    with pytest.raises(UsageError):
        VirtioBlk(image, serial="x" * 21)
    first = VirtioBlk(image)
    try:
        with pytest.raises(ConflictError):
            VirtioBlk(image)
        with pytest.raises(ConflictError):
            VirtioBlk(image, read_only=True)
    finally:
        first.close()
    readers = [VirtioBlk(image, read_only=True), VirtioBlk(image, read_only=True)]  # readers share
    for reader in readers:
        reader.close()


# -- virtio-rng ------------------------------------------------------------------------------------------------


def test_rng_fills_buffers() -> None:
    driver = Driver(VirtioRng())
    driver.probe()
    queue = driver.queues[0]
    queue.add([], [64, 64])
    queue.kick()
    [(request, length)] = queue.used()
    assert length == 128
    data = queue.read(request.writable[0]) + queue.read(request.writable[1])
    assert b"\xee" * 8 not in data  # the poison is gone
    assert len(set(data)) > 32


# -- virtio-net over a datagram socketpair standing in for the tap -------------------------------------------


@pytest.fixture
def net() -> Iterator[tuple[Driver, socket.socket, VirtioNet]]:
    guest_side, host_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    device = VirtioNet(guest_side.fileno(), parse_mac("52:54:00:12:34:56"))
    driver = Driver(device)
    driver.probe()
    yield driver, host_side, device
    guest_side.close()
    host_side.close()


def vnet_header(flags: int = 0, gso_type: int = 0) -> bytes:
    return struct.pack("<BBHHHHH", flags, gso_type, 0, 0, 0, 0, 0)


def test_net_config(net: tuple[Driver, socket.socket, VirtioNet]) -> None:
    driver, _, _ = net
    assert bytes(driver.read_config(i, 1) for i in range(6)) == bytes.fromhex("525400123456")
    assert driver.read_config(6, 2) == 1  # link up
    driver.write_reg(mmio.DEVICE_FEATURES_SEL, 0)
    features = driver.read_reg(mmio.DEVICE_FEATURES)
    assert features & VIRTIO_NET_F_MAC and features & VIRTIO_NET_F_STATUS


def test_net_transmit(net: tuple[Driver, socket.socket, VirtioNet]) -> None:
    driver, host, device = net
    tx = driver.queues[VirtioNet.TX_QUEUE]
    frame = bytes.fromhex("ffffffffffff525400123456") + b"\x08\x06" + os.urandom(46)
    tx.add([vnet_header(), frame[:20], frame[20:]], [])
    tx.kick()
    assert host.recv(4096) == vnet_header() + frame
    assert [length for _, length in tx.used()] == [0]
    assert (device.tx_frames, device.tx_dropped) == (1, 0)
    assert driver.irq.high()


def test_net_transmit_of_a_header_only_is_dropped(net: tuple[Driver, socket.socket, VirtioNet]) -> None:
    driver, host, device = net
    tx = driver.queues[VirtioNet.TX_QUEUE]
    tx.add([vnet_header()], [])
    tx.kick()
    assert len(tx.used()) == 1
    assert device.tx_dropped == 1
    host.setblocking(False)
    with pytest.raises(BlockingIOError):
        host.recv(4096)


def test_net_receive(net: tuple[Driver, socket.socket, VirtioNet]) -> None:
    driver, host, device = net
    rx = driver.queues[VirtioNet.RX_QUEUE]
    frame = os.urandom(60)
    host.send(vnet_header() + frame)
    driver.mmio.kick(VirtioNet.RX_QUEUE)  # readable tap, but no guest buffers yet: the frame waits
    assert rx.used() == [] and not driver.irq.high()
    rx.add([], [HDR_LEN + 1518])
    rx.add([], [HDR_LEN + 1518])
    rx.kick()  # the guest's notify of new buffers delivers the waiting frame
    [(request, length)] = rx.used()
    assert length == HDR_LEN + 60
    got = rx.read(request.writable[0], length)
    assert got[:HDR_LEN] == vnet_header()[:10] + b"\x01\x00"  # num_buffers = 1
    assert got[HDR_LEN:] == frame
    assert driver.irq.high()
    host.send(vnet_header() + frame)
    driver.mmio.kick(VirtioNet.RX_QUEUE)  # what the VMM does when the tap becomes readable
    assert len(rx.used()) == 1
    assert device.rx_frames == 2


def test_net_receive_drops_frames_that_do_not_fit(net: tuple[Driver, socket.socket, VirtioNet]) -> None:
    driver, host, device = net
    rx = driver.queues[VirtioNet.RX_QUEUE]
    rx.add([], [HDR_LEN + 100])
    host.send(vnet_header() + bytes(200))  # too big for the buffer
    host.send(vnet_header() + bytes(50))
    driver.mmio.kick(VirtioNet.RX_QUEUE)
    [(_, length)] = rx.used()
    assert length == HDR_LEN + 50
    assert device.rx_dropped == 1


def test_parse_mac() -> None:
    assert parse_mac("02:00:00:00:00:0a") == bytes([2, 0, 0, 0, 0, 10])
    for bad in ("02:00:00:00:00", "02:00:00:00:00:0g", "0200:00:00:00:00", "2:0:0:0:0:a:"):
        with pytest.raises(UsageError):
            parse_mac(bad)


def test_transport_offers_indirect_descriptors() -> None:
    driver = Driver(VirtioRng())
    assert driver.probe() & VIRTIO_F_INDIRECT_DESC


class ProducingRam(RamMemory):
    """RAM whose 'other vCPU' offers the same chain again each time the device publishes a used element."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.queue: DriverQueue | None = None
        self.head = 0

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        super().write(gpa, data)
        if self.queue is not None and gpa == self.queue.used_ring + 2:
            self.queue.publish(self.head)


def test_a_kick_does_at_most_one_queue_of_work() -> None:
    mem = ProducingRam(RAM_SIZE)
    driver = Driver(VirtioRng(), mem=mem)
    driver.probe(queue_size=16)
    queue = driver.queues[0]
    mem.head = queue.add([], [8])
    mem.queue = queue
    queue.kick()  # returns although the guest never stops offering
    assert struct.unpack("<H", mem.read(queue.used_ring + 2, 2)) == (16,)
    mem.queue = None
    queue.kick()  # the one offered during the last push is done on the next notify
    assert struct.unpack("<H", mem.read(queue.used_ring + 2, 2)) == (17,)


def test_net_receive_stops_at_end_of_file(net: tuple[Driver, socket.socket, VirtioNet]) -> None:
    driver, host, _ = net
    rx = driver.queues[VirtioNet.RX_QUEUE]
    rx.add([], [HDR_LEN + 1518])
    host.shutdown(socket.SHUT_RDWR)  # reads of the guest side now return b"" at once, forever
    driver.mmio.kick(VirtioNet.RX_QUEUE)
    assert rx.used() == [] and not driver.mmio.needs_reset


def test_blk_write_zeroes_without_zero_range_support(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Filesystems without FALLOC_FL_ZERO_RANGE get the zeros written, in chunks, and nothing past the range."""
    from isola.devices.virtio import blk as blk_module
    from isola.host import libc as host_libc

    real = host_libc.fallocate

    def no_zero_range(fd: int, mode: int, offset: int, length: int) -> None:
        if mode & blk_module.FALLOC_FL_ZERO_RANGE:
            raise OSError(errno.EOPNOTSUPP, "not here")
        real(fd, mode, offset, length)

    monkeypatch.setattr(blk_module, "fallocate", no_zero_range)
    path = tmp_path / "big.img"
    before = os.urandom(6 << 20)
    path.write_bytes(before)
    device = VirtioBlk(path)
    try:
        driver = Driver(device)
        driver.probe()
        segment = struct.pack("<QII", 1, (5 << 20) // 512 - 1, 0)  # sectors 1 .. 5 MiB: several chunks
        assert blk_request(driver.queues[0], VIRTIO_BLK_T_WRITE_ZEROES, 0, segment)[0] == VIRTIO_BLK_S_OK
    finally:
        device.close()
    after = path.read_bytes()
    assert after[:512] == before[:512]
    assert after[512 : 5 << 20] == bytes((5 << 20) - 512)
    assert after[5 << 20 :] == before[5 << 20 :]


@pytest.mark.parametrize("memory", ["GuestMemory", "RamMemory"])
def test_scatter_from_file_reads_into_the_writable_buffers_and_stops_at_the_end_of_the_file(
    tmp_path: Path, memory: str
) -> None:
    """GuestMemory offers views, so the file is read with one preadv straight into guest RAM; RamMemory does not,
    so pread + scatter. Both fill the same bytes, and both report a short read at the end of the file."""
    from isola.devices.bus import DeviceMemoryError
    from isola.devices.virtio.queue import Chain
    from isola.vmm.memory import GuestMemory

    mem = GuestMemory(1 << 20) if memory == "GuestMemory" else RamMemory(1 << 20)
    queue = SplitQueue(mem, 8, 0x1000, 0x2000, 0x3000, indirect=True)
    data = os.urandom(10_000)
    path = tmp_path / "disk.img"
    path.write_bytes(data)
    chain = Chain(0, writable=[(0x10000, 4096), (0x20000, 100), (0x30000, 8192)])
    fd = os.open(path, os.O_RDONLY)
    try:
        assert queue.scatter_from_file(chain, fd, 512, 6000) == 6000
        assert mem.read(0x10000, 4096) + mem.read(0x20000, 100) + mem.read(0x30000, 1804) == data[512:6512]
        assert mem.read(0x30000 + 1804, 4) == bytes(4)  # nothing past `length`
        assert queue.scatter_from_file(chain, fd, 8192, 6000) == 10_000 - 8192
        with pytest.raises(DeviceMemoryError):
            queue.scatter_from_file(Chain(0, writable=[(0xFFFF0, 4096)]), fd, 0, 4096)
    finally:
        os.close(fd)
        if isinstance(mem, GuestMemory):
            mem.close()  # fails if a view were left exported
