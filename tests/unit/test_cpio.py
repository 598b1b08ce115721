"""The newc writer and reader, and initramfs spec validation, checked byte by byte without external tools."""

from __future__ import annotations

import gzip
import io
import json
import lzma
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isola.assets.cpio import (
    HEADER_SIZE,
    CpioEntry,
    CpioWriter,
    DeterministicGzip,
    iter_entries,
    read_archive,
)
from isola.assets.initramfs import Dir, Fifo, File, ImageSpec, Node, Symlink, load_spec, spec_from_document
from isola.errors import FormatError, InvalidSpecError, NotFoundError


def _archive(build: Callable[[CpioWriter], None], mtime: int = 0) -> bytes:
    out = io.BytesIO()
    with CpioWriter(out, mtime=mtime) as writer:
        build(writer)
    return out.getvalue()


def _headers(data: bytes) -> list[tuple[list[int], bytes, int]]:
    """(fields, name, offset of the header) for every member, walking the raw bytes by hand."""
    out = []
    offset = 0
    while True:
        assert offset % 4 == 0
        assert data[offset : offset + 6] == b"070701"
        fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        namesize = fields[11]
        name = data[offset + HEADER_SIZE : offset + HEADER_SIZE + namesize]
        assert name.endswith(b"\0")
        out.append((fields, name[:-1], offset))
        if name[:-1] == b"TRAILER!!!":
            return out
        offset += HEADER_SIZE + namesize
        offset += -offset % 4
        offset += fields[6]
        offset += -offset % 4


def test_header_of_a_regular_file_is_byte_exact() -> None:
    data = _archive(lambda w: w.add_file("hello", b"hi\n", mode=0o640, uid=1000, gid=100), mtime=0x5F5E100)
    expected_header = (
        b"070701"
        + b"00000001"  # ino
        + b"000081A0"  # S_IFREG | 0640
        + b"000003E8"  # uid 1000
        + b"00000064"  # gid 100
        + b"00000001"  # nlink
        + b"05F5E100"  # mtime
        + b"00000003"  # filesize
        + b"00000000" * 4  # devmajor, devminor, rdevmajor, rdevminor
        + b"00000006"  # namesize including the NUL
        + b"00000000"  # check
    )
    # 110 + 6 = 116 is already a multiple of 4: no name padding; 3 data bytes get one NUL.
    assert data[:116] == expected_header + b"hello\0"
    assert data[116:120] == b"hi\n\0"
    assert data[120:126] == b"070701"


@pytest.mark.parametrize("name", ["a", "ab", "abc", "abcd", "abcde", "dir/x", "a" * 100])
@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5])
def test_name_and_data_are_padded_to_four_bytes(name: str, size: int) -> None:
    payload = bytes(range(size))
    data = _archive(lambda w: w.add_file(name, payload))
    (_, got_name, start), (_, trailer, trailer_at) = _headers(data)
    assert got_name == name.encode()
    data_at = start + HEADER_SIZE + len(name) + 1
    data_at += -data_at % 4
    assert data[data_at : data_at + size] == payload
    assert set(data[data_at + size : trailer_at]) <= {0}
    assert trailer_at % 4 == 0 and trailer == b"TRAILER!!!"
    assert len(data) % 4 == 0


