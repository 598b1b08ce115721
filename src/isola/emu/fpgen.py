"""Source templates for the F and D instructions, calling `isola.emu.softfloat` for everything that rounds.

binary32 values live NaN-boxed in the 64-bit f registers: operands are unboxed with UNBOX (an improperly boxed
value reads as the canonical NaN) and results boxed with BOX. Every rounding operation returns
`(bits, fflags)`; the flags are OR-ed into the block's local copy of fflags, `ff`. A dynamic rounding mode
(rm=7) is read from frm, which the block keeps in its local `rm` (loaded in the prologue, reloaded after
every CSR instruction); an frm of 5-7 makes softfloat raise ValueError, which the run loop delivers as an
illegal instruction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from isola.emu import softfloat
from isola.emu.codegen import addr, load_expr, store_lines

if TYPE_CHECKING:
    from isola.emu.isa import Insn

BOX = "0xffffffff00000000"
INT_KINDS = {"w": "I32", "wu": "U32", "l": "I64", "lu": "U64"}


def namespace() -> dict[str, Any]:
    """The names the templates use, for the translator's block namespace."""
    ns: dict[str, Any] = {name.upper(): getattr(softfloat, name) for name in softfloat.__all__ if name.islower()}
    ns.update({k: getattr(softfloat, k) for k in ("F32", "F64", "I32", "U32", "I64", "U64")})
    return ns


def _rm(i: Insn) -> str:
    return "rm" if i.rm == 7 else str(i.rm)


def _src(width: str, r: int) -> str:
    return f"UNBOX(f[{r}])" if width == "s" else f"f[{r}]"


def _dst(width: str, rd: int, value: str) -> str:
    return f"f[{rd}] = {BOX} | {value}" if width == "s" else f"f[{rd}] = {value}"


def _flags() -> str:
    return "ff |= fl"


def _xdst(rd: int, value: str) -> str:
    return f"x[{rd}] = {value}" if rd else f"_ = {value}"


def _arith(pc: int, i: Insn, nxt: int) -> list[str]:
    op, w = i.mnemonic.split(".")
    fused = op in ("fmadd", "fmsub", "fnmsub", "fnmadd")
    fn = f"F{'32' if w == 's' else '64'}_{(op if fused else op[1:]).upper()}"
    if op == "fsqrt":
        call = f"{fn}({_src(w, i.rs1)}, {_rm(i)})"
    elif fused:
        call = f"{fn}({_src(w, i.rs1)}, {_src(w, i.rs2)}, {_src(w, i.rs3)}, {_rm(i)})"
    else:
        call = f"{fn}({_src(w, i.rs1)}, {_src(w, i.rs2)}, {_rm(i)})"
    if w == "d":
        return [f"f[{i.rd}], fl = {call}", _flags()]
    return [f"r, fl = {call}", _dst(w, i.rd, "r"), _flags()]


def _sign(pc: int, i: Insn, nxt: int) -> list[str]:
    op, w = i.mnemonic.split(".")
    fmt = "F32" if w == "s" else "F64"
    return [_dst(w, i.rd, f"{op.upper()}({fmt}, {_src(w, i.rs1)}, {_src(w, i.rs2)})")]


def _minmax(pc: int, i: Insn, nxt: int) -> list[str]:
    op, w = i.mnemonic.split(".")
    fmt = "F32" if w == "s" else "F64"
    return [f"r, fl = {op.upper()}({fmt}, {_src(w, i.rs1)}, {_src(w, i.rs2)})", _dst(w, i.rd, "r"), _flags()]


def _compare(pc: int, i: Insn, nxt: int) -> list[str]:
    op, w = i.mnemonic.split(".")
    fmt = "F32" if w == "s" else "F64"
    return [f"r, fl = {op.upper()}({fmt}, {_src(w, i.rs1)}, {_src(w, i.rs2)})", _xdst(i.rd, "r"), _flags()]


