"""The files of an image archive, whether it is a directory (an OCI layout) or a tarball (docker save, podman
save, an OCI archive): one small interface, so the format readers never care which.

Member names of a tarball are checked before anything is read: an archive whose names climb out with `..` or
start at `/` is refused as a whole, even though nothing is extracted from the outer tarball itself.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

from isola.errors import FormatError, NotFoundError

MAX_DOCUMENT = 16 << 20
"""The largest JSON document (index, manifest, config) read into memory."""


def safe_name(name: str, where: str) -> str:
    """`name` as a relative, normalised path inside an archive or a layer, or a FormatError: absolute paths and
    `..` components would land outside the directory being built."""
    if name.startswith("/"):
        raise FormatError(f"{where}: entry {name!r} is an absolute path")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise FormatError(f"{where}: entry {name!r} climbs out with '..'")
    return "/".join(parts)


class Archive(Protocol):
    label: str

    def exists(self, name: str) -> bool: ...

    def open(self, name: str) -> IO[bytes]: ...

    def close(self) -> None: ...


def read_document(archive: Archive, name: str) -> bytes:
    """A small file (JSON) of the archive, whole."""
    with archive.open(name) as f:
        data = f.read(MAX_DOCUMENT + 1)
    if len(data) > MAX_DOCUMENT:
        raise FormatError(f"{archive.label}: {name} is larger than {MAX_DOCUMENT >> 20} MiB")
    return data


class Directory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)

    def _resolve(self, name: str) -> Path:
        return self.path / safe_name(name, self.label)

    def exists(self, name: str) -> bool:
        return self._resolve(name).is_file()

    def open(self, name: str) -> IO[bytes]:
        path = self._resolve(name)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"{self.label}: {name} is missing") from None
        except OSError as exc:
            raise FormatError(f"{self.label}: cannot read {name}: {exc.strerror}") from None

    def close(self) -> None:
        pass


class Tarball:
    """Random access to a tarball's regular files (and hard links to them), indexed once."""

    def __init__(self, path: Path) -> None:
        self.label = str(path)
        try:
            self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by close()
        except (tarfile.TarError, EOFError) as exc:
            raise FormatError(f"{path}: not a tar archive: {exc}") from None
        except OSError as exc:
            raise NotFoundError(f"{path}: {exc.strerror}") from None
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            for member in self._tar:
                self._members[safe_name(member.name, self.label)] = member
        except tarfile.TarError as exc:
            self._tar.close()
            raise FormatError(f"{path}: corrupt tar archive: {exc}") from None
        except FormatError:
            self._tar.close()
            raise

    def exists(self, name: str) -> bool:
        return safe_name(name, self.label) in self._members

    def open(self, name: str) -> IO[bytes]:
        member = self._members.get(safe_name(name, self.label))
        if member is None:
            raise NotFoundError(f"{self.label}: {name} is missing")
        if member.islnk():
            return self.open(member.linkname)
        stream = self._tar.extractfile(member) if member.isfile() else None
        if stream is None:
            raise FormatError(f"{self.label}: {name} is not a regular file")
        return stream

    def close(self) -> None:
        self._tar.close()


def open_archive(path: Path) -> Archive:
    """A directory or a tarball at `path`; a clear error for anything else."""
    if path.is_dir():
        return Directory(path)
    if not path.exists():
        raise NotFoundError(f"{path}: no such file or directory")
    if not os.access(path, os.R_OK):
        raise NotFoundError(f"{path}: not readable")
    return Tarball(path)