def test_every_kind_gets_its_type_bits_and_fields() -> None:
    def build(w: CpioWriter) -> None:
        w.add_dir("d", mode=0o700)
        w.add_symlink("d/link", "../target")
        w.add_device("d/console", "char", 5, 1)
        w.add_device("d/sda", "block", 8, 16, mode=0o660, gid=6)
        w.add_fifo("d/fifo", mode=0o620)

    members = _headers(_archive(build))
    by_name = {name: fields for fields, name, _ in members}
    assert by_name[b"d"][1] == stat.S_IFDIR | 0o700 and by_name[b"d"][4] == 2
    link = by_name[b"d/link"]
    assert link[1] == stat.S_IFLNK | 0o777 and link[6] == len("../target")
    assert by_name[b"d/console"][1] == stat.S_IFCHR | 0o600
    assert by_name[b"d/console"][9:11] == [5, 1]
    assert by_name[b"d/sda"][1] == stat.S_IFBLK | 0o660
    assert by_name[b"d/sda"][9:11] == [8, 16] and by_name[b"d/sda"][3] == 6
    assert by_name[b"d/fifo"][1] == stat.S_IFIFO | 0o620
    assert [fields[0] for fields, _, _ in members] == [1, 2, 3, 4, 5, 0]  # trailer has inode 0


def test_trailer_ends_the_archive() -> None:
    data = _archive(lambda w: w.add_dir("x"))
    fields, name, offset = _headers(data)[-1]
    assert name == b"TRAILER!!!"
    assert fields[1] == 0 and fields[6] == 0 and fields[4] == 1
    assert data[offset + HEADER_SIZE + 11 :] == b"\0\0\0"  # 110 + 11 = 121, padded to 124
    assert len(data) == offset + 124


def test_output_is_deterministic_and_mtime_is_applied_everywhere() -> None:
    def build(w: CpioWriter) -> None:
        w.add_dir("etc")
        w.add_file("etc/hostname", b"guest\n")
        w.add_symlink("sh", "busybox")

    assert _archive(build) == _archive(build)
    members = _headers(_archive(build, mtime=1234567))
    assert {fields[5] for fields, name, _ in members if name != b"TRAILER!!!"} == {1234567}
    assert {fields[5] for fields, _, _ in _headers(_archive(build))} == {0}


def test_gzip_stream_is_deterministic_with_no_time_or_name() -> None:
    def compress(payload: bytes) -> bytes:
        raw = io.BytesIO()
        raw.name = "/some/temp/file"  # GzipFile would record it in the header if not told otherwise
        with DeterministicGzip(raw) as gz, CpioWriter(gz) as writer:
            writer.add_file("f", payload)
        return raw.getvalue()

    first = compress(b"x" * 1000)
    assert first == compress(b"x" * 1000)
    assert first[:3] == b"\x1f\x8b\x08"
    assert first[3] == 0  # no FNAME, no FEXTRA, no comment
    assert first[4:8] == b"\0\0\0\0"  # MTIME
    assert [e.data for e in iter_entries(io.BytesIO(gzip.decompress(first)))] == [b"x" * 1000]


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "..", "a//b", "./a", "a/", "a/.", "nul\0byte", "bad\udcffutf8"])
def test_bad_names_are_rejected_naming_the_entry(name: str) -> None:
    with pytest.raises(InvalidSpecError) as info:
        _archive(lambda w: w.add_file(name, b""))
    if name:
        assert repr(name) in str(info.value)


def test_duplicate_names_are_rejected() -> None:
    def build(w: CpioWriter) -> None:
        w.add_dir("bin")
        w.add_symlink("bin", "x")

    with pytest.raises(InvalidSpecError, match=r"'bin': added twice"):
        _archive(build)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda w: w.add_file("f", b"", mode=0o10000), "mode"),
        (lambda w: w.add_dir("d", uid=2**32), "uid 4294967296"),
        (lambda w: w.add_fifo("p", gid=-1), "gid -1"),
        (lambda w: w.add_device("n", "char", 2**32, 0), "device major"),
        (lambda w: w.add_device("n", "pipe", 1, 1), "'pipe'"),
        (lambda w: w.add_symlink("l", ""), "symlink target"),
    ],
)
def test_out_of_range_fields_are_rejected(call: Callable[[CpioWriter], None], message: str) -> None:
    with pytest.raises(InvalidSpecError, match=message):
        _archive(call)


def test_mtime_must_fit_the_header() -> None:
    with pytest.raises(InvalidSpecError, match="mtime"):
        CpioWriter(io.BytesIO(), mtime=2**32)


