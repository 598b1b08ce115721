"""Signal dispositions, masks and delivery: the riscv64 frame is checked against Linux's layout, and a delivery
followed by rt_sigreturn must give back every register and the mask."""

from __future__ import annotations

import copy
import errno
import os
import random
import signal
import struct

import pytest

from isola.linux.abi.riscv64 import Rv64Cpu
from isola.linux.guest import PROT_READ, PROT_WRITE
from isola.linux.kernel import MASK64, GuestKilled, Kernel
from tests.unit.test_linux_support import NR, SCRATCH, STACK_TOP, Cpu, Scratch, call, make_kernel, signed

SA_SIGINFO = 0x4
SA_ONSTACK = 0x08000000
SA_RESTART = 0x10000000
SA_NODEFER = 0x40000000
SA_RESETHAND = 0x80000000
USR1, USR2, SEGV, TERM = signal.SIGUSR1, signal.SIGUSR2, signal.SIGSEGV, signal.SIGTERM
HANDLER = 0x20000
# Offsets in the riscv64 rt_sigframe (arch/riscv/kernel/signal.c, uapi ucontext/sigcontext), independent of the code
UC = 128
UC_STACK, UC_SIGMASK, UC_MCONTEXT = UC + 16, UC + 40, UC + 176
MC_FP = UC_MCONTEXT + 256
FRAME_SIZE = 128 + 176 + 256 + 528


def bit(sig: int) -> int:
    return 1 << (sig - 1)


def set_action(k: Kernel[Rv64Cpu], s: Scratch, sig: int, handler: int, flags: int = 0, mask: int = 0) -> None:
    assert call(k, "rt_sigaction", sig, s.put(struct.pack("<QQQ", handler, flags, mask)), 0, 8) == 0


def fill_registers(cpu: Cpu) -> None:
    rng = random.Random(7)
    for i in range(1, 32):
        cpu.x[i] = rng.getrandbits(64)
    cpu.x[2] = STACK_TOP - 0x1000 - 8  # not 16-aligned: the frame must be
    cpu.f[:] = [rng.getrandbits(64) for _ in range(32)]
    cpu.fcsr = 0b101_10101
    cpu.pc = 0x40000


def sigreturn(k: Kernel[Rv64Cpu], cpu: Cpu) -> None:
    """What isola-emu does on reaching the trampoline (`li a7, 139; ecall`): cpu.pc is the ecall during the
    call, the block then continues after it, and the pending flag brings it to deliver_signals."""
    assert cpu.x[1] == k.sigreturn_addr
    cpu.x[17] = 139
    cpu.pc = k.sigreturn_addr + 4
    k.pending[0] = False
    cpu.x[10] = k.syscall(NR["rt_sigreturn"], tuple(cpu.x[10:16]))
    cpu.pc = k.sigreturn_addr + 8
    assert k.pending[0]
    k.pending[0] = False
    k.deliver_signals(cpu)


