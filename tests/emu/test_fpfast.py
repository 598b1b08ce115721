"""The hot-block float templates (`isola.emu.fpfast`) against the exact soft-float (`isola.emu.fp.exact`).

Each template is compiled on its own into a small function, the way a hot block holds it (registers kept as
floats are locals `d1`..`d4`, the others patterns in the list `f`), and must give the bit pattern and the
fflags that exact integer arithmetic gives, in every rounding mode, static or dynamic, whether it took its
fast path or fell back. The operands are drawn to reach both: small significands (exact results), random
patterns (inexact ones), ties, zeros of both signs, subnormals, the ends of the range and NaNs with payloads.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from isola.emu.fp import exact
from isola.emu.fp.exact import F64
from isola.emu.fpfast import BINARY, FUSED, FloatSource, float_registers
from isola.emu.fpgen import namespace as fp_namespace
from isola.emu.isa import Insn

SIGN = 1 << 63
OPS = [*BINARY, *FUSED]
DYNAMIC = 7


def bits(x: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", x))[0])


def value(b: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", b))[0])


def reference(mn: str, a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    """What RISC-V computes, by exact integer arithmetic."""
    if mn == "fadd.d":
        return exact.add(F64, a, b, rm)
    if mn == "fsub.d":
        return exact.add(F64, a, b ^ SIGN, rm)
    if mn == "fmul.d":
        return exact.mul(F64, a, b, rm)
    if mn == "fdiv.d":
        return exact.div(F64, a, b, rm)
    a_sign = SIGN if mn in ("fnmsub.d", "fnmadd.d") else 0
    c_sign = SIGN if mn in ("fmsub.d", "fnmadd.d") else 0
    return exact.fma(F64, a ^ a_sign, b, c ^ c_sign, rm)


def compiled(mn: str, rm: int, floats: frozenset[int], invariant: frozenset[int]) -> Callable[..., tuple[int, int]]:
    """The template of `mn` f1 = op(f2, f3[, f4]) as a function (f2, f3, f4, ff, frm) -> (f1 pattern, ff), with
    the registers in `invariant` split once in a prologue, as a block that never writes them does."""
    insn = Insn(mn, 1, 2, 2 if mn == "fsgnj.d" else 3, 4, 0, rm, 0, False, False, 4, 0)  # fsgnj.d: fmv.d
    source = FloatSource(floats, invariant)
    lines = source.emit(insn)
    assert lines is not None
    body = re.sub(r"\bd\[(\d+)\]", r"d\1", "\n".join("    " + line for line in lines))
    loads = "\n".join(f"    SQ[0] = f[{r}]\n    d{r} = SD[0]" for r in (2, 3, 4) if r in floats)
    loads += "".join(f"\n    {line}" for line in source.prologue())
    result = "    SD[0] = d1\n    f[1] = SQ[0]\n" if 1 in floats else ""
    src = f"def op(f, ff, rm):\n{loads}\n{body}\n{result}    return f[1], ff\n"
    ns: dict[str, Any] = {**fp_namespace(), **FloatSource.namespace()}
    exec(compile(src, f"<{mn}>", "exec"), ns)
    op = ns["op"]

    def run(a: int, b: int, c: int, ff: int, frm: int) -> tuple[int, int]:
        f = [0, 0, a, b, c]
        result: tuple[int, int] = op(f, ff, frm)
        return result

    return run


ALL = frozenset({1, 2, 3, 4})
TEMPLATES: dict[tuple[str, int, frozenset[int], frozenset[int]], Callable[..., tuple[int, int]]] = {}


def template(
    mn: str, rm: int, floats: frozenset[int] = ALL, invariant: frozenset[int] = frozenset()
) -> Callable[..., tuple[int, int]]:
    key = (mn, rm, floats, invariant)
    if key not in TEMPLATES:
        TEMPLATES[key] = compiled(mn, rm, floats, invariant)
    return TEMPLATES[key]


SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, 3.0, 1e-280, -1e-280, 1e280, 1e300, 2.2250738585072014e-308,
           5e-324, -5e-324, 1.7976931348623157e308, -1.7976931348623157e308, math.inf, -math.inf,
           1.0000000000000002, 0.9999999999999999, 2.0**-1022 * 1.5, 2.0**-1074 * 3]  # fmt: skip
NAN_PATTERNS = [0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001, 0x7FF4000000000123]


def _small_significand() -> st.SearchStrategy[int]:
    """Doubles k * 2**e with a small k: their sums and products are often exact."""
    return st.builds(lambda k, e: bits(math.ldexp(k, e)), st.integers(-(2**20), 2**20), st.integers(-1080, 1000))


operands = st.one_of(
    st.sampled_from([bits(v) for v in SPECIAL] + NAN_PATTERNS),
    _small_significand(),
    st.integers(0, 2**64 - 1),
    st.floats(allow_nan=False).map(bits),
    st.floats(min_value=-1e6, max_value=1e6).map(bits),
)


@pytest.mark.parametrize("invariant", [frozenset(), frozenset({2, 3, 4})], ids=["split-inline", "split-hoisted"])
@pytest.mark.parametrize("mn", OPS)
@settings(max_examples=400, deadline=None)
@given(a=operands, b=operands, c=operands, rm=st.sampled_from([0, 1, 2, 3, 4, DYNAMIC]), frm=st.integers(0, 4),
       ff=st.integers(0, 31))  # fmt: skip
@example(a=bits(1.0), b=bits(2.0**-53), c=0, rm=0, frm=0, ff=0)  # a tie, to even
@example(a=bits(1.0), b=bits(3 * 2.0**-54), c=0, rm=0, frm=0, ff=0)  # just above a tie
@example(a=bits(1.5), b=bits(0.75), c=bits(12.25), rm=DYNAMIC, frm=0, ff=0)  # exact, dynamic RNE
@example(a=bits(0.1), b=bits(0.3), c=bits(-0.03), rm=0, frm=0, ff=0)  # inexact product, cancelling addend
@example(a=bits(0.0), b=bits(-3.0), c=bits(-0.0), rm=0, frm=0, ff=0)  # signed zeros
@example(a=bits(1e-200), b=bits(1e-200), c=0, rm=0, frm=0, ff=0)  # underflow
@example(a=bits(1.7976931348623157e308), b=bits(2.0), c=0, rm=0, frm=0, ff=0)  # overflow
@example(a=bits(2.0**-1022), b=bits(-(2.0**-1074)), c=bits(0.5), rm=0, frm=0, ff=0)  # subnormal result
def test_templates_match_exact_arithmetic(
    mn: str, invariant: frozenset[int], a: int, b: int, c: int, rm: int, frm: int, ff: int
) -> None:
    effective = frm if rm == DYNAMIC else rm
    want_bits, want_flags = reference(mn, a, b, c, effective)
    assert template(mn, rm, ALL, invariant)(a, b, c, ff, frm) == (want_bits, ff | want_flags)


@pytest.mark.parametrize("floats", [frozenset({1}), frozenset({2, 3}), frozenset({1, 4})])
@pytest.mark.parametrize("mn", ["fadd.d", "fmul.d", "fmadd.d", "fnmadd.d"])
@settings(max_examples=150, deadline=None)
@given(a=operands, b=operands, c=operands)
def test_registers_kept_as_patterns_are_converted(mn: str, floats: frozenset[int], a: int, b: int, c: int) -> None:
    """A template whose registers are partly floats and partly patterns computes the same thing."""
    assert template(mn, 0, floats)(a, b, c, 0, 0) == reference(mn, a, b, c, 0)


def test_nan_payloads_survive_floats() -> None:
    """A signalling NaN moved through float locals (fmv.d) keeps its pattern bit for bit."""
    run = template("fsgnj.d", 0)
    for pattern in NAN_PATTERNS:
        assert run(pattern, pattern, 0, 0, 0) == (pattern, 0)


def test_an_invalid_dynamic_rounding_mode_reaches_softfloat() -> None:
    """frm 5-7 is an illegal instruction: the fast path must not hide it."""
    with pytest.raises(ValueError):
        template("fmadd.d", DYNAMIC)(bits(1.0), bits(1.0), bits(1.0), 0, 5)


def _insn(mn: str, rd: int, rs1: int, rs2: int = 0, rs3: int = 0, rm: int = 0) -> Insn:
    return Insn(mn, rd, rs1, rs2, rs3, 0, rm, 0, False, False, 4, 0)


def test_registers_any_pattern_instruction_touches_stay_patterns() -> None:
    block = [
        _insn("fld", 1, 10),
        _insn("fmadd.d", 2, 1, 3, 4),
        _insn("fsd", 0, 10, 2),
        _insn("fcvt.w.d", 5, 4),  # f4's pattern is needed; x5 is no f register
        _insn("fsgnjn.d", 6, 3, 3),  # fneg.d works on the pattern
        _insn("fsgnj.d", 7, 2, 2),  # fmv.d does not
    ]
    assert float_registers(block) == frozenset({1, 2, 7})
    kept = FloatSource.for_block(block)
    assert (kept.floats, kept.invariant) == (frozenset({1, 2, 7}), frozenset())  # fld writes 1, fmadd.d 2, fmv.d 7
    assert FloatSource.for_block(block[1:3]).invariant == frozenset({1, 3, 4})  # fmadd.d and fsd: f2 written
    assert FloatSource(frozenset()).emit(block[1]) is None  # nothing kept as a float: fpgen's call template
