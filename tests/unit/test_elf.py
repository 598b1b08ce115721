"""ELF parsing: good executables parse to what the loader needs; every malformed byte string is a FormatError."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isola.errors import FormatError
from isola.linux import elf
from isola.linux.elf import EM_RISCV, EM_X86_64, ET_DYN, ET_EXEC, PF_R, PF_W, PF_X, PT_GNU_STACK, PT_INTERP, PT_LOAD

Phdr = tuple[int, int, int, int, int, int, int]  # type, flags, offset, vaddr, filesz, memsz, align

TEXT: Phdr = (PT_LOAD, PF_R | PF_X, 0, 0x10000, 0x800, 0x800, 0x1000)
DATA: Phdr = (PT_LOAD, PF_R | PF_W, 0x800, 0x11800, 0x100, 0x3000, 0x1000)
STACK: Phdr = (PT_GNU_STACK, PF_R | PF_W, 0, 0, 0, 0, 0x10)
INTERP_PATH = b"/lib/ld-linux-riscv64-lp64d.so.1"


def build_elf(
    phdrs: list[Phdr],
    *,
    entry: int = 0x10100,
    e_type: int = ET_EXEC,
    machine: int = EM_RISCV,
    flags: int = 0x5,
    size: int = 0x900,
    blobs: dict[int, bytes] | None = None,
) -> bytes:
    """An ELF64 LE file of `size` bytes: header, program headers at 64, a byte pattern elsewhere, and `blobs`
    (file offset -> bytes) written over it."""
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = elf.EHDR.pack(ident, e_type, machine, 1, entry, 64, 0, flags, 64, 56, len(phdrs), 64, 0, 0)
    table = b"".join(elf.PHDR.pack(t, f, o, v, v, fs, ms, a) for t, f, o, v, fs, ms, a in phdrs)
    data = bytearray(i * 7 & 0xFF for i in range(max(size, 64 + len(table))))
    data[: len(ehdr) + len(table)] = ehdr + table
    for at, blob in (blobs or {}).items():
        data[at : at + len(blob)] = blob
    return bytes(data)


def static_elf() -> bytes:
    return build_elf([TEXT, DATA, STACK])


def dynamic_elf() -> bytes:
    interp: Phdr = (PT_INTERP, PF_R, 0x200, 0x200, len(INTERP_PATH) + 1, len(INTERP_PATH) + 1, 1)
    text: Phdr = (PT_LOAD, PF_R | PF_X, 0, 0, 0x800, 0x800, 0x1000)
    data: Phdr = (PT_LOAD, PF_R | PF_W, 0x800, 0x1800, 0x100, 0x200, 0x1000)
    return build_elf([interp, text, data, STACK], entry=0x300, e_type=ET_DYN, blobs={0x200: INTERP_PATH + b"\0"})


def test_static_executable() -> None:
    e = elf.parse(static_elf(), machine=EM_RISCV)
    assert (e.type, e.machine, e.entry, e.phoff, e.phentsize, e.interp) == (ET_EXEC, EM_RISCV, 0x10100, 64, 56, None)
    assert e.flags & elf.EF_RISCV_RVC and e.flags & elf.EF_RISCV_FLOAT_ABI == 4  # RVC, double-float ABI
    assert [(p.vaddr, p.prot) for p in e.loads] == [(0x10000, 5), (0x11800, 3)]
    assert e.loads[1].end == 0x14800
    assert not e.executable_stack


def test_dynamic_executable_names_its_interpreter() -> None:
    e = elf.parse(dynamic_elf(), machine=EM_RISCV)
    assert e.type == ET_DYN
    assert e.interp == INTERP_PATH.decode()


def test_executable_stack_is_asked_for_with_pf_x() -> None:
    e = elf.parse(build_elf([TEXT, (PT_GNU_STACK, PF_R | PF_W | PF_X, 0, 0, 0, 0, 16)]), machine=EM_RISCV)
    assert e.executable_stack


def test_x86_64_accepted_when_asked_for() -> None:
    e = elf.parse(build_elf([TEXT], machine=EM_X86_64, flags=0), machine=EM_X86_64)
    assert elf.machine_name(e.machine) == "x86-64"


def _patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


PH1 = 64 + 56  # the second program header
BROKEN: list[tuple[str, bytes, str]] = [
    ("empty", b"", "not an ELF file"),
    ("script", b"#!/bin/sh\necho hi\n", "not an ELF file"),
    ("short", static_elf()[:40], "truncated ELF header"),
    ("elf32", _patch(static_elf(), 4, "B", 1), "32-bit ELF, expected 64-bit"),
    ("class 0", _patch(static_elf(), 4, "B", 0), "bad ELF class"),
    ("big-endian", _patch(static_elf(), 5, "B", 2), "big-endian ELF, expected little-endian"),
    ("version", _patch(static_elf(), 6, "B", 0), "unknown ELF version"),
    ("object", build_elf([TEXT], e_type=1), "ELF file is a relocatable object, not an executable"),
    ("core", build_elf([TEXT], e_type=4), "ELF file is a core dump, not an executable"),
    ("x86-64", build_elf([TEXT], machine=EM_X86_64), "ELF for x86-64, expected RISC-V"),
    ("unknown machine", build_elf([TEXT], machine=9999), "ELF for machine 9999, expected RISC-V"),
    ("quad float", build_elf([TEXT], flags=0x7), "quad-float ABI"),
    ("phentsize", _patch(static_elf(), 54, "<H", 32), "program header entries of 32 bytes, expected 56"),
    ("no phdrs", build_elf([]), "no program headers"),
    ("phnum huge", _patch(static_elf(), 56, "<H", 0xFFFF), "too many program headers"),
    ("phoff past end", _patch(static_elf(), 32, "<Q", 0x8F0), "truncated program header table"),
    ("phoff absurd", _patch(static_elf(), 32, "<Q", 1 << 63), "truncated program header table"),
    ("no PT_LOAD", build_elf([STACK]), "no loadable segments"),
    ("filesz > memsz", build_elf([TEXT, (PT_LOAD, 6, 0x800, 0x11800, 0x100, 0x80, 0x1000)]), "file size larger"),
    ("absurd memsz", build_elf([TEXT, (PT_LOAD, 6, 0x800, 0x11800, 0, 1 << 62, 0x1000)]), "absurd segment size"),
    ("beyond user space", build_elf([TEXT, (PT_LOAD, 6, 0x800, (1 << 47) - 0x800, 0, 0x1000, 0)]), "beyond the user"),
    ("past EOF", build_elf([TEXT, (PT_LOAD, 6, 0x800, 0x11800, 0x1000, 0x1000, 0x1000)]), "past the end of the file"),
    ("incongruent", build_elf([TEXT, (PT_LOAD, 6, 0x800, 0x11000, 0x100, 0x100, 0x1000)]), "differ modulo the page"),
    ("unsorted", build_elf([DATA, TEXT]), "PT_LOAD segments unsorted"),
    ("interp unterminated", _patch(dynamic_elf(), 0x200 + len(INTERP_PATH), "B", 0x41), "PT_INTERP not NUL-"),
    ("interp inner NUL", _patch(dynamic_elf(), 0x205, "B", 0), "PT_INTERP contains a NUL byte"),
    ("interp huge", _patch(dynamic_elf(), 64 + 32, "<Q", 1 << 40), "PT_INTERP of absurd length"),
    ("interp past EOF", _patch(dynamic_elf(), 64 + 8, "<Q", 0x8F0), "PT_INTERP extends past the end"),
    (
        "two interps",
        build_elf([(PT_INTERP, 4, 0x200, 0, 2, 2, 1)] * 2 + [TEXT], blobs={0x200: b"/\0"}),
        "more than one",
    ),
    ("entry in data", build_elf([TEXT, DATA], entry=0x11800), "entry point outside every executable segment"),
    ("entry nowhere", build_elf([TEXT], entry=0), "entry point outside every executable segment"),
]


@pytest.mark.parametrize(("data", "message"), [(d, m) for _, d, m in BROKEN], ids=[n for n, _, _ in BROKEN])
def test_broken_elf_is_one_clear_format_error(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as info:
        elf.parse(data, machine=EM_RISCV)
    assert message in str(info.value)


def test_overlapping_segments() -> None:
    overlapping = build_elf([TEXT, (PT_LOAD, 6, 0x700, 0x10700, 0x100, 0x100, 0x1000)])
    with pytest.raises(FormatError, match="PT_LOAD segments overlap"):
        elf.parse(overlapping, machine=EM_RISCV)


def _parse_or_format_error(data: bytes) -> None:
    try:
        elf.parse(data, machine=EM_RISCV)
    except FormatError as e:
        assert str(e) and "\n" not in str(e)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_fuzz_random_bytes(data: bytes) -> None:
    _parse_or_format_error(data)
    _parse_or_format_error(b"\x7fELF" + data)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([static_elf(), dynamic_elf()]),
    edits=st.lists(st.tuples(st.integers(0, 64 + 56 * 4 - 1), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 0x900)),
)
def test_fuzz_mutated_headers(base: bytes, edits: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(base)
    for at, value in edits:
        data[at] = value
    _parse_or_format_error(bytes(data[:cut]))


FIELD = st.one_of(
    st.sampled_from([0, 1, 0x40, 0x200, 0x800, 0xFFF, 0x1000, 0x10000, 0x10100, 0x11800, 1 << 47, (1 << 64) - 1]),
    st.integers(0, 0x20000),
    st.integers(0, (1 << 64) - 1),
)
DYNAMIC_PHDRS: list[Phdr] = [
    (PT_INTERP, PF_R, 0x200, 0x200, len(INTERP_PATH) + 1, len(INTERP_PATH) + 1, 1),
    (PT_LOAD, PF_R | PF_X, 0, 0, 0x800, 0x800, 0x1000),
    (PT_LOAD, PF_R | PF_W, 0x800, 0x1800, 0x100, 0x200, 0x1000),
]


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([(ET_EXEC, 0x10100, [TEXT, DATA, STACK]), (ET_DYN, 0x300, DYNAMIC_PHDRS)]),
    edits=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 6), FIELD), max_size=3),
    entry=st.one_of(st.none(), FIELD),
)
def test_fuzz_program_header_fields(
    base: tuple[int, int, list[Phdr]], edits: list[tuple[int, int, int]], entry: int | None
) -> None:
    """Good program headers with a few fields replaced: most inputs get past the early checks."""
    e_type, good_entry, phdrs = base
    table = [list(p) for p in phdrs]
    for i, field, value in edits:
        table[i][field] = value & 0xFFFFFFFF if field < 2 else value  # p_type and p_flags are 32-bit
    rows = [(t, f, o, v, fs, ms, a) for t, f, o, v, fs, ms, a in table]
    data = build_elf(
        rows, entry=good_entry if entry is None else entry, e_type=e_type, blobs={0x200: INTERP_PATH + b"\0"}
    )
    try:
        e = elf.parse(data, machine=EM_RISCV)
    except FormatError:
        return
    # what parse promises the loader
    loads = e.loads
    assert all(p.offset + p.filesz <= len(data) and p.filesz <= p.memsz and p.end <= elf.USER_LIMIT for p in loads)
    assert all(a.end <= b.vaddr for a, b in itertools.pairwise(loads))
    assert any(p.vaddr <= e.entry < p.end and p.flags & PF_X for p in loads)
