"""Debian's stock kernel using isola's virtio devices, found through the VMM's ACPI tables: an ext4 disk that
keeps a file across a guest reboot, a read-only disk the guest cannot change, the entropy device, and two VMs
pinging each other over a bridge of taps inside a network namespace this test creates (and removes).

`real_kvm`: the nested lane runs these inside L1; elsewhere they need kvm_amd/kvm_intel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from isola.assets import initramfs
from isola.vmm import config, guest, launch
from isola.vmm.machine import ExitKind
from tests.conftest import amd64_asset, require_root, skip_smp_in_nested_lane

pytestmark = [pytest.mark.slow, pytest.mark.real_kvm, pytest.mark.timeout(900)]

BOOT_TIMEOUT = 300.0
APPEND = f"{launch.DEFAULT_APPEND} quiet"
NOTE = "isola was here"


def build_initrd(directory: Path, commands: str, modules: tuple[str, ...] = guest.VIRTIO_MODULES) -> Path:
    target = directory / "initrd.cpio.gz"
    initramfs.build(guest.image_spec(amd64_asset("busybox"), amd64_asset("kernel"), commands, modules=modules), target)
    return target


def boot(document: dict[str, object]) -> tuple[ExitKind, str]:
    console: list[bytes] = []
    status = launch.boot(config.parse(document), console=console.append, timeout=BOOT_TIMEOUT, on_reboot="restart")
    return status.kind, b"".join(console).decode("utf-8", "replace")


def vm_document(initrd: Path, cpus: int = 1, **extra: object) -> dict[str, object]:
    return {
        "boot-source": {
            "kernel_image_path": str(amd64_asset("kernel")),
            "initrd_path": str(initrd),
            "boot_args": APPEND,
        },
        "machine-config": {"vcpu_count": cpus, "mem_size_mib": 256},
        **extra,
    }


@pytest.mark.parametrize("cpus", [1, 2])
def test_a_file_written_to_an_ext4_disk_is_there_after_the_guest_reboots(tmp_path, cpus):
    skip_smp_in_nested_lane(cpus)
    disk, spare = tmp_path / "data.ext4", tmp_path / "spare.img"
    with disk.open("wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "isola", str(disk)], check=True)
    spare.write_bytes(b"READ-ONLY-IMAGE\n" + bytes(4096 - 16))
    before = spare.read_bytes()
    commands = f"""
mkdir -p /mnt && mount -t ext4 /dev/vda /mnt || echo "MOUNT-FAILED"
echo "CPUS $(grep -c ^processor /proc/cpuinfo)"
echo "SERIAL $(cat /sys/block/vda/serial) $(cat /sys/block/vdb/serial) RO $(cat /sys/block/vdb/ro)"
if [ -f /mnt/note ]; then
    echo "READBACK $(cat /mnt/note)"
    echo "ROHEAD $(head -c 15 /dev/vdb)"
    echo scribble | dd of=/dev/vdb conv=fsync 2>/dev/null && echo "RO-WRITE-ACCEPTED" || echo "RO-WRITE-REFUSED"
    echo "RNG $(head -c 16 /dev/hwrng | od -An -tx1 | tr -d ' \\n')"
    umount /mnt
    sleep 1  # let the serial port send the last lines: poweroff -f does not wait for the tty
    poweroff -f
else
    echo "{NOTE}" > /mnt/note && sync && umount /mnt && echo "WRITTEN"
    sleep 1
    reboot -f
fi
"""
    initrd = build_initrd(tmp_path, commands, (*guest.VIRTIO_MODULES, *guest.EXT4_MODULES))
    drives = [
        {"drive_id": "data", "path_on_host": str(disk)},
        {"drive_id": "spare", "path_on_host": str(spare), "is_read_only": True},
    ]
    kind, console = boot(vm_document(initrd, cpus, drives=drives, entropy={}))
    assert "WRITTEN" in console and "MOUNT-FAILED" not in console, console[-3000:]
    assert f"READBACK {NOTE}" in console, console[-3000:]  # the second boot found what the first one wrote
    assert kind is ExitKind.POWEROFF, console[-3000:]
    assert "SERIAL data spare RO 1" in console and f"CPUS {cpus}" in console
    assert "ROHEAD READ-ONLY-IMAGE" in console and "RO-WRITE-REFUSED" in console
    assert spare.read_bytes() == before
    rng = next(line.split()[1] for line in console.splitlines() if line.startswith("RNG "))
    assert len(rng) == 32 and rng != "0" * 32
    listed = subprocess.run(["debugfs", "-R", "cat /note", str(disk)], capture_output=True, text=True, check=True)
    assert listed.stdout.strip() == NOTE  # and the host sees the file in the image, too


# -- two VMs on a bridge


def ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr}"


@pytest.fixture
def bridge_netns() -> Iterator[str]:
    """A network namespace with bridge br0 and taps tap0 and tap1 on it, all up; removed afterwards."""
    require_root()
    if shutil.which("ip") is None:
        pytest.skip("iproute2's ip is not installed")
    name = f"isola-test-{uuid.uuid4().hex[:8]}"
    ip("netns", "add", name)
    try:
        ip("link", "add", "br0", "type", "bridge", netns=name)
        for tap in ("tap0", "tap1"):
            ip("tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr", netns=name)
            ip("link", "set", tap, "master", "br0", "up", netns=name)
        ip("link", "set", "br0", "up", netns=name)
        yield name
    finally:
        ip("netns", "del", name)


def test_two_vms_ping_each_other_over_a_bridge_in_a_private_namespace(tmp_path, bridge_netns):
    setup = "ip link set eth0 up && ip addr add 10.77.0.{n}/24 dev eth0"
    setup += " && echo NET-UP-{n} $(cat /sys/class/net/eth0/address)"
    pinger = f"""
{setup.format(n=1)}
ok=no i=0
while [ $i -lt 30 ] && [ $ok = no ]; do
    ping -c 2 -W 2 10.77.0.2 > /tmp/ping.out 2>&1 && ok=yes
    i=$((i + 1))
done
[ $ok = yes ] && echo PING-OK || echo PING-FAILED
cat /tmp/ping.out
sleep 1
poweroff -f
"""
    answerer = f"""
{setup.format(n=2)}
sleep 240
poweroff -f
"""
    processes = []
    for n, (commands, tap) in enumerate(((answerer, "tap1"), (pinger, "tap0"))):
        directory = tmp_path / f"vm{n}"
        directory.mkdir()
        mac = f"06:00:0a:4d:00:{n + 1:02x}"
        doc = vm_document(build_initrd(directory, commands))
        doc["network-interfaces"] = [{"iface_id": "eth0", "host_dev_name": tap, "guest_mac": mac}]
        (directory / "vm.json").write_text(json.dumps(doc))
        cmd = ["ip", "netns", "exec", bridge_netns, sys.executable, "-m", "isola.vmm.launch"]
        cmd += ["--config", str(directory / "vm.json"), "--timeout", str(BOOT_TIMEOUT)]
        processes.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    answering, pinging = processes
    try:
        out, _ = pinging.communicate(timeout=BOOT_TIMEOUT + 60)
    finally:
        answering.kill()
        answer_out, _ = answering.communicate()
    assert "NET-UP-1 06:00:0a:4d:00:02" in out, out[-3000:]
    assert "PING-OK" in out and "0% packet loss" in out, out[-3000:] + answer_out[-2000:]
    assert pinging.returncode == 0, out[-2000:]
    assert os.path.exists(f"/run/netns/{bridge_netns}")  # still ours until the fixture removes it
