"""virtio-blk (Virtio 1.2 §5.2) over a raw image: a file or a block device, read-write or read-only.

A request is a chain: a 16-byte header `{type, reserved, sector}` and any data in the readable buffers, data
and a final status byte in the writable ones. The device treats both sides as byte streams, not as particular
descriptors (§2.6.4). Every request's byte range is checked against the image's size taken at open, so the
device never reads or writes the host file outside `[0, capacity * 512)`: a request past the end, a length that
is not whole sectors, a write to a read-only disk all answer VIRTIO_BLK_S_IOERR, as does a host I/O error.

Guest data is read from guest memory before the image is written, so a chain that points outside RAM puts the
device into its error state before any byte of the image changes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from isola.devices.virtio.device import DEFAULT_QUEUE_SIZE, DEVICE_ID_BLOCK, VirtioDevice
from isola.devices.virtio.queue import Chain, SplitQueue, VirtqueueError
from isola.errors import ConflictError, NotFoundError, UsageError
from isola.host.libc import fallocate

SECTOR = 512
SERIAL_LEN = 20  # VIRTIO_BLK_ID_BYTES

# Feature bits (§5.2.3).
VIRTIO_BLK_F_SEG_MAX = 1 << 2
VIRTIO_BLK_F_RO = 1 << 5
VIRTIO_BLK_F_FLUSH = 1 << 9
VIRTIO_BLK_F_DISCARD = 1 << 13
VIRTIO_BLK_F_WRITE_ZEROES = 1 << 14

# Request types and status values (§5.2.6).
VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_T_DISCARD = 11
VIRTIO_BLK_T_WRITE_ZEROES = 13
VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2

VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1

# Discard and write-zeroes: one segment per request, up to 2 GiB, aligned to 4 KiB (the host filesystem block).
MAX_RANGE_SECTORS = 1 << 22
RANGE_ALIGNMENT_SECTORS = 8

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_HEADER = struct.Struct("<IIQ")
_SEGMENT = struct.Struct("<QII")
_ZERO_CHUNK = 1 << 20


class VirtioBlk(VirtioDevice):
    """One disk. Opens (and locks: shared if read-only, else exclusive) the image; `close()` releases it."""

    device_id = DEVICE_ID_BLOCK

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        serial: str = "",
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        super().__init__((queue_size,))
        self.serial = serial.encode("ascii", "replace")
        if len(self.serial) > SERIAL_LEN:
            raise UsageError(f"disk serial {serial!r} is longer than {SERIAL_LEN} bytes")
        self.read_only = read_only
        try:
            self.fd = os.open(path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"disk image {os.fspath(path)} does not exist") from None
        except OSError as err:
            raise UsageError(f"cannot open disk image {os.fspath(path)}: {err.strerror}") from None
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_SH if read_only else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ConflictError(f"disk image {os.fspath(path)} is in use by another VM") from None
        # lseek, not fstat: a block device's st_size is 0.
        self.capacity = os.lseek(self.fd, 0, os.SEEK_END) // SECTOR  # in sectors; a partial last one is unused

    def close(self) -> None:
        os.close(self.fd)

    def features(self) -> int:
        if self.read_only:
            return VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_RO
        return VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES

    def config(self) -> bytes:
        """struct virtio_blk_config up to write_zeroes_may_unmap; fields of features not offered stay 0."""
        seg_max = self.queue_max_sizes[0] - 2  # a request's data segments plus header and status fit the queue
        return struct.pack(
            "<QII4xI8xB3xIIIIIB3x",
            self.capacity,
            0,  # size_max (VIRTIO_BLK_F_SIZE_MAX not offered)
            seg_max,
            0,  # blk_size (VIRTIO_BLK_F_BLK_SIZE not offered: 512)
            0,  # writeback
            MAX_RANGE_SECTORS,  # max_discard_sectors
            1,  # max_discard_seg
            RANGE_ALIGNMENT_SECTORS,  # discard_sector_alignment
            MAX_RANGE_SECTORS,  # max_write_zeroes_sectors
            1,  # max_write_zeroes_seg
            1,  # write_zeroes_may_unmap
        )

    def process(self, index: int, queue: SplitQueue) -> bool:
        used = False
        while (chain := queue.pop()) is not None:
            if chain.readable_len < _HEADER.size or chain.writable_len < 1:
                raise VirtqueueError(f"request {chain.head} has no room for its header or status byte")
            data_len = chain.writable_len - 1  # writable bytes before the status byte
            try:
                status, written = self._request(queue, chain, data_len)
            except OSError:
                status, written = VIRTIO_BLK_S_IOERR, 0
            queue.scatter(chain, bytes([status]), data_len)
            queue.push_used(chain.head, written + 1)
            used = True
        return used

    def _in_range(self, sector: int, length: int) -> bool:
        return length % SECTOR == 0 and sector + length // SECTOR <= self.capacity

    def _request(self, queue: SplitQueue, chain: Chain, data_len: int) -> tuple[int, int]:
        """Carry out one request: (status, bytes written to guest buffers before the status byte)."""
        kind, _, sector = _HEADER.unpack(queue.gather(chain, _HEADER.size))
        if kind == VIRTIO_BLK_T_IN:
            if not self._in_range(sector, data_len):
                return VIRTIO_BLK_S_IOERR, 0
            if queue.scatter_from_file(chain, self.fd, sector * SECTOR, data_len) != data_len:
                return VIRTIO_BLK_S_IOERR, 0  # the image shrank under us
            return VIRTIO_BLK_S_OK, data_len
        if kind == VIRTIO_BLK_T_OUT:
            data = memoryview(queue.gather(chain))[_HEADER.size :]
            if self.read_only or not self._in_range(sector, len(data)):
                return VIRTIO_BLK_S_IOERR, 0
            self._pwrite_all(data, sector * SECTOR)
            return VIRTIO_BLK_S_OK, 0
        if kind == VIRTIO_BLK_T_FLUSH:
            if not self.read_only:
                os.fdatasync(self.fd)
            return VIRTIO_BLK_S_OK, 0
        if kind == VIRTIO_BLK_T_GET_ID:
            ident = self.serial.ljust(SERIAL_LEN, b"\0")[: min(SERIAL_LEN, data_len)]
            return VIRTIO_BLK_S_OK, queue.scatter(chain, ident)
        if kind in (VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES):
            if self.read_only:
                return VIRTIO_BLK_S_IOERR, 0
            return self._ranges(kind, queue.gather(chain)[_HEADER.size :]), 0
        return VIRTIO_BLK_S_UNSUPP, 0

    def _ranges(self, kind: int, segments: bytes) -> int:
        """Discard or write-zeroes: one `{sector, num_sectors, flags}` segment, as the config allows."""
        if len(segments) != _SEGMENT.size:
            return VIRTIO_BLK_S_UNSUPP
        sector, count, flags = _SEGMENT.unpack(segments)
        allowed = VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP if kind == VIRTIO_BLK_T_WRITE_ZEROES else 0
        if flags & ~allowed:
            return VIRTIO_BLK_S_UNSUPP  # §5.2.6.2: discard with unmap, or an unknown flag
        if count > MAX_RANGE_SECTORS or not self._in_range(sector, count * SECTOR):
            return VIRTIO_BLK_S_IOERR
        offset, length = sector * SECTOR, count * SECTOR
        if length == 0:
            return VIRTIO_BLK_S_OK
        if kind == VIRTIO_BLK_T_DISCARD:
            fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
        elif flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP:
            fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)  # holes read as zeros
        else:
            self._zero(offset, length)
        return VIRTIO_BLK_S_OK

    def _zero(self, offset: int, length: int) -> None:
        try:
            fallocate(self.fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.ENODEV):
                raise
            zeros = memoryview(bytes(min(length, _ZERO_CHUNK)))
            for start in range(offset, offset + length, _ZERO_CHUNK):
                self._pwrite_all(zeros[: offset + length - start], start)

    def _pwrite_all(self, data: memoryview, offset: int) -> None:
        while data:
            n = os.pwrite(self.fd, data, offset)
            if n == 0:
                raise OSError(errno.EIO, "the image accepts no more bytes")
            data, offset = data[n:], offset + n
