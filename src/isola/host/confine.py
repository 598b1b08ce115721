"""Giving up a process's privileges for good: every capability, in all sets, and the right to regain them.

What isola runs as root on behalf of an untrusted program (the process VM's monitor, after it has opened what
it needs) drops to this: it keeps its uid 0 and its open file descriptors, but can no longer create device
nodes, change the clock, mount, chroot again, trace, or override file permissions.
"""

from __future__ import annotations

import ctypes
import errno

from isola.host import libc

_CAP_VERSION_3 = 0x2008_0522
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32))


def drop_capabilities() -> None:
    """Empty the bounding and ambient sets, then the effective/permitted/inheritable ones; set no_new_privs."""
    cap = 0
    while True:
        try:
            libc.call("prctl", PR_CAPBSET_DROP, cap, 0, 0, 0)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            break  # past the last capability this kernel knows
        cap += 1
    libc.call("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    data = (_CapData * 2)()
    libc.call("capset", ctypes.byref(_CapHeader(_CAP_VERSION_3, 0)), data)
    libc.call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
