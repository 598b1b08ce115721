"""The cpio ``newc`` format, the one archive format the Linux kernel unpacks as an initramfs.

Written by hand rather than by shelling out to GNU cpio because an initramfs must be reproducible (same spec,
same bytes) and must hold device nodes and root-owned files even when isola runs as an ordinary user; GNU cpio
can only archive what exists on disk with the ownership it has there.

Facts of the format this module relies on (from the kernel's early-userspace buffer-format description):
every member is a 110-byte ASCII header (magic ``070701`` and thirteen 8-digit hex fields), then the name with
its NUL, padded with NULs to a multiple of four bytes counted from the start of the archive, then the data,
padded the same way. A member named ``TRAILER!!!`` ends the archive. The kernel does not create missing
parent directories, so a writer's caller must add a directory before anything inside it.
"""

from __future__ import annotations

import gzip
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal, Protocol

from isola.errors import FormatError, InvalidSpecError, IsolaError, NotFoundError

MAGIC = b"070701"
MAGIC_CRC = b"070702"  # same layout with a checksum field; read, never written
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"
_FIELDS = 13
_MAX_FIELD = 0xFFFFFFFF
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"

# Magic numbers of the other compressions the kernel may accept, so `open_archive` can say which one it saw.
_OTHER_COMPRESSION = {
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
    b"\x02\x21\x4c\x18": "lz4",
    b"\x89LZO": "lzo",
    b"\x5d\x00\x00": "lzma",
}

DeviceKind = Literal["char", "block"]