def test_stream_of_the_wrong_length_is_an_error() -> None:
    with pytest.raises(FormatError, match="short"):
        _archive(lambda w: w.add_file_stream("f", io.BytesIO(b"abc"), 4))
    with pytest.raises(FormatError, match="longer"):
        _archive(lambda w: w.add_file_stream("f", io.BytesIO(b"abcde"), 4))


def test_stream_is_copied_like_bytes() -> None:
    big = bytes(range(256)) * 5000  # larger than one read chunk
    streamed = _archive(lambda w: w.add_file_stream("f", io.BytesIO(big), len(big), mode=0o600))
    assert streamed == _archive(lambda w: w.add_file("f", big, mode=0o600))


def test_no_trailer_when_the_with_block_fails() -> None:
    out = io.BytesIO()
    with pytest.raises(InvalidSpecError), CpioWriter(out) as writer:
        writer.add_dir("ok")
        writer.add_dir("/bad")
    assert b"TRAILER!!!" not in out.getvalue()
    with pytest.raises(FormatError, match="without a TRAILER"):
        list(iter_entries(io.BytesIO(out.getvalue())))


def test_close_twice_writes_one_trailer_and_blocks_further_members() -> None:
    out = io.BytesIO()
    writer = CpioWriter(out)
    writer.close()
    writer.close()
    assert out.getvalue().count(b"TRAILER!!!") == 1
    with pytest.raises(RuntimeError):
        writer.add_dir("late")


# --- reader -------------------------------------------------------------------------------------------------


def test_reader_rejects_garbage() -> None:
    good = _archive(lambda w: w.add_file("f", b"data"))
    with pytest.raises(FormatError, match="bad magic"):
        list(iter_entries(io.BytesIO(b"070707" + good[6:])))
    with pytest.raises(FormatError, match="truncated"):
        list(iter_entries(io.BytesIO(good[:50])))
    with pytest.raises(FormatError, match="truncated"):
        list(iter_entries(io.BytesIO(good[: HEADER_SIZE + 4])))
    with pytest.raises(FormatError, match="hexadecimal"):
        list(iter_entries(io.BytesIO(good[:6] + b"zzzzzzzz" + good[14:])))


def test_read_archive_detects_compression(tmp_path: Path) -> None:
    plain = _archive(lambda w: w.add_symlink("sh", "busybox"))
    (tmp_path / "plain").write_bytes(plain)
    (tmp_path / "gz").write_bytes(gzip.compress(plain))
    (tmp_path / "xz").write_bytes(lzma.compress(plain))
    (tmp_path / "badgz").write_bytes(gzip.compress(plain)[:-12])
    for name in ("plain", "gz"):
        [entry] = read_archive(tmp_path / name)
        assert (entry.name, entry.link_target) == ("sh", "busybox")
    with pytest.raises(FormatError, match="xz-compressed"):
        read_archive(tmp_path / "xz")
    with pytest.raises(FormatError, match="badgz"):
        read_archive(tmp_path / "badgz")
    with pytest.raises(NotFoundError):
        read_archive(tmp_path / "missing")


