"""Boot a Linux guest on the KVM VMM: the `isola-vmm` command, and the launcher `isola vm run` shares.

    isola-vmm --config vm.json [--timeout S] [--protocol 32|64] [--on-reboot exit|restart] [--console-sock PATH]
    isola-vmm --kernel K [--initrd I] [--append ARGS] [--memory MIB] [--cpus N] ...
    isola-vmm --api-sock PATH [--config vm.json]
    isola-vmm run --process [--root DIR] ... -- PROGRAM [ARGS...]      (a process VM: isola.vmm.process.cli)

The VM document is Firecracker's (`isola.vmm.config`). The serial console goes to stdout as it comes (or, with
`--console-sock PATH`, to a unix socket that `isola vm console PATH` attaches to); one status line goes to
stderr at the end; the exit status is 0 for a power-off (or reset) and 1 for an error
(panic, triple fault, KVM error, timeout). On a host whose KVM cannot run guest kernel code natively (kvm_pvm)
it refuses at once, with the reason, instead of spending minutes in an emulated boot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from isola.devices.i8042 import I8042, I8042_BASE, I8042_IRQ, I8042_LENGTH
from isola.devices.rtc import RTC_BASE, RTC_IRQ, RTC_LENGTH, CmosRtc
from isola.devices.serial import COM1_BASE, COM1_IRQ, UART_LENGTH, Uart16550
from isola.errors import InvalidSpecError, IsolaError, UnsupportedError, UsageError, exit_code
from isola.vmm import config, virtio_devices
from isola.vmm.acpi import tables as acpi
from isola.vmm.console import ConsoleWatcher
from isola.vmm.console_socket import ConsoleServer
from isola.vmm.kvm import system
from isola.vmm.machine import ExitKind, ExitStatus, Machine, MachineConfig

_ENTRY_NAMES = {32: "32-bit", 64: "64-bit", "pvh": "PVH"}
# The serial console; reboot through the keyboard controller; a panic ends the VM at once; no PCI (the machine has
# none, and the kernel's early PCI probing costs ~33k port exits); the keyboard without a mouse port, and without
# commands to the keyboard (Firecracker's choice: atkbd binds without waiting for answers).
DEFAULT_APPEND = "console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd"
"""No `i8042.nopnp`: without a legacy PIC, Linux maps IRQ 1 only for the keyboard controller the DSDT lists
(PNP0303), so the i8042 driver must take its ports and interrupt from there (with nopnp it asks for IRQ 1
directly and its probe fails with EINVAL)."""


@dataclass(frozen=True)
class LegacyDevices:
    uart: Uart16550
    """COM1; its `feed()` is the console's input."""
    i8042: I8042


def attach_legacy_devices(machine: Machine, console: Callable[[bytes], None]) -> LegacyDevices:
    """COM1 (its output through a ConsoleWatcher to `console`), the CMOS RTC, and the i8042 with its PS/2
    keyboard on IRQ 1, whose reset line ends the machine with "reboot"."""
    watcher = ConsoleWatcher(machine, console)
    uart = Uart16550(machine.irq_line(COM1_IRQ), watcher.feed)
    machine.pio_bus.register(COM1_BASE, UART_LENGTH, uart)
    machine.pio_bus.register(RTC_BASE, RTC_LENGTH, CmosRtc())
    i8042 = I8042(
        machine.irq_line(I8042_IRQ),
        lambda: machine.request_stop(ExitStatus(ExitKind.REBOOT, "guest reset the machine (i8042)")),
    )
    machine.pio_bus.register(I8042_BASE, I8042_LENGTH, i8042)
    machine.isa_devices += [
        acpi.IsaDevice("COM1", "PNP0501", ((COM1_BASE, UART_LENGTH),), COM1_IRQ),
        acpi.IsaDevice("PS2K", acpi.KEYBOARD_HID, ((I8042_BASE, 1), (I8042_BASE + 4, 1)), I8042_IRQ),
        acpi.IsaDevice("RTC", "PNP0B00", ((RTC_BASE, RTC_LENGTH),), RTC_IRQ),
    ]
    return LegacyDevices(uart, i8042)


