"""Parsing /proc/self/mountinfo, the kernel's own account of what is mounted where (proc(5))."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mount:
    mount_id: int
    parent_id: int
    root: str
    mountpoint: str
    options: frozenset[str]
    fstype: str
    source: str
    super_options: frozenset[str]


def _unescape(field: str) -> str:
    # The kernel octal-escapes space, tab, newline and backslash in paths.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse(text: str) -> list[Mount]:
    """Parse mountinfo text. Lines the kernel would never write (too few fields) are skipped."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        a, b = left.split(), right.split()
        if not sep or len(a) < 6 or len(b) < 3:
            continue
        mounts.append(
            Mount(
                mount_id=int(a[0]),
                parent_id=int(a[1]),
                root=_unescape(a[3]),
                mountpoint=_unescape(a[4]),
                options=frozenset(a[5].split(",")),
                fstype=b[0],
                source=_unescape(b[1]),
                super_options=frozenset(b[2].split(",")),
            )
        )
    return mounts


def read(path: Path = Path("/proc/self/mountinfo")) -> list[Mount]:
    """The mounts of the calling process's mount namespace."""
    return parse(path.read_text())
