"""Processes: fork, execve, wait, exit, and the per-thread bookkeeping of a process that has exactly one thread.

fork is `os.fork()` of the whole emulator: guest memory is a private mapping, so the child gets a copy-on-write
copy of it, as fork(2) gives the guest. clone() with CLONE_VFORK (vfork, posix_spawn) is served the same way,
since the child only execs or exits; the parent does not wait for that, and the child's writes to the
"shared" memory stay its own (posix_spawn's error report among them, as under qemu-user); and whatever exit
signal clone() names, the host tells the parent with SIGCHLD. Threads (CLONE_THREAD, or CLONE_VM without
CLONE_VFORK) are not supported: clone returns ENOSYS, which pthread_create passes on to its caller. clone3 is
not served (ENOSYS), so glibc falls back to clone; nor is rseq, which needs the kernel to move a thread's pc
on preemption: glibc then runs without it, as under qemu-user.

execve keeps the process and replaces the program: after the checks that let a failing execve return an error
(ENOENT, EACCES, ENOEXEC for a foreign or non-ELF file; `#!` scripts are resolved here as binfmt_script does),
the close-on-exec descriptors are closed, handlers reset, the address space cleared and the new image loaded
by the engine's loader; ImageReplaced then tells the engine to start over at the new entry point.

futex with one thread: a wait on a changed value fails with EAGAIN; on an unchanged one nobody else can wake
it, so it sleeps until its timeout (ETIMEDOUT) or, without one, until a signal (EINTR), as Linux would.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import stat
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from isola.errors import IsolaError
from isola.linux.guest import GuestFault, SyscallError
from isola.linux.kernel import GuestExit, GuestKilled, ImageReplaced, host_sleep_until, libc, s32

if TYPE_CHECKING:
    from isola.linux.kernel import Kernel

CSIGNAL = 0xFF
CLONE_VM = 0x100
CLONE_VFORK = 0x4000
CLONE_THREAD = 0x10000
CLONE_SETTLS = 0x80000
CLONE_PARENT_SETTID = 0x100000
CLONE_CHILD_CLEARTID = 0x200000
CLONE_CHILD_SETTID = 0x1000000
# Flags fork can honour: the rest (namespaces, CLONE_PIDFD, sharing of files/fs/sighand) cannot be with fork.
CLONE_FORKABLE = CSIGNAL | CLONE_VM | CLONE_VFORK | CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID
CLONE_FORKABLE |= CLONE_CHILD_SETTID

FUTEX_WAIT, FUTEX_WAKE, FUTEX_REQUEUE, FUTEX_CMP_REQUEUE, FUTEX_WAKE_OP = 0, 1, 3, 4, 5
FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET = 9, 10
FUTEX_PRIVATE_FLAG, FUTEX_CLOCK_REALTIME = 128, 256
ROBUST_LIST_HEAD_SIZE = 24
RUSAGE_SIZE = 144
MAX_ARG_STRLEN = 32 * 4096
MAX_ARG_STRINGS = 0x7FFFFFFF
MAX_SCRIPT_DEPTH = 4
ELF_HEADER = struct.Struct("<4sBBBBB7xHHIQQQIHHHHHH")
ET_EXEC, ET_DYN = 2, 3

# prctl options (<linux/prctl.h>)
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE = 1, 2, 3, 4
PR_SET_NAME, PR_GET_NAME, PR_CAPBSET_READ = 15, 16, 23
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS = 36, 37, 38, 39
TASK_COMM_LEN = 16
# The host's own answer is the guest's for these (they act on the process, which is shared).
_PRCTL_HOST = {PR_SET_PDEATHSIG, PR_CAPBSET_READ, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS}

MEMBARRIER_CMD_QUERY = 0
# GLOBAL, PRIVATE_EXPEDITED and its REGISTER: with one thread there is nothing to order.
MEMBARRIER_SUPPORTED = 1 | 8 | 16


class Process:
    def __init__(self, kernel: Kernel[Any]) -> None:
        self.k = kernel
        self.clear_child_tid = 0
        self.robust_list = 0
        self.name = os.path.basename(os.fsencode(kernel.exe))[: TASK_COMM_LEN - 1]
        self.dumpable = 1

    # -- exit ------------------------------------------------------------------------------------------------

    def sys_exit(self, status: int) -> int:
        raise GuestExit(status & 0xFF)

    def sys_exit_group(self, status: int) -> int:
        raise GuestExit(status & 0xFF)

    # -- fork ------------------------------------------------------------------------------------------------

    def sys_clone(self, a0: int, a1: int, a2: int, a3: int, a4: int) -> int:
        k = self.k
        args = dict(zip(k.abi.clone_args, (a0, a1, a2, a3, a4), strict=True))
        flags = args["flags"]
        if flags & CLONE_THREAD or (flags & CLONE_VM and not flags & CLONE_VFORK):
            raise SyscallError(errno.ENOSYS)
        if flags & ~CLONE_FORKABLE & 0xFFFFFFFF:
            raise SyscallError(errno.EINVAL)
        if k.trace:
            k.trace.flush()
        k.before_fork()
        try:
            pid = os.fork()
        except OSError:
            k.after_fork_in_parent()
            raise
        if pid == 0:
            k.after_fork()
            tls = args["tls"] if flags & CLONE_SETTLS else None
            k.abi.fork_child(k.cpu, stack=args["stack"], tls=tls)
            if flags & CLONE_CHILD_SETTID:
                k.write_int(args["child_tid"], os.getpid())
            if flags & CLONE_CHILD_CLEARTID:
                self.clear_child_tid = args["child_tid"]
            return 0
        k.after_fork_in_parent()
        if k.trace:
            k.trace.forked()
        if flags & CLONE_PARENT_SETTID:
            k.write_int(args["parent_tid"], pid)
        return pid

    def sys_wait4(self, pid: int, wstatus: int, options: int, rusage: int) -> int:
        """Status words pass through unchanged, and struct rusage is the same on both sides (LP64)."""
        k = self.k
        status = ctypes.c_int(0)
        usage = ctypes.create_string_buffer(RUSAGE_SIZE)
        pid, options = s32(pid), s32(options)
        ready = self._child_waitable(pid, options)
        child = k.blocking(libc, "wait4", pid, ctypes.byref(status), options, usage, restartable=True, ready=ready)
        if child > 0:
            if wstatus:
                k.write_int(wstatus, status.value)
            if rusage:
                k.mem.write(rusage, usage.raw)
        return child

    @staticmethod
    def _child_waitable(pid: int, options: int) -> Callable[[], bool]:
        """For Kernel.blocking: would wait4(pid, options) return without sleeping? waitid can look (WNOWAIT)
        without reaping."""
        if pid > 0:
            idtype, ident = os.P_PID, pid
        elif pid == -1:
            idtype, ident = os.P_ALL, 0
        else:
            idtype, ident = os.P_PGID, -pid if pid < -1 else os.getpgid(0)
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT | options & (os.WCONTINUED | 0xC0000000)  # __WALL, __WCLONE
        flags |= os.WSTOPPED if options & os.WUNTRACED else 0

        def ready() -> bool:
            if options & os.WNOHANG:
                return True
            try:
                return os.waitid(idtype, ident, flags) is not None
            except ChildProcessError:
                return True  # wait4 fails at once with ECHILD

        return ready

    # -- exec ------------------------------------------------------------------------------------------------

    def _strings(self, addr: int) -> list[bytes]:
        """A NULL-terminated array of C strings (argv, envp)."""
        result: list[bytes] = []
        k = self.k
        while addr and len(result) < MAX_ARG_STRINGS:
            ptr = k.read_u64(addr + 8 * len(result))
            if not ptr:
                return result
            try:
                result.append(k.mem.read_cstring(ptr, MAX_ARG_STRLEN))
            except GuestFault:
                if k.mem.prot_at(ptr) is not None:
                    raise SyscallError(errno.E2BIG) from None
                raise
        return result

    def _check_executable(self, host: bytes) -> bytes:
        """The first bytes of an executable file, or the errno execve fails with."""
        info = os.stat(host)
        if not stat.S_ISREG(info.st_mode) or not os.access(host, os.X_OK):
            raise SyscallError(errno.EACCES)
        with open(host, "rb") as f:
            return f.read(256)

    def _check_elf(self, head: bytes) -> None:
        if len(head) < ELF_HEADER.size:
            raise SyscallError(errno.ENOEXEC)
        magic, cls, data, _, _, _, e_type, machine, *_ = ELF_HEADER.unpack_from(head)
        if magic != b"\x7fELF" or cls != 2 or data != 1 or e_type not in (ET_EXEC, ET_DYN):
            raise SyscallError(errno.ENOEXEC)
        if machine != self.k.abi.elf_machine:
            raise SyscallError(errno.ENOEXEC)

    def sys_execve(self, path: int, argv: int, envp: int) -> int:
        k = self.k
        filename = execfn = k.cstring(path)
        args = self._strings(argv)
        env = self._strings(envp)
        host = k.host_path(filename)
        for _ in range(MAX_SCRIPT_DEPTH + 1):
            head = self._check_executable(host)
            if not head.startswith(b"#!"):
                self._check_elf(head)
                break
            # binfmt_script: "#!interpreter [one argument]" runs the interpreter on the script's path.
            line = head[2:].split(b"\n", 1)[0].strip(b" \t")
            if not line:
                raise SyscallError(errno.ENOEXEC)
            interp, _, optional = line.replace(b"\t", b" ").partition(b" ")
            optional = optional.strip(b" ")
            args = [interp, *([optional] if optional else []), filename, *args[1:]]
            filename = interp
            host = k.host_path(interp)
        else:
            raise SyscallError(errno.ELOOP)
        if k.loader is None:
            raise SyscallError(errno.ENOSYS)
        # The point of no return: from here a failure kills the process, as it does on Linux.
        k.files.close_on_exec()
        k.signals.exec_reset()
        k.mm.clear()
        try:
            entry, sp = k.loader(os.fsdecode(host), args, env, execfn)
        except (IsolaError, SyscallError, OSError, GuestFault):
            raise GuestKilled(signal.SIGSEGV) from None
        k.exe = os.path.abspath(os.fsdecode(host))
        k.argv = args
        self.name = os.path.basename(host)[: TASK_COMM_LEN - 1]
        self.clear_child_tid = self.robust_list = 0
        k.sigreturn_addr = k.map_sigreturn_page()
        raise ImageReplaced(entry, sp)

    # -- identity of the (only) thread -----------------------------------------------------------------------

    def sys_getpid(self) -> int:
        return os.getpid()

    def sys_getppid(self) -> int:
        return os.getppid()

    def sys_gettid(self) -> int:
        return os.getpid()

    def sys_set_tid_address(self, tidptr: int) -> int:
        self.clear_child_tid = tidptr
        return os.getpid()

    def sys_set_robust_list(self, head: int, length: int) -> int:
        if length != ROBUST_LIST_HEAD_SIZE:
            raise SyscallError(errno.EINVAL)
        self.robust_list = head
        return 0

    def sys_futex(self, uaddr: int, op: int, val: int, timeout: int, uaddr2: int, val3: int) -> int:
        k = self.k
        cmd = op & ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
        if uaddr % 4:
            raise SyscallError(errno.EINVAL)
        if cmd in (FUTEX_WAIT, FUTEX_WAIT_BITSET):
            if cmd == FUTEX_WAIT_BITSET and not val3 & 0xFFFFFFFF:
                raise SyscallError(errno.EINVAL)
            if struct.unpack("<I", k.mem.read(uaddr, 4))[0] != val & 0xFFFFFFFF:
                raise SyscallError(errno.EAGAIN)
            self._futex_sleep(cmd, op, timeout)
        if cmd in (FUTEX_WAKE, FUTEX_WAKE_BITSET, FUTEX_REQUEUE):
            k.mem.read(uaddr, 4)
            return 0  # there is no other thread to wake
        if cmd == FUTEX_CMP_REQUEUE:
            if struct.unpack("<I", k.mem.read(uaddr, 4))[0] != val3 & 0xFFFFFFFF:
                raise SyscallError(errno.EAGAIN)
            return 0
        if cmd == FUTEX_WAKE_OP:
            self._futex_op(uaddr2, val3)
            return 0
        raise SyscallError(errno.ENOSYS)

    def _futex_sleep(self, cmd: int, op: int, timeout: int) -> None:
        k = self.k
        clock = time.CLOCK_REALTIME if op & FUTEX_CLOCK_REALTIME else time.CLOCK_MONOTONIC
        if not timeout:
            while True:  # only a signal ends this
                k.blocking(host_sleep_until, clock, time.clock_gettime_ns(clock) + 3600 * 10**9, restartable=True)
        sec, nsec = struct.unpack("<qq", k.mem.read(timeout, 16))
        if sec < 0 or not 0 <= nsec < 1_000_000_000:
            raise SyscallError(errno.EINVAL)
        deadline = sec * 10**9 + nsec
        if cmd == FUTEX_WAIT:  # relative, on CLOCK_MONOTONIC; FUTEX_WAIT_BITSET's is absolute
            clock = time.CLOCK_MONOTONIC
            deadline += time.clock_gettime_ns(clock)
        k.blocking(host_sleep_until, clock, deadline, restartable=False)
        raise SyscallError(errno.ETIMEDOUT)

    def _futex_op(self, uaddr2: int, encoded: int) -> None:
        """FUTEX_WAKE_OP still performs its store on *uaddr2 (the wake-ups it then decides on have no one)."""
        k = self.k
        op, oparg = (encoded >> 28) & 0xF, (encoded >> 12) & 0xFFF
        if op & 8:  # FUTEX_OP_OPARG_SHIFT
            op &= 7
            oparg = 1 << (oparg & 31)
        (old,) = struct.unpack("<I", k.mem.read(uaddr2, 4))
        results = {0: oparg, 1: old + oparg, 2: old | oparg, 3: old & ~oparg, 4: old ^ oparg}  # SET ADD OR ANDN XOR
        if op not in results:
            raise SyscallError(errno.ENOSYS)
        k.mem.write(uaddr2, struct.pack("<I", results[op] & 0xFFFFFFFF))

    def sys_membarrier(self, cmd: int, flags: int, cpu_id: int) -> int:
        cmd = s32(cmd)
        if cmd == MEMBARRIER_CMD_QUERY:
            return MEMBARRIER_SUPPORTED
        if cmd & MEMBARRIER_SUPPORTED != cmd or bin(cmd).count("1") != 1:
            raise SyscallError(errno.EINVAL)
        return 0

    def sys_prctl(self, option: int, a2: int, a3: int, a4: int, a5: int) -> int:
        k = self.k
        option = s32(option)
        if option == PR_SET_NAME:
            self.name = k.mem.read_cstring(a2, 4096)[: TASK_COMM_LEN - 1]
            return 0
        if option == PR_GET_NAME:
            k.mem.write(a2, self.name.ljust(TASK_COMM_LEN, b"\0"))
            return 0
        if option == PR_GET_DUMPABLE:
            return self.dumpable
        if option == PR_SET_DUMPABLE:
            if a2 not in (0, 1):
                raise SyscallError(errno.EINVAL)
            self.dumpable = a2
            return 0
        if option == PR_GET_PDEATHSIG:
            k.write_int(a2, libc_prctl_get(PR_GET_PDEATHSIG))
            return 0
        if option == PR_GET_CHILD_SUBREAPER:
            k.write_int(a2, libc_prctl_get(PR_GET_CHILD_SUBREAPER))
            return 0
        if option in _PRCTL_HOST:
            return libc("prctl", option, *(ctypes.c_ulong(a) for a in (a2, a3, a4, a5)))
        raise SyscallError(errno.EINVAL)


def libc_prctl_get(option: int) -> int:
    """The prctl options that report through an `int *`."""
    value = ctypes.c_int(0)
    libc("prctl", option, ctypes.byref(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    return value.value
