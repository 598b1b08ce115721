"""virtio-net on a real tap, inside a network namespace of its own: the host's network is never touched.

A forked child unshares a new network namespace (it disappears with the child), makes a tap there with
IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a 12-byte vnet header, as the VMM will, and plays the guest through the
test driver: it pings the tap's address, and sends a UDP datagram whose checksum it leaves to the host
(VIRTIO_NET_F_CSUM), which only arrives if the header passed through intact.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import shutil
import socket
import struct
import subprocess
import time
import traceback
from collections.abc import Callable

import pytest

from isola.devices.virtio.net import HDR_LEN, VirtioNet, parse_mac
from isola.errors import UsageError
from isola.host import tap
from tests.conftest import require_root
from tests.unit.test_devices_support import Driver, DriverQueue

CLONE_NEWNET = 0x40000000
SIOCGIFHWADDR = 0x8927

TAP = "isola-t0"
HOST_IP, GUEST_IP = "10.99.0.1", "10.99.0.2"
GUEST_MAC = "52:54:00:12:34:56"
UDP_PORT = 40000


def in_private_netns(body: Callable[[], None]) -> None:
    """Run `body` in a forked child inside a new network namespace; fail with the child's traceback."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_end)
        status = 0
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            body()
        except BaseException:
            os.write(write_end, traceback.format_exc().encode())
            status = 1
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode()
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0, report


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ipv4(proto: int, payload: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        1,
        0,
        64,
        proto,
        0,
        socket.inet_aton(GUEST_IP),
        socket.inet_aton(HOST_IP),
    )
    return header[:10] + struct.pack("!H", ~checksum(header) & 0xFFFF) + header[12:] + payload


def make_tap() -> tuple[int, bytes]:
    fd = tap.open_tap(TAP)  # what the VMM does: the kernel creates the tap, which lives as long as the fd
    for command in (
        f"link set {TAP} up",
        f"addr add {HOST_IP}/24 dev {TAP}",
        f"neigh add {GUEST_IP} lladdr {GUEST_MAC} dev {TAP} nud permanent",
    ):
        subprocess.run(["ip", *command.split()], check=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # /sys shows the host's namespace: ask here
        ifreq = fcntl.ioctl(sock, SIOCGIFHWADDR, struct.pack("16s16x", TAP.encode()))
    return fd, ifreq[18:24]


def receive(driver: Driver, rx: DriverQueue, fd: int, want: Callable[[bytes], bool]) -> bytes:
    """Frames the tap delivers into guest buffers until one satisfies `want` (the kernel may send others)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        select.select([fd], [], [], 0.2)
        driver.mmio.kick(VirtioNet.RX_QUEUE)  # what the VMM does when the tap is readable
        for request, length in rx.used():
            frame = rx.read(request.writable[0], length)
            rx.add([], [HDR_LEN + 1518])
            assert frame[HDR_LEN - 2 : HDR_LEN] == b"\x01\x00"  # num_buffers
            if want(frame[HDR_LEN:]):
                return frame
        rx.kick()
    raise AssertionError("no such frame from the tap")


def guest_talks_to_its_tap() -> None:
    fd, host_mac = make_tap()
    device = VirtioNet(fd, parse_mac(GUEST_MAC))
    driver = Driver(device)
    driver.probe()
    rx, tx = driver.queues
    for _ in range(16):
        rx.add([], [HDR_LEN + 1518])
    rx.kick()
    ethernet = host_mac + device.mac + b"\x08\x00"

    # ICMP echo, checksummed by the guest; the reply comes back through the tap.
    payload = os.urandom(32)
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + payload
    icmp = icmp[:2] + struct.pack("!H", ~checksum(icmp) & 0xFFFF) + icmp[4:]
    tx.add([bytes(HDR_LEN), ethernet + ipv4(1, icmp)], [])
    tx.kick()
    assert device.tx_frames == 1, device.tx_dropped

    def is_reply(frame: bytes) -> bool:
        return frame[12:14] == b"\x08\x00" and frame[23] == 1 and frame[34] == 0 and frame[38:40] == b"\x12\x34"

    reply = receive(driver, rx, fd, is_reply)[HDR_LEN:]
    assert reply[:6] == device.mac and reply[42:] == payload

    # UDP with the checksum left to the host (NEEDS_CSUM): only a correct header gets it delivered.
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((HOST_IP, UDP_PORT))
    server.settimeout(5)
    data = b"checksummed by the host"
    length = 8 + len(data)
    pseudo = socket.inet_aton(GUEST_IP) + socket.inet_aton(HOST_IP) + struct.pack("!BBH", 0, 17, length)
    udp = struct.pack("!HHHH", 5555, UDP_PORT, length, checksum(pseudo)) + data  # partial: pseudo-header only
    vnet = struct.pack("<BBHHHHH", 1, 0, 0, 0, 14 + 20, 6, 0)  # NEEDS_CSUM at csum_start + csum_offset
    tx.add([vnet + ethernet, ipv4(17, udp)], [])
    tx.kick()
    assert server.recvfrom(100) == (data, (GUEST_IP, 5555))


@pytest.mark.root
def test_virtio_net_on_a_real_tap() -> None:
    require_root()
    if shutil.which("ip") is None or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs iproute2 and /dev/net/tun")
    in_private_netns(guest_talks_to_its_tap)


def test_a_name_that_is_not_a_tap_is_refused_clearly():
    require_root()
    with pytest.raises(UsageError, match="not a network interface name"):
        tap.open_tap("no/slash")

    def attach_to_loopback() -> None:
        with pytest.raises(UsageError, match="cannot attach to tap lo"):
            tap.open_tap("lo")  # exists in every namespace, and is no tap

    in_private_netns(attach_to_loopback)
