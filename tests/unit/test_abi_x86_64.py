"""The x86-64 ABI: its syscall numbers, `struct stat` and `struct sigaction`, the rt_sigframe (checked against
offsets written out here from the kernel's uapi headers and signal code, independently of the module), the
register conventions, and the x86-64-only calls served through the personality's generic handlers."""

from __future__ import annotations

import contextlib
import copy
import errno
import io
import os
import random
import select
import signal
import stat
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from isola.emu.memory import FlatMemory
from isola.linux.abi.x86_64 import SYSCALLS, X86_64Abi, X86Cpu
from isola.linux.guest import PROT_READ, PROT_WRITE
from isola.linux.kernel import AT_FDCWD, MASK64, GuestKilled, Kernel
from tests.unit.test_linux_support import SCRATCH, SCRATCH_SIZE, STACK_TOP, FakeMM, Scratch, signed

NR = {name: nr for nr, name in SYSCALLS.items()}
MEM_SIZE = 64 << 20
UNMAPPED = 0x2000000
HANDLER = 0x401000
RESTORER = 0x402000
USR1, USR2, SEGV = signal.SIGUSR1, signal.SIGUSR2, signal.SIGSEGV
SA_SIGINFO, SA_RESTORER, SA_ONSTACK, SA_RESTART = 0x4, 0x04000000, 0x08000000, 0x10000000
# EFLAGS bits (asm/processor-flags.h) and the mask rt_sigreturn takes from the frame (asm/sighandling.h FIX_EFLAGS:
# AC OF DF TF SF ZF AF PF CF RF).
CF, ZF, IF, DF, TF, RF, AC = 0x1, 0x40, 0x200, 0x400, 0x100, 0x10000, 0x40000
FIX_EFLAGS = 0x50DD5

# struct rt_sigframe {char *pretcode; struct ucontext uc; struct siginfo info;} (signal_64.c, sigframe.h):
FRAME_SIZE = 8 + 304 + 128
UC = 8
INFO = 8 + 304
UC_FLAGS, UC_LINK, UC_STACK, MC, UC_SIGMASK = UC + 0, UC + 8, UC + 16, UC + 40, UC + 296
# struct sigcontext (uapi asm/sigcontext.h, 64-bit): 18 u64 from r8 to eflags, then cs gs fs ss as u16.
SC_ORDER = ["r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx", "rdx", "rax", "rcx"]
SC_ORDER += ["rsp", "rip", "rflags"]
SC_CS, SC_GS, SC_FS, SC_SS = MC + 144, MC + 146, MC + 148, MC + 150
SC_ERR, SC_TRAPNO, SC_OLDMASK, SC_CR2, SC_FPSTATE, SC_RESERVED = (MC + o for o in (152, 160, 168, 176, 184, 192))
# The FXSAVE image: mxcsr at 24, mxcsr_mask at 28, sw_reserved (struct _fpx_sw_bytes) in bytes 464..511.
FX_MXCSR, FX_MXCSR_MASK, FX_SW = 24, 28, 464


@dataclass
class X86:
    """A register file the way the engine keeps one. fxrstor loads what FXRSTOR loads in 64-bit mode (bytes
    0..415 except the read-only MXCSR_MASK); the rest of the image is the CPU's own."""

    rax: int = 0
    rbx: int = 0
    rcx: int = 0
    rdx: int = 0
    rsi: int = 0
    rdi: int = 0
    rbp: int = 0
    rsp: int = 0
    r8: int = 0
    r9: int = 0
    r10: int = 0
    r11: int = 0
    r12: int = 0
    r13: int = 0
    r14: int = 0
    r15: int = 0
    rip: int = 0
    rflags: int = 0x202
    fs_base: int = 0
    gs_base: int = 0
    orig_rax: int = MASK64
    trapno: int = 0
    err: int = 0
    cr2: int = 0
    fpu: bytearray = field(default_factory=lambda: fx_image(mxcsr=0x1F80, mask=0xFFFF))
    loads: int = 0

    def fxsave(self) -> bytes:
        return bytes(self.fpu)

    def fxrstor(self, image: bytes) -> None:
        assert len(image) == 512
        self.fpu[0:28] = image[0:28]
        self.fpu[32:416] = image[32:416]
        self.loads += 1


def fx_image(*, mxcsr: int, mask: int, seed: int | None = None) -> bytearray:
    image = bytearray(random.Random(seed).randbytes(512)) if seed is not None else bytearray(512)
    struct.pack_into("<HH", image, 0, 0x037F, 0)
    struct.pack_into("<II", image, FX_MXCSR, mxcsr, mask)
    return image


