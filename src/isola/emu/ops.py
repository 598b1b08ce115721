"""Run-time helpers that translated blocks call for the operations too long to inline.

Everything here works on unsigned 64-bit ints and follows the RISC-V spec to the letter: division never traps
(x/0 is all ones, x%0 is x, the most negative number / -1 overflows to itself), and MULH* return the high
half of the full 128-bit product. Inlined operations live in `translate.py` as source templates.
"""

from __future__ import annotations

M64 = 0xFFFF_FFFF_FFFF_FFFF
M32 = 0xFFFF_FFFF
SIGN64 = 1 << 63


def s64(v: int) -> int:
    return v - (1 << 64) if v & SIGN64 else v


def s32(v: int) -> int:
    v &= M32
    return v - (1 << 32) if v & 0x8000_0000 else v


def sext32(v: int) -> int:
    """The low 32 bits of `v`, sign-extended to an unsigned 64-bit register value."""
    return s32(v) & M64


def _tdiv(a: int, b: int) -> int:
    """Division truncating toward zero, as RISC-V (and C) divide; Python's // floors."""
    q = abs(a) // abs(b)
    return -q if (a < 0) != (b < 0) else q


def div(a: int, b: int) -> int:
    if b == 0:
        return M64
    sa, sb = s64(a), s64(b)
    if sa == -SIGN64 and sb == -1:
        return a
    return _tdiv(sa, sb) & M64


def divu(a: int, b: int) -> int:
    return a // b if b else M64


def rem(a: int, b: int) -> int:
    if b == 0:
        return a
    sa, sb = s64(a), s64(b)
    if sa == -SIGN64 and sb == -1:
        return 0
    return (sa - _tdiv(sa, sb) * sb) & M64


def remu(a: int, b: int) -> int:
    return a % b if b else a


def divw(a: int, b: int) -> int:
    sa, sb = s32(a), s32(b)
    if sb == 0:
        return M64
    if sa == -(1 << 31) and sb == -1:
        return sa & M64
    return _tdiv(sa, sb) & M64


def divuw(a: int, b: int) -> int:
    ua, ub = a & M32, b & M32
    return sext32(ua // ub) if ub else M64


def remw(a: int, b: int) -> int:
    sa, sb = s32(a), s32(b)
    if sb == 0:
        return sa & M64
    if sa == -(1 << 31) and sb == -1:
        return 0
    return (sa - _tdiv(sa, sb) * sb) & M64


def remuw(a: int, b: int) -> int:
    ua, ub = a & M32, b & M32
    return sext32(ua % ub) if ub else sext32(ua)


def mulh(a: int, b: int) -> int:
    return ((s64(a) * s64(b)) >> 64) & M64


def mulhsu(a: int, b: int) -> int:
    return ((s64(a) * b) >> 64) & M64


def mulhu(a: int, b: int) -> int:
    return (a * b) >> 64


# AMO operations on (old memory value, register value) -> new memory value, per width.
def amo_ops(bits: int) -> dict[str, str]:
    """Source expressions for the AMO combine step; `o` is the old memory value, `v` the register, both
    already reduced to `bits` wide and unsigned. Signed min/max compare with the sign bit flipped."""
    s = f"{1 << (bits - 1):#x}"
    return {
        "swap": "v",
        "add": f"(o + v) & {(1 << bits) - 1:#x}",
        "xor": "o ^ v",
        "and": "o & v",
        "or": "o | v",
        "min": f"o if (o ^ {s}) < (v ^ {s}) else v",
        "max": f"o if (o ^ {s}) > (v ^ {s}) else v",
        "minu": "o if o < v else v",
        "maxu": "o if o > v else v",
    }
