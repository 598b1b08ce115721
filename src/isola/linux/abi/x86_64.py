"""The x86-64 Linux ABI (LP64, `syscall` instruction): numbers, `struct stat`, the signal frame, arch_prctl.

The personality serves a static x86-64 program running at CPL3 in a KVM "process VM": the engine traps each
`syscall`, hands the kernel rax and the six argument registers (rdi, rsi, rdx, r10, r8, r9), and writes the
result back to rax. Facts come from the kernel's sources, named where they are used: the syscall table
(arch/x86/entry/syscalls/syscall_64.tbl), the uapi headers (asm/stat.h, asm/sigcontext.h, asm/ucontext.h,
asm/prctl.h, asm/hwcap2.h) and the signal code (arch/x86/kernel/signal.c, signal_64.c, fpu/signal.c).
Layouts are written out as offsets so a reader can check them against the C structs.

x86-64 keeps many calls that the generic table dropped (open, stat, pipe, fork, select...): they are methods
here that call the personality's *at / *2 / p* handlers with the arguments Linux itself would pass.

The FPU state in a signal frame is the 512-byte FXSAVE image, as on a CPU without XSAVE: uc_flags lacks
UC_FP_XSTATE and the image's software-reserved bytes are zero (pre-5.16 kernels wrote exactly that there;
later ones write FP_XSTATE_MAGIC1 even without XSAVE, but nothing reads it unless UC_FP_XSTATE says so). The
engine must therefore not let the guest keep state an FXSAVE image cannot hold (AVX's upper halves): it should
leave OSXSAVE/AVX out of the guest's CPUID and XCR0.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import struct
import time
from typing import TYPE_CHECKING, Any, Protocol

from isola.linux.abi import Abi, FrameRestored, SigAction, syscall_table
from isola.linux.guest import GuestFault, GuestMemory, SyscallError
from isola.linux.kernel import AT_FDCWD, MASK64, s32

if TYPE_CHECKING:
    from isola.linux.kernel import Kernel

EM_X86_64 = 62


class X86Cpu(Protocol):
    """The engine's register file as the personality sees it (all values unsigned 64-bit bit patterns)."""

    rax: int
    rbx: int
    rcx: int
    rdx: int
    rsi: int
    rdi: int
    rbp: int
    rsp: int
    r8: int
    r9: int
    r10: int
    r11: int
    r12: int
    r13: int
    r14: int
    r15: int
    rip: int
    rflags: int
    fs_base: int
    gs_base: int
    orig_rax: int  # the number of the system call in progress (Linux's orig_ax), to restart it
    trapno: int  # the last exception's vector, error code and fault address (for the sigcontext), 0 if none
    err: int
    cr2: int

    def fxsave(self) -> bytes:
        """The 512-byte FXSAVE image of the x87/SSE state."""
        ...

    def fxrstor(self, image: bytes) -> None:
        """Load x87/SSE state from a 512-byte FXSAVE image."""
        ...


