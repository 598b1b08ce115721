"""Decoder unit tests: words hand-assembled from the spec's encoding figures, one per immediate scramble.

The binutils oracle (tests/integration/test_decode_objdump.py) covers breadth; these pin the boundary values of
every immediate format and the reserved encodings, and they run without a cross toolchain.
"""

from __future__ import annotations

import struct

import pytest

from isola.emu.isa import (
    ROWS,
    IllegalInstruction,
    Insn,
    decode,
    decode_at,
    decode_compressed,
    disasm,
    expand_compressed,
    instruction_length,
)


def _ok(insn: Insn | None) -> Insn:
    assert insn is not None
    return insn


# (word, mnemonic, rd, rs1, rs2, imm); the comment gives the fields the word was assembled from.
_BASE = [
    (0x80010093, "addi", 1, 2, 0, -2048),  # I: imm[11:0]=0x800 at 31:20
    (0x7FF10093, "addi", 1, 2, 0, 2047),  # I: imm=0x7ff
    (0x80743023, "sd", 0, 8, 7, -2048),  # S: imm[11:5]=0x40 at 31:25, imm[4:0]=0 at 11:7
    (0x7E742FA3, "sw", 0, 8, 7, 2047),  # S: imm[11:5]=0x3f, imm[4:0]=0x1f
    (0x80208063, "beq", 0, 1, 2, -4096),  # B: imm[12] at 31 only
    (0x7E209FE3, "bne", 0, 1, 2, 4094),  # B: imm[11] at 7, imm[10:5] at 30:25, imm[4:1] at 11:8 all set
    (0x0020C0E3, "blt", 0, 1, 2, 2048),  # B: imm[11] at bit 7 only
    (0x800000EF, "jal", 1, 0, 0, -(1 << 20)),  # J: imm[20] at 31 only
    (0x7FFFF06F, "jal", 0, 0, 0, (1 << 20) - 2),  # J: imm[10:1] 30:21, imm[11] 20, imm[19:12] 19:12 all set
    (0x0010006F, "jal", 0, 0, 0, 2048),  # J: imm[11] at bit 20 only
    (0x800002B7, "lui", 5, 0, 0, -(1 << 31)),  # U: 0x80000 << 12, sign-extended to 64 bits
    (0xFFFFF297, "auipc", 5, 0, 0, -4096),  # U: 0xfffff << 12
    (0x7FFFF2B7, "lui", 5, 0, 0, 0x7FFFF000),
    (0x03F11093, "slli", 1, 2, 0, 63),  # 6-bit shamt at 25:20, funct6=0
    (0x40115093, "srai", 1, 2, 0, 1),  # funct6=010000
    (0x41F1509B, "sraiw", 1, 2, 0, 31),  # 5-bit shamt, funct7=0100000
    (0xFFC32283, "lw", 5, 6, 0, -4),
    (0x008280E7, "jalr", 1, 5, 0, 8),
]


@pytest.mark.parametrize(("word", "mnemonic", "rd", "rs1", "rs2", "imm"), _BASE)
def test_base_formats_extract_fields_and_sign_extend(word, mnemonic, rd, rs1, rs2, imm):
    insn = _ok(decode(word))
    assert (insn.mnemonic, insn.rd, insn.rs1, insn.rs2, insn.imm) == (mnemonic, rd, rs1, rs2, imm)
    assert (insn.length, insn.raw) == (4, word)


def test_csr_fields():
    insn = _ok(decode(0xFFFFE0F3))  # csrrsi x1,0xfff,31: csr at 31:20, zimm in the rs1 slot
    assert (insn.mnemonic, insn.rd, insn.csr, insn.imm, insn.rs1) == ("csrrsi", 1, 0xFFF, 31, 0)
    insn = _ok(decode(0x300110F3))  # csrrw x1,mstatus,x2
    assert (insn.mnemonic, insn.rd, insn.rs1, insn.csr) == ("csrrw", 1, 2, 0x300)


