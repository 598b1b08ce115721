"""The nested lane's L1 kernel and image, built from the cached Debian assets (no QEMU needed).

Skips when the amd64 assets are not cached (`isola assets fetch`).
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from isola import paths
from isola.assets import cpio, kmod, manifest
from isola.errors import NotFoundError
from isola.vmm.nested import image

XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point QEMU's microvm boots through


@pytest.fixture(scope="module")
def bzimage() -> Path:
    try:
        found = manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "amd64", "kernel")
    except NotFoundError as exc:
        pytest.skip(f"amd64 assets missing: {exc.message}")
    return found


@pytest.fixture(scope="module")
def built(bzimage, tmp_path_factory) -> tuple[Path, image.L1Assets]:
    cache = tmp_path_factory.mktemp("nested")
    return cache, image.prepare(cache)


def test_l1_modules_resolve_from_the_package_in_dependency_order(bzimage):
    available = kmod.index(kmod.modules_root(bzimage))
    order = [kmod.module_name(p) for p in kmod.load_order(image.L1_MODULES, available)]
    assert order[:4] == ["irqbypass", "kvm", "ccp", "kvm_amd"]  # measurements §6a
    assert set(order) == {
        *("irqbypass", "kvm", "ccp", "kvm_amd", "virtio", "virtio_ring", "virtio_mmio"),
        *("9pnet", "9pnet_virtio", "netfs", "fscache", "9p", "overlay", "tun", "bridge", "stp", "llc"),
    }
    for i, path in enumerate(kmod.load_order(image.L1_MODULES, available)):
        depends = kmod.modinfo(path.read_bytes()).get("depends", "")
        assert set(filter(None, depends.split(","))) <= set(order[:i]), path.name


def test_pvh_kernel_is_an_elf_with_a_pvh_entry(built):
    _, assets = built
    data = assets.kernel.read_bytes()
    assert data[:4] == b"\x7fELF" and len(data) > 10 << 20
    # A Xen ELF note: namesz=4, descsz, type=PHYS32_ENTRY, "Xen\0".
    assert XEN_ELFNOTE_PHYS32_ENTRY.to_bytes(4, "little") + b"Xen\0" in data


def test_image_holds_init_busybox_and_modules_in_load_order(built):
    _, assets = built
    entries = {e.name: e for e in cpio.read_archive(assets.initrd)}
    assert entries["init"].data.decode() == image.INIT
    assert entries["init"].mode & 0o111 and stat.S_ISREG(entries["init"].mode)
    assert entries["bin/busybox"].data[:4] == b"\x7fELF"
    assert entries["bin/insmod"].link_target == "busybox"
    order = entries["lib/modules/order"].data.decode().split()
    assert order[:4] == ["irqbypass.ko", "kvm.ko", "ccp.ko", "kvm-amd.ko"]
    assert all(f"lib/modules/{name}" in entries for name in order)


def test_prepare_reuses_the_cache_and_rebuilds_when_init_changes(built, monkeypatch):
    cache, assets = built
    before = assets.initrd.stat().st_mtime_ns
    assert image.prepare(cache) == assets
    assert assets.initrd.stat().st_mtime_ns == before
    monkeypatch.setattr(image, "INIT", image.INIT.replace("# isola nested lane", "# changed"))
    changed = image.prepare(cache)
    assert changed.kernel == assets.kernel and changed.initrd != assets.initrd
    assert sorted(p.name for p in cache.glob("l1-*")) == [changed.initrd.name]  # the stale image is gone
