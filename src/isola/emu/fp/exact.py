"""Exact IEEE-754 arithmetic on bit patterns with RISC-V semantics: the slow path that every operation
falls back to when the host-float fast path cannot prove its answer.

A finite value is handled as ``significand * 2**exponent`` on Python ints; each operation builds its
exact result (or enough bits of it plus a sticky bit) and rounds once in :func:`_round`. RISC-V
specifics: NaN results are always the canonical NaN, tininess is detected after rounding, UF needs
tiny *and* inexact, subnormals are never flushed to zero.
"""

from __future__ import annotations

import math
from typing import Final

RNE: Final = 0
RTZ: Final = 1
RDN: Final = 2
RUP: Final = 3
RMM: Final = 4

NV: Final = 16
DZ: Final = 8
OF: Final = 4
UF: Final = 2
NX: Final = 1

# Integer kinds for fcvt: the W/WU/L/LU suffixes.
I32: Final = 0
U32: Final = 1
I64: Final = 2
U64: Final = 3

_M64: Final = 0xFFFFFFFFFFFFFFFF
_BOX: Final = 0xFFFFFFFF00000000


class Format:
    """An IEEE-754 binary interchange format, with every mask precomputed for the bit-level paths."""

    __slots__ = (
        "bias",
        "ebits",
        "emax",
        "emin",
        "fbits",
        "frac_mask",
        "implicit",
        "inf",
        "mag_mask",
        "max_finite",
        "nan",
        "prec",
        "quiet",
        "sign",
        "sign_shift",
        "width",
    )

    def __init__(self, ebits: int, fbits: int) -> None:
        self.ebits = ebits
        self.fbits = fbits
        self.width = 1 + ebits + fbits
        self.prec = fbits + 1
        self.bias = (1 << (ebits - 1)) - 1
        self.emax = self.bias
        self.emin = 1 - self.bias
        self.sign_shift = self.width - 1
        self.sign = 1 << self.sign_shift
        self.mag_mask = self.sign - 1
        self.frac_mask = (1 << fbits) - 1
        self.implicit = 1 << fbits
        self.inf = ((1 << ebits) - 1) << fbits
        self.quiet = 1 << (fbits - 1)
        self.nan = self.inf | self.quiet
        self.max_finite = self.inf - 1


F32: Final = Format(8, 23)
F64: Final = Format(11, 52)


def _check_rm(rm: int) -> None:
    if not 0 <= rm <= 4:
        raise ValueError(f"illegal rounding mode {rm}")


def _is_snan(fmt: Format, x: int) -> bool:
    return (x & fmt.mag_mask) > fmt.inf and not x & fmt.quiet


def nan_flags(fmt: Format, *xs: int) -> int:
    """NaN operands give the canonical NaN; only a signalling one makes the operation invalid."""
    for x in xs:
        if _is_snan(fmt, x):
            return NV
    return 0


def _unpack(fmt: Format, x: int) -> tuple[int, int, int]:
    """Sign (0/1), integer significand and exponent of a finite value; zero has significand 0."""
    biased = (x >> fmt.fbits) & (fmt.inf >> fmt.fbits)
    frac = x & fmt.frac_mask
    if biased:
        return x >> fmt.sign_shift, frac | fmt.implicit, biased - fmt.bias - fmt.fbits
    return x >> fmt.sign_shift, frac, fmt.emin - fmt.fbits


def _round_up(rm: int, sign: int, odd: int, rem: int, half: int) -> bool:
    """Whether to add one unit in the last place, given the discarded remainder and its halfway point."""
    if rm == RNE:
        return rem > half or (rem == half and odd == 1)
    if rm == RTZ:
        return False
    if rm == RDN:
        return sign == 1 and rem != 0
    if rm == RUP:
        return sign == 0 and rem != 0
    return rem >= half


def _overflow(fmt: Format, sign: int, rm: int) -> tuple[int, int]:
    to_inf = rm in (RNE, RMM) or (rm == RDN and sign == 1) or (rm == RUP and sign == 0)
    return (sign << fmt.sign_shift) | (fmt.inf if to_inf else fmt.max_finite), OF | NX