def test_fp_fields_rs3_and_rounding_mode():
    insn = _ok(decode(0x223110C3))  # fmadd.d f1,f2,f3,f4,rtz: rs3 at 31:27, fmt=01, rm=001
    assert (insn.mnemonic, insn.rd, insn.rs1, insn.rs2, insn.rs3, insn.rm) == ("fmadd.d", 1, 2, 3, 4, 1)
    assert _ok(decode(0x003170D3)).rm == 7  # fadd.s ... dyn
    assert _ok(decode(0xC20110D3)).mnemonic == "fcvt.w.d"
    assert _ok(decode(0xD22130D3)).mnemonic == "fcvt.d.l"


@pytest.mark.parametrize("rm", [5, 6])
@pytest.mark.parametrize("word", [0x003100D3, 0x223100C3, 0x5A0100D3, 0xC20100D3, 0xD20100D3, 0x420100D3])
def test_reserved_rounding_modes_are_illegal(word, rm):
    assert decode(word) is not None
    assert decode(word | rm << 12) is None


def test_atomics_carry_aq_and_rl():
    lr = _ok(decode(0x160130AF))  # lr.d.aqrl x1,(x2)
    assert (lr.mnemonic, lr.rd, lr.rs1, lr.aq, lr.rl) == ("lr.d", 1, 2, True, True)
    amo = _ok(decode(0x023130AF))  # amoadd.d.rl x1,x3,(x2)
    assert (amo.mnemonic, amo.rs2, amo.aq, amo.rl) == ("amoadd.d", 3, False, True)
    assert decode(0x1031202F) is None  # lr.w with rs2 != 0


def test_fences_follow_the_spec_on_ignored_fields():
    assert _ok(decode(0x0330000F)) == Insn("fence", 0, 0, 0, 0, 0x033, 0, 0, False, False, 4, 0x0330000F)
    assert _ok(decode(0x8330000F)).mnemonic == "fence.tso"
    assert _ok(decode(0x0100000F)).mnemonic == "fence"  # pause (fence w,0) is a fence hint
    assert _ok(decode(0x1330000F)).mnemonic == "fence"  # reserved fm: a normal fence
    assert _ok(decode(0x0330008F)).mnemonic == "fence"  # rd != 0 is ignored
    assert _ok(decode(0x0010900F)).mnemonic == "fence.i"  # imm and rs1 ignored


@pytest.mark.parametrize(
    "word",
    [
        0x00000000,  # opcode 0 (and a compressed halfword pair, not a 32-bit word)
        0xFFFFFFFF,  # low five bits 11111: a 48-bit-or-longer encoding
        0x0000007F,
        0x000000F3,  # ecall with rd != 0
        0x04011093,  # slli with funct6 != 0
        0x0201109B,  # slliw with bit 25 set
        0x0000705B,  # custom-2 opcode
        0x0000202B,  # custom-1 opcode
        0x0600F0C3,  # fmadd with fmt=11 (quad precision, not in G)
    ],
)
def test_undefined_words_are_rejected(word):
    assert decode(word) is None


def test_decode_requires_a_32_bit_word():
    with pytest.raises(ValueError):
        decode(1 << 32)


def test_every_row_decodes_to_itself_and_rows_do_not_overlap():
    for row in ROWS:
        assert _ok(decode(row.match)).mnemonic == row.mnemonic
    for i, a in enumerate(ROWS):
        for b in ROWS[i + 1 :]:
            overlap = (a.match ^ b.match) & a.mask & b.mask == 0
            assert not overlap or {a.mnemonic, b.mnemonic} == {"fence", "fence.tso"}, (a, b)


