"""Instruction words to `Insn` records: the one place that knows where RV64GC hides its operand bits.

The translator calls this once per guest instruction and caches the result per block, so a decode is a few
dictionary probes and one tuple: the major opcode picks a group, the bits every row of that group fixes pick a
bucket of one to six rows, and the first row whose mask matches wins (rows with more fixed bits come first).

What counts as legal follows the spec, not binutils (objdump 2.40 differs in each of these):
- a static rounding mode of 5 or 6 makes an FP instruction illegal, so it decodes to None;
- FENCE/FENCE.I fields the spec says to ignore (rd, rs1, FENCE.I's imm, a reserved FENCE fm) are ignored,
  and FCVT.D.S/FCVT.D.W/FCVT.D.WU accept any valid rm, as their encodings have an rm field;
- sret, mret, wfi and sfence.vma decode (for system mode); legacy uret/hret/dret/sfence.vm do not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from isola.emu.cpu import IllegalInstruction
from isola.emu.isa.opcodes import RM_FORMATS, ROWS, Fmt, Row
from isola.emu.isa.rvc import expand_compressed


class Insn(NamedTuple):
    """One decoded instruction; unused operand fields are 0.

    `rd`/`rs1`/`rs2`/`rs3` are register numbers in the file the mnemonic implies (x or f). `imm` is already
    sign-extended (zero-extended for shift amounts, CSR immediates and the fm/pred/succ bits of FENCE); for
    LUI/AUIPC it is the full value, i.e. the 20-bit field shifted left by 12. A compressed instruction carries
    the mnemonic and operands of its 32-bit expansion, with `length` 2 and the halfword in `raw`.
    """

    mnemonic: str
    rd: int
    rs1: int
    rs2: int
    rs3: int
    imm: int
    rm: int
    csr: int
    aq: bool
    rl: bool
    length: int
    raw: int


_Extract = Callable[[int, str, int, int], Insn | None]


def _r(w: int, mn: str, length: int, raw: int) -> Insn:
    return Insn(mn, (w >> 7) & 31, (w >> 15) & 31, (w >> 20) & 31, 0, 0, 0, 0, False, False, length, raw)


def _r2(w: int, mn: str, length: int, raw: int) -> Insn:
    return Insn(mn, (w >> 7) & 31, (w >> 15) & 31, 0, 0, 0, 0, 0, False, False, length, raw)


def _r_rm(w: int, mn: str, length: int, raw: int) -> Insn | None:
    rm = (w >> 12) & 7
    if rm == 5 or rm == 6:  # reserved rounding modes: the spec makes the instruction illegal
        return None
    return Insn(mn, (w >> 7) & 31, (w >> 15) & 31, (w >> 20) & 31, 0, 0, rm, 0, False, False, length, raw)


def _r2_rm(w: int, mn: str, length: int, raw: int) -> Insn | None:
    rm = (w >> 12) & 7
    if rm == 5 or rm == 6:
        return None
    return Insn(mn, (w >> 7) & 31, (w >> 15) & 31, 0, 0, 0, rm, 0, False, False, length, raw)


def _r4_rm(w: int, mn: str, length: int, raw: int) -> Insn | None:
    rm = (w >> 12) & 7
    if rm == 5 or rm == 6:
        return None
    rd, rs1, rs2 = (w >> 7) & 31, (w >> 15) & 31, (w >> 20) & 31
    return Insn(mn, rd, rs1, rs2, w >> 27, 0, rm, 0, False, False, length, raw)


def _i(w: int, mn: str, length: int, raw: int) -> Insn:
    imm = ((w >> 20) ^ 0x800) - 0x800
    return Insn(mn, (w >> 7) & 31, (w >> 15) & 31, 0, 0, imm, 0, 0, False, False, length, raw)


def _shift(w: int, mn: str, length: int, raw: int) -> Insn:
    return Insn(mn, (w >> 7) & 31, (w >> 15) & 31, 0, 0, (w >> 20) & 63, 0, 0, False, False, length, raw)


def _s(w: int, mn: str, length: int, raw: int) -> Insn:
    imm = ((((w >> 20) & 0xFE0) | ((w >> 7) & 31)) ^ 0x800) - 0x800
    return Insn(mn, 0, (w >> 15) & 31, (w >> 20) & 31, 0, imm, 0, 0, False, False, length, raw)


def _b(w: int, mn: str, length: int, raw: int) -> Insn:
    imm = ((w >> 19) & 0x1000) | ((w << 4) & 0x800) | ((w >> 20) & 0x7E0) | ((w >> 7) & 0x1E)
    imm = (imm ^ 0x1000) - 0x1000
    return Insn(mn, 0, (w >> 15) & 31, (w >> 20) & 31, 0, imm, 0, 0, False, False, length, raw)


def _u(w: int, mn: str, length: int, raw: int) -> Insn:
    imm = ((w & 0xFFFFF000) ^ 0x80000000) - 0x80000000
    return Insn(mn, (w >> 7) & 31, 0, 0, 0, imm, 0, 0, False, False, length, raw)


def _j(w: int, mn: str, length: int, raw: int) -> Insn:
    imm = ((w >> 11) & 0x100000) | (w & 0xFF000) | ((w >> 9) & 0x800) | ((w >> 20) & 0x7FE)
    imm = (imm ^ 0x100000) - 0x100000
    return Insn(mn, (w >> 7) & 31, 0, 0, 0, imm, 0, 0, False, False, length, raw)


def _fence(w: int, mn: str, length: int, raw: int) -> Insn:
    return Insn(mn, 0, 0, 0, 0, w >> 20, 0, 0, False, False, length, raw)


def _none(w: int, mn: str, length: int, raw: int) -> Insn:
    return Insn(mn, 0, 0, 0, 0, 0, 0, 0, False, False, length, raw)


def _sfence(w: int, mn: str, length: int, raw: int) -> Insn:
    return Insn(mn, 0, (w >> 15) & 31, (w >> 20) & 31, 0, 0, 0, 0, False, False, length, raw)


def _amo(w: int, mn: str, length: int, raw: int) -> Insn:
    aq = bool(w & 0x4000000)
    rl = bool(w & 0x2000000)
    return Insn(mn, (w >> 7) & 31, (w >> 15) & 31, (w >> 20) & 31, 0, 0, 0, 0, aq, rl, length, raw)


def _csr(w: int, mn: str, length: int, raw: int) -> Insn:
    return Insn(mn, (w >> 7) & 31, (w >> 15) & 31, 0, 0, 0, 0, w >> 20, False, False, length, raw)


def _csri(w: int, mn: str, length: int, raw: int) -> Insn:
    return Insn(mn, (w >> 7) & 31, 0, 0, 0, (w >> 15) & 31, 0, w >> 20, False, False, length, raw)


_EXTRACT: dict[Fmt, _Extract] = {
    Fmt.R: _r,
    Fmt.I: _i,
    Fmt.SHIFT: _shift,
    Fmt.LOAD: _i,
    Fmt.STORE: _s,
    Fmt.BRANCH: _b,
    Fmt.U: _u,
    Fmt.JAL: _j,
    Fmt.FENCE: _fence,
    Fmt.NONE: _none,
    Fmt.SFENCE: _sfence,
    Fmt.LR: _amo,
    Fmt.AMO: _amo,
    Fmt.CSR: _csr,
    Fmt.CSRI: _csri,
    Fmt.FLOAD: _i,
    Fmt.FSTORE: _s,
    Fmt.F3RM: _r_rm,
    Fmt.F3: _r,
    Fmt.F4RM: _r4_rm,
    Fmt.F2RM: _r2_rm,
    Fmt.FCMP: _r,
    Fmt.F2X: _r2,
    Fmt.X2F: _r2,
    Fmt.F2XRM: _r2_rm,
    Fmt.X2FRM: _r2_rm,
}
assert set(_EXTRACT) == set(Fmt)
assert all((_EXTRACT[fmt] in (_r_rm, _r2_rm, _r4_rm)) == (fmt in RM_FORMATS) for fmt in Fmt)

_Candidate = tuple[int, int, str, _Extract]
_Group = tuple[int, dict[int, tuple[_Candidate, ...]]]


def _build(rows: tuple[Row, ...]) -> list[_Group | None]:
    """Index the rows: major opcode → (bits all its rows fix, {those bits' value → candidate rows})."""
    by_opcode: dict[int, list[Row]] = {}
    for row in rows:
        by_opcode.setdefault(row.match & 0x7F, []).append(row)
    groups: list[_Group | None] = [None] * 128
    for opcode, members in by_opcode.items():
        common = 0xFFFFFFFF
        for row in members:
            common &= row.mask
        buckets: dict[int, list[Row]] = {}
        for row in members:
            buckets.setdefault(row.match & common, []).append(row)
        groups[opcode] = (
            common,
            {
                key: tuple(
                    (row.mask, row.match, row.mnemonic, _EXTRACT[row.fmt])
                    for row in sorted(bucket, key=lambda r: -r.mask.bit_count())
                )
                for key, bucket in buckets.items()
            },
        )
    return groups


_GROUPS = _build(ROWS)


def _decode(word: int, length: int, raw: int) -> Insn | None:
    group = _GROUPS[word & 0x7F]
    if group is None:
        return None
    candidates = group[1].get(word & group[0])
    if candidates is None:
        return None
    for mask, match, mnemonic, extract in candidates:
        if word & mask == match:
            return extract(word, mnemonic, length, raw)
    return None


def decode(word: int) -> Insn | None:
    """Decode a 32-bit instruction word; None if RV64GC does not define it (the guest gets SIGILL).

    Compressed halfwords are not 32-bit words: pass them to `decode_compressed`.
    """
    if not 0 <= word <= 0xFFFFFFFF:
        raise ValueError(f"not a 32-bit instruction word: {word:#x}")
    return _decode(word, 4, word)


def decode_compressed(half: int) -> Insn | None:
    """Decode a 16-bit RVC instruction as its 32-bit expansion, with `length` 2 and the halfword as `raw`."""
    word = expand_compressed(half)
    return None if word is None else _decode(word, 2, half)


def instruction_length(first_half: int) -> int:
    """The byte length of the instruction whose lowest halfword is `first_half`: 2 or 4 in RV64GC.

    Encodings of 48 bits and more (low five bits all ones) are reported as 4; none is defined, so decoding
    the word rejects them anyway.
    """
    return 4 if first_half & 3 == 3 else 2


def decode_at(fetch16: Callable[[int], int], pc: int) -> Insn:
    """Fetch and decode the instruction at `pc`, reading halfwords through `fetch16(address)`.

    The second halfword is read only for a 32-bit instruction, so a fetch fault on it names the right
    address. Raises `IllegalInstruction` for an undefined encoding.
    """
    first = fetch16(pc)
    if first & 3 != 3:
        insn = decode_compressed(first)
        if insn is None:
            raise IllegalInstruction(pc, first, 2)
        return insn
    word = first | (fetch16(pc + 2) << 16)
    insn = _decode(word, 4, word)
    if insn is None:
        raise IllegalInstruction(pc, word, 4)
    return insn
