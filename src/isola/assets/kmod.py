"""Kernel modules from an unpacked Debian kernel package, in the order `insmod` must load them.

The cached `linux-image-*` package has no `modules.dep`: Debian generates it with `depmod` at install time, and
isola unpacks the .deb without running maintainer scripts. The same facts are in every module file, in the
``depends=`` string of its ``.modinfo`` ELF section, so they are read from there rather than hard-coded: a
kernel update that adds or drops a dependency then still loads.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

from isola.assets import initramfs
from isola.errors import FormatError, NotFoundError

_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64, _ELFDATA2LSB = 2, 1
_SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr: name type flags addr offset size link info addralign entsize


def module_name(path: Path) -> str:
    """The name the kernel knows a module file by: ``kvm-amd.ko`` is ``kvm_amd``."""
    return path.name.removesuffix(".ko").replace("-", "_")


def modinfo(data: bytes, *, where: str = "module") -> dict[str, str]:
    """The ``key=value`` strings of a little-endian ELF64 module's ``.modinfo`` section.

    Only the first value of a key is kept; the keys the lane reads (``depends``, ``name``) occur once.
    """
    if len(data) < 64 or data[:4] != _ELF_MAGIC or data[4] != _ELFCLASS64 or data[5] != _ELFDATA2LSB:
        raise FormatError(f"{where}: not a little-endian ELF64 file (a compressed module?)")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shentsize != _SHDR.size or shstrndx >= shnum or shoff + shnum * shentsize > len(data):
        raise FormatError(f"{where}: section header table out of bounds")
    headers = [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    strtab_off, strtab_size = headers[shstrndx][4], headers[shstrndx][5]
    for sh_name, _type, _flags, _addr, offset, size, *_ in headers:
        if sh_name >= strtab_size:
            continue
        end = data.find(b"\0", strtab_off + sh_name)
        if data[strtab_off + sh_name : end] != b".modinfo":
            continue
        if offset + size > len(data):
            raise FormatError(f"{where}: .modinfo section out of bounds")
        info: dict[str, str] = {}
        for item in data[offset : offset + size].split(b"\0"):
            key, sep, value = item.decode("utf-8", "replace").partition("=")
            if sep:
                info.setdefault(key, value)
        return info
    raise FormatError(f"{where}: no .modinfo section")


def index(modules_root: Path) -> dict[str, Path]:
    """Every module under `modules_root` (``lib/modules/<version>``), by kernel name."""
    return {module_name(p): p for p in sorted((modules_root / "kernel").rglob("*.ko"))}


def load_order(wanted: Iterable[str], available: dict[str, Path]) -> list[Path]:
    """`wanted` plus everything they depend on, each module after its dependencies.

    Dependencies come first in the order `wanted` names them (a depth-first walk), so the result is stable and
    matches what `modprobe` would do. A module that is missing, or a dependency cycle, is an error.
    """
    order: list[Path] = []
    done: set[str] = set()
    active: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in active:
            raise FormatError(f"module dependency cycle: {' -> '.join([*active, name])}")
        path = available.get(name)
        if path is None:
            needed_by = f" (needed by {active[-1]})" if active else ""
            raise NotFoundError(f"kernel module {name}{needed_by} is not in the kernel package")
        active.append(name)
        depends = modinfo(path.read_bytes(), where=str(path)).get("depends", "")
        for dep in filter(None, depends.split(",")):
            visit(dep.replace("-", "_"))
        active.pop()
        done.add(name)
        order.append(path)

    for name in wanted:
        visit(name.replace("-", "_"))
    return order


def modules_root(kernel: Path) -> Path:
    """``…/linux-image-X/boot/vmlinuz-X`` → ``…/linux-image-X/lib/modules/X``."""
    release = kernel.name.removeprefix("vmlinuz-")
    root = kernel.parent.parent / "lib" / "modules" / release
    if not (root / "kernel").is_dir():
        raise NotFoundError(f"{root}: the kernel package has no modules for {release}")
    return root


ORDER_FILE = "/lib/modules/order"
LOAD_SCRIPT = f'for ko in $(cat {ORDER_FILE}); do insmod "/lib/modules/$ko" || exit 1; done'
"""The shell loop an initramfs /init runs to load what `initramfs_entries` put in the image."""


def initramfs_entries(module_files: Sequence[Path]) -> list[initramfs.Entry]:
    """`module_files` (already in load order) as /lib/modules/NAME.ko, and the order file `LOAD_SCRIPT` reads."""
    order = "".join(f"{p.name}\n" for p in module_files).encode()
    return [
        *(initramfs.File(f"/lib/modules/{p.name}", p) for p in module_files),
        initramfs.File(ORDER_FILE, order),
    ]