@dataclass
class RunningVm:
    """What a controller (the REST API, a console) may do with a booted VM while `boot()` runs it."""

    machine: Machine
    devices: LegacyDevices
    started: float = field(default_factory=time.monotonic)

    def send_ctrl_alt_del(self) -> None:
        """Press Ctrl+Alt+Del on the guest's keyboard: Linux reboots at once, or, once init has taken over the
        key (busybox, sysvinit and systemd do), signals init, which does what it is configured to. The keys are
        lost if the guest's driver disabled the keyboard, as on a real one."""
        with self.machine.device_lock:
            self.devices.i8042.press_ctrl_alt_del()

    def console_input(self, data: bytes) -> None:
        """Type `data` on the serial console."""
        with self.machine.device_lock:
            self.devices.uart.feed(data)

    def metrics(self) -> dict[str, object]:
        """Counters for monitoring: uptime and the exits each vCPU took to the VMM, by kind."""
        return {
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "vcpu_exits": [dict(counts) for counts in self.machine.exit_counts],
        }

    def stop(self, reason: str = "stopped by the VMM") -> None:
        self.machine.request_stop(ExitStatus(ExitKind.STOPPED, reason))


def _write_console(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def check_host() -> None:
    """UnsupportedError unless this host's KVM runs guest kernel code natively."""
    info = system.probe()
    if not info.usable:
        raise UnsupportedError(f"no usable KVM: {info.problem}")
    if info.provider == "kvm_pvm":
        raise UnsupportedError(
            "this host's /dev/kvm is kvm_pvm: guest kernel code is emulated ~5000x slower, a kernel cannot boot",
            hint="use process-mode VMs here, or run on a host with VMX/SVM (isola's tests use `make test-nested`)",
        )


def boot(
    vm: config.VmConfig,
    *,
    console: Callable[[bytes], None] = _write_console,
    timeout: float | None = None,
    protocol: Literal[32, 64] | None = None,
    hide_xsave: bool = False,
    on_started: Callable[[RunningVm], None] | None = None,
    on_reboot: Literal["exit", "restart"] = "exit",
) -> ExitStatus:
    """Boot `vm` and run it to its end. `on_started` gets the running VM's handle once its vCPUs run (again
    after each restart). A guest reboot ends the run (Firecracker's way), or with `on_reboot="restart"` boots
    the same VM again on a fresh machine (QEMU's way): RAM and devices start over, disk images keep what the
    guest wrote. `timeout` counts across restarts."""
    check_host()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        status = _boot_once(vm, console, remaining, protocol, hide_xsave, on_started)
        if status.kind is not ExitKind.REBOOT or on_reboot == "exit":
            return status
        print(f"isola-vmm: {status.message}; booting again", file=sys.stderr)


def _boot_once(
    vm: config.VmConfig,
    console: Callable[[bytes], None],
    timeout: float | None,
    protocol: Literal[32, 64] | None,
    hide_xsave: bool,
    on_started: Callable[[RunningVm], None] | None,
) -> ExitStatus:
    machine_config = MachineConfig(cpus=vm.vcpus, memory_mib=vm.memory_mib, hide_xsave=hide_xsave)
    with contextlib.ExitStack() as resources, Machine(machine_config) as machine:
        devices = attach_legacy_devices(machine, console)
        virtio_devices.attach(machine, vm, resources)
        layout = machine.load_linux(vm.boot.kernel, vm.boot.boot_args, vm.boot.initrd, protocol=protocol)
        print(f"isola-vmm: booting {layout.release} ({_ENTRY_NAMES[layout.protocol]} entry)", file=sys.stderr)
        try:
            machine.start()
            if on_started is not None:
                on_started(RunningVm(machine, devices))
            return machine.finish(timeout)
        except KeyboardInterrupt:
            return machine.stop(ExitStatus(ExitKind.STOPPED, "interrupted"))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        from isola.vmm.process import cli

        return cli.main(argv[1:])
    parser = argparse.ArgumentParser(prog="isola-vmm", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="a VM document (Firecracker's JSON vocabulary)")
    parser.add_argument("--kernel", type=Path, help="bzImage or ELF vmlinux (instead of --config)")
    parser.add_argument("--initrd", type=Path)
    parser.add_argument("--append", default=DEFAULT_APPEND, help="kernel command line")
    parser.add_argument("--memory", type=int, default=256, help="MiB")
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument(
        "--protocol", type=int, choices=(32, 64), help="boot protocol entry (default: 64; PVH for an ELF vmlinux)"
    )
    parser.add_argument("--timeout", type=float, help="seconds before the guest counts as hung")
    parser.add_argument("--hide-xsave", action="store_true", help="hide XSAVE/AVX from the guest")
    parser.add_argument("--on-reboot", choices=("exit", "restart"), default="exit",
                        help="when the guest reboots: end (as Firecracker) or boot it again (as QEMU)")  # fmt: skip
    parser.add_argument("--api-sock", type=Path, metavar="PATH",
                        help="serve Firecracker's REST API on this unix socket and boot on InstanceStart; "
                        "--config or --kernel give the configuration to start from")  # fmt: skip
    parser.add_argument("--console-sock", type=Path, metavar="PATH",
                        help="serve the serial console on this unix socket instead of stdout "
                        "(`isola vm console PATH` attaches; Ctrl-] detaches)")  # fmt: skip
    args = parser.parse_args(argv)
    started = time.monotonic()
    console_server: ConsoleServer | None = None
    try:
        document: object = None
        if args.config is not None:
            try:
                document = json.loads(args.config.read_text())
            except (OSError, ValueError) as exc:
                raise InvalidSpecError(f"cannot read {args.config}: {exc}") from None
        elif args.kernel is not None:
            boot_source: dict[str, object] = {"kernel_image_path": str(args.kernel), "boot_args": args.append}
            if args.initrd is not None:
                boot_source["initrd_path"] = str(args.initrd)
            machine_config = {"vcpu_count": args.cpus, "mem_size_mib": args.memory}
            document = {"boot-source": boot_source, "machine-config": machine_config}
        elif args.api_sock is None:
            raise UsageError("give --config FILE, --kernel FILE or --api-sock PATH")
        protocol: Literal[32, 64] | None = None if args.protocol is None else (32 if args.protocol == 32 else 64)

        console: Callable[[bytes], None] = _write_console
        if args.console_sock is not None:
            console_server = ConsoleServer(args.console_sock)
            console = console_server.output
            print(f"isola-vmm: serial console on {args.console_sock} (isola vm console PATH)", file=sys.stderr)

        def boot_vm(vm: config.VmConfig, *, on_started: Callable[[RunningVm], None] | None = None) -> ExitStatus:
            if console_server is not None:
                on_started = console_server.on_started(on_started)
            return boot(
                vm,
                console=console,
                timeout=args.timeout,
                protocol=protocol,
                hide_xsave=args.hide_xsave,
                on_started=on_started,
                on_reboot=args.on_reboot,
            )

        if args.api_sock is not None:
            from isola.vmm import api  # only here: a plain boot does not pay for importing FastAPI

            served = api.serve(args.api_sock, boot_vm, document=document, console=console_server)
            if served is None:
                return 0  # told to stop before any VM ran
            status = served
        else:
            status = boot_vm(config.parse(document))
    except IsolaError as err:
        print(f"isola-vmm: {err}", file=sys.stderr)
        if err.hint:
            print(f"isola-vmm: hint: {err.hint}", file=sys.stderr)
        return exit_code(err)
    finally:
        if console_server is not None:
            console_server.close()
    elapsed = time.monotonic() - started
    print(f"isola-vmm: {status.kind}: {status.message} ({elapsed:.2f} s)", file=sys.stderr)
    return status.exit_code


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
