"""Value facts (`isola.emu.facts`) and fused zero-extending shift pairs change how a block computes its
registers, never what they hold.

Hypothesis draws straight-line integer code over a few registers (so values flow from one instruction into
the next) and random initial registers; the general templates and the specialised source must leave every
register equal.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from isola.emu.facts import Facts
from isola.emu.isa import Insn
from isola.emu.translate import _EMITTERS, _BlockSource, _Layout

M64 = (1 << 64) - 1
IMM_OPS = ["addi", "addiw", "andi", "ori", "xori", "slti", "sltiu", "slli", "srli", "srai", "slliw", "srliw", "sraiw"]
REG_OPS = ["add", "sub", "and", "or", "xor", "addw", "subw", "sll", "srl", "sra", "slt", "sltu", "mul", "mulw"]
SHIFTS = {"slli": 63, "srli": 63, "srai": 63, "slliw": 31, "srliw": 31, "sraiw": 31}
REGS = st.integers(0, 3)


def shift(limit: int) -> st.SearchStrategy[int]:
    """Shift amounts, often at the ends, where a wrong bound shows."""
    return st.one_of(st.sampled_from([0, 1, limit - 1, limit]), st.integers(0, limit))


@st.composite
def instructions(draw: st.DrawFn) -> Insn:
    kind = draw(st.sampled_from(["imm", "reg", "upper", "sext"]))
    rd, rs1, rs2 = draw(REGS), draw(REGS), draw(REGS)
    if kind == "imm":
        mn = draw(st.sampled_from(IMM_OPS))
        imm = draw(shift(SHIFTS[mn])) if mn in SHIFTS else draw(st.one_of(st.integers(-2048, 2047), st.just(255)))
        return Insn(mn, rd, rs1, 0, 0, imm, 0, 0, False, False, 4, 0)
    if kind == "reg":
        return Insn(draw(st.sampled_from(REG_OPS)), rd, rs1, rs2, 0, 0, 0, 0, False, False, 4, 0)
    if kind == "upper":
        imm = draw(st.integers(-(2**19), 2**19 - 1)) << 12
        return Insn(draw(st.sampled_from(["lui", "auipc"])), rd, 0, 0, 0, imm, 0, 0, False, False, 4, 0)
    return Insn("addiw", rd, rs1, 0, 0, 0, 0, 0, False, False, 4, 0)  # sext.w, which facts may drop


def run(lines: list[str], regs: list[int]) -> list[int]:
    x = list(regs)
    ns: dict[str, Any] = {"x": x}
    exec(compile("\n".join(lines) or "pass", "<block>", "exec"), ns)
    return x


values = st.one_of(
    st.integers(0, M64),
    st.integers(0, 300),
    st.sampled_from([M64, 1 << 63, (1 << 31) - 1, 1 << 31, 0xFFFFFFFF, 0xFFFFFFFF80000000]),
)


@settings(max_examples=1500, deadline=None)
@given(code=st.lists(instructions(), min_size=1, max_size=16), regs=st.lists(values, min_size=4, max_size=4))
def test_specialised_code_computes_the_same_registers(code: list[Insn], regs: list[int]) -> None:
    regs[0] = 0
    general: list[str] = []
    special: list[str] = []
    facts = Facts()
    pc = 0x10000
    for insn in code:
        lines = _EMITTERS[insn.mnemonic](pc, insn, pc + 4)
        general += lines
        special += facts.rewrite(pc, insn, lines)
        pc += 4
    assert run(special, regs) == run(general, regs)


def insn(mn: str, rd: int, rs1: int = 0, rs2: int = 0, imm: int = 0) -> Insn:
    return Insn(mn, rd, rs1, rs2, 0, imm, 0, 0, False, False, 4, 0)


def test_what_facts_remove() -> None:
    """The crc32 loop's shape: a masked byte, scaled and offset, needs no 64-bit masks; a word load xor a
    small value is already sign-extended, so sext.w vanishes; lui+addi is one constant."""
    facts = Facts()

    def emit(i: Insn) -> list[str]:
        return facts.rewrite(0x1000, i, _EMITTERS[i.mnemonic](0x1000, i, 0x1004))

    emit(insn("andi", 15, 15, imm=255))
    assert emit(insn("slli", 15, 15, imm=2)) == ["x[15] = x[15] << 2"]
    assert emit(insn("addi", 15, 15, imm=1024)) == ["x[15] = x[15] + 1024"]
    emit(insn("srliw", 13, 14, imm=8))
    facts.rewrite(0x1000, insn("lw", 15, 2), ["x[15] = ..."])
    emit(insn("xor", 15, 15, 13))
    assert emit(insn("addiw", 15, 15)) == []
    emit(insn("lui", 5, imm=0x12345 << 12))
    assert emit(insn("addi", 5, 5, imm=0x678)) == [f"x[5] = {0x12345678}"]


PRODUCERS = [
    *(insn(mn, 1, 1, imm=imm) for mn in ("andi", "ori", "xori", "addi") for imm in (-2048, -1, 0, 1, 255, 2047)),
    *(insn(mn, 1, 1, imm=k) for mn in ("slli", "srli", "srai") for k in (0, 1, 31, 32, 33, 63)),
    *(insn(mn, 1, 1, imm=k) for mn in ("slliw", "srliw", "sraiw", "addiw") for k in (0, 1, 31)),
    *(insn(mn, 1, 1, 1) for mn in ("add", "sub", "and", "or", "xor", "addw", "slt", "sltu", "mul", "mulw")),
]
CONSUMERS = [
    *(insn("slli", 2, 1, imm=k) for k in range(64)),
    insn("add", 2, 1, 1),
    insn("add", 2, 1, 3),
    insn("addi", 2, 1, imm=2047),
    insn("addiw", 2, 1),
    insn("xor", 2, 1, 3),
    insn("and", 2, 1, 3),
]


def test_every_producer_consumer_pair_agrees() -> None:
    """Exhaustively, the places where a wrong bound would show: a value with a fact, then an instruction
    that leans on it (a shift, a sum, a sign extension), on values at the ends of the range."""
    for producer in PRODUCERS:
        for consumer in CONSUMERS:
            facts = Facts()
            general, special = [], []
            for i in (producer, producer, consumer):  # twice: the second sees the first's facts
                lines = _EMITTERS[i.mnemonic](0x1000, i, 0x1004)
                general += lines
                special += facts.rewrite(0x1000, i, lines)
            for a in (0, 1, 255, 0x7FFFFFFF, 0xFFFFFFFF, M64, 1 << 63, 0xFFFFFFFF80000000):
                regs = [0, a, 0, M64 - a]
                assert run(special, regs) == run(general, regs), (producer, consumer, a)


class _Cpu:
    instret = 0


def run_block(code: list[Insn], regs: list[int], hot: bool) -> list[int]:
    """`code` translated as one block by the translator itself (facts, fused shift pairs and all)."""
    start = 0x10000
    insns = [(start + 4 * k, i) for k, i in enumerate(code)]
    src, _ = _BlockSource(_Layout(insns, None, {}, start), hot).source(start)
    ns: dict[str, Any] = {"PROMOTE": lambda pc: None}
    exec(compile(src, "<block>", "exec"), ns)
    x = list(regs) + [0] * (32 - len(regs))
    assert ns["block"](x, [0] * 32, _Cpu()) == start + 4 * len(code)
    return x[: len(regs)]


@st.composite
def zero_extensions(draw: st.DrawFn) -> list[Insn]:
    """slli rd, rs, k ... srli rd, rd, k with other instructions between, which may or may not touch rd/rs."""
    k = draw(shift(63))
    rd, rs = draw(REGS.filter(bool)), draw(REGS)
    between = draw(st.lists(instructions(), max_size=3))
    return [insn("slli", rd, rs, imm=k), *between, insn("srli", rd, rd, imm=k)]


@settings(max_examples=800, deadline=None)
@given(
    code=st.lists(st.one_of(instructions().map(lambda i: [i]), zero_extensions()), min_size=1, max_size=6).map(
        lambda parts: [i for part in parts for i in part]
    ),
    regs=st.lists(values, min_size=4, max_size=4),
    hot=st.booleans(),
)
# zext.w with an instruction between that writes the source, or reads the destination: no fusion then
@example(code=[insn("slli", 1, 2, imm=32), insn("addi", 2, 0, imm=5), insn("srli", 1, 1, imm=32)],
         regs=[0, 7, 0x123456789, 9], hot=True)  # fmt: skip
@example(code=[insn("slli", 1, 2, imm=32), insn("add", 3, 1, 0), insn("srli", 1, 1, imm=32)],
         regs=[0, 7, 0x123456789, 9], hot=False)  # fmt: skip
def test_translated_blocks_compute_the_same_registers(code: list[Insn], regs: list[int], hot: bool) -> None:
    regs[0] = 0
    pcs = [0x10000 + 4 * k for k in range(len(code))]
    general = [line for pc, i in zip(pcs, code, strict=True) for line in _EMITTERS[i.mnemonic](pc, i, pc + 4)]
    assert run_block(code, regs, hot) == run(general, regs)
