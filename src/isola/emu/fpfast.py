"""Hot-block templates that keep binary64 registers as host floats and prove each result exact inline.

In a cold block (and for everything else in a hot one) an FP register is its 64-bit pattern and every
rounding operation is a call into `softfloat`, which converts the patterns to floats and back. In a loop of
double arithmetic those conversions and calls are most of the time. So a hot block keeps an f register as a
Python float (the local `d5` for f5) when every instruction of the block that touches it is one of `fld`,
`fsd`, `fmv.d`, `fadd.d`, `fsub.d`, `fmul.d`, `fdiv.d` or a fused multiply-add: loads and stores go through a
memoryview of guest memory cast to doubles, and the arithmetic is inlined.

The inlined arithmetic is CPython's float, i.e. binary64 rounded to nearest-even, so it runs only when the
rounding mode is RNE and, as in `fp.fast64`, only where a few more float operations prove what RISC-V would
report. No operand is a NaN or an infinity and the result is finite, so there is no invalid, divide-by-zero
or overflow to decide; underflow needs a tiny *and* inexact result, so the result is either normal or
provably exact; and whether it is exact decides NX:

- add/sub: Fast2Sum, the subtraction of either operand from the rounded sum is exact iff the sum was; a
  tiny sum (subnormal or zero) is always exact (Hauser), so any finite result will do;
- mul, div and FMA: Dekker's TwoProduct gives x*y = p + e exactly (bounds keep its splitting free of
  overflow and its error term free of underflow); a product is exact iff e == 0, a quotient q iff
  q*y == x, and an FMA is p + z rounded once (with Knuth's TwoSum telling whether that was exact) when
  e == 0, else `math.fsum` of p, e and z, which rounds their exact sum once;
- a zero factor (of finite operands) makes an exact zero product, signed as IEEE says, and FMA then adds
  the addend exactly.

Everything else (another rounding mode, a NaN, an infinity, a zero, a subnormal, a result near the ends of
the range) goes to `FSLOW`, the exact soft-float operation on the registers' bit patterns, whose flags then
stand alone. A float keeps its pattern bit for bit (NaN payloads included) through the memoryview and
`struct` conversions, so registers leave the block (write-back, traps, system calls) exactly as they were.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from isola.emu.codegen import addr

if TYPE_CHECKING:
    from isola.emu.isa import Insn

MIN_NORMAL = "2.2250738585072014e-308"
MAX_FINITE = "1.7976931348623157e308"
SPLIT = "134217729.0"  # 2**27 + 1: Veltkamp's split of a double into two 26-bit halves
# |v| within these keeps Dekker's product exact: the split cannot overflow, the error term cannot underflow.
DEKKER_LO, DEKKER_HI = "1e-280", "1e280"
FMA_ADDEND_HI = "1e300"  # keeps fsum clear of intermediate overflow
NX = 1

FUSED = {"fmadd.d": "F64_FMADD", "fmsub.d": "F64_FMSUB", "fnmsub.d": "F64_FNMSUB", "fnmadd.d": "F64_FNMADD"}
BINARY = {"fadd.d": "F64_ADD", "fsub.d": "F64_SUB", "fmul.d": "F64_MUL", "fdiv.d": "F64_DIV"}
FRIENDLY = frozenset({"fld", "fsd", "fsgnj.d", *FUSED, *BINARY})


def _fp_fields(insn: Insn) -> tuple[int, ...]:
    """The f registers an F/D instruction names (x-register fields left out)."""
    mn = insn.mnemonic
    if mn.startswith("fence"):
        return ()
    if mn in ("fld", "flw"):
        return (insn.rd,)
    if mn in ("fsd", "fsw"):
        return (insn.rs2,)
    if mn.startswith(("feq", "flt", "fle")):
        return insn.rs1, insn.rs2
    if mn.startswith(("fclass", "fmv.x")):
        return (insn.rs1,)
    if mn.startswith("fmv."):  # fmv.w.x, fmv.d.x
        return (insn.rd,)
    if mn.startswith("fcvt."):
        _, dst, src = mn.split(".")
        return ((insn.rd,) if dst in ("s", "d") else ()) + ((insn.rs1,) if src in ("s", "d") else ())
    if mn.startswith("fsqrt"):
        return insn.rd, insn.rs1
    if mn.startswith(("fmadd", "fmsub", "fnmsub", "fnmadd")):
        return insn.rd, insn.rs1, insn.rs2, insn.rs3
    if mn.startswith("f") and "." in mn:  # fadd fsub fmul fdiv fsgnj* fmin fmax, .s and .d
        return insn.rd, insn.rs1, insn.rs2
    return ()


def _friendly(insn: Insn) -> bool:
    if insn.mnemonic == "fsgnj.d":
        return insn.rs1 == insn.rs2  # fmv.d; the other sign injections work on the pattern
    return insn.mnemonic in FRIENDLY


def float_registers(insns: Iterable[Insn]) -> frozenset[int]:
    """The f registers a hot block keeps as host floats: named by some instruction that inlines double
    arithmetic on floats, and by none that needs the bit pattern."""
    floats: set[int] = set()
    patterns: set[int] = set()
    for insn in insns:
        fields = _fp_fields(insn)
        (floats if _friendly(insn) else patterns).update(fields)
    return frozenset(floats - patterns)


def _dekker_ok(v: str) -> str:
    return f"({DEKKER_LO} < {v} < {DEKKER_HI} or -{DEKKER_HI} < {v} < -{DEKKER_LO})"


def _normal(v: str) -> str:
    return f"({MIN_NORMAL} < {v} <= {MAX_FINITE} or -{MAX_FINITE} <= {v} < -{MIN_NORMAL})"


def _finite(v: str) -> str:
    return f"-{MAX_FINITE} <= {v} <= {MAX_FINITE}"


def _zero_product(x: str, y: str) -> str:
    """A product of finite operands one of which is zero: an exact zero, with the sign IEEE gives it."""
    return f"({x} == 0.0 or {y} == 0.0) and {_finite(x)} and {_finite(y)}"


def _split(v: str, hi: str, lo: str) -> list[str]:
    """Veltkamp: v == hi + lo exactly, each half with at most 26 significant bits."""
    return [f"t_ = {SPLIT} * {v}", f"{hi} = t_ - (t_ - {v})", f"{lo} = {v} - {hi}"]


def _two_product(x: tuple[str, str], y: tuple[str, str], p: str) -> list[str]:
    """Dekker: leaves in e_ the exact error of the rounded product p of two split operands."""
    (xh, xl), (yh, yl) = x, y
    return [f"e_ = (({xh} * {yh} - {p}) + {xh} * {yl} + {xl} * {yh}) + {xl} * {yl}"]


def _indent(lines: list[str]) -> list[str]:
    return ["    " + line for line in lines]


class FloatSource:
    """The source of friendly instructions in one hot block, given its float-kept registers."""

    def __init__(self, floats: frozenset[int], invariant: frozenset[int] = frozenset()) -> None:
        self.floats = floats
        # Float-kept registers the block never writes: their bound check and split are made once, in the
        # prologue (`k5`, `h5`, `l5` for f5), not at every product in the loop.
        self.invariant = invariant & floats
        self.hoisted: set[int] = set()

    @classmethod
    def for_block(cls, insns: Iterable[Insn]) -> FloatSource:
        """The float-kept registers of a hot block and, among them, those it never writes (only friendly
        instructions touch a float-kept register, so only their destinations count)."""
        insns = list(insns)
        floats = float_registers(insns)
        written = {i.rd for i in insns if _friendly(i) and i.mnemonic != "fsd"}
        return cls(floats, floats - written)

    def prologue(self) -> list[str]:
        """Hoisted checks and splits of the invariant registers that products use, after the locals load."""
        lines = []
        for r in sorted(self.hoisted):
            lines += [f"k{r} = {_dekker_ok(f'd{r}')}", *_split(f"d{r}", f"h{r}", f"l{r}")]
        return lines

    def _operand(self, v: str, tag: str) -> tuple[str, list[str], tuple[str, str]]:
        """For a product operand: (its bound check, the lines splitting it, its halves), hoisted for an
        invariant register."""
        if v.startswith("d[") and int(v[2:-1]) in self.invariant:
            r = int(v[2:-1])
            self.hoisted.add(r)
            return f"k{r}", [], (f"h{r}", f"l{r}")
        return _dekker_ok(v), _split(v, f"{tag}h", f"{tag}l"), (f"{tag}h", f"{tag}l")

    @staticmethod
    def namespace() -> dict[str, Any]:
        """The names the templates use besides guest memory and the run-time helpers."""
        scratch = memoryview(bytearray(8))
        pattern, value = scratch.cast("Q"), scratch.cast("d")

        def slow(fn: Callable[..., tuple[int, int]], ff: int, rm: int, *operands: float) -> tuple[float, int]:
            """The exact soft-float operation on the operands' patterns: (result as a float, ff | its flags)."""
            bits = []
            for v in operands:
                value[0] = v
                bits.append(pattern[0])
            result, flags = fn(*bits, rm)
            pattern[0] = result
            return value[0], ff | flags

        return {"SQ": pattern, "SD": value, "FSLOW": slow, "FSUM": math.fsum}

    def emit(self, insn: Insn) -> list[str] | None:
        """Source for `insn` working on floats, or None to use the pattern template of `fpgen`."""
        mn = insn.mnemonic
        if not _friendly(insn) or not self.floats.intersection(_fp_fields(insn)):
            return None
        if mn == "fld":
            return [addr(insn), f"d[{insn.rd}] = MV_d[a >> 3] if R[a >> 12] and not a & 7 else FLOAD(a)"]
        if mn == "fsd":
            v = f"d[{insn.rs2}]"
            return [addr(insn), f"if W[a >> 12] and not a & 7: MV_d[a >> 3] = {v}", f"else: FSTORE(a, {v})"]
        pre: list[str] = []
        regs = [insn.rs1, insn.rs2, insn.rs3] if mn in FUSED else [insn.rs1, insn.rs2]
        ops = [self._read(r, f"o{k}_", pre) for k, r in enumerate(regs)]
        if mn == "fsgnj.d":
            return pre + self._write(insn.rd, ops[0])
        rm = "rm" if insn.rm == 7 else str(insn.rm)
        slow = f"r_, ff = FSLOW({FUSED.get(mn) or BINARY[mn]}, ff, {rm}, {', '.join(ops)})"
        if insn.rm not in (0, 7):
            return [*pre, slow, *self._write(insn.rd, "r_")]  # only RNE has a fast path
        guard = "rm == 0 and " if insn.rm == 7 else ""
        if mn in FUSED:
            body = self._fused(mn, ops, guard, slow)
        elif mn == "fmul.d":
            body = self._mul(ops, guard, slow)
        elif mn == "fdiv.d":
            body = self._div(ops, guard, slow)
        else:
            body = self._add(mn == "fsub.d", ops, guard, slow)
        return pre + body + self._write(insn.rd, "r_")

    def _read(self, r: int, temp: str, pre: list[str]) -> str:
        """A float operand: the register's local, or its pattern converted into `temp`."""
        if r in self.floats:
            return f"d[{r}]"
        pre += [f"SQ[0] = f[{r}]", f"{temp} = SD[0]"]
        return temp

    def _write(self, rd: int, value: str) -> list[str]:
        if rd in self.floats:
            return [f"d[{rd}] = {value}"]
        return [f"SD[0] = {value}", f"f[{rd}] = SQ[0]"]

    @staticmethod
    def _add(sub: bool, ops: list[str], guard: str, slow: str) -> list[str]:
        x, y = ops
        # exact iff r - x == y and r - y == x (sum), r - x == -y and r + y == x (difference). Any finite
        # result will do: one that is tiny (subnormal or zero) is exact (Hauser), so never underflows.
        inexact = f"r_ - {x} != -{y} or r_ + {y} != {x}" if sub else f"r_ - {x} != {y} or r_ - {y} != {x}"
        return [
            f"r_ = {x} {'-' if sub else '+'} {y}",
            f"if {guard}{_finite('r_')}:",
            f"    if {inexact}: ff |= {NX}",
            "else:",
            f"    {slow}",
        ]

    def _mul(self, ops: list[str], guard: str, slow: str) -> list[str]:
        x, y = ops
        x_ok, x_split, x_halves = self._operand(x, "x")
        y_ok, y_split, y_halves = self._operand(y, "y")
        return [
            f"r_ = {x} * {y}",
            f"if {guard}{x_ok} and {y_ok} and {_dekker_ok('r_')}:",
            *_indent([*x_split, *y_split, *_two_product(x_halves, y_halves, "r_")]),
            f"    if e_: ff |= {NX}",
            f"elif {guard}{_zero_product(x, y)}:",
            "    pass",  # r_ is the exact zero already
            "else:",
            f"    {slow}",
        ]

    def _div(self, ops: list[str], guard: str, slow: str) -> list[str]:
        x, y = ops
        y_ok, y_split, y_halves = self._operand(y, "y")
        # the quotient q is exact iff q*y == x, and TwoProduct gives q*y exactly
        return [
            f"if {guard}{_dekker_ok(x)} and {y_ok}:",
            f"    r_ = {x} / {y}",
            f"    if {_dekker_ok('r_')}:",
            f"        p_ = r_ * {y}",
            *_indent(_indent([*_split("r_", "xh", "xl"), *y_split, *_two_product(("xh", "xl"), y_halves, "p_")])),
            f"        if p_ != {x} or e_: ff |= {NX}",
            "    else:",
            f"        {slow}",
            "else:",
            f"    {slow}",
        ]

    def _fused(self, mn: str, ops: list[str], guard: str, slow: str) -> list[str]:
        x, y, z = ops
        negate = []  # the signs the variants flip; exact, and only used on the fast path
        u, w = x, z
        if mn in ("fnmsub.d", "fnmadd.d"):
            negate.append(f"u_ = -{x}")
            u = "u_"
        if mn in ("fmsub.d", "fnmadd.d"):
            negate.append(f"w_ = -{z}")
            w = "w_"
        u_ok, u_split, u_halves = self._operand(u, "x")
        y_ok, y_split, y_halves = self._operand(y, "y")
        return [
            *negate,
            f"p_ = {u} * {y}",
            f"if {guard}{u_ok} and {y_ok} and {_dekker_ok('p_')} and -{FMA_ADDEND_HI} < {z} < {FMA_ADDEND_HI}:",
            *_indent([*u_split, *y_split, *_two_product(u_halves, y_halves, "p_")]),
            "    if e_:",
            f"        r_ = FSUM((p_, e_, {w}))",
            f"        n_ = FSUM((p_, e_, {w}, -r_))",
            "    else:",
            f"        r_ = p_ + {w}",
            "        t_ = r_ - p_",
            f"        n_ = (p_ - (r_ - t_)) + ({w} - t_)",
            f"    if {_normal('r_')}:",
            f"        if n_: ff |= {NX}",
            "    else:",
            f"        {slow}",
            f"elif {guard}{_zero_product(x, y)} and {_finite(z)}:",
            f"    r_ = p_ + {w}",  # an exact zero plus a finite addend: exact, and IEEE's signed zero when both are
            "else:",
            f"    {slow}",
        ]
