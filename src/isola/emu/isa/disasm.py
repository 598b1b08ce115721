"""objdump-style text for a decoded instruction, for `--strace`/debug traces and for the objdump oracle tests.

The text follows `objdump -d -M no-aliases,numeric` (x0..x31, f0..f31, no pseudo-instructions), so the tests
can compare it with binutils line by line; without a pc, branch targets print as `.+off`, which GNU `as`
accepts back. Compressed instructions print as their 32-bit expansion, since that is what the emulator runs.
"""

from __future__ import annotations

from isola.emu.isa.decode import Insn
from isola.emu.isa.opcodes import ROWS, Fmt

_RM_NAMES = ("rne", "rtz", "rdn", "rup", "rmm", "5", "6", "dyn")
_DYN = 7

# User-level CSRs a Linux program touches; the rest print as numbers.
_CSR_NAMES = {0x001: "fflags", 0x002: "frm", 0x003: "fcsr", 0xC00: "cycle", 0xC01: "time", 0xC02: "instret"}

# Conversions whose result is always exact: `as` encodes them with rm=rne unless told otherwise, so that is
# the mode left unsaid (for the others it is dyn).
_EXACT = frozenset({"fcvt.d.s", "fcvt.d.w", "fcvt.d.wu"})

_FMT_OF = {row.mnemonic: row.fmt for row in ROWS}
_TOKENS = {fmt: tuple(fmt.value.split(",")) if fmt.value else () for fmt in Fmt}


def _fence_set(bits: int) -> str:
    return "".join(letter for bit, letter in zip((8, 4, 2, 1), "iorw", strict=True) if bits & bit) or "0"


def _operand(token: str, insn: Insn, pc: int | None) -> str | None:
    if token in ("xd", "fd"):
        return f"{token[0]}{insn.rd}"
    if token in ("xs1", "fs1"):
        return f"{token[0]}{insn.rs1}"
    if token in ("xs2", "fs2"):
        return f"{token[0]}{insn.rs2}"
    if token == "fs3":
        return f"f{insn.rs3}"
    if token in ("imm", "zimm"):
        return str(insn.imm)
    if token == "imm(xs1)":
        return f"{insn.imm}(x{insn.rs1})"
    if token == "(xs1)":
        return f"(x{insn.rs1})"
    if token == "shamt":
        return hex(insn.imm)
    if token == "imm20":
        return hex((insn.imm >> 12) & 0xFFFFF)
    if token == "csr":
        return _CSR_NAMES.get(insn.csr, hex(insn.csr))
    if token == "target":
        return f".{insn.imm:+d}" if pc is None else hex((pc + insn.imm) & 0xFFFFFFFFFFFFFFFF)
    if token == "pred":
        return _fence_set(insn.imm >> 4)
    if token == "succ":
        return _fence_set(insn.imm)
    if token == "rm":
        default = 0 if insn.mnemonic in _EXACT else _DYN
        return None if insn.rm == default else _RM_NAMES[insn.rm]
    raise AssertionError(f"operand token {token!r}")


def disasm(insn: Insn, pc: int | None = None) -> str:
    """One line such as ``addi\tx1,x2,-5``; with `pc`, jump and branch targets print as addresses."""
    fmt = _FMT_OF[insn.mnemonic]
    name = insn.mnemonic
    if fmt in (Fmt.LR, Fmt.AMO) and (insn.aq or insn.rl):
        name += "." + "aq" * insn.aq + "rl" * insn.rl
    operands = [text for token in _TOKENS[fmt] if (text := _operand(token, insn, pc)) is not None]
    return f"{name}\t{','.join(operands)}" if operands else name
