from pathlib import Path
from typing import Any

import pytest

from isola.errors import InvalidSpecError
from isola.vmm import config


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    names = {}
    for name in ("vmlinuz", "initrd", "disk.img", "other.img"):
        (tmp_path / name).write_bytes(b"x")
        names[name] = str(tmp_path / name)
    return names


def doc(files: dict[str, str], **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "boot-source": {"kernel_image_path": files["vmlinuz"], "initrd_path": files["initrd"], "boot_args": "quiet"},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 512},
        "drives": [{"drive_id": "data", "path_on_host": files["disk.img"], "is_read_only": True}],
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00:02"}],
    }
    base.update(changes)
    return base


def test_a_firecracker_style_document(files: dict[str, str]) -> None:
    vm = config.parse(doc(files))
    assert (vm.vcpus, vm.memory_mib) == (2, 512)
    assert vm.boot.kernel == Path(files["vmlinuz"]) and vm.boot.boot_args == "quiet"
    assert vm.drives == (config.Drive("data", Path(files["disk.img"]), True),)
    assert vm.nics == (config.NetworkInterface("eth0", "tap0", "06:00:ac:10:00:02"),)


def test_defaults(files: dict[str, str]) -> None:
    vm = config.parse({"boot-source": {"kernel_image_path": files["vmlinuz"]}, "network-interfaces": [
        {"iface_id": "a", "host_dev_name": "tap0"}, {"iface_id": "b", "host_dev_name": "tap1"}]})  # fmt: skip
    assert (vm.vcpus, vm.memory_mib, vm.boot.initrd, vm.drives) == (1, 256, None, ())
    assert len({n.mac for n in vm.nics}) == 2 and all(int(n.mac[:2], 16) & 2 for n in vm.nics)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"boot-source": {}}, "boot-source.kernel_image_path"),
        ({"boot-source": {"kernel_image_path": "/nonexistent/vmlinuz"}}, "boot-source.kernel_image_path"),
        ({"machine-config": {"vcpu_count": 0}}, "machine-config.vcpu_count"),
        ({"machine-config": {"vcpu_count": True}}, "machine-config.vcpu_count"),
        ({"machine-config": {"mem_size_mib": "512"}}, "machine-config.mem_size_mib"),
        ({"machine-config": {"smt": True}}, "machine-config.smt"),
        ({"drives": [{"drive_id": "a b", "path_on_host": "/dev/null"}]}, "drives[0].drive_id"),
        ({"drives": [{"drive_id": "d", "path_on_host": "/nonexistent"}]}, "drives[0].path_on_host"),
        (
            {"drives": [{"drive_id": "d", "path_on_host": "/etc/hostname", "is_read_only": "yes"}]},
            "drives[0].is_read_only",
        ),
        (
            {"network-interfaces": [{"iface_id": "e", "host_dev_name": "tap0", "guest_mac": "01:00:00:00:00:01"}]},
            "network-interfaces[0].guest_mac",
        ),
        (
            {"network-interfaces": [{"iface_id": "e", "host_dev_name": "a-very-long-tap-name"}]},
            "network-interfaces[0].host_dev_name",
        ),
        ({"balloon": {}}, "balloon"),
    ],
)
def test_errors_name_the_field(files: dict[str, str], change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpecError) as info:
        config.parse(doc(files, **change))
    assert info.value.field == field


def test_duplicate_drive_ids_are_refused(files: dict[str, str]) -> None:
    drives = [
        {"drive_id": "d", "path_on_host": files["disk.img"]},
        {"drive_id": "d", "path_on_host": files["other.img"]},
    ]
    with pytest.raises(InvalidSpecError) as info:
        config.parse(doc(files, drives=drives))
    assert info.value.field == "drives[1].drive_id"


def test_entropy_adds_a_virtio_rng_and_takes_no_options(files: dict[str, str]) -> None:
    assert not config.parse(doc(files)).entropy
    assert config.parse(doc(files, entropy={})).entropy
    with pytest.raises(InvalidSpecError) as err:
        config.parse(doc(files, entropy={"rate_limiter": {}}))
    assert err.value.field == "entropy.rate_limiter"


def test_the_virtio_devices_must_fit_the_interrupt_lines(files: dict[str, str]) -> None:
    drives = [{"drive_id": f"d{i}", "path_on_host": files["disk.img"], "is_read_only": True} for i in range(16)]
    nics = [{"iface_id": f"n{i}", "host_dev_name": f"tap{i}"} for i in range(2)]
    assert len(config.parse(doc(files, drives=drives, **{"network-interfaces": nics})).drives) == 16
    with pytest.raises(InvalidSpecError, match="room for 18 virtio devices"):
        config.parse(doc(files, drives=drives, entropy={}, **{"network-interfaces": nics}))
