"""Boot a Linux guest on the KVM VMM: the `isola-vmm` command, and the launcher `isola vm run` shares.

    isola-vmm --config vm.json [--timeout S] [--protocol 32|64] [--hide-xsave]
    isola-vmm --kernel K [--initrd I] [--append ARGS] [--memory MIB] [--cpus N] ...

The VM document is Firecracker's (`isola.vmm.config`). The serial console goes to stdout as it comes; one
status line goes to stderr at the end; the exit status is 0 for a power-off (or reset) and 1 for an error
(panic, triple fault, KVM error, timeout). On a host whose KVM cannot run guest kernel code natively (kvm_pvm)
it refuses at once, with the reason, instead of spending minutes in an emulated boot.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from isola.devices.i8042 import I8042, I8042_BASE, I8042_LENGTH
from isola.devices.rtc import RTC_BASE, RTC_LENGTH, CmosRtc
from isola.devices.serial import COM1_BASE, COM1_IRQ, UART_LENGTH, Uart16550
from isola.errors import InvalidSpecError, IsolaError, UnsupportedError, UsageError, exit_code
from isola.vmm import config
from isola.vmm.console import ConsoleWatcher
from isola.vmm.kvm import system
from isola.vmm.machine import ExitKind, ExitStatus, Machine, MachineConfig

DEFAULT_APPEND = "console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"


def attach_legacy_devices(machine: Machine, console: Callable[[bytes], None]) -> Uart16550:
    """COM1 (its output through a ConsoleWatcher to `console`), the CMOS RTC, and an absent i8042 whose reset
    line ends the machine with "reboot". Returns the UART, whose `feed()` is the console's input."""
    watcher = ConsoleWatcher(machine, console)
    uart = Uart16550(machine.irq_line(COM1_IRQ), watcher.feed)
    machine.pio_bus.register(COM1_BASE, UART_LENGTH, uart)
    machine.pio_bus.register(RTC_BASE, RTC_LENGTH, CmosRtc())
    machine.pio_bus.register(
        I8042_BASE,
        I8042_LENGTH,
        I8042(lambda: machine.request_stop(ExitStatus(ExitKind.REBOOT, "guest reset the machine (i8042)"))),
    )
    return uart


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
    protocol: Literal[32, 64] = 64,
    hide_xsave: bool = False,
) -> ExitStatus:
    """Boot `vm` and run it to its end."""
    check_host()
    if vm.drives or vm.nics:
        raise UnsupportedError(
            "virtio drives and network interfaces are not attached yet",
            hint="Debian's kernel ignores virtio_mmio.device=; the VMM must first announce devices through ACPI",
        )
    with Machine(MachineConfig(cpus=vm.vcpus, memory_mib=vm.memory_mib, hide_xsave=hide_xsave)) as machine:
        attach_legacy_devices(machine, console)
        layout = machine.load_linux(vm.boot.kernel, vm.boot.boot_args, vm.boot.initrd, protocol=protocol)
        print(f"isola-vmm: booting {layout.release} ({protocol}-bit entry)", file=sys.stderr)
        try:
            return machine.run(timeout=timeout)
        except KeyboardInterrupt:
            return machine.stop(ExitStatus(ExitKind.STOPPED, "interrupted"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="isola-vmm", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="a VM document (Firecracker's JSON vocabulary)")
    parser.add_argument("--kernel", type=Path, help="bzImage (instead of --config)")
    parser.add_argument("--initrd", type=Path)
    parser.add_argument("--append", default=DEFAULT_APPEND, help="kernel command line")
    parser.add_argument("--memory", type=int, default=256, help="MiB")
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--protocol", type=int, choices=(32, 64), default=64, help="boot protocol entry")
    parser.add_argument("--timeout", type=float, help="seconds before the guest counts as hung")
    parser.add_argument("--hide-xsave", action="store_true", help="hide XSAVE/AVX from the guest")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.config is not None:
            try:
                document = json.loads(args.config.read_text())
            except (OSError, ValueError) as exc:
                raise InvalidSpecError(f"cannot read {args.config}: {exc}") from None
            vm = config.parse(document)
        elif args.kernel is not None:
            boot_source: dict[str, object] = {"kernel_image_path": str(args.kernel), "boot_args": args.append}
            if args.initrd is not None:
                boot_source["initrd_path"] = str(args.initrd)
            machine_config = {"vcpu_count": args.cpus, "mem_size_mib": args.memory}
            vm = config.parse({"boot-source": boot_source, "machine-config": machine_config})
        else:
            raise UsageError("give --config FILE, or --kernel FILE")
        protocol: Literal[32, 64] = 32 if args.protocol == 32 else 64
        status = boot(vm, timeout=args.timeout, protocol=protocol, hide_xsave=args.hide_xsave)
    except IsolaError as err:
        print(f"isola-vmm: {err}", file=sys.stderr)
        if err.hint:
            print(f"isola-vmm: hint: {err.hint}", file=sys.stderr)
        return exit_code(err)
    elapsed = time.monotonic() - started
    print(f"isola-vmm: {status.kind}: {status.message} ({elapsed:.2f} s)", file=sys.stderr)
    return status.exit_code


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
