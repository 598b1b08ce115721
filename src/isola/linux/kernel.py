"""The Linux process a guest program runs as: system call dispatch, guest-memory access, and process state.

The design is qemu-user's. The emulator process *is* the guest process: guest fd N is host fd N, the guest's
cwd, umask, uids, rlimits, process group and children are the host process's, and guest pids are host pids
(fork() of the guest is `os.fork()` of the emulator). So most system calls become one `os.*` call on the
guest's own arguments, and an `OSError` becomes the negative errno Linux would return. What cannot be shared
with the host is kept here: guest memory and its maps (`mm`), signal dispositions and the pending set
(`signals.py`), the program image (`execve`).

Paths are host paths, except that an absolute path that exists under the sysroot (`-L`) is taken from there
(qemu's rule), so a dynamic program's ld.so finds its libraries; /proc/self/exe, /proc/self/maps and
/proc/self/cmdline describe the guest, not Python.

The emulator's own descriptors: every fd Python opens is close-on-exec and short-lived (the ELF being loaded),
so the guest sees the descriptors it was started with and those it made. An fd the engine must keep for the
whole run is handed to `reserve_fd()`, which moves it above the guest's usual range and makes it invisible:
the guest gets EBADF for it, cannot dup onto it, and execve's close-on-exec sweep skips it. A trace file
(other than stdout/stderr, which are the guest's own) is made invisible in place.

Handlers are methods named `sys_<name>` on the components below (and on the ABI for arch-only calls); each
takes the raw unsigned register values and returns a non-negative result or raises OSError, SyscallError or
GuestFault (-EFAULT). The engine's side of the contract:

- on ecall: write every register back to `cpu`, `a0 = kernel.syscall(a7, (a0, ..., a5))`, continue after the
  ecall (cpu.pc may hold the ecall's address or the next one during the call: the kernel does not read it);
- whenever `pending[0]` is true (the kernel sets it: after a system call that left something to do, or from a
  host signal handler at any moment): clear it and call `kernel.deliver_signals(cpu)` before running more
  guest code, with `cpu` complete and cpu.pc where the guest resumes. That is also where rt_sigreturn's
  restored pc takes effect, and where an interrupted call is rewound for SA_RESTART;
- on a fault: `kernel.fault(sig, addr, cpu)` with cpu.pc at the faulting instruction;
- GuestExit, GuestKilled and ImageReplaced end the current run of guest code (see each).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import resource
import select
import signal
import stat
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TextIO, TypeVar

from isola.host import libc as host_libc
from isola.linux.abi import Abi, CpuT
from isola.linux.guest import PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, GuestFault, GuestMemory, SyscallError

MASK64 = (1 << 64) - 1
MAX_RW_COUNT = 0x7FFFF000  # Linux caps one read/write at this many bytes
PATH_MAX = 4096
AT_FDCWD = -100

# <asm-generic/mman-common.h>
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_TYPE = 0x0F
MAP_ANONYMOUS = 0x20
MADV_DONTNEED = 4

# errno values Linux uses internally and never shows a program (include/linux/errno.h)
ERESTARTSYS = 512

T = TypeVar("T")


def s32(value: int) -> int:
    """A C `int` argument: the low 32 bits, signed."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def s64(value: int) -> int:
    """A C `long`/`off_t` argument, signed."""
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value


