"""virtio-rng (Virtio 1.2 §5.4): one queue; the driver offers writable buffers, the device fills them.

Entropy comes from the host's `os.urandom`. A guest without it waits for entropy during boot; with it the
kernel's CRNG is seeded in the first milliseconds.
"""

from __future__ import annotations

import os

from isola.devices.virtio.device import DEFAULT_QUEUE_SIZE, DEVICE_ID_RNG, VirtioDevice
from isola.devices.virtio.queue import SplitQueue

# Linux asks for at most a page at a time; a larger buffer is filled only this far (the device may write less).
MAX_FILL = 64 << 10


class VirtioRng(VirtioDevice):
    device_id = DEVICE_ID_RNG

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        super().__init__((queue_size,))

    def process(self, index: int, queue: SplitQueue) -> bool:
        used = False
        while (chain := queue.pop()) is not None:
            written = queue.scatter(chain, os.urandom(min(chain.writable_len, MAX_FILL)))
            queue.push_used(chain.head, written)
            used = True
        return used