def test_delivery_builds_linux_s_frame_and_sigreturn_restores_everything() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, HANDLER, SA_SIGINFO, bit(USR2))
    assert call(k, "rt_sigprocmask", 2, s.put(struct.pack("<Q", bit(signal.SIGHUP))), 0, 8) == 0
    fill_registers(cpu)
    before = copy.deepcopy(cpu)
    old_sp = cpu.x[2]
    assert call(k, "kill", os.getpid(), USR1) == 0
    k.deliver_signals(cpu)

    frame = cpu.x[2]
    assert cpu.pc == HANDLER and cpu.x[10] == USR1
    assert frame % 16 == 0 and frame + FRAME_SIZE <= old_sp and old_sp - frame < FRAME_SIZE + 16
    assert (cpu.x[11], cpu.x[12], cpu.x[1]) == (frame, frame + UC, k.sigreturn_addr)
    signo, err, code, pid, uid = struct.unpack("<iii4xiI", mem.read(frame, 24))
    assert (signo, err, code, pid, uid) == (USR1, 0, 0, os.getpid(), os.getuid())  # SI_USER from ourselves
    assert struct.unpack("<Q", mem.read(frame + UC_SIGMASK, 8))[0] == bit(signal.SIGHUP)
    regs = struct.unpack("<32Q", mem.read(frame + UC_MCONTEXT, 256))
    assert regs[0] == before.pc and list(regs[1:]) == before.x[1:]
    fp = struct.unpack("<32QI", mem.read(frame + MC_FP, 260))
    assert list(fp[:32]) == before.f and fp[32] == before.fcsr
    assert mem.read(frame + MC_FP + 516, 12) == bytes(12)  # reserved word and the END header
    assert struct.unpack("<QiiQ", mem.read(frame + UC_STACK, 24))[1] == 2  # SS_DISABLE: no altstack
    assert k.signals.blocked == bit(signal.SIGHUP) | bit(USR1) | bit(USR2)

    cpu.x[5:9] = [0, 0, 0, 0]  # the handler clobbers what it likes
    cpu.f[3] = 0
    cpu.fcsr = 0
    sigreturn(k, cpu)
    assert cpu.x == before.x and cpu.f == before.f and cpu.fcsr == before.fcsr and cpu.pc == before.pc
    assert k.signals.blocked == bit(signal.SIGHUP)


def test_the_pending_flag_asks_for_delivery_when_there_is_work() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)

    def raised() -> bool:
        was = k.pending[0]
        k.pending[0] = False
        return was

    set_action(k, s, USR1, HANDLER)
    call(k, "getpid")
    assert not raised()
    call(k, "rt_sigprocmask", 0, s.put(struct.pack("<Q", bit(USR1))), 0, 8)
    call(k, "kill", os.getpid(), USR1)
    assert not raised()  # blocked: nothing to do yet
    call(k, "rt_sigprocmask", 1, s.put(struct.pack("<Q", bit(USR1))), 0, 8)
    assert raised()
    k.deliver_signals(cpu)
    assert cpu.pc == HANDLER
    call(k, "getpid")
    assert not raised()


def test_a_handler_without_sa_siginfo_still_gets_the_frame_pointers() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, HANDLER)
    call(k, "tgkill", os.getpid(), os.getpid(), USR1)
    k.deliver_signals(cpu)
    assert cpu.x[11] == cpu.x[2] and cpu.x[12] == cpu.x[2] + UC
    assert struct.unpack("<iii", mem.read(cpu.x[2], 12)) == (USR1, 0, -6)  # SI_TKILL


def test_nodefer_and_resethand() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, HANDLER, SA_NODEFER | SA_RESETHAND)
    call(k, "kill", os.getpid(), USR1)
    k.deliver_signals(cpu)
    assert cpu.pc == HANDLER
    assert k.signals.blocked == 0  # SA_NODEFER: the signal is not blocked in its handler
    old = s.alloc(24)
    assert call(k, "rt_sigaction", USR1, 0, old, 8) == 0
    handler, flags, _ = struct.unpack("<QQQ", mem.read(old, 24))
    assert handler == 0 and flags & SA_RESETHAND  # back to SIG_DFL, as Linux leaves it
    call(k, "kill", os.getpid(), USR1)
    with pytest.raises(GuestKilled) as killed:
        k.deliver_signals(cpu)
    assert killed.value.sig == USR1 and killed.value.addr is None


def test_nested_delivery_stacks_frames() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, HANDLER)
    set_action(k, s, USR2, HANDLER + 0x100)
    fill_registers(cpu)
    before = copy.deepcopy(cpu)
    call(k, "kill", os.getpid(), USR2)
    call(k, "kill", os.getpid(), USR1)
    k.deliver_signals(cpu)
    assert cpu.pc == HANDLER + 0x100  # USR1's frame first, USR2's on top of it: USR2's handler runs first
    sigreturn(k, cpu)
    assert cpu.pc == HANDLER and cpu.x[10] == USR1
    sigreturn(k, cpu)
    assert cpu.x == before.x and cpu.pc == before.pc and k.signals.blocked == 0