# (halfword, expansion); the comment gives the compressed fields it was assembled from.
_RVC = [
    (0x1FFC, "addi\tx15,x2,1020"),  # c.addi4spn: nzuimm[5:4|9:6|2|3] at 12:5 all set, rd'=7
    (0x0040, "addi\tx8,x2,4"),
    (0x2480, "fld\tf8,8(x9)"),  # c.fld: uimm[5:3] at 12:10
    (0x5C7C, "lw\tx15,124(x8)"),  # c.lw: uimm[5:3] 12:10, uimm[2] 6, uimm[6] 5
    (0x7FE4, "ld\tx9,248(x15)"),  # c.ld: uimm[5:3] 12:10, uimm[7:6] 6:5
    (0xBFE4, "fsd\tf9,248(x15)"),
    (0xC124, "sw\tx9,64(x10)"),  # c.sw: only uimm[6]
    (0xE05C, "sd\tx15,128(x8)"),  # c.sd: only uimm[7]
    (0x0001, "addi\tx0,x0,0"),  # c.nop
    (0x1081, "addi\tx1,x1,-32"),  # c.addi: imm[5] at 12
    (0x0FFD, "addi\tx31,x31,31"),  # c.addi: imm[4:0] at 6:2
    (0x357D, "addiw\tx10,x10,-1"),
    (0x5281, "addi\tx5,x0,-32"),  # c.li
    (0x7101, "addi\tx2,x2,-512"),  # c.addi16sp: nzimm[9] at 12
    (0x617D, "addi\tx2,x2,496"),  # c.addi16sp: nzimm[4|6|8:7|5] at 6:2
    (0x7781, "lui\tx15,0xfffe0"),  # c.lui: nzimm[17] at 12, sign-extended
    (0x67FD, "lui\tx15,0x1f"),  # c.lui: nzimm[16:12] at 6:2
    (0x907D, "srli\tx8,x8,0x3f"),  # c.srli: shamt[5] at 12
    (0x9481, "srai\tx9,x9,0x20"),
    (0x9901, "andi\tx10,x10,-32"),
    (0x8C05, "sub\tx8,x8,x9"),
    (0x8FF9, "and\tx15,x15,x14"),
    (0x9C25, "addw\tx8,x8,x9"),
    (0xB001, "jal\tx0,.-2048"),  # c.j: offset[11] at 12
    (0xAFFD, "jal\tx0,.+2046"),  # c.j: offset[4|9:8|10|6|7|3:1|5] at 11:2
    (0xD001, "beq\tx8,x0,.-256"),  # c.beqz: offset[8] at 12
    (0xEFFD, "bne\tx15,x0,.+254"),  # c.bnez: offset[4:3] 11:10, offset[7:6|2:1|5] 6:2
    (0x10FE, "slli\tx1,x1,0x3f"),
    (0x2FA2, "fld\tf31,8(x2)"),  # c.fldsp: uimm[5] 12, uimm[4:3|8:6] 6:2
    (0x50FE, "lw\tx1,252(x2)"),  # c.lwsp: uimm[5] 12, uimm[4:2|7:6] 6:2
    (0x70FE, "ld\tx1,504(x2)"),  # c.ldsp
    (0xA406, "fsd\tf1,8(x2)"),  # c.fsdsp: uimm[5:3|8:6] at 12:7
    (0xDFFE, "sw\tx31,252(x2)"),  # c.swsp: uimm[5:2|7:6] at 12:7
    (0xFF86, "sd\tx1,504(x2)"),  # c.sdsp
    (0x8082, "jalr\tx0,0(x1)"),  # c.jr
    (0x9282, "jalr\tx1,0(x5)"),  # c.jalr
    (0x808A, "add\tx1,x0,x2"),  # c.mv
    (0x908A, "add\tx1,x1,x2"),  # c.add
    (0x9002, "ebreak"),
    # HINTs are legal and run as no-ops.
    (0x4005, "addi\tx0,x0,1"),  # c.li x0
    (0x6005, "lui\tx0,0x1"),  # c.lui x0
    (0x8001, "srli\tx8,x8,0x0"),  # c.srli shamt 0
    (0x8006, "add\tx0,x0,x1"),  # c.mv x0
]


@pytest.mark.parametrize(("half", "text"), _RVC)
def test_compressed_immediates_and_expansions(half, text):
    insn = _ok(decode_compressed(half))
    assert disasm(insn) == text
    assert (insn.length, insn.raw) == (2, half)
    word = expand_compressed(half)
    assert word is not None and decode(word) == insn._replace(length=4, raw=word)


