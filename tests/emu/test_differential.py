"""Differential testing of the emulator core against qemu-riscv64 on random instruction sequences.

Hypothesis writes programs of several *sequences*. Each sequence gets a private region of memory: a 1 KiB
scratch buffer (random bytes) with sp pointing into its middle, the sequence's initial state (x1 and
x3-x31, f0-f31, fcsr: random, biased to boundary values, NaNs, infinities, subnormals, signed zeros and
improperly NaN-boxed singles) and room for the final state. A shared routine loads the initial state, the
random body runs, and another routine stores every register and fcsr back; at the end the program write()s
all the regions to stdout. The emulator and qemu must print the same bytes.

Bodies draw from: every OP/OP-IMM/LUI/AUIPC and M instruction with random registers and immediates; loads and
stores of every width, through sp or through a random base register pointed into the scratch buffer, with
misaligned addresses; AMOs and LR/SC pairs on aligned scratch addresses; every F/D instruction with every
rounding mode (static and dyn); fflags/frm/fcsr accesses that keep frm valid; compressed forms; and short
forward branches and jumps. sp (x2) is never written: it is the harness's base register.
"""

from __future__ import annotations

import random
import struct
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.emu.bare import AS, LD, OBJDUMP, QEMU, Result, assemble, missing_tools, run_elf, run_qemu, symbols

# --- the memory layout of one sequence's region (offsets from sp, which points at region + 512) ----------
SCRATCH = 512  # the scratch buffer is [sp - 512, sp + 512)
INIT_X, INIT_F, INIT_FCSR = 512, 768, 1024
DUMP_X, DUMP_F, DUMP_FCSR = 1032, 1288, 1544
REGION = 2112  # bytes per region, a multiple of 64 (sp and so every AMO base stays aligned)
XREGS = [r for r in range(1, 32) if r != 2]  # sp is the harness's
SEQUENCES = 8  # per program
# How often a sequence runs (each time from its initial registers; memory keeps what the last run stored):
# once, and often enough for the translator to have replaced the cold translation by the hot one.
REPEATS = [1, 40]

ABI = ["zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3", "a4", "a5",
       "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4", "t5", "t6"]  # fmt: skip
R_OPS = ["add", "sub", "sll", "slt", "sltu", "xor", "srl", "sra", "or", "and", "addw", "subw", "sllw", "srlw",
         "sraw", "mul", "mulh", "mulhsu", "mulhu", "div", "divu", "rem", "remu", "mulw", "divw", "divuw", "remw",
         "remuw"]  # fmt: skip
ROUNDING = ["rne", "rtz", "rdn", "rup", "rmm", "dyn"]

# --- interesting values ------------------------------------------------------------------------------------
M64 = (1 << 64) - 1
X_SPECIAL = [0, 1, 2, M64, M64 - 1, 1 << 63, (1 << 63) - 1, (1 << 63) + 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
             0x100000000, 0xFFFFFFFF80000000, 0xFFFFFFFF7FFFFFFF, 0x7FF, 0xFFFFFFFFFFFFF800, 31, 32, 63, 64,
             0x5555555555555555, 0xAAAAAAAAAAAAAAAA]  # fmt: skip
F32_SPECIAL = [0x00000000, 0x80000000, 0x3F800000, 0xBF800000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
               0x7F800001, 0x7FBFFFFF, 0x7FC12345, 0x00000001, 0x807FFFFF, 0x00800000, 0x80800000, 0x7F7FFFFF,
               0xFF7FFFFF, 0x4F000000, 0xCF000000, 0x5F000000, 0xDF000000, 0x4EFFFFFF, 0x5F800000, 0x4F800000,
               0x33800000, 0x3F800001, 0x3FC00000, 0x40200000, 0xBFC00000, 0x3F000000, 0x40400000,
               0x4B800001]  # fmt: skip
