"""Linux namespaces by their OCI names: the clone(2) flag that makes a new one, the /proc/PID/ns file that names
an existing one, and the UTS calls (host and domain name) that only make sense inside a new one.

A container's view of the host is exactly the set of namespaces it does not share, so the runtime keeps one
table here rather than scattering flag constants over the code that unshares, joins and reports them.
"""

from __future__ import annotations

import ctypes

from isola.host import libc

# OCI namespace type -> (clone flag, file under /proc/PID/ns)
NAMESPACES: dict[str, tuple[int, str]] = {
    "user": (libc.CLONE_NEWUSER, "user"),
    "mount": (libc.CLONE_NEWNS, "mnt"),
    "pid": (libc.CLONE_NEWPID, "pid"),
    "network": (libc.CLONE_NEWNET, "net"),
    "ipc": (libc.CLONE_NEWIPC, "ipc"),
    "uts": (libc.CLONE_NEWUTS, "uts"),
    "cgroup": (libc.CLONE_NEWCGROUP, "cgroup"),
}

# The order in which a process joins existing namespaces: the user namespace first, so that it holds the
# capabilities the others demand of a joiner; the mount namespace last, since it changes which paths resolve.
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "mount")


def flag(kind: str) -> int:
    """The CLONE_NEW* flag of an OCI namespace type."""
    return NAMESPACES[kind][0]


def proc_path(pid: int, kind: str) -> str:
    """The /proc file that refers to `pid`'s namespace of `kind` (what `setns` opens, what `exec` joins)."""
    return f"/proc/{pid}/ns/{NAMESPACES[kind][1]}"


def sethostname(name: str) -> None:
    """sethostname(2), for the UTS namespace of the calling process."""
    raw = name.encode()
    libc.call("sethostname", raw, ctypes.c_size_t(len(raw)))


def setdomainname(name: str) -> None:
    """setdomainname(2): the NIS domain name, the other half of a UTS namespace."""
    raw = name.encode()
    libc.call("setdomainname", raw, ctypes.c_size_t(len(raw)))
