"""The RV64GC instruction table: one row per 32-bit instruction, written from the unprivileged spec.

Each row names the bits that identify the instruction (`mask`/`match`) and the operand format, which says both
how the decoder extracts fields and how the disassembler prints them. Compressed instructions have no rows:
`rvc.py` rewrites them into the 32-bit words below, so the emulator needs only one executor per instruction.

Fields that the spec says implementations must *ignore* (rd/rs1 of FENCE and FENCE.I, the imm of FENCE.I, the
fm of a FENCE other than FENCE.TSO) are left out of the masks on purpose; fields the spec fixes to a value
(rs2 of LR, rs2 of FSQRT, bit 25 of SLLIW, ...) are in them, so those reserved encodings decode to nothing.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class Fmt(enum.Enum):
    """Operand layout; the value is the assembler syntax the disassembler prints.

    `x*`/`f*` say which register file an operand lives in, `imm(xs1)` is a base+offset address, `target` a
    pc-relative jump, `rm` an optional rounding mode. `R` is written `xd,xs1,xs2` and so on.
    """

    R = "xd,xs1,xs2"
    I = "xd,xs1,imm"  # noqa: E741 - the spec's name for the format
    SHIFT = "xd,xs1,shamt"
    LOAD = "xd,imm(xs1)"
    STORE = "xs2,imm(xs1)"
    BRANCH = "xs1,xs2,target"
    U = "xd,imm20"
    JAL = "xd,target"
    FENCE = "pred,succ"
    NONE = ""
    SFENCE = "xs1,xs2"
    LR = "xd,(xs1)"
    AMO = "xd,xs2,(xs1)"
    CSR = "xd,csr,xs1"
    CSRI = "xd,csr,zimm"
    FLOAD = "fd,imm(xs1)"
    FSTORE = "fs2,imm(xs1)"
    F3RM = "fd,fs1,fs2,rm"
    F3 = "fd,fs1,fs2"
    F4RM = "fd,fs1,fs2,fs3,rm"
    F2RM = "fd,fs1,rm"
    FCMP = "xd,fs1,fs2"
    F2X = "xd,fs1"
    X2F = "fd,xs1"
    F2XRM = "xd,fs1,rm"
    X2FRM = "fd,xs1,rm"


#: Formats whose funct3 is a rounding mode; the decoder rejects the reserved modes 5 and 6 for them.
RM_FORMATS = frozenset({Fmt.F3RM, Fmt.F4RM, Fmt.F2RM, Fmt.F2XRM, Fmt.X2FRM})


class Row(NamedTuple):
    mnemonic: str
    mask: int
    match: int
    fmt: Fmt


# Major opcodes (bits 6:0), named as in the spec's opcode map.
LOAD, LOAD_FP, MISC_MEM, OP_IMM, AUIPC, OP_IMM_32 = 0x03, 0x07, 0x0F, 0x13, 0x17, 0x1B
STORE, STORE_FP, AMO, OP, LUI, OP_32 = 0x23, 0x27, 0x2F, 0x33, 0x37, 0x3B
MADD, MSUB, NMSUB, NMADD, OP_FP = 0x43, 0x47, 0x4B, 0x4F, 0x53
BRANCH, JALR, JAL, SYSTEM = 0x63, 0x67, 0x6F, 0x73

# (shift, width) of each named field.
_FIELDS = {
    "opcode": (0, 7),
    "rd": (7, 5),
    "funct3": (12, 3),
    "rs1": (15, 5),
    "rs2": (20, 5),
    "fp_fmt": (25, 2),
    "funct7": (25, 7),
    "funct6": (26, 6),
    "funct5": (27, 5),
    "funct12": (20, 12),
}


def _row(mnemonic: str, layout: Fmt, opcode: int, **fields: int) -> Row:
    mask = match = 0
    for name, value in {"opcode": opcode, **fields}.items():
        shift, width = _FIELDS[name]
        assert 0 <= value < 1 << width, (mnemonic, name, value)
        mask |= ((1 << width) - 1) << shift
        match |= value << shift
    return Row(mnemonic, mask, match, layout)


def _rv64i() -> list[Row]:
    rows = [
        _row("lui", Fmt.U, LUI),
        _row("auipc", Fmt.U, AUIPC),
        _row("jal", Fmt.JAL, JAL),
        _row("jalr", Fmt.LOAD, JALR, funct3=0),
    ]
    for f3, name in enumerate(["beq", "bne", None, None, "blt", "bge", "bltu", "bgeu"]):
        if name:
            rows.append(_row(name, Fmt.BRANCH, BRANCH, funct3=f3))
    for f3, name in enumerate(["lb", "lh", "lw", "ld", "lbu", "lhu", "lwu"]):
        rows.append(_row(name, Fmt.LOAD, LOAD, funct3=f3))
    for f3, name in enumerate(["sb", "sh", "sw", "sd"]):
        rows.append(_row(name, Fmt.STORE, STORE, funct3=f3))
    for f3, name in [(0, "addi"), (2, "slti"), (3, "sltiu"), (4, "xori"), (6, "ori"), (7, "andi")]:
        rows.append(_row(name, Fmt.I, OP_IMM, funct3=f3))
    # RV64 shifts take a 6-bit shamt, so only funct6 is fixed; the *W shifts fix all of funct7.
    rows += [
        _row("slli", Fmt.SHIFT, OP_IMM, funct3=1, funct6=0x00),
        _row("srli", Fmt.SHIFT, OP_IMM, funct3=5, funct6=0x00),
        _row("srai", Fmt.SHIFT, OP_IMM, funct3=5, funct6=0x10),
        _row("addiw", Fmt.I, OP_IMM_32, funct3=0),
        _row("slliw", Fmt.SHIFT, OP_IMM_32, funct3=1, funct7=0x00),
        _row("srliw", Fmt.SHIFT, OP_IMM_32, funct3=5, funct7=0x00),
        _row("sraiw", Fmt.SHIFT, OP_IMM_32, funct3=5, funct7=0x20),
    ]
    for name, f3, f7 in [
        ("add", 0, 0x00),
        ("sub", 0, 0x20),
        ("sll", 1, 0x00),
        ("slt", 2, 0x00),
        ("sltu", 3, 0x00),
        ("xor", 4, 0x00),
        ("srl", 5, 0x00),
        ("sra", 5, 0x20),
        ("or", 6, 0x00),
        ("and", 7, 0x00),
    ]:
        rows.append(_row(name, Fmt.R, OP, funct3=f3, funct7=f7))
    for name, f3, f7 in [("addw", 0, 0x00), ("subw", 0, 0x20), ("sllw", 1, 0x00), ("srlw", 5, 0x00)]:
        rows.append(_row(name, Fmt.R, OP_32, funct3=f3, funct7=f7))
    rows += [
        _row("sraw", Fmt.R, OP_32, funct3=5, funct7=0x20),
        # FENCE.TSO is fm=1000 with pred=succ=RW; any other fm is a plain FENCE (spec: reserved fm values
        # must be treated as normal fences). PAUSE is FENCE W,0 and decodes as that FENCE.
        _row("fence.tso", Fmt.NONE, MISC_MEM, funct3=0, funct12=0x833),
        _row("fence", Fmt.FENCE, MISC_MEM, funct3=0),
        _row("fence.i", Fmt.NONE, MISC_MEM, funct3=1),
        _row("ecall", Fmt.NONE, SYSTEM, funct12=0x000, rs1=0, funct3=0, rd=0),
        _row("ebreak", Fmt.NONE, SYSTEM, funct12=0x001, rs1=0, funct3=0, rd=0),
    ]
    return rows


def _privileged() -> list[Row]:
    """The privileged instructions a system-mode kernel runs; user mode traps them as illegal."""
    fixed = {"rs1": 0, "funct3": 0, "rd": 0}
    return [
        _row("sret", Fmt.NONE, SYSTEM, funct12=0x102, **fixed),
        _row("mret", Fmt.NONE, SYSTEM, funct12=0x302, **fixed),
        _row("wfi", Fmt.NONE, SYSTEM, funct12=0x105, **fixed),
        _row("sfence.vma", Fmt.SFENCE, SYSTEM, funct7=0x09, funct3=0, rd=0),
    ]


def _zicsr() -> list[Row]:
    return [
        _row(name, fmt, SYSTEM, funct3=f3)
        for name, f3, fmt in [
            ("csrrw", 1, Fmt.CSR),
            ("csrrs", 2, Fmt.CSR),
            ("csrrc", 3, Fmt.CSR),
            ("csrrwi", 5, Fmt.CSRI),
            ("csrrsi", 6, Fmt.CSRI),
            ("csrrci", 7, Fmt.CSRI),
        ]
    ]


def _m() -> list[Row]:
    names = ["mul", "mulh", "mulhsu", "mulhu", "div", "divu", "rem", "remu"]
    rows = [_row(name, Fmt.R, OP, funct3=f3, funct7=0x01) for f3, name in enumerate(names)]
    for f3, name in [(0, "mulw"), (4, "divw"), (5, "divuw"), (6, "remw"), (7, "remuw")]:
        rows.append(_row(name, Fmt.R, OP_32, funct3=f3, funct7=0x01))
    return rows


def _a() -> list[Row]:
    amos = [
        ("amoadd", 0x00),
        ("amoswap", 0x01),
        ("sc", 0x03),
        ("amoxor", 0x04),
        ("amoor", 0x08),
        ("amoand", 0x0C),
        ("amomin", 0x10),
        ("amomax", 0x14),
        ("amominu", 0x18),
        ("amomaxu", 0x1C),
    ]
    rows = []
    for suffix, f3 in [("w", 2), ("d", 3)]:
        rows.append(_row(f"lr.{suffix}", Fmt.LR, AMO, funct5=0x02, funct3=f3, rs2=0))
        rows += [_row(f"{name}.{suffix}", Fmt.AMO, AMO, funct5=f5, funct3=f3) for name, f5 in amos]
    return rows


def _fd() -> list[Row]:
    rows = [
        _row("flw", Fmt.FLOAD, LOAD_FP, funct3=2),
        _row("fld", Fmt.FLOAD, LOAD_FP, funct3=3),
        _row("fsw", Fmt.FSTORE, STORE_FP, funct3=2),
        _row("fsd", Fmt.FSTORE, STORE_FP, funct3=3),
    ]
    for s, fp_fmt in [("s", 0), ("d", 1)]:
        for name, opcode in [("fmadd", MADD), ("fmsub", MSUB), ("fnmsub", NMSUB), ("fnmadd", NMADD)]:
            rows.append(_row(f"{name}.{s}", Fmt.F4RM, opcode, fp_fmt=fp_fmt))

        def op_fp(name: str, layout: Fmt, funct5: int, fp_fmt: int = fp_fmt, **fields: int) -> Row:
            return _row(name, layout, OP_FP, funct7=funct5 << 2 | fp_fmt, **fields)

        rows += [
            op_fp(f"fadd.{s}", Fmt.F3RM, 0x00),
            op_fp(f"fsub.{s}", Fmt.F3RM, 0x01),
            op_fp(f"fmul.{s}", Fmt.F3RM, 0x02),
            op_fp(f"fdiv.{s}", Fmt.F3RM, 0x03),
            op_fp(f"fsqrt.{s}", Fmt.F2RM, 0x0B, rs2=0),
            op_fp(f"fsgnj.{s}", Fmt.F3, 0x04, funct3=0),
            op_fp(f"fsgnjn.{s}", Fmt.F3, 0x04, funct3=1),
            op_fp(f"fsgnjx.{s}", Fmt.F3, 0x04, funct3=2),
            op_fp(f"fmin.{s}", Fmt.F3, 0x05, funct3=0),
            op_fp(f"fmax.{s}", Fmt.F3, 0x05, funct3=1),
            op_fp(f"fle.{s}", Fmt.FCMP, 0x14, funct3=0),
            op_fp(f"flt.{s}", Fmt.FCMP, 0x14, funct3=1),
            op_fp(f"feq.{s}", Fmt.FCMP, 0x14, funct3=2),
            op_fp(f"fmv.x.{'w' if s == 's' else 'd'}", Fmt.F2X, 0x1C, funct3=0, rs2=0),
            op_fp(f"fclass.{s}", Fmt.F2X, 0x1C, funct3=1, rs2=0),
            op_fp(f"fmv.{'w' if s == 's' else 'd'}.x", Fmt.X2F, 0x1E, funct3=0, rs2=0),
        ]
        for rs2, ints in enumerate(["w", "wu", "l", "lu"]):
            rows.append(op_fp(f"fcvt.{ints}.{s}", Fmt.F2XRM, 0x18, rs2=rs2))
            rows.append(op_fp(f"fcvt.{s}.{ints}", Fmt.X2FRM, 0x1A, rs2=rs2))
    # Between the two formats: funct5 0x08, the fmt field names the destination and rs2 the source.
    rows.append(_row("fcvt.s.d", Fmt.F2RM, OP_FP, funct7=0x20, rs2=1))
    rows.append(_row("fcvt.d.s", Fmt.F2RM, OP_FP, funct7=0x21, rs2=0))
    return rows


ROWS: tuple[Row, ...] = (*_rv64i(), *_privileged(), *_zicsr(), *_m(), *_a(), *_fd())
