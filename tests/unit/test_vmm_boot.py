"""The Linux boot protocol pieces: bzImage parsing (the real cached Debian kernel and broken files), the zero
page at the offsets Documentation/arch/x86/zero-page.rst gives, e820, initrd placement."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from isola import paths
from isola.assets import manifest
from isola.errors import FormatError, NotFoundError, UsageError
from isola.vmm.x86 import boot_params, bzimage
from isola.vmm.x86.layout import CMDLINE_ADDR, KERNEL_LOAD_ADDR

MIB = 1 << 20


@pytest.fixture(scope="module")
def kernel_bytes() -> bytes:
    try:
        path = manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "amd64", "kernel")
    except NotFoundError as exc:
        pytest.skip(f"amd64 kernel not cached (isola assets fetch): {exc.message}")
    return path.read_bytes()


def synthetic(
    *,
    version: int = 0x020F,
    setup_sects: int = 1,
    kernel_size: int = 0x400,
    loadflags: int = 0x01,
    xloadflags: int = 0x01,
) -> bytearray:
    """A minimal well-formed bzImage: a one-sector setup and `kernel_size` bytes of protected-mode kernel."""
    data = bytearray((setup_sects + 1) * 512 + kernel_size)
    data[0x1F1] = setup_sects
    struct.pack_into("<I", data, 0x1F4, kernel_size // 16)
    struct.pack_into("<H", data, 0x1FE, 0xAA55)
    data[0x201] = 0x6A  # header ends at 0x202 + 0x6a = 0x26c, as in Debian's kernel
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x206, version)
    data[0x211] = loadflags
    struct.pack_into("<I", data, 0x214, 0x100000)
    struct.pack_into("<I", data, 0x22C, 0x7FFFFFFF)
    struct.pack_into("<I", data, 0x230, 0x200000)
    data[0x234] = 1
    struct.pack_into("<H", data, 0x236, xloadflags)
    struct.pack_into("<I", data, 0x238, 2047)
    struct.pack_into("<Q", data, 0x258, 0x1000000)
    struct.pack_into("<I", data, 0x260, 0x800000)
    return data


# -- the real Debian kernel (research/vmm.md §4.1 lists what it should say)


def test_debian_kernel_header(kernel_bytes):
    image = bzimage.parse(kernel_bytes)
    h = image.header
    assert h.version >= 0x020C
    assert h.loadflags & bzimage.LOADED_HIGH
    assert h.supports_64bit_entry
    assert h.code32_start == 0x100000
    assert h.relocatable
    assert h.kernel_alignment == 0x200000
    assert h.pref_address == 0x1000000
    assert h.cmdline_size == 2047
    assert h.initrd_addr_max == 0x7FFFFFFF
    assert 32 * MIB < h.init_size < 256 * MIB
    assert len(image.kernel) == len(kernel_bytes) - (h.setup_sects + 1) * 512
    assert len(h.raw) == 0x202 + kernel_bytes[0x201] - 0x1F1
    assert h.raw == kernel_bytes[0x1F1 : 0x202 + kernel_bytes[0x201]]
    assert image.release.split()[0].endswith("-amd64")


def test_debian_kernel_footprint_starts_at_its_preferred_address(kernel_bytes):
    image = bzimage.parse(kernel_bytes)
    start, end = image.runtime_footprint(KERNEL_LOAD_ADDR)
    assert start == image.header.pref_address
    assert end == start + image.header.init_size


# -- broken files


def test_synthetic_image_parses():
    image = bzimage.parse(bytes(synthetic()))
    assert image.header.version_text == "2.15"
    assert len(image.kernel) == 0x400


@pytest.mark.parametrize("cut", [0, 100, 0x200, 0x263])
def test_too_short_for_a_header(cut):
    with pytest.raises(FormatError, match="too short"):
        bzimage.parse(bytes(synthetic())[:cut])


def test_truncated_kernel_is_named_as_truncated():
    data = synthetic()
    with pytest.raises(FormatError, match="truncated"):
        bzimage.parse(bytes(data[:-16]))


def test_truncated_real_kernel(kernel_bytes):
    with pytest.raises(FormatError, match="truncated"):
        bzimage.parse(kernel_bytes[: len(kernel_bytes) // 2], "vmlinuz")


def test_missing_signature():
    data = synthetic()
    data[0x202:0x206] = b"XXXX"
    with pytest.raises(FormatError, match="not a Linux bzImage"):
        bzimage.parse(bytes(data))


def test_random_bytes_are_not_a_kernel():
    with pytest.raises(FormatError):
        bzimage.parse(bytes(range(256)) * 64)


def test_elf_is_recognised():
    with pytest.raises(FormatError, match="ELF"):
        bzimage.parse(b"\x7fELF" + bytes(0x1000))


def test_old_protocol_rejected():
    with pytest.raises(FormatError, match=r"2\.11.*2\.12"):
        bzimage.parse(bytes(synthetic(version=0x020B)))


def test_zimage_rejected():
    with pytest.raises(FormatError, match="zImage"):
        bzimage.parse(bytes(synthetic(loadflags=0)))


def test_payload_past_the_end_rejected():
    data = synthetic()
    struct.pack_into("<II", data, 0x248, 0x300, 0x200)
    with pytest.raises(FormatError, match="payload"):
        bzimage.parse(bytes(data))


def test_zero_setup_sects_means_four():
    data = synthetic(setup_sects=4)
    data[0x1F1] = 0
    assert bzimage.parse(bytes(data)).header.setup_sects == 4


def test_load_names_missing_file(tmp_path):
    with pytest.raises(NotFoundError):
        bzimage.load(tmp_path / "nope")


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "vmlinuz"
    path.write_bytes(bytes(synthetic()))
    assert bzimage.load(path).header.cmdline_size == 2047


# -- the zero page


def test_e820_layout():
    e820 = boot_params.e820_map([(0, 256 * MIB)])
    assert [(e.addr, e.size, e.type) for e in e820] == [
        (0, 0x9FC00, boot_params.E820_RAM),
        (0x9FC00, 0x100000 - 0x9FC00, boot_params.E820_RESERVED),
        (0x100000, 256 * MIB - 0x100000, boot_params.E820_RAM),
    ]


def test_e820_with_ram_above_4g():
    e820 = boot_params.e820_map([(0, 0xC000_0000), (1 << 32, (1 << 32) + MIB * 1024)])
    assert (e820[-1].addr, e820[-1].size, e820[-1].type) == (1 << 32, 1024 * MIB, boot_params.E820_RAM)
    assert len(e820) == 4


def test_e820_rejects_ram_not_reaching_1m():
    with pytest.raises(UsageError):
        boot_params.e820_map([(0, 0x80000)])


def test_zero_page_fields():
    header = bzimage.parse(bytes(synthetic())).header
    e820 = boot_params.e820_map([(0, 128 * MIB)])
    page = boot_params.build(
        header, code32_start=0x100000, cmdline_addr=CMDLINE_ADDR, e820=e820, initrd_addr=0x7000000, initrd_size=0x1234
    )
    assert len(page) == 4096
    raw = header.raw  # copied verbatim except for the fields a loader owns (0x1fa, 0x210-0x22b)
    assert page[0x202:0x210] == raw[0x202 - 0x1F1 : 0x210 - 0x1F1]
    assert page[0x22C:0x26C] == raw[0x22C - 0x1F1 : 0x26C - 0x1F1]
    assert page[0x1EF] == 0  # sentinel
    assert struct.unpack_from("<H", page, 0x1FA)[0] == 0xFFFF  # vid_mode "normal"
    assert page[0x210] == 0xFF  # type_of_loader
    assert page[0x211] == 0x01 | 0x80  # LOADED_HIGH | CAN_USE_HEAP
    assert struct.unpack_from("<I", page, 0x214)[0] == 0x100000
    assert struct.unpack_from("<II", page, 0x218) == (0x7000000, 0x1234)  # ramdisk_image, ramdisk_size
    assert struct.unpack_from("<H", page, 0x224)[0] == 0xFE00  # heap_end_ptr
    assert struct.unpack_from("<I", page, 0x228)[0] == CMDLINE_ADDR  # cmd_line_ptr
    assert page[0x1E8] == 3  # e820_entries
    entries = [struct.unpack_from("<QQI", page, 0x2D0 + 20 * i) for i in range(3)]
    assert entries == [(e.addr, e.size, e.type) for e in e820]
    assert page[0x2D0 + 60 : 0x2D0 + 80] == bytes(20)
    assert page[0x0C0:0x0CC] == bytes(12)  # ext_ramdisk_image/size, ext_cmd_line_ptr: all below 4 GiB


def test_zero_page_of_the_real_kernel_keeps_its_header(kernel_bytes):
    header = bzimage.parse(kernel_bytes).header
    page = boot_params.build(header, code32_start=0x100000, cmdline_addr=CMDLINE_ADDR, e820=[])
    assert page[0x202:0x206] == b"HdrS"
    assert page[0x206:0x208] == kernel_bytes[0x206:0x208]
    assert page[0x236:0x238] == kernel_bytes[0x236:0x238]  # xloadflags
    assert page[0x260:0x264] == kernel_bytes[0x260:0x264]  # init_size


def test_too_many_e820_entries():
    header = bzimage.parse(bytes(synthetic())).header
    e820 = [boot_params.E820Entry(i * 4096, 4096, 1) for i in range(129)]
    with pytest.raises(UsageError):
        boot_params.build(header, code32_start=0x100000, cmdline_addr=CMDLINE_ADDR, e820=e820)


# -- initrd placement


def test_initrd_goes_to_the_top_of_ram_page_aligned():
    header = bzimage.parse(bytes(synthetic())).header
    addr = boot_params.place_initrd(0x1801, header, 256 * MIB, 80 * MIB)
    assert addr % 4096 == 0
    assert addr + 0x1801 <= 256 * MIB
    assert 256 * MIB - (addr + 0x1801) < 4096


def test_initrd_respects_initrd_addr_max():
    data = synthetic()
    struct.pack_into("<I", data, 0x22C, 0x37FFFFFF)
    header = bzimage.parse(bytes(data)).header
    addr = boot_params.place_initrd(MIB, header, 2048 * MIB, 80 * MIB)
    assert addr + MIB - 1 <= 0x37FFFFFF
    assert addr == 0x38000000 - MIB


def test_initrd_that_would_overlap_the_kernel_is_refused():
    header = bzimage.parse(bytes(synthetic())).header
    with pytest.raises(UsageError, match="more memory"):
        boot_params.place_initrd(60 * MIB, header, 128 * MIB, 80 * MIB)


def test_real_initrd_file_sizes_are_placed(tmp_path: Path):
    header = bzimage.parse(bytes(synthetic())).header
    for size in (1, 4095, 4096, 4097, 30 * MIB):
        addr = boot_params.place_initrd(size, header, 256 * MIB, 80 * MIB)
        assert addr >= 80 * MIB and addr + size <= 256 * MIB
