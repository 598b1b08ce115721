"""Processes and host signals for real: fork the emulator, wait for it, replace its image, signal it.

Anything that forks, execs or changes host signal dispositions runs in a child process, which reports back
through a pipe and always leaves with os._exit, so the test runner is never touched.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from isola.linux.abi.riscv64 import EM_RISCV, Rv64Cpu
from isola.linux.kernel import AT_FDCWD, ImageReplaced, Kernel
from isola.linux.signals import die_by_signal
from tests.unit.test_linux_support import NR, SCRATCH, FakeMM, Scratch, call, make_kernel, signed

SIGCHLD = signal.SIGCHLD
CLONE_VM, CLONE_VFORK, CLONE_THREAD = 0x100, 0x4000, 0x10000
CLONE_PARENT_SETTID, CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID = 0x100000, 0x200000, 0x1000000


def run_child(body: Callable[[int], int], during: Callable[[int], None] | None = None) -> tuple[int, Any]:
    """Run `body(report_fd)` in a forked child; `during(pid)` runs once the child writes b"ready\\n".
    Returns the child's wait status and the JSON it reported (None if it reported nothing)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 99
        try:
            os.close(r)
            code = body(w)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    with os.fdopen(r, "rb") as report:
        if during is not None:
            line = report.readline()
            assert line == b"ready\n", line
            during(pid)
        data = report.read()
    _, status = os.waitpid(pid, 0)
    return status, json.loads(data) if data else None


def kill_after(sig: int, delay: float) -> Callable[[int], None]:
    """For run_child's `during`: signal the child once it is (probably) blocked."""

    def send(pid: int) -> None:
        time.sleep(delay)
        os.kill(pid, sig)

    return send


def report(fd: int, value: Any) -> None:
    os.write(fd, json.dumps(value).encode())


def riscv_elf(path: Path, machine: int = EM_RISCV) -> Path:
    header = b"\x7fELF" + bytes([2, 1, 1, 0, 0]) + bytes(7)
    header += struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0x10078, 64, 0, 0, 64, 56, 0, 64, 0, 0)
    path.write_bytes(header + bytes(64))
    path.chmod(0o755)
    return path


# -- fork and wait -------------------------------------------------------------------------------------------


def test_fork_returns_twice_and_wait4_reports_the_exit() -> None:
    k, mem, _, trace = make_kernel()
    s = Scratch(mem)
    ptid, ctid = s.alloc(4), s.alloc(4)
    r, w = os.pipe()
    flags = CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | CLONE_PARENT_SETTID | SIGCHLD
    pid = call(k, "clone", flags, 0, ptid, 0, ctid)  # riscv64 order: flags, stack, ptid, tls, ctid
    if pid == 0:  # pragma: no cover
        try:
            tid = struct.unpack("<i", mem.read(ctid, 4))[0]
            os.write(w, json.dumps([tid == os.getpid(), k.process.clear_child_tid == ctid]).encode())
        finally:
            os._exit(7)
    os.close(w)
    assert pid > 0
    assert json.loads(os.read(r, 100)) == [True, True]
    os.close(r)
    assert struct.unpack("<i", mem.read(ptid, 4))[0] == pid
    status, rusage = s.alloc(4), s.alloc(144)
    assert call(k, "wait4", pid, status, 0, rusage) == pid
    st = s.i32(status)
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 7
    utime_sec, utime_usec = struct.unpack("<qq", mem.read(rusage, 16))
    assert utime_sec >= 0 and 0 <= utime_usec < 1_000_000
    assert call(k, "wait4", -1, status, 0, 0) == -errno.ECHILD
    assert trace.getvalue().splitlines()[-1].startswith(f"[pid {os.getpid():>5}] wait4(-1, ")


def test_vfork_flags_fork_with_the_new_stack() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    cpu.x[2] = 0x3F0000
    pid = call(k, "clone", CLONE_VM | CLONE_VFORK | SIGCHLD, 0x380000, 0, 0, 0)
    if pid == 0:  # pragma: no cover
        os._exit(0 if cpu.x[2] == 0x380000 else 1)
    status = s.alloc(4)
    assert call(k, "wait4", pid, status, 0, 0) == pid
    assert os.WEXITSTATUS(s.i32(status)) == 0
    assert cpu.x[2] == 0x3F0000