# syscall_64.tbl, the "common" and "64" entries (x32's 512..547 are another ABI), "number name" pairs. Names are
# the table's, which are the personality's generic names where the call is the same (4 is `stat`, served by
# sys_newstat; 262 `newfstatat`). Entries with no entry point (uselib, tuxcall...) are kept so that strace
# names them; they answer ENOSYS.
_SYSCALL_TABLE = """
0 read 1 write 2 open 3 close 4 stat 5 fstat 6 lstat 7 poll 8 lseek 9 mmap 10 mprotect 11 munmap 12 brk
13 rt_sigaction 14 rt_sigprocmask 15 rt_sigreturn 16 ioctl 17 pread64 18 pwrite64 19 readv 20 writev 21 access
22 pipe 23 select 24 sched_yield 25 mremap 26 msync 27 mincore 28 madvise 29 shmget 30 shmat 31 shmctl 32 dup
33 dup2 34 pause 35 nanosleep 36 getitimer 37 alarm 38 setitimer 39 getpid 40 sendfile 41 socket 42 connect
43 accept 44 sendto 45 recvfrom 46 sendmsg 47 recvmsg 48 shutdown 49 bind 50 listen 51 getsockname
52 getpeername 53 socketpair 54 setsockopt 55 getsockopt 56 clone 57 fork 58 vfork 59 execve 60 exit 61 wait4
62 kill 63 uname 64 semget 65 semop 66 semctl 67 shmdt 68 msgget 69 msgsnd 70 msgrcv 71 msgctl 72 fcntl
73 flock 74 fsync 75 fdatasync 76 truncate 77 ftruncate 78 getdents 79 getcwd 80 chdir 81 fchdir 82 rename
83 mkdir 84 rmdir 85 creat 86 link 87 unlink 88 symlink 89 readlink 90 chmod 91 fchmod 92 chown 93 fchown
94 lchown 95 umask 96 gettimeofday 97 getrlimit 98 getrusage 99 sysinfo 100 times 101 ptrace 102 getuid
103 syslog 104 getgid 105 setuid 106 setgid 107 geteuid 108 getegid 109 setpgid 110 getppid 111 getpgrp
112 setsid 113 setreuid 114 setregid 115 getgroups 116 setgroups 117 setresuid 118 getresuid 119 setresgid
120 getresgid 121 getpgid 122 setfsuid 123 setfsgid 124 getsid 125 capget 126 capset 127 rt_sigpending
128 rt_sigtimedwait 129 rt_sigqueueinfo 130 rt_sigsuspend 131 sigaltstack 132 utime 133 mknod 134 uselib
135 personality 136 ustat 137 statfs 138 fstatfs 139 sysfs 140 getpriority 141 setpriority 142 sched_setparam
143 sched_getparam 144 sched_setscheduler 145 sched_getscheduler 146 sched_get_priority_max
147 sched_get_priority_min 148 sched_rr_get_interval 149 mlock 150 munlock 151 mlockall 152 munlockall
153 vhangup 154 modify_ldt 155 pivot_root 156 _sysctl 157 prctl 158 arch_prctl 159 adjtimex 160 setrlimit
161 chroot 162 sync 163 acct 164 settimeofday 165 mount 166 umount2 167 swapon 168 swapoff 169 reboot
170 sethostname 171 setdomainname 172 iopl 173 ioperm 174 create_module 175 init_module 176 delete_module
177 get_kernel_syms 178 query_module 179 quotactl 180 nfsservctl 181 getpmsg 182 putpmsg 183 afs_syscall
184 tuxcall 185 security 186 gettid 187 readahead 188 setxattr 189 lsetxattr 190 fsetxattr 191 getxattr
192 lgetxattr 193 fgetxattr 194 listxattr 195 llistxattr 196 flistxattr 197 removexattr 198 lremovexattr
199 fremovexattr 200 tkill 201 time 202 futex 203 sched_setaffinity 204 sched_getaffinity 205 set_thread_area
206 io_setup 207 io_destroy 208 io_getevents 209 io_submit 210 io_cancel 211 get_thread_area 212 lookup_dcookie
213 epoll_create 214 epoll_ctl_old 215 epoll_wait_old 216 remap_file_pages 217 getdents64 218 set_tid_address
219 restart_syscall 220 semtimedop 221 fadvise64 222 timer_create 223 timer_settime 224 timer_gettime
225 timer_getoverrun 226 timer_delete 227 clock_settime 228 clock_gettime 229 clock_getres 230 clock_nanosleep
231 exit_group 232 epoll_wait 233 epoll_ctl 234 tgkill 235 utimes 236 vserver 237 mbind 238 set_mempolicy
239 get_mempolicy 240 mq_open 241 mq_unlink 242 mq_timedsend 243 mq_timedreceive 244 mq_notify
245 mq_getsetattr 246 kexec_load 247 waitid 248 add_key 249 request_key 250 keyctl 251 ioprio_set
252 ioprio_get 253 inotify_init 254 inotify_add_watch 255 inotify_rm_watch 256 migrate_pages 257 openat
258 mkdirat 259 mknodat 260 fchownat 261 futimesat 262 newfstatat 263 unlinkat 264 renameat 265 linkat
266 symlinkat 267 readlinkat 268 fchmodat 269 faccessat 270 pselect6 271 ppoll 272 unshare 273 set_robust_list
274 get_robust_list 275 splice 276 tee 277 sync_file_range 278 vmsplice 279 move_pages 280 utimensat
281 epoll_pwait 282 signalfd 283 timerfd_create 284 eventfd 285 fallocate 286 timerfd_settime
287 timerfd_gettime 288 accept4 289 signalfd4 290 eventfd2 291 epoll_create1 292 dup3 293 pipe2
294 inotify_init1 295 preadv 296 pwritev 297 rt_tgsigqueueinfo 298 perf_event_open 299 recvmmsg
300 fanotify_init 301 fanotify_mark 302 prlimit64 303 name_to_handle_at 304 open_by_handle_at 305 clock_adjtime
306 syncfs 307 sendmmsg 308 setns 309 getcpu 310 process_vm_readv 311 process_vm_writev 312 kcmp
313 finit_module 314 sched_setattr 315 sched_getattr 316 renameat2 317 seccomp 318 getrandom 319 memfd_create
320 kexec_file_load 321 bpf 322 execveat 323 userfaultfd 324 membarrier 325 mlock2 326 copy_file_range
327 preadv2 328 pwritev2 329 pkey_mprotect 330 pkey_alloc 331 pkey_free 332 statx 333 io_pgetevents 334 rseq
424 pidfd_send_signal 425 io_uring_setup 426 io_uring_enter 427 io_uring_register 428 open_tree 429 move_mount
430 fsopen 431 fsconfig 432 fsmount 433 fspick 434 pidfd_open 435 clone3 436 close_range 437 openat2
438 pidfd_getfd 439 faccessat2 440 process_madvise 441 epoll_pwait2 442 mount_setattr 443 quotactl_fd
444 landlock_create_ruleset 445 landlock_add_rule 446 landlock_restrict_self 447 memfd_secret
448 process_mrelease 449 futex_waitv 450 set_mempolicy_home_node 451 cachestat 452 fchmodat2
453 map_shadow_stack
"""
SYSCALLS = syscall_table(_SYSCALL_TABLE)

