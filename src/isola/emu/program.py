"""One riscv64 Linux program under emulation: guest memory, its address space, the hart, the Linux personality.

This is where the engine-neutral parts meet: `linux.binfmt` loads the ELF, `linux.kernel` serves the system
calls, `emu.machine` runs the code. The loop here turns what ends a run of the machine into what Linux would
do: a system call's exit, a new image after execve, a signal to deliver, a fault to turn into a signal.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, TextIO

from isola.emu.codecache import CodeCache, default_root
from isola.emu.machine import Machine
from isola.emu.memory import DEFAULT_SIZE, FlatMemory
from isola.linux import binfmt
from isola.linux.abi.riscv64 import ABI
from isola.linux.kernel import GuestExit, GuestKilled, ImageReplaced, Kernel


class RunStats(NamedTuple):
    instructions: int
    blocks: int
    invalidations: int
    translate_s: float
    wall_s: float

    @property
    def mips(self) -> float:
        return self.instructions / self.wall_s / 1e6 if self.wall_s else 0.0


class Program:
    """Load `path` with `argv` and `envp` and get it ready to run (raises isola errors for bad programs)."""

    def __init__(
        self,
        path: str,
        argv: Sequence[str],
        envp: Sequence[str],
        *,
        sysroot: Path | None = None,
        strace: TextIO | None = None,
        memory_size: int = DEFAULT_SIZE,
    ) -> None:
        self.mem = FlatMemory(memory_size)
        self.aspace = binfmt.new_address_space(self.mem, ABI)
        self.sysroot = sysroot
        loaded = binfmt.load(self.aspace, path, argv, envp, abi=ABI, sysroot=sysroot)
        self.machine = Machine(self.mem, self._syscall, codecache=CodeCache(default_root()))
        self.cpu = self.machine.cpu
        self.kernel = Kernel(
            ABI,
            self.mem,
            self.aspace,
            self.cpu,
            exe=loaded.path,
            argv=[a.encode() if isinstance(a, str) else a for a in argv],
            sysroot=str(sysroot) if sysroot else None,
            strace=strace,
            flush_icache=self._flush_icache,
            loader=self._exec,
            pending=self.machine.pending,
        )
        self.aspace.set_brk_start(loaded.brk)
        self._start(loaded.entry, loaded.sp)

    # -- wiring to the kernel ----------------------------------------------------------------------------

    def _syscall(self, cpu: object) -> int:
        x = self.cpu.x
        return self.kernel.syscall(x[17], (x[10], x[11], x[12], x[13], x[14], x[15]))

    def _flush_icache(self, start: int, end: int) -> None:
        self.machine.translator.flush()

    def _exec(self, path: str, argv: Sequence[bytes], envp: Sequence[bytes], execfn: bytes) -> tuple[int, int]:
        loaded = binfmt.load(self.aspace, path, argv, envp, abi=ABI, sysroot=self.sysroot, execfn=execfn.decode())
        self.aspace.set_brk_start(loaded.brk)
        return loaded.entry, loaded.sp

    def _start(self, entry: int, sp: int) -> None:
        """The register state Linux gives a new image: everything zero but pc and sp."""
        cpu = self.cpu
        cpu.x[:] = [0] * 32
        cpu.f[:] = [0] * 32
        cpu.fcsr = 0
        cpu.reservation = None
        cpu.pc = entry
        cpu.x[2] = sp

    # -- running -----------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run to the end; return the guest's exit status. A guest killed by a signal raises GuestKilled."""
        machine, kernel, cpu = self.machine, self.kernel, self.cpu
        while True:
            try:
                machine.run()
                machine.pending[0] = False
                cpu.reservation = None  # a handler may run between LR and SC: the SC must then fail
                kernel.deliver_signals(cpu)
            except GuestExit as done:
                return done.status
            except ImageReplaced as new:
                machine.translator.flush()
                self._start(new.entry, new.sp)
            except GuestKilled:
                raise
            except Exception as exc:
                trap = machine.trap_of(exc)
                if trap is None:
                    raise
                kernel.fault(trap.signo, trap.addr, cpu)

    def run_timed(self) -> tuple[int, RunStats]:
        t0 = time.perf_counter()
        try:
            status = self.run()
        finally:
            wall = time.perf_counter() - t0
            self.machine.translator.codecache.save()
            t = self.machine.translator.stats
            self.stats = RunStats(self.cpu.instret, t.blocks, t.invalidations, t.translate_s, wall)
        return status, self.stats


def print_stats(stats: RunStats, out: TextIO = sys.stderr) -> None:
    out.write(
        f"isola-emu: {stats.instructions} instructions, {stats.blocks} blocks translated "
        f"({stats.translate_s * 1e3:.1f} ms), {stats.invalidations} invalidated, "
        f"{stats.wall_s:.3f} s, {stats.mips:.1f} MIPS (pid {os.getpid()})\n"
    )
