"""The decoder checked against GNU binutils (Debian's `binutils-riscv64-linux-gnu`) as an independent oracle.

Three checks: every table row, instantiated with random and boundary operands, must survive `as` → bytes →
`objdump` with our encoding and our text; random 32-bit words must be accepted or rejected exactly as
`objdump -M no-aliases,numeric` does on an rv64gc object; and *every* 16-bit halfword (there are only 49,152
compressed ones, so all of them are cheaper than sampling) must expand to what objdump's `c.*` form means.

Where objdump 2.40 and the spec disagree the decoder follows the spec; `_objdump_is_stricter` and
`_objdump_is_laxer` list those cases, and nothing else may differ.
"""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from isola.emu.isa import ROWS, Fmt, Insn, Row, decode, decode_compressed, disasm
from isola.emu.isa.opcodes import RM_FORMATS

_TOOLS = ("riscv64-linux-gnu-as", "riscv64-linux-gnu-objcopy", "riscv64-linux-gnu-objdump")
_FMT_OF = {row.mnemonic: row.fmt for row in ROWS}
_EXACT_CVT = {"fcvt.d.s", "fcvt.d.w", "fcvt.d.wu"}
# The newest privileged spec binutils 2.40 knows, so CSR names agree between objects with and without
# instructions in assembly form (as records its default, 1.11, only when it assembles a CSR instruction).
_AS = ("riscv64-linux-gnu-as", "-march=rv64gc", "-mpriv-spec=1.12")
_LINE = re.compile(r"^\s*([0-9a-f]+):\t[0-9a-f ]+\t(\S+)(?:\t(.*))?$")

# Objdump line: mnemonic and operand strings; None when objdump did not recognise the bytes.
Dump = dict[int, tuple[str, list[str]] | None]


@pytest.fixture(scope="module", autouse=True)
def _binutils() -> None:
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found: apt-get install binutils-riscv64-linux-gnu")