def make_kernel(**kwargs: Any) -> tuple[Kernel[X86Cpu], FlatMemory, X86, io.StringIO]:
    mem = FlatMemory(MEM_SIZE)
    mem.map(SCRATCH, SCRATCH_SIZE, PROT_READ | PROT_WRITE)
    mem.map(STACK_TOP - 0x100000, 0x100000, PROT_READ | PROT_WRITE)
    cpu = X86(rsp=STACK_TOP - 0x1000)
    trace = io.StringIO()
    options: dict[str, Any] = {"exe": "/usr/bin/guest-program", "host_signals": False, "strace": trace}
    options.update(kwargs)
    abi = X86_64Abi(0x178BFBFF)
    return Kernel(abi, mem, FakeMM(mem), cpu, **options), mem, cpu, trace


def call(k: Kernel[X86Cpu], name: str, *args: int) -> int:
    return signed(k.syscall(NR[name], tuple(a & MASK64 for a in args)))


def bit(sig: int) -> int:
    return 1 << (sig - 1)


def u64(mem: FlatMemory, addr: int) -> int:
    return int(struct.unpack("<Q", mem.read(addr, 8))[0])


@pytest.fixture(autouse=True)
def _keep_descriptors() -> Iterator[None]:
    before = set(os.listdir("/proc/self/fd"))
    yield
    for name in set(os.listdir("/proc/self/fd")) - before:
        with contextlib.suppress(OSError):
            os.close(int(name))


# -- numbers and identity --------------------------------------------------------------------------------------


def test_well_known_numbers_are_syscall_64_tbl_s() -> None:
    expected = {
        "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6, "poll": 7, "mmap": 9,
        "rt_sigaction": 13, "rt_sigreturn": 15, "ioctl": 16, "pread64": 17, "pwrite64": 18, "access": 21,
        "pipe": 22, "select": 23, "dup2": 33, "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "exit": 60,
        "wait4": 61, "kill": 62, "uname": 63, "fcntl": 72, "getdents": 78, "getpgrp": 111, "sigaltstack": 131,
        "arch_prctl": 158, "gettid": 186, "time": 201, "futex": 202, "getdents64": 217, "set_tid_address": 218,
        "clock_gettime": 228, "exit_group": 231, "tgkill": 234, "openat": 257, "newfstatat": 262, "renameat": 264,
        "ppoll": 271, "pipe2": 293, "prlimit64": 302, "getrandom": 318, "statx": 332, "rseq": 334,
        "clone3": 435, "faccessat2": 439, "fchmodat2": 452, "map_shadow_stack": 453,
    }  # fmt: skip
    assert {name: NR[name] for name in expected} == expected
    assert set(SYSCALLS) == set(range(335)) | set(range(424, 454))  # 335..423 are unused on x86-64
    assert len(set(SYSCALLS.values())) == len(SYSCALLS)


