"""Self-checking RV64GC instruction tests, one instruction family per program in `isa/`, plus traps.

Each program is assembled at test time and run twice: under qemu-riscv64, which checks the test itself
(its expectations were written from the RISC-V unprivileged spec and must hold on an independent
implementation), and on the emulator core. A program prints "PASS <n>/<n>" and exits 0 only when all of
its numbered checks ran and passed; otherwise it prints "FAIL <check> <value>" and exits nonzero, and the
test names the source line of the failing check (the macros record each check's address in the unloaded
section `.checks`; `as -g` maps addresses to lines).

The trap tests run one faulting instruction: qemu says which signal Linux delivers, and the emulator must
raise the same one, at the faulting instruction's pc, with the instructions before it completed.
"""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pytest

from tests.emu.bare import OBJCOPY, Result, assemble, run_elf, run_qemu, source_line, symbols
from tests.emu.conftest import ISA_DIR

pytestmark = pytest.mark.usefixtures("cross_tools")

# family -> the fewest checks its program must report, so that a program cannot shrink unnoticed
FAMILIES = {
    "rv64i_alu": 180,
    "rv64i_branch": 80,
    "rv64i_mem": 95,
    "rv64m": 130,
    "rv64a": 150,
    "rv64f": 2700,
    "rv64d": 2100,
    "rv64c": 70,
    "zicsr": 68,
    "fence_i": 12,
}

# Bugs of the core that a family's program finds. family -> (first check that may fail, why). The test
# still requires every check before that one to pass; once the program passes completely the entry must go.
KNOWN_BUGS: dict[str, tuple[int, str]] = {}

PASS = re.compile(rb"PASS (\d+)/(\d+)\n")
FAIL = re.compile(rb"FAIL (\d+) 0x([0-9a-f]{16})\n")


def test_every_program_is_listed() -> None:
    assert sorted(p.stem for p in ISA_DIR.glob("*.S")) == sorted(FAMILIES)


def _build(source: Path, tmp_path: Path) -> Path:
    try:
        return assemble(source, tmp_path / source.stem, include=ISA_DIR)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"{source.name} does not assemble:\n{e.stderr}")


def _explain(elf: Path, result: Result) -> str:
    """What went wrong, with the source line of a failing check."""
    m = FAIL.fullmatch(result.stdout)
    if m is None:
        return result.describe()
    check = int(m[1])
    index = elf.with_suffix(".checks")
    subprocess.run([OBJCOPY, f"--dump-section=.checks={index}", str(elf)], check=True, capture_output=True)
    (address,) = struct.unpack_from("<Q", index.read_bytes(), 8 * (check - 1))
    return f"check {check} at {source_line(elf, address)} failed: the value was {int(m[2], 16):#x}"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family(family: str, tmp_path: Path) -> None:
    elf = _build(ISA_DIR / f"{family}.S", tmp_path)
    qemu = run_qemu(elf)
    assert qemu.status == 0 and PASS.fullmatch(qemu.stdout), f"the test itself fails on qemu: {_explain(elf, qemu)}"
    emu = run_elf(elf)
    if family in KNOWN_BUGS:
        first, why = KNOWN_BUGS[family]
        assert emu.stdout != qemu.stdout, f"{family} passes now: remove it from KNOWN_BUGS"
        m = FAIL.fullmatch(emu.stdout)
        assert m is not None and int(m[1]) >= first, _explain(elf, emu)
        pytest.xfail(f"{_explain(elf, emu)}: {why}")
    assert emu.trap is None, f"trapped at pc {emu.trap.pc:#x}: {emu.describe()}"
    assert emu.status == 0 and emu.stdout == qemu.stdout, _explain(elf, emu)
    m = PASS.fullmatch(emu.stdout)
    assert m is not None and m[1] == m[2]
    assert int(m[2]) >= FAMILIES[family], f"{family} has only {int(m[2])} checks"


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - set(KNOWN_BUGS)))
def test_family_from_code_cache(family: str, tmp_path: Path) -> None:
    """The same programs again, the second time from translations the first run left in the code cache."""
    elf = _build(ISA_DIR / f"{family}.S", tmp_path)
    first = run_elf(elf, cache=tmp_path / "cache")
    assert any((tmp_path / "cache").rglob("*")), "nothing was cached"
    second = run_elf(elf, cache=tmp_path / "cache")
    assert first.status == 0 and PASS.fullmatch(first.stdout), _explain(elf, first)
    assert (second.status, second.stdout) == (first.status, first.stdout), _explain(elf, second)


# --- traps ------------------------------------------------------------------------------------------------

_TRAP_PROGRAM = """\
        .globl  _start
_start: li      a0, 5                   # completes before the trap: a0 must read 5 afterwards
{setup}
fault:  {insn}
        li      a0, 0                   # not reached
        li      a7, 93
        ecall
        .data
        .balign 4096
rw:     .skip   4096 - 4
edge:   .word   0                       # the last word of the last mapped page
"""

