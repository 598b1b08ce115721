"""The VM document's disks, network interfaces and entropy source, as virtio-mmio devices of a machine.

Each device gets its window and interrupt from `Machine.add_virtio` (in document order: drives, then
interfaces, then the entropy device), so a guest sees the same `/dev/vdX` order as the document lists drives.
Back-end resources (image files, tap fds) are registered on `resources` to be released after the machine has
stopped; a tap's fd is also watched by the machine's device thread, which moves frames to the guest as they
arrive.
"""

from __future__ import annotations

import contextlib
import functools
import os

from isola.devices.virtio.blk import SERIAL_LEN, VirtioBlk
from isola.devices.virtio.net import VirtioNet, parse_mac
from isola.devices.virtio.rng import VirtioRng
from isola.host import tap
from isola.vmm import config
from isola.vmm.machine import Machine


def attach(machine: Machine, vm: config.VmConfig, resources: contextlib.ExitStack) -> None:
    """Add every virtio device `vm` describes to `machine` (before its kernel is loaded: the ACPI tables list
    them). The disk serial is the drive id, cut to the 20 bytes virtio-blk has room for."""
    for drive in vm.drives:
        blk = VirtioBlk(drive.path, read_only=drive.read_only, serial=drive.drive_id[:SERIAL_LEN])
        resources.callback(blk.close)
        machine.add_virtio(blk)
    for nic in vm.nics:
        fd = tap.open_tap(nic.tap)
        resources.callback(os.close, fd)
        transport = machine.add_virtio(VirtioNet(fd, parse_mac(nic.mac)))
        machine.events.add(fd, functools.partial(transport.kick, VirtioNet.RX_QUEUE), edge=True)
    if vm.entropy:
        machine.add_virtio(VirtioRng())
