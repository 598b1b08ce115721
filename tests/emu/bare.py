"""A bare-metal-ish runner for test programs: a static riscv64 ELF on the emulator core, no Linux personality.

`run_elf` maps the ELF's PT_LOAD segments into a `FlatMemory` (with the protections the ELF asks for, as
qemu-user and Linux would), gives the program a stack, and runs it on a `Machine` whose syscall function
serves only write(64) to fds 1 and 2 and exit/exit_group(93/94); any other system call returns -ENOSYS.
It also builds programs (`assemble`) and runs them under qemu-riscv64 (`run_qemu`) for comparison.

The result is the exit status or the trap that ended the run, what the program wrote, and the number of
instructions retired. A `CodeChanged` from the core (a store hit a page holding translated code) is not an
end: the run loop is simply re-entered at the pc the core recorded, as the Linux personality does.
"""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from isola.emu.codecache import CodeCache
from isola.emu.cpu import Cpu
from isola.emu.machine import CodeChanged, Machine, Trap
from isola.emu.memory import FlatMemory
from isola.linux.guest import PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE

MEM_SIZE = 1 << 28
STACK_TOP = MEM_SIZE - PAGE_SIZE  # one unmapped page above the stack
STACK_SIZE = 64 * 1024
ENOSYS = 38
SYS_WRITE, SYS_EXIT, SYS_EXIT_GROUP = 64, 93, 94
PT_LOAD = 1
PF_X, PF_W, PF_R = 1, 2, 4

AS = "riscv64-linux-gnu-as"
LD = "riscv64-linux-gnu-ld"
OBJDUMP = "riscv64-linux-gnu-objdump"
OBJCOPY = "riscv64-linux-gnu-objcopy"
NM = "riscv64-linux-gnu-nm"
ADDR2LINE = "riscv64-linux-gnu-addr2line"
QEMU = "qemu-riscv64"
DEBIAN_PACKAGES = {**dict.fromkeys((AS, LD, OBJDUMP, OBJCOPY, NM, ADDR2LINE), "binutils-riscv64-linux-gnu"),
                   QEMU: "qemu-user"}  # fmt: skip


@dataclass(frozen=True)
class Result:
    """How a program ended: `status` after exit(), or `trap` (its signal) after a fault; never both."""

    status: int | None
    trap: Trap | None
    stdout: bytes
    instret: int
    x: tuple[int, ...] = ()  # the integer registers at the end (the emulator only)

    @property
    def signo(self) -> int | None:
        return self.trap.signo if self.trap else None

    def describe(self) -> str:
        end = f"exit {self.status}" if self.trap is None else f"signal {self.trap.signo} ({self.trap.reason})"
        return f"{end}, stdout {self.stdout!r}"


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _TimedOut(Exception):
    pass


def missing_tools(*tools: str) -> str | None:
    """None when every tool is on PATH, else a skip reason naming the Debian packages to install."""
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return None
    packages = sorted({DEBIAN_PACKAGES.get(t, t) for t in missing})
    return f"{', '.join(missing)} not found: apt-get install {' '.join(packages)}"