def test_blocked_signals_wait_and_show_in_sigpending() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, HANDLER)
    old = s.alloc(8)
    assert call(k, "rt_sigprocmask", 0, s.put(struct.pack("<Q", bit(USR1) | bit(signal.SIGKILL))), old, 8) == 0
    assert struct.unpack("<Q", mem.read(old, 8))[0] == 0
    assert k.signals.blocked == bit(USR1)  # SIGKILL cannot be blocked
    call(k, "kill", os.getpid(), USR1)
    pc = cpu.pc
    k.deliver_signals(cpu)
    assert cpu.pc == pc
    pending = s.alloc(8)
    assert call(k, "rt_sigpending", pending, 8) == 0
    assert struct.unpack("<Q", mem.read(pending, 8))[0] == bit(USR1)
    assert call(k, "rt_sigprocmask", 1, s.put(struct.pack("<Q", bit(USR1))), 0, 8) == 0
    k.deliver_signals(cpu)
    assert cpu.pc == HANDLER
    assert call(k, "rt_sigprocmask", 7, s.put(struct.pack("<Q", 0)), 0, 8) == -errno.EINVAL
    assert call(k, "rt_sigprocmask", 0, 0, 0, 4) == -errno.EINVAL


def test_ignored_and_default_ignored_signals_vanish() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, 1)  # SIG_IGN
    call(k, "kill", os.getpid(), USR1)
    call(k, "kill", os.getpid(), signal.SIGCHLD)
    call(k, "kill", os.getpid(), signal.SIGWINCH)
    assert not k.signals.pending
    k.deliver_signals(cpu)
    assert cpu.pc == 0


def test_sigaction_validation_and_old_action() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, HANDLER, SA_RESTART, bit(TERM) | bit(signal.SIGKILL))
    old = s.alloc(24)
    assert call(k, "rt_sigaction", USR1, s.put(struct.pack("<QQQ", 0, 0, 0)), old, 8) == 0
    assert struct.unpack("<QQQ", mem.read(old, 24)) == (HANDLER, SA_RESTART, bit(TERM))
    act = s.put(struct.pack("<QQQ", HANDLER, 0, 0))
    assert call(k, "rt_sigaction", signal.SIGKILL, act, 0, 8) == -errno.EINVAL
    assert call(k, "rt_sigaction", 0, act, 0, 8) == -errno.EINVAL
    assert call(k, "rt_sigaction", 65, act, 0, 8) == -errno.EINVAL
    assert call(k, "rt_sigaction", USR1, act, 0, 16) == -errno.EINVAL


def test_default_terminate_raises_guest_killed_and_traces() -> None:
    k, _, cpu, trace = make_kernel()
    call(k, "kill", os.getpid(), TERM)
    with pytest.raises(GuestKilled) as killed:
        k.deliver_signals(cpu)
    assert killed.value.sig == TERM and str(killed.value) == "guest killed by SIGTERM" and not killed.value.core
    lines = trace.getvalue().splitlines()
    assert (
        lines[-2]
        == f"--- SIGTERM {{si_signo=SIGTERM, si_code=SI_USER, si_pid={os.getpid()}, si_uid={os.getuid()}}} ---"
    )
    assert lines[-1] == "+++ killed by SIGTERM +++"


def test_a_fault_without_handler_kills_with_the_address() -> None:
    k, _, cpu, trace = make_kernel()
    cpu.pc = 0x10234
    with pytest.raises(GuestKilled) as killed:
        k.fault(SEGV, 0x8, cpu)
    assert (killed.value.sig, killed.value.addr, killed.value.pc) == (SEGV, 0x8, 0x10234)
    assert str(killed.value) == "guest SIGSEGV at pc=0x10234 addr=0x8" and killed.value.core
    assert "--- SIGSEGV {si_signo=SIGSEGV, si_code=SEGV_MAPERR, si_addr=0x8} ---" in trace.getvalue()