# <asm/stat.h>, x86-64 `struct stat` (144 bytes): dev, ino, nlink (a u64, and before mode, unlike asm-generic),
# mode:u32, uid:u32, gid:u32, __pad0:u32, rdev, size, blksize, blocks, atime, atime_nsec, mtime, mtime_nsec,
# ctime, ctime_nsec, __unused[3]. Times are packed signed: a time before 1970 keeps its bit pattern.
_STAT = struct.Struct("<QQQIIIIQqqqqqqqqq24x")

# struct kernel_sigaction with SA_RESTORER (x86 defines it): {sa_handler, sa_flags, sa_restorer, sa_mask}.
_SIGACTION = struct.Struct("<QQQQ")

# The signal frame, as get_sigframe() (signal.c) and x64_setup_rt_frame() (signal_64.c) build it:
#   stack_top - 128 (the red zone; not when switching to the alternate stack)
#   fpstate   = round_down(that - 512, 64): the FXSAVE image (fpu__alloc_mathframe, no XSAVE: 512 bytes)
#   frame     = round_down(fpstate - sizeof(rt_sigframe), 16) - 8, so that (rsp + 8) % 16 == 0 at entry
# struct rt_sigframe { char *pretcode; struct ucontext uc; struct siginfo info; } (440 bytes):
#   pretcode@0, uc@8, info@312.
# struct ucontext (asm-generic): uc_flags@0, uc_link@8, uc_stack@16 (stack_t, 24), uc_mcontext@40 (sigcontext,
#   256), uc_sigmask@296 (8): 304 bytes.
# struct sigcontext (uapi sigcontext.h, 64-bit): r8 r9 r10 r11 r12 r13 r14 r15 rdi rsi rbp rbx rdx rax rcx rsp rip
#   eflags (18 u64 from 0), cs gs fs ss (u16 from 144), err@152, trapno@160, oldmask@168, cr2@176,
#   fpstate@184, reserved1[8]@192.
RED_ZONE = 128
FPSTATE_SIZE = 512
FRAME_UC = 8
FRAME_INFO = 312
FRAME_SIZE = 440
UC_FLAGS = 0
UC_STACK = 16
UC_MCONTEXT = 40
UC_SIGMASK = 296
UCONTEXT_SIZE = 304
SC_GREGS = struct.Struct("<18Q")  # r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags
SC_SEGS = 144  # cs, gs, fs, ss as u16
SC_TAIL = struct.Struct("<QQQQQ")  # err, trapno, oldmask, cr2, fpstate, at 152
SC_ERR = 152
SC_FPSTATE = 184
# FXSAVE image: mxcsr@24, mxcsr_mask@28; bytes 464..511 are `sw_reserved` (struct _fpx_sw_bytes).
FX_MXCSR = 24
FX_MXCSR_MASK = 28
FX_SW_RESERVED = 464
MXCSR_DEFAULT_MASK = 0xFFBF  # what MXCSR_MASK means when FXSAVE stores 0 (Intel SDM, "MXCSR_MASK")
MXCSR_DEFAULT = 0x1F80  # the reset value: all exceptions masked, round to nearest
FCW_DEFAULT = 0x037F

