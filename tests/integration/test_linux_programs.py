"""Small riscv64 programs, assembled here, run on the emulator with this personality: signal frames built and
returned from by real guest code, faults, fork/wait/pipes. Each runs in a forked child (the kernel takes over
the process's signal dispositions) that reports through a pipe."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from isola.linux.kernel import GuestKilled
from tests.integration.test_linux_process import report, run_child

AS, LD = "riscv64-linux-gnu-as", "riscv64-linux-gnu-ld"

pytestmark = pytest.mark.skipif(
    not (shutil.which(AS) and shutil.which(LD)),
    reason="needs riscv64-linux-gnu-as and -ld (binutils-riscv64-linux-gnu)",
)

SIGNAL_HANDLER = """
.globl _start
_start:
  li a0, 10                 # rt_sigaction(SIGUSR1, &act, NULL, 8)
  la a1, act
  li a2, 0
  li a3, 8
  li a7, 134
  ecall
  li a7, 172                # getpid
  ecall
  li s2, 0x1234             # a callee-saved register the handler clobbers
  li a1, 10                 # kill(getpid(), SIGUSR1): the handler runs when the call returns
  li a7, 129
  ecall
  bnez a0, bad
  li t0, 0x1234
  bne s2, t0, bad           # sigreturn gave s2 back
  la t0, count
  ld a0, 0(t0)              # exit(number of handler runs)
  li a7, 94
  ecall
bad:
  li a0, 99
  li a7, 94
  ecall
handler:
  li s2, 0
  la t0, count
  ld t1, 0(t0)
  addi t1, t1, 1
  sd t1, 0(t0)
  ret                       # to the kernel's sigreturn trampoline
.data
.align 3
act: .dword handler, 0, 0
count: .dword 0
"""

SEGV_HANDLER = """
.globl _start
_start:
  li a0, 11                 # rt_sigaction(SIGSEGV, {handler, SA_SIGINFO}, NULL, 8)
  la a1, act
  li a2, 0
  li a3, 8
  li a7, 134
  ecall
  li s3, 0x55
  li t1, 0x10
  ld t2, 0(t1)              # faults at 0x10; the handler skips this load
  li t0, 0x99
  bne s3, t0, bad           # ... and set s3 through the ucontext
  li a0, 7
  li a7, 94
  ecall
bad:
  li a0, 9
  li a7, 94
  ecall
handler:                    # a0 = sig, a1 = &siginfo, a2 = &ucontext
  ld t0, 16(a1)             # si_addr
  li t1, 0x10
  bne t0, t1, bad
  ld t0, 176(a2)            # uc_mcontext.sc_regs.pc
  addi t0, t0, 4
  sd t0, 176(a2)
  li t0, 0x99
  sd t0, 176+19*8(a2)       # sc_regs.s3 (x19)
  ret
.data
.align 3
act: .dword handler, 4, 0
"""

UNHANDLED_FAULT = """
.globl _start
_start:
  li t1, 0x20
  sd zero, 0(t1)
"""

FORK_PIPE_WAIT = """
.globl _start
_start:
  la a0, fds                # pipe2(fds, 0)
  li a1, 0
  li a7, 59
  ecall
  li a0, 17                 # clone(SIGCHLD, 0, 0, 0, 0): fork
  li a1, 0
  li a2, 0
  li a3, 0
  li a4, 0
  li a7, 220
  ecall
  beqz a0, child
  mv s1, a0
  la t0, fds                # read(fds[0], buf, 2)
  lw a0, 0(t0)
  la a1, buf
  li a2, 2
  li a7, 63
  ecall
  li t0, 2
  bne a0, t0, bad
  mv a0, s1                 # wait4(child, &status, 0, NULL)
  la a1, status
  li a2, 0
  li a3, 0
  li a7, 260
  ecall
  bne a0, s1, bad
  la t0, status
  lw a0, 0(t0)
  srli a0, a0, 8            # WEXITSTATUS, plus what the child wrote
  la t0, buf
  lbu t1, 0(t0)
  add a0, a0, t1
  li a7, 94
  ecall
child:
  la t0, fds                # write(fds[1], "hi", 2); exit(3)
  lw a0, 4(t0)
  la a1, msg
  li a2, 2
  li a7, 64
  ecall
  li a0, 3
  li a7, 94
  ecall
bad:
  li a0, 99
  li a7, 94
  ecall
.data
.align 3
fds: .word 0, 0
status: .word 0
buf: .byte 0, 0
msg: .ascii "hi"
"""


def build(tmp_path: Path, name: str, source: str) -> Path:
    src, obj, elf = tmp_path / f"{name}.s", tmp_path / f"{name}.o", tmp_path / name
    src.write_text(source)
    subprocess.run([AS, "-march=rv64gc", "-o", str(obj), str(src)], check=True, capture_output=True)
    subprocess.run([LD, "-static", "--no-relax", "-o", str(elf), str(obj)], check=True, capture_output=True)
    return elf


def run(elf: Path) -> Any:
    """Run the program in a child; report its exit status, or how it was killed."""

    def body(out: int) -> int:
        from isola.emu.program import Program

        top = os.getpid()
        program = Program(str(elf), [str(elf)], [])
        out = program.kernel.reserve_fd(out)
        try:
            status = program.run()
        except GuestKilled as killed:
            report(out, ["killed", killed.sig, killed.addr, killed.pc])
            return 0
        if os.getpid() != top:  # a process the guest forked: it ends as the guest's child would
            os._exit(status)
        report(out, ["exit", status])
        return 0

    status, result = run_child(body)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return result


def test_a_handler_runs_and_sigreturn_restores_the_registers(tmp_path: Path) -> None:
    assert run(build(tmp_path, "sig", SIGNAL_HANDLER)) == ["exit", 1]


def test_a_segv_handler_can_repair_the_context(tmp_path: Path) -> None:
    assert run(build(tmp_path, "segv", SEGV_HANDLER)) == ["exit", 7]


def test_an_unhandled_fault_kills_with_pc_and_address(tmp_path: Path) -> None:
    kind, sig, addr, pc = run(build(tmp_path, "fault", UNHANDLED_FAULT))
    assert (kind, sig, addr) == ("killed", 11, 0x20) and pc > 0x10000


def test_fork_pipe_and_wait(tmp_path: Path) -> None:
    assert run(build(tmp_path, "fork", FORK_PIPE_WAIT)) == ["exit", 3 + ord("h")]
