"""The L1 side of the nested lane: the kernel QEMU boots and the busybox initramfs whose /init runs one command.

Both are derived from the cached Debian assets and kept under ``$ISOLA_HOME/nested``, named by a digest of
everything that went into them, so a kernel or busybox update (or a change to /init) builds a new image and a
repeated run reuses the old one at no cost.

*Kernel.* QEMU's microvm boots an ELF vmlinux through its PVH note without any firmware, which is the fastest
way into L1 (measurements §6a). Debian ships only the bzImage, whose payload is that ELF compressed with xz;
`pvh_kernel` unpacks it once (about 0.6 s, 66 MB).

*Image.* Static busybox, the modules L1 needs (resolved from the kernel package's own ``.modinfo`` data) and
`INIT`. The init is generic: it sets up the machine, then runs a shell script given base64+gzip-encoded on
the kernel command line (`lane.py` writes that script), and reports through marker lines on the console::

    ISOLA-L1 <nonce> stage=<name> uptime=<seconds>     progress, with L1's own clock
    ISOLA-L1 <nonce> error=<what failed>               set-up failed; nothing was run
    ISOLA-L1 <nonce> exit=<status>                     the command's exit status

The nonce is per run, so nothing the command under test prints is mistaken for a marker.
"""

from __future__ import annotations

import hashlib
import lzma
import struct
from dataclasses import dataclass
from pathlib import Path

from isola import paths
from isola.assets import initramfs, kmod, manifest
from isola.errors import FormatError

# Bump when the image layout changes in a way the inputs below do not capture.
_LAYOUT = 1

# What L1 needs: kvm_amd for a real /dev/kvm (svm + npt, emulated by TCG), virtio-mmio + 9p for the host's
# root (microvm announces virtio-mmio devices in its ACPI tables), overlay for writable views of host dirs, and
# tun + bridge for tests that network L2 guests.
L1_MODULES = ("kvm_amd", "virtio_mmio", "9pnet_virtio", "9p", "overlay", "tun", "bridge")

# Applets /init uses; links for just these keep the image small and the build independent of `busybox --list`.
_APPLETS = (
    "sh", "mount", "mkdir", "insmod", "cat", "base64", "gunzip", "chroot", "env", "poweroff", "sync", "echo",
)  # fmt: skip

INIT = r"""#!/bin/sh
# isola nested lane, L1 /init: mount, load modules, share the host's /, run the command, report, power off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
nonce=none cmd=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        l1.nonce=*) nonce=${arg#l1.nonce=} ;;
        l1.cmd=*) cmd=${arg#l1.cmd=} ;;
    esac
done
say() { echo "ISOLA-L1 $nonce $*" > /dev/console; }
stage() { read -r up _ < /proc/uptime; say "stage=$1 uptime=$up"; }
fail() { say "error=$*"; poweroff -f; }
stage init
for ko in $(cat /lib/modules/order); do
    insmod "/lib/modules/$ko" || fail "insmod $ko"
done
stage modules
mkdir -p /dev/pts /dev/shm /host /scratch
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro host /host || fail "mount 9p host"
# An uncovered view of the host, taken before tmpfs covers /host/tmp and /host/run: overlays of host
# directories read from here, so a project checked out under /tmp is still there in L1.
mkdir -p /hostview && mount -o bind /host /hostview || fail "bind /hostview"
mount -t proc proc /host/proc || fail "mount /host/proc"
mount -t sysfs sysfs /host/sys || fail "mount /host/sys"
mount -o rbind /dev /host/dev || fail "bind /dev"
mount -t tmpfs -o mode=1777 tmpfs /host/tmp || fail "mount /host/tmp"
mount -t tmpfs -o mode=755 tmpfs /host/run || fail "mount /host/run"
mount -t tmpfs -o mode=755 tmpfs /scratch || fail "mount /scratch"
script=$(echo "$cmd" | base64 -d | gunzip) || fail "decode l1.cmd"
stage mounted
sh -c "$script" < /dev/null
status=$?
stage done
say "exit=$status"
sync
poweroff -f
"""


@dataclass(frozen=True)
class L1Assets:
    """What QEMU needs to boot L1: the PVH kernel and the initramfs."""

    kernel: Path
    initrd: Path


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:16]


def pvh_kernel(bzimage: Path, out: Path) -> None:
    """Write the ELF vmlinux inside the x86 `bzImage` to `out` (atomically).

    The setup header (boot protocol ≥ 2.08) gives the compressed payload's offset and length; Debian
    compresses it with xz, and the 4 bytes after the xz stream are the uncompressed size, which are ignored.
    """
    data = bzimage.read_bytes()
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        raise FormatError(f"{bzimage}: not an x86 bzImage (no HdrS setup header)")
    version = struct.unpack_from("<H", data, 0x206)[0]
    if version < 0x208:
        raise FormatError(f"{bzimage}: boot protocol {version >> 8}.{version & 0xFF} has no payload fields")
    setup_sects = data[0x1F1] or 4
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = data[start : start + length]
    if not payload.startswith(b"\xfd7zXZ\x00"):
        raise FormatError(f"{bzimage}: the payload is not xz-compressed; only Debian's xz kernels are supported")
    try:
        vmlinux = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    except lzma.LZMAError as exc:
        raise FormatError(f"{bzimage}: corrupt xz payload: {exc}") from exc
    if not vmlinux.startswith(b"\x7fELF"):
        raise FormatError(f"{bzimage}: the payload is not an ELF vmlinux")
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(vmlinux)
    tmp.replace(out)


def l1_spec(busybox: Path, module_files: list[Path]) -> initramfs.ImageSpec:
    """The L1 image: busybox, `module_files` in load order (listed in /lib/modules/order), and `INIT`."""
    return initramfs.busybox_image(busybox, INIT, applets=_APPLETS, extra=kmod.initramfs_entries(module_files))


def prepare(cache: Path | None = None) -> L1Assets:
    """The L1 kernel and image for the cached amd64 assets, built into `cache` if not there yet.

    `cache` defaults to ``$ISOLA_HOME/nested``. Images for older inputs are removed when a new one is built.
    """
    assets = paths.assets_dir()
    found = manifest.load(assets)
    bzimage = found.artifact(assets, "amd64", "kernel")
    busybox = found.artifact(assets, "amd64", "busybox")
    cache = cache or paths.home() / "nested"
    cache.mkdir(parents=True, exist_ok=True)

    kernel = cache / f"vmlinux-{_digest(bzimage.read_bytes())}"
    if not kernel.exists():
        _remove_stale(cache, "vmlinux-*", keep=kernel)
        pvh_kernel(bzimage, kernel)

    module_files = kmod.load_order(L1_MODULES, kmod.index(kmod.modules_root(bzimage)))
    key = _digest(
        str(_LAYOUT).encode(),
        INIT.encode(),
        " ".join(_APPLETS).encode(),
        busybox.read_bytes(),
        *(part for p in module_files for part in (p.name.encode(), p.read_bytes())),
    )
    initrd = cache / f"l1-{key}.cpio.gz"
    if not initrd.exists():
        _remove_stale(cache, "l1-*.cpio.gz", keep=initrd)
        initramfs.build(l1_spec(busybox, module_files), initrd)
    return L1Assets(kernel=kernel, initrd=initrd)


def _remove_stale(cache: Path, pattern: str, *, keep: Path) -> None:
    for old in cache.glob(pattern):
        if old != keep:
            old.unlink(missing_ok=True)