def test_every_x86_only_method_names_a_table_entry_and_is_served() -> None:
    k, _, _, _ = make_kernel()
    methods = {name[4:] for name in dir(X86_64Abi) if name.startswith("sys_")}
    assert methods <= set(SYSCALLS.values())
    assert methods <= k.implemented()
    wanted = {"read", "write", "open", "close", "stat", "fstat", "lstat", "poll", "lseek", "mmap", "brk", "ioctl"}
    wanted |= {"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "pipe", "select", "dup2", "getpid", "fork"}
    wanted |= {"vfork", "clone", "execve", "exit", "wait4", "kill", "uname", "fcntl", "getdents", "getdents64"}
    wanted |= {"getcwd", "chdir", "rename", "mkdir", "rmdir", "unlink", "readlink", "chmod", "arch_prctl"}
    wanted |= {"exit_group", "openat", "newfstatat", "set_tid_address", "getpgrp", "time", "access", "pause"}
    assert not wanted - k.implemented()


def test_identity() -> None:
    abi = X86_64Abi(0x178BFBFF)
    assert (abi.name, abi.uname_machine, abi.elf_machine, abi.platform) == ("x86_64", "x86_64", 62, "x86_64")
    assert (abi.hwcap, abi.hwcap2) == (0x178BFBFF, 0)  # AT_HWCAP2 is always there on x86, FSGSBASE only if said
    assert X86_64Abi(1, 2).hwcap2 == 2
    assert abi.clone_args == ("flags", "stack", "parent_tid", "child_tid", "tls")
    assert (abi.minsigstksz, abi.sigaction_size) == (2048, 32)


def test_the_trampoline_is_mov_15_eax_syscall() -> None:
    k, mem, _, _ = make_kernel()
    # B8 id = mov $imm32, %eax; 0F 05 = syscall
    assert mem.read(k.sigreturn_addr, 7) == bytes([0xB8, 15, 0, 0, 0, 0x0F, 0x05])
    assert mem.prot_at(k.sigreturn_addr) == PROT_READ | 4


# -- structures --------------------------------------------------------------------------------------------


def test_stat_layout_byte_by_byte(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 1000)
    os.link(f, tmp_path / "second")
    os.utime(f, ns=(-1_500_000_000, 1_700_000_000_123_456_789))  # an atime before 1970
    st = os.stat(f)
    data = X86_64Abi(0).pack_stat(st)
    assert len(data) == 144

    def at(offset: int, fmt: str) -> int:
        return int(struct.unpack_from("<" + fmt, data, offset)[0])

    assert (at(0, "Q"), at(8, "Q"), at(16, "Q")) == (st.st_dev, st.st_ino, 2)  # nlink before mode
    assert (at(24, "I"), at(28, "I"), at(32, "I"), at(36, "I")) == (st.st_mode, st.st_uid, st.st_gid, 0)
    assert (at(40, "Q"), at(48, "q"), at(56, "q"), at(64, "q")) == (0, 1000, st.st_blksize, st.st_blocks)
    assert (at(72, "q"), at(80, "Q")) == (-2, 500_000_000)
    assert (at(88, "q"), at(96, "Q")) == (1_700_000_000, 123_456_789)
    assert at(104, "q") * 10**9 + at(112, "Q") == st.st_ctime_ns
    assert data[120:] == bytes(24)


def test_stat_calls_fill_the_x86_layout(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    (tmp_path / "f").write_bytes(b"abc")
    os.symlink("f", tmp_path / "link")
    buf = s.alloc(144)
    assert call(k, "stat", s.cstr(str(tmp_path / "link")), buf) == 0
    assert struct.unpack_from("<Q", mem.read(buf, 144), 8)[0] == os.stat(tmp_path / "f").st_ino
    assert struct.unpack_from("<q", mem.read(buf, 144), 48)[0] == 3
    assert call(k, "lstat", s.cstr(str(tmp_path / "link")), buf) == 0
    assert stat.S_ISLNK(struct.unpack_from("<I", mem.read(buf, 144), 24)[0])
    fd = call(k, "open", s.cstr(str(tmp_path / "f")), os.O_RDONLY, 0)
    assert call(k, "fstat", fd, buf) == 0
    assert stat.S_ISREG(struct.unpack_from("<I", mem.read(buf, 144), 24)[0])
    assert call(k, "newfstatat", AT_FDCWD, s.cstr(str(tmp_path / "f")), buf, 0) == 0
    assert struct.unpack_from("<Q", mem.read(buf, 144), 16)[0] == 1
    assert call(k, "stat", s.cstr(str(tmp_path / "nope")), buf) == -errno.ENOENT


def test_sigaction_has_the_restorer_third() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    act = struct.pack("<QQQQ", HANDLER, SA_RESTORER | SA_SIGINFO, RESTORER, bit(USR2))
    old = s.alloc(32)
    assert call(k, "rt_sigaction", USR1, s.put(act), 0, 8) == 0
    assert k.signals.action(USR1).restorer == RESTORER and k.signals.action(USR1).mask == bit(USR2)
    assert call(k, "rt_sigaction", USR1, 0, old, 8) == 0
    assert mem.read(old, 32) == act


# -- registers -----------------------------------------------------------------------------------------------


def test_fork_child_and_rewind() -> None:
    abi = X86_64Abi(0)
    cpu = X86(rax=1234, rsp=0x7000, fs_base=0x10, rip=0x401002, orig_rax=0)
    abi.fork_child(cpu, stack=0, tls=None)
    assert (cpu.rax, cpu.rsp, cpu.fs_base) == (0, 0x7000, 0x10)
    abi.fork_child(cpu, stack=0x9000, tls=0x4242)
    assert (cpu.rax, cpu.rsp, cpu.fs_base) == (0, 0x9000, 0x4242)
    cpu.rax, cpu.rdi = -errno.EINTR & MASK64, 5
    abi.rewind_syscall(cpu, 5)
    assert (cpu.rax, cpu.rip, cpu.rdi) == (0, 0x401000, 5)  # the number back in rax, rip on the `syscall`
    assert (abi.stack_pointer(cpu), abi.program_counter(cpu)) == (0x9000, 0x401000)
    abi.set_program_counter(cpu, 0x1234)
    assert cpu.rip == 0x1234


# -- the signal frame ----------------------------------------------------------------------------------------


def set_action(k: Kernel[X86Cpu], s: Scratch, sig: int, flags: int = SA_RESTORER | SA_SIGINFO, mask: int = 0) -> None:
    act = struct.pack("<QQQQ", HANDLER, flags, RESTORER if flags & SA_RESTORER else 0, mask)
    assert call(k, "rt_sigaction", sig, s.put(act), 0, 8) == 0


def fill_registers(cpu: X86) -> None:
    rng = random.Random(64)
    for name in SC_ORDER[:15]:
        setattr(cpu, name, rng.getrandbits(64))
    cpu.rsp = STACK_TOP - 0x1000 - 8  # not 16-aligned: the frame must be
    cpu.rip = 0x401234
    cpu.rflags = 0x202 | CF | ZF | DF | TF | RF | AC
    cpu.fs_base, cpu.gs_base = 0x7F0000001000, 0x7F0000002000
    cpu.trapno, cpu.err, cpu.cr2 = 14, 6, 0xDEAD000
    cpu.fpu = fx_image(mxcsr=0x1F80 | 0x40, mask=0xFFFF, seed=3)  # random x87/XMM contents, DAZ set


def sigreturn(k: Kernel[X86Cpu], mem: FlatMemory, cpu: X86) -> None:
    """What the engine sees once the handler returns: `ret` pops pretcode, the trampoline's `syscall` (which
    loads rcx and r11 with rip and rflags) traps with rax = 15, and deliver_signals follows."""
    cpu.rip = u64(mem, cpu.rsp)
    cpu.rsp += 8
    cpu.rax = cpu.orig_rax = 15
    cpu.rip += 7
    cpu.rcx, cpu.r11 = cpu.rip, cpu.rflags
    cpu.rax = k.syscall(15, (cpu.rdi, cpu.rsi, cpu.rdx, cpu.r10, cpu.r8, cpu.r9))
    k.pending[0] = False
    k.deliver_signals(cpu)


def deliver_usr1(k: Kernel[X86Cpu], cpu: X86) -> int:
    assert call(k, "kill", os.getpid(), USR1) == 0
    k.deliver_signals(cpu)
    return cpu.rsp


def test_delivery_builds_linux_s_frame() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, mask=bit(USR2))
    assert call(k, "rt_sigprocmask", 2, s.put(struct.pack("<Q", bit(signal.SIGHUP))), 0, 8) == 0
    fill_registers(cpu)
    before = copy.deepcopy(cpu)
    frame = deliver_usr1(k, cpu)

    # Placement (get_sigframe): below the red zone, a 64-aligned FXSAVE area, then the frame, 16-aligned - 8.
    fpstate = u64(mem, frame + SC_FPSTATE)
    assert fpstate == (before.rsp - 128 - 512) & ~63
    assert frame == ((fpstate - FRAME_SIZE) & ~15) - 8 and (frame + 8) % 16 == 0
    # Handler entry: rdi = sig, rsi = &info, rdx = &uc, rax = 0, rsp = frame with pretcode on top.
    assert (cpu.rip, cpu.rdi, cpu.rsi, cpu.rdx, cpu.rax) == (HANDLER, USR1, frame + INFO, frame + UC, 0)
    assert u64(mem, frame) == RESTORER
    assert cpu.rflags == 0x202 | CF | ZF | AC  # DF, TF and RF cleared
    assert (cpu.rbx, cpu.fs_base) == (before.rbx, before.fs_base)  # the others are left alone
    # ucontext
    assert (u64(mem, frame + UC_FLAGS), u64(mem, frame + UC_LINK)) == (2 | 4, 0)  # SIGCONTEXT_SS|STRICT_RESTORE_SS
    assert struct.unpack("<QiiQ", mem.read(frame + UC_STACK, 24)) == (0, 2, 0, 0)  # SS_DISABLE: no altstack
    assert u64(mem, frame + UC_SIGMASK) == bit(signal.SIGHUP)
    # sigcontext
    saved = dict(zip(SC_ORDER, struct.unpack("<18Q", mem.read(frame + MC, 144)), strict=True))
    assert saved == {name: getattr(before, name) for name in SC_ORDER}
    assert struct.unpack("<4H", mem.read(SC_CS + frame, 8)) == (0x33, 0, 0, 0x2B)
    assert (u64(mem, frame + SC_ERR), u64(mem, frame + SC_TRAPNO), u64(mem, frame + SC_CR2)) == (6, 14, 0xDEAD000)
    assert u64(mem, frame + SC_OLDMASK) == bit(signal.SIGHUP)
    assert mem.read(frame + SC_RESERVED, 64) == bytes(64)
    signo, _, code, pid, uid = struct.unpack("<iii4xiI", mem.read(frame + INFO, 24))
    assert (signo, code, pid, uid) == (USR1, 0, os.getpid(), os.getuid())
    # The FXSAVE image, with a zero software-reserved area: a legacy frame, no xstate (UC_FP_XSTATE clear).
    image = mem.read(fpstate, 512)
    assert image[:FX_SW] == before.fpu[:FX_SW] and image[FX_SW:] == bytes(48)
    assert before.fpu[FX_SW:] != bytes(48)
    assert k.signals.blocked == bit(signal.SIGHUP) | bit(USR1) | bit(USR2)


def test_sigreturn_restores_every_register_and_the_fpu() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1)
    fill_registers(cpu)
    before = copy.deepcopy(cpu)
    deliver_usr1(k, cpu)
    for name in SC_ORDER[:15]:  # the handler clobbers what it likes
        setattr(cpu, name, 0x1111)
    cpu.fxrstor(bytes(512))
    cpu.loads = 0
    cpu.rflags = 0x202 | 0x3000  # bits outside FIX_EFLAGS (IF, IOPL...) are not the frame's to change
    sigreturn(k, mem, cpu)
    for name in [*SC_ORDER[:17], "fs_base", "gs_base"]:
        assert getattr(cpu, name) == getattr(before, name), name
    assert cpu.rflags == 0x202 | 0x3000 | (before.rflags & FIX_EFLAGS)
    assert cpu.fpu == before.fpu and cpu.loads == 1
    assert cpu.orig_rax == MASK64  # rt_sigreturn leaves nothing to restart
    assert k.signals.blocked == 0


