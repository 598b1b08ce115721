"""The VM description `isola-vmm --config vm.json` reads, in Firecracker's vocabulary.

    {
      "boot-source": {"kernel_image_path": "...", "initrd_path": "...", "boot_args": "console=ttyS0"},
      "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
      "drives": [{"drive_id": "data", "path_on_host": "disk.img", "is_read_only": false}],
      "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}],
      "entropy": {}
    }

The same document is what the REST API assembles piece by piece (PUT /boot-source, PUT /drives/{id}, ...),
so both paths share this validation. Every error names the field, as `drives[1].path_on_host`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isola.errors import InvalidSpecError

MAX_VCPUS = 32
MAX_DRIVES = 16
MAX_NICS = 8
MAX_VIRTIO_DEVICES = 18
"""Drives, interfaces and the entropy device together: one IOAPIC line each (`machine.VIRTIO_GSIS`)."""
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # IFNAMSIZ - 1


@dataclass(frozen=True)
class BootSource:
    kernel: Path
    initrd: Path | None = None
    boot_args: str = "console=ttyS0 reboot=k panic=-1"


@dataclass(frozen=True)
class Drive:
    drive_id: str
    path: Path
    read_only: bool = False


@dataclass(frozen=True)
class NetworkInterface:
    iface_id: str
    tap: str
    mac: str


@dataclass(frozen=True)
class VmConfig:
    boot: BootSource
    vcpus: int = 1
    memory_mib: int = 256
    drives: tuple[Drive, ...] = ()
    nics: tuple[NetworkInterface, ...] = ()
    entropy: bool = False
    """A virtio-rng device (Firecracker's `entropy`), fed from the host's getrandom()."""


def _object(
    doc: Any, where: str, known: set[str], required: frozenset[str] | set[str] = frozenset()
) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping):
        raise InvalidSpecError("expected an object", field=where)
    for key in doc:
        if key not in known:
            raise InvalidSpecError("unknown field", field=f"{where}.{key}" if where else key)
    for key in required:
        if key not in doc:
            raise InvalidSpecError("is required", field=f"{where}.{key}" if where else key)
    return doc


def _str(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc[key]
    if not isinstance(value, str) or not value:
        raise InvalidSpecError("must be a non-empty string", field=f"{where}.{key}")
    return value


def _int(doc: Mapping[str, Any], key: str, where: str, low: int, high: int) -> int:
    value = doc[key]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidSpecError(f"must be an integer from {low} to {high}", field=f"{where}.{key}")
    return value


def _bool(doc: Mapping[str, Any], key: str, where: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise InvalidSpecError("must be true or false", field=f"{where}.{key}")
    return value


def _file(doc: Mapping[str, Any], key: str, where: str) -> Path:
    path = Path(_str(doc, key, where))
    if not path.is_file():
        raise InvalidSpecError(f"{path} is not a file", field=f"{where}.{key}")
    return path


def parse(doc: Any, *, max_memory_mib: int = 1 << 20) -> VmConfig:
    """Validate a VM document and return its typed form; InvalidSpecError names the first wrong field."""
    top = _object(
        doc, "", {"boot-source", "machine-config", "drives", "network-interfaces", "entropy"}, {"boot-source"}
    )
    bs = _object(top["boot-source"], "boot-source", {"kernel_image_path", "initrd_path", "boot_args"},
                 {"kernel_image_path"})  # fmt: skip
    boot = BootSource(
        kernel=_file(bs, "kernel_image_path", "boot-source"),
        initrd=_file(bs, "initrd_path", "boot-source") if "initrd_path" in bs else None,
        boot_args=_str(bs, "boot_args", "boot-source") if "boot_args" in bs else BootSource.boot_args,
    )
    mc = _object(top.get("machine-config", {}), "machine-config", {"vcpu_count", "mem_size_mib"})
    vcpus = _int(mc, "vcpu_count", "machine-config", 1, MAX_VCPUS) if "vcpu_count" in mc else 1
    memory = _int(mc, "mem_size_mib", "machine-config", 16, max_memory_mib) if "mem_size_mib" in mc else 256
    drives_doc = top.get("drives", [])
    if not isinstance(drives_doc, list) or len(drives_doc) > MAX_DRIVES:
        raise InvalidSpecError(f"must be a list of at most {MAX_DRIVES} drives", field="drives")
    drives: list[Drive] = []
    for i, d in enumerate(drives_doc):
        where = f"drives[{i}]"
        obj = _object(d, where, {"drive_id", "path_on_host", "is_read_only", "is_root_device"},
                      {"drive_id", "path_on_host"})  # fmt: skip
        drive_id = _str(obj, "drive_id", where)
        if not _ID.match(drive_id) or any(x.drive_id == drive_id for x in drives):
            raise InvalidSpecError("must be a unique id of letters, digits, '-' or '_'", field=f"{where}.drive_id")
        if _bool(obj, "is_root_device", where):
            raise InvalidSpecError("root devices are not supported: boot an initrd", field=f"{where}.is_root_device")
        drives.append(Drive(drive_id, _file(obj, "path_on_host", where), _bool(obj, "is_read_only", where)))
    nics_doc = top.get("network-interfaces", [])
    if not isinstance(nics_doc, list) or len(nics_doc) > MAX_NICS:
        raise InvalidSpecError(f"must be a list of at most {MAX_NICS} interfaces", field="network-interfaces")
    nics: list[NetworkInterface] = []
    for i, n in enumerate(nics_doc):
        where = f"network-interfaces[{i}]"
        obj = _object(n, where, {"iface_id", "host_dev_name", "guest_mac"}, {"iface_id", "host_dev_name"})
        iface_id, tap = _str(obj, "iface_id", where), _str(obj, "host_dev_name", where)
        if not _ID.match(iface_id) or any(x.iface_id == iface_id for x in nics):
            raise InvalidSpecError("must be a unique id of letters, digits, '-' or '_'", field=f"{where}.iface_id")
        if not _IFNAME.match(tap):
            raise InvalidSpecError("is not a valid interface name", field=f"{where}.host_dev_name")
        mac = _str(obj, "guest_mac", where) if "guest_mac" in obj else _default_mac(i)
        if not _MAC.match(mac) or int(mac[:2], 16) & 1:
            raise InvalidSpecError("must be a unicast MAC like 06:00:ac:10:00:02", field=f"{where}.guest_mac")
        nics.append(NetworkInterface(iface_id, tap, mac.lower()))
    entropy = "entropy" in top
    if entropy:
        _object(top["entropy"], "entropy", set())
    if len(drives) + len(nics) + entropy > MAX_VIRTIO_DEVICES:
        raise InvalidSpecError(f"a VM has room for {MAX_VIRTIO_DEVICES} virtio devices in all", field="drives")
    return VmConfig(boot, vcpus, memory, tuple(drives), tuple(nics), entropy)


def _default_mac(index: int) -> str:
    """A locally administered unicast MAC (02:…) that differs per interface."""
    return f"02:15:01:00:00:{index + 1:02x}"
