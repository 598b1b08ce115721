"""Mounting the way a container runtime must: mount(8)-style option words turned into flags, bind mounts made
read-only in a second step, pivot_root, and paths resolved *inside* a root so that a symlink in an untrusted
root filesystem can never send a mount outside it.

The kernel only applies MS_RDONLY/MS_NOSUID/... to a bind mount on a remount, and refuses (EPERM) a remount that
would clear a flag that is locked on the source (as in a user namespace): `bind` handles both.
"""

from __future__ import annotations

import ctypes
import errno
import os

from isola.host import libc

MS_RDONLY = libc.MS_RDONLY
MS_NOSUID = libc.MS_NOSUID
MS_NODEV = libc.MS_NODEV
MS_NOEXEC = libc.MS_NOEXEC
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = libc.MS_BIND
MS_MOVE = 0x2000
MS_REC = libc.MS_REC
MS_UNBINDABLE = 0x20000
MS_PRIVATE = libc.MS_PRIVATE
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MNT_DETACH = libc.MNT_DETACH

# word -> (flags to clear, flags to set)
FLAGS: dict[str, tuple[int, int]] = {
    "defaults": (0, 0),
    "rw": (MS_RDONLY, 0),
    "ro": (0, MS_RDONLY),
    "suid": (MS_NOSUID, 0),
    "nosuid": (0, MS_NOSUID),
    "dev": (MS_NODEV, 0),
    "nodev": (0, MS_NODEV),
    "exec": (MS_NOEXEC, 0),
    "noexec": (0, MS_NOEXEC),
    "sync": (0, MS_SYNCHRONOUS),
    "async": (MS_SYNCHRONOUS, 0),
    "remount": (0, MS_REMOUNT),
    "mand": (0, MS_MANDLOCK),
    "nomand": (MS_MANDLOCK, 0),
    "dirsync": (0, MS_DIRSYNC),
    "nosymfollow": (0, MS_NOSYMFOLLOW),
    "atime": (MS_NOATIME, 0),
    "noatime": (0, MS_NOATIME),
    "diratime": (MS_NODIRATIME, 0),
    "nodiratime": (0, MS_NODIRATIME),
    "relatime": (0, MS_RELATIME),
    "norelatime": (MS_RELATIME, 0),
    "strictatime": (0, MS_STRICTATIME),
    "nostrictatime": (MS_STRICTATIME, 0),
    "bind": (0, MS_BIND),
    "rbind": (0, MS_BIND | MS_REC),
}

PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}

# statvfs f_flag bits (<sys/statvfs.h>) -> the mount flag each one reflects
_LOCKABLE = ((os.ST_RDONLY, MS_RDONLY), (os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC))


class Options:
    """A mount's option words, sorted into what mount(2) takes. (A plain class: typing.NamedTuple would import
    typing on the path of every container start.)"""

    __slots__ = ("data", "flags", "propagation")

    def __init__(self, flags: int, propagation: tuple[int, ...], data: str) -> None:
        self.flags = flags
        self.propagation = propagation
        self.data = data

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & MS_BIND)


def parse_options(words: list[str]) -> Options:
    """Split mount option words into flags, propagation changes and the filesystem's data string (mode=755 ...).
    Unknown words go to the filesystem, as mount(8) does: the kernel is the judge of those."""
    flags = 0
    propagation = []
    data = []
    for word in words:
        if word in FLAGS:
            clear, add = FLAGS[word]
            flags = (flags & ~clear) | add
        elif word in PROPAGATION:
            propagation.append(PROPAGATION[word])
        else:
            data.append(word)
    return Options(flags, tuple(propagation), ",".join(data))


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """mount(2) (see isola.host.libc)."""
    libc.mount(source, target, fstype, flags, data or None)


def bind(source: str, target: str, flags: int) -> None:
    """A bind mount (recursive if MS_REC) whose ro/nosuid/nodev/noexec words take effect: those need a second,
    remounting call, which must keep any flag the kernel has locked on the source."""
    libc.mount(source, target, None, MS_BIND | (flags & MS_REC))
    extra = flags & ~(MS_BIND | MS_REC | MS_REMOUNT)
    if extra:
        remount_bind(target, extra)


def _current(target: str) -> int:
    current = os.statvfs(target).f_flag
    return sum(ms_bit for st_bit, ms_bit in _LOCKABLE if current & st_bit)


def remount_bind(target: str, flags: int, *, preserve: bool = False) -> None:
    """Change the per-mount flags of the bind mount at `target`, keeping its current ro/nosuid/nodev/noexec
    when `preserve`; on EPERM, retry keeping them anyway (the kernel locks them in a user namespace)."""
    if preserve:
        flags |= _current(target)
    try:
        libc.mount("", target, None, MS_BIND | MS_REMOUNT | flags)
    except PermissionError:
        libc.mount("", target, None, MS_BIND | MS_REMOUNT | flags | _current(target))


def set_propagation(target: str, flags: int) -> None:
    """Make `target` (and with MS_REC its submounts) shared, slave, private or unbindable."""
    libc.mount("", target, None, flags)


def move(source: str, target: str) -> None:
    """MS_MOVE: the --no-pivot way of making a directory the root mount."""
    libc.mount(source, target, None, MS_MOVE)


def umount(target: str, flags: int = 0) -> None:
    libc.umount(target, flags)


_SYS_PIVOT_ROOT = 155  # x86-64; glibc has no wrapper


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2): make `new_root` the root of the calling mount namespace."""
    libc.call("syscall", ctypes.c_long(_SYS_PIVOT_ROOT), new_root.encode(), put_old.encode())


def resolve_in(root: str, path: str, *, max_links: int = 255) -> str:
    """The host path of `path` as seen from a process whose root is `root`, following symlinks (absolute ones
    relative to `root`) and clamping `..` at `root`, so the result never leaves `root`. Components that do not
    exist yet are kept as written."""
    root = os.path.abspath(root)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError:  # not a link, or not there yet
            resolved.append(part)
            continue
        links += 1
        if links > max_links:
            raise OSError(errno.ELOOP, f"too many symbolic links resolving {path} in {root}")
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return os.path.join(root, *resolved)