def test_a_fault_reaches_a_handler_with_siginfo() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, SEGV, HANDLER, SA_SIGINFO)
    mem.map(0x3000000, 4096, PROT_READ)
    cpu.pc = 0x10234
    k.fault(SEGV, 0x3000010, cpu)  # a store to a read-only page
    frame = cpu.x[2]
    assert cpu.pc == HANDLER
    signo, _, code, addr = struct.unpack("<iii4xQ", mem.read(frame, 24))
    assert (signo, code, addr) == (SEGV, 2, 0x3000010)  # SEGV_ACCERR
    assert struct.unpack("<Q", mem.read(frame + UC_MCONTEXT, 8))[0] == 0x10234  # sigreturn re-runs the insn


def test_a_blocked_or_ignored_fault_still_kills() -> None:
    for setup in ("block", "ignore"):
        k, mem, cpu, _ = make_kernel()
        s = Scratch(mem)
        set_action(k, s, SEGV, HANDLER)
        if setup == "block":
            call(k, "rt_sigprocmask", 0, s.put(struct.pack("<Q", bit(SEGV))), 0, 8)
        else:
            set_action(k, s, SEGV, 1)
        with pytest.raises(GuestKilled):
            k.fault(SEGV, 0, cpu)


def test_alternate_stack() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    alt, size = SCRATCH + 0x80000, 0x10000
    old = s.alloc(24)
    assert call(k, "sigaltstack", s.put(struct.pack("<QiiQ", alt, 0, 0, size)), old, 0) == 0
    assert struct.unpack("<QiiQ", mem.read(old, 24)) == (0, 2, 0, 0)  # was SS_DISABLE
    assert call(k, "sigaltstack", s.put(struct.pack("<QiiQ", alt, 0, 0, 100)), 0, 0) == -errno.ENOMEM
    assert call(k, "sigaltstack", s.put(struct.pack("<QiiQ", alt, 7, 0, size)), 0, 0) == -errno.EINVAL
    set_action(k, s, USR1, HANDLER, SA_ONSTACK)
    fill_registers(cpu)
    before = copy.deepcopy(cpu)
    call(k, "kill", os.getpid(), USR1)
    k.deliver_signals(cpu)
    frame = cpu.x[2]
    assert alt < frame < alt + size and frame + FRAME_SIZE <= alt + size
    assert struct.unpack("<QiiQ", mem.read(frame + UC_STACK, 24)) == (alt, 0, 0, size)
    assert call(k, "sigaltstack", 0, old, 0) == 0
    assert struct.unpack("<QiiQ", mem.read(old, 24)) == (alt, 1, 0, size)  # SS_ONSTACK: we are on it
    assert call(k, "sigaltstack", s.put(struct.pack("<QiiQ", 0, 2, 0, 0)), 0, 0) == -errno.EPERM
    sigreturn(k, cpu)
    assert cpu.x == before.x
    assert call(k, "sigaltstack", s.put(struct.pack("<QiiQ", 0, 2, 0, 0)), old, 0) == 0
    assert struct.unpack("<QiiQ", mem.read(old, 24)) == (alt, 0, 0, size)


def test_a_bad_frame_on_sigreturn_kills() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, HANDLER)
    call(k, "kill", os.getpid(), USR1)
    k.deliver_signals(cpu)
    mem.write(cpu.x[2] + MC_FP + 516, b"\1")  # sc_extdesc.reserved must stay 0
    with pytest.raises(GuestKilled) as killed:
        sigreturn(k, cpu)
    assert killed.value.sig == SEGV
    cpu.x[2] = 0x2000000  # unmapped
    with pytest.raises(GuestKilled):
        k.syscall(NR["rt_sigreturn"], ())


