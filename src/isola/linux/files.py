"""File and descriptor system calls: guest fds are host fds, so each call is the host's own on the same numbers.

Two Python habits must not leak into the guest: `os.open`/`os.dup` make descriptors close-on-exec, so the
guest's O_CLOEXEC choice is re-applied explicitly; and Python retries EINTR, so calls that can block (reads
and writes of pipes and terminals, poll, locks, sendfile) go through libc and `Kernel.blocking`.
Structures the host kernel fills with the guest's layout (dirent64, statx, statfs, termios, winsize, flock)
pass through as bytes; `struct stat` is the ABI's.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import math
import os
import resource
import select
import struct
import time
from typing import TYPE_CHECKING, Any

from isola.linux.guest import PROT_READ, PROT_WRITE, GuestFault, SyscallError
from isola.linux.kernel import AT_FDCWD, MAX_RW_COUNT, fd_ready, host_read, host_write, libc, s32, s64

if TYPE_CHECKING:
    from isola.linux.kernel import Kernel

AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EACCESS = 0x200
AT_EMPTY_PATH = 0x1000
UIO_MAXIOV = 1024
AF_UNIX = 1  # <linux/socket.h>
STATX_SIZE = 256
STATFS_SIZE = 120  # LP64 asm-generic struct statfs, identical on x86-64
FLOCK_SIZE = 32  # struct flock {short type, whence; off_t start, len; pid_t pid}
DIRENT_BUF_MAX = 1 << 20

# fcntl commands (<asm-generic/fcntl.h>)
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETLK, F_SETLK, F_SETLKW, F_SETOWN, F_GETOWN = range(10)
F_SETSIG, F_GETSIG = 10, 11
F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38
F_SETLEASE, F_GETLEASE, F_NOTIFY, F_DUPFD_CLOEXEC = 1024, 1025, 1026, 1030
F_SETPIPE_SZ, F_GETPIPE_SZ, F_ADD_SEALS, F_GET_SEALS = 1031, 1032, 1033, 1034
_FCNTL_INT = {F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_SETOWN, F_GETOWN, F_SETSIG, F_GETSIG, F_SETLEASE}
_FCNTL_INT |= {F_GETLEASE, F_NOTIFY, F_SETPIPE_SZ, F_GETPIPE_SZ, F_ADD_SEALS, F_GET_SEALS}
_FCNTL_LOCK = {F_GETLK: False, F_SETLK: False, F_SETLKW: True, F_OFD_GETLK: False, F_OFD_SETLK: False}
_FCNTL_LOCK[F_OFD_SETLKW] = True  # value: the command may block

# Terminal and descriptor ioctls (<asm-generic/ioctls.h>, the same on riscv64 and x86-64): request -> how the
# argument moves: ("out", n) the host fills n bytes for the guest, ("in", n) the guest's n bytes go to the
# host, ("int", 0) the argument is a plain integer, ("none", 0) there is none. Anything else is ENOTTY.
TERMIOS_SIZE = 36  # struct termios: 4 x u32 flags, c_line, c_cc[19]
IOCTLS: dict[int, tuple[str, str, int]] = {
    0x5401: ("TCGETS", "out", TERMIOS_SIZE),
    0x5402: ("TCSETS", "in", TERMIOS_SIZE),
    0x5403: ("TCSETSW", "in", TERMIOS_SIZE),
    0x5404: ("TCSETSF", "in", TERMIOS_SIZE),
    0x5409: ("TCSBRK", "int", 0),
    0x540A: ("TCXONC", "int", 0),
    0x540B: ("TCFLSH", "int", 0),
    0x540E: ("TIOCSCTTY", "int", 0),
    0x540F: ("TIOCGPGRP", "out", 4),
    0x5410: ("TIOCSPGRP", "in", 4),
    0x5413: ("TIOCGWINSZ", "out", 8),
    0x5414: ("TIOCSWINSZ", "in", 8),
    0x541B: ("FIONREAD", "out", 4),
    0x5421: ("FIONBIO", "in", 4),
    0x5422: ("TIOCNOTTY", "none", 0),
    0x5429: ("TIOCGSID", "out", 4),
    0x5450: ("FIONCLEX", "none", 0),
    0x5451: ("FIOCLEX", "none", 0),
}

_IOVEC = struct.Struct("<QQ")
_TIMESPEC = struct.Struct("<qq")
_POLLFD_GUEST = struct.Struct("<ihh")


class _POLLFD(ctypes.Structure):
    _fields_ = (("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short))


_SELECT_IN = select.POLLIN | select.POLLHUP | select.POLLERR
_SELECT_OUT = select.POLLOUT | select.POLLERR
_SELECT_EX = select.POLLPRI


def _cpath(path: bytes) -> ctypes.c_char_p:
    return ctypes.c_char_p(path)


def _timeout(ts: tuple[int, int]) -> float:
    sec, nsec = ts
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise SyscallError(errno.EINVAL)
    return sec + nsec / 1e9


class Files:
    def __init__(self, kernel: Kernel[Any]) -> None:
        self.k = kernel

    # -- opening and closing ---------------------------------------------------------------------------------

    def sys_openat(self, dirfd: int, path: int, flags: int, mode: int) -> int:
        k = self.k
        name = k.cstring(path)
        flags = s32(flags)
        special = self._proc_self(name)
        if special is not None:
            fd = os.memfd_create("isola-proc", os.MFD_CLOEXEC)
            os.write(fd, special)
            os.lseek(fd, 0, os.SEEK_SET)
        else:
            fd = os.open(k.host_path(name), flags, mode & 0o7777, dir_fd=k.dirfd(dirfd))
        if not flags & os.O_CLOEXEC:
            os.set_inheritable(fd, True)
        return fd

    def _proc_self(self, name: bytes) -> bytes | None:
        """Files of /proc/self that must describe the guest rather than the emulator."""
        for prefix in (b"/proc/self/", b"/proc/thread-self/", b"/proc/%d/" % os.getpid()):
            if name.startswith(prefix):
                leaf = name[len(prefix) :]
                if leaf == b"maps":
                    return self.k.mm.maps_text().encode()
                if leaf == b"cmdline":
                    return b"".join(arg + b"\0" for arg in self.k.argv)
        return None

    def sys_close(self, fd: int) -> int:
        os.close(self.k.fd(fd))
        return 0

    def sys_close_range(self, first: int, last: int, flags: int) -> int:
        first, last = first & 0xFFFFFFFF, last & 0xFFFFFFFF
        if flags & ~(2 | 4) or first > last:  # CLOSE_RANGE_UNSHARE (nothing to unshare), CLOSE_RANGE_CLOEXEC
            raise SyscallError(errno.EINVAL)
        for fd in self.open_fds():
            if first <= fd <= last:
                if flags & 4:
                    os.set_inheritable(fd, False)
                else:
                    os.close(fd)
        return 0

    def open_fds(self) -> list[int]:
        """The guest's open descriptors (the emulator's reserved ones excluded)."""
        fds = self.k.host_fds()
        result = []
        for fd in fds:
            try:
                os.fstat(fd)  # the listing's own descriptor is gone by now
            except OSError:
                continue
            if fd not in self.k.private_fds:
                result.append(fd)
        return result

    def close_on_exec(self) -> None:
        """execve keeps the process, so the kernel's sweep of close-on-exec descriptors is ours to do."""
        for fd in self.open_fds():
            if not os.get_inheritable(fd):
                os.close(fd)

    def sys_dup(self, fd: int) -> int:
        return fcntl.fcntl(self.k.fd(fd), F_DUPFD, 0)  # os.dup would add close-on-exec

    def sys_dup3(self, old: int, new: int, flags: int) -> int:
        old_fd, new_fd = self.k.fd(old), self.k.fd(new)
        if old_fd == new_fd or flags & ~os.O_CLOEXEC:
            raise SyscallError(errno.EINVAL)
        return os.dup2(old_fd, new_fd, inheritable=not flags & os.O_CLOEXEC)

    def sys_pipe2(self, fds: int, flags: int) -> int:
        r, w = os.pipe2(s32(flags))
        try:
            self.k.mem.write(fds, struct.pack("<ii", r, w))
        except GuestFault:
            os.close(r)
            os.close(w)
            raise
        return 0

    def sys_socketpair(self, domain: int, type_: int, protocol: int, fds: int) -> int:
        """A connected pair of local sockets (the only family a sandboxed program gets: no network)."""
        if s32(domain) != AF_UNIX:
            raise SyscallError(errno.EAFNOSUPPORT)
        pair = (ctypes.c_int * 2)()
        libc("socketpair", s32(domain), s32(type_), s32(protocol), pair)
        try:
            self.k.mem.write(fds, struct.pack("<ii", *pair))
        except GuestFault:
            os.close(pair[0])
            os.close(pair[1])
            raise
        return 0

    def sys_memfd_create(self, name: int, flags: int) -> int:
        label = self.k.mem.read_cstring(name, 250)
        return os.memfd_create(os.fsdecode(label), flags & 0xFFFFFFFF)

    def sys_fcntl(self, fd: int, cmd: int, arg: int) -> int:
        k = self.k
        host_fd, cmd = k.fd(fd), s32(cmd)
        if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
            return fcntl.fcntl(host_fd, cmd, max(s32(arg), 0))
        if cmd in _FCNTL_INT:
            return fcntl.fcntl(host_fd, cmd, s32(arg))
        if cmd in _FCNTL_LOCK:
            lock = ctypes.create_string_buffer(k.mem.read(arg, FLOCK_SIZE), FLOCK_SIZE)
            k.blocking(libc, "fcntl", host_fd, cmd, lock, restartable=True)
            if cmd in (F_GETLK, F_OFD_GETLK):
                k.mem.write(arg, lock.raw)
            return 0
        raise SyscallError(errno.EINVAL)

    def sys_flock(self, fd: int, op: int) -> int:
        self.k.blocking(libc, "flock", self.k.fd(fd), s32(op), restartable=True)
        return 0

    def sys_ioctl(self, fd: int, request: int, arg: int) -> int:
        k = self.k
        host_fd = k.fd(fd)
        request &= 0xFFFFFFFF
        spec = IOCTLS.get(request)
        if spec is None:
            raise SyscallError(errno.ENOTTY)
        _, direction, size = spec
        if direction == "none":
            return fcntl.ioctl(host_fd, request)
        if direction == "int":
            return fcntl.ioctl(host_fd, request, s32(arg))
        if direction == "in":
            fcntl.ioctl(host_fd, request, k.mem.read(arg, size))  # TCSETSW/TCSETSF wait for output to drain
            return 0
        k.extent(arg, size, PROT_WRITE)
        k.mem.write(arg, fcntl.ioctl(host_fd, request, bytes(size)))
        return 0

    # -- reading and writing ---------------------------------------------------------------------------------

    def sys_read(self, fd: int, buf: int, count: int) -> int:
        k = self.k
        host_fd = k.fd(fd)
        n = k.extent(buf, min(count, MAX_RW_COUNT), PROT_WRITE)
        data = k.blocking(host_read, host_fd, n, restartable=True, ready=fd_ready(host_fd, select.POLLIN))
        if data:
            k.mem.write(buf, data)
        return len(data)

    def sys_write(self, fd: int, buf: int, count: int) -> int:
        k = self.k
        host_fd = k.fd(fd)
        data = k.read_in(buf, min(count, MAX_RW_COUNT))
        return k.blocking(host_write, host_fd, data, restartable=True, ready=fd_ready(host_fd, select.POLLOUT))

    def sys_pread64(self, fd: int, buf: int, count: int, offset: int) -> int:
        k = self.k
        host_fd = k.fd(fd)
        n = k.extent(buf, min(count, MAX_RW_COUNT), PROT_WRITE)
        data = os.pread(host_fd, n, s64(offset))  # only seekable files: they do not block
        if data:
            k.mem.write(buf, data)
        return len(data)

    def sys_pwrite64(self, fd: int, buf: int, count: int, offset: int) -> int:
        k = self.k
        host_fd = k.fd(fd)
        return os.pwrite(host_fd, k.read_in(buf, min(count, MAX_RW_COUNT)), s64(offset))

    def _iovecs(self, iov: int, count: int, prot: int) -> list[tuple[int, int]]:
        """The guest's (base, len) pairs, each clipped to what the guest may access, the total to Linux's cap."""
        count = s32(count)
        if not 0 <= count <= UIO_MAXIOV:
            raise SyscallError(errno.EINVAL)
        raw = self.k.mem.read(iov, _IOVEC.size * count) if count else b""
        result: list[tuple[int, int]] = []
        budget = MAX_RW_COUNT
        for base, length in _IOVEC.iter_unpack(raw):
            if length >> 63:
                raise SyscallError(errno.EINVAL)
            length = min(length, budget)
            if length:
                try:
                    usable = self.k.extent(base, length, prot)
                except GuestFault:
                    if result:  # bytes move up to the first bad one: the calls end short, not with EFAULT
                        break
                    raise
                result.append((base, usable))
                budget -= usable
                if usable < length:  # Linux stops at the first bad byte
                    break
        return result

    def _scatter(self, vecs: list[tuple[int, int]], data: bytes) -> None:
        pos = 0
        for base, length in vecs:
            if pos >= len(data):
                break
            self.k.mem.write(base, data[pos : pos + length])
            pos += length

    def sys_readv(self, fd: int, iov: int, count: int) -> int:
        k = self.k
        host_fd = k.fd(fd)
        vecs = self._iovecs(iov, count, PROT_WRITE)
        ready = fd_ready(host_fd, select.POLLIN)
        data = k.blocking(host_read, host_fd, sum(n for _, n in vecs), restartable=True, ready=ready)
        self._scatter(vecs, data)
        return len(data)

    def sys_writev(self, fd: int, iov: int, count: int) -> int:
        k = self.k
        host_fd = k.fd(fd)
        data = b"".join(k.mem.read(base, n) for base, n in self._iovecs(iov, count, PROT_READ))
        return k.blocking(host_write, host_fd, data, restartable=True, ready=fd_ready(host_fd, select.POLLOUT))

    def sys_preadv(self, fd: int, iov: int, count: int, offset: int, _offset_high: int) -> int:
        k = self.k
        host_fd = k.fd(fd)
        vecs = self._iovecs(iov, count, PROT_WRITE)
        data = os.pread(host_fd, sum(n for _, n in vecs), s64(offset))
        self._scatter(vecs, data)
        return len(data)

    def sys_pwritev(self, fd: int, iov: int, count: int, offset: int, _offset_high: int) -> int:
        k = self.k
        host_fd = k.fd(fd)
        data = b"".join(k.mem.read(base, n) for base, n in self._iovecs(iov, count, PROT_READ))
        return os.pwrite(host_fd, data, s64(offset))

    def sys_lseek(self, fd: int, offset: int, whence: int) -> int:
        return os.lseek(self.k.fd(fd), s64(offset), s32(whence))

    def sys_sendfile(self, out_fd: int, in_fd: int, offset_ptr: int, count: int) -> int:
        k = self.k
        out_host, in_host = k.fd(out_fd), k.fd(in_fd)
        count = min(count, MAX_RW_COUNT)
        offset = ctypes.c_int64(s64(k.read_u64(offset_ptr)) if offset_ptr else 0)
        where = ctypes.byref(offset) if offset_ptr else None

        def send() -> int:
            return libc("sendfile", out_host, in_host, where, ctypes.c_size_t(count), restype=ctypes.c_ssize_t)

        sent = k.blocking(send, restartable=True, ready=fd_ready(out_host, select.POLLOUT))
        if offset_ptr:
            k.write_int(offset_ptr, offset.value, 8)
        return sent

    def sys_copy_file_range(self, fd_in: int, off_in: int, fd_out: int, off_out: int, length: int, flags: int) -> int:
        k = self.k
        src, dst = k.fd(fd_in), k.fd(fd_out)
        if flags:
            raise SyscallError(errno.EINVAL)
        pos_in = s64(k.read_u64(off_in)) if off_in else None
        pos_out = s64(k.read_u64(off_out)) if off_out else None
        copied = os.copy_file_range(src, dst, min(length, MAX_RW_COUNT), pos_in, pos_out)
        if pos_in is not None:
            k.write_int(off_in, pos_in + copied, 8)
        if pos_out is not None:
            k.write_int(off_out, pos_out + copied, 8)
        return copied

    def sys_fsync(self, fd: int) -> int:
        os.fsync(self.k.fd(fd))
        return 0

    def sys_fdatasync(self, fd: int) -> int:
        os.fdatasync(self.k.fd(fd))
        return 0

    def sys_sync(self) -> int:
        os.sync()
        return 0

    def sys_fadvise64(self, fd: int, offset: int, length: int, advice: int) -> int:
        os.posix_fadvise(self.k.fd(fd), s64(offset), s64(length), s32(advice))
        return 0

    def sys_ftruncate(self, fd: int, length: int) -> int:
        os.ftruncate(self.k.fd(fd), s64(length))
        return 0

    def sys_truncate(self, path: int, length: int) -> int:
        os.truncate(self.k.path(path), s64(length))
        return 0

    def sys_fallocate(self, fd: int, mode: int, offset: int, length: int) -> int:
        libc("fallocate", self.k.fd(fd), s32(mode), ctypes.c_int64(s64(offset)), ctypes.c_int64(s64(length)))
        return 0

    # -- waiting on descriptors ------------------------------------------------------------------------------

    def _poll(
        self, wanted: dict[int, int], timeout_ptr: int, sigmask_ptr: int, setsize: int, seconds: float | None = None
    ) -> dict[int, int]:
        """poll(2) on host fds; the guest's timespec gets the time left, and its signal mask (if given) holds
        for the wait, as ppoll/pselect6 do. Without a timespec, `seconds` is a timeout the guest passed by value
        (x86-64's poll and select): nothing is written back for it here."""
        k = self.k
        deadline = None
        if timeout_ptr:
            deadline = time.monotonic() + _timeout(_TIMESPEC.unpack(k.mem.read(timeout_ptr, 16)))
        elif seconds is not None:
            deadline = time.monotonic() + seconds
        if sigmask_ptr:
            k.signals.set_temporary_mask(sigmask_ptr, setsize)
        fds = [fd for fd in wanted if fd not in k.private_fds]
        table = (_POLLFD * len(fds))(*(_POLLFD(fd, wanted[fd], 0) for fd in fds))

        def wait(ms: int | None = None) -> int:
            if ms is None:
                ms = -1 if deadline is None else math.ceil(max(0.0, deadline - time.monotonic()) * 1000)
            return libc("poll", table, ctypes.c_ulong(len(fds)), ms)

        try:
            k.blocking(wait, restartable=False, ready=lambda: wait(0) > 0)
        except SyscallError as e:
            if sigmask_ptr and e.errno != errno.EINTR:
                k.signals.end_temporary_mask()
            if e.errno == errno.EINTR and deadline is not None and timeout_ptr:
                self._time_left(timeout_ptr, deadline)
            raise
        if sigmask_ptr:  # interrupted, the mask stays until the handler's frame has saved the original
            k.signals.end_temporary_mask()
        ready = {entry.fd: entry.revents & 0xFFFF for entry in table if entry.revents}
        for fd in wanted:
            if fd in k.private_fds:
                ready[fd] = select.POLLNVAL
        if deadline is not None and timeout_ptr:
            self._time_left(timeout_ptr, deadline)
        return ready

    def _time_left(self, timeout_ptr: int, deadline: float) -> None:
        left = max(0.0, deadline - time.monotonic())
        self.k.mem.write(timeout_ptr, _TIMESPEC.pack(int(left), int(left % 1 * 1e9)))

    def sys_ppoll(self, fds: int, nfds: int, timeout: int, sigmask: int, setsize: int) -> int:
        return self.ppoll(fds, nfds, timeout, sigmask, setsize)

    def ppoll(self, fds: int, nfds: int, timeout: int, sigmask: int, setsize: int, seconds: float | None = None) -> int:
        """ppoll(2), or with `seconds` (and no timespec) an ABI's poll(2) whose timeout is a value."""
        k = self.k
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and nfds > soft:
            raise SyscallError(errno.EINVAL)
        entries = list(_POLLFD_GUEST.iter_unpack(k.mem.read(fds, _POLLFD_GUEST.size * nfds))) if nfds else []
        wanted: dict[int, int] = {}
        for fd, events, _ in entries:
            if fd >= 0:
                wanted[fd] = wanted.get(fd, 0) | (events & 0xFFFF)
        ready = self._poll(wanted, timeout, sigmask, setsize, seconds)
        out = bytearray()
        count = 0
        for fd, events, _ in entries:
            always = select.POLLERR | select.POLLHUP | select.POLLNVAL
            revents = ready.get(fd, 0) & ((events & 0xFFFF) | always) if fd >= 0 else 0
            count += bool(revents)
            out += _POLLFD_GUEST.pack(fd, events, revents - 0x10000 if revents & 0x8000 else revents)
        if out:
            k.mem.write(fds, out)
        return count

    def sys_pselect6(self, nfds: int, readfds: int, writefds: int, exceptfds: int, timeout: int, sig: int) -> int:
        return self.pselect(nfds, readfds, writefds, exceptfds, timeout, sig)

    def pselect(
        self,
        nfds: int,
        readfds: int,
        writefds: int,
        exceptfds: int,
        timeout: int,
        sig: int,
        seconds: float | None = None,
    ) -> int:
        """pselect6(2), or with `seconds` (and no timespec) an ABI's select(2), whose timeval is its own."""
        k = self.k
        nfds = s32(nfds)
        if nfds < 0:
            raise SyscallError(errno.EINVAL)
        nbytes = (nfds + 63) // 64 * 8
        sets = [
            int.from_bytes(k.mem.read(ptr, nbytes), "little") if ptr else 0 for ptr in (readfds, writefds, exceptfds)
        ]
        wanted: dict[int, int] = {}
        for fd in range(nfds):
            events = 0
            for bits, mask in zip(sets, (_SELECT_IN, _SELECT_OUT, _SELECT_EX), strict=True):
                if bits >> fd & 1:
                    events |= mask
            if events:
                if fd in k.private_fds:
                    raise SyscallError(errno.EBADF)
                wanted[fd] = events
        sigmask_ptr, setsize = 0, 8
        if sig:
            sigmask_ptr, setsize = struct.unpack("<QQ", k.mem.read(sig, 16))
        ready = self._poll(wanted, timeout, sigmask_ptr, setsize, seconds)
        if any(revents & select.POLLNVAL for revents in ready.values()):
            raise SyscallError(errno.EBADF)
        result = [0, 0, 0]
        for fd, revents in ready.items():
            for i, mask in enumerate((_SELECT_IN, _SELECT_OUT, _SELECT_EX)):
                if sets[i] >> fd & 1 and revents & mask:
                    result[i] |= 1 << fd
        for ptr, bits in zip((readfds, writefds, exceptfds), result, strict=True):
            if ptr:
                k.mem.write(ptr, bits.to_bytes(nbytes, "little"))
        return sum(bin(bits).count("1") for bits in result)

    # -- metadata --------------------------------------------------------------------------------------------

    def _stat(self, dirfd: int, path: int, flags: int) -> os.stat_result:
        k = self.k
        name = k.cstring(path)
        if not name and flags & AT_EMPTY_PATH:
            target = k.dirfd(dirfd)
            return os.stat(target if target is not None else ".")
        return os.stat(k.host_path(name), dir_fd=k.dirfd(dirfd), follow_symlinks=not flags & AT_SYMLINK_NOFOLLOW)

    def sys_newfstatat(self, dirfd: int, path: int, buf: int, flags: int) -> int:
        st = self._stat(dirfd, path, s32(flags))
        self.k.mem.write(buf, self.k.abi.pack_stat(st))
        self.k.noted_stat = st
        return 0

    def sys_fstat(self, fd: int, buf: int) -> int:
        st = os.fstat(self.k.fd(fd))
        self.k.mem.write(buf, self.k.abi.pack_stat(st))
        self.k.noted_stat = st
        return 0

    def sys_statx(self, dirfd: int, path: int, flags: int, mask: int, buf: int) -> int:
        k = self.k
        name = k.cstring(path)
        fd = k.dirfd(dirfd)
        out = ctypes.create_string_buffer(STATX_SIZE)
        libc("statx", AT_FDCWD if fd is None else fd, _cpath(k.host_path(name)), s32(flags), mask & 0xFFFFFFFF, out)
        k.mem.write(buf, out.raw)
        return 0

    def sys_statfs(self, path: int, buf: int) -> int:
        out = ctypes.create_string_buffer(STATFS_SIZE)
        libc("statfs", _cpath(self.k.path(path)), out)
        self.k.mem.write(buf, out.raw)
        return 0

    def sys_fstatfs(self, fd: int, buf: int) -> int:
        out = ctypes.create_string_buffer(STATFS_SIZE)
        libc("fstatfs", self.k.fd(fd), out)
        self.k.mem.write(buf, out.raw)
        return 0

    def sys_getdents64(self, fd: int, buf: int, count: int) -> int:
        k = self.k
        host_fd = k.fd(fd)
        n = k.extent(buf, min(count & 0xFFFFFFFF, DIRENT_BUF_MAX), PROT_WRITE)
        out = ctypes.create_string_buffer(n)
        got = libc("getdents64", host_fd, out, ctypes.c_size_t(n), restype=ctypes.c_ssize_t)
        if got:
            k.mem.write(buf, out.raw[:got])
        return got

    def sys_readlinkat(self, dirfd: int, path: int, buf: int, size: int) -> int:
        k = self.k
        size = s32(size)
        if size <= 0:
            raise SyscallError(errno.EINVAL)
        name = k.cstring(path)
        target = os.fsencode(k.exe) if k.is_proc_exe(name) else os.readlink(k.host_path(name), dir_fd=k.dirfd(dirfd))
        data = target[:size]
        k.mem.write(buf, data)
        return len(data)

    def sys_faccessat(self, dirfd: int, path: int, mode: int) -> int:
        return self.sys_faccessat2(dirfd, path, mode, 0)

    def sys_faccessat2(self, dirfd: int, path: int, mode: int, flags: int) -> int:
        k = self.k
        fd = k.dirfd(dirfd)
        libc("faccessat", AT_FDCWD if fd is None else fd, _cpath(k.path(path)), s32(mode), s32(flags))
        return 0

    def sys_fchmod(self, fd: int, mode: int) -> int:
        os.chmod(self.k.fd(fd), mode & 0o7777)
        return 0

    def sys_fchmodat(self, dirfd: int, path: int, mode: int) -> int:
        os.chmod(self.k.path(path), mode & 0o7777, dir_fd=self.k.dirfd(dirfd))
        return 0

    def sys_fchown(self, fd: int, uid: int, gid: int) -> int:
        os.chown(self.k.fd(fd), s32(uid), s32(gid))
        return 0

    def sys_fchownat(self, dirfd: int, path: int, uid: int, gid: int, flags: int) -> int:
        k = self.k
        name, flags = k.cstring(path), s32(flags)
        if not name and flags & AT_EMPTY_PATH:
            target = k.dirfd(dirfd)
            os.chown(target if target is not None else ".", s32(uid), s32(gid))
        else:
            nofollow = bool(flags & AT_SYMLINK_NOFOLLOW)
            os.chown(k.host_path(name), s32(uid), s32(gid), dir_fd=k.dirfd(dirfd), follow_symlinks=not nofollow)
        return 0

    def sys_utimensat(self, dirfd: int, path: int, times: int, flags: int) -> int:
        k = self.k
        stamps = ctypes.create_string_buffer(k.mem.read(times, 32), 32) if times else None
        fd = k.dirfd(dirfd)
        if not path:  # Linux's futimens: operate on dirfd itself
            if fd is None:
                raise SyscallError(errno.EFAULT)
            libc("futimens", fd, stamps)
        else:
            libc("utimensat", AT_FDCWD if fd is None else fd, _cpath(k.path(path)), stamps, s32(flags))
        return 0

    # -- the namespace ---------------------------------------------------------------------------------------

    def sys_mkdirat(self, dirfd: int, path: int, mode: int) -> int:
        os.mkdir(self.k.path(path), mode & 0o7777, dir_fd=self.k.dirfd(dirfd))
        return 0

    def sys_mknodat(self, dirfd: int, path: int, mode: int, dev: int) -> int:
        os.mknod(self.k.path(path), mode & 0xFFFFFFFF, dev & 0xFFFFFFFF, dir_fd=self.k.dirfd(dirfd))
        return 0

    def sys_unlinkat(self, dirfd: int, path: int, flags: int) -> int:
        k = self.k
        flags = s32(flags)
        if flags & ~AT_REMOVEDIR:
            raise SyscallError(errno.EINVAL)
        if flags & AT_REMOVEDIR:
            os.rmdir(k.path(path), dir_fd=k.dirfd(dirfd))
        else:
            os.unlink(k.path(path), dir_fd=k.dirfd(dirfd))
        return 0

    def sys_renameat2(self, olddirfd: int, old: int, newdirfd: int, new: int, flags: int) -> int:
        k = self.k
        src, dst = k.path(old), k.path(new)
        src_dir, dst_dir = k.dirfd(olddirfd), k.dirfd(newdirfd)
        flags &= 0xFFFFFFFF
        if not flags:
            os.rename(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
        else:  # RENAME_NOREPLACE / RENAME_EXCHANGE / RENAME_WHITEOUT
            at = [AT_FDCWD if d is None else d for d in (src_dir, dst_dir)]
            libc("renameat2", at[0], _cpath(src), at[1], _cpath(dst), ctypes.c_uint(flags))
        return 0

    def sys_symlinkat(self, target: int, newdirfd: int, linkpath: int) -> int:
        k = self.k
        os.symlink(k.cstring(target), k.path(linkpath), dir_fd=k.dirfd(newdirfd))  # the target text is verbatim
        return 0

    def sys_linkat(self, olddirfd: int, old: int, newdirfd: int, new: int, flags: int) -> int:
        k = self.k
        at = [AT_FDCWD if d is None else d for d in (k.dirfd(olddirfd), k.dirfd(newdirfd))]
        libc("linkat", at[0], _cpath(k.path(old)), at[1], _cpath(k.path(new)), s32(flags))
        return 0

    def sys_getcwd(self, buf: int, size: int) -> int:
        cwd = os.getcwdb() + b"\0"
        if len(cwd) > size:
            raise SyscallError(errno.ERANGE)
        self.k.mem.write(buf, cwd)
        return len(cwd)

    def sys_chdir(self, path: int) -> int:
        os.chdir(self.k.path(path))
        return 0

    def sys_fchdir(self, fd: int) -> int:
        os.fchdir(self.k.fd(fd))
        return 0

    def sys_umask(self, mask: int) -> int:
        return os.umask(mask & 0o777)
