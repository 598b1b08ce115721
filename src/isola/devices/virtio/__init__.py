"""Virtio devices (Virtio 1.2): split virtqueues, the virtio-mmio transport, and the blk, net and rng devices."""
