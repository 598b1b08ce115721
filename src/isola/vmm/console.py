"""Reading the guest's console for the events no device reports: power-off without ACPI, and kernel panics.

Without ACPI, Linux has no way to switch the machine off: `poweroff` ends in "reboot: Power down" or
"reboot: System halted" and a vCPU halted with interrupts off, and with the in-kernel irqchip that HLT never
leaves KVM. A panic prints "Kernel panic - not syncing: ..." and then, depending on `panic=`, hangs or reboots.
The console is the one place both are visible, so the UART's output is fed through a `ConsoleWatcher`, which
ends the machine accordingly (research/measurements.md §6d: the C mini-VMM did the same).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from isola.vmm.machine import ExitKind, ExitStatus

POWER_OFF_LINES = ("reboot: Power down", "reboot: System halted")
PANIC_MARK = "Kernel panic - not syncing"
PANIC_END_MARK = "---[ end Kernel panic"
MAX_LINE = 4096


class StopTarget(Protocol):
    def request_stop(self, status: ExitStatus) -> None: ...

    def note_panic(self, line: str) -> None: ...


class ConsoleWatcher:
    """Feed it the guest's console bytes (`feed`); it passes them on to `sink` and stops `machine` on power-off
    and panic lines. A panic stops the machine when the kernel finishes its report (the "end Kernel panic"
    trailer), so the stack trace is on the console; if the guest reboots first (`panic=N`), the machine
    turns that reboot into the error itself."""

    def __init__(self, machine: StopTarget, sink: Callable[[bytes], None] | None = None) -> None:
        self._machine = machine
        self._sink = sink
        self._line = bytearray()
        self.panic_line: str | None = None

    def feed(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink(data)
        for byte in data:
            if byte == 0x0A:
                self._check(self._line.decode("utf-8", "replace").rstrip("\r"))
                self._line.clear()
            elif len(self._line) < MAX_LINE:
                self._line.append(byte)

    def _check(self, line: str) -> None:
        if PANIC_MARK in line and self.panic_line is None:
            self.panic_line = line[line.index(PANIC_MARK) :]
            self._machine.note_panic(self.panic_line)
        elif PANIC_END_MARK in line:
            self._machine.request_stop(ExitStatus(ExitKind.ERROR, f"guest kernel panic: {self.panic_line or line}"))
        elif any(mark in line for mark in POWER_OFF_LINES):
            self._machine.request_stop(ExitStatus(ExitKind.POWEROFF, line.strip()))