class GuestExit(Exception):
    """The guest called exit/exit_group: the engine exits with `status` (0..255)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"guest exited with {status}")
        self.status = status


class GuestKilled(Exception):
    """A signal's default action ended the guest. `addr`/`pc` are set when a fault caused it (the engine then
    prints `isola-emu: <str(exc)>`); `core` says whether Linux would have dumped core. The engine should end
    with `signals.die_by_signal(sig)` so that whoever waits for it sees a death by that signal."""

    def __init__(self, sig: int, *, addr: int | None = None, pc: int | None = None) -> None:
        self.sig = sig
        self.addr = addr
        self.pc = pc
        from isola.linux.signals import signal_name

        name = signal_name(sig)
        if addr is not None and pc is not None:
            super().__init__(f"guest {name} at pc={pc:#x} addr={addr:#x}")
        else:
            super().__init__(f"guest killed by {name}")

    @property
    def core(self) -> bool:
        from isola.linux.signals import CORE_SIGNALS

        return self.sig in CORE_SIGNALS


class ImageReplaced(Exception):
    """execve loaded a new program into the same process: the engine drops its translations, zeroes every
    register and resumes at `entry` with sp = `sp`."""

    def __init__(self, entry: int, sp: int) -> None:
        super().__init__(f"new image: entry {entry:#x}, sp {sp:#x}")
        self.entry = entry
        self.sp = sp


class AddressSpace(Protocol):
    """The guest's mappings (`linux/mm.py`): Linux's rules for placing, splitting and protecting them.
    Errors raise SyscallError."""

    def mmap(self, addr: int, length: int, prot: int, flags: int, *, name: str = "", offset: int = 0) -> int:
        """A map without MAP_ANONYMOUS is a file's, `name` at `offset`: its pages are zero, the caller fills
        them."""

    def munmap(self, addr: int, length: int) -> None: ...
    def mprotect(self, addr: int, length: int, prot: int) -> None: ...
    def mremap(self, old: int, old_len: int, new_len: int, flags: int, new_addr: int = 0) -> int: ...
    def brk(self, addr: int) -> int: ...
    def maps_text(self) -> str: ...
    def clear(self) -> None: ...


class ForkObserver(Protocol):
    """An engine's part in a guest fork: `before_fork` in the parent just before `os.fork()`, `in_child` first
    thing in the child, `in_parent` in the parent once the fork is done (or failed)."""

    def before_fork(self) -> None: ...
    def in_child(self) -> None: ...
    def in_parent(self) -> None: ...


def _arguments(method: Callable[..., int]) -> int:
    """How many arguments a bound `sys_*` method takes (its code object says so at no cost: inspect.signature
    on ~150 handlers was a tenth of a process VM's start-up)."""
    return int(method.__func__.__code__.co_argcount) - 1  # type: ignore[attr-defined]


class ImageLoader(Protocol):
    """Loads a program into the (cleared) address space for execve, as the engine's loader did the first
    one: returns (entry, initial sp). `execfn` is the path as the guest passed it (AT_EXECFN)."""

    def __call__(self, path: str, argv: Sequence[bytes], envp: Sequence[bytes], execfn: bytes) -> tuple[int, int]: ...


libc = host_libc.call  # the personality's name for it: files, process and time call libc(...)


# Blocking host calls made through libc rather than `os`: Python's wrappers retry EINTR, which would keep a
# guest asleep through a signal it handles; these raise InterruptedError instead (see Kernel.blocking).


def host_read(fd: int, n: int) -> bytes:
    buf = ctypes.create_string_buffer(n)
    got = libc("read", fd, buf, ctypes.c_size_t(n), restype=ctypes.c_ssize_t)
    return buf.raw[:got]


def host_write(fd: int, data: bytes) -> int:
    return libc("write", fd, data, ctypes.c_size_t(len(data)), restype=ctypes.c_ssize_t)


def fd_ready(fd: int, events: int) -> Callable[[], bool]:
    """For Kernel.blocking: would an operation waiting for `events` on `fd` complete now?"""

    def ready() -> bool:
        poller = select.poll()
        poller.register(fd, events)
        return bool(poller.poll(0))

    return ready


host_sleep_until = host_libc.sleep_until


class Kernel(Generic[CpuT]):
    """One guest process. `cpu` is the engine's register file (the ABI's Protocol); it is kept for the calls
    that read or rewrite registers (rt_sigreturn, clone, sigaltstack)."""

    def __init__(
        self,
        abi: Abi[CpuT],
        mem: GuestMemory,
        mm: AddressSpace,
        cpu: CpuT,
        *,
        exe: str,
        argv: Sequence[bytes] = (),
        sysroot: str | None = None,
        strace: TextIO | None = None,
        flush_icache: Callable[[int, int], None] | None = None,
        loader: ImageLoader | None = None,
        pending: list[bool] | None = None,
        host_signals: bool = True,
        fork_observer: ForkObserver | None = None,
        proc_fd: int | None = None,
    ) -> None:
        """`exe` is the host path of the running program, `argv` its arguments (for /proc/self/exe and
        /proc/self/cmdline); `flush_icache(start, end)` drops translations for riscv_flush_icache; `loader`
        serves execve; `pending` is the engine's flag asking for deliver_signals (see the module docstring);
        `host_signals=False` leaves the host's signal dispositions and mask alone (tests); `fork_observer` is
        told about a guest fork on both sides of `os.fork()` (an engine whose guest state cannot cross a fork
        as is, like a KVM VM, rebuilds it in the child); `proc_fd`, a descriptor of the host's /proc, is where
        the kernel looks up its own descriptors when the engine runs chroot-ed, without a /proc."""
        from isola.linux.files import Files
        from isola.linux.process import Process
        from isola.linux.signals import Signals
        from isola.linux.timeident import TimeIdent

        self.abi = abi
        self.mem = mem
        self.mm = mm
        self.cpu = cpu
        self.exe = os.path.abspath(exe)
        self.argv = list(argv)
        self.sysroot = sysroot.rstrip("/").encode() if sysroot else None
        self.flush_icache = flush_icache
        self.loader = loader
        self.pending = pending if pending is not None else [False]
        self.fork_observer = fork_observer
        self.proc_fd = proc_fd
        self.private_fds: set[int] = set()
        self.trace = None
        if strace is not None:  # imported only when tracing: start-up time counts for short programs
            from isola.linux.strace import Strace

            self.trace = Strace(self, strace)
        if strace is not None:
            with contextlib.suppress(OSError):  # io.StringIO has no descriptor
                if strace.fileno() > 2:
                    self.private_fds.add(strace.fileno())  # a trace file outlives the guest's execve and close()
        self.noted_stat: os.stat_result | None = None  # the last stat result, for strace to show
        self.files = Files(self)
        self.signals = Signals(self, host=host_signals)
        self.process = Process(self)
        self.timeident = TimeIdent(self)
        self.sigreturn_addr = self.map_sigreturn_page()
        self._table = self._build_table()

    def _build_table(self) -> dict[int, tuple[str, Callable[..., int], int]]:
        components: list[object] = [self, self.files, self.signals, self.process, self.timeident]
        table: dict[int, tuple[str, Callable[..., int], int]] = {}
        for nr, name in self.abi.syscalls.items():
            arch = getattr(self.abi, "sys_" + name, None)
            if arch is not None:  # a bound method of the ABI, given the kernel as its first argument
                table[nr] = (name, functools.partial(arch, self), _arguments(arch) - 1)
                continue
            for component in components:
                handler = getattr(component, "sys_" + name, None)
                if handler is not None:
                    table[nr] = (name, handler, _arguments(handler))
                    break
        return table

    def implemented(self) -> set[str]:
        """The names of the system calls this kernel serves (the rest answer ENOSYS)."""
        return {name for name, _, _ in self._table.values()}

    # -- the engine's entry points ---------------------------------------------------------------------------

    def syscall(self, nr: int, args: Sequence[int]) -> int:
        """Serve system call `nr`; the result is a0's new value (-errno as an unsigned 64-bit number)."""
        entry = self._table.get(nr)
        if entry is None:
            if self.trace:
                self.trace.unknown(nr, self.abi.syscalls.get(nr), args)
            return -errno.ENOSYS & MASK64
        name, handler, argc = entry
        call = tuple(a & MASK64 for a in args[:argc])
        traced = self.trace.enter(name, call) if self.trace else None
        self.noted_stat = None
        try:
            ret = handler(*call)
        except OSError as e:
            ret = -(e.errno or errno.EIO)
            if e.errno == errno.EPIPE:  # the host ignores SIGPIPE or has already delivered it; Linux sends one
                self.signals.send_self(signal.SIGPIPE)
        except SyscallError as e:
            ret = -e.errno
        except GuestFault:
            ret = -errno.EFAULT
        except (ValueError, OverflowError):  # a value Python's wrappers refuse (an id of 2**32 - 1...)
            ret = -errno.EINVAL
        except (GuestExit, GuestKilled, ImageReplaced) as e:
            if self.trace and traced:
                self.trace.leave_noreturn(traced, e)
            raise
        if self.trace and traced:
            self.trace.leave(traced, ret)
        if ret == -ERESTARTSYS:
            self.signals.restart_arg0 = call[0] if call else 0
            ret = -errno.EINTR
        if self.signals.wants_delivery():
            self.pending[0] = True
        return ret & MASK64

    def deliver_signals(self, cpu: CpuT) -> None:
        """Finish what system calls and signals left for a safe point: resume where rt_sigreturn said, rewind
        an interrupted call, run pending unblocked signals (handler frames in `cpu`, or GuestKilled)."""
        self.signals.deliver(cpu)

    def fault(self, sig: int, addr: int, cpu: CpuT, code: int | None = None) -> None:
        """The guest's instruction at cpu.pc faulted (SIGSEGV, SIGBUS, SIGILL, SIGTRAP): deliver it now.
        `code` is the siginfo code when the engine knows it (x86 tells a #GP from a page fault); else it
        follows from the signal and, for SIGSEGV, from the mapping at `addr`."""
        self.signals.fault(sig, addr, cpu, code)

    def host_fds(self) -> list[int]:
        """Every descriptor this process has open (the guest's and the engine's)."""
        if self.proc_fd is None:
            return [int(n) for n in os.listdir("/proc/self/fd")]
        fd_dir = os.open("self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.proc_fd)
        try:
            return [int(n) for n in os.listdir(fd_dir) if int(n) != fd_dir]
        finally:
            os.close(fd_dir)

    def fd_target(self, fd: int) -> str:
        """What descriptor `fd` refers to, as /proc/self/fd shows it (a path, or e.g. "pipe:[1234]")."""
        if self.proc_fd is None:
            return os.readlink(f"/proc/self/fd/{fd}")
        return os.readlink(f"self/fd/{fd}", dir_fd=self.proc_fd)

    def reserve_fd(self, fd: int) -> int:
        """Move one of the emulator's own descriptors out of the guest's way; returns its new number."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        base = max(soft - 64, 3) if soft != resource.RLIM_INFINITY else 1 << 20
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, base)
        os.close(fd)
        self.private_fds.add(high)
        return high

    # -- helpers for handlers --------------------------------------------------------------------------------

    def fd(self, value: int) -> int:
        """A guest descriptor argument as a host fd (the same number), EBADF for the emulator's own."""
        fd = s32(value)
        if fd < 0 or fd in self.private_fds:
            raise SyscallError(errno.EBADF)
        return fd

    def dirfd(self, value: int) -> int | None:
        """A dirfd argument for `os.*(dir_fd=...)`: None for AT_FDCWD."""
        return None if s32(value) == AT_FDCWD else self.fd(value)

    def cstring(self, addr: int) -> bytes:
        try:
            return self.mem.read_cstring(addr, PATH_MAX)
        except GuestFault as fault:
            if fault.addr == addr + PATH_MAX:  # PATH_MAX readable bytes and no NUL among them
                raise SyscallError(errno.ENAMETOOLONG) from None
            raise

    def path(self, addr: int) -> bytes:
        """A guest path argument as the host path to use."""
        return self.host_path(self.cstring(addr))

    def is_proc_exe(self, path: bytes) -> bool:
        return path in (b"/proc/self/exe", b"/proc/thread-self/exe", b"/proc/%d/exe" % os.getpid())

    def host_path(self, path: bytes) -> bytes:
        if not path.startswith(b"/"):
            return path
        if self.is_proc_exe(path):
            return os.fsencode(self.exe)
        if self.sysroot is not None:
            inside = self.sysroot + path
            if os.path.exists(inside):
                return inside
        return path

    def extent(self, addr: int, n: int, prot: int) -> int:
        """How many of the `n` bytes at `addr` the guest may access with `prot`: Linux copies up to the first
        bad page and fails (EFAULT) only when not one byte can move."""
        if n <= 0:
            return 0
        end = addr + n
        page = addr
        while page < end:
            got = self.mem.prot_at(page)
            if got is None or got & prot != prot:
                break
            page = (page // PAGE_SIZE + 1) * PAGE_SIZE
        if page <= addr:
            raise GuestFault(addr, "w" if prot & PROT_WRITE else "r")
        return min(page, end) - addr

    def read_in(self, addr: int, n: int) -> bytes:
        """The guest's input buffer, cut at the first page it may not read (Linux's partial copy)."""
        return self.mem.read(addr, self.extent(addr, n, PROT_READ)) if n > 0 else b""

    def read_u64(self, addr: int) -> int:
        return int.from_bytes(self.mem.read(addr, 8), "little")

    def write_int(self, addr: int, value: int, size: int = 4) -> None:
        self.mem.write(addr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def blocking(
        self, fn: Callable[..., T], *args: Any, restartable: bool, ready: Callable[[], bool] | None = None
    ) -> T:
        """Run a host call that may block and reports EINTR (the host_* and libc wrappers), so that a signal
        the guest handles ends it: the guest then sees EINTR, or (`restartable`, and SA_RESTART) the call runs
        again after the handler, as on Linux. The host's handler has queued the signal by the time EINTR is
        seen here. As on Linux, a pending signal stops only a call that would sleep: `ready()` says whether
        this one can complete at once (a zombie to reap, a readable pipe); a call that completes keeps its
        result, and the signal is delivered after it. (A signal landing between the check and the host call
        waits for the call to end.)"""
        while True:
            if self.signals.interrupt_pending() and not (ready is not None and ready()):
                raise SyscallError(ERESTARTSYS if restartable else errno.EINTR)
            try:
                return fn(*args)
            except InterruptedError:
                continue

    def map_sigreturn_page(self) -> int:
        """The page holding the signal-return trampoline (riscv64 has no SA_RESTORER; Linux uses the vDSO),
        mapped read+exec wherever mm places it; re-made after every execve."""
        addr = self.mm.mmap(0, PAGE_SIZE, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS)
        self.mem.poke(addr, self.abi.sigreturn_code)
        return addr

    def before_fork(self) -> None:
        if self.fork_observer is not None:
            self.fork_observer.before_fork()
        self.signals.before_fork()

    def after_fork_in_parent(self) -> None:
        """In the parent of a guest fork, or when the fork failed."""
        if self.fork_observer is not None:
            self.fork_observer.in_parent()
        self.signals.after_fork_in_parent()

    def after_fork(self) -> None:
        """In the child of a guest fork: per-process state that is not inherited."""
        if self.fork_observer is not None:
            self.fork_observer.in_child()
        self.signals.after_fork()
        if self.trace:
            self.trace.after_fork()

    # -- memory ----------------------------------------------------------------------------------------------

    def sys_brk(self, addr: int) -> int:
        return self.mm.brk(addr)

    def sys_mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        """Anonymous maps are mm's; a file map is zero pages filled from the file. A MAP_SHARED file mapping is
        therefore a snapshot: the guest's stores do not reach the file (nor others' stores it)."""
        if flags & MAP_ANONYMOUS:
            return self.mm.mmap(addr, length, prot, flags)
        host_fd = self.fd(fd)
        if offset % PAGE_SIZE:
            raise SyscallError(errno.EINVAL)
        info = os.fstat(host_fd)
        access = fcntl.fcntl(host_fd, fcntl.F_GETFL) & os.O_ACCMODE
        shared = flags & MAP_TYPE in (MAP_SHARED, MAP_SHARED_VALIDATE)
        if access == os.O_WRONLY or (shared and prot & PROT_WRITE and access != os.O_RDWR):
            raise SyscallError(errno.EACCES)
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISCHR(info.st_mode)):
            raise SyscallError(errno.ENODEV)
        name = self.fd_target(host_fd)
        start = self.mm.mmap(addr, length, prot, flags, name=name, offset=offset)
        if stat.S_ISREG(info.st_mode) and offset < info.st_size:  # a character device maps as zeros
            try:
                data = os.pread(host_fd, min(length, info.st_size - offset), offset)
            except OSError:
                self.mm.munmap(start, length)
                raise
            self.mem.poke(start, data)
        return start

    def sys_munmap(self, addr: int, length: int) -> int:
        self.mm.munmap(addr, length)
        return 0

    def sys_mprotect(self, addr: int, length: int, prot: int) -> int:
        self.mm.mprotect(addr, length, prot)
        return 0

    def sys_mremap(self, old: int, old_len: int, new_len: int, flags: int, new_addr: int) -> int:
        return self.mm.mremap(old, old_len, new_len, flags, new_addr)

    def sys_madvise(self, addr: int, length: int, advice: int) -> int:
        """Advice is free to ignore except MADV_DONTNEED, after which private pages read back as zeros
        (allocators rely on it). Pages are re-made zero with their protection; file-backed pages would have to
        be re-read from the file, which a snapshot mapping cannot do."""
        if addr % PAGE_SIZE:
            raise SyscallError(errno.EINVAL)
        end = addr + (length + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
        runs: list[tuple[int, int, int]] = []
        for page in range(addr, end, PAGE_SIZE):
            prot = self.mem.prot_at(page)
            if prot is None:
                raise SyscallError(errno.ENOMEM)
            if runs and runs[-1][2] == prot and runs[-1][0] + runs[-1][1] == page:
                runs[-1] = (runs[-1][0], runs[-1][1] + PAGE_SIZE, prot)
            else:
                runs.append((page, PAGE_SIZE, prot))
        if advice == MADV_DONTNEED:
            for start, size, prot in runs:
                self.mem.map(start, size, prot)
        return 0

    def sys_msync(self, addr: int, length: int, flags: int) -> int:
        """Nothing to write back: file mappings are snapshots (see mmap). Still, the range must be mapped."""
        if addr % PAGE_SIZE or flags & ~7 or flags & 5 == 5:  # MS_ASYNC and MS_SYNC together
            raise SyscallError(errno.EINVAL)
        self._mapped_pages(addr, length)
        return 0

    def sys_mincore(self, addr: int, length: int, vec: int) -> int:
        """Every page of guest memory is resident (the guest cannot observe paging)."""
        if addr % PAGE_SIZE:
            raise SyscallError(errno.EINVAL)
        pages = self._mapped_pages(addr, length)
        self.mem.write(vec, b"\1" * pages)
        return 0

    def _mapped_pages(self, addr: int, length: int) -> int:
        """How many pages [addr, addr+length) spans; ENOMEM unless every one of them is mapped."""
        end = addr + (length + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
        if end > self.mem.size or any(self.mem.prot_at(page) is None for page in range(addr, end, PAGE_SIZE)):
            raise SyscallError(errno.ENOMEM)
        return (end - addr) // PAGE_SIZE

    def sys_mlock(self, addr: int, length: int) -> int:
        return 0  # guest memory is never paged out behind the guest's back in any way it can observe

    def sys_munlock(self, addr: int, length: int) -> int:
        return 0

    def sys_mlockall(self, flags: int) -> int:
        return 0

    def sys_munlockall(self) -> int:
        return 0