class ReadableStream(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class WritableStream(Protocol):
    def write(self, data: bytes, /) -> int: ...


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def validate_name(name: str) -> bytes:
    """Check that `name` is a safe archive path and return its encoded form.

    The kernel creates each member at exactly the path it is given, relative to the new root; an absolute
    path, a ``..`` or an empty component would let an image write outside the tree it describes or mean two
    things.
    """
    if not name:
        raise InvalidSpecError("archive member name is empty")
    if "\0" in name:
        raise InvalidSpecError(f"archive member {name!r}: name contains a NUL byte")
    if name.startswith("/"):
        raise InvalidSpecError(f"archive member {name!r}: name must be relative (no leading '/')")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise InvalidSpecError(
                f"archive member {name!r}: name has an empty, '.' or '..' component",
                hint="write paths like 'bin/sh'",
            )
    return _encode(name, name, "name")


def _encode(name: str, text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidSpecError(f"archive member {name!r}: {what} is not valid UTF-8") from exc


def _check_field(name: str, field: str, value: int) -> None:
    if not 0 <= value <= _MAX_FIELD:
        raise InvalidSpecError(f"archive member {name!r}: {field} {value} does not fit a 32-bit cpio field")


def _check_perm(name: str, perm: int) -> None:
    if not 0 <= perm <= 0o7777:
        raise InvalidSpecError(f"archive member {name!r}: mode {perm!r} is not a permission value between 0 and 0o7777")


class CpioWriter:
    """Writes a newc archive to a binary stream, member by member, without holding file data in memory.

    Output depends only on the calls made: inode numbers count up from 1 in call order and every member gets
    the same `mtime`, so the same sequence of calls gives the same bytes. `close()` writes the trailer; the
    stream itself is left open for the caller.
    """

    def __init__(self, stream: WritableStream, *, mtime: int = 0) -> None:
        _check_field("(archive)", "mtime", mtime)
        self._out = stream
        self._mtime = mtime
        self._offset = 0
        self._next_ino = 1
        self._names: set[str] = set()
        self._closed = False

    def __enter__(self) -> CpioWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On an error the archive is abandoned, so no trailer: a truncated archive must not look complete.
        if exc_type is None:
            self.close()

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._offset += len(data)

    def _header(
        self,
        name: str,
        mode: int,
        *,
        uid: int,
        gid: int,
        nlink: int,
        size: int,
        rdev: tuple[int, int] = (0, 0),
        ino: int | None = None,
    ) -> None:
        if self._closed:
            raise RuntimeError("CpioWriter is closed")
        if ino is None:
            # Only a real member is validated and recorded; the trailer's name breaks the rules on purpose.
            encoded = validate_name(name)
            if name in self._names:
                raise InvalidSpecError(f"archive member {name!r}: added twice")
            for field, value in (("uid", uid), ("gid", gid), ("size", size)):
                _check_field(name, field, value)
            _check_field(name, "device major", rdev[0])
            _check_field(name, "device minor", rdev[1])
            self._names.add(name)
            ino = self._next_ino
            self._next_ino += 1
        else:
            encoded = name.encode("ascii")
        namesize = len(encoded) + 1
        fields = (ino, mode, uid, gid, nlink, self._mtime, size, 0, 0, rdev[0], rdev[1], namesize, 0)
        header = MAGIC + b"".join(b"%08X" % value for value in fields)
        self._write(header + encoded + b"\0")
        self._write(_pad(self._offset))

    def add_file(self, name: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        """Add a regular file whose whole content is `data`."""
        _check_perm(name, mode)
        self._header(name, stat.S_IFREG | mode, uid=uid, gid=gid, nlink=1, size=len(data))
        self._write(data)
        self._write(_pad(self._offset))

    def add_file_stream(
        self, name: str, stream: ReadableStream, size: int, *, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None:
        """Add a regular file of `size` bytes read from `stream`, for contents too big to hold in memory.

        The header states the size before the data, so a source that ends early or grows (a file changed
        while being read) would corrupt every later member; that is raised instead.
        """
        _check_perm(name, mode)
        self._header(name, stat.S_IFREG | mode, uid=uid, gid=gid, nlink=1, size=size)
        remaining = size
        while remaining:
            chunk = stream.read(min(remaining, _CHUNK))
            if not chunk:
                raise FormatError(f"archive member {name!r}: source ended {remaining} bytes short of {size}")
            self._write(chunk)
            remaining -= len(chunk)
        if stream.read(1):
            raise FormatError(f"archive member {name!r}: source is longer than the {size} bytes announced")
        self._write(_pad(self._offset))

    def add_dir(self, name: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        _check_perm(name, mode)
        self._header(name, stat.S_IFDIR | mode, uid=uid, gid=gid, nlink=2, size=0)

    def add_symlink(self, name: str, target: str, *, uid: int = 0, gid: int = 0) -> None:
        """Add a symbolic link; newc stores the target as the member's data, without a NUL."""
        if not target or "\0" in target:
            raise InvalidSpecError(f"archive member {name!r}: symlink target is empty or contains NUL")
        data = _encode(name, target, "symlink target")
        self._header(name, stat.S_IFLNK | 0o777, uid=uid, gid=gid, nlink=1, size=len(data))
        self._write(data)
        self._write(_pad(self._offset))

    def add_device(
        self,
        name: str,
        kind: DeviceKind,
        major: int,
        minor: int,
        *,
        mode: int = 0o600,
        uid: int = 0,
        gid: int = 0,
    ) -> None:
        """Add a character or block device node; the kernel creates it with mknod when unpacking."""
        if kind not in ("char", "block"):
            raise InvalidSpecError(f"archive member {name!r}: device kind {kind!r} is not 'char' or 'block'")
        _check_perm(name, mode)
        fmt = stat.S_IFCHR if kind == "char" else stat.S_IFBLK
        self._header(name, fmt | mode, uid=uid, gid=gid, nlink=1, size=0, rdev=(major, minor))

    def add_fifo(self, name: str, *, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        _check_perm(name, mode)
        self._header(name, stat.S_IFIFO | mode, uid=uid, gid=gid, nlink=1, size=0)

    def close(self) -> None:
        """Write the trailer. Calling it again does nothing, so a `with` block may also close explicitly."""
        if self._closed:
            return
        self._header(TRAILER, 0, uid=0, gid=0, nlink=1, size=0, ino=0)
        self._closed = True


class DeterministicGzip(gzip.GzipFile):
    """A gzip stream whose header carries no timestamp and no file name, so equal input gives equal bytes."""

    def __init__(self, raw: BinaryIO, *, level: int = 9) -> None:
        super().__init__(filename="", mode="wb", compresslevel=level, fileobj=raw, mtime=0)


@dataclass(frozen=True)
class CpioEntry:
    """One member as read back from an archive. `mode` holds the file type bits as well as the permissions."""

    name: str
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    ino: int
    rdev_major: int
    rdev_minor: int
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def link_target(self) -> str | None:
        return self.data.decode("utf-8", "surrogateescape") if stat.S_ISLNK(self.mode) else None


def _read_exact(stream: ReadableStream, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise FormatError(f"cpio archive is truncated inside {what}")
    return data


def iter_entries(stream: ReadableStream) -> Iterator[CpioEntry]:
    """Yield the members of an uncompressed newc archive up to its trailer.

    The kernel would go on to unpack further archives concatenated after the trailer; listing stops at the
    first, which is what a single `CpioWriter` produces.
    """
    offset = 0
    while True:
        header = stream.read(HEADER_SIZE)
        if not header:
            raise FormatError("cpio archive ends without a TRAILER!!! member")
        if len(header) != HEADER_SIZE:
            raise FormatError(f"cpio archive is truncated inside the header at offset {offset}")
        if header[:6] not in (MAGIC, MAGIC_CRC):
            raise FormatError(
                f"not a newc cpio archive: bad magic {header[:6]!r} at offset {offset}",
                hint="only the newc format (070701), the one the kernel reads, is supported",
            )
        try:
            fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(_FIELDS)]
        except ValueError as exc:
            raise FormatError(f"cpio header at offset {offset} has a field that is not hexadecimal") from exc
        ino, mode, uid, gid, nlink, mtime, size, _dmaj, _dmin, rmaj, rmin, namesize, _check = fields
        if namesize == 0:
            raise FormatError(f"cpio header at offset {offset} has an empty name")
        offset += HEADER_SIZE
        raw_name = _read_exact(stream, namesize, "a member name")
        offset += namesize
        _read_exact(stream, -offset % 4, "name padding")
        offset += -offset % 4
        name = raw_name.rstrip(b"\0").decode("utf-8", "surrogateescape")
        if name == TRAILER:
            return
        data = _read_exact(stream, size, f"the data of {name!r}")
        offset += size
        _read_exact(stream, -offset % 4, "data padding")
        offset += -offset % 4
        yield CpioEntry(name, mode, uid, gid, nlink, mtime, ino, rmaj, rmin, data)


def read_archive(path: Path) -> list[CpioEntry]:
    """All members of the archive at `path`, gzip-compressed or not, which is all `CpioWriter` produces."""
    try:
        with path.open("rb") as raw:
            head = raw.read(6)
            raw.seek(0)
            if head.startswith(_GZIP_MAGIC):
                with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                    return list(iter_entries(unzipped))
            for magic, kind in _OTHER_COMPRESSION.items():
                if head.startswith(magic):
                    raise FormatError(f"archive is {kind}-compressed; only gzip is supported")
            return list(iter_entries(raw))
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise FormatError(f"{path}: corrupt gzip stream: {exc}") from exc
    except FormatError as exc:
        raise FormatError(f"{path}: {exc.message}", hint=exc.hint) from exc
    except FileNotFoundError as exc:
        raise NotFoundError(f"{path}: no such file") from exc
    except OSError as exc:
        raise IsolaError(f"{path}: cannot read: {exc.strerror or exc}") from exc
