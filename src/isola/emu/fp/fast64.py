"""binary64 operations with a host-float fast path.

The fast path runs only in RNE (CPython's only rounding) and only when the host result is normal and
finite, so no UF/OF decision is needed; it then derives NX exactly and cheaply. Everything else goes
to :mod:`isola.emu.fp.exact`. Bits and floats are converted with ``struct`` rather than through a
shared buffer so the functions stay pure and safe to call from several emulator threads.
"""

from __future__ import annotations

import math
import struct
from typing import Final

from isola.emu.fp import exact
from isola.emu.fp.exact import F64, I32, I64, NX, RMM, RNE

_pack_q = struct.Struct("<Q").pack
_unpack_q = struct.Struct("<Q").unpack
_pack_d = struct.Struct("<d").pack
_unpack_d = struct.Struct("<d").unpack
_pack_qq = struct.Struct("<QQ").pack
_unpack_dd = struct.Struct("<dd").unpack
_pack_qqq = struct.Struct("<QQQ").pack
_unpack_ddd = struct.Struct("<ddd").unpack

_MIN: Final = 2.2250738585072014e-308  # smallest normal
_MAX: Final = 1.7976931348623157e308
_SIGN: Final = 0x8000000000000000
_EXP: Final = 0x7FF0000000000000
_FRAC: Final = 0x000FFFFFFFFFFFFF
_IMP: Final = 0x0010000000000000
_LOW52: Final = (1 << 52) - 1
_LOW53: Final = (1 << 53) - 1
# Dekker's exact product needs no overflow in the Veltkamp split and no underflow in the error term.
_SPLIT: Final = 134217729.0  # 2**27 + 1
_DEKKER_LO: Final = 1e-280
_DEKKER_HI: Final = 1e280
_FMA_ADDEND_HI: Final = 1e300  # keeps math.fsum clear of intermediate overflow


def f64_add(a: int, b: int, rm: int) -> tuple[int, int]:
    if rm == RNE:
        x, y = _unpack_dd(_pack_qq(a, b))
        r = x + y
        # A result strictly above the smallest normal cannot be tiny; NaN and inf fail the test.
        if _MIN < abs(r) <= _MAX:
            # Fast2Sum: the subtraction from the larger operand is exact, so both hold iff r is exact.
            return _unpack_q(_pack_d(r))[0], 0 if r - x == y and r - y == x else NX
    return exact.add(F64, a, b, rm)


def f64_sub(a: int, b: int, rm: int) -> tuple[int, int]:
    if rm == RNE:
        x, y = _unpack_dd(_pack_qq(a, b))
        r = x - y
        if _MIN < abs(r) <= _MAX:
            return _unpack_q(_pack_d(r))[0], 0 if r - x == -y and r + y == x else NX
    return exact.add(F64, a, b ^ _SIGN, rm)


def f64_mul(a: int, b: int, rm: int) -> tuple[int, int]:
    if rm == RNE and a & _EXP and b & _EXP:
        x, y = _unpack_dd(_pack_qq(a, b))
        r = x * y
        if _MIN < abs(r) <= _MAX:
            # Normal operands give a 105- or 106-bit significand product: exact iff the bits below
            # its top 53 are zero.
            p = ((a & _FRAC) | _IMP) * ((b & _FRAC) | _IMP)
            return _unpack_q(_pack_d(r))[0], NX if p & (_LOW53 if p >> 105 else _LOW52) else 0
    return exact.mul(F64, a, b, rm)


def f64_div(a: int, b: int, rm: int) -> tuple[int, int]:
    if rm == RNE and a & _EXP and b & _EXP:
        x, y = _unpack_dd(_pack_qq(a, b))
        r = x / y
        if _MIN < abs(r) <= _MAX:
            rb = _unpack_q(_pack_d(r))[0]
            # Exact iff r * y == x: compare the significands, scaled by the exponent fields.
            shift = ((a >> 52) & 0x7FF) - ((rb >> 52) & 0x7FF) - ((b >> 52) & 0x7FF) + 1075
            quotient_times_divisor = ((rb & _FRAC) | _IMP) * ((b & _FRAC) | _IMP)
            exact_result = shift >= 0 and quotient_times_divisor == ((a & _FRAC) | _IMP) << shift
            return rb, 0 if exact_result else NX
    return exact.div(F64, a, b, rm)