def test_sigreturn_takes_only_the_user_flags_from_the_frame() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1)
    frame = deliver_usr1(k, cpu)
    mem.write(frame + MC + 17 * 8, struct.pack("<Q", MASK64))
    cpu.rflags = 0x202
    sigreturn(k, mem, cpu)
    assert cpu.rflags == 0x202 | FIX_EFLAGS


def test_without_sa_restorer_the_handler_returns_to_the_personality_s_trampoline() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, flags=0)
    frame = deliver_usr1(k, cpu)
    assert u64(mem, frame) == k.sigreturn_addr


def test_the_red_zone_is_only_skipped_on_the_interrupted_stack() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    alt, size = SCRATCH + 0x80000, 0x10000
    assert call(k, "sigaltstack", s.put(struct.pack("<QiiQ", alt, 0, 0, size)), 0, 0) == 0
    set_action(k, s, USR1, SA_RESTORER | SA_ONSTACK)
    frame = deliver_usr1(k, cpu)
    fpstate = u64(mem, frame + SC_FPSTATE)
    assert fpstate == alt + size - 512  # the top of the alternate stack, no red zone
    assert alt < frame and frame == ((fpstate - FRAME_SIZE) & ~15) - 8
    assert struct.unpack("<QiiQ", mem.read(frame + UC_STACK, 24)) == (alt, 0, 0, size)
    sigreturn(k, mem, cpu)
    assert cpu.rsp == STACK_TOP - 0x1000