# name -> (set-up instructions, the faulting instruction, where the trap must point: "fault" or an address)
TRAPS: dict[str, tuple[str, str, str | int]] = {
    "ebreak": ("", "ebreak", "fault"),
    "c.ebreak": ("", "c.ebreak", "fault"),
    "illegal 32-bit": ("", ".4byte 0xffffffff", "fault"),
    "illegal 16-bit (c.unimp)": ("", ".2byte 0", "fault"),
    "write to a read-only CSR": ("", "csrw cycle, a0", "fault"),
    "unknown CSR": ("", "csrr a1, 0x300", "fault"),
    "dynamic rounding mode with frm=5": ("fsrmi 5", "fadd.s fa0, fa1, fa2, dyn", "fault"),
    "dynamic rounding mode with frm=7": ("fsrmi 7", "fcvt.w.d a1, fa1, dyn", "fault"),
    "misaligned amoadd.w": ("la a2, rw + 2", "amoadd.w a1, a0, (a2)", "fault"),
    "misaligned lr.d": ("la a2, rw + 4", "lr.d a1, (a2)", "fault"),
    "misaligned amoswap.d": ("la a2, rw + 4", "amoswap.d a1, a0, (a2)", "fault"),
    "misaligned lr.w": ("la a2, rw + 2", "lr.w a1, (a2)", "fault"),
    "load from address 0": ("", "ld a1, 0(zero)", "fault"),
    "store to the text segment": ("la a2, _start", "sw a0, 0(a2)", "fault"),
    "load past the last page": ("la a2, edge", "lw a1, 4(a2)", "fault"),
    "misaligned load straddling into an unmapped page": ("la a2, edge", "ld a1, 0(a2)", "fault"),
    "misaligned store straddling into an unmapped page": ("la a2, edge", "sd a0, 0(a2)", "fault"),
    "jump to address 0": ("", "jalr zero, 0(zero)", 0),
    "execute a data page": ("la a2, rw", "jr a2", "rw"),
}
TRAP_BUGS: dict[str, str] = {}  # trap case -> why the core does not trap yet (none open)


@pytest.mark.parametrize("name", list(TRAPS))
def test_trap(name: str, tmp_path: Path) -> None:
    setup, insn, where = TRAPS[name]
    source = tmp_path / "trap.S"
    source.write_text(_TRAP_PROGRAM.format(setup=f"        {setup}" if setup else "", insn=insn))
    elf = _build(source, tmp_path)
    pc = where if isinstance(where, int) else symbols(elf)[where]
    qemu = run_qemu(elf)
    assert qemu.trap is not None, f"the test itself: qemu does not trap: {qemu.describe()}"
    emu = run_elf(elf)
    if name in TRAP_BUGS and emu.trap is None:
        pytest.xfail(f"{TRAP_BUGS[name]}: {emu.describe()} (qemu: {qemu.describe()})")
    assert name not in TRAP_BUGS, "this bug is fixed: remove it from TRAP_BUGS"
    assert emu.trap is not None, f"no trap: {emu.describe()} (qemu: signal {qemu.trap.signo})"
    assert (emu.trap.signo, emu.trap.pc) == (qemu.trap.signo, pc), f"{emu.trap} (qemu: {qemu.trap.reason})"
    assert emu.x[10] == 5


_HOT_TRAP_PROGRAM = """\
        .globl  _start
_start: li      s0, 40                  # iterations: the block turns hot (translated again) on the way
        li      s1, 0
        la      a2, rw
loop:   addi    s1, s1, 1
        addi    s0, s0, -1
        seqz    t0, s0                  # on the last iteration, point the load far away
        slli    t0, t0, {shift}
        add     t1, a2, t0
fault:  ld      a3, 0(t1)
        j       loop
        .data
rw:     .dword  0
"""


@pytest.mark.parametrize("shift", [24, 40], ids=["unmapped page", "outside guest memory"])
def test_trap_in_hot_loop(shift: int, tmp_path: Path) -> None:
    """A fault in code that has run often: precise pc, and the registers the block kept in locals written back."""
    source = tmp_path / "hot.S"
    source.write_text(_HOT_TRAP_PROGRAM.format(shift=shift))
    elf = _build(source, tmp_path)
    qemu = run_qemu(elf)
    assert qemu.trap is not None, f"the test itself: qemu does not trap: {qemu.describe()}"
    emu = run_elf(elf)
    assert emu.trap is not None, emu.describe()
    assert (emu.trap.signo, emu.trap.pc) == (qemu.trap.signo, symbols(elf)["fault"]), emu.trap
    assert (emu.x[8], emu.x[9], emu.x[5]) == (0, 40, 1 << shift)  # s0, s1, t0


_INSTRET_PROGRAM = """\
        .globl  _start
_start: li      s0, 100
        la      s1, out
loop:   rdinstret a3                    # 3 instructions before the first read, 7 around the loop
        rdinstret a4
        sd      a3, 0(s1)
        sd      a4, 8(s1)
        addi    s1, s1, 16
        addi    s0, s0, -1
        bnez    s0, loop
        li      a0, 1
        la      a1, out
        li      a2, 1600
        li      a7, 64
        ecall
        li      a0, 0
        li      a7, 93
        ecall
        .bss
        .balign 8
out:    .zero   1600
"""


def test_instret_counts_every_instruction(tmp_path: Path) -> None:
    """instret is exact in the emulator (qemu-user reads the host's cycle counter instead: not compared)."""
    source = tmp_path / "instret.S"
    source.write_text(_INSTRET_PROGRAM)
    emu = run_elf(_build(source, tmp_path))
    assert emu.status == 0, emu.describe()
    reads = struct.unpack("<200Q", emu.stdout)
    # li and la (auipc, addi) retire before the first read; a read sees the count before itself
    expected = [3 + 7 * i + d for i in range(100) for d in (0, 1)]
    assert list(reads) == expected
