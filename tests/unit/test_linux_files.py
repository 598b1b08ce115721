"""File and descriptor system calls against real files in tmp_path, checked against the host's own view."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pty
import select
import signal
import stat
import struct
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from isola.linux.kernel import AT_FDCWD
from tests.unit.test_linux_support import Scratch, call, make_kernel

AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EMPTY_PATH = 0x1000
# riscv64's struct stat (asm-generic), written out independently of the code under test
STAT_FIELDS = ["dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "pad1", "size", "blksize", "pad2", "blocks"]
STAT_FIELDS += ["atime", "atime_ns", "mtime", "mtime_ns", "ctime", "ctime_ns", "unused4", "unused5"]
STAT = struct.Struct("<QQIIIIQQqiiqqQqQqQII")


@pytest.fixture(autouse=True)
def _keep_descriptors() -> Iterator[None]:
    """Close whatever descriptors a test's guest left open."""
    before = set(os.listdir("/proc/self/fd"))
    yield
    for name in set(os.listdir("/proc/self/fd")) - before:
        with contextlib.suppress(OSError):
            os.close(int(name))


def unpack_stat(data: bytes) -> dict[str, int]:
    return dict(zip(STAT_FIELDS, STAT.unpack(data), strict=True))


def assert_stat_matches(fields: dict[str, int], st: os.stat_result) -> None:
    assert fields["dev"] == st.st_dev
    assert fields["ino"] == st.st_ino
    assert fields["mode"] == st.st_mode
    assert fields["nlink"] == st.st_nlink
    assert (fields["uid"], fields["gid"]) == (st.st_uid, st.st_gid)
    assert fields["rdev"] == st.st_rdev
    assert fields["size"] == st.st_size
    assert fields["blksize"] == st.st_blksize
    assert fields["blocks"] == st.st_blocks
    assert fields["atime"] * 10**9 + fields["atime_ns"] == st.st_atime_ns
    assert fields["mtime"] * 10**9 + fields["mtime_ns"] == st.st_mtime_ns
    assert fields["ctime"] * 10**9 + fields["ctime_ns"] == st.st_ctime_ns


