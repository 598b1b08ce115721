"""Content digests: every blob isola reads from an image is named by `sha256:<hex>` and checked against it
before anything is built from it, so a corrupted or tampered tarball is refused instead of half used."""

from __future__ import annotations

import hashlib
import re
from typing import IO

from isola.errors import ChecksumError, FormatError

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
CHUNK = 1 << 20


def check(digest: object, what: str) -> str:
    """`digest` if it is a well-formed sha256 digest; the only algorithm isola stores."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise FormatError(f"{what}: {digest!r} is not a sha256 digest (sha256:<64 hex digits>)")
    return digest


def of_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[1]


def verify_bytes(data: bytes, expected: str, what: str) -> bytes:
    """`data` if it hashes to `expected`, else a ChecksumError naming `what`."""
    actual = of_bytes(data)
    if actual != expected:
        raise ChecksumError(f"{what}: digest mismatch: expected {expected}, got {actual}")
    return data


class HashingReader:
    """A read-only stream that hashes what passes through it; `digest()` after the last read. Lets a layer be
    copied or unpacked in one pass and verified at the end (the result is discarded on a mismatch)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Read to the end (a tar reader stops at the end-of-archive blocks; the digest covers the padding)."""
        while self.read(CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