UC_FP_XSTATE = 0x1
UC_SIGCONTEXT_SS = 0x2
UC_STRICT_RESTORE_SS = 0x4
USER_CS = 0x33  # __USER_CS: GDT entry 6, RPL 3
USER_DS = 0x2B  # __USER_DS: GDT entry 5, RPL 3

# <asm/processor-flags.h>
X86_EFLAGS_CF = 1 << 0
X86_EFLAGS_PF = 1 << 2
X86_EFLAGS_AF = 1 << 4
X86_EFLAGS_ZF = 1 << 6
X86_EFLAGS_SF = 1 << 7
X86_EFLAGS_TF = 1 << 8
X86_EFLAGS_DF = 1 << 10
X86_EFLAGS_OF = 1 << 11
X86_EFLAGS_RF = 1 << 16
X86_EFLAGS_AC = 1 << 18
# asm/sighandling.h: the flags rt_sigreturn takes from the frame; the rest (IF, IOPL, VM...) stay the kernel's.
FIX_EFLAGS = X86_EFLAGS_AC | X86_EFLAGS_OF | X86_EFLAGS_DF | X86_EFLAGS_TF | X86_EFLAGS_SF | X86_EFLAGS_ZF
FIX_EFLAGS |= X86_EFLAGS_AF | X86_EFLAGS_PF | X86_EFLAGS_CF | X86_EFLAGS_RF
# handle_signal() (signal.c) clears these for the handler: DF per the function-call ABI, RF and TF so that
# neither a debug exception nor single-stepping is inherited.
HANDLER_CLEARS = X86_EFLAGS_DF | X86_EFLAGS_RF | X86_EFLAGS_TF

# The sigreturn trampoline: `mov $15, %eax` (__NR_rt_sigreturn); `syscall`.
SIGRETURN_CODE = b"\xb8\x0f\x00\x00\x00\x0f\x05"

# <asm/hwcap2.h>
HWCAP2_RING3MWAIT = 1 << 0
HWCAP2_FSGSBASE = 1 << 1

# <asm/prctl.h>
ARCH_SET_GS = 0x1001
ARCH_SET_FS = 0x1002
ARCH_GET_FS = 0x1003
ARCH_GET_GS = 0x1004
ARCH_GET_CPUID = 0x1011
# TASK_SIZE_MAX with 4-level paging: (1 << 47) - PAGE_SIZE. arch_prctl refuses a base at or above it (EPERM).
TASK_SIZE_MAX = (1 << 47) - 4096

# Generic values the x86-only calls pass to the generic handlers (as the unsigned registers they take).
CWD = AT_FDCWD & MASK64
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
CLONE_VM = 0x100
CLONE_VFORK = 0x4000

# fs/readdir.c: struct linux_dirent {d_ino, d_off, d_reclen, d_name[], pad, d_type (last byte)} and
# linux_dirent64 {d_ino, d_off, d_reclen, d_type, d_name[]}. Both records are ALIGN(20 + namelen, 8) bytes long,
# so a getdents64 buffer converts in place, record for record.
_DIRENT64 = struct.Struct("<QqHB")
_DIRENT = struct.Struct("<QqH")

_TIMEVAL = struct.Struct("<qq")
_UTIMBUF = struct.Struct("<qq")