def test_a_frame_that_cannot_be_written_kills() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1)
    mem.map(0x3000000, 0x2000, PROT_READ)
    cpu.rsp = 0x3002000
    with pytest.raises(GuestKilled) as killed:
        deliver_usr1(k, cpu)
    assert killed.value.sig == SEGV


def test_bad_fpu_state_in_the_frame_kills_before_any_register_changes() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1)
    frame = deliver_usr1(k, cpu)
    fpstate = u64(mem, frame + SC_FPSTATE)
    mem.write(fpstate + FX_MXCSR, struct.pack("<I", 0x1F80 | 1 << 16))  # beyond MXCSR_MASK: FXRSTOR's #GP
    after = copy.deepcopy(cpu)
    with pytest.raises(GuestKilled) as killed:
        sigreturn(k, mem, cpu)
    assert killed.value.sig == SEGV
    assert cpu.rbx == after.rbx and cpu.loads == 0

    mem.write(fpstate + FX_MXCSR, struct.pack("<I", 0x1F80 | 0x40))  # DAZ: valid only if MXCSR_MASK says so
    cpu.fpu[FX_MXCSR_MASK : FX_MXCSR_MASK + 4] = bytes(4)  # 0 stands for 0xFFBF, which lacks DAZ
    cpu.rsp = frame
    with pytest.raises(GuestKilled):
        sigreturn(k, mem, cpu)
    mem.write(frame + SC_FPSTATE, struct.pack("<Q", fpstate + 8))  # FXRSTOR needs 16-byte alignment
    cpu.rsp = frame
    with pytest.raises(GuestKilled):
        sigreturn(k, mem, cpu)
    cpu.rsp = UNMAPPED
    with pytest.raises(GuestKilled):
        k.syscall(15, ())


