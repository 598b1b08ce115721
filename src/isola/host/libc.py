"""ctypes access to the libc calls Python 3.11's `os` lacks (unshare, setns, mount, fallocate with a mode, an
ioctl with an unsigned long argument, and whatever else `call` names), with errno turned into OSError.

This is the one place isola loads libc: the engines and the Linux personality call through here.

Constants carry the header they come from, so a reader can check them against the kernel's uapi.
"""

from __future__ import annotations

import ctypes
import os
import struct

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, which costs ~2 ms
if TYPE_CHECKING:
    from typing import Any

# <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def call(name: str, *args: Any, restype: Any = ctypes.c_int) -> int:
    """Call the libc function `name` (a system call wrapper the `os` module lacks: getdents64, statx,
    renameat2...); a result of -1 raises OSError from errno."""
    fn = getattr(_libc, name)
    fn.restype = restype
    result: int = fn(*args)
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) with a mode: the standard library only offers posix_fallocate, which cannot punch holes."""
    call("fallocate", ctypes.c_int(fd), ctypes.c_int(mode), ctypes.c_int64(offset), ctypes.c_int64(length))


def ioctl_ulong(fd: int, request: int, value: int) -> int:
    """ioctl(2) with an unsigned long argument: `fcntl.ioctl` takes a C int, but e.g. KVM_SET_TSS_ADDR's argument
    is an address above 2 GiB."""
    return _check(_libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), ctypes.c_ulong(value)), "ioctl")


# <linux/time.h>
TIMER_ABSTIME = 1


def sleep_until(clock: int, deadline_ns: int) -> None:
    """clock_nanosleep(2) to an absolute time on `clock` (it returns its error rather than setting errno)."""
    timespec = ctypes.create_string_buffer(struct.pack("<qq", *divmod(deadline_ns, 10**9)), 16)
    err = _libc.clock_nanosleep(ctypes.c_int(clock), ctypes.c_int(TIMER_ABSTIME), timespec, None)
    if err:
        raise OSError(err, os.strerror(err))


def unshare(flags: int) -> None:
    """unshare(2): move the calling process into new namespaces."""
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace that `fd` (an open /proc/PID/ns/* file) refers to."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


# <linux/mount.h>
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


MNT_DETACH = 0x2  # umount2(2) flag


def umount(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """mount(2). `fstype` and `data` may be None, as for bind mounts and propagation changes."""
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype is not None else None,
            ctypes.c_ulong(flags),
            data.encode() if data is not None else None,
        ),
        f"mount {source} on {target}",
    )
