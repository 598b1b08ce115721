"""Opening a tap device the way virtio-net needs it: Ethernet frames, no packet-info prefix, a vnet header.

IFF_VNET_HDR with a 12-byte header (TUNSETVNETHDRSZ) lets the 12-byte `virtio_net_hdr` the guest writes pass
through to the host kernel unchanged, so checksum and segmentation offloads the guest asks for are done by the
host. An existing tap of that name is attached to (the usual case: someone set it up with `ip tuntap add` and
put it on a bridge); otherwise the kernel creates one that disappears when the fd closes.
"""

from __future__ import annotations

import fcntl
import os
import struct

from isola.errors import NotFoundError, PermissionDeniedError, UsageError

TUN_DEVICE = "/dev/net/tun"
# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
TUNSETVNETHDRSZ = 0x400454D8
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
VNET_HDR_LEN = 12
IFNAMSIZ = 16


def open_tap(name: str) -> int:
    """An fd for the tap `name`, configured for virtio-net; the caller closes it."""
    encoded = name.encode()
    if not encoded or len(encoded) >= IFNAMSIZ or b"/" in encoded:
        raise UsageError(f"{name!r} is not a network interface name")
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFoundError(f"{TUN_DEVICE} does not exist: this host has no tun/tap support") from None
    except PermissionError:
        raise PermissionDeniedError(f"cannot open {TUN_DEVICE}: permission denied") from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", encoded, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
    except OSError as exc:
        os.close(fd)
        if isinstance(exc, PermissionError):
            raise PermissionDeniedError(f"cannot attach to tap {name}: permission denied") from None
        raise UsageError(f"cannot attach to tap {name}: {exc.strerror} (is it a tap, and not in use?)") from None
    return fd