def assemble(source: Path, out: Path, include: Path | None = None) -> Path:
    """`as -march=rv64gc` then a static `ld`; returns the ELF path. Raises CalledProcessError with the
    assembler's complaints in `stderr`."""
    obj = out.with_suffix(".o")
    inc = ["-I", str(include)] if include else []
    subprocess.run([AS, "-g", "-march=rv64gc", "-mabi=lp64d", *inc, "-o", str(obj), str(source)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    subprocess.run([LD, "-static", "--no-warn-rwx-segments", "--no-relax", "-o", str(out), str(obj)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    return out


def symbols(elf: Path) -> dict[str, int]:
    """The ELF's symbols (local ones too) by name."""
    out = subprocess.run([NM, str(elf)], check=True, capture_output=True, text=True).stdout
    return {name: int(value, 16) for value, _, name in (line.split() for line in out.splitlines() if line[0] != " ")}


def source_line(elf: Path, address: int) -> str:
    """`file:line` of the code at `address`, from the DWARF line table `as -g` wrote."""
    out = subprocess.run([ADDR2LINE, "-e", str(elf), f"{address:#x}"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def run_qemu(elf: Path, timeout: float = 60.0) -> Result:
    """The same program under qemu-riscv64: exit status, or the signal that killed it (as a Trap with
    pc and addr unknown, reported as -1)."""
    proc = subprocess.run([QEMU, str(elf)], capture_output=True, timeout=timeout, check=False)
    if proc.returncode < 0:
        signo = -proc.returncode
        return Result(None, Trap(signo, -1, -1, signal.Signals(signo).name), proc.stdout, -1)
    return Result(proc.returncode, None, proc.stdout, -1)


def load_elf(mem: FlatMemory, image: bytes) -> int:
    """Map and fill the PT_LOAD segments of a static little-endian ELF64 into `mem`; returns the entry point.

    Pages are mapped with the union of the protections of the segments that touch them (ld can put the
    end of one segment and the start of the next on the same page)."""
    if image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    entry: int
    entry, phoff = struct.unpack_from("<QQ", image, 24)
    phentsize, phnum = struct.unpack_from("<HH", image, 54)
    segments = []
    page_prot: dict[int, int] = {}
    for i in range(phnum):
        p_type, p_flags, off, vaddr, _, filesz, memsz, _ = struct.unpack_from("<IIQQQQQQ", image, phoff + i * phentsize)
        if p_type != PT_LOAD or memsz == 0:
            continue
        prot = ((PROT_READ if p_flags & PF_R else 0) | (PROT_WRITE if p_flags & PF_W else 0)
                | (PROT_EXEC if p_flags & PF_X else 0))  # fmt: skip
        for page in range(vaddr // PAGE_SIZE, (vaddr + memsz + PAGE_SIZE - 1) // PAGE_SIZE):
            page_prot[page] = page_prot.get(page, 0) | prot
        segments.append((vaddr, image[off : off + filesz]))
    for page, prot in sorted(page_prot.items()):
        mem.map(page * PAGE_SIZE, PAGE_SIZE, prot)
    for vaddr, data in segments:
        mem.poke(vaddr, data)  # the bytes past filesz stay zero: .bss
    return entry


def run_elf(elf: Path | bytes, timeout: float = 60.0, cache: Path | None = None) -> Result:
    """Run a static riscv64 ELF on the emulator core until it exits or traps (or `timeout` seconds pass,
    which raises TimeoutError: a test program that does not finish is a failure, not a result).

    With `cache`, translations come from and go to a persistent code cache in that directory (written when
    the run ends, as `isola-emu` does), so a second run executes code the first one translated."""
    image = elf if isinstance(elf, bytes) else elf.read_bytes()
    mem = FlatMemory(MEM_SIZE)
    entry = load_elf(mem, image)
    mem.map(STACK_TOP - STACK_SIZE, STACK_SIZE, PROT_READ | PROT_WRITE)
    out = bytearray()

    def syscall(cpu: Cpu) -> int:
        nr, a0, a1, a2 = cpu.x[17], cpu.x[10], cpu.x[11], cpu.x[12]
        if nr == SYS_WRITE and a0 in (1, 2):
            out.extend(mem.read(a1, a2))
            return a2
        if nr in (SYS_EXIT, SYS_EXIT_GROUP):
            raise _Exit(a0 & 0xFF)
        return -ENOSYS & (2**64 - 1)

    machine = Machine(mem, syscall, codecache=CodeCache(cache) if cache is not None else None)
    machine.cpu.pc = entry
    machine.cpu.x[2] = STACK_TOP - 64  # where Linux would have put argc/argv: 16-byte aligned
    timer = threading.Timer(timeout, machine.pending.__setitem__, (0, True))
    timer.start()
    try:
        while True:
            try:
                machine.run()
            except CodeChanged:
                continue
            except _Exit as e:
                return Result(e.status, None, bytes(out), machine.cpu.instret, tuple(machine.cpu.x))
            except Exception as e:
                trap = machine.trap_of(e)
                if trap is None:
                    raise
                return Result(None, trap, bytes(out), machine.cpu.instret, tuple(machine.cpu.x))
            raise TimeoutError(f"guest still running after {timeout} s at pc {machine.cpu.pc:#x}")
    finally:
        timer.cancel()
        machine.translator.codecache.save()