class X86_64Abi(Abi[X86Cpu]):
    """The x86-64 ABI. `hwcap` is AT_HWCAP, which on x86 is CPUID.1:EDX of the guest's CPU; `hwcap2` is AT_HWCAP2
    (HWCAP2_FSGSBASE when the engine lets the guest use rd/wrfsbase), which x86 Linux always reports."""

    name = "x86_64"
    uname_machine = "x86_64"
    elf_machine = EM_X86_64
    platform = "x86_64"
    syscalls = SYSCALLS
    clone_args = ("flags", "stack", "parent_tid", "child_tid", "tls")  # no CONFIG_CLONE_BACKWARDS on x86-64
    minsigstksz = 2048  # <asm/signal.h> MINSIGSTKSZ
    sigaction_size = _SIGACTION.size
    sigreturn_code = SIGRETURN_CODE

    def __init__(self, hwcap: int, hwcap2: int | None = None) -> None:
        self.hwcap = hwcap & 0xFFFFFFFF
        self.hwcap2 = 0 if hwcap2 is None else hwcap2

    # -- structures ------------------------------------------------------------------------------------------

    def pack_stat(self, st: os.stat_result) -> bytes:
        a_s, a_ns = divmod(st.st_atime_ns, 10**9)
        m_s, m_ns = divmod(st.st_mtime_ns, 10**9)
        c_s, c_ns = divmod(st.st_ctime_ns, 10**9)
        return _STAT.pack(
            st.st_dev, st.st_ino, st.st_nlink, st.st_mode, st.st_uid, st.st_gid, 0, st.st_rdev, st.st_size,
            st.st_blksize, st.st_blocks, a_s, a_ns, m_s, m_ns, c_s, c_ns,
        )  # fmt: skip

    def unpack_sigaction(self, data: bytes) -> SigAction:
        handler, flags, restorer, mask = _SIGACTION.unpack(data)
        return SigAction(handler, flags, mask, restorer)

    def pack_sigaction(self, act: SigAction) -> bytes:
        return _SIGACTION.pack(act.handler, act.flags, act.restorer, act.mask)

    # -- registers -------------------------------------------------------------------------------------------

    def stack_pointer(self, cpu: X86Cpu) -> int:
        return cpu.rsp

    def program_counter(self, cpu: X86Cpu) -> int:
        return cpu.rip

    def set_program_counter(self, cpu: X86Cpu, pc: int) -> None:
        cpu.rip = pc

    def fork_child(self, cpu: X86Cpu, *, stack: int, tls: int | None) -> None:
        cpu.rax = 0
        if stack:
            cpu.rsp = stack
        if tls is not None:  # CLONE_SETTLS on x86-64 is the new fs base (copy_thread -> ARCH_SET_FS)
            cpu.fs_base = tls

    def rewind_syscall(self, cpu: X86Cpu, arg0: int) -> None:
        """The result went to rax, which held the call's number, not to the first argument (rdi): put the
        number back from orig_rax and step back over the 2-byte `syscall`, as Linux's handle_signal does."""
        cpu.rax = cpu.orig_rax
        cpu.rip = (cpu.rip - 2) & MASK64

    # -- the signal frame ------------------------------------------------------------------------------------

    def setup_signal_frame(
        self,
        mem: GuestMemory,
        cpu: X86Cpu,
        *,
        stack_top: int,
        sig: int,
        siginfo: bytes,
        uc_stack: bytes,
        mask: int,
        handler: int,
        restorer: int,
    ) -> None:
        """Linux requires SA_RESTORER on x86-64 and kills a process without it; the personality passes its own
        trampoline instead (rt_sigaction's caller always sets one in practice: glibc, musl), and a restorer
        of 0 is pushed as given, as Linux would."""
        image = cpu.fxsave()
        if len(image) != FPSTATE_SIZE:
            raise ValueError(f"FXSAVE image of {len(image)} bytes, not {FPSTATE_SIZE}")
        sp = stack_top
        if stack_top == cpu.rsp:  # still on the interrupted stack: leave its red zone alone
            sp = (sp - RED_ZONE) & MASK64
        fpstate = (sp - FPSTATE_SIZE) & ~63
        frame = ((fpstate - FRAME_SIZE) & ~15) - 8
        if frame < 0:
            raise GuestFault(stack_top, "w")
        fp = bytearray(image)
        fp[FX_SW_RESERVED:] = bytes(FPSTATE_SIZE - FX_SW_RESERVED)  # a legacy frame: no xstate descriptor
        mem.write(fpstate, fp)

        buf = bytearray(FRAME_SIZE)
        struct.pack_into("<Q", buf, 0, restorer & MASK64)
        uc = FRAME_UC
        struct.pack_into("<QQ", buf, uc + UC_FLAGS, UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS, 0)
        buf[uc + UC_STACK : uc + UC_STACK + 24] = uc_stack
        sc = uc + UC_MCONTEXT
        SC_GREGS.pack_into(
            buf, sc, cpu.r8, cpu.r9, cpu.r10, cpu.r11, cpu.r12, cpu.r13, cpu.r14, cpu.r15, cpu.rdi, cpu.rsi,
            cpu.rbp, cpu.rbx, cpu.rdx, cpu.rax, cpu.rcx, cpu.rsp, cpu.rip, cpu.rflags,
        )  # fmt: skip
        struct.pack_into("<4H", buf, sc + SC_SEGS, USER_CS, 0, 0, USER_DS)  # Linux stores gs and fs as 0
        SC_TAIL.pack_into(buf, sc + SC_ERR, cpu.err, cpu.trapno, mask & MASK64, cpu.cr2, fpstate)
        struct.pack_into("<Q", buf, uc + UC_SIGMASK, mask & MASK64)
        buf[FRAME_INFO : FRAME_INFO + len(siginfo)] = siginfo
        mem.write(frame, buf)

        cpu.rdi = sig
        cpu.rsi = frame + FRAME_INFO  # &info, passed even without SA_SIGINFO, as Linux does
        cpu.rdx = frame + FRAME_UC  # &uc
        cpu.rax = 0  # for handlers declared without a prototype (variadic calls read al)
        cpu.rsp = frame
        cpu.rip = handler
        cpu.rflags &= ~HANDLER_CLEARS

    def restore_signal_frame(self, mem: GuestMemory, cpu: X86Cpu) -> FrameRestored:
        """The handler's `ret` popped pretcode, so the frame is at rsp - 8. Everything is checked before a
        register changes; the segment selectors in the frame are ignored (the engine runs 64-bit CPL3 code
        only), and fs/gs bases are not in the frame at all."""
        frame = (cpu.rsp - 8) & MASK64
        uc = mem.read(frame + FRAME_UC, UCONTEXT_SIZE)
        (mask,) = struct.unpack_from("<Q", uc, UC_SIGMASK)
        sc = UC_MCONTEXT
        regs = SC_GREGS.unpack_from(uc, sc)
        fpstate = struct.unpack_from("<Q", uc, sc + SC_FPSTATE)[0]
        image = self._restorable_fpstate(mem, cpu, fpstate)
        (cpu.r8, cpu.r9, cpu.r10, cpu.r11, cpu.r12, cpu.r13, cpu.r14, cpu.r15, cpu.rdi, cpu.rsi, cpu.rbp, cpu.rbx,
         cpu.rdx, cpu.rax, cpu.rcx, cpu.rsp, cpu.rip, flags) = regs  # fmt: skip
        cpu.rflags = (cpu.rflags & ~FIX_EFLAGS) | (flags & FIX_EFLAGS)
        cpu.orig_rax = MASK64  # Linux's -1: no system call to restart after this one
        cpu.fxrstor(image)
        return FrameRestored(mask=mask, stack=bytes(uc[UC_STACK : UC_STACK + 24]), result=cpu.rax)

    @staticmethod
    def _restorable_fpstate(mem: GuestMemory, cpu: X86Cpu, fpstate: int) -> bytes:
        """The image rt_sigreturn loads: a NULL fpstate resets the FPU (fpu__restore_sig); otherwise FXRSTOR
        would raise #GP on a misaligned image or reserved MXCSR bits, which Linux turns into SIGSEGV."""
        if not fpstate:
            init = bytearray(FPSTATE_SIZE)
            struct.pack_into("<H", init, 0, FCW_DEFAULT)
            struct.pack_into("<I", init, FX_MXCSR, MXCSR_DEFAULT)
            return bytes(init)
        if fpstate % 16:
            raise SyscallError(errno.EFAULT, "misaligned fpstate in the x86-64 signal frame")
        image = mem.read(fpstate, FPSTATE_SIZE)
        (mxcsr,) = struct.unpack_from("<I", image, FX_MXCSR)
        (valid,) = struct.unpack_from("<I", cpu.fxsave(), FX_MXCSR_MASK)
        if mxcsr & ~(valid or MXCSR_DEFAULT_MASK):
            raise SyscallError(errno.EFAULT, f"reserved MXCSR bits in the x86-64 signal frame: {mxcsr:#x}")
        return image

    # -- x86-64-only system calls ----------------------------------------------------------------------------

    def sys_arch_prctl(self, k: Kernel[Any], code: int, addr: int) -> int:
        """Static glibc sets its thread pointer with ARCH_SET_FS before anything else runs."""
        code = s32(code)
        cpu: X86Cpu = k.cpu
        if code in (ARCH_SET_FS, ARCH_SET_GS):
            if addr >= TASK_SIZE_MAX:
                raise SyscallError(errno.EPERM)
            if code == ARCH_SET_FS:
                cpu.fs_base = addr
            else:
                cpu.gs_base = addr
            return 0
        if code in (ARCH_GET_FS, ARCH_GET_GS):
            k.write_int(addr, cpu.fs_base if code == ARCH_GET_FS else cpu.gs_base, 8)
            return 0
        if code == ARCH_GET_CPUID:
            return 1  # cpuid does not fault (the engine answers it)
        raise SyscallError(errno.EINVAL)

    def sys_open(self, k: Kernel[Any], path: int, flags: int, mode: int) -> int:
        return k.files.sys_openat(CWD, path, flags, mode)

    def sys_creat(self, k: Kernel[Any], path: int, mode: int) -> int:
        return k.files.sys_openat(CWD, path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)

    def sys_stat(self, k: Kernel[Any], path: int, buf: int) -> int:
        return k.files.sys_newfstatat(CWD, path, buf, 0)

    def sys_lstat(self, k: Kernel[Any], path: int, buf: int) -> int:
        return k.files.sys_newfstatat(CWD, path, buf, AT_SYMLINK_NOFOLLOW)

    def sys_access(self, k: Kernel[Any], path: int, mode: int) -> int:
        return k.files.sys_faccessat(CWD, path, mode)

    def sys_pipe(self, k: Kernel[Any], fds: int) -> int:
        return k.files.sys_pipe2(fds, 0)

    def sys_dup2(self, k: Kernel[Any], old: int, new: int) -> int:
        """Unlike dup3, dup2 onto itself is allowed: it only checks that the descriptor is open."""
        if s32(old) == s32(new):
            os.fstat(k.fd(old))
            return s32(new)
        return k.files.sys_dup3(old, new, 0)

    def sys_poll(self, k: Kernel[Any], fds: int, nfds: int, timeout_ms: int) -> int:
        """ppoll with the timeout a value in milliseconds; a negative one waits for ever."""
        ms = s32(timeout_ms)
        return k.files.ppoll(fds, nfds & 0xFFFFFFFF, 0, 0, 8, seconds=ms / 1000 if ms >= 0 else None)

    def sys_select(self, k: Kernel[Any], nfds: int, readfds: int, writefds: int, exceptfds: int, tvp: int) -> int:
        """pselect6 with a timeval, which gets the time left written back (Linux's select does, unless the
        timeout was zero; a timeval it cannot write is left as it was)."""
        seconds = None
        if tvp:
            sec, usec = _TIMEVAL.unpack(k.mem.read(tvp, _TIMEVAL.size))
            carry = int(usec / 1_000_000)  # C's truncating division, as kern_select normalizes
            sec, usec = sec + carry, usec - carry * 1_000_000
            if sec < 0 or usec < 0:
                raise SyscallError(errno.EINVAL)
            seconds = sec + usec / 1e6
        deadline = time.monotonic() + seconds if seconds else None
        try:
            return k.files.pselect(nfds, readfds, writefds, exceptfds, 0, 0, seconds=seconds)
        finally:
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                with contextlib.suppress(GuestFault):
                    k.mem.write(tvp, _TIMEVAL.pack(int(left), int(left % 1 * 1e6)))

    def sys_pause(self, k: Kernel[Any]) -> int:
        k.signals.suspend()

    def sys_alarm(self, k: Kernel[Any], seconds: int) -> int:
        """The guest process is the host process, so the host's own alarm timer serves: SIGALRM then arrives
        like any signal from outside (its disposition is mirrored onto the host)."""
        return signal.alarm(min(seconds & 0xFFFFFFFF, 0x7FFFFFFF))

    def sys_fork(self, k: Kernel[Any]) -> int:
        return k.process.sys_clone(signal.SIGCHLD, 0, 0, 0, 0)

    def sys_vfork(self, k: Kernel[Any]) -> int:
        return k.process.sys_clone(CLONE_VFORK | CLONE_VM | signal.SIGCHLD, 0, 0, 0, 0)

    def sys_getdents(self, k: Kernel[Any], fd: int, dirp: int, count: int) -> int:
        """The old `struct linux_dirent`, converted in place from getdents64's records (same sizes)."""
        got = k.files.sys_getdents64(fd, dirp, count)
        if got:
            data = bytearray(k.mem.read(dirp, got))
            pos = 0
            while pos < got:
                ino, off, reclen, dtype = _DIRENT64.unpack_from(data, pos)
                name_end = data.index(0, pos + _DIRENT64.size, pos + reclen)
                record = _DIRENT.pack(ino, off, reclen) + data[pos + _DIRENT64.size : name_end]
                data[pos : pos + reclen] = record.ljust(reclen - 1, b"\0") + bytes([dtype])
                pos += reclen
            k.mem.write(dirp, data)
        return got

    def sys_rename(self, k: Kernel[Any], old: int, new: int) -> int:
        return k.files.sys_renameat2(CWD, old, CWD, new, 0)

    def sys_renameat(self, k: Kernel[Any], olddirfd: int, old: int, newdirfd: int, new: int) -> int:
        return k.files.sys_renameat2(olddirfd, old, newdirfd, new, 0)

    def sys_mkdir(self, k: Kernel[Any], path: int, mode: int) -> int:
        return k.files.sys_mkdirat(CWD, path, mode)

    def sys_mknod(self, k: Kernel[Any], path: int, mode: int, dev: int) -> int:
        return k.files.sys_mknodat(CWD, path, mode, dev)

    def sys_rmdir(self, k: Kernel[Any], path: int) -> int:
        return k.files.sys_unlinkat(CWD, path, AT_REMOVEDIR)

    def sys_unlink(self, k: Kernel[Any], path: int) -> int:
        return k.files.sys_unlinkat(CWD, path, 0)

    def sys_link(self, k: Kernel[Any], old: int, new: int) -> int:
        return k.files.sys_linkat(CWD, old, CWD, new, 0)

    def sys_symlink(self, k: Kernel[Any], target: int, linkpath: int) -> int:
        return k.files.sys_symlinkat(target, CWD, linkpath)

    def sys_readlink(self, k: Kernel[Any], path: int, buf: int, size: int) -> int:
        return k.files.sys_readlinkat(CWD, path, buf, size)

    def sys_chmod(self, k: Kernel[Any], path: int, mode: int) -> int:
        return k.files.sys_fchmodat(CWD, path, mode)

    def sys_chown(self, k: Kernel[Any], path: int, uid: int, gid: int) -> int:
        return k.files.sys_fchownat(CWD, path, uid, gid, 0)

    def sys_lchown(self, k: Kernel[Any], path: int, uid: int, gid: int) -> int:
        return k.files.sys_fchownat(CWD, path, uid, gid, AT_SYMLINK_NOFOLLOW)

    def sys_getpgrp(self, k: Kernel[Any]) -> int:
        return k.timeident.sys_getpgid(0)

    def sys_time(self, k: Kernel[Any], tloc: int) -> int:
        now = time.time_ns() // 10**9
        if tloc:
            k.write_int(tloc, now, 8)
        return now

    def sys_utime(self, k: Kernel[Any], path: int, times: int) -> int:
        """struct utimbuf {actime, modtime} in whole seconds; NULL means now."""
        stamps = None
        if times:
            actime, modtime = _UTIMBUF.unpack(k.mem.read(times, _UTIMBUF.size))
            stamps = (actime * 10**9, modtime * 10**9)
        return _set_times(k, CWD, path, stamps)

    def sys_utimes(self, k: Kernel[Any], path: int, times: int) -> int:
        return self.sys_futimesat(k, CWD, path, times)

    def sys_futimesat(self, k: Kernel[Any], dirfd: int, path: int, times: int) -> int:
        """Two timevals (NULL: now); microseconds out of [0, 10**6) are EINVAL, as in do_futimesat."""
        stamps = None
        if times:
            a_s, a_us, m_s, m_us = struct.unpack("<qqqq", k.mem.read(times, 32))
            if not (0 <= a_us < 1_000_000 and 0 <= m_us < 1_000_000):
                raise SyscallError(errno.EINVAL)
            stamps = (a_s * 10**9 + a_us * 1000, m_s * 10**9 + m_us * 1000)
        return _set_times(k, dirfd, path, stamps)


def _set_times(k: Kernel[Any], dirfd: int, path: int, stamps: tuple[int, int] | None) -> int:
    """do_utimes: a path relative to `dirfd`, or with no path the descriptor itself."""
    if not path:
        fd = k.dirfd(dirfd)
        if fd is None:
            raise SyscallError(errno.EFAULT)
        if stamps is not None:
            os.utime(fd, ns=stamps)
        else:
            os.utime(fd)
        return 0
    target = k.path(path)
    if stamps is not None:
        os.utime(target, ns=stamps, dir_fd=k.dirfd(dirfd))
    else:
        os.utime(target, dir_fd=k.dirfd(dirfd))
    return 0
