"""Boot a Linux bzImage on the KVM VMM with the PC legacy devices and print its serial console.

    python -m isola.vmm.boot_smoke --kernel K [--initrd I] [--append "console=ttyS0 ..."] \\
        [--memory 256] [--cpus 1] [--protocol 64] [--timeout 120] [--hide-xsave]

The serial console goes to stdout as it comes; one status line goes to stderr at the end, and the exit status
is 0 for a power-off (or reset), 1 for an error (panic, triple fault, KVM error, timeout). This is the entry
point scripts use where a real KVM exists (the nested test lane); `attach_legacy_devices` is the wiring any
front end reuses.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from isola.devices.i8042 import I8042, I8042_BASE, I8042_LENGTH
from isola.devices.rtc import RTC_BASE, RTC_LENGTH, CmosRtc
from isola.devices.serial import COM1_BASE, COM1_IRQ, UART_LENGTH, Uart16550
from isola.errors import IsolaError, exit_code
from isola.vmm.console import ConsoleWatcher
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m isola.vmm.boot_smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", type=Path, required=True, help="bzImage")
    parser.add_argument("--initrd", type=Path)
    parser.add_argument("--append", default=DEFAULT_APPEND, help="kernel command line")
    parser.add_argument("--memory", type=int, default=256, help="MiB")
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--protocol", type=int, choices=(32, 64), default=64, help="boot protocol entry")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before the boot counts as hung")
    parser.add_argument("--hide-xsave", action="store_true", help="hide XSAVE/AVX from the guest")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        config = MachineConfig(cpus=args.cpus, memory_mib=args.memory, hide_xsave=args.hide_xsave)
        with Machine(config) as machine:
            attach_legacy_devices(machine, _write_console)
            layout = machine.load_linux(args.kernel, args.append, args.initrd, protocol=args.protocol)
            print(f"isola-vmm: booting {layout.release} ({args.protocol}-bit entry)", file=sys.stderr)
            try:
                status = machine.run(timeout=args.timeout)
            except KeyboardInterrupt:
                status = machine.stop(ExitStatus(ExitKind.STOPPED, "interrupted"))
    except IsolaError as err:
        print(f"isola-vmm: {err}", file=sys.stderr)
        return exit_code(err)
    elapsed = time.monotonic() - started
    print(f"isola-vmm: {status.kind}: {status.message} ({elapsed:.2f} s)", file=sys.stderr)
    return status.exit_code


if __name__ == "__main__":
    sys.exit(main())
