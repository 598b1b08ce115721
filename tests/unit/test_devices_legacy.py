"""The bus, the 16550 UART and the CMOS RTC, driven as Linux drives them (the i8042: test_devices_i8042.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from isola.devices import serial
from isola.devices.bus import Bus, DeviceMemoryError, RamMemory
from isola.devices.rtc import RTC_BASE, RTC_LENGTH, CmosRtc
from isola.devices.serial import COM1_BASE, UART_LENGTH, Uart16550
from tests.unit.test_devices_support import FakeIrq

# -- bus and memory ------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        return offset

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


def test_bus_routes_by_window() -> None:
    bus = Bus()
    a, b = Recorder(), Recorder()
    bus.register(0x3F8, 8, a)
    bus.register(0x70, 2, b)
    assert bus.read(0x3FD, 1) == 5
    assert bus.read(0x71, 1) == 1
    bus.write(0x3F8, 1, 0x41)
    bus.write(0x70, 1, 0x8A)
    assert a.writes == [(0, 1, 0x41)] and b.writes == [(0, 1, 0x8A)]
    assert bus.find(0x3FF) == (7, a)
    assert bus.find(0x400) is None
    assert bus.find(0x6F) is None
    assert bus.find(0) is None


def test_bus_unclaimed_reads_all_ones_and_writes_vanish() -> None:
    bus = Bus()
    assert [bus.read(0x80, size) for size in (1, 2, 4, 8)] == [0xFF, 0xFFFF, 0xFFFFFFFF, (1 << 64) - 1]
    bus.write(0x80, 1, 0)  # nothing to do, nothing raised


@pytest.mark.parametrize(("base", "length"), [(0x100, 0x10), (0xF8, 0x10), (0x108, 0x100), (0xF0, 0x200)])
def test_bus_rejects_overlaps(base: int, length: int) -> None:
    bus = Bus()
    bus.register(0x100, 0x10, Recorder())
    with pytest.raises(ValueError, match="overlaps"):
        bus.register(base, length, Recorder())
    bus.register(0x110, 0x10, Recorder())  # adjacent is fine
    bus.register(0xF0, 0x10, Recorder())


def test_ram_memory_bounds() -> None:
    mem = RamMemory(0x1000, base=0x10000)
    mem.write(0x10FFC, b"abcd")
    assert mem.read(0x10FFC, 4) == b"abcd"
    for gpa, n in ((0x10FFD, 4), (0xFFFF, 1), (0x20000, 0), (0x10000, -1)):
        with pytest.raises(DeviceMemoryError):
            mem.read(gpa, n)
    with pytest.raises(DeviceMemoryError):
        mem.write(0x10FFF, b"xy")


# -- 16550 UART ----------------------------------------------------------------------------------------------


class Uart:
    """A UART on a port bus, with its output and interrupt line captured."""

    def __init__(self) -> None:
        self.irq = FakeIrq()
        self.out = bytearray()
        self.uart = Uart16550(self.irq, self.out.extend)
        self.bus = Bus()
        self.bus.register(COM1_BASE, UART_LENGTH, self.uart)

    def inb(self, reg: int) -> int:
        return self.bus.read(COM1_BASE + reg, 1)

    def outb(self, reg: int, value: int) -> None:
        self.bus.write(COM1_BASE + reg, 1, value)


def test_uart_passes_linux_autoconfig() -> None:
    """The register checks of serial8250's autoconfig(), in its order, and their expected answers."""
    u = Uart()
    # IER: bits 0-3 must read back 0 and then 0x0f.
    saved = u.inb(serial.IER_DLM)
    u.outb(serial.IER_DLM, 0)
    assert u.inb(serial.IER_DLM) & 0x0F == 0
    u.outb(serial.IER_DLM, 0x0F)
    assert u.inb(serial.IER_DLM) & 0x0F == 0x0F
    u.outb(serial.IER_DLM, saved)
    # Loopback: MCR = LOOP | OUT2 | RTS must show DCD | CTS in MSR.
    saved_mcr = u.inb(serial.MCR)
    u.outb(serial.MCR, serial.MCR_LOOP | 0x0A)
    assert u.inb(serial.MSR) & 0xF0 == 0x90
    u.outb(serial.MCR, saved_mcr)
    # FIFO: with the FIFO enabled, IIR bits 7-6 read 3 (a 16550A).
    u.outb(serial.LCR, 0)
    u.outb(serial.IIR_FCR, serial.FCR_ENABLE_FIFO)
    assert u.inb(serial.IIR_FCR) >> 6 == 3
    # Scratch register and divisor latch hold what was written.
    u.outb(serial.SCR, 0xA5)
    assert u.inb(serial.SCR) == 0xA5
    u.outb(serial.LCR, serial.LCR_DLAB)
    u.outb(serial.RBR_THR_DLL, 0x01)
    u.outb(serial.IER_DLM, 0x00)
    assert (u.inb(serial.RBR_THR_DLL), u.inb(serial.IER_DLM)) == (1, 0)
    u.outb(serial.LCR, 0x03)  # 8n1, DLAB off: THR is THR again
    u.outb(serial.RBR_THR_DLL, ord("A"))
    assert bytes(u.out) == b"A"  # the divisor writes were not output
    assert u.inb(serial.LSR) == 0x60
    assert u.inb(serial.MSR) == serial.MSR_CONNECTED
    assert u.irq.changes == [True, False]  # only while the IER test had THRI enabled


