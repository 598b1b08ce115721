"""What every virtio device model provides to a transport, and the constants transports and devices share.

A device model is a function of its queues: the transport (virtio-mmio today, virtio-pci later) owns the
registers, feature negotiation, queue setup, interrupts and the error state, and calls `process()` when a queue
has work. A device reports guest mistakes by raising (`VirtqueueError`, `DeviceMemoryError`); the transport
catches them, so a device never has to decide what a hostile guest deserves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from isola.devices.virtio.queue import SplitQueue

# Device status bits (§2.1).
STATUS_ACKNOWLEDGE = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_NEEDS_RESET = 0x40
STATUS_FAILED = 0x80

# Transport feature bits (§6).
VIRTIO_F_INDIRECT_DESC = 1 << 28
VIRTIO_F_VERSION_1 = 1 << 32

# Device IDs (§5).
DEVICE_ID_NET = 1
DEVICE_ID_BLOCK = 2
DEVICE_ID_RNG = 4

DEFAULT_QUEUE_SIZE = 256


class VirtioDevice(ABC):
    """A device type: its ID, its queues' maximum sizes, its feature bits, its config space, and its work."""

    device_id: ClassVar[int]

    def __init__(self, queue_max_sizes: tuple[int, ...]) -> None:
        self.queue_max_sizes = queue_max_sizes

    def features(self) -> int:
        """Device-specific feature bits (0..23); the transport adds VERSION_1 and INDIRECT_DESC."""
        return 0

    def config(self) -> bytes:
        """The device-specific configuration space, little-endian as the driver reads it."""
        return b""

    @abstractmethod
    def process(self, index: int, queue: SplitQueue) -> bool:
        """Do the work the driver offered on queue `index`. True when chains went back to the used ring."""
