"""virtio-net (Virtio 1.2 §5.1) on a tap: queue 0 receives, queue 1 transmits.

Every frame on either queue starts with the 12-byte `virtio_net_hdr` (VERSION_1 layout: flags, gso_type,
hdr_len, gso_size, csum_start, csum_offset, num_buffers). The VMM opens the tap with
IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and sets TUNSETVNETHDRSZ to 12, so the header passes through unchanged in
both directions and the host kernel does the checksum and segmentation work the guest offloads (CSUM,
HOST_TSO4/6); a header the kernel rejects only loses that frame. No receive offloads are offered, so the tap
hands over whole, checksummed frames that fit Linux's 1518-byte receive buffers.

Receiving: the VMM watches the tap (edge-triggered) and calls `VirtioMmio.kick(VirtioNet.RX_QUEUE)` when it
becomes readable. Frames move while the guest has buffers; when it has none they wait in the tap's own queue
until the guest adds buffers and notifies queue 0, which runs the same code.
"""

from __future__ import annotations

import os
import struct

from isola.devices.virtio.device import DEFAULT_QUEUE_SIZE, DEVICE_ID_NET, VirtioDevice
from isola.devices.virtio.queue import SplitQueue
from isola.errors import UsageError

# Feature bits (§5.1.3).
VIRTIO_NET_F_CSUM = 1 << 0
VIRTIO_NET_F_MAC = 1 << 5
VIRTIO_NET_F_HOST_TSO4 = 1 << 11
VIRTIO_NET_F_HOST_TSO6 = 1 << 12
VIRTIO_NET_F_STATUS = 1 << 16

VIRTIO_NET_S_LINK_UP = 1
HDR_LEN = 12
MAX_FRAME = HDR_LEN + (1 << 16)  # the largest frame a tap hands over, header included
_NUM_BUFFERS_ONE = struct.pack("<H", 1)


def parse_mac(text: str) -> bytes:
    """`aa:bb:cc:dd:ee:ff` → six bytes. Raises UsageError for anything else."""
    parts = text.split(":")
    try:
        mac = bytes(int(p, 16) for p in parts if len(p) == 2)
    except ValueError:
        mac = b""
    if len(mac) != 6 or len(parts) != 6:
        raise UsageError(f"{text!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return mac


class VirtioNet(VirtioDevice):
    """One network interface on `tap_fd`, which it makes non-blocking. The VMM keeps and closes the fd."""

    device_id = DEVICE_ID_NET
    RX_QUEUE = 0
    TX_QUEUE = 1

    def __init__(self, tap_fd: int, mac: bytes, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        super().__init__((queue_size, queue_size))
        if len(mac) != 6:
            raise UsageError(f"a MAC address has 6 bytes, not {len(mac)}")
        self.fd = tap_fd
        self.mac = bytes(mac)
        os.set_blocking(tap_fd, False)
        self.rx_frames = self.tx_frames = self.rx_dropped = self.tx_dropped = 0

    def features(self) -> int:
        return (
            VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6
        )

    def config(self) -> bytes:
        """struct virtio_net_config: mac, status (link up), max_virtqueue_pairs."""
        return self.mac + struct.pack("<HH", VIRTIO_NET_S_LINK_UP, 1)

    def process(self, index: int, queue: SplitQueue) -> bool:
        return self._receive(queue) if index == self.RX_QUEUE else self._transmit(queue)

    def _transmit(self, queue: SplitQueue) -> bool:
        used = False
        while (chain := queue.pop()) is not None:
            if self._send(queue.gather(chain)):
                self.tx_frames += 1
            else:
                self.tx_dropped += 1
            queue.push_used(chain.head, 0)
            used = True
        return used

    def _send(self, frame: bytes) -> bool:
        if len(frame) <= HDR_LEN:
            return False
        try:
            os.write(self.fd, frame)
        except OSError:  # tap queue full, link down, or a header the kernel refused: lost, as on a wire
            return False
        return True

    def _receive(self, queue: SplitQueue) -> bool:
        used = False
        while (chain := queue.pop()) is not None:
            try:
                frame = os.read(self.fd, MAX_FRAME)
            except OSError:  # EAGAIN: the tap is empty
                frame = b""
            if not frame:  # nothing (or end of file: the VMM closed the other side)
                queue.unpop()
                break
            if not HDR_LEN < len(frame) <= chain.writable_len:
                queue.unpop()  # keep the buffer for a frame that fits
                self.rx_dropped += 1
                continue
            # Without MRG_RXBUF a frame takes exactly one chain (§5.1.6.3.1); the tap leaves the field unset.
            queue.scatter(chain, frame[: HDR_LEN - 2] + _NUM_BUFFERS_ONE + frame[HDR_LEN:])
            queue.push_used(chain.head, len(frame))
            self.rx_frames += 1
            used = True
        return used