def test_open_read_write_seek_and_positional_io(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    path = s.cstr(str(tmp_path / "f"))
    fd = call(k, "openat", AT_FDCWD, path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    assert fd >= 0 and os.get_inheritable(fd)  # no O_CLOEXEC asked: none given (Python would add it)
    assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o600 & ~os.umask(os.umask(0))
    assert call(k, "openat", AT_FDCWD, path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600) == -errno.EEXIST
    assert call(k, "write", fd, s.put(b"hello world"), 11) == 11
    assert call(k, "lseek", fd, -5, os.SEEK_END) == 6
    buf = s.alloc(64)
    assert call(k, "read", fd, buf, 64) == 5 and mem.read(buf, 5) == b"world"
    assert call(k, "read", fd, buf, 64) == 0
    assert call(k, "pwrite64", fd, s.put(b"J"), 1, 0) == 1
    assert call(k, "pread64", fd, buf, 5, 0) == 5 and mem.read(buf, 5) == b"Jello"
    assert call(k, "lseek", fd, 0, os.SEEK_CUR) == 11  # positional I/O leaves the offset alone
    assert call(k, "lseek", fd, -1, os.SEEK_SET) == -errno.EINVAL
    assert call(k, "close", fd) == 0
    assert call(k, "close", fd) == -errno.EBADF
    cloexec = call(k, "openat", AT_FDCWD, path, os.O_RDONLY | os.O_CLOEXEC, 0)
    assert not os.get_inheritable(cloexec)


def test_openat_relative_to_a_directory_descriptor(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    (tmp_path / "inner").write_bytes(b"x")
    dirfd = call(k, "openat", AT_FDCWD, s.cstr(str(tmp_path)), os.O_RDONLY | os.O_DIRECTORY, 0)
    assert call(k, "openat", dirfd, s.cstr("inner"), os.O_RDONLY, 0) >= 0
    assert call(k, "openat", dirfd, s.cstr("missing"), os.O_RDONLY, 0) == -errno.ENOENT
    assert call(k, "openat", AT_FDCWD, s.cstr(str(tmp_path / "inner")), os.O_RDONLY | os.O_DIRECTORY, 0) == (
        -errno.ENOTDIR
    )


def test_readv_writev(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    fd = call(k, "openat", AT_FDCWD, s.cstr(str(tmp_path / "v")), os.O_RDWR | os.O_CREAT, 0o644)
    a, b = s.put(b"abc"), s.put(b"defgh")
    iov = s.put(struct.pack("<QQQQ", a, 3, b, 5))
    assert call(k, "writev", fd, iov, 2) == 8
    assert (tmp_path / "v").read_bytes() == b"abcdefgh"
    call(k, "lseek", fd, 0, os.SEEK_SET)
    x, y = s.alloc(2), s.alloc(10)
    iov = s.put(struct.pack("<QQQQ", x, 2, y, 10))
    assert call(k, "readv", fd, iov, 2) == 8
    assert mem.read(x, 2) == b"ab" and mem.read(y, 6) == b"cdefgh"
    assert call(k, "readv", fd, iov, 2000) == -errno.EINVAL


def test_stat_layouts_match_the_host_field_by_field(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    f = tmp_path / "file"
    f.write_bytes(b"0123456789" * 1000)
    os.utime(f, ns=(1_234_567_890_123_456_789, 987_654_321_987_654_321))
    buf = s.alloc(128)
    assert call(k, "newfstatat", AT_FDCWD, s.cstr(str(f)), buf, 0) == 0
    assert_stat_matches(unpack_stat(mem.read(buf, 128)), os.stat(f))
    fd = call(k, "openat", AT_FDCWD, s.cstr(str(f)), os.O_RDONLY, 0)
    assert call(k, "fstat", fd, buf) == 0
    assert_stat_matches(unpack_stat(mem.read(buf, 128)), os.stat(f))
    assert call(k, "newfstatat", fd, s.cstr(""), buf, AT_EMPTY_PATH) == 0
    assert_stat_matches(unpack_stat(mem.read(buf, 128)), os.stat(f))
    assert call(k, "newfstatat", fd, s.cstr(""), buf, 0) == -errno.ENOENT
    link = tmp_path / "link"
    link.symlink_to(f)
    assert call(k, "newfstatat", AT_FDCWD, s.cstr(str(link)), buf, AT_SYMLINK_NOFOLLOW) == 0
    assert_stat_matches(unpack_stat(mem.read(buf, 128)), os.lstat(link))
    assert call(k, "newfstatat", AT_FDCWD, s.cstr(str(link)), buf, 0) == 0
    assert_stat_matches(unpack_stat(mem.read(buf, 128)), os.stat(f))
    assert call(k, "fstat", 1, buf) == 0  # whatever fd 1 is (a pipe, a tty, a file)
    assert_stat_matches(unpack_stat(mem.read(buf, 128)), os.fstat(1))
    assert call(k, "newfstatat", AT_FDCWD, s.cstr("/dev/null"), buf, 0) == 0
    fields = unpack_stat(mem.read(buf, 128))
    assert stat.S_ISCHR(fields["mode"]) and fields["rdev"] == os.stat("/dev/null").st_rdev


def test_statx_is_the_host_s(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    f = tmp_path / "file"
    f.write_bytes(b"x" * 777)
    buf = s.alloc(256)
    assert call(k, "statx", AT_FDCWD, s.cstr(str(f)), 0, 0x7FF, buf) == 0  # STATX_BASIC_STATS
    data = mem.read(buf, 256)
    mask, _, _, nlink, uid, gid, mode = struct.unpack_from("<IIQIIIH", data)
    (ino, size) = struct.unpack_from("<QQ", data, 32)
    st = os.stat(f)
    assert mask & 0x7FF == 0x7FF
    assert (nlink, uid, gid, mode, ino, size) == (st.st_nlink, st.st_uid, st.st_gid, st.st_mode, st.st_ino, 777)
    assert call(k, "statx", AT_FDCWD, s.cstr(str(tmp_path / "nope")), 0, 0x7FF, buf) == -errno.ENOENT


def test_getdents64_lists_the_directory(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    names = {f"entry-{i:03d}" for i in range(150)}
    for name in names:
        (tmp_path / name).touch()
    (tmp_path / "sub").mkdir()
    fd = call(k, "openat", AT_FDCWD, s.cstr(str(tmp_path)), os.O_RDONLY | os.O_DIRECTORY, 0)
    buf = s.alloc(2048)
    seen: dict[str, int] = {}
    while (n := call(k, "getdents64", fd, buf, 2048)) > 0:  # small buffer: several calls
        data, pos = mem.read(buf, n), 0
        while pos < n:
            ino, _, reclen, dtype = struct.unpack_from("<QqHB", data, pos)
            name = data[pos + 19 : pos + reclen].split(b"\0", 1)[0].decode()
            seen[name] = dtype
            assert ino and reclen % 8 == 0
            pos += reclen
    assert n == 0
    assert set(seen) == names | {"sub", ".", ".."}
    assert seen["sub"] == 4 and seen["entry-000"] == 8  # DT_DIR, DT_REG
    file_fd = call(k, "openat", AT_FDCWD, s.cstr(str(tmp_path / "sub")), os.O_RDONLY, 0)
    assert call(k, "getdents64", file_fd, buf, 8) == -errno.EINVAL  # too small for one entry


def test_namespace_calls(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    d = s.cstr(str(tmp_path / "dir"))
    assert call(k, "mkdirat", AT_FDCWD, d, 0o755) == 0
    assert (tmp_path / "dir").is_dir()
    assert call(k, "mkdirat", AT_FDCWD, d, 0o755) == -errno.EEXIST
    a, b = s.cstr(str(tmp_path / "a")), s.cstr(str(tmp_path / "b"))
    (tmp_path / "a").write_bytes(b"A")
    (tmp_path / "b").write_bytes(b"B")
    assert call(k, "renameat2", AT_FDCWD, a, AT_FDCWD, b, 1) == -errno.EEXIST  # RENAME_NOREPLACE
    assert call(k, "renameat2", AT_FDCWD, a, AT_FDCWD, b, 2) == 0  # RENAME_EXCHANGE
    assert (tmp_path / "a").read_bytes() == b"B" and (tmp_path / "b").read_bytes() == b"A"
    assert call(k, "renameat2", AT_FDCWD, a, AT_FDCWD, b, 0) == 0
    assert not (tmp_path / "a").exists() and (tmp_path / "b").read_bytes() == b"B"
    assert call(k, "symlinkat", s.cstr("b"), AT_FDCWD, s.cstr(str(tmp_path / "sym"))) == 0
    assert os.readlink(tmp_path / "sym") == "b"
    buf = s.alloc(64)
    assert call(k, "readlinkat", AT_FDCWD, s.cstr(str(tmp_path / "sym")), buf, 64) == 1
    assert mem.read(buf, 1) == b"b"
    assert call(k, "readlinkat", AT_FDCWD, b, buf, 64) == -errno.EINVAL  # not a link
    assert call(k, "linkat", AT_FDCWD, b, AT_FDCWD, s.cstr(str(tmp_path / "hard")), 0) == 0
    assert os.stat(tmp_path / "hard").st_ino == os.stat(tmp_path / "b").st_ino
    assert call(k, "unlinkat", AT_FDCWD, s.cstr(str(tmp_path / "hard")), 0) == 0
    assert call(k, "unlinkat", AT_FDCWD, d, 0) == -errno.EISDIR
    assert call(k, "unlinkat", AT_FDCWD, d, AT_REMOVEDIR) == 0
    assert not (tmp_path / "dir").exists()
    assert call(k, "fchmodat", AT_FDCWD, b, 0o640) == 0
    assert stat.S_IMODE(os.stat(tmp_path / "b").st_mode) == 0o640
    fd = call(k, "openat", AT_FDCWD, b, os.O_RDWR, 0)
    assert call(k, "fchmod", fd, 0o604) == 0
    assert stat.S_IMODE(os.stat(tmp_path / "b").st_mode) == 0o604
    assert call(k, "fchown", fd, -1, -1) == 0
    assert call(k, "fchownat", AT_FDCWD, b, os.getuid(), -1, 0) == 0
    assert call(k, "ftruncate", fd, 10) == 0 and os.stat(tmp_path / "b").st_size == 10
    assert call(k, "truncate", b, 3) == 0 and os.stat(tmp_path / "b").st_size == 3
    assert call(k, "fsync", fd) == 0 and call(k, "fdatasync", fd) == 0


def test_access_and_times(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    f = tmp_path / "f"
    f.write_bytes(b"")
    os.chmod(f, 0o644)
    assert call(k, "faccessat", AT_FDCWD, s.cstr(str(f)), os.R_OK) == 0
    assert call(k, "faccessat", AT_FDCWD, s.cstr(str(f)), os.X_OK) == -errno.EACCES  # even root needs an x bit
    assert call(k, "faccessat2", AT_FDCWD, s.cstr(str(tmp_path / "nope")), os.F_OK, 0) == -errno.ENOENT
    times = s.put(struct.pack("<qqqq", 1000, 5, 2000, (1 << 30) - 2))  # atime, mtime = UTIME_OMIT
    before = os.stat(f).st_mtime_ns
    assert call(k, "utimensat", AT_FDCWD, s.cstr(str(f)), times, 0) == 0
    st = os.stat(f)
    assert st.st_atime_ns == 1000 * 10**9 + 5 and st.st_mtime_ns == before
    fd = call(k, "openat", AT_FDCWD, s.cstr(str(f)), os.O_RDONLY, 0)
    assert call(k, "utimensat", fd, 0, s.put(struct.pack("<qqqq", 1, 0, 2, 0)), 0) == 0  # futimens
    assert os.stat(f).st_mtime_ns == 2 * 10**9


def test_pipes_dup_and_fcntl() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    fds = s.alloc(8)
    assert call(k, "pipe2", fds, os.O_CLOEXEC) == 0
    r, w = struct.unpack("<ii", mem.read(fds, 8))
    assert not os.get_inheritable(r) and not os.get_inheritable(w)
    assert call(k, "write", w, s.put(b"ping"), 4) == 4
    buf = s.alloc(8)
    assert call(k, "read", r, buf, 8) == 4 and mem.read(buf, 4) == b"ping"
    d = call(k, "dup", w)
    assert d > w and os.get_inheritable(d)  # dup never sets close-on-exec
    assert call(k, "fcntl", d, 1, 0) == 0  # F_GETFD
    assert call(k, "fcntl", d, 2, 1) == 0 and call(k, "fcntl", d, 1, 0) == 1  # F_SETFD FD_CLOEXEC
    high = call(k, "fcntl", w, 1030, 100)  # F_DUPFD_CLOEXEC
    assert high >= 100 and not os.get_inheritable(high)
    assert call(k, "fcntl", r, 3, 0) & os.O_ACCMODE == os.O_RDONLY  # F_GETFL
    assert call(k, "fcntl", r, 4, os.O_NONBLOCK) == 0  # F_SETFL
    assert call(k, "read", r, buf, 8) == -errno.EAGAIN
    assert call(k, "dup3", w, 200, 0) == 200 and os.get_inheritable(200)
    assert call(k, "dup3", w, 201, os.O_CLOEXEC) == 201 and not os.get_inheritable(201)
    assert call(k, "dup3", w, w, 0) == -errno.EINVAL
    assert call(k, "fcntl", r, 12345, 0) == -errno.EINVAL
    assert call(k, "pipe2", 0x2000000, 0) == -errno.EFAULT


def test_record_locks_pass_through(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    fd = call(k, "openat", AT_FDCWD, s.cstr(str(tmp_path / "lock")), os.O_RDWR | os.O_CREAT, 0o644)
    lock = s.put(struct.pack("<hhxxxxqqi4x", fcntl.F_WRLCK, 0, 0, 10, 0))
    assert call(k, "fcntl", fd, 6, lock) == 0  # F_SETLK
    query = s.put(struct.pack("<hhxxxxqqi4x", fcntl.F_WRLCK, 0, 0, 10, 0))
    assert call(k, "fcntl", fd, 5, query) == 0  # F_GETLK: our own lock does not conflict
    assert struct.unpack_from("<h", mem.read(query, 2))[0] == fcntl.F_UNLCK


def test_broken_pipe_gives_epipe_and_queues_sigpipe() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    r, w = os.pipe()
    os.close(r)
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # the test process, like Python, ignores it
    assert call(k, "write", w, s.put(b"x"), 1) == -errno.EPIPE
    assert signal.SIGPIPE in k.signals.pending
    os.close(w)


def test_poll_and_select() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    r, w = os.pipe()
    fds = s.put(struct.pack("<ihhihhihh", r, select.POLLIN, 0, w, select.POLLOUT, 0, -1, select.POLLIN, 0))
    zero = s.put(struct.pack("<qq", 0, 0))
    assert call(k, "ppoll", fds, 3, zero, 0, 8) == 1
    entries = list(struct.iter_unpack("<ihh", mem.read(fds, 24)))
    assert [e[2] for e in entries] == [0, select.POLLOUT, 0]
    os.write(w, b"x")
    assert call(k, "ppoll", fds, 3, zero, 0, 8) == 2
    readset = s.put((1 << r).to_bytes(8, "little"))
    writeset = s.put((1 << w).to_bytes(8, "little"))
    timeout = s.put(struct.pack("<qq", 1, 0))
    assert call(k, "pselect6", max(r, w) + 1, readset, writeset, 0, timeout, 0) == 2
    assert int.from_bytes(mem.read(readset, 8), "little") == 1 << r
    sec, nsec = struct.unpack("<qq", mem.read(timeout, 16))
    assert 0 <= sec * 10**9 + nsec <= 10**9
    os.read(r, 1)
    readset = s.put((1 << r).to_bytes(8, "little"))
    short = s.put(struct.pack("<qq", 0, 10_000_000))
    assert call(k, "pselect6", r + 1, readset, 0, 0, short, 0) == 0
    assert struct.unpack("<qq", mem.read(short, 16)) == (0, 0)  # the time left is written back
    os.close(w)
    os.close(r)
    badset = s.put((1 << r).to_bytes(8, "little"))
    assert call(k, "pselect6", r + 1, badset, 0, 0, zero, 0) == -errno.EBADF


def test_terminal_ioctls_on_a_pty() -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    master, slave = pty.openpty()
    try:
        buf = s.alloc(64)
        assert call(k, "ioctl", slave, 0x5401, buf) == 0  # TCGETS
        host = fcntl.ioctl(slave, termios.TCGETS, bytes(36))
        assert mem.read(buf, 36) == host
        winsize = s.put(struct.pack("<HHHH", 24, 80, 0, 0))
        assert call(k, "ioctl", slave, 0x5414, winsize) == 0  # TIOCSWINSZ
        assert call(k, "ioctl", slave, 0x5413, buf) == 0  # TIOCGWINSZ
        assert struct.unpack("<HHHH", mem.read(buf, 8)) == (24, 80, 0, 0)
        os.write(master, b"abc\n")
        select.select([slave], [], [], 5)  # the line discipline hands the input over asynchronously
        assert call(k, "ioctl", slave, 0x541B, buf) == 0  # FIONREAD
        assert struct.unpack("<i", mem.read(buf, 4))[0] == 4
        raw = bytearray(host)
        struct.pack_into("<I", raw, 12, struct.unpack_from("<I", raw, 12)[0] & ~termios.ECHO)
        assert call(k, "ioctl", slave, 0x5402, s.put(bytes(raw))) == 0  # TCSETS
        assert not termios.tcgetattr(slave)[3] & termios.ECHO
        assert call(k, "ioctl", slave, 0x5451, 0) == 0 and not os.get_inheritable(slave)  # FIOCLEX
    finally:
        os.close(master)
        os.close(slave)
    r, w = os.pipe()
    assert call(k, "ioctl", r, 0x5401, s.alloc(64)) == -errno.ENOTTY  # not a terminal
    assert call(k, "ioctl", r, 0x1234, 0) == -errno.ENOTTY  # not a request we know
    os.close(r)
    os.close(w)


def test_sendfile_and_copy_file_range(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    src = tmp_path / "src"
    src.write_bytes(b"0123456789")
    a = call(k, "openat", AT_FDCWD, s.cstr(str(src)), os.O_RDONLY, 0)
    b = call(k, "openat", AT_FDCWD, s.cstr(str(tmp_path / "dst")), os.O_WRONLY | os.O_CREAT, 0o644)
    offset = s.put(struct.pack("<q", 2))
    assert call(k, "sendfile", b, a, offset, 4) == 4
    assert struct.unpack("<q", mem.read(offset, 8))[0] == 6
    assert call(k, "sendfile", b, a, 0, 100) == 10
    assert (tmp_path / "dst").read_bytes() == b"2345" + b"0123456789"
    c = call(k, "openat", AT_FDCWD, s.cstr(str(tmp_path / "copy")), os.O_WRONLY | os.O_CREAT, 0o644)
    off_in = s.put(struct.pack("<q", 5))
    assert call(k, "copy_file_range", a, off_in, c, 0, 100, 0) == 5
    assert (tmp_path / "copy").read_bytes() == b"56789"


def test_memfd_and_close_range(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    fd = call(k, "memfd_create", s.cstr("guest"), 0)
    assert fd >= 0 and os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:guest")
    r, w = os.pipe()
    low, high = min(r, w), max(r, w)
    assert call(k, "close_range", low, high, 4) == 0  # CLOSE_RANGE_CLOEXEC
    assert not os.get_inheritable(r) and not os.get_inheritable(w)
    assert call(k, "close_range", low, high, 0) == 0
    with pytest.raises(OSError):
        os.fstat(r)
    assert call(k, "close_range", 5, 4, 0) == -errno.EINVAL


def test_statfs(tmp_path: Path) -> None:
    k, mem, _, _ = make_kernel()
    s = Scratch(mem)
    buf = s.alloc(120)
    assert call(k, "statfs", s.cstr(str(tmp_path)), buf) == 0
    f_type, bsize, blocks = struct.unpack_from("<qqQ", mem.read(buf, 120))
    vfs = os.statvfs(tmp_path)
    assert bsize == vfs.f_bsize and blocks == vfs.f_blocks and f_type != 0