def test_threads_are_refused() -> None:
    k, _, _, _ = make_kernel()
    assert call(k, "clone", CLONE_VM | CLONE_THREAD | 0xF00, 0x380000, 0, 0, 0) == -errno.ENOSYS
    assert call(k, "clone", CLONE_VM | SIGCHLD, 0x380000, 0, 0, 0) == -errno.ENOSYS
    assert call(k, "clone", 0x20000 | SIGCHLD, 0, 0, 0, 0) == -errno.EINVAL  # CLONE_NEWNS
    assert call(k, "clone3", SCRATCH, 88) == -errno.ENOSYS


def test_wait4_sees_signals_and_wnohang() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        try:
            time.sleep(30)
        finally:
            os._exit(0)
    status = s.alloc(4)
    assert call(k, "wait4", pid, status, 1, 0) == 0  # WNOHANG, still running
    os.kill(pid, signal.SIGTERM)
    assert call(k, "wait4", pid, status, 0, 0) == pid
    st = s.i32(status)
    assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGTERM


# -- execve --------------------------------------------------------------------------------------------------


class Loader:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[bytes], list[bytes], bytes]] = []

    def __call__(self, path: str, argv: Any, envp: Any, execfn: bytes) -> tuple[int, int]:
        self.calls.append((path, list(argv), list(envp), execfn))
        return 0x10078, 0x3FF000


def strings(s: Scratch, items: list[str]) -> int:
    pointers = [s.cstr(item) for item in items]
    return s.put(struct.pack(f"<{len(pointers) + 1}Q", *pointers, 0))


def test_execve_checks_then_replaces_the_image(tmp_path: Path) -> None:
    prog = riscv_elf(tmp_path / "prog")
    riscv_elf(tmp_path / "x86", machine=62)
    (tmp_path / "text").write_text("hello")
    (tmp_path / "text").chmod(0o755)
    (tmp_path / "noexec").write_bytes(prog.read_bytes())
    script = tmp_path / "script"
    script.write_text(f"#!{prog} -x\necho hi\n")
    script.chmod(0o755)

    def body(out: int) -> int:
        loader = Loader()
        k, mem, _, trace = make_kernel(loader=loader, argv=[b"old"])
        out = k.reserve_fd(out)
        s = Scratch(mem)
        argv, envp = strings(s, ["prog", "a"]), strings(s, ["X=1"])
        errors = {
            name: call(k, "execve", s.cstr(str(tmp_path / name)), argv, envp)
            for name in ("missing", "x86", "text", "noexec", ".")
        }
        set_action = struct.pack("<QQQ", 0x20000, 0, 0)
        call(k, "rt_sigaction", signal.SIGUSR1, s.put(set_action), 0, 8)
        call(k, "rt_sigaction", signal.SIGUSR2, s.put(struct.pack("<QQQ", 1, 0, 0)), 0, 8)
        kept = call(k, "openat", AT_FDCWD, s.cstr(str(prog)), os.O_RDONLY, 0)
        closed = call(k, "openat", AT_FDCWD, s.cstr(str(prog)), os.O_RDONLY | os.O_CLOEXEC, 0)
        try:
            call(k, "execve", s.cstr(str(script)), argv, envp)
            replaced = None
        except ImageReplaced as e:
            replaced = [e.entry, e.sp]
        fds = set(os.listdir("/proc/self/fd"))
        report(out, {
            "errors": errors, "replaced": replaced, "loader": [[c[0], [a.decode() for a in c[1]],
            [e.decode() for e in c[2]], c[3].decode()] for c in loader.calls], "kept": str(kept) in fds,
            "closed": str(closed) in fds, "cleared": k.mm.cleared if isinstance(k.mm, FakeMM) else -1,
            "usr1": k.signals.action(signal.SIGUSR1).handler, "usr2": k.signals.action(signal.SIGUSR2).handler,
            "exe": k.exe, "argv": [a.decode() for a in k.argv], "trampoline": mem.prot_at(k.sigreturn_addr),
            "trace": trace.getvalue().splitlines()[-1],
        })  # fmt: skip
        return 0

    status, result = run_child(body)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert result["errors"] == {
        "missing": -errno.ENOENT, "x86": -errno.ENOEXEC, "text": -errno.ENOEXEC, "noexec": -errno.EACCES,
        ".": -errno.EACCES,
    }  # fmt: skip
    assert result["replaced"] == [0x10078, 0x3FF000]
    # binfmt_script: the interpreter runs with its argument, the script's path and the original arguments
    assert result["loader"] == [[str(prog), [str(prog), "-x", str(script), "a"], ["X=1"], str(script)]]
    assert result["kept"] and not result["closed"]
    assert result["cleared"] == 1
    assert (result["usr1"], result["usr2"]) == (0, 1)  # handlers reset, ignored stays ignored
    assert result["exe"] == str(prog) and result["argv"] == [str(prog), "-x", str(script), "a"]
    assert result["trampoline"] == 5  # re-mapped r-x in the new address space
    assert result["trace"].startswith(f'execve("{script}", ["prog", "a"], 0x')
    assert result["trace"].endswith(" /* 1 vars */) = 0")


