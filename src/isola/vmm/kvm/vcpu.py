"""A vCPU fd: its register state, the shared `kvm_run` page, `run()` returning a typed exit, and `kick()`.

Threading model: one Python thread per vCPU calls `run()` in a loop. `KVM_RUN` is an ioctl with an integer
argument, which CPython issues with the GIL released, so vCPUs run in parallel with each other and with device
threads. Another thread stops a vCPU with `kick()`:

- it sets `kvm_run.immediate_exit`, so a `KVM_RUN` that has not entered the guest yet returns at once, and
- it sends `KICK_SIGNAL` to the vCPU thread, which interrupts a `KVM_RUN` already in the guest.

The vCPU thread keeps `KICK_SIGNAL` blocked (`prepare_thread`) and tells KVM, through KVM_SET_SIGNAL_MASK, to
unblock it only while in the guest. No handler is ever installed, so this works from any thread (Python only
lets the main thread install handlers), and a stray kick can never run Python code or kill the process. KVM_RUN
then fails with EINTR; `run()` consumes the pending signal and returns `Interrupted`. The owner of the loop
decides, from its own flags, whether to stop.

Register state: with `enable_sync_regs()` (KVM_CAP_SYNC_REGS) KVM copies the general registers into `kvm_run` at
each exit, where `exit_regs()` reads and changes them without an ioctl (measured on kvm_pvm: GET/SET_REGS add
~12 us per exit, sync regs nothing). It is for loops that look at registers on every exit (a process VM serving
syscalls); a Linux machine's exits are all port I/O and MMIO, so `Machine` leaves it off.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import struct
import threading
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from isola.devices.bus import DeviceMemoryError, PhysicalMemory
from isola.errors import EngineError
from isola.host.mapping import FileMapping
from isola.vmm.kvm import ioctls, structs

KICK_SIGNAL = signal.SIGURG
"""Ignored by default, so even a kick aimed at a thread that does not block it is harmless."""

_XSAVE_SIZE = 4096
_XCRS = struct.Struct("<IIIIQ")  # struct kvm_xcrs: nr_xcrs, flags, then xcrs[0] = {xcr, reserved, value}
_XCRS_SIZE = 392
_SIGSET_BYTES = 8  # the kernel's sigset_t on x86-64: 64 signals, one bit each

# The hot exits (port I/O, MMIO) are decoded with one struct unpack each rather than a ctypes attribute per
# field: a vCPU exits tens of thousands of times per boot, and under nested TCG every Python microsecond is ~20.
_EXIT_REASON = struct.Struct("<I")
_EXIT_REASON_AT = structs.KvmRun.exit_reason.offset
_EXIT_AT = structs.KvmRun.exit.offset
_IO_EXIT = struct.Struct("<BBHIQ")  # kvm_run.io: direction, size, port, count, data_offset
_MMIO_EXIT = struct.Struct("<Q8sIB")  # kvm_run.mmio: phys_addr, data, len, is_write
_IO_DATA_OFFSET = struct.Struct("<Q")
_IO_DATA_OFFSET_AT = _EXIT_AT + structs.IoExitInfo.data_offset.offset


class CpuidEntry(NamedTuple):
    """One CPUID leaf/sub-leaf result, as KVM_GET_SUPPORTED_CPUID and KVM_SET_CPUID2 exchange them."""

    function: int
    subleaf: int  # ECX on input (KVM's `index`)
    flags: int
    eax: int
    ebx: int
    ecx: int
    edx: int


# --- exits -----------------------------------------------------------------------------------------------------


class _Marker:
    """An exit that carries nothing: equal to any other of its kind."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IoExit(NamedTuple):
    """Port I/O. For an OUT (`is_write`), `data` holds `count` items of `size` bytes; for an IN, the handler
    answers with `Vcpu.complete_io_in`. RIP is not touched: kvm_pvm reports it past the instruction, standard KVM
    at it and skips it on the next KVM_RUN, and both complete the access from kvm_run's data either way.

    Exits are named tuples: one is built on every exit, and a tuple is the cheapest record to build (and to
    define, which counts in a process VM's start-up)."""

    port: int
    size: int
    is_write: bool
    items: int  # KVM's `count`: more than 1 for string I/O (rep ins/outs)
    data: bytes


