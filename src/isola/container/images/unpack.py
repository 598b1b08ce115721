"""Applying one layer tarball to an empty directory that overlayfs will later stack: regular entries as they are,
whiteouts as overlayfs wants them (`.wh.NAME` → a 0/0 character device NAME; `.wh..wh..opq` → the directory's
`trusted.overlay.opaque=y`), so that the layers are shared between images and never copied into one tree.

Hostile layers are the point of the care taken here. Names are checked (no absolute paths, no `..`), and every
entry is created relative to directory descriptors opened with O_NOFOLLOW, one component at a time, so an
entry cannot be written through a symlink (`etc -> /etc`, then `etc/passwd`) to land outside the layer. Hard
links may only name files of the same layer, found the same way.

Compression is found from the bytes (gzip, zstd or plain tar), whatever the media type claims; zstd goes through
the `zstd` tool (Debian's `zstd`, in the Makefile), as the standard library has no zstd.
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import stat
import subprocess
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from isola.container.images.archive import safe_name
from isola.container.images.digest import CHUNK, HashingReader
from isola.errors import FormatError, UnsupportedError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
_XATTR_PREFIX = "SCHILY.xattr."


@contextmanager
def decompressed(blob: IO[bytes]) -> Iterator[IO[bytes]]:
    """The uncompressed tar stream of a layer blob, a real file of the store (zstd reads it directly)."""
    head = blob.read(4)
    blob.seek(0)
    if head.startswith(_GZIP):
        with gzip.GzipFile(fileobj=blob, mode="rb") as plain:
            yield plain  # type: ignore[misc]
    elif head.startswith(_ZSTD):
        if shutil.which("zstd") is None:
            raise UnsupportedError("a zstd-compressed layer needs the zstd tool (apt-get install zstd)")
        os.lseek(blob.fileno(), 0, os.SEEK_SET)  # a buffered seek(0) may not move the descriptor zstd reads
        proc = subprocess.Popen(["zstd", "-dcq"], stdin=blob, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        try:
            yield proc.stdout
        finally:
            proc.stdout.close()
            failed = proc.wait() != 0
        if failed:
            raise FormatError("corrupt zstd layer")
    else:
        yield blob


def _open_dir(parent: int, name: str, entry: str, *, create: bool) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise FormatError(f"layer entry {entry!r}: {name!r} does not exist in this layer") from None
        os.mkdir(name, 0o755, dir_fd=parent)
        return os.open(name, flags, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise FormatError(f"layer entry {entry!r} goes through {name!r}, which is not a directory") from None
        raise


class _Layer:
    """The layer directory being filled, reached only through descriptors."""

    def __init__(self, root: Path) -> None:
        self.root = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []

    def close(self) -> None:
        os.close(self.root)

    @contextmanager
    def parent(self, path: str, *, create: bool = True) -> Iterator[tuple[int, str]]:
        """(a descriptor of the parent directory of `path`, its last component)."""
        parts = path.split("/")
        fd = os.dup(self.root)
        try:
            for part in parts[:-1]:
                nxt = _open_dir(fd, part, path, create=create)
                os.close(fd)
                fd = nxt
            yield fd, parts[-1]
        finally:
            os.close(fd)

    def apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        path = safe_name(member.name, "layer")
        base = path.rsplit("/", 1)[-1]
        if not path:
            return  # the layer's root itself
        if base == OPAQUE:
            with self.parent(path) as (fd, _):
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT):
            with self.parent(path) as (fd, _):
                name = base[len(WHITEOUT) :]
                _remove(fd, name)
                os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=fd)
            return
        with self.parent(path) as (fd, name):
            if member.isdir():
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if not stat.S_ISDIR(st.st_mode):
                        _remove(fd, name)
                        os.mkdir(name, 0o700, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(name, 0o700, dir_fd=fd)
                self.dirs.append((path, member))  # modes and times last, once the children are in
                return
            _remove(fd, name)
            if member.isreg():
                src = tar.extractfile(member)
                assert src is not None
                out = os.open(
                    name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd
                )
                with os.fdopen(out, "wb") as f:
                    shutil.copyfileobj(src, f, CHUNK)
            elif member.issym():
                os.symlink(member.linkname, name, dir_fd=fd)
            elif member.islnk():
                target = safe_name(member.linkname, "layer")
                with self.parent(target, create=False) as (tfd, tname):
                    try:
                        os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        raise FormatError(f"layer entry {path!r}: hard link to {target!r}, not in this layer") from None
            elif member.ischr() or member.isblk() or member.isfifo():
                kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
                os.mknod(name, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=fd)
            else:
                raise FormatError(f"layer entry {path!r}: unsupported tar entry type {member.type!r}")
            self._attributes(fd, name, member)

    def _attributes(self, fd: int, name: str, member: tarfile.TarInfo) -> None:
        os.chown(name, member.uid, member.gid, dir_fd=fd, follow_symlinks=False)
        if not member.issym():
            os.chmod(name, member.mode & 0o7777, dir_fd=fd)  # after chown, which clears setuid bits
            for key, value in member.pax_headers.items():
                if key.startswith(_XATTR_PREFIX):
                    target = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    try:
                        os.setxattr(f"/proc/self/fd/{target}", key[len(_XATTR_PREFIX) :], value.encode("latin-1"))
                    finally:
                        os.close(target)
        os.utime(name, ns=(int(member.mtime * 1e9),) * 2, dir_fd=fd, follow_symlinks=False)

    def finish(self) -> None:
        for path, member in reversed(self.dirs):
            with self.parent(path) as (fd, name):
                self._attributes(fd, name, member)


def _remove(fd: int, name: str) -> None:
    """Unlink whatever `name` is in this layer (a later entry replaces an earlier one)."""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        try:
            for child in os.listdir(sub):
                _remove(sub, child)
        finally:
            os.close(sub)
        os.rmdir(name, dir_fd=fd)
    else:
        os.unlink(name, dir_fd=fd)


def apply_layer(blob: IO[bytes], dest: Path) -> str:
    """Unpack the layer `blob` (any compression) into the empty directory `dest`; returns the digest of the
    uncompressed tar (its diff_id), for the caller to check before the layer is used."""
    layer = _Layer(dest)
    try:
        with decompressed(blob) as plain:
            hashing = HashingReader(plain)
            try:
                with tarfile.open(fileobj=hashing, mode="r|") as tar:  # type: ignore[call-overload]
                    for member in tar:
                        layer.apply(tar, member)
                hashing.drain()
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise FormatError(f"corrupt layer tarball: {exc}") from None
        layer.finish()
    finally:
        layer.close()
    return hashing.digest()
