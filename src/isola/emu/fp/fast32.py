"""binary32 operations with a host-float fast path.

binary32 operands are exact as host (binary64) floats, and so are their products (48 significand
bits). For +, -, *, / and sqrt, rounding the binary64 result again to binary32 gives the correctly
rounded binary32 result, since 53 >= 2 * 24 + 2 (Figueroa, "When is double rounding innocuous?",
1995). As for binary64, the fast path is RNE-only and needs a normal, finite result; everything else
goes to :mod:`isola.emu.fp.exact`.
"""

from __future__ import annotations

import math
import struct
from typing import Final

from isola.emu.fp import exact
from isola.emu.fp.exact import F32, F64, I32, I64, NX, RMM, RNE

_pack_i = struct.Struct("<I").pack
_unpack_i = struct.Struct("<I").unpack
_pack_f = struct.Struct("<f").pack
_unpack_f = struct.Struct("<f").unpack
_pack_ii = struct.Struct("<II").pack
_unpack_ff = struct.Struct("<ff").unpack
_pack_iii = struct.Struct("<III").pack
_unpack_fff = struct.Struct("<fff").unpack
_pack_q = struct.Struct("<Q").pack
_unpack_q = struct.Struct("<Q").unpack
_pack_d = struct.Struct("<d").pack
_unpack_d = struct.Struct("<d").unpack

_MIN: Final = 1.1754943508222875e-38  # smallest normal binary32
# Below this, struct's binary32 packing cannot overflow (it raises instead of returning inf).
_MAX: Final = 3.4028234663852886e38
_SIGN: Final = 0x80000000
# A binary64 whose low 29 fraction bits are exactly this lies halfway between two binary32 values.
_HALFWAY: Final = 1 << 28
_LOW29: Final = (1 << 29) - 1


def f32_add(a: int, b: int, rm: int) -> tuple[int, int]:
    if rm == RNE:
        x, y = _unpack_ff(_pack_ii(a, b))
        r = x + y
        if _MIN < abs(r) < _MAX:
            packed = _pack_f(r)
            # Exact iff the binary64 sum is exact (Fast2Sum check) and survives the binary32 rounding.
            exact_result = r - x == y and r - y == x and _unpack_f(packed)[0] == r
            return _unpack_i(packed)[0], 0 if exact_result else NX
    return exact.add(F32, a, b, rm)


def f32_sub(a: int, b: int, rm: int) -> tuple[int, int]:
    if rm == RNE:
        x, y = _unpack_ff(_pack_ii(a, b))
        r = x - y
        if _MIN < abs(r) < _MAX:
            packed = _pack_f(r)
            exact_result = r - x == -y and r + y == x and _unpack_f(packed)[0] == r
            return _unpack_i(packed)[0], 0 if exact_result else NX
    return exact.add(F32, a, b ^ _SIGN, rm)


def f32_mul(a: int, b: int, rm: int) -> tuple[int, int]:
    if rm == RNE:
        x, y = _unpack_ff(_pack_ii(a, b))
        r = x * y  # exact
        if _MIN < abs(r) < _MAX:
            packed = _pack_f(r)
            return _unpack_i(packed)[0], 0 if _unpack_f(packed)[0] == r else NX
    return exact.mul(F32, a, b, rm)


def f32_div(a: int, b: int, rm: int) -> tuple[int, int]:
    if rm == RNE and b & 0x7FFFFFFF:
        x, y = _unpack_ff(_pack_ii(a, b))
        r = x / y
        if _MIN < abs(r) < _MAX:
            packed = _pack_f(r)
            # The binary32 quotient times y has at most 48 significant bits: an exact host product.
            return _unpack_i(packed)[0], 0 if _unpack_f(packed)[0] * y == x else NX
    return exact.div(F32, a, b, rm)


def f32_sqrt(a: int, rm: int) -> tuple[int, int]:
    if rm == RNE and 0 < a < 0x7F800000:  # positive and finite; every such root is normal
        x = _unpack_f(_pack_i(a))[0]
        packed = _pack_f(math.sqrt(x))
        root = _unpack_f(packed)[0]
        return _unpack_i(packed)[0], 0 if root * root == x else NX
    return exact.sqrt(F32, a, rm)


def _fma(a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    if rm == RNE:
        x, y, z = _unpack_fff(_pack_iii(a, b, c))
        p = x * y  # exact
        r = p + z
        if _MIN < abs(r) < _MAX:
            packed = _pack_f(r)
            if r - p == z and r - z == p:
                return _unpack_i(packed)[0], 0 if _unpack_f(packed)[0] == r else NX
            # p is not a binary32, so the double rounding is innocuous only when r did not land
            # exactly on a binary32 halfway point; it is inexact either way.
            if _unpack_q(_pack_d(r))[0] & _LOW29 != _HALFWAY:
                return _unpack_i(packed)[0], NX
    return exact.fma(F32, a, b, c, rm)


def f32_fmadd(a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    return _fma(a, b, c, rm)


def f32_fmsub(a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    return _fma(a, b, c ^ _SIGN, rm)


def f32_fnmsub(a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    return _fma(a ^ _SIGN, b, c, rm)


def f32_fnmadd(a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    return _fma(a ^ _SIGN, b, c ^ _SIGN, rm)


_ROUND_TO_INT: Final = (round, int, math.floor, math.ceil)  # RNE (round-half-even), RTZ, RDN, RUP
_INT_FAST_LIMIT: Final = 0x4E800000  # 2.0**30: every rounded result fits every integer kind


def f32_to_int(a: int, kind: int, rm: int) -> tuple[int, int]:
    """fcvt.{w,wu,l,lu}.s; returns the x-register image (RV64 sign-extends W and WU results)."""
    mag = a & 0x7FFFFFFF
    if rm < RMM and mag < _INT_FAST_LIMIT and (mag == a or kind in (I32, I64)):
        x = _unpack_f(_pack_i(a))[0]
        v = _ROUND_TO_INT[rm](x)
        return v & 0xFFFFFFFFFFFFFFFF, 0 if v == x else NX
    return exact.to_int(F32, a, kind, rm)


def int_to_f32(x: int, kind: int, rm: int) -> tuple[int, int]:
    """fcvt.s.{w,wu,l,lu} from an x-register value."""
    v = exact.int_value(x, kind)
    if -(1 << 24) <= v <= 1 << 24 and 0 <= rm <= RMM:
        return _unpack_i(_pack_f(float(v)))[0], 0
    return exact.from_int(F32, v, rm)


def f32_to_f64(a: int, rm: int) -> tuple[int, int]:
    """fcvt.d.s is exact, but rm is still checked: an illegal rm field makes the instruction illegal."""
    if (a & 0x7FFFFFFF) <= 0x7F800000 and 0 <= rm <= RMM:  # not NaN
        return _unpack_q(_pack_d(_unpack_f(_pack_i(a))[0]))[0], 0
    return exact.convert(F32, F64, a, rm)


def f64_to_f32(a: int, rm: int) -> tuple[int, int]:
    """fcvt.s.d."""
    if rm == RNE:
        x = _unpack_d(_pack_q(a))[0]
        if _MIN < abs(x) < _MAX:
            packed = _pack_f(x)
            return _unpack_i(packed)[0], 0 if _unpack_f(packed)[0] == x else NX
    return exact.convert(F64, F32, a, rm)