def test_a_null_fpstate_resets_the_fpu() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1)
    cpu.fpu = fx_image(mxcsr=0x1F80, mask=0xFFFF, seed=9)
    frame = deliver_usr1(k, cpu)
    mem.write(frame + SC_FPSTATE, bytes(8))
    sigreturn(k, mem, cpu)
    assert struct.unpack_from("<HHH", cpu.fpu, 0) == (0x037F, 0, 0)
    assert struct.unpack_from("<I", cpu.fpu, FX_MXCSR)[0] == 0x1F80
    assert cpu.fpu[32:416] == bytes(384)


@pytest.mark.parametrize("flags", [SA_RESTART, 0])
def test_an_interrupted_call_restarts_through_orig_rax(flags: int) -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1, SA_RESTORER | flags)
    r, _ = os.pipe()  # the fixture closes both ends
    call(k, "kill", os.getpid(), USR1)  # pending as the call starts: it must not sleep past it
    cpu.rip, cpu.rdi, cpu.orig_rax = 0x401002, r, NR["read"]  # the engine has stepped over the `syscall`
    cpu.rax = k.syscall(NR["read"], (r, SCRATCH, 10))
    assert signed(cpu.rax) == -errno.EINTR
    k.deliver_signals(cpu)
    saved = dict(zip(SC_ORDER, struct.unpack("<18Q", mem.read(cpu.rsp + MC, 144)), strict=True))
    if flags:
        assert (saved["rip"], saved["rax"], saved["rdi"]) == (0x401000, NR["read"], r)
    else:
        assert (saved["rip"], saved["rax"]) == (0x401002, -errno.EINTR & MASK64)


# -- x86-64-only calls ---------------------------------------------------------------------------------------


def test_arch_prctl_sets_and_reads_the_segment_bases() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    assert call(k, "arch_prctl", 0x1002, 0x7F0012345000) == 0  # ARCH_SET_FS
    assert call(k, "arch_prctl", 0x1001, 0x7F00ABCDE000) == 0  # ARCH_SET_GS
    assert (cpu.fs_base, cpu.gs_base) == (0x7F0012345000, 0x7F00ABCDE000)
    out = s.alloc(16)
    assert call(k, "arch_prctl", 0x1003, out) == 0  # ARCH_GET_FS
    assert call(k, "arch_prctl", 0x1004, out + 8) == 0  # ARCH_GET_GS
    assert struct.unpack("<QQ", mem.read(out, 16)) == (0x7F0012345000, 0x7F00ABCDE000)
    assert call(k, "arch_prctl", 0x1003, UNMAPPED) == -errno.EFAULT
    task_size_max = (1 << 47) - 4096
    assert call(k, "arch_prctl", 0x1002, task_size_max) == -errno.EPERM
    assert call(k, "arch_prctl", 0x1001, 0xFFFF800000000000) == -errno.EPERM
    assert cpu.fs_base == 0x7F0012345000
    assert call(k, "arch_prctl", 0x1002, task_size_max - 1) == 0
    assert call(k, "arch_prctl", 0x1002, 0) == 0 and cpu.fs_base == 0
    assert call(k, "arch_prctl", 0x1011, 0) == 1  # ARCH_GET_CPUID: cpuid does not fault
    assert call(k, "arch_prctl", 0x3001, 0) == -errno.EINVAL


