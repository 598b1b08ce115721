"""The console watcher: guest power-off and panic lines end the machine with the right status."""

from __future__ import annotations

from isola.vmm.console import ConsoleWatcher
from isola.vmm.machine import ExitKind, ExitStatus


class FakeMachine:
    def __init__(self) -> None:
        self.stops: list[ExitStatus] = []
        self.panics: list[str] = []

    def request_stop(self, status: ExitStatus) -> None:
        self.stops.append(status)

    def note_panic(self, line: str) -> None:
        self.panics.append(line)


def test_output_is_passed_through_unchanged():
    seen: list[bytes] = []
    watcher = ConsoleWatcher(FakeMachine(), seen.append)
    watcher.feed(b"hello\r\n")
    watcher.feed(b"\xff\x00partial")
    assert seen == [b"hello\r\n", b"\xff\x00partial"]


def test_power_down_line_split_across_writes():
    machine = FakeMachine()
    watcher = ConsoleWatcher(machine)
    for chunk in (b"[   18.22] reb", b"oot: System hal", b"ted\r", b"\n"):
        watcher.feed(chunk)
    assert machine.stops == [ExitStatus(ExitKind.POWEROFF, "[   18.22] reboot: System halted")]


def test_power_down_variant():
    machine = FakeMachine()
    ConsoleWatcher(machine).feed(b"[    1.0] reboot: Power down\n")
    assert [s.kind for s in machine.stops] == [ExitKind.POWEROFF]


def test_restart_line_is_not_a_power_off():
    machine = FakeMachine()
    ConsoleWatcher(machine).feed(b"[    1.0] reboot: Restarting system\n")
    assert machine.stops == []


def test_panic_is_noted_then_stops_at_the_end_of_the_report():
    machine = FakeMachine()
    watcher = ConsoleWatcher(machine)
    watcher.feed(b"[ 2.1] Kernel panic - not syncing: VFS: Unable to mount root fs\n")
    assert machine.panics == ["Kernel panic - not syncing: VFS: Unable to mount root fs"]
    assert machine.stops == []
    watcher.feed(b"[ 2.2] Call Trace:\n[ 2.3] ---[ end Kernel panic - not syncing: VFS: ... ]---\n")
    (status,) = machine.stops
    assert status.kind is ExitKind.ERROR and status.exit_code == 1
    assert "Unable to mount root fs" in status.message


def test_very_long_lines_do_not_grow_without_bound():
    machine = FakeMachine()
    watcher = ConsoleWatcher(machine)
    watcher.feed(b"x" * 100_000 + b"\n")
    watcher.feed(b"reboot: Power down\n")
    assert [s.kind for s in machine.stops] == [ExitKind.POWEROFF]
