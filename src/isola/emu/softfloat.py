"""Bit-exact IEEE-754 binary32/binary64 arithmetic with RISC-V F/D semantics: the emulator's one place
for floating point.

CPython floats only give binary64 round-to-nearest-even without exception flags, while RISC-V needs
five rounding modes, the five ``fflags`` and canonical NaNs. So values stay raw bit patterns (ints):
binary32 operands and results are 32-bit patterns (unbox them from, and box them into, the 64-bit f
registers with :func:`unbox32`/:func:`box32`), and every rounding operation returns
``(result_bits, fflags)``. ``rm`` is 0-4 (RNE, RTZ, RDN, RUP, RMM): the caller resolves the dynamic
mode 7 from ``frm``, and 5, 6 and an unresolved 7 raise ``ValueError`` (the emulator's SIGILL).

The implementation lives in :mod:`isola.emu.fp`: ``exact`` (integer slow path), ``fast64`` and
``fast32`` (host-float fast paths), ``bits`` (operations that never round). This module only gathers
the names, so calling through it costs nothing extra.
"""

from __future__ import annotations

from isola.emu.fp.bits import box32, fclass, feq, fle, flt, fmax, fmin, fsgnj, fsgnjn, fsgnjx, unbox32
from isola.emu.fp.exact import DZ, F32, F64, I32, I64, NV, NX, OF, RDN, RMM, RNE, RTZ, RUP, U32, U64, UF, Format
from isola.emu.fp.fast32 import (
    f32_add,
    f32_div,
    f32_fmadd,
    f32_fmsub,
    f32_fnmadd,
    f32_fnmsub,
    f32_mul,
    f32_sqrt,
    f32_sub,
    f32_to_f64,
    f32_to_int,
    f64_to_f32,
    int_to_f32,
)
from isola.emu.fp.fast64 import (
    f64_add,
    f64_div,
    f64_fmadd,
    f64_fmsub,
    f64_fnmadd,
    f64_fnmsub,
    f64_mul,
    f64_sqrt,
    f64_sub,
    f64_to_int,
    int_to_f64,
)

__all__ = [
    "DZ",
    "F32",
    "F64",
    "I32",
    "I64",
    "NV",
    "NX",
    "OF",
    "RDN",
    "RMM",
    "RNE",
    "RTZ",
    "RUP",
    "U32",
    "U64",
    "UF",
    "Format",
    "box32",
    "f32_add",
    "f32_div",
    "f32_fmadd",
    "f32_fmsub",
    "f32_fnmadd",
    "f32_fnmsub",
    "f32_mul",
    "f32_sqrt",
    "f32_sub",
    "f32_to_f64",
    "f32_to_int",
    "f64_add",
    "f64_div",
    "f64_fmadd",
    "f64_fmsub",
    "f64_fnmadd",
    "f64_fnmsub",
    "f64_mul",
    "f64_sqrt",
    "f64_sub",
    "f64_to_f32",
    "f64_to_int",
    "fclass",
    "feq",
    "fle",
    "flt",
    "fmax",
    "fmin",
    "fsgnj",
    "fsgnjn",
    "fsgnjx",
    "int_to_f32",
    "int_to_f64",
    "unbox32",
]
