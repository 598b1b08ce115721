"""The personality's dispatch, memory access, memory calls, time/identity calls and strace output."""

from __future__ import annotations

import errno
import os
import resource
import struct
import time
from pathlib import Path

import pytest

from isola.linux.abi.riscv64 import ABI, SIGRETURN_CODE
from isola.linux.guest import PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE
from isola.linux.kernel import AT_FDCWD, MASK64, GuestExit
from tests.unit.test_linux_support import NR, Scratch, call, make_kernel

UNMAPPED = 0x2000000  # inside guest memory, never mapped


# -- dispatch ------------------------------------------------------------------------------------------------


def test_unknown_numbers_answer_enosys_and_are_traced() -> None:
    k, _, _, trace = make_kernel()
    assert k.syscall(999, (1, 2, 3, 4, 5, 6)) == -errno.ENOSYS & MASK64
    assert call(k, "io_setup", 1, 2) == -errno.ENOSYS  # named by the ABI, not implemented
    lines = trace.getvalue().splitlines()
    assert lines[0] == "syscall_0x3e7(0x1, 0x2, 0x3, 0x4, 0x5, 0x6) = -1 ENOSYS (Function not implemented)"
    assert lines[1].startswith("io_setup(0x1, 0x2") and lines[1].endswith("= -1 ENOSYS (Function not implemented)")


