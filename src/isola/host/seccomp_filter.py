"""Building and loading a seccomp filter through libseccomp (ctypes), which compiles rules into the BPF program
the kernel runs on every system call and knows each architecture's syscall numbers.

libseccomp's functions return a negative errno rather than setting errno; `_check` turns that into OSError.
"""

from __future__ import annotations

import ctypes
import os

from isola.host import seccomp

# <seccomp.h> actions
ACT_KILL_THREAD = 0x0000_0000
ACT_KILL_PROCESS = 0x8000_0000
ACT_TRAP = 0x0003_0000
ACT_ERRNO = 0x0005_0000
ACT_TRACE = 0x7FF0_0000
ACT_LOG = 0x7FFC_0000
ACT_ALLOW = 0x7FFF_0000

# enum scmp_compare
CMP_NE, CMP_LT, CMP_LE, CMP_EQ, CMP_GE, CMP_GT, CMP_MASKED_EQ = range(1, 8)

# enum scmp_filter_attr
ATTR_CTL_NNP = 3
ATTR_CTL_TSYNC = 4
ATTR_CTL_LOG = 6
ATTR_CTL_SSB = 7

_NR_SCMP_ERROR = -1


class ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp: argument `arg` compared with `op` against datum_a (and datum_b for MASKED_EQ)."""

    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


def _check(result: int, what: str) -> None:
    if result < 0:
        raise OSError(-result, f"libseccomp {what}: {os.strerror(-result)}")


class Filter:
    """A filter under construction; `load` installs it on the calling thread (for good)."""

    def __init__(self, default_action: int) -> None:
        self._lib = seccomp.load()
        self._lib.seccomp_init.restype = ctypes.c_void_p
        self._lib.seccomp_init.argtypes = (ctypes.c_uint32,)
        self._lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        self._lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
        self._lib.seccomp_rule_add_array.argtypes = (
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(ArgCmp),
        )
        self._lib.seccomp_attr_set.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32)
        self._lib.seccomp_arch_add.argtypes = (ctypes.c_void_p, ctypes.c_uint32)
        self._lib.seccomp_load.argtypes = (ctypes.c_void_p,)
        self._ctx = self._lib.seccomp_init(default_action)
        if not self._ctx:
            raise OSError(0, "libseccomp refused the default action")

    def set_attribute(self, attribute: int, value: int) -> None:
        _check(self._lib.seccomp_attr_set(self._ctx, attribute, value), "attr_set")

    def add_arch(self, name: str) -> None:
        """Also filter calls made in architecture `name` (libseccomp's spelling: x86_64, x86, x32, aarch64 ...)."""
        token = self._lib.seccomp_arch_resolve_name(name.encode())
        if token == 0:
            raise OSError(0, f"libseccomp does not know the architecture {name!r}")
        result = self._lib.seccomp_arch_add(self._ctx, token)
        if result != -17:  # -EEXIST: the native architecture is always in
            _check(result, f"arch_add {name}")

    def syscall_number(self, name: str) -> int | None:
        """The number of system call `name` on the native architecture, None if libseccomp does not know it."""
        number: int = self._lib.seccomp_syscall_resolve_name(name.encode())
        return None if number == _NR_SCMP_ERROR else number

    def add_rule(self, action: int, syscall: int, conditions: list[ArgCmp]) -> None:
        array = (ArgCmp * len(conditions))(*conditions)
        _check(self._lib.seccomp_rule_add_array(self._ctx, action, syscall, len(conditions), array), "rule_add")

    def load(self) -> None:
        _check(self._lib.seccomp_load(self._ctx), "load")
