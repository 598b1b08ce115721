"""softfloat against the IEEE-754/RISC-V specs: hand-picked corners, then hypothesis properties against a
slow reference that rounds exact `Fraction` results with its own, deliberately simple, code."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isola.emu import softfloat as sf
from isola.emu.softfloat import DZ, F32, F64, NV, NX, OF, RDN, RMM, RNE, RTZ, RUP, UF, Format

ALL_RM = (RNE, RTZ, RDN, RUP, RMM)
FORMATS = {"f32": F32, "f64": F64}


def d(x: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", x))[0])


def s(x: float) -> int:
    return int(struct.unpack("<I", struct.pack("<f", x))[0])


# ---- the slow reference ------------------------------------------------------------------------


def pow2(n: int) -> Fraction:
    return Fraction(2**n) if n >= 0 else Fraction(1, 2**-n)


def floor_log2(q: Fraction) -> int:
    e = q.numerator.bit_length() - q.denominator.bit_length()
    while pow2(e) > q:
        e -= 1
    while pow2(e + 1) <= q:
        e += 1
    return e


def params(fmt: Format) -> tuple[int, int, int, int]:
    bias = 2 ** (fmt.ebits - 1) - 1
    return bias, 1 - bias, bias, fmt.fbits


def ref_decode(fmt: Format, x: int) -> tuple[str, int, Fraction]:
    """('nan'|'snan'|'inf'|'num', sign, magnitude)."""
    bias, emin, _, fb = params(fmt)
    sign = x >> (fmt.ebits + fb)
    ex = (x >> fb) & (2**fmt.ebits - 1)
    frac = x & (2**fb - 1)
    if ex == 2**fmt.ebits - 1:
        if frac == 0:
            return "inf", sign, Fraction(0)
        return ("nan" if frac >> (fb - 1) else "snan"), sign, Fraction(0)
    if ex == 0:
        return "num", sign, frac * pow2(emin - fb)
    return "num", sign, (2**fb + frac) * pow2(ex - bias - fb)


def ref_encode(fmt: Format, sign: int, v: Fraction) -> int:
    bias, emin, _, fb = params(fmt)
    top = sign << (fmt.ebits + fb)
    if v == 0:
        return top
    if v < pow2(emin):
        frac = v / pow2(emin - fb)
        assert frac.denominator == 1
        return top | int(frac)
    e = floor_log2(v)
    sig = v / pow2(e - fb)
    assert sig.denominator == 1
    return top | ((e + bias) << fb) | (int(sig) - (1 << fb))


def ref_round_int(q: Fraction, sign: int, rm: int) -> tuple[int, bool]:
    """Round a nonnegative magnitude to an integer."""
    fl = math.floor(q)
    rem = q - fl
    if rem == 0:
        return fl, False
    half = Fraction(1, 2)
    up = {
        RNE: rem > half or (rem == half and fl % 2 == 1),
        RTZ: False,
        RDN: sign == 1,
        RUP: sign == 0,
        RMM: rem >= half,
    }[rm]
    return fl + int(up), True


def ref_round(fmt: Format, sign: int, q: Fraction, rm: int) -> tuple[int, int]:
    """Round a nonzero exact magnitude into fmt, RISC-V style (tininess after rounding)."""
    _, emin, emax, fb = params(fmt)
    e = floor_log2(q)
    k_unbounded, _ = ref_round_int(q / pow2(e - fb), sign, rm)
    tiny = k_unbounded * pow2(e - fb) < pow2(emin)
    lsb = max(e, emin) - fb
    k, inexact = ref_round_int(q / pow2(lsb), sign, rm)
    value = k * pow2(lsb)
    if value >= pow2(emax + 1):
        to_inf = rm in (RNE, RMM) or (rm == RDN and sign == 1) or (rm == RUP and sign == 0)
        mag = fmt.inf if to_inf else fmt.max_finite
        return (sign << (fmt.width - 1)) | mag, OF | NX
    flags = (NX if inexact else 0) | (UF if tiny and inexact else 0)
    return ref_encode(fmt, sign, value), flags


def ref_value(fmt: Format, sign: int, q: Fraction, rm: int, zero_sign: int) -> tuple[int, int]:
    if q == 0:
        return ref_encode(fmt, zero_sign, Fraction(0)), 0
    return ref_round(fmt, sign, q, rm)


def signed(sign: int, q: Fraction) -> Fraction:
    return -q if sign else q


def nan_result(fmt: Format, *ops: tuple[str, int, Fraction]) -> tuple[int, int] | None:
    kinds = [o[0] for o in ops]
    if "nan" in kinds or "snan" in kinds:
        return fmt.nan, NV if "snan" in kinds else 0
    return None


def ref_add(fmt: Format, a: int, b: int, rm: int) -> tuple[int, int]:
    oa, ob = ref_decode(fmt, a), ref_decode(fmt, b)
    if (n := nan_result(fmt, oa, ob)) is not None:
        return n
    if oa[0] == "inf" and ob[0] == "inf":
        return (fmt.nan, NV) if oa[1] != ob[1] else (a, 0)
    if "inf" in (oa[0], ob[0]):
        return (a if oa[0] == "inf" else b), 0
    total = signed(oa[1], oa[2]) + signed(ob[1], ob[2])
    zero_sign = oa[1] if oa[1] == ob[1] else int(rm == RDN)
    return ref_value(fmt, int(total < 0), abs(total), rm, zero_sign)


def ref_sub(fmt: Format, a: int, b: int, rm: int) -> tuple[int, int]:
    return ref_add(fmt, a, b ^ fmt.sign, rm)


def ref_mul(fmt: Format, a: int, b: int, rm: int) -> tuple[int, int]:
    oa, ob = ref_decode(fmt, a), ref_decode(fmt, b)
    if (n := nan_result(fmt, oa, ob)) is not None:
        return n
    sign = oa[1] ^ ob[1]
    if "inf" in (oa[0], ob[0]):
        if (oa[0] == "num" and oa[2] == 0) or (ob[0] == "num" and ob[2] == 0):
            return fmt.nan, NV
        return (sign << (fmt.width - 1)) | fmt.inf, 0
    return ref_value(fmt, sign, oa[2] * ob[2], rm, sign)


def ref_div(fmt: Format, a: int, b: int, rm: int) -> tuple[int, int]:
    oa, ob = ref_decode(fmt, a), ref_decode(fmt, b)
    if (n := nan_result(fmt, oa, ob)) is not None:
        return n
    sign = oa[1] ^ ob[1]
    inf = (sign << (fmt.width - 1)) | fmt.inf
    if oa[0] == "inf":
        return (fmt.nan, NV) if ob[0] == "inf" else (inf, 0)
    if ob[0] == "inf":
        return sign << (fmt.width - 1), 0
    if ob[2] == 0:
        return (fmt.nan, NV) if oa[2] == 0 else (inf, DZ)
    return ref_value(fmt, sign, oa[2] / ob[2], rm, sign)


def ref_sqrt(fmt: Format, a: int, rm: int) -> tuple[int, int]:
    oa = ref_decode(fmt, a)
    if (n := nan_result(fmt, oa)) is not None:
        return n
    if oa[0] == "num" and oa[2] == 0:
        return a, 0
    if oa[1]:
        return fmt.nan, NV
    if oa[0] == "inf":
        return a, 0
    q = oa[2]
    # Hundreds more bits than any result keeps, so an inexact root never looks exact or halfway.
    extra = 300 - floor_log2(q) // 2
    root = math.isqrt(math.floor(q * pow2(2 * extra)))
    approx = root * pow2(-extra)
    if approx * approx != q:
        approx = (2 * root + 1) * pow2(-extra - 1)
    return ref_round(fmt, 0, approx, rm)


def ref_fma(fmt: Format, a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    oa, ob, oc = ref_decode(fmt, a), ref_decode(fmt, b), ref_decode(fmt, c)
    zero_a = oa[0] == "num" and oa[2] == 0
    zero_b = ob[0] == "num" and ob[2] == 0
    if (oa[0] == "inf" and zero_b) or (ob[0] == "inf" and zero_a):
        return fmt.nan, NV
    if (n := nan_result(fmt, oa, ob, oc)) is not None:
        return n
    ps = oa[1] ^ ob[1]
    if "inf" in (oa[0], ob[0]):
        if oc[0] == "inf" and oc[1] != ps:
            return fmt.nan, NV
        return (ps << (fmt.width - 1)) | fmt.inf, 0
    if oc[0] == "inf":
        return c, 0
    total = signed(ps, oa[2] * ob[2]) + signed(oc[1], oc[2])
    zero_sign = ps if ps == oc[1] else int(rm == RDN)
    return ref_value(fmt, int(total < 0), abs(total), rm, zero_sign)


KIND_RANGES = {
    sf.I32: (-(2**31), 2**31 - 1),
    sf.U32: (0, 2**32 - 1),
    sf.I64: (-(2**63), 2**63 - 1),
    sf.U64: (0, 2**64 - 1),
}


def ref_to_int(fmt: Format, a: int, kind: int, rm: int) -> tuple[int, int]:
    lo, hi = KIND_RANGES[kind]
    oa = ref_decode(fmt, a)
    if oa[0] in ("nan", "snan"):
        value, flags = hi, NV
    elif oa[0] == "inf":
        value, flags = (lo if oa[1] else hi), NV
    else:
        k, inexact = ref_round_int(oa[2], oa[1], rm)
        k = -k if oa[1] else k
        if lo <= k <= hi:
            value, flags = k, NX if inexact else 0
        else:
            value, flags = (lo if oa[1] else hi), NV
    if kind in (sf.I32, sf.U32):  # RV64 sign-extends the 32-bit result of both W and WU
        value = (value + 2**31) % 2**32 - 2**31
    return value % 2**64, flags


def ref_from_int(fmt: Format, x: int, kind: int, rm: int) -> tuple[int, int]:
    if kind in (sf.I32, sf.U32):
        x %= 2**32
        if kind == sf.I32 and x >= 2**31:
            x -= 2**32
    elif kind == sf.I64 and x >= 2**63:
        x -= 2**64
    return ref_value(fmt, int(x < 0), Fraction(abs(x)), rm, 0)


def ref_convert(src: Format, dst: Format, a: int, rm: int) -> tuple[int, int]:
    oa = ref_decode(src, a)
    if (n := nan_result(dst, oa)) is not None:
        return n
    if oa[0] == "inf":
        return (oa[1] << (dst.width - 1)) | dst.inf, 0
    return ref_value(dst, oa[1], oa[2], rm, oa[1])


# ---- operand generation ------------------------------------------------------------------------


def specials(fmt: Format) -> list[int]:
    vals = [
        0,
        1,  # smallest subnormal
        fmt.implicit - 1,  # largest subnormal
        fmt.implicit,  # smallest normal
        fmt.implicit + 1,
        fmt.max_finite,
        fmt.max_finite - 1,
        fmt.inf,
        fmt.nan,
        fmt.inf | 1,  # signalling NaN
        fmt.inf | (fmt.quiet - 1),
        fmt.bias << fmt.fbits,  # 1.0
        (fmt.bias << fmt.fbits) | 1,
        (fmt.bias << fmt.fbits) - 1,
        (fmt.bias + 1) << fmt.fbits,  # 2.0
        ((fmt.bias + 1) << fmt.fbits) | fmt.quiet,  # 3.0
        fmt.frac_mask | ((fmt.bias - 1) << fmt.fbits),
    ]
    return vals + [v | fmt.sign for v in vals]


def operands(fmt: Format) -> st.SearchStrategy[int]:
    emax_field = 2**fmt.ebits - 1
    sign = st.sampled_from([0, fmt.sign])
    frac = st.integers(0, fmt.frac_mask)
    # Significands with only a few leading bits make exact results and halfway cases common.
    short_frac = st.integers(0, 15).map(lambda f: f << (fmt.fbits - 4))
    tail_frac = st.integers(0, 7).map(lambda f: fmt.frac_mask - f)

    def build(ex: st.SearchStrategy[int], fr: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
        return st.builds(lambda sg, e, f: sg | (e << fmt.fbits) | f, sign, ex, fr)

    edge_exp = st.one_of(st.integers(0, fmt.fbits + 3), st.integers(emax_field - fmt.fbits - 3, emax_field - 1))
    mid_exp = st.integers(fmt.bias - fmt.fbits - 3, fmt.bias + fmt.fbits + 3)
    any_exp = st.integers(0, emax_field - 1)
    return st.one_of(
        st.sampled_from(specials(fmt)),
        st.integers(0, 2**fmt.width - 1),
        build(edge_exp, frac),
        build(mid_exp, st.one_of(frac, short_frac, tail_frac)),
        build(any_exp, st.one_of(short_frac, tail_frac)),
    )


fmt_params = pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=list(FORMATS))
rms = st.sampled_from(ALL_RM)

Binary = Callable[[int, int, int], tuple[int, int]]
IMPL2: dict[str, tuple[Binary, Binary, Callable[[Format, int, int, int], tuple[int, int]]]] = {
    "add": (sf.f32_add, sf.f64_add, ref_add),
    "sub": (sf.f32_sub, sf.f64_sub, ref_sub),
    "mul": (sf.f32_mul, sf.f64_mul, ref_mul),
    "div": (sf.f32_div, sf.f64_div, ref_div),
}


def impl(fmt: Format, pair: tuple[Binary, Binary, object]) -> Binary:
    return pair[0] if fmt is F32 else pair[1]


def show(res: tuple[int, int]) -> str:
    return f"({res[0]:#x}, flags={res[1]:#07b})"


# ---- hand-picked corners -----------------------------------------------------------------------

P0, N0 = d(0.0), d(-0.0)
PINF, NINF = d(math.inf), d(-math.inf)
QNAN64, SNAN64 = 0x7FF8000000000000, 0x7FF0000000000001
QNAN32, SNAN32 = 0x7FC00000, 0x7F800001
MAXD = d(1.7976931348623157e308)


@pytest.mark.parametrize("rm", ALL_RM)
def test_signed_zero_sums(rm: int) -> None:
    expect_neg = rm == RDN
    assert sf.f64_sub(d(1.5), d(1.5), rm) == (N0 if expect_neg else P0, 0)
    assert sf.f64_add(P0, N0, rm) == (N0 if expect_neg else P0, 0)
    assert sf.f64_add(N0, N0, rm) == (N0, 0)
    assert sf.f64_add(P0, P0, rm) == (P0, 0)
    assert sf.f32_sub(s(2.0), s(2.0), rm) == (0x80000000 if expect_neg else 0, 0)
    assert sf.f64_mul(N0, d(3.0), rm) == (N0, 0)
    assert sf.f64_fmadd(d(1.0), d(-1.0), d(1.0), rm) == (N0 if expect_neg else P0, 0)
    assert sf.f64_fnmadd(P0, d(1.0), P0, rm) == (N0, 0)  # -(+0) - (+0)


def test_subnormal_results_and_underflow() -> None:
    tiny = d(2.0**-1074)
    assert sf.f64_mul(d(2.0**-1000), d(2.0**-74), RNE) == (1, 0)  # exact subnormal: no UF
    assert sf.f64_mul(d(2.0**-1000), d(2.0**-75), RNE) == (0, UF | NX)  # halfway to even zero
    assert sf.f64_mul(d(2.0**-1000), d(2.0**-75), RUP) == (tiny, UF | NX)
    assert sf.f64_div(tiny, d(2.0), RMM) == (tiny, UF | NX)
    assert sf.f64_add(d(2.0**-1022), d(-(2.0**-1074)), RNE) == (0x000FFFFFFFFFFFFF, 0)
    assert sf.f32_mul(1, s(0.5), RNE) == (0, UF | NX)


def test_tininess_is_detected_after_rounding() -> None:
    # (1 + 2**-52) * (2**-1022 - 2**-1074) = 2**-1022 * (1 - 2**-104): with an unbounded exponent it
    # rounds up to 2**-1022, so it is not tiny and UF stays clear.
    min_normal, max_subnormal = 0x0010000000000000, 0x000FFFFFFFFFFFFF
    assert sf.f64_mul(d(1.0 + 2.0**-52), max_subnormal, RNE) == (min_normal, NX)
    assert sf.f64_mul(d(1.0 + 2.0**-52), max_subnormal, RTZ) == (max_subnormal, UF | NX)
    # 2**-1022 * (1 - a*a * 2**-106) with 2**52 < a*a < 2**53: the subnormal rounding goes up to
    # 2**-1022, but 53-bit rounding with unbounded exponent stays below it, so it is tiny.
    a = 80530638
    x, y = d((2**53 - a) * 2.0**-53), d((2**52 + a // 2) * 2.0**-1074)
    assert sf.f64_mul(x, y, RNE) == (min_normal, UF | NX)


@pytest.mark.parametrize(
    ("rm", "pos_inf", "neg_inf"),
    [(RNE, True, True), (RTZ, False, False), (RDN, False, True), (RUP, True, False), (RMM, True, True)],
)
def test_overflow_per_mode(rm: int, pos_inf: bool, neg_inf: bool) -> None:
    for fmt, mul, add in ((F64, sf.f64_mul, sf.f64_add), (F32, sf.f32_mul, sf.f32_add)):
        pos = fmt.inf if pos_inf else fmt.max_finite
        neg = fmt.sign | (fmt.inf if neg_inf else fmt.max_finite)
        two = (fmt.bias + 1) << fmt.fbits
        assert mul(fmt.max_finite, two, rm) == (pos, OF | NX)
        assert mul(fmt.max_finite, two | fmt.sign, rm) == (neg, OF | NX)
        assert add(fmt.max_finite, fmt.max_finite, rm) == (pos, OF | NX)
        assert add(fmt.max_finite | fmt.sign, fmt.max_finite | fmt.sign, rm) == (neg, OF | NX)
    assert sf.f64_to_f32(MAXD, rm) == ((F32.inf if pos_inf else F32.max_finite), OF | NX)


def test_invalid_and_divide_by_zero() -> None:
    assert sf.f64_div(P0, P0, RNE) == (QNAN64, NV)
    assert sf.f64_div(PINF, NINF, RNE) == (QNAN64, NV)
    assert sf.f64_div(d(1.0), P0, RNE) == (PINF, DZ)
    assert sf.f64_div(d(-1.0), P0, RNE) == (NINF, DZ)
    assert sf.f32_div(s(1.0), 0x80000000, RNE) == (0xFF800000, DZ)
    assert sf.f64_mul(PINF, P0, RNE) == (QNAN64, NV)
    assert sf.f64_add(PINF, NINF, RNE) == (QNAN64, NV)
    assert sf.f64_add(QNAN64 | 5, d(1.0), RNE) == (QNAN64, 0)  # payload not propagated
    assert sf.f64_add(SNAN64, d(1.0), RNE) == (QNAN64, NV)
    assert sf.f32_add(SNAN32, QNAN32 | 7, RNE) == (QNAN32, NV)


def test_sqrt_corners() -> None:
    assert sf.f64_sqrt(d(-1.0), RNE) == (QNAN64, NV)
    assert sf.f64_sqrt(NINF, RNE) == (QNAN64, NV)
    assert sf.f64_sqrt(N0, RNE) == (N0, 0)
    assert sf.f64_sqrt(P0, RNE) == (P0, 0)
    assert sf.f64_sqrt(PINF, RNE) == (PINF, 0)
    assert sf.f64_sqrt(d(4.0), RNE) == (d(2.0), 0)
    assert sf.f64_sqrt(d(2.0), RNE) == (d(math.sqrt(2.0)), NX)
    assert sf.f32_sqrt(0x80000000, RNE) == (0x80000000, 0)
    assert sf.f32_sqrt(s(-4.0), RNE) == (QNAN32, NV)
    assert sf.f64_sqrt(1, RNE) == (d(2.0**-537), 0)  # sqrt of the smallest subnormal is exact


def test_fma_invalid_even_with_quiet_nan_addend() -> None:
    assert sf.f64_fmadd(PINF, P0, QNAN64, RNE) == (QNAN64, NV)
    assert sf.f64_fmadd(P0, NINF, QNAN64, RNE) == (QNAN64, NV)
    assert sf.f32_fmadd(0x7F800000, 0, QNAN32, RNE) == (QNAN32, NV)
    assert sf.f64_fmadd(d(1.0), d(1.0), QNAN64, RNE) == (QNAN64, 0)
    assert sf.f64_fmadd(PINF, d(1.0), NINF, RNE) == (QNAN64, NV)
    assert sf.f64_fmsub(PINF, d(1.0), PINF, RNE) == (QNAN64, NV)


def test_fma_single_rounding() -> None:
    # (1 + 2**-30)**2 - 1 = 2**-29 + 2**-60 exactly: a separate multiply would lose the 2**-60 term.
    x = d(1.0 + 2.0**-30)
    assert sf.f64_fmadd(x, x, d(-1.0), RNE) == (d(2.0**-29 + 2.0**-60), 0)
    assert sf.f64_fmsub(x, x, d(1.0), RNE) == (d(2.0**-29 + 2.0**-60), 0)
    assert sf.f64_fnmsub(x, x, d(1.0), RNE) == (d(-(2.0**-29 + 2.0**-60)), 0)
    assert sf.f64_fnmadd(x, x, d(-1.0), RNE) == (d(-(2.0**-29 + 2.0**-60)), 0)
    y = s(1.0 + 2.0**-12)
    assert sf.f32_fmadd(y, y, s(-1.0), RNE) == (s(2.0**-11 + 2.0**-24), 0)
    # y*y = 1 + 2**-11 + 2**-24 is a binary32 halfway point; + 2**-80 puts the exact sum just above it,
    # but the binary64 sum rounds back onto it, and a second rounding would then go to even (down).
    assert sf.f32_fmadd(y, y, s(2.0**-80), RNE) == (s(1.0 + 2.0**-11 + 2.0**-23), NX)
    assert sf.f32_fmadd(y, y, s(-(2.0**-80)), RNE) == (s(1.0 + 2.0**-11), NX)


@pytest.mark.parametrize("rm", [5, 6, 7])
def test_illegal_rounding_modes(rm: int) -> None:
    one = d(1.0)
    calls: list[Callable[[], object]] = [
        lambda: sf.f64_add(one, one, rm),
        lambda: sf.f64_mul(one, one, rm),
        lambda: sf.f64_div(one, one, rm),
        lambda: sf.f64_sqrt(one, rm),
        lambda: sf.f64_fmadd(one, one, one, rm),
        lambda: sf.f32_fmadd(0, 0, 0, rm),
        lambda: sf.f64_to_int(one, sf.I32, rm),
        lambda: sf.int_to_f64(1, sf.I32, rm),
        lambda: sf.f32_to_f64(0, rm),
        lambda: sf.f64_to_f32(one, rm),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="rounding mode"):
            call()


def test_min_max() -> None:
    assert sf.fmin(F64, P0, N0) == (N0, 0)
    assert sf.fmin(F64, N0, P0) == (N0, 0)
    assert sf.fmax(F64, N0, P0) == (P0, 0)
    assert sf.fmax(F64, d(-3.0), d(2.0)) == (d(2.0), 0)
    assert sf.fmin(F64, d(-3.0), d(2.0)) == (d(-3.0), 0)
    assert sf.fmin(F64, QNAN64, d(2.0)) == (d(2.0), 0)
    assert sf.fmax(F64, d(2.0), SNAN64) == (d(2.0), NV)
    assert sf.fmax(F64, QNAN64 | 3, QNAN64 | 4) == (QNAN64, 0)
    assert sf.fmin(F32, SNAN32, QNAN32) == (QNAN32, NV)
    assert sf.fmin(F32, NINF >> 32, s(1.0)) == (s(1.0), 0)  # 0xfff00000 is a quiet binary32 NaN
    assert sf.fmin(F32, 0xFF800000, s(1.0)) == (0xFF800000, 0)


def test_comparisons() -> None:
    assert sf.feq(F64, P0, N0) == (1, 0)
    assert sf.fle(F64, N0, P0) == (1, 0)
    assert sf.flt(F64, N0, P0) == (0, 0)
    assert sf.flt(F64, d(-2.0), d(-1.0)) == (1, 0)
    assert sf.flt(F64, d(-1.0), d(-2.0)) == (0, 0)
    assert sf.fle(F32, s(1.0), s(1.0)) == (1, 0)
    assert sf.feq(F64, QNAN64, QNAN64) == (0, 0)
    assert sf.feq(F64, SNAN64, d(1.0)) == (0, NV)
    assert sf.flt(F64, QNAN64, d(1.0)) == (0, NV)
    assert sf.fle(F32, s(1.0), QNAN32) == (0, NV)


def test_fclass() -> None:
    cases = {
        NINF: 0,
        d(-1.0): 1,
        d(-(2.0**-1070)): 2,
        N0: 3,
        P0: 4,
        d(2.0**-1070): 5,
        d(1.0): 6,
        PINF: 7,
        SNAN64: 8,
        QNAN64: 9,
    }
    for bits, index in cases.items():
        assert sf.fclass(F64, bits) == 1 << index
    assert sf.fclass(F32, SNAN32) == 1 << 8
    assert sf.fclass(F32, 0x80000001) == 1 << 2


def test_sign_injection() -> None:
    assert sf.fsgnj(F64, d(1.0), d(-2.0)) == d(-1.0)
    assert sf.fsgnjn(F64, d(1.0), d(-2.0)) == d(1.0)
    assert sf.fsgnjx(F64, d(-1.0), d(-2.0)) == d(1.0)
    assert sf.fsgnj(F32, QNAN32 | 5, 0x80000000) == 0xFFC00005  # no canonicalisation: bit work only


def test_nan_boxing() -> None:
    assert sf.box32(s(1.0)) == 0xFFFFFFFF3F800000
    assert sf.unbox32(0xFFFFFFFF3F800000) == s(1.0)
    assert sf.unbox32(0x000000003F800000) == QNAN32
    assert sf.unbox32(0xFFFFFFFE3F800000) == QNAN32
    assert sf.unbox32(d(1.0)) == QNAN32


# The RISC-V unprivileged spec's fcvt table ("FCVT.int.fmt behaviour for invalid inputs"), per kind:
# rows -inf / large negative, +inf / large positive, NaN.
M64 = 2**64 - 1
CVT_TABLE = {
    sf.I32: (0xFFFFFFFF80000000, 0x7FFFFFFF, 0x7FFFFFFF),
    sf.U32: (0, M64, M64),  # 2**32 - 1, sign-extended into the 64-bit register
    sf.I64: (2**63, 2**63 - 1, 2**63 - 1),
    sf.U64: (0, M64, M64),
}


@pytest.mark.parametrize("kind", list(CVT_TABLE))
@pytest.mark.parametrize("rm", ALL_RM)
def test_fcvt_saturation_table(kind: int, rm: int) -> None:
    neg, pos, nan = CVT_TABLE[kind]
    for to_int, inf, qnan, snan, big in (
        (sf.f64_to_int, PINF, QNAN64, SNAN64, d(1e30)),
        (sf.f32_to_int, 0x7F800000, QNAN32, SNAN32, s(1e30)),
    ):
        top = 1 << (63 if inf == PINF else 31)
        assert to_int(inf | top, kind, rm) == (neg, NV)
        assert to_int(big | top, kind, rm) == (neg, NV)
        assert to_int(inf, kind, rm) == (pos, NV)
        assert to_int(big, kind, rm) == (pos, NV)
        assert to_int(qnan, kind, rm) == (nan, NV)
        assert to_int(snan, kind, rm) == (nan, NV)
        assert to_int(qnan | top, kind, rm) == (nan, NV)


def test_fcvt_rounding_and_edges() -> None:
    assert sf.f64_to_int(d(-0.5), sf.U32, RNE) == (0, NX)  # rounds to 0: valid, merely inexact
    assert sf.f64_to_int(d(-0.5), sf.U32, RDN) == (0, NV)
    assert sf.f64_to_int(d(-1.0), sf.U64, RTZ) == (0, NV)
    assert sf.f64_to_int(d(2.5), sf.I32, RNE) == (2, NX)
    assert sf.f64_to_int(d(2.5), sf.I32, RMM) == (3, NX)
    assert sf.f64_to_int(d(-2.5), sf.I64, RMM) == (M64 - 2, NX)
    assert sf.f64_to_int(d(-2.5), sf.I64, RUP) == (M64 - 1, NX)
    assert sf.f64_to_int(d(2147483647.5), sf.I32, RUP) == (0x7FFFFFFF, NV)
    assert sf.f64_to_int(d(-2147483648.9), sf.I32, RTZ) == (0xFFFFFFFF80000000, NX)
    assert sf.f64_to_int(d(4294967295.0), sf.U32, RTZ) == (M64, 0)  # WU results are sign-extended
    assert sf.f64_to_int(d(2.0**63), sf.I64, RTZ) == (2**63 - 1, NV)
    assert sf.f64_to_int(d(-(2.0**63)), sf.I64, RTZ) == (2**63, 0)
    assert sf.f64_to_int(d(2.0**64 - 2048), sf.U64, RTZ) == (2**64 - 2048, 0)
    assert sf.f32_to_int(s(-3.7), sf.I32, RTZ) == (M64 - 2, NX)
    assert sf.f64_to_int(N0, sf.U32, RNE) == (0, 0)
    assert sf.f64_to_int(1, sf.I64, RUP) == (1, NX)


def test_int_to_float() -> None:
    assert sf.int_to_f64(M64, sf.I64, RNE) == (d(-1.0), 0)
    assert sf.int_to_f64(M64, sf.U64, RNE) == (d(2.0**64), NX)
    assert sf.int_to_f64(M64, sf.U64, RTZ) == (d(2.0**64 - 2048), NX)
    assert sf.int_to_f64(0xFFFFFFFF, sf.I32, RNE) == (d(-1.0), 0)
    assert sf.int_to_f64(0xFFFFFFFF, sf.U32, RNE) == (d(4294967295.0), 0)
    assert sf.int_to_f32(0xFFFFFFFF, sf.U32, RNE) == (s(4294967296.0), NX)
    assert sf.int_to_f32((1 << 24) + 1, sf.I32, RNE) == (s(2.0**24), NX)
    assert sf.int_to_f32((1 << 24) + 1, sf.I32, RUP) == (s(2.0**24 + 2), NX)
    assert sf.int_to_f32(0, sf.I64, RDN) == (0, 0)  # +0 even when rounding down


def test_float_to_float() -> None:
    assert sf.f32_to_f64(s(1.5), RNE) == (d(1.5), 0)
    assert sf.f32_to_f64(1, RNE) == (d(2.0**-149), 0)
    assert sf.f32_to_f64(SNAN32, RNE) == (QNAN64, NV)
    assert sf.f32_to_f64(QNAN32 | 0x80000005, RNE) == (QNAN64, 0)
    assert sf.f64_to_f32(SNAN64, RNE) == (QNAN32, NV)
    assert sf.f64_to_f32(d(1.0 + 2.0**-30), RNE) == (s(1.0), NX)
    assert sf.f64_to_f32(d(1.0 + 2.0**-30), RUP) == (s(1.0) + 1, NX)
    assert sf.f64_to_f32(d(2.0**-150), RNE) == (0, UF | NX)
    assert sf.f64_to_f32(d(-(2.0**-149)), RNE) == (0x80000001, 0)
    assert sf.f64_to_f32(N0, RNE) == (0x80000000, 0)


# ---- properties against the Fraction reference -------------------------------------------------

SETTINGS = settings(max_examples=250, deadline=None)


@fmt_params
@pytest.mark.parametrize("op", list(IMPL2))
@SETTINGS
@given(data=st.data())
def test_binary_ops_match_reference(fmt: Format, op: str, data: st.DataObject) -> None:
    a = data.draw(operands(fmt), "a")
    b = data.draw(operands(fmt), "b")
    rm = data.draw(rms, "rm")
    got = impl(fmt, IMPL2[op])(a, b, rm)
    want = IMPL2[op][2](fmt, a, b, rm)
    assert got == want, f"{op}({a:#x}, {b:#x}, rm={rm}): {show(got)} != {show(want)}"


@fmt_params
@SETTINGS
@given(data=st.data())
def test_sqrt_matches_reference(fmt: Format, data: st.DataObject) -> None:
    a = data.draw(operands(fmt), "a")
    rm = data.draw(rms, "rm")
    got = (sf.f32_sqrt if fmt is F32 else sf.f64_sqrt)(a, rm)
    assert got == ref_sqrt(fmt, a, rm)


FMA_FORMS = {
    "fmadd": (sf.f32_fmadd, sf.f64_fmadd, False, False),
    "fmsub": (sf.f32_fmsub, sf.f64_fmsub, False, True),
    "fnmsub": (sf.f32_fnmsub, sf.f64_fnmsub, True, False),
    "fnmadd": (sf.f32_fnmadd, sf.f64_fnmadd, True, True),
}


@fmt_params
@pytest.mark.parametrize("form", list(FMA_FORMS))
@SETTINGS
@given(data=st.data())
def test_fma_matches_reference(fmt: Format, form: str, data: st.DataObject) -> None:
    a, b, c = (data.draw(operands(fmt), name) for name in "abc")
    rm = data.draw(rms, "rm")
    f32, f64, neg_product, neg_addend = FMA_FORMS[form]
    got = (f32 if fmt is F32 else f64)(a, b, c, rm)
    want = ref_fma(fmt, a ^ (fmt.sign * neg_product), b, c ^ (fmt.sign * neg_addend), rm)
    assert got == want, f"{form}({a:#x}, {b:#x}, {c:#x}, rm={rm}): {show(got)} != {show(want)}"


@fmt_params
@SETTINGS
@given(data=st.data())
def test_fma_products_near_addend(fmt: Format, data: st.DataObject) -> None:
    """Cancellation and halfway cases need an addend close to -a*b; random operands rarely give one."""
    a, b = data.draw(operands(fmt), "a"), data.draw(operands(fmt), "b")
    rm = data.draw(rms, "rm")
    ref_prod = ref_mul(fmt, a, b, RNE)[0]
    c = (ref_prod ^ fmt.sign) + data.draw(st.integers(-2, 2), "delta")
    c &= 2**fmt.width - 1
    got = (sf.f32_fmadd if fmt is F32 else sf.f64_fmadd)(a, b, c, rm)
    assert got == ref_fma(fmt, a, b, c, rm)


@fmt_params
@pytest.mark.parametrize("kind", list(KIND_RANGES))
@SETTINGS
@given(data=st.data())
def test_to_int_matches_reference(fmt: Format, kind: int, data: st.DataObject) -> None:
    a = data.draw(
        st.one_of(
            operands(fmt),
            # values around every integer range edge
            st.builds(
                lambda n, frac, neg: ref_value(fmt, neg, Fraction(n) + frac, RNE, neg)[0],
                st.sampled_from([0, 1, 2, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 2**10, 2**64 - 2**11]),
                st.sampled_from([Fraction(0), Fraction(1, 2), Fraction(1, 4), Fraction(3, 4)]),
                st.integers(0, 1),
            ),
        ),
        "a",
    )
    rm = data.draw(rms, "rm")
    got = (sf.f32_to_int if fmt is F32 else sf.f64_to_int)(a, kind, rm)
    assert got == ref_to_int(fmt, a, kind, rm)


@fmt_params
@pytest.mark.parametrize("kind", list(KIND_RANGES))
@SETTINGS
@given(
    x=st.one_of(
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**32),
        st.integers(-(2**26), 2**26).map(lambda v: v % 2**64),
        st.integers(0, 63).map(lambda k: (2**k + 2 ** max(k - 25, 0)) % 2**64),
        st.integers(0, 63).map(lambda k: (2**k - 1) % 2**64),
    ),
    rm=rms,
)
def test_from_int_matches_reference(fmt: Format, kind: int, x: int, rm: int) -> None:
    got = (sf.int_to_f32 if fmt is F32 else sf.int_to_f64)(x, kind, rm)
    assert got == ref_from_int(fmt, x, kind, rm)


@SETTINGS
@given(a=operands(F64), rm=rms)
def test_f64_to_f32_matches_reference(a: int, rm: int) -> None:
    assert sf.f64_to_f32(a, rm) == ref_convert(F64, F32, a, rm)


@SETTINGS
@given(a=operands(F32), rm=rms)
def test_f32_to_f64_matches_reference(a: int, rm: int) -> None:
    assert sf.f32_to_f64(a, rm) == ref_convert(F32, F64, a, rm)


@fmt_params
@SETTINGS
@given(data=st.data())
def test_compare_and_minmax_match_fractions(fmt: Format, data: st.DataObject) -> None:
    a, b = data.draw(operands(fmt), "a"), data.draw(operands(fmt), "b")
    oa, ob = ref_decode(fmt, a), ref_decode(fmt, b)
    nan_a, nan_b = oa[0] in ("nan", "snan"), ob[0] in ("nan", "snan")
    snan = NV if "snan" in (oa[0], ob[0]) else 0
    if nan_a or nan_b:
        assert sf.feq(fmt, a, b) == (0, snan)
        assert sf.flt(fmt, a, b) == (0, NV)
        assert sf.fle(fmt, a, b) == (0, NV)
        want_min = fmt.nan if nan_a and nan_b else (b if nan_a else a)
        assert sf.fmin(fmt, a, b) == (want_min, snan)
        assert sf.fmax(fmt, a, b) == (want_min, snan)
        return

    def value(o: tuple[str, int, Fraction]) -> Fraction:
        big = pow2(2000)  # stands in for infinity
        return signed(o[1], big if o[0] == "inf" else o[2])

    va, vb = value(oa), value(ob)
    assert sf.feq(fmt, a, b) == (int(va == vb), 0)
    assert sf.flt(fmt, a, b) == (int(va < vb), 0)
    assert sf.fle(fmt, a, b) == (int(va <= vb), 0)
    # -0 orders below +0 for min/max only.
    ka, kb = (va, -oa[1]), (vb, -ob[1])
    assert sf.fmin(fmt, a, b) == ((a if ka <= kb else b), 0)
    assert sf.fmax(fmt, a, b) == ((a if ka >= kb else b), 0)