_names = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.é", min_size=1, max_size=12).filter(
        lambda s: s not in (".", "..")
    ),
    min_size=1,
    max_size=3,
).map("/".join)
_ids = st.integers(min_value=0, max_value=2**32 - 1)
_perm = st.integers(min_value=0, max_value=0o7777)
_member = st.one_of(
    st.tuples(st.just("file"), _perm, _ids, _ids, st.binary(max_size=70)),
    st.tuples(st.just("dir"), _perm, _ids, _ids, st.just(b"")),
    st.tuples(st.just("symlink"), st.just(0o777), _ids, _ids, _names.map(str.encode)),
    st.tuples(st.sampled_from(["char", "block"]), _perm, _ids, _ids, st.tuples(_ids, _ids)),
    st.tuples(st.just("fifo"), _perm, _ids, _ids, st.just(b"")),
)
_TYPE = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "fifo": stat.S_IFIFO}
_TYPE |= {"char": stat.S_IFCHR, "block": stat.S_IFBLK}


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_names, _member, max_size=12), _ids)
def test_reader_returns_what_the_writer_wrote(members: dict[str, tuple], mtime: int) -> None:  # type: ignore[type-arg]
    out = io.BytesIO()
    with CpioWriter(out, mtime=mtime) as w:
        for name, (kind, perm, uid, gid, extra) in members.items():
            if kind == "file":
                w.add_file(name, extra, mode=perm, uid=uid, gid=gid)
            elif kind == "dir":
                w.add_dir(name, mode=perm, uid=uid, gid=gid)
            elif kind == "symlink":
                w.add_symlink(name, extra.decode(), uid=uid, gid=gid)
            elif kind == "fifo":
                w.add_fifo(name, mode=perm, uid=uid, gid=gid)
            else:
                w.add_device(name, kind, *extra, mode=perm, uid=uid, gid=gid)
    got = list(iter_entries(io.BytesIO(out.getvalue())))
    expected = []
    for ino, (name, (kind, perm, uid, gid, extra)) in enumerate(members.items(), start=1):
        rdev = extra if kind in ("char", "block") else (0, 0)
        data = extra if kind in ("file", "symlink") else b""
        nlink = 2 if kind == "dir" else 1
        expected.append(CpioEntry(name, _TYPE[kind] | perm, uid, gid, nlink, mtime, ino, rdev[0], rdev[1], data))
    assert got == expected


# --- initramfs specs ----------------------------------------------------------------------------------------


def test_parents_are_created_before_children_and_explicit_dirs_are_hoisted() -> None:
    spec = ImageSpec(
        (
            File("/usr/lib/x.so", b"x"),
            Symlink("/lib", "usr/lib"),
            Dir("/usr", mode=0o700, uid=5),
        )
    )
    assert [(name, type(e).__name__) for name, e in spec.members()] == [
        ("usr", "Dir"),
        ("usr/lib", "Dir"),
        ("usr/lib/x.so", "File"),
        ("lib", "Symlink"),
    ]
    assert next(e for name, e in spec.members() if name == "usr") == Dir("/usr", mode=0o700, uid=5)


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ((Dir("/"),), "entries[0].path"),
        ((Dir("/a"), File("a/../b", b"")), "entries[1].path"),
        ((Dir("/a"), Dir("a/")), "entries[1].path"),
        ((File("/bin", b""), File("/bin/sh", b"")), "entries[1].path"),
        ((Dir("/d", mode=0o17777),), "entries[0].mode"),
        ((Node("/n", "char", 1, -3),), "entries[0].minor"),
        ((Symlink("/l", ""),), "entries[0].target"),
        ((Dir("/d", uid=2**32),), "entries[0].uid"),
    ],
)
def test_invalid_specs_name_the_field(entries: tuple[Dir | File | Node | Symlink, ...], field: str) -> None:
    with pytest.raises(InvalidSpecError) as info:
        ImageSpec(entries)
    assert info.value.field == field
    assert str(info.value).startswith(field + ": ")


def test_duplicate_paths_name_both_entries() -> None:
    with pytest.raises(InvalidSpecError, match=r"entries\[2\].path: 'etc' is also entries\[0\]"):
        ImageSpec((Dir("/etc"), File("/etc/x", b""), Dir("etc")))


