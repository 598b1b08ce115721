"""The riscv64 Linux ABI (asm-generic numbering, LP64): numbers, `struct stat`, the signal frame, HWCAP.

Facts from the kernel's uapi headers and arch/riscv/kernel/signal.c; layouts are written out as offsets so a
reader can check them against the C structs named in the comments.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Protocol

from isola.linux.abi import Abi, FrameRestored, SigAction, syscall_table
from isola.linux.guest import GuestMemory, SyscallError

if TYPE_CHECKING:
    import os

    from isola.linux.kernel import Kernel

EM_RISCV = 243

# AT_HWCAP: one bit per single-letter extension, bit (letter - 'a'); RV64GC = IMAFD + C.
HWCAP = sum(1 << (ord(c) - ord("a")) for c in "imafdc")


class Rv64Cpu(Protocol):
    """The emulator's register file as the personality sees it (all values unsigned 64-bit bit patterns)."""

    x: list[int]  # x[0] is always 0
    f: list[int]  # f0..f31 as 64-bit patterns (NaN-boxed singles included)
    pc: int
    fcsr: int  # frm << 5 | fflags


# <asm-generic/unistd.h> as riscv64 builds it (plus the riscv-only 258, 259), "number name" pairs.
_SYSCALL_TABLE = """
0 io_setup 1 io_destroy 2 io_submit 3 io_cancel 4 io_getevents 5 setxattr 6 lsetxattr 7 fsetxattr 8 getxattr
9 lgetxattr 10 fgetxattr 11 listxattr 12 llistxattr 13 flistxattr 14 removexattr 15 lremovexattr 16 fremovexattr
17 getcwd 18 lookup_dcookie 19 eventfd2 20 epoll_create1 21 epoll_ctl 22 epoll_pwait 23 dup 24 dup3 25 fcntl
26 inotify_init1 27 inotify_add_watch 28 inotify_rm_watch 29 ioctl 30 ioprio_set 31 ioprio_get 32 flock
33 mknodat 34 mkdirat 35 unlinkat 36 symlinkat 37 linkat 39 umount2 40 mount 41 pivot_root 42 nfsservctl
43 statfs 44 fstatfs 45 truncate 46 ftruncate 47 fallocate 48 faccessat 49 chdir 50 fchdir 51 chroot 52 fchmod
53 fchmodat 54 fchownat 55 fchown 56 openat 57 close 58 vhangup 59 pipe2 60 quotactl 61 getdents64 62 lseek
63 read 64 write 65 readv 66 writev 67 pread64 68 pwrite64 69 preadv 70 pwritev 71 sendfile 72 pselect6 73 ppoll
74 signalfd4 75 vmsplice 76 splice 77 tee 78 readlinkat 79 newfstatat 80 fstat 81 sync 82 fsync 83 fdatasync
84 sync_file_range 85 timerfd_create 86 timerfd_settime 87 timerfd_gettime 88 utimensat 89 acct 90 capget
91 capset 92 personality 93 exit 94 exit_group 95 waitid 96 set_tid_address 97 unshare 98 futex
99 set_robust_list 100 get_robust_list 101 nanosleep 102 getitimer 103 setitimer 104 kexec_load 105 init_module
106 delete_module 107 timer_create 108 timer_gettime 109 timer_getoverrun 110 timer_settime 111 timer_delete
112 clock_settime 113 clock_gettime 114 clock_getres 115 clock_nanosleep 116 syslog 117 ptrace 118 sched_setparam
119 sched_setscheduler 120 sched_getscheduler 121 sched_getparam 122 sched_setaffinity 123 sched_getaffinity
124 sched_yield 125 sched_get_priority_max 126 sched_get_priority_min 127 sched_rr_get_interval
128 restart_syscall 129 kill 130 tkill 131 tgkill 132 sigaltstack 133 rt_sigsuspend 134 rt_sigaction
135 rt_sigprocmask 136 rt_sigpending 137 rt_sigtimedwait 138 rt_sigqueueinfo 139 rt_sigreturn 140 setpriority
141 getpriority 142 reboot 143 setregid 144 setgid 145 setreuid 146 setuid 147 setresuid 148 getresuid
149 setresgid 150 getresgid 151 setfsuid 152 setfsgid 153 times 154 setpgid 155 getpgid 156 getsid 157 setsid
158 getgroups 159 setgroups 160 uname 161 sethostname 162 setdomainname 163 getrlimit 164 setrlimit 165 getrusage
166 umask 167 prctl 168 getcpu 169 gettimeofday 170 settimeofday 171 adjtimex 172 getpid 173 getppid 174 getuid
175 geteuid 176 getgid 177 getegid 178 gettid 179 sysinfo 180 mq_open 181 mq_unlink 182 mq_timedsend
183 mq_timedreceive 184 mq_notify 185 mq_getsetattr 186 msgget 187 msgctl 188 msgrcv 189 msgsnd 190 semget
191 semctl 192 semtimedop 193 semop 194 shmget 195 shmctl 196 shmat 197 shmdt 198 socket 199 socketpair 200 bind
201 listen 202 accept 203 connect 204 getsockname 205 getpeername 206 sendto 207 recvfrom 208 setsockopt
209 getsockopt 210 shutdown 211 sendmsg 212 recvmsg 213 readahead 214 brk 215 munmap 216 mremap 217 add_key
218 request_key 219 keyctl 220 clone 221 execve 222 mmap 223 fadvise64 224 swapon 225 swapoff 226 mprotect
227 msync 228 mlock 229 munlock 230 mlockall 231 munlockall 232 mincore 233 madvise 234 remap_file_pages
235 mbind 236 get_mempolicy 237 set_mempolicy 238 migrate_pages 239 move_pages 240 rt_tgsigqueueinfo
241 perf_event_open 242 accept4 243 recvmmsg 258 riscv_hwprobe 259 riscv_flush_icache 260 wait4 261 prlimit64
262 fanotify_init 263 fanotify_mark 264 name_to_handle_at 265 open_by_handle_at 266 clock_adjtime 267 syncfs
268 setns 269 sendmmsg 270 process_vm_readv 271 process_vm_writev 272 kcmp 273 finit_module 274 sched_setattr
275 sched_getattr 276 renameat2 277 seccomp 278 getrandom 279 memfd_create 280 bpf 281 execveat 282 userfaultfd
283 membarrier 284 mlock2 285 copy_file_range 286 preadv2 287 pwritev2 288 pkey_mprotect 289 pkey_alloc
290 pkey_free 291 statx 292 io_pgetevents 293 rseq 294 kexec_file_load 424 pidfd_send_signal 425 io_uring_setup
426 io_uring_enter 427 io_uring_register 428 open_tree 429 move_mount 430 fsopen 431 fsconfig 432 fsmount
433 fspick 434 pidfd_open 435 clone3 436 close_range 437 openat2 438 pidfd_getfd 439 faccessat2
440 process_madvise 441 epoll_pwait2 442 mount_setattr 443 quotactl_fd 444 landlock_create_ruleset
445 landlock_add_rule 446 landlock_restrict_self 447 memfd_secret 448 process_mrelease 449 futex_waitv
450 set_mempolicy_home_node 451 cachestat 452 fchmodat2
"""
SYSCALLS = syscall_table(_SYSCALL_TABLE)

