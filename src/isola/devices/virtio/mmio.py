"""The virtio-mmio transport, version 2 (Virtio 1.2 §4.2): one register window per device, one interrupt line.

The VMM registers a `VirtioMmio` on its MMIO bus at `base` with `MMIO_WINDOW_SIZE` and tells Linux about it in
its ACPI tables (a kernel built without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, like Debian's, ignores the
`virtio_mmio.device=` parameter). Guest register accesses arrive through `read`/`write`; work on a queue is
started by a write of QueueNotify or, when the VMM routes that write elsewhere (an ioeventfd) or a backend has
input (a tap), by `kick(queue)`. One lock serialises all of it, so vCPU threads and an I/O thread may share a device.

Hostile guests: a bad queue layout, a malformed chain or an address outside RAM puts the device into the error
state: NEEDS_RESET in Status, a configuration-change interrupt, and no further processing until the driver
writes Status 0. `error` then holds the reason for the VMM's log.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from isola.devices.bus import DeviceMemoryError, IrqLine, PhysicalMemory
from isola.devices.virtio.device import (
    STATUS_DRIVER_OK,
    STATUS_FAILED,
    STATUS_FEATURES_OK,
    STATUS_NEEDS_RESET,
    VIRTIO_F_INDIRECT_DESC,
    VIRTIO_F_VERSION_1,
    VirtioDevice,
)
from isola.devices.virtio.queue import SplitQueue, VirtqueueError

log = logging.getLogger(__name__)

MMIO_WINDOW_SIZE = 0x1000  # one page per device, as Firecracker lays them out
MAGIC = 0x74726976  # "virt"
VERSION = 2
VENDOR_ID = 0x4C4F5349  # "ISOL"

INTERRUPT_USED_BUFFER = 1
INTERRUPT_CONFIG_CHANGE = 2

# Register offsets (§4.2.2).
MAGIC_VALUE = 0x000
VERSION_REG = 0x004
DEVICE_ID = 0x008
VENDOR_ID_REG = 0x00C
DEVICE_FEATURES = 0x010
DEVICE_FEATURES_SEL = 0x014
DRIVER_FEATURES = 0x020
DRIVER_FEATURES_SEL = 0x024
QUEUE_SEL = 0x030
QUEUE_NUM_MAX = 0x034
QUEUE_NUM = 0x038
QUEUE_READY = 0x044
QUEUE_NOTIFY = 0x050
INTERRUPT_STATUS = 0x060
INTERRUPT_ACK = 0x064
STATUS = 0x070
QUEUE_DESC_LOW = 0x080
QUEUE_DESC_HIGH = 0x084
QUEUE_DRIVER_LOW = 0x090
QUEUE_DRIVER_HIGH = 0x094
QUEUE_DEVICE_LOW = 0x0A0
QUEUE_DEVICE_HIGH = 0x0A4
SHM_LEN_LOW = 0x0B0
SHM_BASE_HIGH = 0x0BC
CONFIG_GENERATION = 0x0FC
CONFIG = 0x100

_QUEUE_ADDRESS_REGS = {
    QUEUE_DESC_LOW: ("desc", 0),
    QUEUE_DESC_HIGH: ("desc", 32),
    QUEUE_DRIVER_LOW: ("driver", 0),
    QUEUE_DRIVER_HIGH: ("driver", 32),
    QUEUE_DEVICE_LOW: ("device", 0),
    QUEUE_DEVICE_HIGH: ("device", 32),
}


@dataclass
class _QueueSlot:
    """What the driver wrote for one queue; `queue` exists while QueueReady is 1."""

    max_size: int
    num: int = 0
    desc: int = 0
    driver: int = 0
    device: int = 0
    queue: SplitQueue | None = None


class VirtioMmio:
    """The register window of one virtio device. A `bus.Device`."""

    def __init__(self, device: VirtioDevice, mem: PhysicalMemory, irq: IrqLine) -> None:
        self.device = device
        self.mem = mem
        self.irq = irq
        self.device_features = device.features() | VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC
        self._lock = threading.Lock()
        self._line = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.driver_features = 0
        self.interrupt_status = 0
        self._device_features_sel = 0
        self._driver_features_sel = 0
        self._queue_sel = 0
        self._queues = [_QueueSlot(n) for n in self.device.queue_max_sizes]
        self.error: str | None = None  # why the device needs a reset
        self._update_line()

    # -- bus.Device ----------------------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        with self._lock:
            if offset >= CONFIG:
                return self._read_config(offset - CONFIG, size)
            if size != 4 or offset % 4:
                return 0  # registers are 32-bit wide and aligned (§4.2.2.2)
            return self._read_register(offset)

    def write(self, offset: int, size: int, value: int) -> None:
        with self._lock:
            if offset < CONFIG and size == 4 and offset % 4 == 0:
                self._write_register(offset, value & 0xFFFFFFFF)
            # Config space writes are ignored: no device here has a writable field.

    def kick(self, index: int) -> None:
        """Process queue `index` now: the driver notified it, or its backend has input (a tap became readable)."""
        with self._lock:
            self._process(index)

    @property
    def needs_reset(self) -> bool:
        return bool(self.status & STATUS_NEEDS_RESET)

    # -- registers -----------------------------------------------------------------------------------------

    def _read_config(self, offset: int, size: int) -> int:
        data = self.device.config()[offset : offset + size]
        return int.from_bytes(data, "little")

    def _slot(self) -> _QueueSlot | None:
        return self._queues[self._queue_sel] if self._queue_sel < len(self._queues) else None

    def _read_register(self, offset: int) -> int:
        slot = self._slot()
        if offset == MAGIC_VALUE:
            return MAGIC
        if offset == VERSION_REG:
            return VERSION
        if offset == DEVICE_ID:
            return self.device.device_id
        if offset == VENDOR_ID_REG:
            return VENDOR_ID
        if offset == DEVICE_FEATURES:
            return (self.device_features >> (32 * self._device_features_sel)) & 0xFFFFFFFF
        if offset == QUEUE_NUM_MAX:
            return slot.max_size if slot else 0  # 0 tells Linux the queue does not exist
        if offset == QUEUE_READY:
            return int(slot is not None and slot.queue is not None)
        if offset == INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == STATUS:
            return self.status
        if SHM_LEN_LOW <= offset <= SHM_BASE_HIGH:
            return 0xFFFFFFFF  # no shared memory regions: length ~0 (§4.2.2)
        return 0  # CONFIG_GENERATION (config never changes) and write-only registers

    def _write_register(self, offset: int, value: int) -> None:
        if offset == DEVICE_FEATURES_SEL:
            self._device_features_sel = value if value < 2 else 2  # selectors past 1 read 0
        elif offset == DRIVER_FEATURES_SEL:
            self._driver_features_sel = value
        elif offset == DRIVER_FEATURES:
            self._write_driver_features(value)
        elif offset == QUEUE_SEL:
            self._queue_sel = value
        elif offset == QUEUE_NOTIFY:
            self._process(value)
        elif offset == INTERRUPT_ACK:
            self.interrupt_status &= ~value
            self._update_line()
        elif offset == STATUS:
            self._write_status(value)
        else:
            self._write_queue_register(offset, value)

    def _write_driver_features(self, value: int) -> None:
        if self.status & STATUS_FEATURES_OK or self._driver_features_sel > 1:
            return
        shift = 32 * self._driver_features_sel
        self.driver_features = (self.driver_features & ~(0xFFFFFFFF << shift)) | (value << shift)

    def _write_queue_register(self, offset: int, value: int) -> None:
        slot = self._slot()
        if slot is None or slot.queue is not None:
            return  # no such queue, or it is live: the driver may not change it (§4.2.3.2)
        if offset == QUEUE_NUM:
            slot.num = value
        elif offset == QUEUE_READY:
            if value == 1:
                self._enable(slot)
        elif offset in _QUEUE_ADDRESS_REGS:
            name, shift = _QUEUE_ADDRESS_REGS[offset]
            old = getattr(slot, name)
            setattr(slot, name, (old & ~(0xFFFFFFFF << shift)) | (value << shift))

    def _enable(self, slot: _QueueSlot) -> None:
        if not 0 < slot.num <= slot.max_size:
            self._fail(f"queue size {slot.num} is not in 1..{slot.max_size}")
            return
        indirect = bool(self.driver_features & VIRTIO_F_INDIRECT_DESC)
        try:
            slot.queue = SplitQueue(self.mem, slot.num, slot.desc, slot.driver, slot.device, indirect=indirect)
        except (VirtqueueError, DeviceMemoryError) as err:
            self._fail(f"queue layout: {err}")

    def _write_status(self, value: int) -> None:
        if value == 0:
            self._reset()
            return
        value &= 0xFF & ~STATUS_NEEDS_RESET
        newly = value & ~self.status
        if newly & STATUS_FEATURES_OK and not self._features_acceptable():
            value &= ~STATUS_FEATURES_OK  # the driver reads Status back and gives up (§3.1.1)
        self.status = value | (self.status & STATUS_NEEDS_RESET)
        if newly & STATUS_DRIVER_OK:
            for index in range(len(self._queues)):
                self._process(index)  # anything offered before DRIVER_OK

    def _features_acceptable(self) -> bool:
        features = self.driver_features
        return features & ~self.device_features == 0 and bool(features & VIRTIO_F_VERSION_1)

    # -- work and errors -----------------------------------------------------------------------------------

    def _live(self) -> bool:
        need = STATUS_DRIVER_OK | STATUS_FEATURES_OK
        return self.status & need == need and not self.status & (STATUS_NEEDS_RESET | STATUS_FAILED)

    def _process(self, index: int) -> None:
        if not self._live() or index >= len(self._queues):
            return
        queue = self._queues[index].queue
        if queue is None:
            return
        queue.budget = queue.size
        try:
            used = self.device.process(index, queue)
        except (VirtqueueError, DeviceMemoryError) as err:
            self._fail(f"queue {index}: {err}")
            return
        if used:
            self.interrupt_status |= INTERRUPT_USED_BUFFER
            self._update_line()

    def _fail(self, reason: str) -> None:
        """The guest broke the rules: stop processing and tell it so (§2.1.2)."""
        if self.error is None:
            log.warning("virtio device %d needs reset: %s", self.device.device_id, reason)
        self.error = reason
        self.status |= STATUS_NEEDS_RESET
        self.interrupt_status |= INTERRUPT_CONFIG_CHANGE
        self._update_line()

    def _update_line(self) -> None:
        level = self.interrupt_status != 0
        if level != self._line:
            self._line = level
            self.irq.set_level(level)