def test_execve_without_a_loader_or_with_a_failing_one(tmp_path: Path) -> None:
    prog = riscv_elf(tmp_path / "prog")
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    argv = strings(s, ["prog"])
    assert call(k, "execve", s.cstr(str(prog)), argv, 0) == -errno.ENOSYS

    def body(out: int) -> int:
        def broken(path: str, argv: Any, envp: Any, execfn: bytes) -> tuple[int, int]:
            raise OSError(errno.EIO, "bad segment")

        k2, mem2, _, _ = make_kernel(loader=broken)
        out = k2.reserve_fd(out)
        s2 = Scratch(mem2)
        try:
            call(k2, "execve", s2.cstr(str(prog)), strings(s2, ["prog"]), 0)
        except Exception as e:
            report(out, type(e).__name__ + ":" + str(getattr(e, "sig", "")))
        return 0

    _, result = run_child(body)
    assert result == f"GuestKilled:{int(signal.SIGSEGV)}"  # past the point of no return


# -- host signals ----------------------------------------------------------------------------------------


def host_kernel() -> tuple[Kernel[Rv64Cpu], Any, Any]:
    k, mem, cpu, _ = make_kernel(host_signals=True, strace=None)
    return k, mem, cpu


def test_a_handled_host_signal_interrupts_a_blocking_read() -> None:
    def body(out: int) -> int:
        k, mem, cpu = host_kernel()
        s = Scratch(mem)
        call(k, "rt_sigaction", signal.SIGUSR1, s.put(struct.pack("<QQQ", 0x20000, 0, 0)), 0, 8)
        r, _ = os.pipe()
        os.write(out, b"ready\n")
        cpu.pc = 0x5004
        ret = signed(k.syscall(NR["read"], (r, s.alloc(16), 16)))
        cpu.x[10] = ret & (2**64 - 1)
        k.deliver_signals(cpu)
        report(out, [ret, cpu.pc, cpu.x[10]])
        return 0

    status, result = run_child(body, kill_after(signal.SIGUSR1, 0.2))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert result == [-errno.EINTR, 0x20000, signal.SIGUSR1]


