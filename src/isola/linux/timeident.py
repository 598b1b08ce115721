"""Time, identity, limits, randomness and scheduling: the host's answers, since the guest is the host process.

Two answers are the guest's own: uname reports the ABI's machine, and sleeps wake early (EINTR, with the time
left written back) when a signal the guest handles arrives.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import struct
import time
from typing import TYPE_CHECKING, Any

from isola.host.libc import TIMER_ABSTIME
from isola.linux.guest import PROT_WRITE, SyscallError
from isola.linux.kernel import MASK64, host_sleep_until, libc, s32

if TYPE_CHECKING:
    from isola.linux.kernel import Kernel

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
GRND_FLAGS = 0x7  # GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE
GETRANDOM_MAX = 0x1FFFFFF  # Linux returns at most 32 MiB - 1 per call
SYSINFO_SIZE = 112  # LP64 struct sysinfo, identical on x86-64
UTS_LEN = 65
RLIM_INFINITY = MASK64
RUSAGE_SIZE = 144

_TIMESPEC = struct.Struct("<qq")
_TIMEVAL = struct.Struct("<qq")
_RLIMIT = struct.Struct("<QQ")


def _from_rlim(value: int) -> int:
    return resource.RLIM_INFINITY if value == RLIM_INFINITY else value


def _to_rlim(value: int) -> int:
    return RLIM_INFINITY if value == resource.RLIM_INFINITY else value


class TimeIdent:
    def __init__(self, kernel: Kernel[Any]) -> None:
        self.k = kernel

    # -- clocks and sleeping ---------------------------------------------------------------------------------

    def sys_clock_gettime(self, clock: int, ts: int) -> int:
        sec, nsec = divmod(time.clock_gettime_ns(s32(clock)), 1_000_000_000)
        self.k.mem.write(ts, _TIMESPEC.pack(sec, nsec))
        return 0

    def sys_clock_getres(self, clock: int, ts: int) -> int:
        res = time.clock_getres(s32(clock))
        if ts:
            ns = round(res * 1e9)
            self.k.mem.write(ts, _TIMESPEC.pack(ns // 1_000_000_000, ns % 1_000_000_000))
        return 0

    def sys_gettimeofday(self, tv: int, tz: int) -> int:
        if tv:
            usec = time.time_ns() // 1000
            self.k.mem.write(tv, _TIMEVAL.pack(usec // 1_000_000, usec % 1_000_000))
        if tz:
            self.k.mem.write(tz, bytes(8))  # the kernel's timezone is UTC with no DST
        return 0

    def _read_timespec(self, addr: int) -> int:
        sec, nsec = _TIMESPEC.unpack(self.k.mem.read(addr, 16))
        if sec < 0 or not 0 <= nsec < 1_000_000_000:
            raise SyscallError(errno.EINVAL)
        return int(sec) * 1_000_000_000 + int(nsec)

    def sys_nanosleep(self, req: int, rem: int) -> int:
        return self.sys_clock_nanosleep(CLOCK_MONOTONIC, 0, req, rem)

    def sys_clock_nanosleep(self, clock: int, flags: int, req: int, rem: int) -> int:
        k = self.k
        clock = s32(clock)
        wanted = self._read_timespec(req)
        now = time.clock_gettime_ns(clock)
        deadline = wanted if flags & TIMER_ABSTIME else now + wanted
        try:
            k.blocking(host_sleep_until, clock, deadline, restartable=False)
        except SyscallError:
            if rem and not flags & TIMER_ABSTIME:
                left = max(0, deadline - time.clock_gettime_ns(clock))
                k.mem.write(rem, _TIMESPEC.pack(left // 1_000_000_000, left % 1_000_000_000))
            raise
        return 0

    def sys_times(self, buf: int) -> int:
        ticks = os.sysconf("SC_CLK_TCK")
        t = os.times()
        if buf:
            fields = (t.user, t.system, t.children_user, t.children_system)
            self.k.mem.write(buf, struct.pack("<4q", *(round(v * ticks) for v in fields)))
        return round(t.elapsed * ticks) & MASK64

    def sys_getrusage(self, who: int, ru: int) -> int:
        out = ctypes.create_string_buffer(RUSAGE_SIZE)  # struct rusage is the same on both sides (LP64)
        libc("getrusage", s32(who), out)
        self.k.mem.write(ru, out.raw)
        return 0

    def sys_sched_yield(self) -> int:
        os.sched_yield()
        return 0

    def sys_sched_getaffinity(self, pid: int, size: int, mask: int) -> int:
        cpus = os.sched_getaffinity(s32(pid))
        nbytes = ((os.cpu_count() or 1) + 63) // 64 * 8
        if size < nbytes or size % 8:
            raise SyscallError(errno.EINVAL)
        self.k.mem.write(mask, sum(1 << c for c in cpus).to_bytes(nbytes, "little"))
        return nbytes

    def sys_sched_setaffinity(self, pid: int, size: int, mask: int) -> int:
        bits = int.from_bytes(self.k.mem.read(mask, min(size, 1024)), "little")
        os.sched_setaffinity(s32(pid), [c for c in range(bits.bit_length()) if bits >> c & 1])
        return 0

    def sys_getpriority(self, which: int, who: int) -> int:
        return 20 - os.getpriority(s32(which), s32(who))  # the syscall's biased form, never negative

    def sys_setpriority(self, which: int, who: int, prio: int) -> int:
        os.setpriority(s32(which), s32(who), s32(prio))
        return 0

    # -- the machine -----------------------------------------------------------------------------------------

    def sys_uname(self, buf: int) -> int:
        u = os.uname()
        fields = (u.sysname, u.nodename, u.release, u.version, self.k.abi.uname_machine, "(none)")
        data = b"".join(os.fsencode(f)[: UTS_LEN - 1].ljust(UTS_LEN, b"\0") for f in fields)
        self.k.mem.write(buf, data)
        return 0

    def sys_sysinfo(self, info: int) -> int:
        out = ctypes.create_string_buffer(SYSINFO_SIZE)
        libc("sysinfo", out)
        self.k.mem.write(info, out.raw)
        return 0

    def sys_getrandom(self, buf: int, length: int, flags: int) -> int:
        k = self.k
        if flags & ~GRND_FLAGS:
            raise SyscallError(errno.EINVAL)
        n = k.extent(buf, min(length, GETRANDOM_MAX), PROT_WRITE)
        data = os.getrandom(n, flags)
        if data:
            k.mem.write(buf, data)
        return len(data)

    # -- limits ----------------------------------------------------------------------------------------------

    def sys_prlimit64(self, pid: int, which: int, new: int, old: int) -> int:
        k = self.k
        pid, which = s32(pid), s32(which)
        try:
            if new:
                soft, hard = _RLIMIT.unpack(k.mem.read(new, 16))
                if soft > hard:
                    raise SyscallError(errno.EINVAL)
                previous = resource.prlimit(pid, which, (_from_rlim(soft), _from_rlim(hard)))
            else:
                previous = resource.prlimit(pid, which)
        except ValueError:
            raise SyscallError(errno.EINVAL) from None
        if old:
            k.mem.write(old, _RLIMIT.pack(_to_rlim(previous[0]), _to_rlim(previous[1])))
        return 0

    def sys_getrlimit(self, which: int, rlim: int) -> int:
        return self.sys_prlimit64(0, which, 0, rlim)

    def sys_setrlimit(self, which: int, rlim: int) -> int:
        return self.sys_prlimit64(0, which, rlim, 0)

    # -- identity --------------------------------------------------------------------------------------------

    def sys_getuid(self) -> int:
        return os.getuid()

    def sys_geteuid(self) -> int:
        return os.geteuid()

    def sys_getgid(self) -> int:
        return os.getgid()

    def sys_getegid(self) -> int:
        return os.getegid()

    def sys_getresuid(self, ruid: int, euid: int, suid: int) -> int:
        for addr, value in zip((ruid, euid, suid), os.getresuid(), strict=True):
            self.k.write_int(addr, value)
        return 0

    def sys_getresgid(self, rgid: int, egid: int, sgid: int) -> int:
        for addr, value in zip((rgid, egid, sgid), os.getresgid(), strict=True):
            self.k.write_int(addr, value)
        return 0

    def sys_getgroups(self, size: int, groups: int) -> int:
        ids = os.getgroups()
        size = s32(size)
        if size < 0 or (size and size < len(ids)):
            raise SyscallError(errno.EINVAL)
        if size and ids:
            self.k.mem.write(groups, struct.pack(f"<{len(ids)}I", *ids))
        return len(ids)

    def sys_setgroups(self, size: int, groups: int) -> int:
        size = s32(size)
        if not 0 <= size <= 65536:
            raise SyscallError(errno.EINVAL)
        os.setgroups(list(struct.unpack(f"<{size}I", self.k.mem.read(groups, 4 * size))) if size else [])
        return 0

    def sys_setuid(self, uid: int) -> int:
        os.setuid(uid & 0xFFFFFFFF)
        return 0

    def sys_setgid(self, gid: int) -> int:
        os.setgid(gid & 0xFFFFFFFF)
        return 0

    def sys_setreuid(self, ruid: int, euid: int) -> int:
        os.setreuid(s32(ruid), s32(euid))
        return 0

    def sys_setregid(self, rgid: int, egid: int) -> int:
        os.setregid(s32(rgid), s32(egid))
        return 0

    def sys_setresuid(self, ruid: int, euid: int, suid: int) -> int:
        os.setresuid(s32(ruid), s32(euid), s32(suid))
        return 0

    def sys_setresgid(self, rgid: int, egid: int, sgid: int) -> int:
        os.setresgid(s32(rgid), s32(egid), s32(sgid))
        return 0

    def sys_getpgid(self, pid: int) -> int:
        return os.getpgid(s32(pid))

    def sys_setpgid(self, pid: int, pgid: int) -> int:
        os.setpgid(s32(pid), s32(pgid))
        return 0

    def sys_getsid(self, pid: int) -> int:
        return os.getsid(s32(pid))

    def sys_setsid(self) -> int:
        os.setsid()
        return os.getpid()