def _round(fmt: Format, sign: int, m: int, e: int, rm: int) -> tuple[int, int]:
    """Round the exact nonzero value (-1)**sign * m * 2**e into ``fmt``.

    Callers whose true value has bits below m's last bit (division, square root) append a sticky 1
    bit and keep at least ``prec + 1`` bits above it, so the round bit is always a real bit.
    """
    prec = fmt.prec
    n = m.bit_length()
    top = e + n - 1
    sbits = sign << fmt.sign_shift
    if top >= fmt.emin:
        shift = n - prec
        if shift <= 0:
            sig = m << -shift
            flags = 0
        else:
            sig = m >> shift
            rem = m & ((1 << shift) - 1)
            if _round_up(rm, sign, sig & 1, rem, 1 << (shift - 1)):
                sig += 1
                if sig >> prec:
                    sig >>= 1
                    top += 1
            flags = NX if rem else 0
        if top > fmt.emax:
            return _overflow(fmt, sign, rm)
        return sbits | ((top + fmt.bias) << fmt.fbits) | (sig - fmt.implicit), flags
    # Below the normal range the last kept bit is fixed at emin - fbits.
    shift = fmt.emin - fmt.fbits - e
    if shift <= 0:
        return sbits | (m << -shift), 0
    sig = m >> shift
    rem = m & ((1 << shift) - 1)
    if not rem:
        return sbits | sig, 0
    if _round_up(rm, sign, sig & 1, rem, 1 << (shift - 1)):
        sig += 1  # a carry into the implicit bit encodes the smallest normal by itself
    flags = UF | NX
    if top == fmt.emin - 1 and n > prec:
        # Tininess after rounding: with unbounded exponent, does the value round up to 2**emin?
        wide = n - prec
        wsig = m >> wide
        wrem = m & ((1 << wide) - 1)
        if _round_up(rm, sign, wsig & 1, wrem, 1 << (wide - 1)) and (wsig + 1) >> prec:
            flags = NX
    return sbits | sig, flags


def _zero_sum_sign(sa: int, sb: int, rm: int) -> int:
    """Sign of an exact zero sum: the operands' common sign, else -0 only when rounding down."""
    if sa == sb:
        return sa
    return 1 if rm == RDN else 0


def add(fmt: Format, a: int, b: int, rm: int) -> tuple[int, int]:
    _check_rm(rm)
    inf = fmt.inf
    xa = a & fmt.mag_mask
    xb = b & fmt.mag_mask
    if xa > inf or xb > inf:
        return fmt.nan, nan_flags(fmt, a, b)
    if xa == inf:
        if xb == inf and (a ^ b) & fmt.sign:
            return fmt.nan, NV
        return a, 0
    if xb == inf:
        return b, 0
    sa, ma, ea = _unpack(fmt, a)
    sb, mb, eb = _unpack(fmt, b)
    e = min(ea, eb)
    total = (-ma if sa else ma) << (ea - e)
    total += (-mb if sb else mb) << (eb - e)
    if total == 0:
        return _zero_sum_sign(sa, sb, rm) << fmt.sign_shift, 0
    if total < 0:
        return _round(fmt, 1, -total, e, rm)
    return _round(fmt, 0, total, e, rm)


def mul(fmt: Format, a: int, b: int, rm: int) -> tuple[int, int]:
    _check_rm(rm)
    inf = fmt.inf
    xa = a & fmt.mag_mask
    xb = b & fmt.mag_mask
    if xa > inf or xb > inf:
        return fmt.nan, nan_flags(fmt, a, b)
    sbits = (a ^ b) & fmt.sign
    if xa == inf or xb == inf:
        if xa == 0 or xb == 0:
            return fmt.nan, NV
        return sbits | inf, 0
    if xa == 0 or xb == 0:
        return sbits, 0
    _, ma, ea = _unpack(fmt, a)
    _, mb, eb = _unpack(fmt, b)
    return _round(fmt, sbits >> fmt.sign_shift, ma * mb, ea + eb, rm)


def div(fmt: Format, a: int, b: int, rm: int) -> tuple[int, int]:
    _check_rm(rm)
    inf = fmt.inf
    xa = a & fmt.mag_mask
    xb = b & fmt.mag_mask
    if xa > inf or xb > inf:
        return fmt.nan, nan_flags(fmt, a, b)
    sbits = (a ^ b) & fmt.sign
    if xa == inf:
        if xb == inf:
            return fmt.nan, NV
        return sbits | inf, 0
    if xb == inf:
        return sbits, 0
    if xb == 0:
        if xa == 0:
            return fmt.nan, NV
        return sbits | inf, DZ
    if xa == 0:
        return sbits, 0
    _, ma, ea = _unpack(fmt, a)
    _, mb, eb = _unpack(fmt, b)
    # Enough quotient bits for prec + 1 real bits, then a sticky bit for the remainder.
    k = max(0, mb.bit_length() + fmt.prec + 2 - ma.bit_length())
    q, r = divmod(ma << k, mb)
    return _round(fmt, sbits >> fmt.sign_shift, (q << 1) | (r != 0), ea - eb - k - 1, rm)