def test_uart_thre_interrupt_is_reasserted_as_linux_startup_checks() -> None:
    """serial8250_startup: enable THRI, read IIR (THRE, which clears it), disable, enable, THRE again."""
    u = Uart()
    u.outb(serial.IER_DLM, serial.IER_THRI)
    assert u.irq.high()
    iir1 = u.inb(serial.IIR_FCR)
    assert iir1 & 0x0F == serial.IIR_THRI
    assert not u.irq.high()  # the read cleared the only cause
    assert u.inb(serial.IIR_FCR) & 0x0F == serial.IIR_NO_INT
    u.outb(serial.IER_DLM, 0)
    u.outb(serial.IER_DLM, serial.IER_THRI)
    assert u.inb(serial.IIR_FCR) & 0x0F == serial.IIR_THRI  # reasserted: no UART_BUG_THRE
    u.outb(serial.IER_DLM, 0)
    assert u.irq.changes == [True, False, True, False]


def test_uart_transmit_raises_thre_each_time() -> None:
    u = Uart()
    u.outb(serial.IER_DLM, serial.IER_THRI)
    u.inb(serial.IIR_FCR)
    for byte in b"hello":
        assert not u.irq.high()
        u.outb(serial.RBR_THR_DLL, byte)
        assert u.irq.high()  # sent at once: the holding register is empty, THRE pending
        assert u.inb(serial.IIR_FCR) & 0x0F == serial.IIR_THRI
    assert bytes(u.out) == b"hello"


def test_uart_receive() -> None:
    u = Uart()
    u.outb(serial.IER_DLM, serial.IER_RDI)
    assert u.uart.feed(b"ls\n") == 3
    assert u.irq.high()
    assert u.inb(serial.IIR_FCR) & 0x0F == serial.IIR_RDI
    got = bytearray()
    while u.inb(serial.LSR) & serial.LSR_DR:
        got.append(u.inb(serial.RBR_THR_DLL))
    assert got == b"ls\n"
    assert not u.irq.high()
    assert u.inb(serial.RBR_THR_DLL) == 0  # empty


def test_uart_receive_outranks_thre() -> None:
    u = Uart()
    u.outb(serial.IER_DLM, serial.IER_RDI | serial.IER_THRI)
    u.uart.feed(b"x")
    assert u.inb(serial.IIR_FCR) & 0x0F == serial.IIR_RDI
    u.inb(serial.RBR_THR_DLL)
    assert u.inb(serial.IIR_FCR) & 0x0F == serial.IIR_THRI


def test_uart_fifo_clear_and_overrun() -> None:
    u = Uart()
    u.outb(serial.IER_DLM, serial.IER_RLSI)
    assert u.uart.feed(bytes(serial.RX_CAPACITY + 10)) == serial.RX_CAPACITY
    assert u.inb(serial.IIR_FCR) & 0x0F == serial.IIR_RLSI
    assert u.inb(serial.LSR) & serial.LSR_OE
    assert not u.inb(serial.LSR) & serial.LSR_OE  # cleared by the read
    assert not u.irq.high()
    u.outb(serial.IIR_FCR, serial.FCR_ENABLE_FIFO | serial.FCR_CLEAR_RCVR)
    assert not u.inb(serial.LSR) & serial.LSR_DR