@pytest.mark.parametrize(
    "half",
    [
        0x0000,  # defined illegal
        0x0004,  # c.addi4spn with nzuimm 0
        0x8000,  # quadrant 0, funct3 100
        0x2005,  # c.addiw with rd x0
        0x6181,  # c.lui with nzimm 0
        0x6001,  # c.lui x0 with nzimm 0
        0x6101,  # c.addi16sp with nzimm 0
        0x4002,  # c.lwsp with rd x0
        0x6002,  # c.ldsp with rd x0
        0x8002,  # c.jr with rs1 x0
        0x9C41,  # c.subw/c.addw funct 10: reserved
        0x9C61,  # funct 11: reserved
    ],
)
def test_reserved_compressed_encodings_are_illegal(half):
    assert expand_compressed(half) is None
    assert decode_compressed(half) is None


def test_expand_compressed_rejects_a_32_bit_first_half():
    with pytest.raises(ValueError):
        expand_compressed(0x0013)


def test_instruction_length():
    assert [instruction_length(h) for h in (0x0001, 0x4002, 0x8082, 0x0013, 0xFFFF)] == [2, 2, 2, 4, 4]


def _fetcher(code: bytes, base: int):
    def fetch16(address: int) -> int:
        offset = address - base
        if not 0 <= offset <= len(code) - 2:
            raise MemoryError(f"fetch fault at {address:#x}")
        (half,) = struct.unpack_from("<H", code, offset)
        return int(half)

    return fetch16


def test_decode_at_walks_mixed_length_code():
    code = struct.pack("<HIHI", 0x0505, 0x00A50533, 0x8082, 0x00000073)  # c.addi; add; c.jr; ecall
    fetch16, pc, seen = _fetcher(code, 0x10000), 0x10000, []
    while pc < 0x10000 + len(code):
        insn = decode_at(fetch16, pc)
        seen.append((pc, insn.mnemonic, insn.length))
        pc += insn.length
    assert seen == [(0x10000, "addi", 2), (0x10002, "add", 4), (0x10006, "jalr", 2), (0x10008, "ecall", 4)]


def test_decode_at_reads_the_second_half_only_for_32_bit_instructions():
    fetch16 = _fetcher(struct.pack("<H", 0x8082), 0x1000)  # nothing mapped after the c.jr
    assert decode_at(fetch16, 0x1000).mnemonic == "jalr"
    with pytest.raises(MemoryError, match="0x1002"):
        decode_at(_fetcher(struct.pack("<H", 0x0013), 0x1000), 0x1000)


def test_decode_at_raises_illegal_instruction_with_the_raw_bits():
    with pytest.raises(IllegalInstruction) as err:
        decode_at(_fetcher(struct.pack("<H", 0x0000), 0x2000), 0x2000)
    assert (err.value.pc, err.value.raw, err.value.length) == (0x2000, 0, 2)
    with pytest.raises(IllegalInstruction) as err:
        decode_at(_fetcher(struct.pack("<I", 0x000000F3), 0x2000), 0x2000)
    assert (err.value.pc, err.value.raw, err.value.length) == (0x2000, 0xF3, 4)
    assert str(err.value) == "illegal instruction 0x000000f3 at pc 0x2000"


@pytest.mark.parametrize(
    ("word", "pc", "text"),
    [
        (0x160130AF, None, "lr.d.aqrl\tx1,(x2)"),
        (0x1C3120AF, None, "sc.w.aq\tx1,x3,(x2)"),
        (0x003170D3, None, "fadd.s\tf1,f2,f3"),  # dyn is the default and left out
        (0x003100D3, None, "fadd.s\tf1,f2,f3,rne"),
        (0xD20100D3, None, "fcvt.d.w\tf1,x2"),  # exact conversion: rne is the default
        (0xD20170D3, None, "fcvt.d.w\tf1,x2,dyn"),
        (0x0FF0000F, None, "fence\tiorw,iorw"),
        (0x0010000F, None, "fence\t0,w"),
        (0x0012E0F3, None, "csrrsi\tx1,fflags,5"),
        (0x300110F3, None, "csrrw\tx1,0x300,x2"),
        (0xFE208CE3, 0x10, "beq\tx1,x2,0x8"),
        (0x800000EF, 0x10, "jal\tx1,0xfffffffffff00010"),
        (0x12208073, None, "sfence.vma\tx1,x2"),
    ],
)
def test_disasm_text(word, pc, text):
    assert disasm(_ok(decode(word)), pc) == text