def test_wait4_keeps_its_child_when_sigchld_arrives_with_it() -> None:
    """The child's exit wakes wait4 and raises SIGCHLD at once: the status must not be lost to the signal."""

    def body(out: int) -> int:
        k, mem, _ = host_kernel()
        s = Scratch(mem)
        call(k, "rt_sigaction", signal.SIGCHLD, s.put(struct.pack("<QQQ", 0x20000, 0, 0)), 0, 8)
        results = []
        for delay in (0.0, 0.01, 0.05, 0.1):
            pid = os.fork()
            if pid == 0:  # pragma: no cover
                time.sleep(delay)
                os._exit(4)
            status = s.alloc(4)
            got = call(k, "wait4", pid, status, 0, 0)  # a zombie is reaped even with SIGCHLD already pending
            results.append([got == pid, os.WEXITSTATUS(s.i32(status)), signal.SIGCHLD in k.signals.pending])
            k.signals.pending.clear()
        report(out, results)
        return 0

    status, result = run_child(body)
    assert os.WIFEXITED(status), status
    assert result == [[True, 4, True]] * 4


def test_a_default_host_signal_kills_the_emulator_like_the_program() -> None:
    def body(out: int) -> int:
        k, mem, _ = host_kernel()  # Python's KeyboardInterrupt handler gives way to the guest's default
        s = Scratch(mem)
        r, _ = os.pipe()
        os.write(out, b"ready\n")
        call(k, "read", r, s.alloc(16), 16)
        return 3

    status, _ = run_child(body, kill_after(signal.SIGINT, 0.1))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT


def test_a_blocked_host_signal_waits_until_unblocked() -> None:
    def body(out: int) -> int:
        k, mem, _ = host_kernel()
        s = Scratch(mem)
        call(k, "rt_sigprocmask", 0, s.put(struct.pack("<Q", 1 << (signal.SIGINT - 1))), 0, 8)
        os.write(out, b"ready\n")
        time.sleep(0.5)
        pending = s.alloc(8)
        call(k, "rt_sigpending", pending, 8)
        os.write(out, json.dumps(struct.unpack("<Q", mem.read(pending, 8))[0]).encode())
        call(k, "rt_sigprocmask", 1, s.put(struct.pack("<Q", 1 << (signal.SIGINT - 1))), 0, 8)
        return 3  # not reached: SIGINT's default action ends us

    status, pending = run_child(body, kill_after(signal.SIGINT, 0))
    assert pending == 1 << (signal.SIGINT - 1)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT


@pytest.mark.parametrize("ignore", [False, True])
def test_sigpipe_follows_the_guest(ignore: bool) -> None:
    def body(out: int) -> int:
        k, mem, _ = host_kernel()
        s = Scratch(mem)
        if ignore:
            call(k, "rt_sigaction", signal.SIGPIPE, s.put(struct.pack("<QQQ", 1, 0, 0)), 0, 8)
        r, w = os.pipe()
        os.close(r)
        report(out, call(k, "write", w, s.put(b"x"), 1))
        return 0

    status, result = run_child(body)
    if ignore:
        assert os.WIFEXITED(status) and result == -errno.EPIPE
    else:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGPIPE


def test_sigsuspend_wakes_for_a_host_signal() -> None:
    def body(out: int) -> int:
        k, mem, cpu = host_kernel()
        s = Scratch(mem)
        call(k, "rt_sigaction", signal.SIGUSR2, s.put(struct.pack("<QQQ", 0x20000, 0, 0)), 0, 8)
        call(k, "rt_sigprocmask", 0, s.put(struct.pack("<Q", 1 << (signal.SIGUSR2 - 1))), 0, 8)
        os.write(out, b"ready\n")
        ret = call(k, "rt_sigsuspend", s.put(struct.pack("<Q", 0)), 8)
        k.deliver_signals(cpu)
        info = struct.unpack("<iii4xi", mem.read(cpu.x[2], 20))
        report(out, [ret, cpu.pc, list(info)])
        return 0

    status, result = run_child(body, kill_after(signal.SIGUSR2, 0.1))
    assert os.WIFEXITED(status), status
    assert result == [-errno.EINTR, 0x20000, [signal.SIGUSR2, 0, 0, os.getpid()]]  # sigwaitinfo knows the sender


def test_die_by_signal_reproduces_the_guest_s_death() -> None:
    def body(out: int) -> int:
        sys.stderr.flush()
        die_by_signal(signal.SIGSEGV)

    status, _ = run_child(body)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV and not os.WCOREDUMP(status)