def f64_sqrt(a: int, rm: int) -> tuple[int, int]:
    biased = a >> 52  # a negative input's sign bit lands above the exponent and fails the test
    if rm == RNE and 0 < biased < 0x7FF:
        rb = _unpack_q(_pack_d(math.sqrt(_unpack_d(_pack_q(a))[0])))[0]
        root = (rb & _FRAC) | _IMP
        shift = biased - 2 * (rb >> 52) + 1075
        return rb, 0 if shift >= 0 and root * root == ((a & _FRAC) | _IMP) << shift else NX
    return exact.sqrt(F64, a, rm)


def _fma(a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    if rm == RNE:
        x, y, z = _unpack_ddd(_pack_qqq(a, b, c))
        p = x * y
        if (
            _DEKKER_LO < abs(x) < _DEKKER_HI
            and _DEKKER_LO < abs(y) < _DEKKER_HI
            and _DEKKER_LO < abs(p) < _DEKKER_HI
            and abs(z) < _FMA_ADDEND_HI
        ):
            # Dekker's TwoProduct: x * y == p + err exactly; fsum then rounds p + err + z once.
            t = _SPLIT * x
            xh = t - (t - x)
            xl = x - xh
            t = _SPLIT * y
            yh = t - (t - y)
            yl = y - yh
            err = ((xh * yh - p) + xh * yl + xl * yh) + xl * yl
            if err == 0.0:
                # The product is exact, so the float sum p + z is the one rounding FMA asks for; Knuth's
                # TwoSum says exactly whether that sum was inexact, with no fsum.
                r = p + z
                if abs(r) > _MIN and r - r == 0.0:
                    bb = r - p
                    return _unpack_q(_pack_d(r))[0], NX if (p - (r - bb)) + (z - bb) else 0
            else:
                r = math.fsum((p, err, z))
                if abs(r) > _MIN:
                    return _unpack_q(_pack_d(r))[0], NX if math.fsum((p, err, z, -r)) else 0
    return exact.fma(F64, a, b, c, rm)


def f64_fmadd(a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    return _fma(a, b, c, rm)


def f64_fmsub(a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    return _fma(a, b, c ^ _SIGN, rm)


def f64_fnmsub(a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    return _fma(a ^ _SIGN, b, c, rm)


def f64_fnmadd(a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    return _fma(a ^ _SIGN, b, c ^ _SIGN, rm)


_ROUND_TO_INT: Final = (round, int, math.floor, math.ceil)  # RNE (round-half-even), RTZ, RDN, RUP
_INT_FAST_LIMIT: Final = 0x41D0000000000000  # 2.0**30: every rounded result fits every integer kind


def f64_to_int(a: int, kind: int, rm: int) -> tuple[int, int]:
    """fcvt.{w,wu,l,lu}.d; returns the x-register image (RV64 sign-extends W and WU results)."""
    mag = a & ~_SIGN
    if rm < RMM and mag < _INT_FAST_LIMIT and (mag == a or kind in (I32, I64)):
        x = _unpack_d(_pack_q(a))[0]
        v = _ROUND_TO_INT[rm](x)
        return v & 0xFFFFFFFFFFFFFFFF, 0 if v == x else NX
    return exact.to_int(F64, a, kind, rm)


def int_to_f64(x: int, kind: int, rm: int) -> tuple[int, int]:
    """fcvt.d.{w,wu,l,lu} from an x-register value."""
    v = exact.int_value(x, kind)
    if -(1 << 53) <= v <= 1 << 53 and 0 <= rm <= RMM:
        return _unpack_q(_pack_d(float(v)))[0], 0
    return exact.from_int(F64, v, rm)
