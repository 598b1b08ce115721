"""A Linux x86 bzImage: its setup header (Documentation/arch/x86/boot.rst) and its protected-mode kernel.

Only what a VMM that enters the kernel in 32- or 64-bit mode needs: the real-mode setup code is skipped, so the
image must speak boot protocol 2.12 or later (the first with `xloadflags` and a 64-bit entry) and load high.
Every reason to reject a file is a `FormatError` saying what is wrong with it, because "the guest never printed
anything" is what a bad kernel file otherwise looks like.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from isola.errors import FormatError, NotFoundError, UsageError

SETUP_HEADER_OFFSET = 0x1F1
BOOT_FLAG = 0xAA55
HDRS_MAGIC = b"HdrS"
MIN_PROTOCOL = 0x020C  # 2.12
LOADED_HIGH = 0x01
CAN_USE_HEAP = 0x80
XLF_KERNEL_64 = 0x01
DEFAULT_SETUP_SECTS = 4  # "if this field is 0, the real value is 4"
ENTRY_64_OFFSET = 0x200
"""The 64-bit entry point is this far past the start of the loaded protected-mode kernel."""

# (offset in the image and in boot_params, struct format) of the setup-header fields isola reads
_FIELDS: dict[str, tuple[int, str]] = {
    "setup_sects": (0x1F1, "B"),
    "syssize": (0x1F4, "I"),
    "boot_flag": (0x1FE, "H"),
    "header": (0x202, "4s"),
    "version": (0x206, "H"),
    "kernel_version": (0x20E, "H"),
    "loadflags": (0x211, "B"),
    "code32_start": (0x214, "I"),
    "initrd_addr_max": (0x22C, "I"),
    "kernel_alignment": (0x230, "I"),
    "relocatable_kernel": (0x234, "B"),
    "xloadflags": (0x236, "H"),
    "cmdline_size": (0x238, "I"),
    "payload_offset": (0x248, "I"),
    "payload_length": (0x24C, "I"),
    "pref_address": (0x258, "Q"),
    "init_size": (0x260, "I"),
}
_MIN_FILE = 0x264  # through init_size, the last field read


@dataclass(frozen=True)
class SetupHeader:
    setup_sects: int
    syssize: int
    version: int
    loadflags: int
    code32_start: int
    initrd_addr_max: int
    kernel_alignment: int
    relocatable: bool
    xloadflags: int
    cmdline_size: int
    pref_address: int
    init_size: int
    raw: bytes
    """The header bytes from 0x1f1 to its self-declared end, copied verbatim into the zero page."""

    @property
    def version_text(self) -> str:
        return f"{self.version >> 8}.{self.version & 0xFF:02d}"

    @property
    def supports_64bit_entry(self) -> bool:
        return bool(self.xloadflags & XLF_KERNEL_64)


@dataclass(frozen=True)
class BzImage:
    header: SetupHeader
    kernel: bytes
    """The protected-mode kernel: what is loaded at `code32_start`."""
    release: str
    """The kernel's version string from the setup code, e.g. "6.1.0-56-amd64 (debian-kernel@...) #1 SMP ..."."""

    def runtime_footprint(self, load_addr: int) -> tuple[int, int]:
        """[start, end) of the memory the kernel needs before it reads the memory map: it decompresses to
        `load_addr` aligned up, or to `pref_address` if that is higher (a relocatable kernel never runs below
        its LOAD_PHYSICAL_ADDR), and uses `init_size` bytes from there."""
        align = self.header.kernel_alignment or 1
        start = (load_addr + align - 1) // align * align
        if self.header.relocatable:
            start = max(start, self.header.pref_address)
        return start, max(start + self.header.init_size, load_addr + len(self.kernel))


def parse(data: bytes, source: str = "kernel image") -> BzImage:
    """Parse and validate a bzImage; `source` names the file in error messages."""
    if data[:4] == b"\x7fELF":
        raise FormatError(f"{source} is an ELF file (an uncompressed vmlinux), not a bzImage")
    if len(data) < _MIN_FILE:
        raise FormatError(f"{source} is {len(data)} bytes, too short to hold a Linux setup header")
    f = {name: struct.unpack_from("<" + fmt, data, off)[0] for name, (off, fmt) in _FIELDS.items()}
    if f["boot_flag"] != BOOT_FLAG or f["header"] != HDRS_MAGIC:
        raise FormatError(f"{source} is not a Linux bzImage (no boot sector signature and 'HdrS' setup header)")
    version = f["version"]
    if version < MIN_PROTOCOL:
        raise FormatError(
            f"{source} speaks boot protocol {version >> 8}.{version & 0xFF:02d}; isola needs 2.12 or later"
        )
    if not f["loadflags"] & LOADED_HIGH:
        raise FormatError(f"{source} is a zImage that loads below 1 MiB; only bzImages are supported")
    header_end = 0x202 + data[0x201]
    if header_end < _MIN_FILE or header_end > len(data):
        raise FormatError(f"{source}: setup header claims to end at {header_end:#x}, which is not plausible")
    setup_sects = f["setup_sects"] or DEFAULT_SETUP_SECTS
    kernel_offset = (setup_sects + 1) * 512
    kernel = data[kernel_offset:]
    if len(kernel) < f["syssize"] * 16 or not kernel:
        raise FormatError(
            f"{source} is truncated: the header announces a {f['syssize'] * 16}-byte kernel after "
            f"{kernel_offset} bytes of setup, the file has {len(kernel)}"
        )
    if f["payload_offset"] + f["payload_length"] > len(kernel):
        raise FormatError(f"{source}: compressed payload extends past the end of the kernel")
    if f["init_size"] == 0:
        raise FormatError(f"{source}: setup header has init_size 0")
    release_at = f["kernel_version"] + 0x200
    release = data[release_at : release_at + 256].split(b"\0", 1)[0] if f["kernel_version"] else b""
    header = SetupHeader(
        setup_sects=setup_sects,
        syssize=f["syssize"],
        version=version,
        loadflags=f["loadflags"],
        code32_start=f["code32_start"],
        initrd_addr_max=f["initrd_addr_max"],
        kernel_alignment=f["kernel_alignment"],
        relocatable=bool(f["relocatable_kernel"]),
        xloadflags=f["xloadflags"],
        cmdline_size=f["cmdline_size"],
        pref_address=f["pref_address"],
        init_size=f["init_size"],
        raw=data[SETUP_HEADER_OFFSET:header_end],
    )
    return BzImage(header=header, kernel=kernel, release=release.decode("ascii", "replace"))


def load(path: Path) -> BzImage:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFoundError(f"kernel {path} does not exist") from exc
    except OSError as exc:
        raise UsageError(f"cannot read kernel {path}: {exc.strerror}") from exc
    return parse(data, str(path))
