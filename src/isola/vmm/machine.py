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
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

from isola.devices import acpi_pm
from isola.devices.bus import Bus
from isola.devices.virtio.device import VirtioDevice
from isola.devices.virtio.mmio import MMIO_WINDOW_SIZE, QUEUE_NOTIFY, VirtioMmio
from isola.errors import FormatError, NotFoundError, UsageError
from isola.vmm.acpi import tables as acpi
from isola.vmm.event_loop import EventLoop
from isola.vmm.kvm import DEV_KVM, ioctls
from isola.vmm.kvm.vcpu import (
    FailEntryExit,
    HltExit,
    HostMemoryExit,
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
from isola.vmm.x86 import boot_params, bzimage, cpuid, entry, mptable, msrs, pvh, vmlinux
from isola.vmm.x86.layout import (
    ACPI_PM_PORT,
    ACPI_TABLES_ADDR,
    CMDLINE_ADDR,
    HIMEM_START,
    IOAPIC_ADDR,
    KERNEL_LOAD_ADDR,
    LAPIC_ADDR,
    MPTABLE_ADDR,
    VIRTIO_MMIO_BASE,
    ZERO_PAGE_ADDR,
)

JOIN_TIMEOUT = 5.0
VIRTIO_GSIS = (5, 6, 7, 9, 10, 11, 12, 13, 14, 15, *range(16, 24))
"""Interrupt lines for virtio devices: the IOAPIC's 24 pins minus the timer (0, 2), the keyboard (1), the serial
ports (3, 4) and the RTC (8)."""
RESET_VALUE = 0x1


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


Protocol = Literal[32, 64, "pvh"]
"""A Linux boot entry: the 32- or 64-bit boot protocol, or PVH (an ELF vmlinux's Xen note)."""


@dataclass(frozen=True)
class LinuxLayout:
    """Where `load_linux` put things, for logs and tests."""

    release: str
    protocol: Protocol
    entry: int
    kernel: tuple[int, int]
    """[start, end) of the memory the kernel uses before it reads e820."""
    initrd: tuple[int, int]
    """[start, end) of the initrd; (0, 0) without one."""
    cmdline: int
    zero_page: int
    """0 for PVH, which gets `start_info` instead."""
    start_info: int = 0
    """The `hvm_start_info` of a PVH boot; 0 for the boot protocols."""


def _command_line(cmdline: str, limit: int) -> bytes:
    cmd = cmdline.encode()
    if b"\0" in cmd or len(cmd) > limit:
        raise UsageError(f"the kernel command line must be at most {limit} bytes, without NUL")
    return cmd


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
        self.exit_counts: list[dict[str, int]] = [{} for _ in range(config.cpus)]
        """Per vCPU, how many exits of each kind the VMM handled (each list is written by its vCPU's thread only)."""
        self.virtio: list[VirtioMmio] = []
        self.isa_devices: list[acpi.IsaDevice] = []
        """Legacy devices the ACPI tables announce; whoever registers one on the port bus adds it here."""
        self._virtio_slots: list[acpi.VirtioMmioSlot] = []
        self.events = EventLoop()
        self.events.on_error = lambda exc: self.request_stop(
            ExitStatus(ExitKind.ERROR, f"device thread: {type(exc).__name__}: {exc}")
        )

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
        power = acpi_pm.AcpiPowerManagement(
            soft_off_type=acpi.S5_SLEEP_TYPE,
            reset_value=RESET_VALUE,
            on_poweroff=lambda: self.request_stop(ExitStatus(ExitKind.POWEROFF, "guest powered off (ACPI S5)")),
            on_reset=lambda: self.request_stop(ExitStatus(ExitKind.REBOOT, "guest reset the machine (ACPI)")),
        )
        self.pio_bus.register(ACPI_PM_PORT, acpi_pm.LENGTH, power)

    def irq_line(self, gsi: int) -> IrqLine:
        """Interrupt line `gsi` of the in-kernel irqchip (ISA IRQ n is GSI n; the MP table says so too)."""
        if not self.config.irqchip:
            raise UsageError("this machine has no interrupt controller (irqchip=False)")
        return self.vm.irq_line(gsi)

    def add_virtio(self, device: VirtioDevice) -> VirtioMmio:
        """Give `device` the next virtio-mmio window and interrupt line; the ACPI tables announce it. Queue
        notifications reach it through ioeventfds on the device thread, so they cost the vCPU no exit."""
        index = len(self.virtio)
        if index >= len(VIRTIO_GSIS):
            raise UsageError(f"a VM has room for {len(VIRTIO_GSIS)} virtio devices")
        base, gsi = VIRTIO_MMIO_BASE + index * MMIO_WINDOW_SIZE, VIRTIO_GSIS[index]
        transport = VirtioMmio(device, self.memory, self.irq_line(gsi))
        self.mmio_bus.register(base, MMIO_WINDOW_SIZE, transport)
        for queue in range(len(device.queue_max_sizes)):
            notify = self.events.eventfd(functools.partial(transport.kick, queue))
            self.vm.assign_ioeventfd(notify, base + QUEUE_NOTIFY, 4, datamatch=queue)
        self.virtio.append(transport)
        self._virtio_slots.append(acpi.VirtioMmioSlot(base, MMIO_WINDOW_SIZE, gsi))
        return transport

    def acpi_platform(self) -> acpi.Platform:
        """What this machine's ACPI tables describe."""
        return acpi.Platform(
            cpus=self.config.cpus,
            lapic_addr=LAPIC_ADDR,
            ioapic_addr=IOAPIC_ADDR,
            ioapic_id=self.config.cpus,
            sleep_control_port=ACPI_PM_PORT + acpi_pm.SLEEP_CONTROL,
            sleep_status_port=ACPI_PM_PORT + acpi_pm.SLEEP_STATUS,
            reset_port=ACPI_PM_PORT + acpi_pm.RESET,
            reset_value=RESET_VALUE,
            virtio=tuple(self._virtio_slots),
            isa=tuple(self.isa_devices),
        )

    # -- loading a kernel

    def load_linux(
        self,
        kernel: Path | bytes,
        cmdline: str,
        initrd: Path | bytes | None = None,
        *,
        protocol: Protocol | None = None,
    ) -> LinuxLayout:
        """Load a kernel, initrd and command line, write the boot tables, and point vCPU 0 at the kernel's entry.

        The kernel is a bzImage or an ELF vmlinux, told apart by their first bytes. `protocol` picks the entry: 32
        or 64 for a bzImage (default 64); 64 (`startup_64`) or "pvh" for a vmlinux (default "pvh", the entry QEMU
        and Cloud Hypervisor take for a vmlinux too: no page tables, no zero page).
        """
        if not self.config.irqchip:
            raise UsageError("Linux needs the in-kernel irqchip; create the machine with irqchip=True")
        source = str(kernel) if isinstance(kernel, Path) else "kernel image"
        data = _read_input(kernel, "kernel")
        if vmlinux.is_elf(data):
            return self._load_vmlinux(vmlinux.parse(data, source), source, cmdline, initrd, protocol or "pvh")
        return self._load_bzimage(bzimage.parse(data, source), source, cmdline, initrd, protocol or 64)

    def _load_bzimage(
        self, image: bzimage.BzImage, source: str, cmdline: str, initrd: Path | bytes | None, protocol: Protocol
    ) -> LinuxLayout:
        header = image.header
        if protocol == "pvh":
            raise UsageError(f"{source} is a bzImage; the PVH entry is in the ELF vmlinux compressed inside it")
        if protocol == 64 and not header.supports_64bit_entry:
            raise FormatError(f"{source} has no 64-bit entry point (xloadflags lacks XLF_KERNEL_64)")
        cmd = _command_line(cmdline, header.cmdline_size)
        kernel_start, kernel_end = image.runtime_footprint(KERNEL_LOAD_ADDR)
        self._check_fits(kernel_end, "to decompress and start")
        self.memory.write(KERNEL_LOAD_ADDR, image.kernel)
        initrd_addr, initrd_size, e820 = self._write_boot_data(cmd, initrd, header, kernel_end)
        self._write_zero_page(header, KERNEL_LOAD_ADDR, e820, initrd_addr, initrd_size)
        enter = entry.linux_64bit if protocol == 64 else entry.linux_32bit
        enter(self.vcpus[0], self.memory, code32_start=KERNEL_LOAD_ADDR, zero_page=ZERO_PAGE_ADDR)
        return LinuxLayout(
            release=image.release,
            protocol=protocol,
            entry=KERNEL_LOAD_ADDR + (bzimage.ENTRY_64_OFFSET if protocol == 64 else 0),
            kernel=(min(kernel_start, KERNEL_LOAD_ADDR), kernel_end),
            initrd=(initrd_addr, initrd_addr + initrd_size),
            cmdline=CMDLINE_ADDR,
            zero_page=ZERO_PAGE_ADDR,
        )

    def _load_vmlinux(
        self, image: vmlinux.Vmlinux, source: str, cmdline: str, initrd: Path | bytes | None, protocol: Protocol
    ) -> LinuxLayout:
        if protocol == 32:
            raise UsageError(f"{source} is an ELF vmlinux: it has a 64-bit and a PVH entry, no 32-bit one")
        entry_point = image.pvh_entry if protocol == "pvh" else image.entry
        if entry_point is None:
            raise FormatError(
                f"{source} has no PVH entry (no XEN_ELFNOTE_PHYS32_ENTRY note: built without CONFIG_PVH); "
                "boot it through startup_64 (protocol 64)"
            )
        header = vmlinux.setup_header()
        cmd = _command_line(cmdline, header.cmdline_size)
        kernel_start, kernel_end = image.footprint
        if kernel_start < HIMEM_START:
            raise FormatError(f"{source} loads at {kernel_start:#x}, below 1 MiB, where the VMM's boot tables are")
        self._check_fits(kernel_end, "to load")
        for segment in image.segments:  # the BSS past each segment's data is already zero: RAM starts zeroed
            self.memory.write(segment.paddr, segment.data)
        initrd_addr, initrd_size, e820 = self._write_boot_data(cmd, initrd, header, kernel_end)
        zero_page = start_info = 0
        if protocol == "pvh":
            start_info = pvh.START_INFO_ADDR
            self.memory.write(
                start_info,
                pvh.build(
                    start_info,
                    cmdline_addr=CMDLINE_ADDR,
                    e820=e820,
                    initrd_addr=initrd_addr,
                    initrd_size=initrd_size,
                    rsdp_addr=ACPI_TABLES_ADDR,
                ),
            )
            entry.linux_pvh(self.vcpus[0], self.memory, entry_point=entry_point, start_info=start_info)
        else:
            # code32_start 0: the 32-bit entry is the bzImage decompressor's; a vmlinux has none
            zero_page = self._write_zero_page(header, 0, e820, initrd_addr, initrd_size)
            entry.linux_startup_64(self.vcpus[0], self.memory, entry_point=entry_point, zero_page=zero_page)
        return LinuxLayout(
            release=image.release,
            protocol=protocol,
            entry=entry_point,
            kernel=(kernel_start, kernel_end),
            initrd=(initrd_addr, initrd_addr + initrd_size),
            cmdline=CMDLINE_ADDR,
            zero_page=zero_page,
            start_info=start_info,
        )

    def _write_zero_page(
        self,
        header: bzimage.SetupHeader,
        code32_start: int,
        e820: list[boot_params.E820Entry],
        initrd_addr: int,
        initrd_size: int,
    ) -> int:
        """The zero page of both boot protocols, at ZERO_PAGE_ADDR (returned)."""
        page = boot_params.build(
            header,
            code32_start=code32_start,
            cmdline_addr=CMDLINE_ADDR,
            e820=e820,
            initrd_addr=initrd_addr,
            initrd_size=initrd_size,
            acpi_rsdp_addr=ACPI_TABLES_ADDR,
        )
        self.memory.write(ZERO_PAGE_ADDR, page)
        return ZERO_PAGE_ADDR

    def _check_fits(self, kernel_end: int, purpose: str) -> None:
        if kernel_end > self.memory.low_end:
            raise UsageError(
                f"this kernel needs {-(-kernel_end // MIB)} MiB of guest memory {purpose}; "
                f"the VM has {self.config.memory_mib} MiB"
            )

    def _write_boot_data(
        self, cmd: bytes, initrd: Path | bytes | None, header: bzimage.SetupHeader, kernel_end: int
    ) -> tuple[int, int, list[boot_params.E820Entry]]:
        """What every entry shares: the command line, the initrd (high, above the kernel) and the MP table.
        Returns the initrd's address and size (0, 0 without one) and the memory map."""
        mem = self.memory
        mem.write(CMDLINE_ADDR, cmd + b"\0")
        initrd_addr = initrd_size = 0
        if initrd is not None:
            data = _read_input(initrd, "initrd")
            initrd_addr, initrd_size = boot_params.place_initrd(len(data), header, mem.low_end, kernel_end), len(data)
            mem.write(initrd_addr, data)
        mem.write(MPTABLE_ADDR, mptable.build(self.config.cpus, MPTABLE_ADDR))
        mem.write(ACPI_TABLES_ADDR, acpi.build(self.acpi_platform(), ACPI_TABLES_ADDR))
        return initrd_addr, initrd_size, boot_params.e820_map([(r.gpa, r.end) for r in mem.ranges])

    # -- running and stopping

    def start(self) -> None:
        """Start one thread per vCPU. Set up devices and the boot entry first."""
        if self._threads:
            raise UsageError("the machine was already started")
        self.events.start()
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
        """Stop (if still running) and join every vCPU thread and the device thread; the final status."""
        self.request_stop(status or ExitStatus(ExitKind.STOPPED, "stopped by the VMM"))
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT)
            if thread.is_alive():
                raise UsageError(f"{thread.name} did not stop within {JOIN_TIMEOUT} s")
        self.events.stop()
        assert self._status is not None
        return self._status

    def run(self, timeout: float | None = None) -> ExitStatus:
        """Start, then `finish`."""
        self.start()
        return self.finish(timeout)

    def finish(self, timeout: float | None = None) -> ExitStatus:
        """Wait for the started guest to end (or `timeout` seconds: an error), stop. The exit status."""
        if self.wait(timeout) is None:
            return self.stop(ExitStatus(ExitKind.ERROR, f"the guest did not finish within {timeout} s"))
        return self.stop()

    def close(self) -> None:
        """Stop if running, then free the VM, its RAM and the KVM fd."""
        if self._threads:
            self.stop()
        self.events.close()
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
        counts = self.exit_counts[vcpu.index]
        while not stopped.is_set():
            ex = vcpu.run()
            kind = type(ex).__name__
            counts[kind] = counts.get(kind, 0) + 1
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
        if ex.items == 1:
            bus.write(port, size, int.from_bytes(ex.data, "little"))
            return
        for i in range(0, size * ex.items, size):  # string I/O (rep outs): one access per item
            bus.write(port, size, int.from_bytes(ex.data[i : i + size], "little"))
    else:
        mask = (1 << (8 * size)) - 1
        if ex.items == 1:
            vcpu.complete_io_in((bus.read(port, size) & mask).to_bytes(size, "little"))
            return
        vcpu.complete_io_in(b"".join((bus.read(port, size) & mask).to_bytes(size, "little") for _ in range(ex.items)))


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
    ex: ShutdownExit | SystemEventExit | InternalErrorExit | FailEntryExit | HostMemoryExit | UnexpectedExit,
) -> ExitStatus:
    if isinstance(ex, SystemEventExit):
        make = _SYSTEM_EVENTS.get(ex.kind)
        return make(ex) if make else ExitStatus(ExitKind.ERROR, f"unknown KVM system event {ex.kind}")
    return ExitStatus(ExitKind.ERROR, ex.report)
