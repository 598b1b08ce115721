"""F/D operations that never round: sign injection, comparisons, min/max, classification, NaN-boxing.

They work on the integer patterns directly; no host float is involved.
"""

from __future__ import annotations

from typing import Final

from isola.emu.fp.exact import NV, Format, nan_flags

_BOX: Final = 0xFFFFFFFF00000000
_CANONICAL_NAN32: Final = 0x7FC00000


def box32(a: int) -> int:
    """NaN-box a binary32 pattern into a 64-bit f register."""
    return a | _BOX


def unbox32(reg: int) -> int:
    """The binary32 in a 64-bit f register; an improperly boxed value reads as the canonical NaN."""
    if reg >> 32 == 0xFFFFFFFF:
        return reg & 0xFFFFFFFF
    return _CANONICAL_NAN32


def fsgnj(fmt: Format, a: int, b: int) -> int:
    return (a & fmt.mag_mask) | (b & fmt.sign)


def fsgnjn(fmt: Format, a: int, b: int) -> int:
    return (a & fmt.mag_mask) | (~b & fmt.sign)


def fsgnjx(fmt: Format, a: int, b: int) -> int:
    return a ^ (b & fmt.sign)


def _minmax(fmt: Format, a: int, b: int, pick_max: bool) -> tuple[int, int]:
    mag, inf = fmt.mag_mask, fmt.inf
    xa, xb = a & mag, b & mag
    if xa > inf or xb > inf:
        flags = nan_flags(fmt, a, b)
        if xa > inf and xb > inf:
            return fmt.nan, flags
        return (b if xa > inf else a), flags
    # Numeric order as ints, with -0 just below +0 as fmin/fmax want.
    ka = -xa - 1 if a != xa else a
    kb = -xb - 1 if b != xb else b
    return (a if (ka > kb) == pick_max else b), 0


def fmin(fmt: Format, a: int, b: int) -> tuple[int, int]:
    """RISC-V >= 2.2 minimumNumber: a single NaN operand yields the other operand."""
    return _minmax(fmt, a, b, False)


def fmax(fmt: Format, a: int, b: int) -> tuple[int, int]:
    """RISC-V >= 2.2 maximumNumber: a single NaN operand yields the other operand."""
    return _minmax(fmt, a, b, True)


# The comparisons order non-NaN patterns as ints (negatives negated), where -0 and +0 both map to 0.


def feq(fmt: Format, a: int, b: int) -> tuple[int, int]:
    """Quiet comparison: only a signalling NaN is invalid."""
    mag, inf = fmt.mag_mask, fmt.inf
    xa, xb = a & mag, b & mag
    if xa > inf or xb > inf:
        return 0, nan_flags(fmt, a, b)
    return int(a == b or xa == xb == 0), 0


def flt(fmt: Format, a: int, b: int) -> tuple[int, int]:
    """Signalling comparison: any NaN is invalid."""
    mag, inf = fmt.mag_mask, fmt.inf
    xa, xb = a & mag, b & mag
    if xa > inf or xb > inf:
        return 0, NV
    return int((-xa if a != xa else a) < (-xb if b != xb else b)), 0


def fle(fmt: Format, a: int, b: int) -> tuple[int, int]:
    """Signalling comparison: any NaN is invalid."""
    mag, inf = fmt.mag_mask, fmt.inf
    xa, xb = a & mag, b & mag
    if xa > inf or xb > inf:
        return 0, NV
    return int((-xa if a != xa else a) <= (-xb if b != xb else b)), 0


def fclass(fmt: Format, a: int) -> int:
    """The 10-bit fclass mask: bits 0-7 run -inf, -normal, -subnormal, -0, +0, ... +inf; 8 sNaN; 9 qNaN."""
    mag = a & fmt.mag_mask
    if mag > fmt.inf:
        return 1 << 9 if a & fmt.quiet else 1 << 8
    if mag == fmt.inf:
        index = 0
    elif mag >= fmt.implicit:
        index = 1
    elif mag:
        index = 2
    else:
        index = 3
    return 1 << index if a & fmt.sign else 1 << (7 - index)
