"""Finding libseccomp, which isola drives through ctypes to install OCI seccomp filters."""

from __future__ import annotations

import ctypes
import ctypes.util

SONAME = "libseccomp.so.2"


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def load() -> ctypes.CDLL:
    """The libseccomp shared library. Raises OSError if it is not installed (Debian: libseccomp2)."""
    return ctypes.CDLL(ctypes.util.find_library("seccomp") or SONAME, use_errno=True)


def version() -> str | None:
    """libseccomp's version as 'major.minor.micro', or None if the library is missing."""
    try:
        lib = load()
    except OSError:
        return None
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    v = lib.seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"
