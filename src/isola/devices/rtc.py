"""The MC146818 CMOS real-time clock (ports 0x70 index, 0x71 data), reading the host's clock in UTC.

Linux reads the wall clock from it at boot (until kvm-clock takes over) and `rtc_cmos` probes it; a port range
that reads 0xff instead costs 2.7 s and 40k exits before the driver gives up (measured). The time is the
host's, formatted as register B asks (BCD or binary, 24- or 12-hour); writes to the time registers are ignored,
so a guest cannot move its clock away from the host's. Register A never shows update-in-progress, so a reader
never waits; C reports no interrupts (none are raised); D says the battery-backed RAM is valid. Every other
index is plain CMOS RAM. Bit 7 of the index (NMI disable) is ignored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

RTC_BASE = 0x70
RTC_LENGTH = 2
RTC_IRQ = 8
"""A PC's RTC line. This model raises no interrupts, but Linux's driver will not bind without the line."""
INDEX = 0
DATA = 1

SECONDS = 0x00
MINUTES = 0x02
HOURS = 0x04
WEEKDAY = 0x06
DAY = 0x07
MONTH = 0x08
YEAR = 0x09
REG_A = 0x0A
REG_B = 0x0B
REG_C = 0x0C
REG_D = 0x0D
CENTURY = 0x32  # the IBM PC convention (ACPI FADT "century" usually points here)

REG_A_DEFAULT = 0x26  # 32.768 kHz time base, 1024 Hz periodic rate; bit 7 (UIP) is always clear
REG_A_UIP = 0x80
REG_B_24H = 0x02
REG_B_BINARY = 0x04
REG_D_VALID = 0x80
HOUR_PM = 0x80

_TIME_REGISTERS = {SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR, CENTURY}


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CmosRtc:
    """Register it on the port-I/O bus at `RTC_BASE` with `RTC_LENGTH`. `now` is the clock (tests pass theirs)."""

    def __init__(self, now: Callable[[], datetime] = _utc_now) -> None:
        self.now = now
        self.index = 0
        self.ram = bytearray(128)
        self.ram[REG_A] = REG_A_DEFAULT
        self.ram[REG_B] = REG_B_24H
        self._lock = threading.Lock()  # an index write and its data access come from one vCPU, but vCPUs race

    def read(self, offset: int, size: int) -> int:
        if offset != DATA:
            return 0xFF  # the index register is write-only
        with self._lock:
            return self._read_register(self.index)

    def write(self, offset: int, size: int, value: int) -> None:
        with self._lock:
            if offset == INDEX:
                self.index = value & 0x7F
            elif offset == DATA:
                self._write_register(self.index, value & 0xFF)

    def _read_register(self, index: int) -> int:
        if index in _TIME_REGISTERS:
            return self._time_register(index, self.now())
        if index == REG_C:
            return 0
        if index == REG_D:
            return REG_D_VALID
        return self.ram[index]

    def _write_register(self, index: int, value: int) -> None:
        if index == REG_A:
            self.ram[REG_A] = value & ~REG_A_UIP
        elif index not in _TIME_REGISTERS and index not in (REG_C, REG_D):
            self.ram[index] = value

    def _time_register(self, index: int, now: datetime) -> int:
        mode = self.ram[REG_B]
        if index == HOURS and not mode & REG_B_24H:
            hour12 = now.hour % 12 or 12
            return self._encode(hour12, mode) | (HOUR_PM if now.hour >= 12 else 0)
        value = {
            SECONDS: now.second,
            MINUTES: now.minute,
            HOURS: now.hour,
            WEEKDAY: now.isoweekday() % 7 + 1,  # 1 = Sunday
            DAY: now.day,
            MONTH: now.month,
            YEAR: now.year % 100,
            CENTURY: now.year // 100,
        }[index]
        return self._encode(value, mode)

    @staticmethod
    def _encode(value: int, mode: int) -> int:
        return value if mode & REG_B_BINARY else (value // 10) << 4 | value % 10