def _fclass(pc: int, i: Insn, nxt: int) -> list[str]:
    w = i.mnemonic.split(".")[1]
    return [_xdst(i.rd, f"FCLASS({'F32' if w == 's' else 'F64'}, {_src(w, i.rs1)})")]


def _fcvt(pc: int, i: Insn, nxt: int) -> list[str]:
    _, dst, src = i.mnemonic.split(".")
    if dst in ("s", "d") and src in ("s", "d"):  # between formats
        call = f"F64_TO_F32(f[{i.rs1}], {_rm(i)})" if dst == "s" else f"F32_TO_F64(UNBOX(f[{i.rs1}]), {_rm(i)})"
        return [f"r, fl = {call}", _dst(dst, i.rd, "r"), _flags()]
    if dst in ("s", "d"):  # from an integer register
        fn = "INT_TO_F32" if dst == "s" else "INT_TO_F64"
        src_reg = f"x[{i.rs1}]" if i.rs1 else "0"
        return [f"r, fl = {fn}({src_reg}, {INT_KINDS[src]}, {_rm(i)})", _dst(dst, i.rd, "r"), _flags()]
    fn = "F32_TO_INT" if src == "s" else "F64_TO_INT"  # to an integer register
    return [f"r, fl = {fn}({_src(src, i.rs1)}, {INT_KINDS[dst]}, {_rm(i)})", _xdst(i.rd, "r"), _flags()]


def _fmv(pc: int, i: Insn, nxt: int) -> list[str]:
    x = f"x[{i.rs1}]" if i.rs1 else "0"
    return {
        "fmv.x.w": [_xdst(i.rd, f"((f[{i.rs1}] & 0xffffffff ^ 0x80000000) - 0x80000000) & 0xffffffffffffffff")],
        "fmv.w.x": [f"f[{i.rd}] = {BOX} | ({x} & 0xffffffff)"],
        "fmv.x.d": [_xdst(i.rd, f"f[{i.rs1}]")],
        "fmv.d.x": [f"f[{i.rd}] = {x}"],
    }[i.mnemonic]


def _fload(pc: int, i: Insn, nxt: int) -> list[str]:
    if i.mnemonic == "flw":
        return [addr(i), f"f[{i.rd}] = {BOX} | ({load_expr('<I', False)})"]
    return [addr(i), f"f[{i.rd}] = {load_expr('<Q', False)}"]


def _fstore(pc: int, i: Insn, nxt: int) -> list[str]:
    if i.mnemonic == "fsw":
        return [addr(i), *store_lines(4, f"f[{i.rs2}] & 0xffffffff")]
    return [addr(i), *store_lines(8, f"f[{i.rs2}]")]


FP_EMITTERS: dict[str, Callable[[int, Insn, int], list[str]]] = {}
for _w in ("s", "d"):
    for _op in ("fadd", "fsub", "fmul", "fdiv", "fsqrt", "fmadd", "fmsub", "fnmsub", "fnmadd"):
        FP_EMITTERS[f"{_op}.{_w}"] = _arith
    for _op in ("fsgnj", "fsgnjn", "fsgnjx"):
        FP_EMITTERS[f"{_op}.{_w}"] = _sign
    for _op in ("fmin", "fmax"):
        FP_EMITTERS[f"{_op}.{_w}"] = _minmax
    for _op in ("feq", "flt", "fle"):
        FP_EMITTERS[f"{_op}.{_w}"] = _compare
    FP_EMITTERS[f"fclass.{_w}"] = _fclass
    for _k in INT_KINDS:
        FP_EMITTERS[f"fcvt.{_k}.{_w}"] = _fcvt
        FP_EMITTERS[f"fcvt.{_w}.{_k}"] = _fcvt
FP_EMITTERS.update({"fcvt.s.d": _fcvt, "fcvt.d.s": _fcvt})
FP_EMITTERS.update(dict.fromkeys(("fmv.x.w", "fmv.w.x", "fmv.x.d", "fmv.d.x"), _fmv))
FP_EMITTERS.update({"flw": _fload, "fld": _fload, "fsw": _fstore, "fsd": _fstore})
