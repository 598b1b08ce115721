"""An ELF vmlinux and PVH, without KVM: Debian's real vmlinux (unpacked from the cached bzImage), hand-made ELF
files broken in every way the parser checks, the `hvm_start_info` layout field by field (offsets from Xen's
public `arch-x86/hvm/start_info.h`), and the zero page an ELF kernel gets for its `startup_64` entry."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isola import paths
from isola.assets import manifest
from isola.errors import FormatError, NotFoundError, UsageError
from isola.vmm.nested.image import pvh_kernel
from isola.vmm.x86 import boot_params, bzimage, gdt, pvh, vmlinux
from isola.vmm.x86.layout import CMDLINE_ADDR, GDT_ADDR, ZERO_PAGE_ADDR

MIB = 1 << 20
TEXT = 0x100_0000  # where Debian's kernel (and the hand-made ones here) load: 16 MiB


# -- Debian's vmlinux


@pytest.fixture(scope="module")
def bzimage_path() -> Path:
    try:
        return manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "amd64", "kernel")
    except NotFoundError as exc:
        pytest.skip(f"amd64 kernel not cached (isola assets fetch): {exc.message}")


@pytest.fixture(scope="module")
def vmlinux_bytes(bzimage_path: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("vmlinux") / "vmlinux"
    pvh_kernel(bzimage_path, out)
    return out.read_bytes()


def test_debians_vmlinux(vmlinux_bytes, bzimage_path):
    image = vmlinux.parse(vmlinux_bytes, "vmlinux")
    paddrs = [s.paddr for s in image.segments]
    assert paddrs == sorted(paddrs) and len(paddrs) >= 2
    assert all(a.end <= b.paddr for a, b in zip(image.segments, image.segments[1:], strict=False))
    assert image.entry == image.footprint[0] == TEXT  # CONFIG_PHYSICAL_START: e_entry is physical
    assert image.footprint[1] < 256 * MIB
    # Placed by p_paddr, each entry lands on its code: startup_64 first sets its stack (`lea …(%rip), %rsp`),
    # pvh_start_xen (arch/x86/platform/pvh/head.S) begins with `cld`.
    text = image.segments[0]
    assert bytes(text.data[image.entry - text.paddr :][:3]) == b"\x48\x8d\x25"
    assert image.pvh_entry is not None and image.pvh_entry != image.entry
    assert text.data[image.pvh_entry - text.paddr] == 0xFC
    release = bzimage.load(bzimage_path).release
    assert image.release and release.split()[0] == image.release


def test_a_truncated_vmlinux_is_refused(vmlinux_bytes):
    with pytest.raises(FormatError, match="vmlinux is truncated"):
        vmlinux.parse(vmlinux_bytes[: 4 * MIB], "vmlinux")


def test_a_bzimage_is_not_an_elf(bzimage_path):
    data = bzimage_path.read_bytes()
    assert not vmlinux.is_elf(data)
    with pytest.raises(FormatError, match="not an ELF file"):
        vmlinux.parse(data, "vmlinuz")


# -- hand-made ELF files


def note(name: bytes, note_type: int, desc: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + bytes(-len(b) % 4)

    return struct.pack("<III", len(name), len(desc), note_type) + pad(name) + pad(desc)


def pvh_note(address: int, size: int = 8) -> bytes:
    return note(b"Xen\0", vmlinux.XEN_ELFNOTE_PHYS32_ENTRY, address.to_bytes(size, "little"))


def make_elf(
    segments: list[tuple[int, bytes, int]] | None = None,
    *,
    notes: bytes = b"",
    entry: int = TEXT,
    ident: bytes = b"\x7fELF\x02\x01\x01",
    machine: int = 62,
    e_type: int = 2,
    phnum: int | None = None,
) -> bytes:
    """An ELF64 executable: `segments` as (paddr, file bytes, memsz) PT_LOADs, then one PT_NOTE of `notes`."""
    if segments is None:
        segments = [(TEXT, b"\x90" * 0x100, 0x1000)]
    contents = [(1, paddr, data, memsz) for paddr, data, memsz in segments]
    if notes:
        contents.append((4, 0, notes, len(notes)))
    offset = 64 + 56 * len(contents)
    phdrs, body = b"", b""
    for p_type, paddr, data, memsz in contents:
        vaddr = 0xFFFF_FFFF_8000_0000 | paddr if p_type == 1 else 0  # the kernel's high mapping; never read
        phdrs += struct.pack("<IIQQQQQQ", p_type, 5, offset + len(body), vaddr, paddr, len(data), memsz, 0x1000)
        body += data
    count = len(contents) if phnum is None else phnum
    ehdr = struct.pack(
        "<16sHHIQQQIHHHHHH", ident.ljust(16, b"\0"), e_type, machine, 1, entry, 64, 0, 0, 64, 56, count, 64, 0, 0
    )
    return ehdr + phdrs + body


def test_a_minimal_elf_and_its_pvh_note():
    notes = note(b"GNU\0", 3, b"\xaa" * 20) + note(b"Linux\0", 18, b"\0" * 8) + pvh_note(TEXT + 0x40)
    banner = b"\0Linux version 6.99.0-test (someone@example) #1\n\0"
    image = vmlinux.parse(make_elf([(TEXT, banner.ljust(0x100, b"\x90"), 0x3000)], notes=notes))
    (segment,) = image.segments
    assert (segment.paddr, bytes(segment.data), segment.memsz) == (TEXT, banner.ljust(0x100, b"\x90"), 0x3000)
    assert image.footprint == (TEXT, TEXT + 0x3000)  # the BSS counts
    assert (image.entry, image.pvh_entry, image.release) == (TEXT, TEXT + 0x40, "6.99.0-test")


def test_the_pvh_note_may_hold_four_bytes_and_may_be_absent():
    assert vmlinux.parse(make_elf(notes=pvh_note(TEXT + 4, size=4))).pvh_entry == TEXT + 4
    plain = vmlinux.parse(make_elf())
    assert (plain.pvh_entry, plain.release) == (None, "")


def test_segments_are_sorted_by_physical_address_and_empty_ones_skipped():
    image = vmlinux.parse(make_elf([(TEXT + 0x20_0000, b"b", 1), (TEXT + 0x10_0000, b"", 0), (TEXT, b"a", 1)]))
    assert [s.paddr for s in image.segments] == [TEXT, TEXT + 0x20_0000]


ELF = make_elf()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"MZ" + bytes(100), "not an ELF file"),
        (ELF[:40], "truncated: 40 bytes"),
        (make_elf(ident=b"\x7fELF\x01\x01\x01"), "32-bit ELF"),
        (make_elf(ident=b"\x7fELF\x02\x02\x01"), "big-endian"),
        (make_elf(machine=183), "for AArch64, not x86-64"),
        (make_elf(e_type=3), "of type 3, not an executable"),
        (make_elf(phnum=0), "no usable program headers"),
        (make_elf(phnum=40), "program headers end past the end"),
        (ELF[:-1], "truncated: a segment at file offset"),
        (make_elf([(TEXT, b"x" * 0x20, 0x10)]), "more file bytes than memory bytes"),
        (make_elf([(0xFFFF_F000, b"x", 0x2000)], entry=0xFFFF_F000), "beyond the 4 GiB"),
        (make_elf([(TEXT, b"a" * 0x100, 0x1000), (TEXT + 0x800, b"b", 1)]), "overlap"),
        (make_elf([(TEXT, b"", 0)]), "no loadable segments"),
        (make_elf(entry=TEXT + 0x100), "entry point 0x1000100 is outside every segment"),  # in the BSS: no code
        (make_elf(notes=pvh_note(0x10_0000)), "PVH entry point 0x100000 is outside"),
        (make_elf(notes=pvh_note(0x10, size=2)), "2 bytes, not a 4- or 8-byte address"),
        (make_elf(notes=pvh_note(TEXT)[:-4]), "note runs past the end"),
    ],
)
def test_malformed_elf_files_are_refused(data, message):
    with pytest.raises(FormatError, match=message) as caught:
        vmlinux.parse(data, "bad-vmlinux")
    assert str(caught.value).startswith("bad-vmlinux")


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from([make_elf(notes=pvh_note(TEXT + 8)), make_elf([(TEXT, b"a", 1), (TEXT + 0x1000, b"b", 2)])]),
    edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 400),
)
def test_any_corruption_is_a_format_error_or_a_consistent_image(base, edits, cut):
    data = bytearray(base)
    for at, value in edits:
        if at < len(data):
            data[at] = value
    try:
        image = vmlinux.parse(bytes(data[: len(data) - cut]))
    except FormatError:
        return
    assert image.segments and all(s.end <= 1 << 32 and len(s.data) <= s.memsz for s in image.segments)
    assert any(s.paddr <= image.entry < s.paddr + len(s.data) for s in image.segments)


# -- the boot information


E820 = boot_params.e820_map([(0, 256 * MIB)])


def test_start_info_field_by_field():
    blob = pvh.build(
        0x6000, cmdline_addr=CMDLINE_ADDR, e820=E820, initrd_addr=0xF00_0000, initrd_size=0x12345, rsdp_addr=0xE0000
    )
    assert len(blob) == 56 + 32 + 3 * 24

    def u32(offset: int) -> int:
        return int(struct.unpack_from("<I", blob, offset)[0])

    def u64(offset: int) -> int:
        return int(struct.unpack_from("<Q", blob, offset)[0])

    assert u32(0) == 0x336EC578  # magic
    assert u32(4) == 1  # version: the first with a memory map
    assert u32(8) == 0  # flags
    assert u32(12) == 1  # nr_modules: the initrd
    assert u64(16) == 0x6000 + 56  # modlist_paddr: right after the structure
    assert u64(24) == CMDLINE_ADDR  # cmdline_paddr
    assert u64(32) == 0xE0000  # rsdp_paddr
    assert u64(40) == 0x6000 + 56 + 32  # memmap_paddr: after the module list
    assert u32(48) == 3  # memmap_entries
    assert u32(52) == 0  # reserved
    assert struct.unpack_from("<QQQQ", blob, 56) == (0xF00_0000, 0x12345, 0, 0)  # paddr, size, cmdline, reserved
    memmap = [struct.unpack_from("<QQII", blob, 88 + 24 * i) for i in range(3)]
    assert memmap == [(e.addr, e.size, e.type, 0) for e in E820]
    assert memmap[2] == (MIB, 255 * MIB, 1, 0)  # RAM from 1 MiB to the end


def test_start_info_without_initrd_or_rsdp():
    blob = pvh.build(0x6000, cmdline_addr=CMDLINE_ADDR, e820=E820)
    nr_modules, modlist, _cmdline, rsdp, memmap = struct.unpack_from("<IQQQQ", blob, 12)
    assert (nr_modules, modlist, rsdp, memmap) == (0, 0, 0, 0x6000 + 56)
    assert len(blob) == 56 + 3 * 24


def test_start_info_fits_between_the_gdt_and_the_zero_page():
    biggest = pvh.build(
        pvh.START_INFO_ADDR, cmdline_addr=0, e820=E820 * 42 + E820[:2], initrd_addr=1, initrd_size=1
    )  # 128 entries
    assert GDT_ADDR + len(gdt.to_bytes(gdt.boot_gdt(long_mode=False))) <= pvh.START_INFO_ADDR
    assert pvh.START_INFO_ADDR + len(biggest) <= ZERO_PAGE_ADDR
    with pytest.raises(UsageError, match="129 memory map entries"):
        pvh.build(pvh.START_INFO_ADDR, cmdline_addr=0, e820=E820 * 43)


def test_the_zero_page_of_an_elf_kernel():
    page = boot_params.build(
        vmlinux.setup_header(), code32_start=0, cmdline_addr=CMDLINE_ADDR, e820=E820, initrd_addr=0x20_0000
    )
    assert struct.unpack_from("<H", page, 0x1FE)[0] == 0xAA55  # boot_flag
    assert page[0x202:0x206] == b"HdrS"
    assert struct.unpack_from("<H", page, 0x206)[0] == 0x020C  # version 2.12
    assert page[0x210] == 0xFF  # type_of_loader
    assert page[0x211] & 0x01  # LOADED_HIGH
    assert struct.unpack_from("<I", page, 0x218)[0] == 0x20_0000  # ramdisk_image
    assert struct.unpack_from("<I", page, 0x228)[0] == CMDLINE_ADDR
    assert struct.unpack_from("<I", page, 0x22C)[0] == 0x7FFF_FFFF  # initrd_addr_max
    assert struct.unpack_from("<I", page, 0x238)[0] == 2047  # cmdline_size: COMMAND_LINE_SIZE - 1
    assert page[0x1EF] == 0 and page[0x1E8] == 3  # sentinel, e820 entries