class MmioExit(NamedTuple):
    """An access to guest-physical memory no slot backs. A read is answered with `Vcpu.complete_mmio_read`."""

    address: int
    length: int
    is_write: bool
    data: bytes


class HltExit(_Marker):
    """HLT with no in-kernel irqchip (with one, KVM waits for the interrupt itself and this never happens)."""


class ShutdownExit(NamedTuple):
    """The guest triple-faulted (or a deliberate `reboot=t`). `report` names where."""

    report: str


class SystemEventExit(NamedTuple):
    """KVM_EXIT_SYSTEM_EVENT: `kind` is KVM_SYSTEM_EVENT_SHUTDOWN, _RESET or _CRASH."""

    kind: int
    data: tuple[int, ...]


class InternalErrorExit(NamedTuple):
    """KVM could not go on (most often: its instruction emulator does not know the instruction)."""

    suberror: int
    data: tuple[int, ...]
    report: str


class FailEntryExit(NamedTuple):
    """The CPU refused to enter the guest: the register state is invalid."""

    reason: int
    cpu: int
    report: str


class Interrupted(_Marker):
    """KVM_RUN returned without a guest exit to handle: `kick()` (EINTR, KVM_EXIT_INTR) or an AP leaving its
    wait-for-SIPI state (EAGAIN). The caller checks its own stop flag and runs again."""


class HostMemoryExit(NamedTuple):
    """KVM_RUN failed with EFAULT: the host memory behind a slot could not be read, e.g. a file mapped under a
    slot was truncated under it. The guest is stopped at the access, which has not happened."""

    report: str


class UnexpectedExit(NamedTuple):
    """An exit reason isola does not ask for (e.g. KVM_EXIT_DEBUG, KVM_EXIT_UNKNOWN)."""

    reason: int
    report: str


VcpuExit = (
    IoExit
    | MmioExit
    | HltExit
    | ShutdownExit
    | SystemEventExit
    | InternalErrorExit
    | FailEntryExit
    | Interrupted
    | HostMemoryExit
    | UnexpectedExit
)

_SUBERRORS = {
    ioctls.KVM_INTERNAL_ERROR_EMULATION: "emulation failure",
    ioctls.KVM_INTERNAL_ERROR_SIMUL_EX: "exception while delivering an exception",
    ioctls.KVM_INTERNAL_ERROR_DELIVERY_EV: "event delivery failed",
    ioctls.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: "unexpected hardware exit",
}


_RESET_RIP = 0xFFF0  # the reset vector: CS base 0xffff0000 + IP 0xfff0
_RESET_CS_BASE = 0xFFFF_0000

_EXIT_NAMES = {
    ioctls.KVM_EXIT_UNKNOWN: "KVM_EXIT_UNKNOWN",
    ioctls.KVM_EXIT_EXCEPTION: "KVM_EXIT_EXCEPTION",
    ioctls.KVM_EXIT_DEBUG: "KVM_EXIT_DEBUG",
    ioctls.KVM_EXIT_IRQ_WINDOW_OPEN: "KVM_EXIT_IRQ_WINDOW_OPEN",
}


def suberror_name(suberror: int) -> str:
    return _SUBERRORS.get(suberror, f"suberror {suberror}")


# --- the vCPU --------------------------------------------------------------------------------------------------


