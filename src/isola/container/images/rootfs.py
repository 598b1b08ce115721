"""A container's root filesystem: the image's layers stacked read-only by overlayfs, with a writable upper
directory and overlayfs's work directory of the container's own. Nothing is copied, so a container starts in
the time a mount takes and many containers share one copy of each layer; what a container writes stays in its
upper directory and goes when the container is removed."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from isola.errors import EngineError, UnsupportedError
from isola.host import mount


def mount_overlay(layers: list[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount `layers` (bottom first) under `upper` at `target`."""
    for d in (upper, work, target):
        d.mkdir(parents=True, exist_ok=True)
    if not layers:
        empty = work.parent / "empty"
        empty.mkdir(exist_ok=True)
        layers = [empty]
    lower = ":".join(str(p) for p in reversed(layers))  # overlayfs lists the top layer first
    data = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if len(data) >= os.sysconf("SC_PAGESIZE"):
        raise UnsupportedError(f"too many layers ({len(layers)}) for one overlayfs mount option page")
    try:
        mount.mount("overlay", str(target), "overlay", 0, data)
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            raise UnsupportedError("overlayfs is not available on this host (modprobe overlay)") from None
        raise EngineError(f"cannot mount the container's root at {target}: {exc.strerror}") from None


def is_mounted(target: Path) -> bool:
    try:
        return os.stat(target).st_dev != os.stat(target.parent).st_dev
    except OSError:
        return False


def unmount(target: Path) -> None:
    """Unmount the root if it is mounted (lazily: a process still holding it does not keep the mount)."""
    if is_mounted(target):
        with contextlib.suppress(OSError):
            mount.umount(str(target), mount.MNT_DETACH)