# asm-generic `struct stat` (128 bytes): dev, ino, mode:u32, nlink:u32, uid:u32, gid:u32, rdev, __pad1, size,
# blksize:i32, __pad2:i32, blocks, atime, atime_nsec, mtime, mtime_nsec, ctime, ctime_nsec, __unused4/5:u32.
_STAT = struct.Struct("<QQIIIIQQqiiqqQqQqQII")

# riscv has no SA_RESTORER: struct sigaction is {sa_handler, sa_flags, sa_mask}.
_SIGACTION = struct.Struct("<QQQ")

# The rt_sigframe: siginfo (128) then struct ucontext:
#   uc_flags@0, uc_link@8, uc_stack@16 (stack_t, 24 bytes), uc_sigmask@40 (8), padding of the sigset area to
#   128 bytes, uc_mcontext@176 (struct sigcontext is 16-byte aligned because of the Q-extension state).
# struct sigcontext: user_regs_struct {pc, x1..x31} (256 bytes), then the FP union sized for the Q extension
#   (528 bytes): D state = f[32] as u64 + fcsr:u32 at +256; the word at +516 is `sc_extdesc.reserved` (must be
#   0 on sigreturn) and +520 the first extension header, {magic, size} = END {0, 0} when there is no V state.
SIGINFO_SIZE = 128
UC_STACK = 16
UC_SIGMASK = 40
UC_MCONTEXT = 176
MC_FP = 256
FP_FCSR = 256
FP_RESERVED = 516
FP_EXT_HDR = 520
SIGCONTEXT_SIZE = MC_FP + 528
UCONTEXT_SIZE = UC_MCONTEXT + SIGCONTEXT_SIZE
FRAME_SIZE = SIGINFO_SIZE + UCONTEXT_SIZE  # 1088

