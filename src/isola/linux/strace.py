"""`--strace`: one line per system call in strace's own format, so the output reads (and diffs) like strace's.

    openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC) = 3
    read(3, "root:x:0:0:root:/root:/bin/bash\\n"..., 4096) = 1234
    openat(AT_FDCWD, "/nonexistent", O_RDONLY) = -1 ENOENT (No such file or directory)

Each call's arguments are described by a short signature of kinds (below). Input arguments are rendered when
the call starts (execve replaces the memory they live in), output ones when it returns; the line is written
then, flushed at once so that a forked child's and its parent's lines interleave in order.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from isola.linux.files import IOCTLS
from isola.linux.guest import GuestFault
from isola.linux.kernel import AT_FDCWD, ERESTARTSYS, GuestExit, GuestKilled, ImageReplaced, s32, s64
from isola.linux.signals import signal_name

if TYPE_CHECKING:
    from isola.linux.kernel import Kernel

STRING_LIMIT = 32  # strace's default -s

# Kinds: d signed int, ld signed long, u unsigned, x hex, p pointer, fd, atfd (AT_FDCWD), path/str (C string),
# ibuf (input bytes, length in the next argument), obuf (output bytes, length = result), mode (octal), named
# flag sets (oflags atflags prot mmflags clone amode wopt), named values (sig sighow clock whence fcntl ioctl
# futex rlim), structs (ts, sigset, sigaction; a trailing ">" means written by the call), argv, envp, fds>
# (int[2]), status> (wait status), cwd> (a string of `result` bytes), stat> (struct stat).
SIGNATURES: dict[str, str] = {
    "read": "fd obuf u", "write": "fd ibuf u", "pread64": "fd obuf u ld", "pwrite64": "fd ibuf u ld",
    "readv": "fd p d", "writev": "fd p d", "preadv": "fd p d ld", "pwritev": "fd p d ld",
    "openat": "atfd path oflags mode", "close": "fd", "close_range": "u u x", "lseek": "fd ld whence",
    "dup": "fd", "dup3": "fd fd oflags", "pipe2": "fds> oflags", "fcntl": "fd fcntl x", "ioctl": "fd ioctl p",
    "getdents64": "fd p u", "newfstatat": "atfd path stat> atflags", "fstat": "fd stat>",
    "statx": "atfd path atflags x p", "readlinkat": "atfd path obuf u", "faccessat": "atfd path amode",
    "faccessat2": "atfd path amode atflags", "mkdirat": "atfd path mode", "mknodat": "atfd path mode x",
    "unlinkat": "atfd path atflags", "renameat2": "atfd path atfd path x", "symlinkat": "str atfd path",
    "linkat": "atfd path atfd path atflags", "fchmod": "fd mode", "fchmodat": "atfd path mode",
    "fchown": "fd d d", "fchownat": "atfd path d d atflags", "utimensat": "atfd path p atflags",
    "getcwd": "cwd> u", "chdir": "path", "fchdir": "fd", "truncate": "path ld", "ftruncate": "fd ld",
    "fsync": "fd", "fdatasync": "fd", "sendfile": "fd fd p u", "copy_file_range": "fd p fd p u x",
    "statfs": "path p", "fstatfs": "fd p", "ppoll": "p u ts p u", "pselect6": "d p p p ts p",
    "umask": "mode", "memfd_create": "str x", "flock": "fd d", "fadvise64": "fd ld ld d",
    "brk": "p", "mmap": "p u prot mmflags fd x", "munmap": "p u", "mprotect": "p u prot",
    "mremap": "p u u x p", "madvise": "p u d", "msync": "p u x",
    "exit": "d", "exit_group": "d", "clone": "clone p p p p", "execve": "path argv envp",
    "wait4": "d status> wopt p", "kill": "d sig", "tkill": "d sig", "tgkill": "d d sig",
    "rt_sigaction": "sig sigaction sigaction> u", "rt_sigprocmask": "sighow sigset sigset> u",
    "rt_sigreturn": "", "sigaltstack": "p p", "rt_sigsuspend": "sigset u", "rt_sigpending": "sigset> u",
    "clock_gettime": "clock ts>", "clock_getres": "clock ts>", "clock_nanosleep": "clock d ts p",
    "nanosleep": "ts p", "gettimeofday": "p p", "prlimit64": "d rlim p p", "getrlimit": "rlim p",
    "setrlimit": "rlim p", "getrandom": "obuf u x", "uname": "p", "set_tid_address": "p",
    "set_robust_list": "p u", "futex": "p futex d p p d", "sched_getaffinity": "d u p",
    "prctl": "d x x x x", "riscv_flush_icache": "p p x", "riscv_hwprobe": "p u u p x",
}  # fmt: skip
HEX_RESULT = {"brk", "mmap", "mremap"}
POINTERS = {"p", "path", "str", "ibuf", "obuf", "cwd>", "ts", "ts>", "sigset", "sigset>", "sigaction", "sigaction>"}
POINTERS |= {"fds>", "status>", "stat>", "argv", "envp"}

Flags = Sequence[tuple[int, str]]
O_FLAGS: Flags = [
    (os.O_CREAT, "O_CREAT"), (os.O_EXCL, "O_EXCL"), (os.O_NOCTTY, "O_NOCTTY"), (os.O_TRUNC, "O_TRUNC"),
    (os.O_APPEND, "O_APPEND"), (os.O_NONBLOCK, "O_NONBLOCK"), (os.O_SYNC, "O_SYNC"), (os.O_DSYNC, "O_DSYNC"),
    (os.O_ASYNC, "O_ASYNC"), (os.O_DIRECT, "O_DIRECT"), (0o100000, "O_LARGEFILE"), (os.O_TMPFILE, "O_TMPFILE"),
    (os.O_DIRECTORY, "O_DIRECTORY"), (os.O_NOFOLLOW, "O_NOFOLLOW"), (os.O_NOATIME, "O_NOATIME"),
    (os.O_CLOEXEC, "O_CLOEXEC"), (os.O_PATH, "O_PATH"),
]  # fmt: skip
AT_FLAGS: Flags = [
    (0x100, "AT_SYMLINK_NOFOLLOW"), (0x200, "AT_REMOVEDIR"), (0x400, "AT_SYMLINK_FOLLOW"),
    (0x800, "AT_NO_AUTOMOUNT"), (0x1000, "AT_EMPTY_PATH"),
]  # fmt: skip
PROT_FLAGS: Flags = [(1, "PROT_READ"), (2, "PROT_WRITE"), (4, "PROT_EXEC")]
MAP_FLAGS: Flags = [
    (0x10, "MAP_FIXED"), (0x20, "MAP_ANONYMOUS"), (0x100, "MAP_GROWSDOWN"), (0x800, "MAP_DENYWRITE"),
    (0x1000, "MAP_EXECUTABLE"), (0x2000, "MAP_LOCKED"), (0x4000, "MAP_NORESERVE"), (0x8000, "MAP_POPULATE"),
    (0x10000, "MAP_NONBLOCK"), (0x20000, "MAP_STACK"), (0x40000, "MAP_HUGETLB"), (0x100000, "MAP_FIXED_NOREPLACE"),
]  # fmt: skip
CLONE_FLAGS: Flags = [
    (0x100, "CLONE_VM"), (0x200, "CLONE_FS"), (0x400, "CLONE_FILES"), (0x800, "CLONE_SIGHAND"),
    (0x1000, "CLONE_PIDFD"), (0x4000, "CLONE_VFORK"), (0x8000, "CLONE_PARENT"), (0x10000, "CLONE_THREAD"),
    (0x80000, "CLONE_SETTLS"), (0x100000, "CLONE_PARENT_SETTID"), (0x200000, "CLONE_CHILD_CLEARTID"),
    (0x1000000, "CLONE_CHILD_SETTID"),
]  # fmt: skip
ACCESS_FLAGS: Flags = [(4, "R_OK"), (2, "W_OK"), (1, "X_OK")]
WAIT_FLAGS: Flags = [(1, "WNOHANG"), (2, "WUNTRACED"), (8, "WCONTINUED"), (0x40000000, "__WALL")]
SA_FLAGS: Flags = [
    (1, "SA_NOCLDSTOP"), (2, "SA_NOCLDWAIT"), (4, "SA_SIGINFO"), (0x04000000, "SA_RESTORER"),
    (0x08000000, "SA_ONSTACK"), (0x10000000, "SA_RESTART"), (0x40000000, "SA_NODEFER"), (0x80000000, "SA_RESETHAND"),
]  # fmt: skip
WHENCE = {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}
SIGHOW = {0: "SIG_BLOCK", 1: "SIG_UNBLOCK", 2: "SIG_SETMASK"}
CLOCKS = {0: "REALTIME", 1: "MONOTONIC", 2: "PROCESS_CPUTIME_ID", 3: "THREAD_CPUTIME_ID", 4: "MONOTONIC_RAW"}
CLOCKS.update({5: "REALTIME_COARSE", 6: "MONOTONIC_COARSE", 7: "BOOTTIME"})
FCNTL = {0: "DUPFD", 1: "GETFD", 2: "SETFD", 3: "GETFL", 4: "SETFL", 5: "GETLK", 6: "SETLK", 7: "SETLKW"}
FCNTL.update({8: "SETOWN", 9: "GETOWN", 10: "SETSIG", 11: "GETSIG"})
FCNTL.update({36: "OFD_GETLK", 37: "OFD_SETLK", 38: "OFD_SETLKW", 1030: "DUPFD_CLOEXEC", 1031: "SETPIPE_SZ"})
FCNTL.update({1032: "GETPIPE_SZ", 1033: "ADD_SEALS", 1034: "GET_SEALS"})
FUTEX = {0: "WAIT", 1: "WAKE", 3: "REQUEUE", 4: "CMP_REQUEUE", 5: "WAKE_OP", 9: "WAIT_BITSET", 10: "WAKE_BITSET"}
RLIMITS = "CPU FSIZE DATA STACK CORE RSS NPROC NOFILE MEMLOCK AS LOCKS SIGPENDING MSGQUEUE NICE RTPRIO RTTIME"
RLIMIT_NAMES = {i: "RLIMIT_" + r for i, r in enumerate(RLIMITS.split())}
SI_CODES = {0: "SI_USER", 0x80: "SI_KERNEL", -1: "SI_QUEUE", -6: "SI_TKILL"}
FAULT_CODES: dict[int, dict[int, str]] = {
    signal.SIGSEGV: {1: "SEGV_MAPERR", 2: "SEGV_ACCERR"}, signal.SIGBUS: {1: "BUS_ADRALN"},
    signal.SIGILL: {1: "ILL_ILLOPC"}, signal.SIGTRAP: {1: "TRAP_BRKPT"}, signal.SIGFPE: {1: "FPE_INTDIV"},
}  # fmt: skip
_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r", 0x0B: "\\v", 0x0C: "\\f"}


def quote(data: bytes, limit: int = STRING_LIMIT, *, truncated: bool = False) -> str:
    """A byte string as strace shows it: C escapes, octal for the rest, `...` when cut at `limit`."""
    shown = data[:limit]
    out = []
    for i, b in enumerate(shown):
        if b in _ESCAPES:
            out.append(_ESCAPES[b])
        elif 32 <= b < 127:
            out.append(chr(b))
        elif i + 1 < len(shown) and 0x30 <= shown[i + 1] <= 0x37:
            out.append(f"\\{b:03o}")
        else:
            out.append(f"\\{b:o}")
    return '"' + "".join(out) + '"' + ("..." if truncated or len(data) > limit else "")


def flags(value: int, table: Flags, zero: str = "0") -> str:
    names = []
    for mask, name in table:
        if value & mask == mask and mask:
            names.append(name)
            value &= ~mask
    if value:
        names.append(hex(value))
    return "|".join(names) or zero


def open_flags(value: int) -> str:
    value &= 0xFFFFFFFF
    access = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR"}.get(value & 3, "O_ACCMODE")
    rest = flags(value & ~3, O_FLAGS, "")
    return access + ("|" + rest if rest else "")


def sigset(mask: int) -> str:
    members = [i + 1 for i in range(64) if mask >> i & 1]
    if len(members) > 32:
        return "~[" + " ".join(signal_name(s)[3:] for s in range(1, 65) if s not in members) + "]"
    return "[" + " ".join(signal_name(s)[3:] for s in members) + "]"


def wait_status(status: int) -> str:
    if os.WIFEXITED(status):
        return f"[{{WIFEXITED(s) && WEXITSTATUS(s) == {os.WEXITSTATUS(status)}}}]"
    if os.WIFSIGNALED(status):
        core = " && WCOREDUMP(s)" if os.WCOREDUMP(status) else ""
        return f"[{{WIFSIGNALED(s) && WTERMSIG(s) == {signal_name(os.WTERMSIG(status))}{core}}}]"
    if os.WIFSTOPPED(status):
        return f"[{{WIFSTOPPED(s) && WSTOPSIG(s) == {signal_name(os.WSTOPSIG(status))}}}]"
    return f"[{status:#x}]"


def stat_struct(st: os.stat_result) -> str:
    kind = {
        stat.S_IFREG: "S_IFREG", stat.S_IFDIR: "S_IFDIR", stat.S_IFLNK: "S_IFLNK", stat.S_IFCHR: "S_IFCHR",
        stat.S_IFBLK: "S_IFBLK", stat.S_IFIFO: "S_IFIFO", stat.S_IFSOCK: "S_IFSOCK",
    }.get(stat.S_IFMT(st.st_mode), "0")  # fmt: skip
    mode = f"st_mode={kind}|0{stat.S_IMODE(st.st_mode):03o}"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return f"{{{mode}, st_rdev=makedev({os.major(st.st_rdev):#x}, {os.minor(st.st_rdev)}), ...}}"
    return f"{{{mode}, st_size={st.st_size}, ...}}"


def result(name: str, ret: int) -> str:
    if ret == -ERESTARTSYS:
        return "? ERESTARTSYS (To be restarted if SA_RESTART is set)"
    if -4096 < ret < 0:
        code = errno.errorcode.get(-ret, str(-ret))
        return f"-1 {code} ({os.strerror(-ret)})"
    if name in HEX_RESULT:
        return hex(ret)
    if name == "umask":
        return f"{ret:03o}"
    return str(ret)


@dataclass
class Call:
    name: str
    args: tuple[int, ...]
    kinds: list[str]
    shown: list[str | None]  # rendered at entry; None = an output argument, rendered at return


class Strace:
    def __init__(self, kernel: Kernel[Any], out: TextIO) -> None:
        self.k = kernel
        self.out = out
        self.prefix = ""

    def _write(self, line: str) -> None:
        self.out.write(self.prefix + line + "\n")
        self.out.flush()

    def flush(self) -> None:
        self.out.flush()

    def forked(self) -> None:
        """From the first fork on, lines carry the pid they come from, as `strace -f` writes them."""
        self.prefix = f"[pid {os.getpid():>5}] "

    after_fork = forked

    # -- calls -----------------------------------------------------------------------------------------------

    def enter(self, name: str, args: tuple[int, ...]) -> Call:
        spec = SIGNATURES.get(name)
        kinds = spec.split() if spec is not None else ["x"] * len(args)
        if name == "openat" and not args[2] & os.O_CREAT and args[2] & os.O_TMPFILE != os.O_TMPFILE:
            kinds = kinds[:3]  # the mode is shown only when it is used
        shown: list[str | None] = []
        for i, kind in enumerate(kinds[: len(args)]):
            shown.append(None if kind.endswith(">") or kind == "obuf" else self._render(kind, args, i, None))
        return Call(name, args, kinds, shown)

    def leave(self, call: Call, ret: int) -> None:
        rendered = [
            text if text is not None else self._render(call.kinds[i], call.args, i, ret)
            for i, text in enumerate(call.shown)
        ]
        self._write(f"{call.name}({', '.join(rendered)}) = {result(call.name, ret)}")

    def leave_noreturn(self, call: Call, exc: BaseException) -> None:
        args = ", ".join(text if text is not None else hex(call.args[i]) for i, text in enumerate(call.shown))
        if isinstance(exc, ImageReplaced):
            self._write(f"{call.name}({args}) = 0")
        elif isinstance(exc, GuestExit):
            self._write(f"{call.name}({args}) = ?")
            self._write(f"+++ exited with {exc.status} +++")
        elif isinstance(exc, GuestKilled):
            self._write(f"{call.name}({args}) = ?")
            self.killed(exc.sig)

    def unknown(self, nr: int, name: str | None, args: Sequence[int]) -> None:
        shown = ", ".join(hex(a) for a in args)
        label = name or f"syscall_{nr:#x}"
        self._write(f"{label}({shown}) = {result(label, -errno.ENOSYS)}")

    # -- signals ---------------------------------------------------------------------------------------------

    def signal(self, sig: int, info: bytes) -> None:
        signo, _, code = struct.unpack_from("<iii", info)
        fault = FAULT_CODES.get(sig, {})
        if code > 0 and fault:
            (addr,) = struct.unpack_from("<Q", info, 16)
            detail = f"si_code={fault.get(code, code)}, si_addr={addr:#x}"
        else:
            pid, uid = struct.unpack_from("<iI", info, 16)
            detail = f"si_code={SI_CODES.get(code, code)}, si_pid={pid}, si_uid={uid}"
        self._write(f"--- {signal_name(sig)} {{si_signo={signal_name(signo)}, {detail}}} ---")

    def killed(self, sig: int) -> None:
        self._write(f"+++ killed by {signal_name(sig)} +++")

    # -- arguments -------------------------------------------------------------------------------------------

    def _render(self, kind: str, args: tuple[int, ...], i: int, ret: int | None) -> str:
        try:
            return self._render_kind(kind, args, i, ret)
        except GuestFault:
            return hex(args[i])

    def _render_kind(self, kind: str, args: tuple[int, ...], i: int, ret: int | None) -> str:
        value = args[i]
        mem = self.k.mem
        failed = ret is not None and ret < 0
        if kind in ("d", "fd"):
            return str(s32(value))
        if kind == "ld":
            return str(s64(value))
        if kind == "u":
            return str(value)
        if kind == "x" or (kind == "p" and value):
            return hex(value)
        if kind == "atfd":
            return "AT_FDCWD" if s32(value) == AT_FDCWD else str(s32(value))
        if kind == "mode":
            return f"0{value & 0o7777:03o}" if value & 0o7777 else "000"
        if not value and kind in POINTERS:
            return "NULL"
        if kind in ("path", "str"):
            data = mem.read_cstring(value, 4096)
            return quote(data, 4096)
        if kind == "ibuf":
            n = args[i + 1] if i + 1 < len(args) else 0
            return quote(mem.read(value, min(n, STRING_LIMIT)), truncated=n > STRING_LIMIT)
        if kind == "obuf":
            if failed or ret is None:
                return hex(value)
            return quote(mem.read(value, min(ret, STRING_LIMIT)), truncated=ret > STRING_LIMIT)
        if kind == "cwd>":
            return hex(value) if failed or not ret else quote(mem.read(value, ret - 1), 4096)
        if kind == "oflags":
            return open_flags(value)
        if kind == "atflags":
            return flags(value & 0xFFFFFFFF, AT_FLAGS)
        if kind == "prot":
            return flags(value, PROT_FLAGS, "PROT_NONE")
        if kind == "mmflags":
            kind_name = {1: "MAP_SHARED", 2: "MAP_PRIVATE", 3: "MAP_SHARED_VALIDATE"}.get(value & 0xF, hex(value & 0xF))
            rest = flags(value & ~0xF, MAP_FLAGS, "")
            return kind_name + ("|" + rest if rest else "")
        if kind == "clone":
            low = value & 0xFF
            rest = flags(value & ~0xFF, CLONE_FLAGS, "")
            parts = [p for p in (rest, signal_name(low) if low else "") if p]
            return "flags=" + ("|".join(parts) or "0")
        if kind == "amode":
            return flags(value, ACCESS_FLAGS, "F_OK")
        if kind == "wopt":
            return flags(value & 0xFFFFFFFF, WAIT_FLAGS)
        if kind == "sig":
            return signal_name(s32(value)) if 0 < s32(value) <= 64 else str(s32(value))
        if kind == "sighow":
            return SIGHOW.get(s32(value), str(s32(value)))
        if kind == "clock":
            return "CLOCK_" + CLOCKS[value] if value in CLOCKS else str(s32(value))
        if kind == "whence":
            return WHENCE.get(s32(value), str(s32(value)))
        if kind == "fcntl":
            return "F_" + FCNTL[value] if value in FCNTL else str(s32(value))
        if kind == "ioctl":
            return IOCTLS[value & 0xFFFFFFFF][0] if value & 0xFFFFFFFF in IOCTLS else hex(value)
        if kind == "futex":
            cmd = value & 0x7F
            name = "FUTEX_" + FUTEX.get(cmd, str(cmd)) + ("_PRIVATE" if value & 128 else "")
            return name + ("|FUTEX_CLOCK_REALTIME" if value & 256 else "")
        if kind == "rlim":
            return RLIMIT_NAMES.get(s32(value), str(s32(value)))
        if kind in ("ts", "ts>"):
            if kind == "ts>" and failed:
                return hex(value)
            sec, nsec = struct.unpack("<qq", mem.read(value, 16))
            return f"{{tv_sec={sec}, tv_nsec={nsec}}}"
        if kind in ("sigset", "sigset>"):
            if kind == "sigset>" and failed:
                return hex(value)
            return sigset(int.from_bytes(mem.read(value, 8), "little"))
        if kind in ("sigaction", "sigaction>"):
            if kind == "sigaction>" and failed:
                return hex(value)
            act = self.k.abi.unpack_sigaction(mem.read(value, self.k.abi.sigaction_size))
            handler = {0: "SIG_DFL", 1: "SIG_IGN"}.get(act.handler, hex(act.handler))
            return f"{{sa_handler={handler}, sa_mask={sigset(act.mask)}, sa_flags={flags(act.flags, SA_FLAGS)}}}"
        if kind == "fds>":
            return hex(value) if failed else "[{}, {}]".format(*struct.unpack("<ii", mem.read(value, 8)))
        if kind == "status>":
            return hex(value) if failed or not ret else wait_status(struct.unpack("<i", mem.read(value, 4))[0])
        if kind == "stat>":
            st = self.k.noted_stat
            return stat_struct(st) if st is not None and not failed else hex(value)
        if kind == "argv":
            return "[" + ", ".join(quote(a, 4096) for a in self._strings(value)) + "]"
        if kind == "envp":
            return f"{value:#x} /* {len(self._strings(value))} vars */"
        return hex(value)

    def _strings(self, addr: int) -> list[bytes]:
        result: list[bytes] = []
        while addr and len(result) < 4096:
            ptr = int.from_bytes(self.k.mem.read(addr + 8 * len(result), 8), "little")
            if not ptr:
                break
            result.append(self.k.mem.read_cstring(ptr, 4096))
        return result
