"""RV64C: each 16-bit instruction rewritten as the 32-bit instruction the spec says it expands to.

Expanding at decode time means the translator and executor only ever see 32-bit semantics. Every RV64C
encoding is covered; the spec's *reserved* encodings (the all-zero halfword, C.ADDI4SPN/C.ADDI16SP/C.LUI with
a zero immediate, C.ADDIW/C.LWSP/C.LDSP with rd=x0, C.JR with rs1=x0, the two spare C.SUBW/C.ADDW slots and
quadrant 0 funct3=100) expand to None. *HINT* encodings (C.NOP with an immediate, C.LI/C.LUI/C.MV/C.ADD/C.SLLI
with rd=x0, shifts by 0) are legal and expand to their no-op 32-bit forms.
"""

from __future__ import annotations

from collections.abc import Callable

from isola.emu.isa.opcodes import (
    BRANCH,
    JAL,
    JALR,
    LOAD,
    LOAD_FP,
    LUI,
    OP,
    OP_32,
    OP_IMM,
    OP_IMM_32,
    STORE,
    STORE_FP,
)

_SP = 2
_RA = 1


def _i(opcode: int, funct3: int, rd: int, rs1: int, imm: int) -> int:
    return ((imm & 0xFFF) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _s(opcode: int, funct3: int, rs1: int, rs2: int, imm: int) -> int:
    return ((imm & 0xFE0) << 20) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | ((imm & 0x1F) << 7) | opcode


def _r(opcode: int, funct3: int, funct7: int, rd: int, rs1: int, rs2: int) -> int:
    return (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _b(funct3: int, rs1: int, rs2: int, off: int) -> int:
    hi = ((off & 0x1000) << 19) | ((off & 0x7E0) << 20)
    lo = ((off & 0x1E) << 7) | ((off & 0x800) >> 4)
    return hi | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | lo | BRANCH


def _j(rd: int, off: int) -> int:
    imm = ((off & 0x100000) << 11) | ((off & 0x7FE) << 20) | ((off & 0x800) << 9) | (off & 0xFF000)
    return imm | (rd << 7) | JAL


def _sext(value: int, bits: int) -> int:
    sign = 1 << (bits - 1)
    return (value ^ sign) - sign


# Operand fields shared by many formats. Primed registers (rd', rs1', rs2') name x8..x15 / f8..f15.
def _rd_p(h: int) -> int:
    return 8 + ((h >> 2) & 7)


def _rs1_p(h: int) -> int:
    return 8 + ((h >> 7) & 7)


def _rd(h: int) -> int:
    return (h >> 7) & 31


def _rs2(h: int) -> int:
    return (h >> 2) & 31


def _imm6(h: int) -> int:
    """CI-format imm[5] at bit 12, imm[4:0] at bits 6:2; also the shamt of the shifts (unsigned there)."""
    return ((h >> 7) & 0x20) | ((h >> 2) & 0x1F)


def _uimm_ld(h: int) -> int:
    """CL/CS doubleword offset: uimm[5:3] at 12:10, uimm[7:6] at 6:5."""
    return ((h >> 7) & 0x38) | ((h << 1) & 0xC0)


def _uimm_lw(h: int) -> int:
    """CL/CS word offset: uimm[5:3] at 12:10, uimm[2] at 6, uimm[6] at 5."""
    return ((h >> 7) & 0x38) | ((h >> 4) & 0x4) | ((h << 1) & 0x40)


def _uimm_ldsp(h: int) -> int:
    """CI doubleword stack offset: uimm[5] at 12, uimm[4:3] at 6:5, uimm[8:6] at 4:2."""
    return ((h >> 7) & 0x20) | ((h >> 2) & 0x18) | ((h << 4) & 0x1C0)


def _uimm_lwsp(h: int) -> int:
    """CI word stack offset: uimm[5] at 12, uimm[4:2] at 6:4, uimm[7:6] at 3:2."""
    return ((h >> 7) & 0x20) | ((h >> 2) & 0x1C) | ((h << 4) & 0xC0)


def _uimm_sdsp(h: int) -> int:
    """CSS doubleword stack offset: uimm[5:3] at 12:10, uimm[8:6] at 9:7."""
    return ((h >> 7) & 0x38) | ((h >> 1) & 0x1C0)


def _uimm_swsp(h: int) -> int:
    """CSS word stack offset: uimm[5:2] at 12:9, uimm[7:6] at 8:7."""
    return ((h >> 7) & 0x3C) | ((h >> 1) & 0xC0)


# Quadrant 0.
def _addi4spn(h: int) -> int | None:
    # nzuimm[5:4] at 12:11, nzuimm[9:6] at 10:7, nzuimm[2] at 6, nzuimm[3] at 5
    imm = ((h >> 7) & 0x30) | ((h >> 1) & 0x3C0) | ((h >> 4) & 0x4) | ((h >> 2) & 0x8)
    return _i(OP_IMM, 0, _rd_p(h), _SP, imm) if imm else None


def _fld(h: int) -> int:
    return _i(LOAD_FP, 3, _rd_p(h), _rs1_p(h), _uimm_ld(h))


def _lw(h: int) -> int:
    return _i(LOAD, 2, _rd_p(h), _rs1_p(h), _uimm_lw(h))


def _ld(h: int) -> int:
    return _i(LOAD, 3, _rd_p(h), _rs1_p(h), _uimm_ld(h))


def _fsd(h: int) -> int:
    return _s(STORE_FP, 3, _rs1_p(h), _rd_p(h), _uimm_ld(h))


def _sw(h: int) -> int:
    return _s(STORE, 2, _rs1_p(h), _rd_p(h), _uimm_lw(h))


def _sd(h: int) -> int:
    return _s(STORE, 3, _rs1_p(h), _rd_p(h), _uimm_ld(h))


# Quadrant 1.
def _addi(h: int) -> int:
    rd = _rd(h)
    return _i(OP_IMM, 0, rd, rd, _sext(_imm6(h), 6))


def _addiw(h: int) -> int | None:
    rd = _rd(h)
    return _i(OP_IMM_32, 0, rd, rd, _sext(_imm6(h), 6)) if rd else None


def _li(h: int) -> int:
    return _i(OP_IMM, 0, _rd(h), 0, _sext(_imm6(h), 6))


def _lui_addi16sp(h: int) -> int | None:
    rd = _rd(h)
    if rd == _SP:
        # nzimm[9] at 12, nzimm[4] at 6, nzimm[6] at 5, nzimm[8:7] at 4:3, nzimm[5] at 2
        imm = ((h >> 3) & 0x200) | ((h >> 2) & 0x10) | ((h << 1) & 0x40) | ((h << 4) & 0x180) | ((h << 3) & 0x20)
        return _i(OP_IMM, 0, _SP, _SP, _sext(imm, 10)) if imm else None
    # nzimm[17] at 12, nzimm[16:12] at 6:2; LUI's immediate field holds bits 31:12 of the value.
    imm = _sext(((h << 5) & 0x20000) | ((h << 10) & 0x1F000), 18)
    return ((imm & 0xFFFFF000) | (rd << 7) | LUI) if imm else None


# (funct3, funct7) of c.sub, c.xor, c.or, c.and (OP, bit 12 clear) and of c.subw, c.addw (OP-32, bit 12 set),
# indexed by bits 6:5; the last two OP-32 slots are reserved.
_ALU = ((0, 0x20), (4, 0x00), (6, 0x00), (7, 0x00))
_ALU_W = ((0, 0x20), (0, 0x00))


def _misc_alu(h: int) -> int | None:
    rd = _rs1_p(h)
    kind = (h >> 10) & 3
    if kind == 0:
        return _i(OP_IMM, 5, rd, rd, _imm6(h))  # c.srli
    if kind == 1:
        return _i(OP_IMM, 5, rd, rd, 0x400 | _imm6(h))  # c.srai: funct6 010000 above the shamt
    if kind == 2:
        return _i(OP_IMM, 7, rd, rd, _sext(_imm6(h), 6))  # c.andi
    op = (h >> 5) & 3
    if not h & 0x1000:
        return _r(OP, *_ALU[op], rd, rd, _rd_p(h))
    return _r(OP_32, *_ALU_W[op], rd, rd, _rd_p(h)) if op < 2 else None


def _cj(h: int) -> int:
    # offset[11|4|9:8|10|6|7|3:1|5] at bits 12:2
    off = (
        ((h >> 1) & 0x800)
        | ((h >> 7) & 0x10)
        | ((h >> 1) & 0x300)
        | ((h << 2) & 0x400)
        | ((h >> 1) & 0x40)
        | ((h << 1) & 0x80)
        | ((h >> 2) & 0xE)
        | ((h << 3) & 0x20)
    )
    return _j(0, _sext(off, 12))


def _branch_offset(h: int) -> int:
    # offset[8|4:3] at 12:10, offset[7:6|2:1|5] at 6:2
    off = ((h >> 4) & 0x100) | ((h >> 7) & 0x18) | ((h << 1) & 0xC0) | ((h >> 2) & 0x6) | ((h << 3) & 0x20)
    return _sext(off, 9)


def _beqz(h: int) -> int:
    return _b(0, _rs1_p(h), 0, _branch_offset(h))


def _bnez(h: int) -> int:
    return _b(1, _rs1_p(h), 0, _branch_offset(h))


# Quadrant 2.
def _slli(h: int) -> int:
    rd = _rd(h)
    return _i(OP_IMM, 1, rd, rd, _imm6(h))


def _fldsp(h: int) -> int:
    return _i(LOAD_FP, 3, _rd(h), _SP, _uimm_ldsp(h))


def _lwsp(h: int) -> int | None:
    rd = _rd(h)
    return _i(LOAD, 2, rd, _SP, _uimm_lwsp(h)) if rd else None


def _ldsp(h: int) -> int | None:
    rd = _rd(h)
    return _i(LOAD, 3, rd, _SP, _uimm_ldsp(h)) if rd else None


def _jr_mv_add(h: int) -> int | None:
    rd, rs2 = _rd(h), _rs2(h)
    if not h & 0x1000:
        if rs2:
            return _r(OP, 0, 0, rd, 0, rs2)  # c.mv
        return _i(JALR, 0, 0, rd, 0) if rd else None  # c.jr
    if rs2:
        return _r(OP, 0, 0, rd, rd, rs2)  # c.add
    if rd:
        return _i(JALR, 0, _RA, rd, 0)  # c.jalr
    return 0x00100073  # c.ebreak → ebreak


def _fsdsp(h: int) -> int:
    return _s(STORE_FP, 3, _SP, _rs2(h), _uimm_sdsp(h))


def _swsp(h: int) -> int:
    return _s(STORE, 2, _SP, _rs2(h), _uimm_swsp(h))


def _sdsp(h: int) -> int:
    return _s(STORE, 3, _SP, _rs2(h), _uimm_sdsp(h))


def _reserved(h: int) -> None:
    return None


# Indexed by quadrant (bits 1:0) * 8 + funct3 (bits 15:13).
_EXPAND: tuple[Callable[[int], int | None], ...] = (
    _addi4spn, _fld, _lw, _ld, _reserved, _fsd, _sw, _sd,
    _addi, _addiw, _li, _lui_addi16sp, _misc_alu, _cj, _beqz, _bnez,
    _slli, _fldsp, _lwsp, _ldsp, _jr_mv_add, _fsdsp, _swsp, _sdsp,
)  # fmt: skip


def expand_compressed(half: int) -> int | None:
    """The 32-bit instruction word a 16-bit RVC instruction stands for, or None if it is reserved.

    `half` must be a compressed halfword (low two bits not both set); a 32-bit instruction's first half is
    rejected with ValueError because it is a caller bug, not a guest one.
    """
    if not 0 <= half <= 0xFFFF or half & 3 == 3:
        raise ValueError(f"not a compressed instruction: {half:#x}")
    return _EXPAND[((half & 3) << 3) | (half >> 13)](half)