def test_uart_loopback_echoes_into_the_receiver() -> None:
    u = Uart()
    u.outb(serial.MCR, serial.MCR_LOOP)
    u.outb(serial.RBR_THR_DLL, 0x5A)
    assert bytes(u.out) == b""
    assert u.inb(serial.LSR) & serial.LSR_DR
    assert u.inb(serial.RBR_THR_DLL) == 0x5A


def test_uart_output_may_feed_input_without_deadlock() -> None:
    irq = FakeIrq()
    uart: Uart16550

    def echo(data: bytes) -> None:
        uart.feed(data)

    uart = Uart16550(irq, echo)
    uart.write(serial.RBR_THR_DLL, 1, ord("e"))
    assert uart.read(serial.RBR_THR_DLL, 1) == ord("e")


# -- CMOS RTC ------------------------------------------------------------------------------------------------


def bcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0x0F)


def cmos(bus: Bus, index: int) -> int:
    bus.write(RTC_BASE, 1, 0x80 | index)  # with the NMI-disable bit, which the RTC ignores
    return bus.read(RTC_BASE + 1, 1)


def test_rtc_reads_the_host_clock_in_bcd() -> None:
    bus = Bus()
    bus.register(RTC_BASE, RTC_LENGTH, CmosRtc())
    before = datetime.now(UTC).replace(microsecond=0)
    values = {i: bcd(cmos(bus, i)) for i in (0, 2, 4, 7, 8, 9, 0x32)}
    after = datetime.now(UTC)
    read = datetime(values[0x32] * 100 + values[9], values[8], values[7], values[4], values[2], values[0], tzinfo=UTC)
    assert before - timedelta(seconds=1) <= read <= after
    assert cmos(bus, 6) == read.isoweekday() % 7 + 1


def test_rtc_status_registers() -> None:
    bus = Bus()
    bus.register(RTC_BASE, RTC_LENGTH, CmosRtc())
    assert all(not cmos(bus, 0x0A) & 0x80 for _ in range(1000))  # never update-in-progress
    bus.write(RTC_BASE + 1, 1, 0xA6)  # a guest setting UIP cannot make it stick
    assert cmos(bus, 0x0A) == 0x26
    assert cmos(bus, 0x0B) == 0x02  # 24-hour, BCD
    assert cmos(bus, 0x0C) == 0
    assert cmos(bus, 0x0D) == 0x80  # RAM valid


def test_rtc_ram_and_ignored_time_writes() -> None:
    fixed = datetime(2031, 12, 24, 18, 5, 9, tzinfo=UTC)
    bus = Bus()
    bus.register(RTC_BASE, RTC_LENGTH, CmosRtc(now=lambda: fixed))
    bus.write(RTC_BASE, 1, 0x40)
    bus.write(RTC_BASE + 1, 1, 0x77)
    assert cmos(bus, 0x40) == 0x77
    bus.write(RTC_BASE, 1, 0x00)
    bus.write(RTC_BASE + 1, 1, 0x33)
    assert cmos(bus, 0x00) == 0x09  # the host's clock rules
    assert bus.read(RTC_BASE, 1) == 0xFF  # the index port is write-only


def test_rtc_binary_and_12_hour_modes() -> None:
    fixed = datetime(2031, 12, 24, 18, 5, 9, tzinfo=UTC)  # a Wednesday
    bus = Bus()
    bus.register(RTC_BASE, RTC_LENGTH, CmosRtc(now=lambda: fixed))
    assert [cmos(bus, i) for i in (0, 2, 4, 6, 7, 8, 9, 0x32)] == [0x09, 0x05, 0x18, 4, 0x24, 0x12, 0x31, 0x20]
    bus.write(RTC_BASE, 1, 0x0B)
    bus.write(RTC_BASE + 1, 1, 0x04)  # binary, 12-hour
    assert [cmos(bus, i) for i in (0, 4, 7, 9)] == [9, 0x80 | 6, 24, 31]
    bus.write(RTC_BASE, 1, 0x0B)
    bus.write(RTC_BASE + 1, 1, 0x00)  # BCD, 12-hour
    assert cmos(bus, 4) == 0x80 | 0x06