def test_the_issue_s_system_calls_are_all_served() -> None:
    k, _, _, _ = make_kernel()
    wanted = {"openat", "read", "write", "pread64", "pwrite64", "readv", "writev", "lseek", "close", "dup", "dup3"}
    wanted |= {"fcntl", "ioctl", "pipe2", "statx", "newfstatat", "fstat", "getdents64", "readlinkat", "faccessat"}
    wanted |= {"faccessat2", "mkdirat", "unlinkat", "renameat2", "fchmod", "fchmodat", "fchown", "fchownat"}
    wanted |= {"utimensat", "getcwd", "chdir", "fchdir", "brk", "mmap", "munmap", "mprotect", "mremap", "madvise"}
    wanted |= {"clock_gettime", "gettimeofday", "nanosleep", "clock_nanosleep", "getpid", "getppid", "gettid"}
    wanted |= {"getuid", "geteuid", "getgid", "getegid", "uname", "prlimit64", "getrlimit", "setrlimit", "getrandom"}
    wanted |= {"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "kill", "tkill", "tgkill", "clone"}
    wanted |= {"execve", "wait4", "exit", "exit_group", "set_tid_address", "set_robust_list", "futex"}
    wanted |= {"riscv_flush_icache", "riscv_hwprobe", "sysinfo", "umask", "times", "getrusage", "sched_yield"}
    wanted |= {"sched_getaffinity", "ppoll", "pselect6", "symlinkat", "linkat", "truncate", "ftruncate", "fsync"}
    wanted |= {"sendfile", "clock_getres", "membarrier", "prctl"}
    assert not wanted - k.implemented()
    assert {"rseq", "clone3"}.isdisjoint(k.implemented())  # ENOSYS on purpose: glibc copes (process.py)


def test_results_are_unsigned_registers() -> None:
    k, _, _, _ = make_kernel()
    assert k.syscall(NR["close"], (MASK64,)) == (-errno.EBADF) & MASK64


# -- guest memory ------------------------------------------------------------------------------------------


def test_bad_pointers_give_efault(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    f = tmp_path / "data"
    f.write_bytes(b"hello")
    fd = call(k, "openat", AT_FDCWD, s.cstr(str(f)), os.O_RDONLY, 0)
    assert fd >= 0
    assert call(k, "read", fd, UNMAPPED, 5) == -errno.EFAULT
    assert call(k, "write", 1, UNMAPPED, 5) == -errno.EFAULT
    assert call(k, "openat", AT_FDCWD, UNMAPPED, os.O_RDONLY, 0) == -errno.EFAULT
    assert call(k, "newfstatat", AT_FDCWD, s.cstr(str(f)), UNMAPPED, 0) == -errno.EFAULT
    assert call(k, "clock_gettime", 0, UNMAPPED) == -errno.EFAULT
    assert call(k, "openat", AT_FDCWD, 1 << 40, os.O_RDONLY, 0) == -errno.EFAULT  # beyond guest memory
    # the data was not consumed by the failed read
    assert call(k, "read", fd, s.alloc(8), 8) == 5


def test_a_read_stops_at_the_first_page_it_may_not_write(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    f = tmp_path / "data"
    f.write_bytes(b"x" * 10000)
    fd = call(k, "openat", AT_FDCWD, s.cstr(str(f)), os.O_RDONLY, 0)
    mem.map(0x3000000, PAGE_SIZE, PROT_READ | PROT_WRITE)
    assert call(k, "read", fd, 0x3000000 + PAGE_SIZE - 100, 10000) == 100  # Linux copies what fits


def test_read_only_memory_cannot_receive_data(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    mem.map(0x3000000, PAGE_SIZE, PROT_READ)
    f = tmp_path / "data"
    f.write_bytes(b"abc")
    fd = call(k, "openat", AT_FDCWD, s.cstr(str(f)), os.O_RDONLY, 0)
    assert call(k, "read", fd, 0x3000000, 3) == -errno.EFAULT
    assert call(k, "write", fd, 0x3000000, 0) in (0, -errno.EBADF)


# -- memory calls ------------------------------------------------------------------------------------------


def test_sigreturn_page_holds_the_trampoline() -> None:
    k, mem, _, _ = make_kernel()
    assert mem.prot_at(k.sigreturn_addr) == PROT_READ | PROT_EXEC
    assert mem.buf[k.sigreturn_addr : k.sigreturn_addr + 8] == SIGRETURN_CODE


def test_brk_and_anonymous_mmap_go_to_mm() -> None:
    k, mem, _, _ = make_kernel()
    base = call(k, "brk", 0)
    assert call(k, "brk", base + 5000) == base + 5000
    mem.write(base + 4999, b"z")
    addr = call(k, "mmap", 0, 8192, PROT_READ | PROT_WRITE, 0x22, -1, 0)  # MAP_PRIVATE|MAP_ANONYMOUS
    assert addr % PAGE_SIZE == 0 and mem.prot_at(addr) == PROT_READ | PROT_WRITE
    assert call(k, "mprotect", addr, 8192, PROT_READ) == 0
    assert mem.prot_at(addr + 4096) == PROT_READ
    assert call(k, "munmap", addr, 8192) == 0
    assert mem.prot_at(addr) is None
    assert call(k, "mremap", addr, 4096, 8192, 0, 0) == -errno.ENOMEM  # the fake's answer passes through


def test_file_mmap_copies_the_file_and_applies_the_protection(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    f = tmp_path / "lib.so"
    content = bytes(range(256)) * 40  # 10240 bytes
    f.write_bytes(content)
    fd = call(k, "openat", AT_FDCWD, s.cstr(str(f)), os.O_RDONLY, 0)
    addr = call(k, "mmap", 0, 3 * PAGE_SIZE, PROT_READ | PROT_EXEC, 0x02, fd, PAGE_SIZE)
    assert mem.buf[addr : addr + len(content) - PAGE_SIZE] == content[PAGE_SIZE:]
    assert mem.buf[addr + len(content) - PAGE_SIZE : addr + 3 * PAGE_SIZE] == bytes(4 * PAGE_SIZE - len(content))
    assert mem.prot_at(addr) == PROT_READ | PROT_EXEC
    assert k.mm.names[addr] == (str(f), PAGE_SIZE)  # type: ignore[attr-defined]  # for /proc/self/maps
    assert call(k, "mmap", 0, PAGE_SIZE, PROT_READ, 0x02, fd, 100) == -errno.EINVAL  # unaligned offset
    wfd = call(k, "openat", AT_FDCWD, s.cstr(str(f)), os.O_WRONLY, 0)
    assert call(k, "mmap", 0, PAGE_SIZE, PROT_READ, 0x02, wfd, 0) == -errno.EACCES
    assert call(k, "mmap", 0, PAGE_SIZE, PROT_READ, 0x02, 555, 0) == -errno.EBADF


def test_madvise_dontneed_zeroes_private_pages() -> None:
    k, mem, _, _ = make_kernel()
    addr = call(k, "mmap", 0, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE, 0x22, -1, 0)
    mem.write(addr, b"\xff" * (2 * PAGE_SIZE))
    assert call(k, "madvise", addr, PAGE_SIZE, 0) == 0  # MADV_NORMAL: nothing
    assert mem.read(addr, 1) == b"\xff"
    assert call(k, "madvise", addr, PAGE_SIZE, 4) == 0  # MADV_DONTNEED
    assert mem.read(addr, PAGE_SIZE) == bytes(PAGE_SIZE)
    assert mem.read(addr + PAGE_SIZE, 1) == b"\xff"
    assert mem.prot_at(addr) == PROT_READ | PROT_WRITE
    assert call(k, "madvise", addr + 1, PAGE_SIZE, 4) == -errno.EINVAL
    assert call(k, "madvise", 0x2000000, PAGE_SIZE, 4) == -errno.ENOMEM


# -- /proc/self and the sysroot ------------------------------------------------------------------------------


def test_proc_self_describes_the_guest() -> None:
    k, mem, _, _ = make_kernel(argv=[b"prog", b"-x"])
    s = Scratch(mem)
    buf = s.alloc(256)
    n = call(k, "readlinkat", AT_FDCWD, s.cstr("/proc/self/exe"), buf, 256)
    assert mem.read(buf, n) == b"/usr/bin/guest-program"
    assert call(k, "readlinkat", AT_FDCWD, s.cstr("/proc/self/exe"), buf, 4) == 4  # truncated, no NUL
    fd = call(k, "openat", AT_FDCWD, s.cstr("/proc/self/maps"), os.O_RDONLY, 0)
    n = call(k, "read", fd, buf, 256)
    assert mem.read(buf, n).decode() == k.mm.maps_text()
    fd = call(k, "openat", AT_FDCWD, s.cstr(f"/proc/{os.getpid()}/cmdline"), os.O_RDONLY, 0)
    n = call(k, "read", fd, buf, 256)
    assert mem.read(buf, n) == b"prog\0-x\0"
    assert not os.get_inheritable(call(k, "openat", AT_FDCWD, s.cstr("/proc/self/maps"), os.O_CLOEXEC, 0))


def test_absolute_paths_are_looked_up_in_the_sysroot_first(tmp_path: Path) -> None:
    root = tmp_path / "sysroot"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "libc.so.6").write_bytes(b"riscv libc")
    k, mem, _, _ = make_kernel(sysroot=str(root))
    s = Scratch(mem)
    buf = s.alloc(64)
    fd = call(k, "openat", AT_FDCWD, s.cstr("/lib/libc.so.6"), os.O_RDONLY, 0)
    assert call(k, "read", fd, buf, 64) == 10 and mem.read(buf, 10) == b"riscv libc"
    host_file = tmp_path / "host-only"
    host_file.write_bytes(b"host")
    fd = call(k, "openat", AT_FDCWD, s.cstr(str(host_file)), os.O_RDONLY, 0)  # not under the sysroot
    assert call(k, "read", fd, buf, 64) == 4
    os.chdir(tmp_path)
    fd = call(k, "openat", AT_FDCWD, s.cstr("host-only"), os.O_RDONLY, 0)  # relative: never remapped
    assert fd >= 0


def test_reserved_descriptors_are_invisible() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    r, w = os.pipe()
    private = k.reserve_fd(w)
    assert private > 255
    assert call(k, "write", private, s.put(b"x"), 1) == -errno.EBADF
    assert call(k, "close", private) == -errno.EBADF
    assert call(k, "dup3", 1, private, 0) == -errno.EBADF
    assert call(k, "fcntl", private, 1, 0) == -errno.EBADF
    os.write(private, b"ok")  # still the emulator's
    assert os.read(r, 2) == b"ok"
    os.close(r)
    os.close(private)


# -- time, identity, limits ----------------------------------------------------------------------------------


def test_clocks_and_sleeps() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    ts = s.alloc(16)
    assert call(k, "clock_gettime", 0, ts) == 0
    sec, nsec = struct.unpack("<qq", mem.read(ts, 16))
    assert abs(sec + nsec / 1e9 - time.time()) < 5
    assert call(k, "clock_gettime", 1, ts) == 0
    assert call(k, "clock_gettime", 9999, ts) == -errno.EINVAL
    assert call(k, "clock_getres", 1, ts) == 0 and struct.unpack("<qq", mem.read(ts, 16)) == (0, 1)
    tv = s.alloc(16)
    assert call(k, "gettimeofday", tv, 0) == 0
    sec, usec = struct.unpack("<qq", mem.read(tv, 16))
    assert abs(sec - time.time()) < 5 and 0 <= usec < 1_000_000
    req = s.put(struct.pack("<qq", 0, 20_000_000))
    start = time.monotonic()
    assert call(k, "nanosleep", req, 0) == 0
    assert time.monotonic() - start >= 0.02
    bad = s.put(struct.pack("<qq", 0, 1_000_000_000))
    assert call(k, "nanosleep", bad, 0) == -errno.EINVAL
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 10_000_000
    absolute = s.put(struct.pack("<qq", now // 10**9, now % 10**9))
    assert call(k, "clock_nanosleep", 1, 1, absolute, 0) == 0  # TIMER_ABSTIME
    assert time.clock_gettime_ns(time.CLOCK_MONOTONIC) >= now


def test_identity_and_machine() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    assert call(k, "getpid") == os.getpid() == call(k, "gettid")
    assert call(k, "getppid") == os.getppid()
    assert (call(k, "getuid"), call(k, "geteuid"), call(k, "getgid"), call(k, "getegid")) == (
        os.getuid(), os.geteuid(), os.getgid(), os.getegid(),
    )  # fmt: skip
    uts = s.alloc(390)
    assert call(k, "uname", uts) == 0
    fields = [mem.read(uts + 65 * i, 65).rstrip(b"\0").decode() for i in range(6)]
    assert fields[0] == "Linux" and fields[4] == "riscv64" and fields[2] == os.uname().release
    groups = s.alloc(4 * 64)
    n = call(k, "getgroups", 64, groups)
    assert list(struct.unpack(f"<{n}I", mem.read(groups, 4 * n))) == os.getgroups()
    assert call(k, "getgroups", 0, 0) == len(os.getgroups())


def test_limits_randomness_and_system_info() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    old = s.alloc(16)
    assert call(k, "prlimit64", 0, resource.RLIMIT_STACK, 0, old) == 0
    soft, hard = struct.unpack("<QQ", mem.read(old, 16))
    want = resource.getrlimit(resource.RLIMIT_STACK)
    assert (soft, hard) == tuple(MASK64 if v == resource.RLIM_INFINITY else v for v in want)
    assert call(k, "getrlimit", resource.RLIMIT_NOFILE, old) == 0
    assert struct.unpack("<Q", mem.read(old, 8))[0] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert call(k, "prlimit64", 0, 999, 0, old) == -errno.EINVAL
    buf = s.alloc(64)
    assert call(k, "getrandom", buf, 64, 1) == 64  # GRND_NONBLOCK
    assert mem.read(buf, 64) != bytes(64)
    assert call(k, "getrandom", buf, 8, 0x80) == -errno.EINVAL
    info = s.alloc(112)
    assert call(k, "sysinfo", info) == 0
    uptime, _, _, _, totalram = struct.unpack_from("<qQQQQ", mem.read(info, 112))
    assert uptime > 0 and totalram > 0
    mask = s.alloc(128)
    n = call(k, "sched_getaffinity", 0, 128, mask)
    bits = int.from_bytes(mem.read(mask, n), "little")
    assert {c for c in range(n * 8) if bits >> c & 1} == os.sched_getaffinity(0)
    tms = s.alloc(32)
    assert call(k, "times", tms) > 0


def test_umask_and_cwd(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    previous = os.umask(0o022)
    try:
        assert call(k, "umask", 0o077) == 0o022
        assert os.umask(0o022) == 0o077
    finally:
        os.umask(previous)
    cwd = os.getcwd()
    try:
        assert call(k, "chdir", s.cstr(str(tmp_path))) == 0
        buf = s.alloc(4096)
        n = call(k, "getcwd", buf, 4096)
        assert mem.read(buf, n) == os.fsencode(str(tmp_path)) + b"\0"
        assert call(k, "getcwd", buf, 2) == -errno.ERANGE
    finally:
        os.chdir(cwd)


# -- process bookkeeping -------------------------------------------------------------------------------------


def test_exit_raises_guest_exit() -> None:
    k, _, _, trace = make_kernel()
    with pytest.raises(GuestExit) as exited:
        call(k, "exit_group", 0x1FF)
    assert exited.value.status == 0xFF
    assert trace.getvalue().splitlines()[-2:] == ["exit_group(511) = ?", "+++ exited with 255 +++"]


def test_thread_bookkeeping_of_a_single_thread() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    assert call(k, "set_tid_address", s.alloc(4)) == os.getpid()
    assert call(k, "set_robust_list", s.alloc(24), 24) == 0
    assert call(k, "set_robust_list", s.alloc(24), 16) == -errno.EINVAL
    assert call(k, "rseq", s.alloc(32), 32, 0, 0) == -errno.ENOSYS
    assert call(k, "membarrier", 0, 0, 0) > 0
    assert call(k, "membarrier", 1, 0, 0) == 0
    name = s.alloc(16)
    assert call(k, "prctl", 15, s.cstr("worker"), 0, 0, 0) == 0  # PR_SET_NAME
    assert call(k, "prctl", 16, name, 0, 0, 0) == 0
    assert mem.read(name, 16) == b"worker".ljust(16, b"\0")
    assert call(k, "prctl", 3, 0, 0, 0, 0) == 1  # PR_GET_DUMPABLE
    assert call(k, "prctl", 0x7FFF, 0, 0, 0, 0) == -errno.EINVAL


def test_futex_with_one_thread() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    word = s.put(struct.pack("<I", 5))
    assert call(k, "futex", word, 128, 4, 0, 0, 0) == -errno.EAGAIN  # FUTEX_WAIT_PRIVATE, changed value
    timeout = s.put(struct.pack("<qq", 0, 10_000_000))
    start = time.monotonic()
    assert call(k, "futex", word, 128, 5, timeout, 0, 0) == -errno.ETIMEDOUT
    assert time.monotonic() - start >= 0.01
    assert call(k, "futex", word, 129, 1, 0, 0, 0) == 0  # FUTEX_WAKE_PRIVATE: nobody
    assert call(k, "futex", word + 1, 129, 1, 0, 0, 0) == -errno.EINVAL
    other = s.put(struct.pack("<I", 6))
    # FUTEX_WAKE_OP with FUTEX_OP_ADD 3: *other += 3
    assert call(k, "futex", word, 5, 1, 1, other, (1 << 28) | (3 << 12)) == 0
    assert struct.unpack("<I", mem.read(other, 4))[0] == 9
    assert call(k, "futex", word, 6, 0, 0, 0, 0) == -errno.ENOSYS  # FUTEX_LOCK_PI


def test_riscv_calls() -> None:
    flushed: list[tuple[int, int]] = []
    k, mem, _, _ = make_kernel(flush_icache=lambda a, b: flushed.append((a, b)))
    s = Scratch(mem)
    assert call(k, "riscv_flush_icache", 0x1000, 0x2000, 0) == 0
    assert flushed == [(0x1000, 0x2000)]
    assert call(k, "riscv_flush_icache", 0, 0, 2) == -errno.EINVAL
    pairs = s.put(struct.pack("<qQqQqQ", 4, 0, 3, 0, 1000, 0))
    assert call(k, "riscv_hwprobe", pairs, 3, 0, 0, 0) == 0
    assert struct.unpack("<qQqQqQ", mem.read(pairs, 48)) == (4, 3, 3, 1, -1, 0)


def test_hwcap_is_rv64gc() -> None:
    assert ABI.hwcap == sum(1 << (ord(c) - ord("a")) for c in "acdfim")


# -- strace ------------------------------------------------------------------------------------------------


def test_strace_lines_look_like_strace(tmp_path: Path) -> None:
    k, mem, _, trace = make_kernel()
    s = Scratch(mem)
    f = tmp_path / "passwd"
    f.write_bytes(b"root:x:0:0:root:/root:/bin/bash\nmore lines follow here\n")
    path = s.cstr(str(f))
    fd = call(k, "openat", AT_FDCWD, path, os.O_RDONLY | os.O_CLOEXEC, 0)
    buf = s.alloc(4096)
    n = call(k, "read", fd, buf, 4096)
    call(k, "openat", AT_FDCWD, s.cstr(f"{tmp_path}/no/x"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    st = s.alloc(128)
    call(k, "newfstatat", fd, s.cstr(""), st, 0x1000)
    call(k, "mmap", 0, 4096, PROT_READ | PROT_WRITE, 0x22, -1, 0)
    r, w = os.pipe()
    call(k, "write", w, s.put(b"\x7fELF\x02\x01\x01\x00\x00\n"), 10)
    os.close(r)
    os.close(w)
    call(k, "rt_sigprocmask", 0, s.put(struct.pack("<Q", 1 << 1 | 1 << 13)), 0, 8)
    lines = trace.getvalue().splitlines()
    assert lines[0] == f'openat(AT_FDCWD, "{f}", O_RDONLY|O_CLOEXEC) = {fd}'
    assert lines[1] == f'read({fd}, "root:x:0:0:root:/root:/bin/bash\\n"..., 4096) = {n}'
    assert lines[2] == (
        f'openat(AT_FDCWD, "{tmp_path}/no/x", O_WRONLY|O_CREAT|O_TRUNC, 0644) = -1 ENOENT (No such file or directory)'
    )
    size = f.stat().st_size
    assert lines[3] == f'newfstatat({fd}, "", {{st_mode=S_IFREG|0644, st_size={size}, ...}}, AT_EMPTY_PATH) = 0'
    assert lines[4].startswith("mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0x0) = 0x")
    assert lines[5] == f'write({w}, "\\177ELF\\2\\1\\1\\0\\0\\n", 10) = 10'
    assert lines[6] == "rt_sigprocmask(SIG_BLOCK, [INT ALRM], NULL, 8) = 0"


def test_strace_error_lines(tmp_path: Path) -> None:
    k, mem, _, trace = make_kernel()
    s = Scratch(mem)
    call(k, "openat", AT_FDCWD, s.cstr(str(tmp_path / "missing")), os.O_RDONLY, 0)
    call(k, "close", 12345)
    lines = trace.getvalue().splitlines()
    assert lines[0] == f'openat(AT_FDCWD, "{tmp_path}/missing", O_RDONLY) = -1 ENOENT (No such file or directory)'
    assert lines[1] == "close(12345) = -1 EBADF (Bad file descriptor)"


def test_strace_quotes_like_strace() -> None:
    from isola.linux.strace import quote

    assert quote(b'a"b\\c\n\t\x00\x01') == '"a\\"b\\\\c\\n\\t\\0\\1"'
    assert quote(b"\x001") == '"\\0001"'  # octal before a digit is written with three digits
    assert quote(b"x" * 40) == '"' + "x" * 32 + '"...'