def test_path_calls_without_at(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)

    def p(name: str) -> int:
        return s.cstr(str(tmp_path / name))

    fd = call(k, "creat", p("a"), 0o600)
    assert fd >= 0 and call(k, "write", fd, s.put(b"hello"), 5) == 5
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o600
    assert call(k, "open", p("a"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644) == -errno.EEXIST
    assert call(k, "access", p("a"), os.R_OK) == 0 and call(k, "access", p("zz"), os.F_OK) == -errno.ENOENT
    assert call(k, "mkdir", p("d"), 0o755) == 0 and (tmp_path / "d").is_dir()
    assert call(k, "rmdir", p("a")) == -errno.ENOTDIR
    assert call(k, "rmdir", p("d")) == 0 and not (tmp_path / "d").exists()
    assert call(k, "rename", p("a"), p("b")) == 0 and (tmp_path / "b").read_bytes() == b"hello"
    assert call(k, "renameat", AT_FDCWD, p("b"), AT_FDCWD, p("a")) == 0 and (tmp_path / "a").exists()
    assert call(k, "link", p("a"), p("hard")) == 0
    assert os.stat(tmp_path / "hard").st_ino == os.stat(tmp_path / "a").st_ino
    assert call(k, "unlink", p("hard")) == 0 and not (tmp_path / "hard").exists()
    assert call(k, "symlink", s.cstr("a"), p("sym")) == 0 and os.readlink(tmp_path / "sym") == "a"
    buf = s.alloc(16)
    assert call(k, "readlink", p("sym"), buf, 16) == 1 and mem.read(buf, 1) == b"a"
    assert call(k, "chmod", p("a"), 0o640) == 0 and stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o640
    assert call(k, "chown", p("a"), os.getuid(), -1) == 0
    assert call(k, "lchown", p("sym"), -1, os.getgid()) == 0
    assert call(k, "mknod", p("fifo"), stat.S_IFIFO | 0o600, 0) == 0
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode)