F64_SPECIAL = [0x0000000000000000, 0x8000000000000000, 0x3FF0000000000000, 0xBFF0000000000000,
               0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000, 0xFFF8000000000000,
               0x7FF0000000000001, 0x7FF7FFFFFFFFFFFF, 0x7FF8000012345678, 0x0000000000000001,
               0x800FFFFFFFFFFFFF, 0x0010000000000000, 0x7FEFFFFFFFFFFFFF, 0xFFEFFFFFFFFFFFFF,
               0x41DFFFFFFFE00000, 0xC1E0000000000000, 0x41E0000000000000, 0x43E0000000000000,
               0xC3E0000000000000, 0x43F0000000000000, 0x3CA0000000000000, 0x3FF0000000000001,
               0x3FF8000000000000, 0x4004000000000000, 0x3FE0000000000000, 0x36A8000000000000,
               0x47EFFFFFE0000000, 0x3690000000000000, 0x380FFFFFFFFFFFFF]  # fmt: skip
BOX = 0xFFFFFFFF00000000


def _x_value(rng: random.Random) -> int:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(X_SPECIAL)
    if kind == 1:
        return rng.randrange(-64, 65) & M64
    if kind == 2:
        return rng.randrange(-(1 << 31), 1 << 31) & M64
    return rng.getrandbits(64)


def _f_value(rng: random.Random) -> int:
    kind = rng.randrange(5)
    if kind == 0:
        return rng.choice(F32_SPECIAL) | BOX
    if kind == 1:
        return rng.getrandbits(32) | BOX
    if kind == 2:
        return rng.choice(F64_SPECIAL)
    if kind == 3:
        return rng.getrandbits(64)
    return rng.randrange(0xFFFFFFFF) << 32 | rng.choice(F32_SPECIAL)  # improperly NaN-boxed


# --- instruction generators: each returns the lines of one item of a body -----------------------------------