class Vcpu:
    """One vCPU fd and its mmap'ed `kvm_run`. `memory`, when set, lets error reports show instruction bytes."""

    def __init__(self, fd: int, index: int, mmap_size: int) -> None:
        self.fd = fd
        self.index = index
        self.memory: PhysicalMemory | None = None
        self._map = FileMapping(fd, mmap_size, writable=True)  # no hidden dup of the vCPU fd (see host.mapping)
        self._mm = self._map.view
        self._run: structs.KvmRun | None = structs.KvmRun.from_address(self._map.address)
        self._thread_id: int | None = None
        self._kick_lock = threading.Lock()
        self.sync_regs = False

    @property
    def kvm_run(self) -> structs.KvmRun:
        if self._run is None:
            raise EngineError(f"vCPU {self.index} is closed")
        return self._run

    # -- register state

    def get_regs(self) -> structs.Regs:
        regs = structs.Regs()
        ioctls.call(self.fd, "KVM_GET_REGS", ioctls.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: structs.Regs) -> None:
        ioctls.call(self.fd, "KVM_SET_REGS", ioctls.KVM_SET_REGS, regs)

    def get_sregs(self) -> structs.Sregs:
        sregs = structs.Sregs()
        ioctls.call(self.fd, "KVM_GET_SREGS", ioctls.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: structs.Sregs) -> None:
        ioctls.call(self.fd, "KVM_SET_SREGS", ioctls.KVM_SET_SREGS, sregs)

    def set_fpu(self, fpu: structs.Fpu) -> None:
        ioctls.call(self.fd, "KVM_SET_FPU", ioctls.KVM_SET_FPU, fpu)

    def get_xsave(self) -> bytes:
        """KVM_GET_XSAVE: the FPU/SSE/AVX state as an XSAVE area (4 KiB; its first 512 bytes are FXSAVE's)."""
        buf = ctypes.create_string_buffer(_XSAVE_SIZE)
        ioctls.call(self.fd, "KVM_GET_XSAVE", ioctls.KVM_GET_XSAVE, ctypes.addressof(buf))
        return buf.raw

    def set_xsave(self, area: bytes) -> None:
        buf = ctypes.create_string_buffer(area.ljust(_XSAVE_SIZE, b"\0")[:_XSAVE_SIZE], _XSAVE_SIZE)
        ioctls.call(self.fd, "KVM_SET_XSAVE", ioctls.KVM_SET_XSAVE, ctypes.addressof(buf))

    def set_xcr0(self, value: int) -> None:
        """KVM_SET_XCRS with XCR0 only: which state components XSAVE-using code (AVX) may touch."""
        buf = ctypes.create_string_buffer(_XCRS.pack(1, 0, 0, 0, value).ljust(_XCRS_SIZE, b"\0"), _XCRS_SIZE)
        ioctls.call(self.fd, "KVM_SET_XCRS", ioctls.KVM_SET_XCRS, ctypes.addressof(buf))

    def get_lapic(self) -> structs.LapicState:
        lapic = structs.LapicState()
        ioctls.call(self.fd, "KVM_GET_LAPIC", ioctls.KVM_GET_LAPIC, lapic)
        return lapic

    def set_lapic(self, lapic: structs.LapicState) -> None:
        ioctls.call(self.fd, "KVM_SET_LAPIC", ioctls.KVM_SET_LAPIC, lapic)

    def set_cpuid(self, entries: Iterable[CpuidEntry]) -> None:
        entries = list(entries)
        buf = structs.cpuid2_type(len(entries))()
        buf.nent = len(entries)
        for slot, e in zip(buf.entries, entries, strict=True):
            slot.function, slot.index, slot.flags = e.function, e.subleaf, e.flags
            slot.eax, slot.ebx, slot.ecx, slot.edx = e.eax, e.ebx, e.ecx, e.edx
        ioctls.call(self.fd, "KVM_SET_CPUID2", ioctls.KVM_SET_CPUID2, buf)

    def set_msrs(self, values: Mapping[int, int]) -> None:
        """KVM_SET_MSRS, which stops at the first MSR it refuses and returns how many it set; name that one."""
        items = list(values.items())
        buf = structs.msrs_type(len(items))()
        buf.nmsrs = len(items)
        for i, (index, data) in enumerate(items):
            buf.entries[i].index = index
            buf.entries[i].data = data
        try:
            done = fcntl.ioctl(self.fd, ioctls.KVM_SET_MSRS, buf, True)
        except OSError as exc:
            raise EngineError(f"KVM_SET_MSRS failed: {exc.strerror}") from exc
        if done != len(items):
            index, data = items[done]
            raise EngineError(f"KVM refused MSR {index:#x} = {data:#x} on vCPU {self.index}")

    def get_msrs(self, indices: Iterable[int]) -> dict[int, int]:
        indices = list(indices)
        buf = structs.msrs_type(len(indices))()
        buf.nmsrs = len(indices)
        for i, index in enumerate(indices):
            buf.entries[i].index = index
        try:
            done = fcntl.ioctl(self.fd, ioctls.KVM_GET_MSRS, buf, True)
        except OSError as exc:
            raise EngineError(f"KVM_GET_MSRS failed: {exc.strerror}") from exc
        if done != len(indices):
            raise EngineError(f"KVM cannot read MSR {indices[done]:#x} on vCPU {self.index}")
        return {e.index: e.data for e in buf.entries}

    def translate(self, linear: int) -> int | None:
        """The guest-physical address of guest-linear `linear` under the vCPU's current paging, or None."""
        tr = structs.Translation(linear_address=linear)
        try:
            fcntl.ioctl(self.fd, ioctls.KVM_TRANSLATE, tr, True)
        except OSError:
            return None
        return int(tr.physical_address) if tr.valid else None

    def enable_sync_regs(self) -> None:
        """Have KVM mirror the general registers into kvm_run at every exit (see `exit_regs`)."""
        self.kvm_run.kvm_valid_regs = ioctls.KVM_SYNC_X86_REGS
        self.sync_regs = True

    def exit_regs(self) -> structs.Regs:
        """The general registers as of the last exit: from kvm_run with sync regs on, else KVM_GET_REGS.

        With sync regs the returned struct is a live view; writes to it take effect with `mark_regs_dirty()`.
        """
        if self.sync_regs:
            regs: structs.Regs = self.kvm_run.s.regs.regs
            return regs
        return self.get_regs()

    def mark_regs_dirty(self) -> None:
        """Tell KVM the sync-regs copy of the general registers was changed and must be loaded on entry."""
        self.kvm_run.kvm_dirty_regs |= ioctls.KVM_SYNC_X86_REGS

    # -- running

    def prepare_thread(self) -> None:
        """Call once in the thread that will `run()` this vCPU, before the first run: sets up `kick()`."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {KICK_SIGNAL})
        # While in KVM_RUN the thread's mask is this one: the thread's own mask minus the kick signal.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set())
        bits = sum(1 << (int(s) - 1) for s in blocked if s != KICK_SIGNAL)
        mask = structs.signal_mask_type(_SIGSET_BYTES)(len=_SIGSET_BYTES)
        mask.sigset[:] = list(bits.to_bytes(_SIGSET_BYTES, "little"))
        ioctls.call(self.fd, "KVM_SET_SIGNAL_MASK", ioctls.KVM_SET_SIGNAL_MASK, mask)
        with self._kick_lock:
            self._thread_id = threading.get_ident()

    def release_thread(self) -> None:
        """The running thread is done with this vCPU: kicks no longer signal it."""
        with self._kick_lock:
            self._thread_id = None

    def kick(self) -> None:
        """Make the vCPU's current or next `run()` return `Interrupted` soon. Safe from any thread."""
        run = self._run
        if run is None:
            return
        run.immediate_exit = 1
        with self._kick_lock:
            if self._thread_id is not None:
                signal.pthread_kill(self._thread_id, KICK_SIGNAL)

    def run(self) -> VcpuExit:
        """KVM_RUN once and decode why it came back."""
        run = self.kvm_run
        try:
            fcntl.ioctl(self.fd, ioctls.KVM_RUN, 0)
        except OSError as exc:
            if exc.errno == errno.EINTR:
                run.immediate_exit = 0
                signal.sigtimedwait({KICK_SIGNAL}, 0)
                return Interrupted()
            if exc.errno == errno.EAGAIN:
                # An AP that was waiting for INIT/SIPI got them: KVM wants KVM_RUN again (standard KVM only).
                return Interrupted()
            if exc.errno == errno.EFAULT:
                where = self.describe_state()
                return HostMemoryExit(f"KVM_RUN on vCPU {self.index} could not reach host memory {where}")
            raise EngineError(f"KVM_RUN failed on vCPU {self.index}: {exc.strerror}") from exc
        mm = self._mm
        (reason,) = _EXIT_REASON.unpack_from(mm, _EXIT_REASON_AT)
        if reason == ioctls.KVM_EXIT_IO:
            direction, size, port, count, data_offset = _IO_EXIT.unpack_from(mm, _EXIT_AT)
            if direction == ioctls.KVM_EXIT_IO_OUT:
                return IoExit(port, size, True, count, bytes(mm[data_offset : data_offset + size * count]))
            return IoExit(port, size, False, count, b"")
        if reason == ioctls.KVM_EXIT_MMIO:
            address, data, length, is_write = _MMIO_EXIT.unpack_from(mm, _EXIT_AT)
            return MmioExit(address, length, bool(is_write), data[:length] if is_write else b"")
        if reason == ioctls.KVM_EXIT_HLT:
            return HltExit()
        if reason == ioctls.KVM_EXIT_INTR:
            return Interrupted()
        if reason == ioctls.KVM_EXIT_SHUTDOWN:
            return ShutdownExit(f"vCPU {self.index} triple fault (KVM_EXIT_SHUTDOWN) {self.describe_state()}")
        if reason == ioctls.KVM_EXIT_SYSTEM_EVENT:
            ev = run.exit.system_event
            return SystemEventExit(ev.type, tuple(ev.data[: min(ev.ndata, 16)]))
        if reason == ioctls.KVM_EXIT_INTERNAL_ERROR:
            internal = run.exit.internal
            words: tuple[int, ...] = tuple(internal.data[: min(internal.ndata, 16)])
            report = (
                f"KVM internal error on vCPU {self.index}: {suberror_name(internal.suberror)} "
                f"(suberror {internal.suberror}) {self.describe_state()}"
                + (f", data [{' '.join(f'{d:#x}' for d in words)}]" if words else "")
            )
            return InternalErrorExit(internal.suberror, words, report)
        if reason == ioctls.KVM_EXIT_FAIL_ENTRY:
            fail = run.exit.fail_entry
            reason_code = fail.hardware_entry_failure_reason
            report = (
                f"VM entry failed on vCPU {self.index}: hardware reason {reason_code:#x} on host CPU {fail.cpu} "
                f"{self.describe_state()}"
            )
            return FailEntryExit(reason_code, fail.cpu, report)
        name = _EXIT_NAMES.get(reason, "not a KVM_EXIT_* isola knows")
        return UnexpectedExit(reason, f"unexpected KVM exit reason {reason} ({name}) on vCPU {self.index}")

    def complete_io_in(self, data: bytes) -> None:
        """Answer the IN of the last IoExit: `count * size` bytes, placed where KVM reads them on the next run."""
        (offset,) = _IO_DATA_OFFSET.unpack_from(self._mm, _IO_DATA_OFFSET_AT)
        self._mm[offset : offset + len(data)] = data

    def complete_mmio_read(self, data: bytes) -> None:
        """Answer the read of the last MmioExit with `length` bytes."""
        mmio = self.kvm_run.exit.mmio
        mmio.data[: len(data)] = list(data)

    def describe_state(self) -> str:
        """Where the vCPU is, for error reports: RIP, mode, CPL and the bytes at RIP when they can be read."""
        try:
            regs, sregs = self.get_regs(), self.get_sregs()
        except EngineError as exc:
            return f"(registers unavailable: {exc})"
        if regs.rip == _RESET_RIP and sregs.cs.base == _RESET_CS_BASE:
            # AMD's KVM reinitializes the vCPU when it intercepts a shutdown: the faulting state is gone.
            return "(the vCPU is in its reset state, so where it failed is not known)"
        mode = "64-bit" if sregs.cs.l else ("32-bit" if sregs.cr0 & 1 else "real mode")
        where = f"at RIP {regs.rip:#x} ({mode}, CPL {sregs.cs.selector & 3}, CR0 {sregs.cr0:#x}, CR3 {sregs.cr3:#x})"
        linear = sregs.cs.base + regs.rip if not sregs.cs.l else regs.rip
        gpa = self.translate(linear) if sregs.cr0 & (1 << 31) else linear
        if self.memory is None or gpa is None:
            return where + ", instruction bytes unavailable"
        try:
            code = self.memory.read(gpa, 16)
        except DeviceMemoryError:
            return where + f", RIP maps to {gpa:#x}, which is not RAM"
        return where + f", bytes {code.hex(' ')}"

    def close(self) -> None:
        if self._run is not None:
            self._run = None
            self._map.close()
            os.close(self.fd)
