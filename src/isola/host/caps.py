"""Linux capabilities by name, and setting all five sets of a process the way an OCI runtime must.

The order matters and is the reason this module exists beside `confine` (which only drops everything): the
bounding set is trimmed while the process still holds CAP_SETPCAP, the uid change keeps the permitted set only
under PR_SET_KEEPCAPS, and ambient capabilities can only be raised once they are permitted and inheritable.
"""

from __future__ import annotations

import ctypes
import errno

from isola.host import libc

# <linux/capability.h>, in kernel order: the index is the capability's number
NAMES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
NUMBERS = {name: i for i, name in enumerate(NAMES)}

_CAP_VERSION_3 = 0x2008_0522
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4


class _Header(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _Data(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32))


def last_cap() -> int:
    """The highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


def mask(names: list[str]) -> int:
    """A 64-bit capability mask from names; names this kernel lacks are left out (runc does the same)."""
    top = last_cap()
    bits = 0
    for name in names:
        number = NUMBERS[name]
        if number <= top:
            bits |= 1 << number
    return bits


def drop_bounding(keep: int) -> None:
    """Remove every capability not in `keep` from the bounding set (needs CAP_SETPCAP)."""
    for cap in range(last_cap() + 1):
        if not keep & (1 << cap):
            try:
                libc.call("prctl", PR_CAPBSET_DROP, cap, 0, 0, 0)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise


def keep_caps(on: bool) -> None:
    """PR_SET_KEEPCAPS: whether the permitted set survives a change from uid 0 to another uid."""
    libc.call("prctl", PR_SET_KEEPCAPS, int(on), 0, 0, 0)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) for the calling thread, 64-bit masks."""
    data = (_Data * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFF_FFFF
        data[i].permitted = (permitted >> shift) & 0xFFFF_FFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFF_FFFF
    libc.call("capset", ctypes.byref(_Header(_CAP_VERSION_3, 0)), data)


def set_ambient(raise_: int) -> None:
    """Clear the ambient set, then raise the capabilities in `raise_` (each must be permitted and inheritable)."""
    libc.call("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for cap in range(last_cap() + 1):
        if raise_ & (1 << cap):
            libc.call("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0)


def no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS: execve can never grant more privileges (setuid bits, file capabilities)."""
    libc.call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
