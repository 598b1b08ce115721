"""Signals: dispositions, the blocked mask, the pending set, and delivery into guest handlers.

The guest's dispositions are mirrored onto the host process for the signals that can arrive from outside
(SIGINT from a terminal, SIGTERM from `kill`, SIGCHLD from a child, SIGPIPE from a write): a guest default is
the host default, so the host kernel itself kills, stops or ignores the emulator exactly as it would the real
program (and a parent's wait4 sees that); a guest SIG_IGN is SIG_IGN (so SIG_IGN'd SIGCHLD auto-reaps); a guest
handler is a Python handler that queues the signal here (a blocking system call meanwhile gets EINTR from the
host and ends with EINTR or a restart, see `Kernel.blocking`). The blocked mask is mirrored too, so a blocked
signal stays pending in the host kernel until the guest unblocks it.

Not mirrored are the synchronous signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP): the engine reports the
guest's faults through `fault()`, and a Python handler for a real fault of the interpreter would loop forever.
Signals the guest sends itself (raise, abort, kill(getpid())) and SIGPIPE after EPIPE are queued directly.

Delivery happens when the engine calls `deliver()`: a default action raises GuestKilled (terminate, core) or
stops the host process (stop signals: SIGSTOP to itself, so job control works); a handler gets the ABI's signal
frame, on the alternate stack if asked, with the mask and SA_* semantics of Linux. A Python handler cannot see
who sent a host signal, so its siginfo says SI_USER from pid 0, except while rt_sigsuspend waits (sigwaitinfo
gives the real one). Realtime signals are queued like standard ones: at most one instance pending per number.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import struct
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from isola.linux.abi import SigAction
from isola.linux.guest import GuestFault, SyscallError
from isola.linux.kernel import GuestKilled, s32

if TYPE_CHECKING:
    from isola.linux.kernel import Kernel

NSIG = 64
SIGRTMIN_KERNEL = 32
SIG_DFL, SIG_IGN = 0, 1
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2

SA_SIGINFO = 0x4
SA_RESTORER = 0x04000000
SA_ONSTACK = 0x08000000
SA_RESTART = 0x10000000
SA_NODEFER = 0x40000000
SA_RESETHAND = 0x80000000

SS_ONSTACK, SS_DISABLE, SS_AUTODISARM = 1, 2, 1 << 31

SI_USER, SI_KERNEL, SI_TKILL = 0, 0x80, -6
SEGV_MAPERR, SEGV_ACCERR = 1, 2
FAULT_CODES: dict[int, int] = {
    signal.SIGBUS: 1,
    signal.SIGILL: 1,
    signal.SIGTRAP: 1,
    signal.SIGFPE: 1,
}  # ADRALN ILLOPC BRKPT INTDIV

S = signal.Signals
CORE_SIGNALS = {
    S.SIGQUIT,
    S.SIGILL,
    S.SIGTRAP,
    S.SIGABRT,
    S.SIGBUS,
    S.SIGFPE,
    S.SIGSEGV,
    S.SIGXCPU,
    S.SIGXFSZ,
    S.SIGSYS,
}
IGNORE_SIGNALS = {S.SIGCHLD, S.SIGURG, S.SIGWINCH, S.SIGCONT}
STOP_SIGNALS = {S.SIGSTOP, S.SIGTSTP, S.SIGTTIN, S.SIGTTOU}
SYNCHRONOUS = {S.SIGSEGV, S.SIGBUS, S.SIGILL, S.SIGTRAP, S.SIGFPE, S.SIGSYS}
# Host signals whose disposition and mask follow the guest's (32 and 33 belong to the host's glibc).
MIRRORED = set(range(1, NSIG + 1)) - {S.SIGKILL, S.SIGSTOP, 32, 33} - (SYNCHRONOUS - {S.SIGSYS})
UNBLOCKABLE = 1 << (S.SIGKILL - 1) | 1 << (S.SIGSTOP - 1)

_STACK_T = struct.Struct("<Qi4xQ")
DEFAULT = SigAction(SIG_DFL, 0, 0)


def bit(sig: int) -> int:
    return 1 << (sig - 1)


def signal_name(sig: int) -> str:
    if sig >= SIGRTMIN_KERNEL:
        return f"SIGRT_{sig - SIGRTMIN_KERNEL}"
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def make_siginfo(sig: int, code: int, *, pid: int = 0, uid: int = 0, status: int = 0, addr: int | None = None) -> bytes:
    """A 128-byte siginfo_t (LP64): signo, errno, code, then the union at offset 16."""
    info = bytearray(128)
    struct.pack_into("<iii", info, 0, sig, 0, code)
    if addr is not None:
        struct.pack_into("<Q", info, 16, addr)
    else:
        struct.pack_into("<iIi", info, 16, pid, uid, status)
    return bytes(info)


def die_by_signal(sig: int) -> NoReturn:
    """End the emulator the way the guest died, so whoever waits for it (a shell, a guest's wait4) sees a death
    by `sig`. Core dumps are off: a core of the Python interpreter would help nobody (qemu does the same)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sig not in (S.SIGKILL, S.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # only reached for a signal whose default is not to terminate


def end_by_signal(killed: GuestKilled, tool: str, *, top: bool) -> NoReturn:
    """End an engine process whose guest a signal killed. The run as a whole (`top`) ends with 128 + N after
    one `tool: guest killed by SIGN` line (none for SIGPIPE, the quiet end of a pipeline's writer), as
    qemu-user reports it; a guest child forked inside dies by the signal itself, so that its guest parent sees
    what Linux would show, and says something only for a fault (where it happened)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    if killed.addr is not None or (top and killed.sig != S.SIGPIPE):
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"{tool}: {killed}\n")
            sys.stderr.flush()
    if not top:
        die_by_signal(killed.sig)
    os._exit(128 + killed.sig)


class Pending:
    """A signal waiting for delivery."""

    __slots__ = ("addr", "info")

    def __init__(self, info: bytes, addr: int | None = None) -> None:
        self.info = info  # siginfo for the handler
        self.addr = addr  # set for faults: the engine reports them


class Signals:
    def __init__(self, kernel: Kernel[Any], *, host: bool) -> None:
        self.k = kernel
        self.host = host
        self.actions: dict[int, SigAction] = {}
        self.blocked = 0
        self.pending: dict[int, Pending] = {}
        self.alt_sp = 0
        self.alt_size = 0
        self.alt_flags = SS_DISABLE
        self.saved_mask: int | None = None  # the mask to restore once a temporary one (sigsuspend...) is done
        self.restart_arg0: int | None = None  # an interrupted call to re-run if no handler forbids it
        self.resume_pc: int | None = None  # where rt_sigreturn said the guest continues
        # PID 1 of a PID namespace (a process VM's first process): the host kernel drops every signal whose
        # disposition is the default there, so the personality carries out those default deaths itself.
        self.namespace_init = host and os.getpid() == 1
        if host:
            for sig in MIRRORED:
                # An ignored signal stays ignored across exec; Python itself ignores SIGPIPE and SIGXFSZ.
                if signal.getsignal(sig) == signal.SIG_IGN and sig not in (S.SIGPIPE, S.SIGXFSZ):
                    self.actions[sig] = SigAction(SIG_IGN, 0, 0)
                self._mirror(sig)
            self.blocked = sum(bit(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))

    # -- state -----------------------------------------------------------------------------------------------

    def action(self, sig: int) -> SigAction:
        return self.actions.get(sig, DEFAULT)

    def is_blocked(self, sig: int) -> bool:
        return bool(self.blocked & bit(sig))

    def _ignored(self, sig: int, act: SigAction) -> bool:
        return act.handler == SIG_IGN or (act.handler == SIG_DFL and sig in IGNORE_SIGNALS)

    def _mirror(self, sig: int) -> None:
        if not self.host or sig not in MIRRORED:
            return
        handler = self.action(sig).handler
        wanted: Any = signal.SIG_IGN if handler == SIG_IGN else signal.SIG_DFL if handler == SIG_DFL else self._on_host
        if handler == SIG_DFL and self.namespace_init and sig not in IGNORE_SIGNALS | STOP_SIGNALS:
            wanted = self._on_host
        if signal.getsignal(sig) != wanted:
            signal.signal(sig, wanted)

    def _set_blocked(self, mask: int) -> None:
        self.blocked = mask & ~UNBLOCKABLE & ((1 << NSIG) - 1)
        if self.host:
            signal.pthread_sigmask(signal.SIG_SETMASK, {s for s in MIRRORED if self.blocked & bit(s)})

    def _on_host(self, signum: int, frame: FrameType | None) -> None:
        """A mirrored host signal for which the guest has a handler (or, in a namespace init, a default action
        that kills): queue it and ask for delivery. (It never raises: a blocking call sees EINTR from the host
        kernel itself, see Kernel.blocking.)"""
        self.queue(signum, make_siginfo(signum, SI_USER))
        self.k.pending[0] = True

    def queue(self, sig: int, info: bytes, addr: int | None = None) -> None:
        if not self.is_blocked(sig) and self._ignored(sig, self.action(sig)):
            return  # Linux drops an ignored signal when it is generated, unless it is blocked
        self.pending.setdefault(sig, Pending(info, addr))

    def send_self(self, sig: int, code: int = SI_USER) -> None:
        self.queue(sig, make_siginfo(sig, code, pid=os.getpid(), uid=os.getuid()))

    def wants_delivery(self) -> bool:
        """Is there work for `deliver()`?"""
        return (
            self.resume_pc is not None
            or self.restart_arg0 is not None
            or self.saved_mask is not None
            or self.interrupt_pending()
        )

    def interrupt_pending(self) -> bool:
        """Is a signal pending that would act if the guest returned now? (It must not sleep past it.)"""
        return any(not self.is_blocked(s) and not self._ignored(s, self.action(s)) for s in self.pending)

    def host_pending(self) -> int:
        return sum(bit(s) for s in signal.sigpending()) if self.host else 0

    def before_fork(self) -> None:
        """In a namespace init, hold every mirrored signal blocked across fork: the child must not take one
        with the parent's stand-ins for default actions before it has the host's own (the host kernel keeps
        it pending for the child meanwhile)."""
        if self.namespace_init:
            signal.pthread_sigmask(signal.SIG_BLOCK, MIRRORED)

    def after_fork_in_parent(self) -> None:
        if self.namespace_init:
            self._set_blocked(self.blocked)

    def after_fork(self) -> None:
        self.pending.clear()
        if self.namespace_init:  # the child is an ordinary process: the host's default actions work again
            self.namespace_init = False
            for sig in MIRRORED:
                self._mirror(sig)
            self._set_blocked(self.blocked)

    def exec_reset(self) -> None:
        """execve: handlers revert to the default (the code is gone), ignores stay; the alternate stack goes."""
        for sig, act in list(self.actions.items()):
            self.actions[sig] = SigAction(SIG_IGN, 0, 0) if act.handler == SIG_IGN else DEFAULT
            self._mirror(sig)
        self.alt_sp, self.alt_size, self.alt_flags = 0, 0, SS_DISABLE

    # -- temporary masks (rt_sigsuspend, ppoll, pselect6) ----------------------------------------------------

    def set_temporary_mask(self, ptr: int, size: int) -> None:
        if size != 8:
            raise SyscallError(errno.EINVAL)
        mask = self.k.read_u64(ptr)
        self.saved_mask = self.blocked
        self._set_blocked(mask)

    def end_temporary_mask(self) -> None:
        if self.saved_mask is not None:
            self._set_blocked(self.saved_mask)
            self.saved_mask = None

    # -- delivery --------------------------------------------------------------------------------------------

    def _next(self) -> int | None:
        ready = [s for s in self.pending if not self.is_blocked(s)]
        if not ready:
            return None
        sync = [s for s in ready if s in SYNCHRONOUS]
        return min(sync or ready)

    def deliver(self, cpu: Any) -> None:
        abi = self.k.abi
        if self.resume_pc is not None:
            abi.set_program_counter(cpu, self.resume_pc)
            self.resume_pc = None
        restart = self.restart_arg0
        self.restart_arg0 = None
        while (sig := self._next()) is not None:
            item = self.pending.pop(sig)
            act = self.action(sig)
            if self._ignored(sig, act):
                continue
            if act.handler == SIG_DFL:
                if sig in STOP_SIGNALS:
                    if self.host:
                        os.kill(os.getpid(), signal.SIGSTOP)
                    continue
                if self.k.trace:
                    self.k.trace.signal(sig, item.info)
                    self.k.trace.killed(sig)
                pc = abi.program_counter(cpu) if item.addr is not None else None
                raise GuestKilled(sig, addr=item.addr, pc=pc)
            if restart is not None:
                if act.flags & SA_RESTART:
                    abi.rewind_syscall(cpu, restart)
                restart = None
            self._run_handler(cpu, sig, act, item)
        if restart is not None:  # interrupted, but nothing ran: the call resumes unseen, as on Linux
            abi.rewind_syscall(cpu, restart)
        self.end_temporary_mask()

    def _run_handler(self, cpu: Any, sig: int, act: SigAction, item: Pending) -> None:
        k = self.k
        sp = k.abi.stack_pointer(cpu)
        uc_stack = self._pack_altstack(sp)
        top = sp
        if act.flags & SA_ONSTACK and self.alt_size and not self._on_altstack(sp):
            top = self.alt_sp + self.alt_size
            if self.alt_flags & SS_AUTODISARM:
                self.alt_sp, self.alt_size, self.alt_flags = 0, 0, SS_DISABLE
        mask = self.saved_mask if self.saved_mask is not None else self.blocked
        self.saved_mask = None
        restorer = act.restorer if act.flags & SA_RESTORER else k.sigreturn_addr
        if k.trace:
            k.trace.signal(sig, item.info)
        try:
            k.abi.setup_signal_frame(
                k.mem, cpu, stack_top=top, sig=sig, siginfo=item.info, uc_stack=uc_stack, mask=mask,
                handler=act.handler, restorer=restorer,
            )  # fmt: skip
        except GuestFault:
            raise GuestKilled(signal.SIGSEGV) from None  # no room for the frame: Linux forces SIGSEGV
        self._set_blocked(self.blocked | act.mask | (0 if act.flags & SA_NODEFER else bit(sig)))
        if act.flags & SA_RESETHAND:
            self.actions[sig] = act._replace(handler=SIG_DFL)
            self._mirror(sig)

    def fault(self, sig: int, addr: int, cpu: Any, code: int | None = None) -> None:
        """A fault cannot be blocked or ignored: if it is, Linux resets it to the default action (death)."""
        if self.is_blocked(sig) or self.action(sig).handler == SIG_IGN:
            self.actions[sig] = DEFAULT
            self._set_blocked(self.blocked & ~bit(sig))
        if code is not None:
            pass
        elif sig == signal.SIGSEGV:
            code = SEGV_MAPERR if self.k.mem.prot_at(addr) is None else SEGV_ACCERR
        else:
            code = FAULT_CODES.get(sig, SI_KERNEL)
        self.pending[sig] = Pending(make_siginfo(sig, code, addr=addr), addr)
        self.deliver(cpu)

    # -- the alternate stack ---------------------------------------------------------------------------------

    def _on_altstack(self, sp: int) -> bool:
        if self.alt_flags & SS_AUTODISARM:
            return False
        return self.alt_sp < sp <= self.alt_sp + self.alt_size

    def _pack_altstack(self, sp: int) -> bytes:
        flags = SS_DISABLE if not self.alt_size else SS_ONSTACK if self._on_altstack(sp) else 0
        flags |= self.alt_flags & SS_AUTODISARM
        return _STACK_T.pack(self.alt_sp, s32(flags), self.alt_size)

    def _set_altstack(self, data: bytes, sp: int) -> None:
        ss_sp, flags, size = _STACK_T.unpack(data)
        flags &= 0xFFFFFFFF
        if self._on_altstack(sp):
            raise SyscallError(errno.EPERM)
        mode = flags & ~SS_AUTODISARM
        if mode not in (0, SS_ONSTACK, SS_DISABLE):
            raise SyscallError(errno.EINVAL)
        if mode == SS_DISABLE:
            ss_sp = size = 0
        elif size < self.k.abi.minsigstksz:
            raise SyscallError(errno.ENOMEM)
        self.alt_sp, self.alt_size, self.alt_flags = ss_sp, size, flags

    # -- system calls ----------------------------------------------------------------------------------------

    def sys_rt_sigaction(self, sig: int, act: int, oldact: int, setsize: int) -> int:
        k = self.k
        sig = s32(sig)
        if setsize != 8 or not 1 <= sig <= NSIG:
            raise SyscallError(errno.EINVAL)
        old = self.action(sig)
        if act:
            if sig in (S.SIGKILL, S.SIGSTOP):
                raise SyscallError(errno.EINVAL)
            new = k.abi.unpack_sigaction(k.mem.read(act, k.abi.sigaction_size))
            new = new._replace(mask=new.mask & ~UNBLOCKABLE)
            self.actions[sig] = new
            if self._ignored(sig, new):
                self.pending.pop(sig, None)
            self._mirror(sig)
        if oldact:
            k.mem.write(oldact, k.abi.pack_sigaction(old))
        return 0

    def sys_rt_sigprocmask(self, how: int, new: int, old: int, setsize: int) -> int:
        if setsize != 8:
            raise SyscallError(errno.EINVAL)
        previous = self.blocked
        if new:
            mask = self.k.read_u64(new)
            how = s32(how)
            if how == SIG_BLOCK:
                self._set_blocked(self.blocked | mask)
            elif how == SIG_UNBLOCK:
                self._set_blocked(self.blocked & ~mask)
            elif how == SIG_SETMASK:
                self._set_blocked(mask)
            else:
                raise SyscallError(errno.EINVAL)
        if old:
            self.k.write_int(old, previous, 8)
        return 0

    def sys_rt_sigpending(self, out: int, setsize: int) -> int:
        if setsize > 8:
            raise SyscallError(errno.EINVAL)
        pending = (sum(bit(s) for s in self.pending) | self.host_pending()) & self.blocked
        self.k.mem.write(out, pending.to_bytes(8, "little")[:setsize])
        return 0

    def sys_rt_sigsuspend(self, mask: int, setsize: int) -> int:
        """Wait, under a temporary mask, for a signal that acts. The host's mirrored signals are blocked and
        collected with sigwaitinfo, so none can slip in between the check and the wait."""
        self.set_temporary_mask(mask, setsize)
        self.suspend()

    def suspend(self) -> NoReturn:
        """Sleep until a signal that acts is pending, then fail with EINTR (rt_sigsuspend, and pause(2) of the
        ABIs that have it, which waits under the mask in force)."""
        while not self.interrupt_pending():
            waited = {s for s in MIRRORED if not self.is_blocked(s)}
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
            try:
                if self.interrupt_pending():
                    break
                info = signal.sigwaitinfo(waited)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            sig = info.si_signo
            self.queue(sig, make_siginfo(sig, info.si_code, pid=info.si_pid, uid=info.si_uid, status=info.si_status))
        raise SyscallError(errno.EINTR)

    def sys_rt_sigreturn(self) -> int:
        k = self.k
        cpu = k.cpu
        try:
            restored = k.abi.restore_signal_frame(k.mem, cpu)
        except (GuestFault, SyscallError):
            raise GuestKilled(signal.SIGSEGV) from None
        self.resume_pc = k.abi.program_counter(cpu)  # for an engine that continues after the ecall regardless
        self._set_blocked(restored.mask)
        with contextlib.suppress(SyscallError):  # Linux ignores a uc_stack it cannot apply
            self._set_altstack(restored.stack, k.abi.stack_pointer(cpu))
        return restored.result

    def sys_sigaltstack(self, new: int, old: int) -> int:
        k = self.k
        sp = k.abi.stack_pointer(k.cpu)
        previous = self._pack_altstack(sp)
        if new:
            self._set_altstack(k.mem.read(new, _STACK_T.size), sp)
        if old:
            k.mem.write(old, previous)
        return 0

    def sys_kill(self, pid: int, sig: int) -> int:
        pid, sig = s32(pid), s32(sig)
        if not 0 <= sig <= NSIG:
            raise SyscallError(errno.EINVAL)
        if pid == os.getpid():
            if sig:
                self.send_self(sig)
            return 0
        os.kill(pid, sig)  # other processes, process groups (ourselves included: the host delivers that)
        return 0

    def sys_tkill(self, tid: int, sig: int) -> int:
        return self.sys_tgkill(tid, tid, sig)

    def sys_tgkill(self, tgid: int, tid: int, sig: int) -> int:
        """Every process here has one thread, whose tid is its pid."""
        tgid, tid, sig = s32(tgid), s32(tid), s32(sig)
        if tgid <= 0 or tid <= 0 or not 0 <= sig <= NSIG:
            raise SyscallError(errno.EINVAL)
        if tgid != tid:
            raise SyscallError(errno.ESRCH)
        if tid == os.getpid():
            if sig:
                self.send_self(sig, SI_TKILL)
            return 0
        os.kill(tid, sig)
        return 0