def test_json_document_becomes_a_spec(tmp_path: Path) -> None:
    (tmp_path / "init.sh").write_bytes(b"#!/bin/sh\n")
    doc = {
        "mtime": 7,
        "entries": [
            {"type": "file", "path": "/init", "source": "init.sh", "mode": "0755"},
            {"type": "file", "path": "/etc/motd", "content": "hi\n", "uid": 1, "gid": 2},
            {"type": "file", "path": "/blob", "content_base64": "AAEC"},
            {"type": "dir", "path": "/tmp", "mode": "1777"},
            {"type": "symlink", "path": "/bin/sh", "target": "busybox"},
            {"type": "node", "path": "/dev/sda", "kind": "block", "major": 8, "minor": 0, "mode": "0o660"},
            {"type": "fifo", "path": "/run/ctl"},
        ],
    }
    spec = spec_from_document(doc, base_dir=tmp_path)
    assert spec.mtime == 7
    assert spec.entries == (
        File("/init", tmp_path / "init.sh", mode=0o755),
        File("/etc/motd", b"hi\n", uid=1, gid=2),
        File("/blob", b"\0\1\2"),
        Dir("/tmp", mode=0o1777),
        Symlink("/bin/sh", "busybox"),
        Node("/dev/sda", "block", 8, 0, mode=0o660),
        Fifo("/run/ctl", mode=0o644),
    )


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], None),
        ({"entries": {}}, "entries"),
        ({"entries": [], "extra": 1}, "extra"),
        ({"entries": [], "mtime": "0"}, "mtime"),
        ({"entries": [1]}, "entries[0]"),
        ({"entries": [{"path": "/x"}]}, "entries[0].type"),
        ({"entries": [{"type": "sock", "path": "/x"}]}, "entries[0].type"),
        ({"entries": [{"type": "dir"}]}, "entries[0].path"),
        ({"entries": [{"type": "dir", "path": "/x", "mode": 493}]}, "entries[0].mode"),
        ({"entries": [{"type": "dir", "path": "/x", "mode": "0955"}]}, "entries[0].mode"),
        ({"entries": [{"type": "dir", "path": "/x", "uid": True}]}, "entries[0].uid"),
        ({"entries": [{"type": "dir", "path": "/x", "target": "y"}]}, "entries[0].target"),
        ({"entries": [{"type": "dir", "path": "/a"}, {"type": "dir", "path": "/b/../c"}]}, "entries[1].path"),
        ({"entries": [{"type": "file", "path": "/x"}]}, "entries[0]"),
        ({"entries": [{"type": "file", "path": "/x", "content": "a", "source": "b"}]}, "entries[0]"),
        ({"entries": [{"type": "file", "path": "/x", "content_base64": "!!"}]}, "entries[0].content_base64"),
        ({"entries": [{"type": "file", "path": "/x", "source": "missing"}]}, "entries[0].source"),
        ({"entries": [{"type": "file", "path": "/x", "content": "\ud800"}]}, "entries[0].content"),
        ({"entries": [{"type": "symlink", "path": "/x"}]}, "entries[0].target"),
        ({"entries": [{"type": "node", "path": "/x", "kind": "pipe"}]}, "entries[0].kind"),
        ({"entries": [{"type": "node", "path": "/x", "kind": "char", "major": 1}]}, "entries[0].minor"),
    ],
)
def test_bad_json_documents_name_the_field(tmp_path: Path, doc: object, field: str | None) -> None:
    with pytest.raises(InvalidSpecError) as info:
        spec_from_document(doc, base_dir=tmp_path)
    assert info.value.field == field


def test_load_spec_reports_the_file_and_json_errors(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text('{"entries": [')
    with pytest.raises(InvalidSpecError, match=r"spec.json: not valid JSON: .* line 1 column 14"):
        load_spec(path)
    path.write_text(json.dumps({"entries": [{"type": "dir", "path": "/x", "mode": 1}]}))
    with pytest.raises(InvalidSpecError, match=r"spec.json: entries\[0\].mode: 1 is not an octal") as info:
        load_spec(path)
    assert info.value.field == "entries[0].mode"
    with pytest.raises(NotFoundError):
        load_spec(tmp_path / "nope.json")
