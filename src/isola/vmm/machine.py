"""A whole x86 virtual machine: KVM VM, guest RAM, vCPU threads, the port-I/O and MMIO buses, and how it ends.

Usage (what `isola-vmm` and the tests do)::

    with Machine(MachineConfig(cpus=2, memory_mib=256)) as m:
        m.pio_bus.register(0x3F8, 8, uart)              # devices see m.memory and m.irq_line(4)
        m.mmio_bus.register(0xD000_0000, 0x1000, blk)
        m.load_linux(kernel_path, "console=ttyS0 ...", initrd_path)
        status = m.run(timeout=60)                      # ExitStatus: poweroff / reboot / halted / error

Set-up order matters to KVM and is fixed here: the irqchip and PIT exist before any vCPU, CPUID/MSRs/FPU/LAPIC
are set before the first KVM_RUN, and only vCPU 0 gets a boot entry (the others wait for Linux's INIT/SIPI
inside KVM).

Each vCPU runs `KVM_RUN` in its own thread (the ioctl releases the GIL). Exits the VMM handles are routed to
the two buses under one device lock, so device models need no locking of their own against vCPUs (QEMU's big
lock, for the same reason: exits are rare and short). Everything that ends the machine, from any thread,
goes through `request_stop(status)`: the first status wins, every vCPU is kicked out of the guest, and `wait`
returns it. Device models that end the machine (the i8042 reset line, a console watcher seeing "Power down")
call `request_stop` too.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

from isola.devices.bus import Bus
from isola.errors import FormatError, NotFoundError, UsageError
from isola.vmm.kvm import ioctls
from isola.vmm.kvm.system import DEV_KVM
from isola.vmm.kvm.vcpu import (
    FailEntryExit,
    HltExit,
    InternalErrorExit,
    Interrupted,
    IoExit,
    MmioExit,
    ShutdownExit,
    SystemEventExit,
    UnexpectedExit,
    Vcpu,
)
from isola.vmm.kvm.vm import IrqLine, Kvm
from isola.vmm.memory import MIB, GuestMemory
from isola.vmm.x86 import boot_params, bzimage, cpuid, entry, mptable, msrs
from isola.vmm.x86.layout import CMDLINE_ADDR, KERNEL_LOAD_ADDR, MPTABLE_ADDR, ZERO_PAGE_ADDR

JOIN_TIMEOUT = 5.0


class ExitKind(enum.StrEnum):
    POWEROFF = "poweroff"
    """The guest powered off (or halted for good after `poweroff`, seen on its console)."""
    REBOOT = "reboot"
    """The guest asked for a reset; isola-vmm does not restart it, the caller may."""
    HALTED = "halted"
    """Every vCPU executed HLT with no in-kernel irqchip to wake it (bare test guests)."""
    STOPPED = "stopped"
    """The VMM stopped the machine (API request, signal)."""
    ERROR = "error"
    """Triple fault, KVM internal error, failed VM entry, guest panic, timeout, or a device model bug."""


@dataclass(frozen=True)
class ExitStatus:
    kind: ExitKind
    message: str

    @property
    def exit_code(self) -> int:
        """The VMM process status: 0 unless the machine ended in error."""
        return 1 if self.kind is ExitKind.ERROR else 0


@dataclass(frozen=True)
class MachineConfig:
    cpus: int = 1
    memory_mib: int = 256
    irqchip: bool = True
    """In-kernel PIC/IOAPIC/LAPIC and PIT. Linux needs them; only bare test guests that want HLT exits go
    without."""
    hide_xsave: bool = False
    """Hide XSAVE and AVX from the guest (works around nested-TCG's XSAVE inconsistency, §6d)."""
    kvm_device: Path = DEV_KVM


@dataclass(frozen=True)
class LinuxLayout:
    """Where `load_linux` put things, for logs and tests."""

    release: str
    protocol: Literal[32, 64]
    entry: int
    kernel: tuple[int, int]
    """[start, end) of the memory the kernel uses before it reads e820."""
    initrd: tuple[int, int]
    """[start, end) of the initrd; (0, 0) without one."""
    cmdline: int
    zero_page: int


def _read_input(value: Path | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.read_bytes()
    except FileNotFoundError as exc:
        raise NotFoundError(f"{what} {value} does not exist") from exc
    except OSError as exc:
        raise UsageError(f"cannot read {what} {value}: {exc.strerror}") from exc


class Machine:
    """A VM with `config.cpus` vCPUs and `config.memory_mib` MiB of RAM, ready for devices and a kernel."""

    def __init__(self, config: MachineConfig) -> None:
        if not 1 <= config.cpus <= mptable.MAX_CPUS:
            raise UsageError(f"vCPU count must be 1 to {mptable.MAX_CPUS}, not {config.cpus}")
        self.config = config
        self.pio_bus = Bus()
        self.mmio_bus = Bus()
        self.device_lock = threading.RLock()
        """Held while a vCPU thread is inside a device model; device back-end threads may take it too."""
        self._state_lock = threading.Lock()
        self._status: ExitStatus | None = None
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._halted = 0
        self._panic: str | None = None

        self.kvm = Kvm(config.kvm_device)
        try:
            self.vm = self.kvm.create_vm()
            self.memory = GuestMemory(config.memory_mib * MIB)
            self._setup(config)
        except BaseException:
            self.close()
            raise

    def _setup(self, config: MachineConfig) -> None:
        self.vm.set_x86_system_pages()
        for slot, ram in enumerate(self.memory.ranges):
            self.vm.set_user_memory_region(slot, ram.gpa, ram.size, self.memory.host_address + ram.offset)
        if config.irqchip:
            self.vm.create_irqchip()
            self.vm.create_pit2()
        supported = self.kvm.supported_cpuid()
        self.vcpus: list[Vcpu] = []
        for index in range(config.cpus):
            vcpu = self.vm.create_vcpu(index)
            vcpu.memory = self.memory
            vcpu.set_cpuid(
                cpuid.guest_cpuid(supported, vcpu_index=index, vcpu_count=config.cpus, hide_xsave=config.hide_xsave)
            )
            vcpu.set_msrs(msrs.boot_msrs())
            entry.init_vcpu_state(vcpu, lapic=config.irqchip)
            self.vcpus.append(vcpu)

    def irq_line(self, gsi: int) -> IrqLine:
        """Interrupt line `gsi` of the in-kernel irqchip (ISA IRQ n is GSI n; the MP table says so too)."""
        if not self.config.irqchip:
            raise UsageError("this machine has no interrupt controller (irqchip=False)")
        return self.vm.irq_line(gsi)

    # -- loading a kernel

    def load_linux(
        self,
        kernel: Path | bytes,
        cmdline: str,
        initrd: Path | bytes | None = None,
        *,
        protocol: Literal[32, 64] = 64,
    ) -> LinuxLayout:
        """Load a bzImage, initrd and command line, write the zero page and MP table, and point vCPU 0 at the
        kernel's 32- or 64-bit entry."""
        if not self.config.irqchip:
            raise UsageError("Linux needs the in-kernel irqchip; create the machine with irqchip=True")
        source = str(kernel) if isinstance(kernel, Path) else "kernel image"
        image = bzimage.parse(_read_input(kernel, "kernel"), source)
        header = image.header
        if protocol == 64 and not header.supports_64bit_entry:
            raise FormatError(f"{source} has no 64-bit entry point (xloadflags lacks XLF_KERNEL_64)")
        cmd = cmdline.encode()
        if b"\0" in cmd or len(cmd) > header.cmdline_size:
            raise UsageError(f"the kernel command line must be at most {header.cmdline_size} bytes, without NUL")
        ram_end = self.memory.low_end
        kernel_start, kernel_end = image.runtime_footprint(KERNEL_LOAD_ADDR)
        if kernel_end > ram_end:
            raise UsageError(
                f"this kernel needs {-(-kernel_end // MIB)} MiB of guest memory to decompress and start; "
                f"the VM has {self.config.memory_mib} MiB"
            )
        mem = self.memory
        mem.write(KERNEL_LOAD_ADDR, image.kernel)
        mem.write(CMDLINE_ADDR, cmd + b"\0")
        initrd_addr = initrd_size = 0
        if initrd is not None:
            data = _read_input(initrd, "initrd")
            initrd_addr, initrd_size = boot_params.place_initrd(len(data), header, ram_end, kernel_end), len(data)
            mem.write(initrd_addr, data)
        mem.write(MPTABLE_ADDR, mptable.build(self.config.cpus, MPTABLE_ADDR))
        e820 = boot_params.e820_map([(r.gpa, r.end) for r in mem.ranges])
        zero_page = boot_params.build(
            header,
            code32_start=KERNEL_LOAD_ADDR,
            cmdline_addr=CMDLINE_ADDR,
            e820=e820,
            initrd_addr=initrd_addr,
            initrd_size=initrd_size,
        )
        mem.write(ZERO_PAGE_ADDR, zero_page)
        enter = entry.linux_64bit if protocol == 64 else entry.linux_32bit
        enter(self.vcpus[0], mem, code32_start=KERNEL_LOAD_ADDR, zero_page=ZERO_PAGE_ADDR)
        return LinuxLayout(
            release=image.release,
            protocol=protocol,
            entry=KERNEL_LOAD_ADDR + (bzimage.ENTRY_64_OFFSET if protocol == 64 else 0),
            kernel=(min(kernel_start, KERNEL_LOAD_ADDR), kernel_end),
            initrd=(initrd_addr, initrd_addr + initrd_size),
            cmdline=CMDLINE_ADDR,
            zero_page=ZERO_PAGE_ADDR,
        )

    # -- running and stopping

    def start(self) -> None:
        """Start one thread per vCPU. Set up devices and the boot entry first."""
        if self._threads:
            raise UsageError("the machine was already started")
        for vcpu in self.vcpus:
            thread = threading.Thread(target=self._vcpu_thread, args=(vcpu,), name=f"vcpu{vcpu.index}", daemon=True)
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()

    def request_stop(self, status: ExitStatus) -> None:
        """End the machine with `status` unless it already has one. Any thread; returns without waiting."""
        with self._state_lock:
            if self._status is not None:
                return
            if self._panic is not None and status.kind in (ExitKind.REBOOT, ExitKind.POWEROFF, ExitKind.HALTED):
                status = ExitStatus(ExitKind.ERROR, f"guest kernel panic: {self._panic}")
            self._status = status
            self._stopped.set()
        for vcpu in self.vcpus:
            vcpu.kick()

    def note_panic(self, line: str) -> None:
        """The guest printed a panic line: however it ends now (reboot from `panic=N`, halt), it is an error."""
        with self._state_lock:
            if self._panic is None:
                self._panic = line

    @property
    def status(self) -> ExitStatus | None:
        return self._status

    def wait(self, timeout: float | None = None) -> ExitStatus | None:
        """The exit status once the machine ends, or None if `timeout` seconds pass first."""
        self._stopped.wait(timeout)
        return self._status

    def stop(self, status: ExitStatus | None = None) -> ExitStatus:
        """Stop (if still running) and join every vCPU thread; the final status."""
        self.request_stop(status or ExitStatus(ExitKind.STOPPED, "stopped by the VMM"))
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT)
            if thread.is_alive():
                raise UsageError(f"{thread.name} did not stop within {JOIN_TIMEOUT} s")
        assert self._status is not None
        return self._status

    def run(self, timeout: float | None = None) -> ExitStatus:
        """Start, wait for the guest to end (or `timeout` seconds: an error), stop. The exit status."""
        self.start()
        if self.wait(timeout) is None:
            return self.stop(ExitStatus(ExitKind.ERROR, f"the guest did not finish within {timeout} s"))
        return self.stop()

    def close(self) -> None:
        """Stop if running, then free the VM, its RAM and the KVM fd."""
        if self._threads:
            self.stop()
        if hasattr(self, "vm"):
            self.vm.close()
        if hasattr(self, "memory"):
            self.memory.close()
        self.kvm.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the vCPU loop

    def _vcpu_thread(self, vcpu: Vcpu) -> None:
        vcpu.prepare_thread()
        try:
            self._vcpu_loop(vcpu)
        except Exception as exc:  # a device model or KVM call failed: end the machine, never hang it
            self.request_stop(ExitStatus(ExitKind.ERROR, f"vCPU {vcpu.index}: {type(exc).__name__}: {exc}"))
        finally:
            vcpu.release_thread()

    def _vcpu_loop(self, vcpu: Vcpu) -> None:
        stopped = self._stopped
        pio, mmio, lock = self.pio_bus, self.mmio_bus, self.device_lock
        while not stopped.is_set():
            ex = vcpu.run()
            if isinstance(ex, IoExit):
                with lock:
                    _dispatch_io(vcpu, ex, pio)
            elif isinstance(ex, MmioExit):
                with lock:
                    _dispatch_mmio(vcpu, ex, mmio)
            elif isinstance(ex, Interrupted):
                continue
            elif isinstance(ex, HltExit):
                self._vcpu_halted()
                return
            else:
                self.request_stop(_final_status(ex))
                return

    def _vcpu_halted(self) -> None:
        with self._state_lock:
            self._halted += 1
            all_halted = self._halted == len(self.vcpus)
        if all_halted:
            self.request_stop(ExitStatus(ExitKind.HALTED, "every vCPU halted"))


def _dispatch_io(vcpu: Vcpu, ex: IoExit, bus: Bus) -> None:
    size, port = ex.size, ex.port
    if ex.is_write:
        if ex.count == 1:
            bus.write(port, size, int.from_bytes(ex.data, "little"))
            return
        for i in range(0, size * ex.count, size):  # string I/O (rep outs): one access per item
            bus.write(port, size, int.from_bytes(ex.data[i : i + size], "little"))
    else:
        mask = (1 << (8 * size)) - 1
        if ex.count == 1:
            vcpu.complete_io_in((bus.read(port, size) & mask).to_bytes(size, "little"))
            return
        vcpu.complete_io_in(b"".join((bus.read(port, size) & mask).to_bytes(size, "little") for _ in range(ex.count)))


def _dispatch_mmio(vcpu: Vcpu, ex: MmioExit, bus: Bus) -> None:
    if ex.is_write:
        bus.write(ex.address, ex.length, int.from_bytes(ex.data, "little"))
    else:
        mask = (1 << (8 * ex.length)) - 1
        vcpu.complete_mmio_read((bus.read(ex.address, ex.length) & mask).to_bytes(ex.length, "little"))


_SYSTEM_EVENTS: dict[int, Callable[[SystemEventExit], ExitStatus]] = {
    ioctls.KVM_SYSTEM_EVENT_SHUTDOWN: lambda e: ExitStatus(ExitKind.POWEROFF, "guest powered off"),
    ioctls.KVM_SYSTEM_EVENT_RESET: lambda e: ExitStatus(ExitKind.REBOOT, "guest requested a reset"),
    ioctls.KVM_SYSTEM_EVENT_CRASH: lambda e: ExitStatus(ExitKind.ERROR, f"guest reported a crash {e.data}"),
}


def _final_status(
    ex: ShutdownExit | SystemEventExit | InternalErrorExit | FailEntryExit | UnexpectedExit,
) -> ExitStatus:
    if isinstance(ex, SystemEventExit):
        make = _SYSTEM_EVENTS.get(ex.kind)
        return make(ex) if make else ExitStatus(ExitKind.ERROR, f"unknown KVM system event {ex.kind}")
    return ExitStatus(ExitKind.ERROR, ex.report)
