"""What the translator knows about integer register values along a block, and the cheaper source it allows.

Registers are unsigned 64-bit Python ints, so the general templates mask every sum and left shift with
`& M` and rebuild a sign extension with four operations, and every one of those allocates when the value is
large. Along a block's straight-line code the translator can often see more: a byte load is below 256,
`andi` bounds its result, a `*w` operation or `lw` leaves a value that is already the sign extension of its
low 32 bits (so a following `sext.w` is a move), `lui`+`addi` is a constant. Facts are learnt in execution
order from the block's start, where nothing is known (a folded loop's head is the block's start, so the
loop body never trusts a fact from a previous iteration); a loop detour starts from a copy of the facts at
its branch.

A fact only ever changes how a value is computed, never which value: the register holds what the general
template would have put there, so traps, write-back and the run loop see nothing different.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isola.emu.isa import Insn


MASK = (1 << 64) - 1
SEXT_LOW = 1 << 31  # values below this, or at least 2**64 - 2**31, are sign extensions of their low 32 bits
SEXT_HIGH = (1 << 64) - (1 << 31)

# Results that are sign-extended 32-bit values whatever the operands: every *w operation and the signed
# narrow loads.
SEXT_RESULTS = frozenset(
    {"addw", "subw", "sllw", "srlw", "sraw", "mulw", "divw", "divuw", "remw", "remuw", "addiw", "slliw", "sraiw"}
    | {"lb", "lh", "lw", "lr.w"}
)
BOOLEAN_RESULTS = frozenset({"slt", "sltu", "slti", "sltiu", "sc.w", "sc.d"})
LOAD_WIDTH = {"lbu": 8, "lhu": 16, "lwu": 32}
IMM_FORMS = frozenset(
    {"addi", "slti", "sltiu", "xori", "ori", "andi", "slli", "srli", "srai", "addiw", "slliw", "srliw", "sraiw"}
)
# ALU instructions whose template is a pure expression of its source registers: foldable when they are known.
FOLDABLE = IMM_FORMS | {
    *("add", "sub", "sll", "slt", "sltu", "xor", "srl", "sra", "or", "and", "mul"),
    *("addw", "subw", "sllw", "srlw", "sraw", "mulw"),
}
REG_SOURCE = "x[{}]"


class Facts:
    """Per integer register: a known constant value, or an upper bound on its bit length and whether it is a
    sign-extended 32-bit value. A register without an entry may hold anything."""

    __slots__ = ("bits", "const", "sext")

    def __init__(self) -> None:
        self.const: dict[int, int] = {}
        self.bits: dict[int, int] = {}  # register -> k such that the value is below 2**k (k < 64)
        self.sext: set[int] = set()

    def copy(self) -> Facts:
        other = Facts()
        other.const, other.bits, other.sext = dict(self.const), dict(self.bits), set(self.sext)
        return other

    # -- queries -------------------------------------------------------------------------------------------

    def value(self, r: int) -> int | None:
        return 0 if r == 0 else self.const.get(r)

    def width(self, r: int) -> int:
        """k such that register r is known to be below 2**k (64: nothing known)."""
        value = self.value(r)
        return value.bit_length() if value is not None else self.bits.get(r, 64)

    def is_sext(self, r: int) -> bool:
        value = self.value(r)
        if value is not None:
            return value < SEXT_LOW or value >= SEXT_HIGH
        return r in self.sext or self.width(r) <= 31

    # -- updates -------------------------------------------------------------------------------------------

    def forget(self, r: int) -> None:
        self.const.pop(r, None)
        self.bits.pop(r, None)
        self.sext.discard(r)

    def _set(self, rd: int, *, const: int | None = None, bits: int = 64, sext: bool = False) -> None:
        if rd == 0:
            return
        self.forget(rd)
        if const is not None:
            self.const[rd] = const
        if bits < 64:
            self.bits[rd] = bits
        if sext:
            self.sext.add(rd)

    def _copy_reg(self, rd: int, rs: int) -> None:
        self._set(rd, const=self.value(rs), bits=self.width(rs), sext=self.is_sext(rs))

    # -- translation ---------------------------------------------------------------------------------------

    def rewrite(self, pc: int, insn: Insn, general: list[str]) -> list[str]:
        """The source for an instruction given the facts before it, in place of `general` (the template's
        lines); then learn what it leaves behind. Call it for every instruction, in execution order."""
        folded = self._fold(insn, general)
        lines = self._specialise(insn, general) if folded is None else [f"x[{insn.rd}] = {folded}"]
        self._learn(pc, insn, folded)
        return lines

    def learn(self, pc: int, insn: Insn) -> None:
        """Learn from an instruction translated without `rewrite` (jumps, whose link is a constant; shift
        pairs fused into one operation)."""
        self._learn(pc, insn, None)

    @staticmethod
    def _sources(i: Insn) -> tuple[int, ...]:
        return (i.rs1,) if i.mnemonic in IMM_FORMS else (i.rs1, i.rs2)

    def _fold(self, i: Insn, general: list[str]) -> int | None:
        """The result of a pure ALU instruction whose sources are all known, by evaluating its own template."""
        if i.rd == 0 or i.mnemonic not in FOLDABLE or len(general) != 1:
            return None
        regs = [0] * 32
        for r in self._sources(i):
            value = self.value(r)
            if value is None:
                return None
            regs[r] = value
        expr = general[0].split(" = ", 1)[1]
        result: int = eval(expr, {"__builtins__": {}, "x": regs})  # our own template: integer arithmetic only
        return result

    def _specialise(self, i: Insn, general: list[str]) -> list[str]:
        mn, rd, rs1, rs2, imm = i.mnemonic, i.rd, i.rs1, i.rs2, i.imm
        if rd == 0:
            return general
        a = REG_SOURCE.format(rs1)
        if mn == "addiw" and imm == 0 and self.is_sext(rs1):  # sext.w of a value that already is one
            return [] if rd == rs1 else [f"x[{rd}] = {a}"]
        if mn == "addi" and imm > 0 and rs1 and max(self.width(rs1), imm.bit_length()) < 64:
            return [f"x[{rd}] = {a} + {imm}"]  # no carry out of 64 bits
        if mn == "slli" and rs1 and self.width(rs1) + imm <= 64:
            return [f"x[{rd}] = {a} << {imm}"]
        if mn == "add" and rs1 and rs2 and max(self.width(rs1), self.width(rs2)) < 64:
            return [f"x[{rd}] = {a} + {REG_SOURCE.format(rs2)}"]
        return general

    def _learn(self, pc: int, i: Insn, folded: int | None) -> None:
        mn, rd, rs1, rs2, imm = i.mnemonic, i.rd, i.rs1, i.rs2, i.imm
        if rd == 0:
            return
        w1 = self.width(rs1)
        if folded is not None:
            self._set(rd, const=folded)
        elif mn == "lui":
            self._set(rd, const=imm & MASK)
        elif mn == "auipc":
            self._set(rd, const=(pc + imm) & MASK)
        elif mn in ("jal", "jalr"):
            self._set(rd, const=(pc + i.length) & MASK)
        elif mn == "addi" and imm == 0:
            self._copy_reg(rd, rs1)
        elif mn in ("add", "or", "xor") and (rs1 == 0 or rs2 == 0):
            self._copy_reg(rd, rs1 or rs2)
        elif mn == "andi":
            self._set(rd, bits=min(imm.bit_length(), w1) if imm >= 0 else w1, sext=self.is_sext(rs1))
        elif mn == "and":
            self._set(rd, bits=min(w1, self.width(rs2)), sext=self.is_sext(rs1) and self.is_sext(rs2))
        elif mn in ("or", "xor"):
            self._set(rd, bits=max(w1, self.width(rs2)), sext=self.is_sext(rs1) and self.is_sext(rs2))
        elif mn in ("ori", "xori"):  # imm is sign-extended 12 bits: itself a sign-extended 32-bit value
            self._set(rd, bits=max(w1, imm.bit_length()) if imm >= 0 else 64, sext=self.is_sext(rs1))
        elif mn == "srli":
            self._set(rd, bits=max(w1 - imm, 0))
        elif mn == "srliw" and imm:
            self._set(rd, bits=32 - imm)
        elif mn == "slli":
            self._set(rd, bits=min(w1 + imm, 64))
        elif mn == "addi" and imm > 0 and rs1:
            self._set(rd, bits=min(max(w1, imm.bit_length()) + 1, 64))
        elif mn == "add":
            self._set(rd, bits=min(max(w1, self.width(rs2)) + 1, 64))
        elif mn in LOAD_WIDTH:
            self._set(rd, bits=LOAD_WIDTH[mn])
        elif mn in BOOLEAN_RESULTS:
            self._set(rd, bits=1)
        elif mn in SEXT_RESULTS or mn == "srliw":
            self._set(rd, sext=True)
        else:
            self.forget(rd)  # anything else that names rd (FP destinations too: forgetting is always safe)