def sqrt(fmt: Format, a: int, rm: int) -> tuple[int, int]:
    _check_rm(rm)
    xa = a & fmt.mag_mask
    if xa > fmt.inf:
        return fmt.nan, nan_flags(fmt, a)
    if xa == 0:
        return a, 0
    if a & fmt.sign:
        return fmt.nan, NV
    if xa == fmt.inf:
        return a, 0
    _, m, e = _unpack(fmt, a)
    # Scale to an even exponent with at least 2 * (prec + 2) bits so the root has prec + 2 bits.
    k = max(0, 2 * (fmt.prec + 2) - m.bit_length())
    if (e - k) & 1:
        k += 1
    m <<= k
    root = math.isqrt(m)
    return _round(fmt, 0, (root << 1) | (root * root != m), (e - k) // 2 - 1, rm)


def fma(fmt: Format, a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    """a*b + c with one rounding; the four RISC-V forms flip operand signs before calling this."""
    _check_rm(rm)
    inf = fmt.inf
    xa = a & fmt.mag_mask
    xb = b & fmt.mag_mask
    xc = c & fmt.mag_mask
    inf_times_zero = (xa == inf and xb == 0) or (xa == 0 and xb == inf)
    if xa > inf or xb > inf or xc > inf:
        # RISC-V makes inf * 0 invalid even when the addend is a quiet NaN.
        return fmt.nan, NV if inf_times_zero else nan_flags(fmt, a, b, c)
    if inf_times_zero:
        return fmt.nan, NV
    ps = ((a ^ b) >> fmt.sign_shift) & 1
    sc = c >> fmt.sign_shift
    if xa == inf or xb == inf:
        if xc == inf and ps != sc:
            return fmt.nan, NV
        return (ps << fmt.sign_shift) | inf, 0
    if xc == inf:
        return c, 0
    if xa == 0 or xb == 0:
        if xc == 0:
            return _zero_sum_sign(ps, sc, rm) << fmt.sign_shift, 0
        return c, 0
    _, ma, ea = _unpack(fmt, a)
    _, mb, eb = _unpack(fmt, b)
    _, mc, ec = _unpack(fmt, c)
    pe = ea + eb
    e = min(pe, ec)
    total = (-(ma * mb) if ps else ma * mb) << (pe - e)
    total += (-mc if sc else mc) << (ec - e)
    if total == 0:
        return _zero_sum_sign(ps, sc, rm) << fmt.sign_shift, 0
    if total < 0:
        return _round(fmt, 1, -total, e, rm)
    return _round(fmt, 0, total, e, rm)


def to_int(fmt: Format, a: int, kind: int, rm: int) -> tuple[int, int]:
    """Invalid inputs saturate (NaN to the maximum) and raise only NV, never NX, as RISC-V specifies."""
    _check_rm(rm)
    signed = kind in (I32, I64)
    bits = 32 if kind in (I32, U32) else 64
    lo = -(1 << (bits - 1)) if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    xa = a & fmt.mag_mask
    if xa > fmt.inf:
        return _int_reg(hi, kind), NV
    sign = a >> fmt.sign_shift
    if xa == fmt.inf:
        return _int_reg(lo if sign else hi, kind), NV
    _, m, e = _unpack(fmt, a)
    if e >= 0:
        if m.bit_length() + e > 65:  # far out of every range; avoid building a huge int
            return _int_reg(lo if sign else hi, kind), NV
        value, rem = m << e, 0
    else:
        value = m >> -e
        rem = m & ((1 << -e) - 1)
        if _round_up(rm, sign, value & 1, rem, 1 << (-e - 1)):
            value += 1
    if sign:
        value = -value
    if not lo <= value <= hi:
        return _int_reg(lo if sign else hi, kind), NV
    return _int_reg(value, kind), NX if rem else 0


def _int_reg(value: int, kind: int) -> int:
    """The x-register image of a conversion result: RV64 sign-extends W *and* WU results."""
    if kind in (I32, U32):
        value &= 0xFFFFFFFF
        if value & 0x80000000:
            value |= _BOX
        return value
    return value & _M64


def from_int(fmt: Format, v: int, rm: int) -> tuple[int, int]:
    _check_rm(rm)
    if v == 0:
        return 0, 0
    if v < 0:
        return _round(fmt, 1, -v, 0, rm)
    return _round(fmt, 0, v, 0, rm)


def convert(src: Format, dst: Format, a: int, rm: int) -> tuple[int, int]:
    _check_rm(rm)
    xa = a & src.mag_mask
    sign = a >> src.sign_shift
    if xa > src.inf:
        return dst.nan, nan_flags(src, a)
    if xa == src.inf:
        return (sign << dst.sign_shift) | dst.inf, 0
    if xa == 0:
        return sign << dst.sign_shift, 0
    _, m, e = _unpack(src, a)
    return _round(dst, sign, m, e, rm)


def int_value(x: int, kind: int) -> int:
    """The integer an fcvt.*.{w,wu,l,lu} source register holds: W kinds read only the low 32 bits."""
    if kind in (I32, U32):
        x &= 0xFFFFFFFF
        if kind == I32 and x & 0x80000000:
            return x - (1 << 32)
        return x
    if kind == I64 and x & (1 << 63):
        return x - (1 << 64)
    return x