def _run(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout


def _objdump_object(obj: Path) -> Dump:
    # Stripping drops the $d mapping symbols that would make objdump print raw data instead of decoding it.
    _run("riscv64-linux-gnu-objcopy", "--strip-all", obj)
    dump: Dump = {}
    for line in _run("riscv64-linux-gnu-objdump", "-d", "-M", "no-aliases,numeric", obj).splitlines():
        if m := _LINE.match(line):
            addr, mnemonic, operands = int(m[1], 16), m[2], m[3] and m[3].split(" #")[0]  # drop `# addr` notes
            known = not mnemonic.startswith(".")  # .2byte / .4byte / .byte: not an instruction
            dump[addr] = (mnemonic, operands.split(",") if operands else []) if known else None
    return dump


def _objdump_bytes(blob: bytes) -> Dump:
    """Disassemble raw bytes as an rv64gc object (the ELF attribute is what limits objdump to RV64GC)."""
    with tempfile.TemporaryDirectory() as tmp:
        bin_path, src, obj = Path(tmp, "blob.bin"), Path(tmp, "blob.s"), Path(tmp, "blob.o")
        bin_path.write_bytes(blob)
        src.write_text(f'.incbin "{bin_path}"\n')
        _run(*_AS, "-o", obj, src)
        return _objdump_object(obj)


def _objdump_words(words: list[int]) -> Dump:
    return _objdump_bytes(struct.pack(f"<{len(words)}I", *words))


@pytest.fixture(scope="module")
def csr_numbers() -> dict[str, int]:
    """objdump prints CSRs it knows by name: learn the names from objdump itself (csrrs x0,N,x0 for all N)."""
    dump = _objdump_words([(n << 20) | 0x2073 for n in range(4096)])
    names: dict[str, int] = {}
    for n in range(4096):
        entry = dump[4 * n]
        assert entry is not None and entry[0] == "csrrs"
        names.setdefault(entry[1][1], n)
    return names


# objdump prints the canonical 32-bit `unimp` encoding, 0xc0001073, as that pseudo-instruction: it is
# csrrw x0, cycle, x0, which traps at run time (cycle is read-only).
_UNIMP = ("csrrw", "x0", "0xc00", "x0")


def _normalize(mnemonic: str, operands: list[str], csr_numbers: dict[str, int]) -> tuple[str, ...]:
    """Mnemonic plus operands with the cosmetic differences removed (target syntax, CSR names, fence sets)."""
    if mnemonic == "unimp" and not operands:
        return _UNIMP
    fmt = _FMT_OF.get(mnemonic.removesuffix(".aqrl").removesuffix(".aq").removesuffix(".rl"))
    if fmt is None:
        return (mnemonic, *operands)
    out = [mnemonic]
    for token, op in zip(fmt.value.split(","), operands, strict=False):
        if token == "target":
            out.append(hex(int(op.split()[0], 16)))
        elif token == "csr":
            out.append(hex(int(op, 16) if op.startswith("0x") else csr_numbers[op]))
        elif token in ("pred", "succ"):
            out.append("0" if op == "unknown" else op)
        else:
            out.append(op)
    return (*out, *operands[len(out) - 1 :])


def _mine(insn: Insn, pc: int, csr_numbers: dict[str, int]) -> tuple[str, ...]:
    mnemonic, _, operands = disasm(insn, pc).partition("\t")
    return _normalize(mnemonic, operands.split(",") if operands else [], csr_numbers)


def _objdump_is_stricter(insn: Insn) -> bool:
    """Encodings the spec defines but objdump 2.40 prints as data.

    - exact conversions with rm other than rne: the spec gives them an rm field like every conversion;
    - FENCE/FENCE.TSO/FENCE.I with nonzero rd, rs1, FENCE.I imm or a reserved FENCE fm: the spec tells
      implementations to ignore those fields (a reserved fm is "a normal fence").
    """
    w = insn.raw
    if insn.mnemonic in _EXACT_CVT:
        return insn.rm != 0
    if insn.mnemonic == "fence":
        return bool(w & 0x000F8F80) or (w >> 28) != 0
    if insn.mnemonic == "fence.tso":
        return bool(w & 0x000F8F80)
    if insn.mnemonic == "fence.i":
        return bool(w & 0xFFFF8F80)
    return False


def _objdump_is_laxer(mnemonic: str, operands: list[str]) -> bool:
    """Encodings objdump 2.40 decodes that RV64GC makes illegal or does not have.

    - rm 5 or 6 (objdump prints the mode as `unknown`): reserved, so the instruction is illegal;
    - uret, hret, dret, sfence.vm: gone from (or never in) the ratified privileged spec, or debug-mode only.
    """
    return (bool(operands) and operands[-1] == "unknown" and mnemonic != "fence") or mnemonic in {
        "uret",
        "hret",
        "dret",
        "sfence.vm",
    }


def _compare_words(words: Iterable[int], dump: Dump, csr_numbers: dict[str, int]) -> list[str]:
    problems = []
    for i, word in enumerate(words):
        insn, theirs = decode(word), dump[4 * i]
        if theirs is None:
            if insn is not None and not _objdump_is_stricter(insn):
                problems.append(f"{word:#010x}: objdump rejects, we decode {disasm(insn)}")
        elif _objdump_is_laxer(*theirs):
            if insn is not None:
                problems.append(f"{word:#010x}: {theirs} is illegal in RV64GC, we decode {disasm(insn)}")
        elif insn is None:
            problems.append(f"{word:#010x}: objdump decodes {theirs}, we reject it")
        elif (ours := _mine(insn, 4 * i, csr_numbers)) != _normalize(*theirs, csr_numbers):
            problems.append(f"{word:#010x}: objdump {theirs}, we {ours}")
    return problems


# --- 1. every row of the table through the assembler and back -------------------------------------------

# Bit positions of each format's immediate, so it can be set to its boundary values.
_IMM_BITS: dict[Fmt, tuple[int, ...]] = {
    Fmt.I: tuple(range(20, 32)),
    Fmt.LOAD: tuple(range(20, 32)),
    Fmt.FLOAD: tuple(range(20, 32)),
    Fmt.STORE: (*range(7, 12), *range(25, 32)),
    Fmt.FSTORE: (*range(7, 12), *range(25, 32)),
    Fmt.BRANCH: (*range(7, 12), *range(25, 32)),
    Fmt.U: tuple(range(12, 32)),
    Fmt.JAL: tuple(range(12, 32)),
    Fmt.SHIFT: tuple(range(20, 26)),
    Fmt.CSR: tuple(range(20, 32)),
    Fmt.CSRI: (*range(15, 20), *range(20, 32)),
}


def _instances(row: Row, rng: random.Random) -> list[int]:
    """Encodings of `row` that GNU as can write back: random operands plus the immediate's boundary values."""
    free = ~row.mask & 0xFFFFFFFF
    imm_mask = sum(1 << b for b in _IMM_BITS.get(row.fmt, ())) & free
    top = 1 << (imm_mask.bit_length() - 1) if imm_mask else 0
    patterns = [0, imm_mask, top, imm_mask & ~top, *(rng.getrandbits(32) for _ in range(6))]
    words = []
    for pattern in patterns:
        word = row.match | (rng.getrandbits(32) & free & ~imm_mask) | (pattern & imm_mask)
        if row.fmt in RM_FORMATS:  # a valid rounding mode; rne for the conversions as writes only that way
            rm = 0 if row.mnemonic in _EXACT_CVT else rng.choice([0, 1, 2, 3, 4, 7])
            word = (word & ~0x7000) | (rm << 12)
        if row.mnemonic in ("fence.tso", "fence.i"):  # as writes only the canonical forms
            word = row.match
        elif row.mnemonic == "fence":
            word = row.match | (rng.randint(1, 15) << 24) | (rng.randint(1, 15) << 20)
        words.append(word)
    return words


def test_every_row_assembles_to_our_encoding_and_disassembles_to_our_text(
    tmp_path: Path, csr_numbers: dict[str, int]
) -> None:
    rng = random.Random(20261117)
    words, lines = [], []
    for row in ROWS:
        for word in _instances(row, rng):
            insn = decode(word)
            assert insn is not None and insn.mnemonic == row.mnemonic, (row, hex(word))
            words.append(word)
            lines.append(disasm(insn))
    src, obj, text = tmp_path / "table.s", tmp_path / "table.o", tmp_path / "table.bin"
    src.write_text("\n".join([".option norvc", ".option norelax", *lines, ""]))
    _run(*_AS, "-o", obj, src)
    _run("riscv64-linux-gnu-objcopy", "-O", "binary", "-j", ".text", obj, text)
    theirs = struct.unpack(f"<{len(words)}I", text.read_bytes())
    pairs = zip(lines, words, theirs, strict=True)
    assert [f"{line}: {ours:#010x} != as {a:#010x}" for line, ours, a in pairs if ours != a] == []
    assert _compare_words(words, _objdump_object(obj), csr_numbers) == []


# --- 2. random 32-bit words -----------------------------------------------------------------------------

# Low five bits of a 32-bit instruction: bits 1:0 = 11, bits 4:2 != 111 (that would be a 48-bit or longer one).
_LOW_BITS = [(b << 2) | 3 for b in range(7)]

_any_word = st.builds(lambda hi, lo: (hi << 5) | lo, st.integers(0, (1 << 27) - 1), st.sampled_from(_LOW_BITS))
# A row's encoding with random operands: hits every instruction, its reserved rounding modes and fence fields.
_row_word = st.builds(
    lambda row, bits: row.match | (bits & ~row.mask), st.sampled_from(ROWS), st.integers(0, 2**32 - 1)
)


def _flip_fixed_bit(row: Row, bits: int, pick: int) -> int:
    """One of the bits `row` fixes, flipped: the reserved neighbours of every instruction."""
    fixed = [b for b in range(2, 32) if row.mask >> b & 1]
    return (row.match | (bits & ~row.mask)) ^ (1 << fixed[pick % len(fixed)])


_near_miss = st.builds(_flip_fixed_bit, st.sampled_from(ROWS), st.integers(0, 2**32 - 1), st.integers(0, 63))


def _is_32bit(word: int) -> bool:
    return word & 3 == 3 and word & 0x1C != 0x1C


# One objdump run per example, so each example is a batch of words rather than one. Shrinking is off: the
# assertion already lists every offending word, and shrinking a 500-word batch takes minutes.
@settings(
    max_examples=100,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(words=st.lists(st.one_of(_any_word, _row_word, _near_miss).filter(_is_32bit), min_size=500, max_size=500))
def test_random_words_match_objdump(words: list[int], csr_numbers: dict[str, int]) -> None:
    assert _compare_words(words, _objdump_words(words), csr_numbers) == []


# --- 3. all compressed halfwords ------------------------------------------------------------------------


def _from_c(mnemonic: str, ops: list[str]) -> tuple[str, list[str]] | None:
    """objdump's `c.*` form rewritten as the 32-bit instruction the RVC chapter's expansion table gives.

    None for the two encodings objdump names but the spec reserves: the all-zero halfword (`c.unimp`) and
    C.ADDI16SP with a zero immediate.
    """
    name = mnemonic.removeprefix("c.")
    match name, ops:
        case "unimp", _:
            return None
        case "addi16sp", [_, "0"]:
            return None
        case (("fld" | "lw" | "ld" | "fsd" | "sw" | "sd"), _):
            return name, ops
        case (("fldsp" | "lwsp" | "ldsp" | "fsdsp" | "swsp" | "sdsp"), _):
            return name.removesuffix("sp"), ops  # the base x2 is already an explicit operand
        case "addi4spn", _:
            return "addi", ops
        case "lui", _:
            return "lui", ops
        case (("addi" | "addiw" | "andi" | "srli" | "srai" | "slli"), [rd, imm]):
            return name, [rd, rd, imm]
        case (("sub" | "xor" | "or" | "and" | "subw" | "addw" | "add"), [rd, rs2]):
            return name, [rd, rd, rs2]
        case (("srli64" | "srai64" | "slli64"), [rd]):
            return name.removesuffix("64"), [rd, rd, "0x0"]
        case "nop", []:
            return "addi", ["x0", "x0", "0"]
        case "li", [rd, imm]:
            return "addi", [rd, "x0", imm]
        case "addi16sp", [_, imm]:
            return "addi", ["x2", "x2", imm]
        case "j", [target]:
            return "jal", ["x0", target]
        case (("beqz" | "bnez"), [rs1, target]):
            return name[:3], [rs1, "x0", target]
        case "jr", [rs1]:
            return "jalr", ["x0", f"0({rs1})"]
        case "jalr", [rs1]:
            return "jalr", ["x1", f"0({rs1})"]
        case "mv", [rd, rs2]:
            return "add", [rd, "x0", rs2]
        case "ebreak", []:
            return "ebreak", []
    raise AssertionError(f"objdump printed a compressed form the test does not know: {mnemonic} {ops}")


def test_every_compressed_halfword_matches_objdump(csr_numbers: dict[str, int]) -> None:
    halves = [h for h in range(1 << 16) if h & 3 != 3]
    dump = _objdump_bytes(struct.pack(f"<{len(halves)}H", *halves))
    problems = []
    for i, half in enumerate(halves):
        insn, theirs = decode_compressed(half), dump[2 * i]
        expected = theirs and _from_c(*theirs)
        if expected is None:
            if insn is not None:
                problems.append(f"{half:#06x}: objdump {theirs}, reserved in RV64C, we decode {disasm(insn)}")
        elif insn is None:
            problems.append(f"{half:#06x}: objdump decodes {theirs}, we reject it")
        elif (ours := _mine(insn, 2 * i, csr_numbers)) != _normalize(*expected, csr_numbers):
            problems.append(f"{half:#06x}: objdump {theirs} means {expected}, we {ours}")
        assert insn is None or (insn.length, insn.raw) == (2, half)
    assert problems == []