# The sigreturn trampoline: `li a7, 139` (addi a7, zero, __NR_rt_sigreturn); `ecall`.
SIGRETURN_CODE = struct.pack("<II", (139 << 20) | (17 << 7) | 0x13, 0x73)

# riscv_hwprobe keys this emulated hart answers (<asm/hwprobe.h>); others come back with key -1.
_HWPROBE_BASE_BEHAVIOR_IMA = 1
_HWPROBE_IMA_FD = 1 << 0
_HWPROBE_IMA_C = 1 << 1
_HWPROBE = {
    0: 0,  # MVENDORID
    1: 0,  # MARCHID
    2: 0,  # MIMPID
    3: _HWPROBE_BASE_BEHAVIOR_IMA,  # BASE_BEHAVIOR
    4: _HWPROBE_IMA_FD | _HWPROBE_IMA_C,  # IMA_EXT_0: nothing beyond G and C
    5: 0,  # CPUPERF_0: misaligned access speed unknown
}
_EINVAL = 22
_MASK64 = (1 << 64) - 1


class Riscv64Abi(Abi[Rv64Cpu]):
    name = "riscv64"
    uname_machine = "riscv64"
    elf_machine = EM_RISCV
    hwcap = HWCAP
    syscalls = SYSCALLS
    clone_args = ("flags", "stack", "parent_tid", "tls", "child_tid")  # CONFIG_CLONE_BACKWARDS
    minsigstksz = 2048
    sigaction_size = _SIGACTION.size
    sigreturn_code = SIGRETURN_CODE

    def pack_stat(self, st: os.stat_result) -> bytes:
        a_s, a_ns = divmod(st.st_atime_ns, 10**9)
        m_s, m_ns = divmod(st.st_mtime_ns, 10**9)
        c_s, c_ns = divmod(st.st_ctime_ns, 10**9)
        return _STAT.pack(
            st.st_dev, st.st_ino, st.st_mode, min(st.st_nlink, 0xFFFFFFFF), st.st_uid, st.st_gid, st.st_rdev, 0,
            st.st_size, st.st_blksize, 0, st.st_blocks, a_s, a_ns, m_s, m_ns, c_s, c_ns, 0, 0,
        )  # fmt: skip

    def unpack_sigaction(self, data: bytes) -> SigAction:
        handler, flags, mask = _SIGACTION.unpack(data)
        return SigAction(handler, flags, mask)

    def pack_sigaction(self, act: SigAction) -> bytes:
        return _SIGACTION.pack(act.handler, act.flags, act.mask)

    def stack_pointer(self, cpu: Rv64Cpu) -> int:
        return cpu.x[2]

    def program_counter(self, cpu: Rv64Cpu) -> int:
        return cpu.pc

    def set_program_counter(self, cpu: Rv64Cpu, pc: int) -> None:
        cpu.pc = pc

    def fork_child(self, cpu: Rv64Cpu, *, stack: int, tls: int | None) -> None:
        if stack:
            cpu.x[2] = stack
        if tls is not None:
            cpu.x[4] = tls

    def rewind_syscall(self, cpu: Rv64Cpu, arg0: int) -> None:
        cpu.pc = (cpu.pc - 4) & _MASK64  # ecall has no compressed form
        cpu.x[10] = arg0

    def setup_signal_frame(
        self,
        mem: GuestMemory,
        cpu: Rv64Cpu,
        *,
        stack_top: int,
        sig: int,
        siginfo: bytes,
        uc_stack: bytes,
        mask: int,
        handler: int,
        restorer: int,
    ) -> None:
        frame = (stack_top - FRAME_SIZE) & ~0xF
        buf = bytearray(FRAME_SIZE)
        buf[0:SIGINFO_SIZE] = siginfo
        uc = SIGINFO_SIZE
        buf[uc + UC_STACK : uc + UC_STACK + 24] = uc_stack  # uc_flags and uc_link stay 0
        struct.pack_into("<Q", buf, uc + UC_SIGMASK, mask)
        mc = uc + UC_MCONTEXT
        struct.pack_into("<32Q", buf, mc, cpu.pc, *cpu.x[1:32])
        struct.pack_into("<32QI", buf, mc + MC_FP, *cpu.f, cpu.fcsr)  # reserved and END header stay 0
        mem.write(frame, buf)
        cpu.pc = handler
        cpu.x[1] = restorer  # ra
        cpu.x[2] = frame  # sp
        cpu.x[10] = sig  # a0
        cpu.x[11] = frame  # a1: &siginfo, passed even without SA_SIGINFO, as Linux does
        cpu.x[12] = frame + SIGINFO_SIZE  # a2: &ucontext

    def restore_signal_frame(self, mem: GuestMemory, cpu: Rv64Cpu) -> FrameRestored:
        frame = cpu.x[2]
        buf = mem.read(frame, FRAME_SIZE)
        uc = SIGINFO_SIZE
        mc = uc + UC_MCONTEXT
        reserved, magic, size = struct.unpack_from("<III", buf, mc + MC_FP + FP_RESERVED)
        if reserved or magic or size:  # no V state here: anything but the END header is a corrupt frame
            raise SyscallError(_EINVAL, "bad riscv64 signal frame extension")
        (mask,) = struct.unpack_from("<Q", buf, uc + UC_SIGMASK)
        regs = struct.unpack_from("<32Q", buf, mc)
        fp = struct.unpack_from("<32QI", buf, mc + MC_FP)
        cpu.pc = regs[0]
        cpu.x[1:32] = regs[1:]
        cpu.f[:] = fp[:32]
        cpu.fcsr = fp[32]
        return FrameRestored(mask=mask, stack=bytes(buf[uc + UC_STACK : uc + UC_STACK + 24]), result=cpu.x[10])

    # -- riscv-only system calls -------------------------------------------------------------------------

    def sys_riscv_flush_icache(self, k: Kernel[Any], start: int, end: int, flags: int) -> int:
        """Self-modifying code and JITs announce new code here; the engine drops its translations."""
        if flags & ~1:  # only SYS_RISCV_FLUSH_ICACHE_LOCAL is defined
            raise SyscallError(_EINVAL)
        if k.flush_icache is not None:
            k.flush_icache(start, end)
        return 0

    def sys_riscv_hwprobe(self, k: Kernel[Any], pairs: int, count: int, cpusetsize: int, cpus: int, flags: int) -> int:
        """glibc asks which extensions the harts have (every hart is the same here, so the cpu set is moot)."""
        if flags:
            raise SyscallError(_EINVAL)
        for i in range(count):
            addr = pairs + 16 * i
            (key,) = struct.unpack("<q", k.mem.read(addr, 8))
            value = _HWPROBE.get(key)
            k.mem.write(addr, struct.pack("<qQ", -1 if value is None else key, value or 0))
        return 0


ABI = Riscv64Abi()