def test_times(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    f = tmp_path / "f"
    f.write_bytes(b"")
    path = s.cstr(str(f))
    assert call(k, "utime", path, s.put(struct.pack("<qq", 1000, 2000))) == 0
    assert (os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns) == (1000 * 10**9, 2000 * 10**9)
    assert call(k, "utimes", path, s.put(struct.pack("<qqqq", 3, 5, 4, 999_999))) == 0
    assert (os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns) == (3 * 10**9 + 5000, 4 * 10**9 + 999_999_000)
    assert call(k, "utimes", path, s.put(struct.pack("<qqqq", 3, 1_000_000, 4, 0))) == -errno.EINVAL
    dirfd = call(k, "open", s.cstr(str(tmp_path)), os.O_RDONLY | os.O_DIRECTORY, 0)
    assert call(k, "futimesat", dirfd, s.cstr("f"), s.put(struct.pack("<qqqq", 7, 0, 8, 0))) == 0
    assert os.stat(f).st_mtime_ns == 8 * 10**9
    fd = call(k, "open", path, os.O_RDONLY, 0)
    assert call(k, "futimesat", fd, 0, s.put(struct.pack("<qqqq", 9, 0, 10, 0))) == 0  # no path: the fd itself
    assert os.stat(f).st_mtime_ns == 10 * 10**9
    assert call(k, "utime", path, 0) == 0 and abs(os.stat(f).st_mtime - time.time()) < 5
    out = s.alloc(8)
    now = call(k, "time", out)
    assert abs(now - time.time()) < 5 and struct.unpack("<q", mem.read(out, 8))[0] == now
    assert call(k, "time", 0) >= now
    assert call(k, "time", UNMAPPED) == -errno.EFAULT


def test_getdents_gives_the_old_record_with_d_type_last(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    names = {f"entry-{i:03d}" + "x" * (i % 9) for i in range(60)}
    for name in names:
        (tmp_path / name).touch()
    (tmp_path / "sub").mkdir()
    fd = call(k, "open", s.cstr(str(tmp_path)), os.O_RDONLY | os.O_DIRECTORY, 0)
    buf = s.alloc(1024)
    seen: dict[str, int] = {}
    inodes: dict[str, int] = {}
    while (n := call(k, "getdents", fd, buf, 1024)) > 0:
        data, pos = mem.read(buf, n), 0
        while pos < n:
            ino, _, reclen = struct.unpack_from("<QqH", data, pos)  # d_ino, d_off, d_reclen, then d_name at 18
            name = data[pos + 18 : pos + reclen].split(b"\0", 1)[0].decode()
            assert reclen == (18 + len(name) + 2 + 7) // 8 * 8
            seen[name], inodes[name] = data[pos + reclen - 1], ino
            pos += reclen
    assert n == 0
    assert set(seen) == names | {"sub", ".", ".."}
    assert seen["sub"] == 4 and seen["entry-000"] == 8  # DT_DIR, DT_REG
    assert inodes["sub"] == os.stat(tmp_path / "sub").st_ino
    file_fd = call(k, "open", s.cstr(str(tmp_path / "entry-000")), os.O_RDONLY, 0)
    assert call(k, "getdents", file_fd, buf, 1024) == -errno.ENOTDIR


def test_pipe_dup2_and_getpgrp() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    fds = s.alloc(8)
    assert call(k, "pipe", fds) == 0
    r, w = struct.unpack("<ii", mem.read(fds, 8))
    assert os.get_inheritable(r) and os.get_inheritable(w)
    assert call(k, "dup2", w, w) == w  # onto itself: allowed, unlike dup3
    target = os.open("/dev/null", os.O_RDONLY)
    assert call(k, "dup2", w, target) == target
    os.write(target, b"x")
    assert os.read(r, 1) == b"x"
    os.close(target)
    assert call(k, "dup2", target, target) == -errno.EBADF
    assert call(k, "getpgrp") == os.getpgrp()


def test_poll_and_select_take_their_timeouts_by_value() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    r, w = os.pipe()
    fds = s.put(struct.pack("<ihhihh", r, select.POLLIN, 0, w, select.POLLOUT, 0))
    assert call(k, "poll", fds, 2, 0) == 1
    assert [e[2] for e in struct.iter_unpack("<ihh", mem.read(fds, 16))] == [0, select.POLLOUT]
    started = time.monotonic()
    only_r = s.put(struct.pack("<ihh", r, select.POLLIN, 0))
    assert call(k, "poll", only_r, 1, 30) == 0
    assert time.monotonic() - started >= 0.025
    os.write(w, b"x")
    assert call(k, "poll", only_r, 1, -1) == 1  # no timeout, but nothing to wait for

    readset = s.put((1 << r).to_bytes(8, "little"))
    tv = s.put(struct.pack("<qq", 5, 0))
    assert call(k, "select", r + 1, readset, 0, 0, tv) == 1
    assert int.from_bytes(mem.read(readset, 8), "little") == 1 << r
    sec, usec = struct.unpack("<qq", mem.read(tv, 16))
    assert 4 <= sec <= 5 and 0 <= usec < 10**6  # the time left is written back
    os.read(r, 1)
    readset = s.put((1 << r).to_bytes(8, "little"))
    tv = s.put(struct.pack("<qq", 0, 20_000))
    assert call(k, "select", r + 1, readset, 0, 0, tv) == 0
    assert struct.unpack("<qq", mem.read(tv, 16)) == (0, 0)
    assert int.from_bytes(mem.read(readset, 8), "little") == 0
    assert call(k, "select", r + 1, readset, 0, 0, s.put(struct.pack("<qq", 0, -1))) == -errno.EINVAL
    assert call(k, "select", r + 1, readset, 0, 0, s.put(struct.pack("<qq", 1, -1_000_000))) == 0  # that is 0 s
    os.write(w, b"y")
    readset = s.put((1 << r).to_bytes(8, "little"))
    tv = s.put(struct.pack("<qq", 0, 3_000_000))  # normalized as kern_select does: 3 s
    assert call(k, "select", r + 1, readset, 0, 0, tv) == 1
    assert struct.unpack("<qq", mem.read(tv, 16))[0] >= 2
    os.close(r)
    os.close(w)


def test_pause_ends_with_eintr_when_a_handled_signal_is_pending() -> None:
    k, mem, cpu, _ = make_kernel()
    s = Scratch(mem)
    set_action(k, s, USR1)
    call(k, "kill", os.getpid(), USR1)
    assert call(k, "pause") == -errno.EINTR
    k.deliver_signals(cpu)
    assert cpu.rip == HANDLER


def test_alarm_is_the_host_s_timer() -> None:
    k, _, _, _ = make_kernel()
    previous = signal.alarm(0)
    try:
        assert call(k, "alarm", 100) == 0
        assert 99 <= call(k, "alarm", 0) <= 100
        assert signal.alarm(0) == 0
    finally:
        signal.alarm(previous)


@pytest.mark.parametrize("name", ["fork", "vfork"])
def test_fork_and_vfork_are_clones_that_signal_the_parent(name: str) -> None:
    k, _, cpu, _ = make_kernel()
    cpu.rax, cpu.rsp = NR[name], 0x3FF000
    pid = call(k, name)
    if pid == 0:  # the child: report what fork_child made of the registers, then vanish
        os._exit(0 if (cpu.rax, cpu.rsp) == (0, 0x3FF000) else 1)
    assert pid > 0
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
