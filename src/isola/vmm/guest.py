"""Busybox initramfs images for Linux guests of the VMM, with the kernel modules its devices need.

Debian builds virtio-mmio, virtio-blk, virtio-net and virtio-rng as modules, and an initramfs has no udev to
load them, so the image carries them (resolved from the kernel package's own `.modinfo` dependencies) and
/init loads them before the guest's own commands run: `/dev/vda`, `eth0` and `/dev/hwrng` then exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from isola.assets import initramfs, kmod

VIRTIO_MODULES = ("virtio_mmio", "virtio_blk", "virtio_net", "virtio_rng")
EXT4_MODULES = ("ext4", "crc32c_generic")
"""For guests that mount an ext4 disk (ext4 checksums its metadata with crc32c)."""

PREAMBLE = f"""#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
{kmod.LOAD_SCRIPT} || echo "isola: loading kernel modules failed"
"""


def image_spec(
    busybox: Path, kernel: Path, commands: str, *, modules: Sequence[str] = VIRTIO_MODULES
) -> initramfs.ImageSpec:
    """An image whose /init mounts /proc, /sys and /dev, loads `modules` (and their dependencies) of the
    kernel package `kernel` comes from, then runs the shell `commands`. NotFoundError if `kernel` is not in an
    unpacked Debian kernel package (`…/boot/vmlinuz-X` next to `…/lib/modules/X`) and modules are wanted."""
    module_files = kmod.load_order(modules, kmod.index(kmod.modules_root(kernel))) if modules else []
    return initramfs.busybox_image(busybox, PREAMBLE + commands, extra=kmod.initramfs_entries(module_files))
