"""Fewer exits: the VMM's half of the in-guest fast paths of `system.py` (reads from file windows, batched
writes). Every exit costs ~28 µs on kvm_pvm (measurements.md §7), about what sha256 takes for 4 KiB; a program
that reads a file 4 KiB at a time would spend more time leaving the VM than hashing.

- **File windows.** When the program opens a regular file read-only, the VMM maps the file (MAP_SHARED,
  read-only) as a KVM memory slot and into the program's page tables, and fills the fd's table entry; the
  entry stub then serves `read` on that fd with a copy. The file offset lives in the entry while the program
  runs; at every exit it is pushed to the host fd before the personality serves a call (which may read, seek,
  dup or pass the fd on) and pulled back after. A fork drops every window (parent and child would share one
  offset through the host's open file description), as does execve.
- **Write batching.** Writes of up to 4 KiB to stdout/stderr, when they are pipes or character devices other
  than a terminal (/dev/null), are appended to the batch by the stub and written out at the next exit of any
  kind, in order, and by a flusher thread every 50 ms while the program runs without exits (a program that
  computes after printing). The cost: a write's error (EPIPE) is seen at the next exit, and output may come up
  to 50 ms late — which a person at a terminal would notice, so terminals are never batched. Regular files
  are never batched either: another process may read them at any time.

What the VMM reads back from guest memory (offsets, batch records) is the program's to corrupt; it is clamped
and checked so that a corrupted table can only give the program wrong bytes of its own files and memory.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import struct
import threading
from typing import TYPE_CHECKING

from isola.host.mapping import FileMapping
from isola.linux.guest import SyscallError
from isola.vmm.kvm import ioctls
from isola.vmm.process import layout, system
from isola.vmm.process.cpu import X86State
from isola.vmm.process.layout import PAGE

if TYPE_CHECKING:
    from isola.vmm.process.vm import ProcessVm

FLUSH_INTERVAL_S = 0.05  # how long batched output may wait while the program runs without an exit
MIN_WINDOW_FILE = 64 * 1024  # smaller files are read in a few calls; a memory slot is not worth it
WINDOW_SLOT_BASE = 2  # KVM slots 0 and 1 are RAM and the system area
MASK64 = (1 << 64) - 1
_MAX_OFFSET = (1 << 63) - 1
_U64 = struct.Struct("<Q")
_ENTRY_OFFSET_AT = 16  # of the offset field in system.FD_ENTRY

# x86-64 syscall numbers after which the fd table may have changed (an fd closed, replaced, or newly open).
_OPENS = frozenset({2, 85, 257, 437})  # open, creat, openat, openat2
_FD_TABLE_CHANGES = _OPENS | frozenset({3, 22, 32, 33, 41, 43, 53, 72, 213, 284, 288, 290, 291, 292, 293, 319, 436})


class Window:
    """One file mapped for in-guest reads."""

    __slots__ = ("identity", "index", "mapping", "offset", "size")

    def __init__(self, index: int, mapping: FileMapping, size: int, identity: tuple[int, int], offset: int) -> None:
        self.index = index
        self.mapping = mapping  # the file, its size rounded up to a page
        self.size = size  # the file size when it was mapped
        self.identity = identity  # st_dev, st_ino
        self.offset = offset  # the offset last agreed between the guest entry and the host fd


class FastPaths:
    def __init__(self, vm: ProcessVm, *, enabled: bool) -> None:
        self.vm = vm
        self.enabled = enabled
        self.windows_possible = enabled and bool(vm.kvm.check_extension(ioctls.KVM_CAP_READONLY_MEM))
        self.windows: dict[int, Window] = {}
        self._data = memoryview(vm.system)[layout.USER_DATA : layout.USER_DATA + PAGE]
        self._batch = memoryview(vm.system)[layout.BATCH : layout.BATCH + layout.BATCH_SIZE]
        self._capacity = layout.BATCH_SIZE - system.BATCH_HEADER.size
        self._lock = threading.Lock()  # the flusher thread's and the exits' writes of the batch
        self._flushed = 0  # bytes of records the flusher thread wrote out already
        self._flusher: tuple[threading.Thread, threading.Event] | None = None
        self.batched_fds: set[int] = set()
        self._update_batching()

    # -- the fd table in guest memory

    def _entry_at(self, fd: int) -> int:
        return system.FD_TABLE + fd * system.FD_ENTRY.size

    def _write_entry(self, fd: int) -> None:
        window = self.windows.get(fd)
        flags = (system.FD_WINDOW if window else 0) | (system.FD_BATCH if fd in self.batched_fds else 0)
        values = (self.vm.layout.window(window.index), window.size, window.offset) if window else (0, 0, 0)
        system.FD_ENTRY.pack_into(self._data, self._entry_at(fd), *values, flags)

    def _guest_offset(self, fd: int) -> int:
        """The offset in the fd's entry: the program's to forge, but any value lseek takes is only its own
        file's position."""
        (offset,) = system.FD_ENTRY.unpack_from(self._data, self._entry_at(fd))[2:3]
        return int(offset) & _MAX_OFFSET

    def _set_guest_offset(self, fd: int, offset: int) -> None:
        """Correct the offset in the entry; the next exit gives it to the host fd."""
        _U64.pack_into(self._data, self._entry_at(fd) + _ENTRY_OFFSET_AT, offset & _MAX_OFFSET)

    # -- around each system call the VMM serves

    def before_syscall(self) -> None:
        self.flush()
        for fd, window in self.windows.items():
            offset = self._guest_offset(fd)
            if offset != window.offset:
                try:
                    window.offset = os.lseek(fd, offset, os.SEEK_SET)
                except OSError:  # a forged offset past what the file system allows: keep the last good one
                    self._write_entry(fd)

    def after_syscall(self, nr: int, result: int) -> None:
        if not self.enabled:
            return
        if nr in _FD_TABLE_CHANGES:
            self._revalidate()
            if nr in _OPENS and result < 1 << 63:
                self._open_window(result)
        for fd, window in list(self.windows.items()):
            try:
                window.offset = os.lseek(fd, 0, os.SEEK_CUR)
                grown = window.offset >= window.size and os.fstat(fd).st_size > window.size
            except OSError:
                self._drop(fd)
                continue
            if grown:  # the file grew past the window (another writer): map it again at its new size
                self._drop(fd)
                self._open_window(fd)
            else:
                self._write_entry(fd)

    def reset(self) -> None:
        """Write out the batch, give every window's offset back to its host fd and drop the windows (fork,
        execve, the end)."""
        self.before_syscall()
        for fd in list(self.windows):
            self._drop(fd)

    # -- windows

    def _open_window(self, fd: int) -> None:
        if not self.windows_possible or not 0 <= fd < system.FAST_FDS or fd in self.windows:
            return
        try:
            info = os.fstat(fd)
            access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError:
            return
        if not stat.S_ISREG(info.st_mode) or access != os.O_RDONLY:
            return
        if not MIN_WINDOW_FILE <= info.st_size <= layout.MAX_WINDOW_SIZE:
            return
        free = set(range(layout.MAX_WINDOWS)) - {w.index for w in self.windows.values()}
        if not free:
            return
        index = min(free)
        length = (info.st_size + PAGE - 1) // PAGE * PAGE
        mapping = FileMapping(fd, length)
        gpa = self.vm.layout.window(index)
        self.vm.vm.set_user_memory_region(WINDOW_SLOT_BASE + index, gpa, length, mapping.address, read_only=True)
        self.vm.tables.map_window(index, info.st_size)
        offset = os.lseek(fd, 0, os.SEEK_CUR)
        self.windows[fd] = Window(index, mapping, info.st_size, (info.st_dev, info.st_ino), offset)
        self._write_entry(fd)

    def _drop(self, fd: int) -> None:
        window = self.windows.pop(fd)
        self.vm.vm.set_user_memory_region(WINDOW_SLOT_BASE + window.index, self.vm.layout.window(window.index), 0, 0)
        self.vm.tables.unmap_window(window.index)
        window.mapping.close()
        if 0 <= fd < system.FAST_FDS:
            self._write_entry(fd)

    def _revalidate(self) -> None:
        """After a call that may have closed or replaced fds: drop windows whose fd is no longer their file
        (the offset is not given back: the fd is someone else's now), re-decide batching."""
        for fd, window in list(self.windows.items()):
            try:
                info = os.fstat(fd)
                same = (info.st_dev, info.st_ino) == window.identity
            except OSError:
                same = False
            if not same:
                self._drop(fd)
        self._update_batching()

    # -- batched writes

    def _update_batching(self) -> None:
        before = set(self.batched_fds)
        self.batched_fds.clear()
        if self.enabled:
            for fd in (1, 2):
                try:
                    mode = os.fstat(fd).st_mode
                except OSError:
                    continue
                if stat.S_ISFIFO(mode) or (stat.S_ISCHR(mode) and not os.isatty(fd)):
                    self.batched_fds.add(fd)
        for fd in before ^ self.batched_fds:
            self._write_entry(fd)

    def flush(self) -> None:
        """Write out every batched record, in order, and empty the batch (the program is stopped)."""
        with self._lock:
            self._drain(final=True)

    def _drain(self, *, final: bool) -> None:
        """Write out the records after those already written. While the program runs (not `final`) it may be
        appending, but a record counts only once `used` covers it, which the stub raises last; a record that
        cannot be written at once is left for the next exit, which also handles errors (SIGPIPE)."""
        used, _ = system.BATCH_HEADER.unpack_from(self._batch, 0)
        end = min(int(used), self._capacity) + system.BATCH_HEADER.size
        at = system.BATCH_HEADER.size + self._flushed
        while at + system.BATCH_RECORD.size <= end:
            fd, length = system.BATCH_RECORD.unpack_from(self._batch, at)
            data_at = at + system.BATCH_RECORD.size
            if length > system.BATCH_MAX_WRITE or data_at + length > end:
                break  # a record the program forged or broke: the rest is not trustworthy either
            data = self._batch[data_at : data_at + length]
            if final:
                self._write_out(fd, data)
            elif not self._write_now(fd, data):
                break
            at = data_at + (length + 7) // 8 * 8
            self._flushed = at - system.BATCH_HEADER.size
        if final:
            self._flushed = 0
            if used:
                system.BATCH_HEADER.pack_into(self._batch, 0, 0, self._capacity)

    def _write_now(self, fd: int, data: memoryview) -> bool:
        """One record from the flusher thread, if it can go out whole without blocking on an fd the program
        made non-blocking; anything unusual waits for the next exit."""
        try:
            host_fd = self.vm.kernel.fd(fd)
            if not os.get_blocking(host_fd):
                return False
            return os.write(host_fd, data) == len(data)  # ≤ PIPE_BUF to a pipe: all or nothing
        except (SyscallError, OSError):
            return False

    # -- the flusher thread

    def start_flusher(self) -> None:
        """Write batched output out every FLUSH_INTERVAL_S while the program runs: a program that computes
        after printing makes no exit, and its output must not wait for the next one. The thread starts with
        every signal blocked, so that host signals keep interrupting KVM_RUN in the vCPU's thread."""
        if not self.enabled or self._flusher is not None:
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._flush_while_running, args=(stop,), name="batch-flusher", daemon=True)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self._flusher = (thread, stop)

    def stop_flusher(self) -> None:
        """Before a fork (a thread does not survive it) and at the end."""
        if self._flusher is not None:
            thread, stop = self._flusher
            stop.set()
            thread.join()
            self._flusher = None

    def _flush_while_running(self, stop: threading.Event) -> None:
        while not stop.wait(FLUSH_INTERVAL_S):
            with self._lock:
                self._drain(final=False)

    def _write_out(self, fd: int, data: memoryview) -> None:
        try:
            host_fd = self.vm.kernel.fd(fd)
        except SyscallError:
            return
        while data:
            try:
                done = os.write(host_fd, data)
            except BlockingIOError:
                os.set_blocking(host_fd, True)
                continue
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    self.vm.kernel.signals.send_self(signal.SIGPIPE)
                return
            data = data[done:]

    # -- a window's file truncated under it

    def recover_truncated(self, st: X86State) -> bool:
        """KVM could not read a window's pages (KVM_RUN failed with EFAULT): another process truncated its file.
        Windows whose file shrank are mapped again at the new size. A read the stub was copying ends as Linux's
        read would: with the bytes copied so far, or, with none copied, served by the VMM from the file as it
        is now. False if no window shrank (the fault is not a window's)."""
        shrunk = []
        for fd, window in self.windows.items():
            try:
                if os.fstat(fd).st_size < window.size:
                    shrunk.append(fd)
            except OSError:
                shrunk.append(fd)
        if not shrunk:
            return False
        code = self.vm.layout.sys + layout.USER_CODE
        if st.rip == code + system.READ_COPY:
            # rep movsb stopped part way: RCX bytes are left, RDI has advanced over those copied (RAX is not
            # to be trusted after a failed KVM_RUN: kvm_pvm hands back a host value there).
            remaining = st.rcx
            copied = (st.rdi - _u64(self._data, system.SAVE_RSI)) & MASK64
            fd = _u64(self._data, system.SAVE_RDI)
            if fd in self.windows:  # the stub advanced the offset by all it meant to copy
                self._set_guest_offset(fd, self._guest_offset(fd) - remaining)
            self._restore_saved(st)
            if 0 < copied <= st.rdx:
                st.rax = copied
                st.rip, st.rflags = st.rcx, st.r11
            else:
                st.rax, st.rip = 0, code + system.SLOW  # `read` again, through the VMM
        self.before_syscall()  # every offset to its host fd
        for fd in shrunk:
            self._drop(fd)
            self._open_window(fd)
        return True

    # -- faults inside the stub's copies

    def fixup(self, vector: int, st: X86State) -> bool:
        """A page fault on the program's buffer inside a fast-path copy: finish the call as Linux would (the
        bytes copied so far, or EFAULT), as if the program had just returned from `syscall`. False for any
        other exception."""
        code = self.vm.layout.sys + layout.USER_CODE
        if vector != 14 or st.rip not in (code + system.READ_COPY, code + system.WRITE_COPY):
            return False
        if st.rip == code + system.READ_COPY:
            remaining, wanted = st.rcx, st.rax
            fd = _u64(self._data, system.SAVE_RDI)
            if fd in self.windows:  # the stub advanced the offset by all it meant to copy
                self._set_guest_offset(fd, self._guest_offset(fd) - remaining)
            copied = wanted - remaining
            st.rax = copied if copied > 0 else -errno.EFAULT & MASK64
        else:
            st.rax = -errno.EFAULT & MASK64  # nothing was committed to the batch
        self._restore_saved(st)
        st.rip, st.rflags = st.rcx, st.r11
        return True

    def _restore_saved(self, st: X86State) -> None:
        """The registers the stub saved on entry (its copy loop uses them)."""
        st.rsi = _u64(self._data, system.SAVE_RSI)
        st.rdi = _u64(self._data, system.SAVE_RDI)
        st.rcx = _u64(self._data, system.SAVE_RCX)


def _u64(view: memoryview, offset: int) -> int:
    (value,) = _U64.unpack_from(view, offset)
    return int(value)