def test_no_room_for_the_frame_kills() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, HANDLER)
    cpu.x[2] = 0x2000000
    call(k, "kill", os.getpid(), USR1)
    with pytest.raises(GuestKilled) as killed:
        k.deliver_signals(cpu)
    assert killed.value.sig == SEGV


@pytest.mark.parametrize("flags", [SA_RESTART, 0])
def test_an_interrupted_call_restarts_only_with_sa_restart(flags: int) -> None:
    k, mem, cpu, trace = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, HANDLER, flags)
    r, w = os.pipe()
    try:
        call(k, "kill", os.getpid(), USR1)  # pending as the call starts: it must not sleep past it
        cpu.pc = 0x5004  # the engine has stepped over the ecall at 0x5000
        cpu.x[10] = k.syscall(NR["read"], (r, SCRATCH, 10))
        assert signed(cpu.x[10]) == -errno.EINTR
        assert "read(" in trace.getvalue() and "= ? ERESTARTSYS" in trace.getvalue()
        k.deliver_signals(cpu)
        saved_pc, _, _, _, _, _, _, _, _, _, saved_a0 = struct.unpack("<11Q", mem.read(cpu.x[2] + UC_MCONTEXT, 88))
        if flags:
            assert (saved_pc, saved_a0) == (0x5000, r)  # back on the ecall with its first argument
        else:
            assert (saved_pc, saved_a0) == (0x5004, -errno.EINTR & MASK64)
    finally:
        os.close(r)
        os.close(w)


def test_a_pending_signal_does_not_stop_a_call_that_need_not_wait() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, HANDLER)
    r, w = os.pipe()
    try:
        os.write(w, b"data")
        call(k, "kill", os.getpid(), USR1)
        assert call(k, "read", r, s.alloc(8), 8) == 4  # Linux only interrupts a sleep
        assert call(k, "read", r, s.alloc(8), 8) == -errno.EINTR  # ... like this one
        assert call(k, "write", w, s.put(b"x"), 1) == 1
    finally:
        os.close(r)
        os.close(w)


def test_sigsuspend_returns_eintr_and_the_frame_keeps_the_old_mask() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, HANDLER, 0, bit(USR2))
    call(k, "rt_sigprocmask", 2, s.put(struct.pack("<Q", bit(USR1))), 0, 8)
    call(k, "kill", os.getpid(), USR1)
    assert call(k, "rt_sigsuspend", s.put(struct.pack("<Q", bit(TERM))), 8) == -errno.EINTR
    k.deliver_signals(cpu)
    assert cpu.pc == HANDLER
    assert struct.unpack("<Q", mem.read(cpu.x[2] + UC_SIGMASK, 8))[0] == bit(USR1)  # the mask before suspend
    assert k.signals.blocked == bit(TERM) | bit(USR1) | bit(USR2)  # the temporary one, plus the handler's
    sigreturn(k, cpu)
    assert k.signals.blocked == bit(USR1)


def test_signal_to_another_thread_group_fails() -> None:
    k, _, _, _ = make_kernel()
    assert call(k, "tgkill", os.getpid(), os.getpid() + 1, USR1) == -errno.ESRCH
    assert call(k, "kill", os.getpid(), 99) == -errno.EINVAL
    assert call(k, "kill", os.getpid(), 0) == 0  # the existence probe
    assert not k.signals.pending


def test_guest_memory_protection_is_what_frames_respect() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, HANDLER)
    mem.map(0x3000000, 0x2000, PROT_READ)  # a read-only "stack"
    cpu.x[2] = 0x3002000
    call(k, "kill", os.getpid(), USR1)
    with pytest.raises(GuestKilled):
        k.deliver_signals(cpu)
    mem.protect(0x3000000, 0x2000, PROT_READ | PROT_WRITE)
    call(k, "kill", os.getpid(), USR1)
    k.deliver_signals(cpu)
    assert cpu.pc == HANDLER