@dataclass
class Gen:
    """Draws instructions; `labels` numbers the branch targets of one program."""

    draw: st.DrawFn
    labels: int = 0

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def flag(self) -> bool:
        return self.draw(st.booleans())

    def x(self) -> str:
        return ABI[self.integer(0, 31)]

    def xd(self) -> str:  # a destination: anything but sp
        return ABI[self.draw(st.sampled_from([0, *XREGS]))]

    def xb(self) -> str:  # a base register to point into the scratch buffer
        return ABI[self.draw(st.sampled_from(XREGS))]

    def xc(self) -> str:  # x8-x15, the compressed subset
        return ABI[self.integer(8, 15)]

    def f(self) -> str:
        return f"f{self.integer(0, 31)}"

    def fc(self) -> str:
        return f"f{self.integer(8, 15)}"

    def imm(self, lo: int, hi: int) -> int:
        edges = [v for v in (lo, hi, 0, 1, -1) if lo <= v <= hi]
        return self.draw(st.one_of(st.integers(lo, hi), st.sampled_from(edges)))

    def pick(self, options: Sequence[str]) -> str:
        return self.draw(st.sampled_from(options))

    def label(self) -> str:
        self.labels += 1
        return f".Lfwd{self.labels}"

    # -- integer --
    def op(self) -> list[str]:
        mn = self.pick(R_OPS)
        return [f"{mn} {self.xd()}, {self.x()}, {self.x()}"]

    def op_imm(self) -> list[str]:
        mn = self.pick("addi slti sltiu xori ori andi addiw slli srli srai slliw srliw sraiw".split())  # noqa: SIM905
        if mn in ("slli", "srli", "srai"):
            imm = self.imm(0, 63)
        elif mn.endswith("iw") and mn != "addiw":
            imm = self.imm(0, 31)
        else:
            imm = self.imm(-2048, 2047)
        return [f"{mn} {self.xd()}, {self.x()}, {imm}"]

    def upper(self) -> list[str]:
        return [f"{self.pick(['lui', 'auipc'])} {self.xd()}, {self.imm(0, 0xFFFFF) & 0xFFFFF}"]

    # -- memory --
    def _address(self, width: int, aligned: bool = False) -> tuple[list[str], str]:
        """Set-up lines and an `off(base)` operand for an access of `width` bytes inside the scratch buffer."""
        lo, hi = -SCRATCH, SCRATCH - width
        where = self.integer(lo // width, hi // width) * width if aligned else self.imm(lo, hi)
        if self.flag():
            return [], f"{where}(sp)"
        base = self.xb()
        off = 0 if aligned else self.imm(-32, 32)
        return [f"addi {base}, sp, {where - off}"], f"{off}({base})"

    def load(self) -> list[str]:
        mn, width = self.pick(["lb 1", "lbu 1", "lh 2", "lhu 2", "lw 4", "lwu 4", "ld 8"]).split()
        setup, operand = self._address(int(width))
        return [*setup, f"{mn} {self.xd()}, {operand}"]

    def store(self) -> list[str]:
        mn, width = self.pick(["sb 1", "sh 2", "sw 4", "sd 8"]).split()
        setup, operand = self._address(int(width))
        return [*setup, f"{mn} {self.x()}, {operand}"]

    def fmem(self) -> list[str]:
        mn, width = self.pick(["flw 4", "fld 8", "fsw 4", "fsd 8"]).split()
        setup, operand = self._address(int(width))
        return [*setup, f"{mn} {self.f()}, {operand}"]

    # -- atomics --
    def amo(self) -> list[str]:
        w = self.pick(["w", "d"])
        size = 4 if w == "w" else 8
        op = self.pick("amoswap amoadd amoxor amoand amoor amomin amomax amominu amomaxu".split())  # noqa: SIM905
        order = self.pick(["", ".aq", ".rl", ".aqrl"])
        where = self.integer(-SCRATCH // size, SCRATCH // size - 1) * size
        base = self.xb()
        return [f"addi {base}, sp, {where}", f"{op}.{w}{order} {self.xd()}, {self.x()}, ({base})"]

    def lrsc(self) -> list[str]:
        """LR, a few ALU instructions that leave the base alone, SC to the same address (or another)."""
        w = self.pick(["w", "d"])
        size = 4 if w == "w" else 8
        slots = st.integers(-SCRATCH // size, SCRATCH // size - 1)
        where = self.draw(slots) * size
        base = self.xb()
        lines = [f"addi {base}, sp, {where}", f"lr.{w}{self.pick(['', '.aq', '.aqrl'])} {self._not(base)}, ({base})"]
        for _ in range(self.integer(0, 2)):
            lines.append(f"add {self._not(base)}, {self.x()}, {self.x()}")
        if self.flag():  # SC elsewhere: fails (and clears the reservation)
            lines.append(f"addi {base}, sp, {self.draw(slots) * size}")
        lines.append(f"sc.{w}{self.pick(['', '.rl', '.aqrl'])} {self._not(base)}, {self.x()}, ({base})")
        return lines

    def _not(self, reg: str) -> str:
        return self.pick([ABI[r] for r in (0, *XREGS) if ABI[r] != reg])

    # -- floating point --
    def fp(self) -> list[str]:
        w = self.pick(["s", "d"])
        kind = self.pick(["arith", "arith", "sqrt", "fma", "sign", "minmax", "cmp", "class", "cvt", "cvt", "mv"])
        rm = self.pick(ROUNDING)
        if kind == "arith":
            return [f"{self.pick(['fadd', 'fsub', 'fmul', 'fdiv'])}.{w} {self.f()}, {self.f()}, {self.f()}, {rm}"]
        if kind == "sqrt":
            return [f"fsqrt.{w} {self.f()}, {self.f()}, {rm}"]
        if kind == "fma":
            mn = self.pick(["fmadd", "fmsub", "fnmsub", "fnmadd"])
            return [f"{mn}.{w} {self.f()}, {self.f()}, {self.f()}, {self.f()}, {rm}"]
        if kind in ("sign", "minmax"):
            mn = self.pick(["fsgnj", "fsgnjn", "fsgnjx"] if kind == "sign" else ["fmin", "fmax"])
            return [f"{mn}.{w} {self.f()}, {self.f()}, {self.f()}"]
        if kind == "cmp":
            return [f"{self.pick(['feq', 'flt', 'fle'])}.{w} {self.xd()}, {self.f()}, {self.f()}"]
        if kind == "class":
            return [f"fclass.{w} {self.xd()}, {self.f()}"]
        if kind == "mv":
            return [self.pick([f"fmv.x.{'w' if w == 's' else 'd'} {self.xd()}, {self.f()}",
                               f"fmv.{'w' if w == 's' else 'd'}.x {self.f()}, {self.x()}"])]  # fmt: skip
        integer = self.pick(["w", "wu", "l", "lu"])
        choice = self.pick(["to_int", "from_int", "between"])
        if choice == "to_int":
            return [f"fcvt.{integer}.{w} {self.xd()}, {self.f()}, {rm}"]
        if choice == "from_int":
            exact = w == "d" and integer in ("w", "wu")  # binutils takes no rounding mode for these
            return [f"fcvt.{w}.{integer} {self.f()}, {self.x()}" + ("" if exact else f", {rm}")]
        return [f"fcvt.s.d {self.f()}, {self.f()}, {rm}" if w == "s" else f"fcvt.d.s {self.f()}, {self.f()}"]

    def csr(self) -> list[str]:
        """fflags/frm/fcsr accesses; frm only ever takes the values 0-4, so rm=dyn never traps."""
        return [self.pick([
            f"csrrw {self.xd()}, fflags, {self.x()}",
            f"csrrs {self.xd()}, fflags, {self.x()}",
            f"csrrc {self.xd()}, fflags, {self.x()}",
            f"csrrc {self.xd()}, frm, {self.x()}",
            f"csrrc {self.xd()}, fcsr, {self.x()}",
            f"csrrs {self.xd()}, fcsr, zero",
            f"csrrwi {self.xd()}, fflags, {self.imm(0, 31)}",
            f"csrrsi {self.xd()}, fflags, {self.imm(0, 31)}",
            f"csrrci {self.xd()}, fcsr, {self.imm(0, 31)}",
            f"csrrwi {self.xd()}, frm, {self.imm(0, 4)}",
            f"fsrmi {self.xd()}, {self.imm(0, 4)}",
        ])]  # fmt: skip

    # -- compressed --
    def compressed(self) -> list[str]:
        nz_x = [ABI[r] for r in XREGS]  # rd != x0 (and != sp)
        rd, rc, rc2 = self.pick(nz_x), self.xc(), self.xc()
        nz6 = self.draw(st.sampled_from([v for v in range(-32, 32) if v]))
        forms = {
            "c.addi": f"c.addi {rd}, {nz6}",
            "c.addiw": f"c.addiw {rd}, {self.imm(-32, 31)}",
            "c.li": f"c.li {rd}, {self.imm(-32, 31)}",
            "c.lui": f"c.lui {self.pick([r for r in nz_x if r != 'sp'])}, {nz6 & 0xFFFFF}",
            "c.slli": f"c.slli {rd}, {self.imm(1, 63)}",
            "c.srli": f"c.srli {rc}, {self.imm(1, 63)}",
            "c.srai": f"c.srai {rc}, {self.imm(1, 63)}",
            "c.andi": f"c.andi {rc}, {self.imm(-32, 31)}",
            "c.mv": f"c.mv {rd}, {self.pick([ABI[r] for r in range(1, 32)])}",
            "c.add": f"c.add {rd}, {self.pick([ABI[r] for r in range(1, 32)])}",
            "c.alu": f"{self.pick(['c.sub', 'c.xor', 'c.or', 'c.and', 'c.subw', 'c.addw'])} {rc}, {rc2}",
            "c.addi4spn": f"c.addi4spn {rc}, sp, {4 * self.integer(1, 255)}",
            "c.nop": "c.nop",
        }
        name = self.pick([*forms, "mem", "spmem"])
        if name == "mem":  # base in x8-x15 pointed at sp, offset up to the form's maximum
            mn, width = self.pick(["c.lw 4", "c.ld 8", "c.sw 4", "c.sd 8", "c.fld 8", "c.fsd 8"]).split()
            off = self.integer(0, 31) * int(width)
            data = self.fc() if "f" in mn else self.xc()
            return self._rvc(f"c.mv {rc}, sp", f"{mn} {data}, {off}({rc})")
        if name == "spmem":
            mn, width = self.pick(["c.lwsp 4", "c.ldsp 8", "c.swsp 4", "c.sdsp 8", "c.fldsp 8", "c.fsdsp 8"]).split()
            off = self.integer(0, 63) * int(width)
            data = rd if mn in ("c.lwsp", "c.ldsp") else self.f() if "f" in mn else self.x()
            return self._rvc(f"{mn} {data}, {off}(sp)")
        return self._rvc(forms[name])

    @staticmethod
    def _rvc(*lines: str) -> list[str]:
        return [".option push", ".option rvc", *lines, ".option pop"]

    # -- control flow: forward only --
    def branch(self, body: Callable[[], list[str]]) -> list[str]:
        target = self.label()
        kind = self.pick(["b", "b", "jal", "c.b", "c.j"])
        if kind == "b":
            first = [f"{self.pick(['beq', 'bne', 'blt', 'bge', 'bltu', 'bgeu'])} {self.x()}, {self.x()}, {target}"]
        elif kind == "jal":
            first = [f"jal {self.xd()}, {target}"]
        elif kind == "c.b":
            first = self._rvc(f"{self.pick(['c.beqz', 'c.bnez'])} {self.xc()}, {target}")
        else:
            first = self._rvc(f"c.j {target}")
        skipped = [line for _ in range(self.integer(1, 3)) for line in body()]
        return [*first, *skipped, f"{target}:"]


KINDS: dict[str, Callable[[Gen], list[str]]] = {
    "op": Gen.op,
    "op_imm": Gen.op_imm,
    "upper": Gen.upper,
    "load": Gen.load,
    "store": Gen.store,
    "fmem": Gen.fmem,
    "amo": Gen.amo,
    "lrsc": Gen.lrsc,
    "fp": Gen.fp,
    "csr": Gen.csr,
    "compressed": Gen.compressed,
}
MIXES: dict[str, list[str]] = {
    "integer": ["op", "op", "op_imm", "op_imm", "upper"],
    "memory": ["load", "store", "fmem", "op_imm", "op"],
    "atomic": ["amo", "amo", "lrsc", "load", "store", "op"],
    "fp": ["fp", "fp", "fp", "fp", "csr", "fmem"],
    "compressed": ["compressed", "compressed", "compressed", "op_imm", "load", "store"],
    "everything": list(KINDS),
}


@st.composite
def sequences(draw: st.DrawFn, mix: str) -> tuple[list[str], ...]:
    """The bodies of one program's sequences (lists of assembly lines)."""
    gen = Gen(draw)
    kinds = [KINDS[k] for k in MIXES[mix]]

    def item() -> list[str]:
        return kinds[draw(st.integers(0, len(kinds) - 1))](gen)

    def simple() -> list[str]:  # what a forward branch may skip
        return Gen.op(gen) if draw(st.booleans()) else Gen.op_imm(gen)

    bodies = []
    for _ in range(SEQUENCES):
        body: list[str] = []
        for _ in range(draw(st.integers(1, 32))):
            body += gen.branch(simple) if draw(st.integers(0, 9)) == 0 else item()
        bodies.append(body)
    return tuple(bodies)


@dataclass(frozen=True)
class State:
    x: tuple[int, ...]  # x0..x31 (x0 and sp are ignored)
    f: tuple[int, ...]
    fcsr: int
    scratch: bytes


def state(seed: int) -> State:
    """A sequence's initial state. Drawn from a seed rather than by hypothesis: it is several KiB per program,
    more than hypothesis lets one example draw; the instructions are what shrinks."""
    rng = random.Random(seed)
    return State(
        tuple(_x_value(rng) for _ in range(32)),
        tuple(_f_value(rng) for _ in range(32)),
        rng.randrange(5) << 5 | rng.randrange(32),
        rng.randbytes(2 * SCRATCH),
    )


# --- the program ----------------------------------------------------------------------------------------------

_RUNTIME = """\
# load_state: sp points at a region; loads fcsr, f0-f31, and every x register but x31 (the link)
load_state:
        ld      t0, {INIT_FCSR}(sp)
        fscsr   t0
{load_f}
{load_x}
        jalr    zero, 0(t6)

# save_state: stores x1-x30 (x31 was stored by the caller, whose link it is), fcsr and f0-f31
save_state:
{save_x}
        frcsr   t0
        sd      t0, {DUMP_FCSR}(sp)
{save_f}
        jalr    zero, 0(t6)
"""


def program(bodies: Sequence[list[str]], init: Sequence[State], repeats: Sequence[int]) -> str:
    """The program: for each sequence, `repeats[i]` times (load the initial state, run the body, store the
    state), then one write() of all the regions and exit(0)."""
    fmt = {"INIT_FCSR": INIT_FCSR, "DUMP_FCSR": DUMP_FCSR}
    lines = [".option norvc", ".text", ".globl _start", "_start:"]
    for i, body in enumerate(bodies):
        lines += [
            f"seq{i}:",
            "la t0, repeat",
            f"li t1, {repeats[i]}",
            "sw t1, 0(t0)",
            f"again{i}:",
            f"la sp, region{i} + {SCRATCH}",
            "jal t6, load_state",
            f"ld t6, {INIT_X + 8 * 31}(sp)",
            f"body{i}:",
            *body,
            f"end{i}:",
            f"sd t6, {DUMP_X + 8 * 31}(sp)",
            "jal t6, save_state",
            "la t0, repeat",
            "lw t1, 0(t0)",
            "addi t1, t1, -1",
            "sw t1, 0(t0)",
            f"bnez t1, again{i}",
        ]
    lines += [
        "li a0, 1",
        "la a1, region0",
        f"li a2, {REGION * len(bodies)}",
        "li a7, 64",
        "ecall",
        "li a0, 0",
        "li a7, 93",
        "ecall",
        _RUNTIME.format(
            load_f="\n".join(f"        fld f{r}, {INIT_F + 8 * r}(sp)" for r in range(32)),
            load_x="\n".join(f"        ld {ABI[r]}, {INIT_X + 8 * r}(sp)" for r in XREGS if r != 31),
            save_x="\n".join(f"        sd {ABI[r]}, {DUMP_X + 8 * r}(sp)" for r in XREGS if r != 31),
            save_f="\n".join(f"        fsd f{r}, {DUMP_F + 8 * r}(sp)" for r in range(32)),
            **fmt,
        ),
        ".data",
        "repeat: .word 0",
        ".balign 64",
    ]
    for i, state in enumerate(init):
        data = bytearray(REGION)
        data[0 : 2 * SCRATCH] = state.scratch
        struct.pack_into("<32Q", data, SCRATCH + INIT_X, *state.x)
        struct.pack_into("<32Q", data, SCRATCH + INIT_F, *state.f)
        struct.pack_into("<Q", data, SCRATCH + INIT_FCSR, state.fcsr)
        lines.append(f"region{i}:")
        lines += [f".byte {', '.join(str(b) for b in data[j : j + 64])}" for j in range(0, REGION, 64)]
    return "\n".join(lines) + "\n"


# --- comparing ------------------------------------------------------------------------------------------------


def _fields(region: bytes) -> dict[str, int]:
    """The final state a region holds: registers and fcsr by name."""
    out: dict[str, int] = {}
    for r in XREGS:
        out[f"x{r}/{ABI[r]}"] = struct.unpack_from("<Q", region, SCRATCH + DUMP_X + 8 * r)[0]
    for r in range(32):
        out[f"f{r}"] = struct.unpack_from("<Q", region, SCRATCH + DUMP_F + 8 * r)[0]
    out["fcsr"] = struct.unpack_from("<Q", region, SCRATCH + DUMP_FCSR)[0]
    return out


def _disassemble(elf: Path, start: int, stop: int) -> str:
    out = subprocess.run(
        [OBJDUMP, "-d", f"--start-address={start:#x}", f"--stop-address={stop:#x}", str(elf)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return "\n".join(line for line in out.splitlines() if line.startswith(" "))


def _report(elf: Path, bodies: Sequence[list[str]], init: Sequence[State], qemu: Result, emu: Result) -> str:
    if qemu.trap is not None or emu.trap is not None or qemu.status != emu.status:
        where = f" at pc {emu.trap.pc:#x}" if emu.trap else ""
        return f"different ends: qemu {qemu.describe()[:200]}, emulator {emu.describe()[:200]}{where}"
    syms = symbols(elf)
    for i in range(len(bodies)):
        theirs, ours = (out[i * REGION : (i + 1) * REGION] for out in (qemu.stdout, emu.stdout))
        diffs = [f"  memory at sp{j - SCRATCH:+d}: qemu {theirs[j]:#04x}, emulator {ours[j]:#04x}"
                 for j in range(2 * SCRATCH) if theirs[j] != ours[j]][:8]  # fmt: skip
        ours_fields = _fields(ours)
        for name, value in _fields(theirs).items():
            if ours_fields[name] != value:
                diffs.append(f"  {name}: qemu {value:#018x}, emulator {ours_fields[name]:#018x}")
        if diffs:
            state = init[i]
            initial = ", ".join(f"{ABI[r]}={state.x[r]:#x}" for r in XREGS)
            finitial = ", ".join(f"f{r}={state.f[r]:#x}" for r in range(32))
            listing = _disassemble(elf, syms[f"body{i}"], syms[f"end{i}"])
            return (
                f"sequence {i} diverges:\n" + "\n".join(diffs) + f"\ninitial: {initial}\n{finitial}\n"
                f"fcsr={state.fcsr:#x}\nsource:\n  " + "\n  ".join(bodies[i]) + f"\ndisassembly:\n{listing}"
            )
    return "outputs differ outside the dumps"


def check(bodies: Sequence[list[str]], init: Sequence[State], repeats: Sequence[int], tmp: Path) -> None:
    source = tmp / "diff.S"
    source.write_text(program(bodies, init, repeats))
    try:
        elf = assemble(source, tmp / "diff")
    except subprocess.CalledProcessError as e:
        raise AssertionError(f"the generator wrote something GNU as rejects:\n{e.stderr}") from e
    qemu = run_qemu(elf)
    assert qemu.status == 0 and len(qemu.stdout) == REGION * len(bodies), f"qemu: {qemu.describe()[:300]}"
    # twice: translating everything, then with the translations the first run left in the code cache
    for run in ("", " (second run, from the code cache)"):
        emu = run_elf(elf, cache=tmp / "cache")
        if emu.stdout != qemu.stdout or emu.status != qemu.status:
            raise AssertionError(_report(elf, bodies, init, qemu, emu) + run)


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    reason = missing_tools(AS, LD, OBJDUMP, QEMU)
    if reason:
        pytest.skip(reason)


@pytest.mark.slow
@pytest.mark.parametrize("mix", list(MIXES))
def test_against_qemu(mix: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    @settings(max_examples=EXAMPLES[mix], deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        bodies=sequences(mix),
        seeds=st.lists(st.integers(0, 2**32 - 1), min_size=SEQUENCES, max_size=SEQUENCES),
        repeats=st.lists(st.sampled_from(REPEATS), min_size=SEQUENCES, max_size=SEQUENCES),
    )
    def run(bodies: tuple[list[str], ...], seeds: list[int], repeats: list[int]) -> None:
        check(bodies, [state(seed) for seed in seeds], repeats, tmp_path_factory.mktemp(mix))

    run()


# examples per mix: about 75 s in all (each example is one program of SEQUENCES sequences)
EXAMPLES = {"integer": 80, "memory": 70, "atomic": 60, "fp": 100, "compressed": 70, "everything": 100}
