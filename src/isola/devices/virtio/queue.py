"""The device side of a split virtqueue (Virtio 1.2 §2.7), written for a guest that may be hostile.

The driver owns three areas in guest-physical memory: the descriptor table (16-byte `{addr, len, flags, next}`),
the available ring (`{flags, idx, ring[size]}`, heads the driver offers) and the used ring (`{flags, idx,
ring[size] of {id, len}}`, heads the device returns). Everything read from them is guest-controlled, so every
index, address and length is checked here before a device sees it. A malformed chain or ring raises
`VirtqueueError`; guest memory outside RAM raises `DeviceMemoryError`. The transport turns both into the
device's error state (NEEDS_RESET), which is the only way a guest can hurt itself.

Notification suppression (VIRTIO_F_EVENT_IDX, VIRTQ_USED_F_NO_NOTIFY) is not offered: it needs a store-load
fence between the device's ring writes and its reads of the driver's event fields, which Python cannot express.
The driver always notifies, and the level-triggered interrupt already coalesces used-buffer interrupts (the
line stays high until the driver acknowledges).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from isola.devices.bus import PhysicalMemory

VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4

MAX_QUEUE_SIZE = 32768  # the split-ring limit
DESC_SIZE = 16
# A cap on the bytes one chain may describe, so a guest cannot make the device allocate without bound by
# listing the same RAM many times. Linux's largest requests (virtio-blk, 4 MiB by default) fit well inside.
MAX_CHAIN_BYTES = 64 << 20

_DESC = struct.Struct("<QIHH")
_U16 = struct.Struct("<H")
_USED_ELEM = struct.Struct("<II")
_IOV_MAX = 1024  # the most buffers one preadv takes (Linux UIO_MAXIOV)


class VirtqueueError(Exception):
    """The driver broke the virtqueue rules (bad index, loop, malformed indirect table, oversized chain)."""


@dataclass
class Chain:
    """One descriptor chain: the head the device returns, and its buffers as (guest-physical address, length)."""

    head: int
    readable: list[tuple[int, int]] = field(default_factory=list)
    writable: list[tuple[int, int]] = field(default_factory=list)

    @property
    def readable_len(self) -> int:
        return sum(n for _, n in self.readable)

    @property
    def writable_len(self) -> int:
        return sum(n for _, n in self.writable)


def ring_sizes(size: int) -> tuple[int, int, int]:
    """Bytes of the descriptor table, available ring and used ring of a queue of `size` (without event fields)."""
    return DESC_SIZE * size, 4 + 2 * size, 4 + 8 * size


class SplitQueue:
    """A queue the driver has made ready: pops chains from the available ring, pushes them to the used ring.

    The constructor checks the driver's layout (size a power of two, aligned areas inside RAM) so a bad layout
    fails when the driver enables the queue, not at the first request.
    """

    def __init__(self, mem: PhysicalMemory, size: int, desc: int, avail: int, used: int, *, indirect: bool) -> None:
        if not 0 < size <= MAX_QUEUE_SIZE or size & (size - 1):
            raise VirtqueueError(f"queue size {size} is not a power of two in 1..{MAX_QUEUE_SIZE}")
        if desc % 16 or avail % 2 or used % 4:
            raise VirtqueueError(f"misaligned queue areas desc={desc:#x} avail={avail:#x} used={used:#x}")
        desc_len, avail_len, used_len = ring_sizes(size)
        for addr, length in ((desc, desc_len), (avail, avail_len), (used, used_len)):
            mem.read(addr, length)  # at most 512 KiB, once: proves the whole area is RAM
        self.mem = mem
        self.size = size
        self.desc = desc
        self.avail = avail
        self.used = used
        self.indirect = indirect
        self.last_avail = 0  # the next available-ring slot the device will read (free-running, mod 2**16)
        self.used_idx = 0  # the device's copy of used.idx
        # How many more chains pop() hands out before the transport's next call. A driver kicks after every
        # chain it adds, so one queue's worth per kick loses nothing; it bounds the work of a kick even when the
        # guest keeps moving the available index (from another vCPU, or by pointing the device's own writes at
        # the ring).
        self.budget = size

    # -- available ring ------------------------------------------------------------------------------------

    def pending(self) -> int:
        """How many heads the driver has offered that the device has not popped."""
        avail_idx: int = _U16.unpack(self.mem.read(self.avail + 2, 2))[0]
        count = (avail_idx - self.last_avail) & 0xFFFF
        if count > self.size:
            raise VirtqueueError(f"available index {avail_idx} is {count} ahead of the device (size {self.size})")
        return count

    def pop(self) -> Chain | None:
        """The next chain the driver offered, or None when the ring is empty or this call's budget is spent."""
        if self.budget == 0 or not self.pending():
            return None
        self.budget -= 1
        slot = self.last_avail % self.size
        (head,) = _U16.unpack(self.mem.read(self.avail + 4 + 2 * slot, 2))
        chain = self._walk(head)
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        return chain

    def unpop(self) -> None:
        """Give the last popped chain back unused: it is popped again, re-read from guest memory, next time."""
        self.last_avail = (self.last_avail - 1) & 0xFFFF
        self.budget += 1

    def _read_desc(self, table: int, index: int) -> tuple[int, int, int, int]:
        addr, length, flags, nxt = _DESC.unpack(self.mem.read(table + DESC_SIZE * index, DESC_SIZE))
        return addr, length, flags, nxt

    def _walk(self, head: int) -> Chain:
        if head >= self.size:
            raise VirtqueueError(f"head {head} is outside the queue (size {self.size})")
        chain = Chain(head)
        table, table_size, index = self.desc, self.size, head
        in_indirect = False
        # Every chain, direct or through an indirect table, holds at most `size` buffers (§2.7.5.3.1), so a
        # loop ends at the count too. The descriptor pointing at an indirect table is not a buffer.
        count = total = 0
        indirect_table = b""  # an indirect table is read whole, once: Linux puts a request's buffers in one
        while True:
            if in_indirect:
                addr, length, flags, nxt = _DESC.unpack_from(indirect_table, DESC_SIZE * index)
            else:
                addr, length, flags, nxt = self._read_desc(table, index)
            if flags & VIRTQ_DESC_F_INDIRECT:
                if in_indirect or count or not self.indirect or flags & VIRTQ_DESC_F_NEXT:
                    raise VirtqueueError(f"descriptor {index}: indirect flag where it is not allowed")
                if length == 0 or length % DESC_SIZE or length // DESC_SIZE > self.size:
                    raise VirtqueueError(f"descriptor {index}: indirect table of {length} bytes")
                table, table_size, index = addr, length // DESC_SIZE, 0
                indirect_table = self.mem.read(addr, length)
                in_indirect = True
                continue
            count += 1
            total += length
            if count > self.size:
                raise VirtqueueError(f"chain from head {head} is longer than the queue ({self.size}): a loop?")
            if total > MAX_CHAIN_BYTES:
                raise VirtqueueError(f"chain from head {head} describes more than {MAX_CHAIN_BYTES} bytes")
            self._add(chain, index, addr, length, flags)
            if not flags & VIRTQ_DESC_F_NEXT:
                return chain
            if nxt >= table_size:
                raise VirtqueueError(f"descriptor {index}: next {nxt} is outside its table ({table_size})")
            index = nxt

    def _add(self, chain: Chain, index: int, addr: int, length: int, flags: int) -> None:
        if flags & VIRTQ_DESC_F_WRITE:
            chain.writable.append((addr, length))
        elif chain.writable:
            raise VirtqueueError(f"descriptor {index}: readable buffer after a writable one")
        else:
            chain.readable.append((addr, length))

    # -- buffers -------------------------------------------------------------------------------------------

    def gather(self, chain: Chain, limit: int = MAX_CHAIN_BYTES) -> bytes:
        """The first `limit` bytes of the chain's readable buffers, concatenated."""
        parts = []
        for addr, length in chain.readable:
            if limit <= 0:
                break
            n = min(length, limit)
            parts.append(self.mem.read(addr, n))
            limit -= n
        return b"".join(parts)

    def scatter(self, chain: Chain, data: bytes | bytearray | memoryview, offset: int = 0) -> int:
        """Write `data` into the chain's writable buffers from byte `offset` of them; returns bytes written."""
        view = memoryview(data)
        written = 0
        for addr, length in chain.writable:
            if written == len(view):
                break
            if offset >= length:
                offset -= length
                continue
            n = min(length - offset, len(view) - written)
            self.mem.write(addr + offset, view[written : written + n])
            written += n
            offset = 0
        return written

    def scatter_from_file(self, chain: Chain, fd: int, position: int, length: int) -> int:
        """Read `length` bytes of file `fd` from `position` into the chain's writable buffers; the bytes read.

        When the memory offers views of itself (`GuestMemory.view`), the kernel reads straight into guest RAM
        with one `preadv`: a 1 MiB disk read arrives in 256 page-sized buffers, and a Python call per buffer
        cost more than the copy (bench/vmm_bench.py). Otherwise `pread` and `scatter`. Addresses are checked
        (DeviceMemoryError) before anything is read.
        """
        view = getattr(self.mem, "view", None)
        if view is None:
            return self.scatter(chain, os.pread(fd, length, position))
        buffers: list[memoryview] = []
        try:
            remaining = length
            for addr, size in chain.writable:
                if remaining <= 0:
                    break
                buffers.append(view(addr, min(size, remaining)))
                remaining -= len(buffers[-1])
            done = 0
            for i in range(0, len(buffers), _IOV_MAX):
                batch = buffers[i : i + _IOV_MAX]
                got = os.preadv(fd, batch, position + done)
                done += got
                if got < sum(len(b) for b in batch):
                    break  # end of file
            return done
        finally:
            for buffer in buffers:
                buffer.release()

    # -- used ring -----------------------------------------------------------------------------------------

    def push_used(self, head: int, written: int) -> None:
        """Return a chain to the driver, saying how many bytes the device wrote into its writable buffers."""
        slot = self.used_idx % self.size
        self.mem.write(self.used + 4 + 8 * slot, _USED_ELEM.pack(head, written))
        # The element is stored before the index that publishes it; x86 and the emulator keep stores in order.
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self.mem.write(self.used + 2, _U16.pack(self.used_idx))
