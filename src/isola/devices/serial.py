"""An 8250/16550A UART: the guest's console (COM1 is at port 0x3f8 on IRQ 4).

Output is instant: a byte written to THR goes to `output` at once, so the line status always shows the
transmitter empty (LSR = THRE | TEMT = 0x60) and a THRE interrupt is pending again right after each write.
Input is whatever the VMM `feed()`s; it waits in a receive FIFO that raises data-ready and the receive
interrupt. Both are plain byte streams, so attaching and detaching an interactive console is the VMM's job.

Interrupts follow the 16550 rules Linux depends on. The identification in IIR is the highest-priority enabled
cause: line status (overrun), then received data, then THRE. Reading IIR while it reports THRE clears that
THRE, and enabling ETBEI in IER with the transmitter empty raises it again: Linux's start-up test
(`serial8250_startup`) checks exactly that, and without it falls back to polling the UART from a timer. The
interrupt line is level-triggered: high while IIR reports a cause.

Loopback (MCR bit 4) is modelled because the kernel's probe checks MSR in loopback: transmitted bytes come
back as input, and MSR's status bits mirror MCR's outputs. Modem-status deltas are never reported (no modem),
so there are no modem-status interrupts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from isola.devices.bus import IrqLine

COM1_BASE = 0x3F8
COM1_IRQ = 4
UART_LENGTH = 8

# Register offsets. With LCR.DLAB set, offsets 0 and 1 are the divisor latch instead.
RBR_THR_DLL = 0
IER_DLM = 1
IIR_FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

IER_RDI = 0x01  # received data available
IER_THRI = 0x02  # transmitter holding register empty
IER_RLSI = 0x04  # receiver line status
IER_MASK = 0x0F

IIR_NO_INT = 0x01
IIR_THRI = 0x02
IIR_RDI = 0x04
IIR_RLSI = 0x06
IIR_FIFO_ENABLED = 0xC0

FCR_ENABLE_FIFO = 0x01
FCR_CLEAR_RCVR = 0x02

LCR_DLAB = 0x80

MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10
MCR_MASK = 0x1F

LSR_DR = 0x01
LSR_OE = 0x02
LSR_THRE = 0x20
LSR_TEMT = 0x40

MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80
MSR_CONNECTED = MSR_DCD | MSR_DSR | MSR_CTS  # outside loopback: a peer is there and ready

RX_CAPACITY = 64 << 10  # input beyond this is dropped with an overrun, as a real FIFO would


class Uart16550:
    """Register it on the port-I/O bus at `COM1_BASE` with `UART_LENGTH`; its IrqLine is IRQ 4."""

    def __init__(self, irq: IrqLine, output: Callable[[bytes], None]) -> None:
        self.irq = irq
        self.output = output
        self.rx = bytearray()
        self.ier = 0
        self.lcr = 0
        self.mcr = 0
        self.scr = 0
        self.divisor = 0
        self.fifo_enabled = False
        self.thre_pending = False  # the THRE interrupt cause, cleared by reading IIR or writing THR
        self.overrun = False
        self._line = False
        self._lock = threading.Lock()

    # -- the VMM's side --------------------------------------------------------------------------------------

    def feed(self, data: bytes) -> int:
        """Input for the guest. Returns how many bytes fitted; the rest is dropped (an overrun)."""
        with self._lock:
            accepted = self._receive(data)
            self._update_line()
            return accepted

    # -- bus.Device --------------------------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        with self._lock:
            value = self._read(offset)
            self._update_line()
            return value

    def write(self, offset: int, size: int, value: int) -> None:
        with self._lock:
            out = self._write(offset, value & 0xFF)
            self._update_line()
        if out is not None:
            self.output(out)  # outside the lock: a writer that blocks or feeds input back cannot deadlock

    # -- registers -----------------------------------------------------------------------------------------

    def _receive(self, data: bytes) -> int:
        room = RX_CAPACITY - len(self.rx)
        self.rx += data[:room]
        if len(data) > room:
            self.overrun = True
        return min(len(data), room)

    def _read(self, offset: int) -> int:
        dlab = self.lcr & LCR_DLAB
        if offset == RBR_THR_DLL:
            if dlab:
                return self.divisor & 0xFF
            if not self.rx:
                return 0
            byte = self.rx[0]
            del self.rx[0]
            return byte
        if offset == IER_DLM:
            return self.divisor >> 8 if dlab else self.ier
        if offset == IIR_FCR:
            iir = self._iir()
            if iir == IIR_THRI:
                self.thre_pending = False
            return iir | (IIR_FIFO_ENABLED if self.fifo_enabled else 0)
        if offset == LCR:
            return self.lcr
        if offset == MCR:
            return self.mcr
        if offset == LSR:
            lsr = LSR_THRE | LSR_TEMT | (LSR_DR if self.rx else 0) | (LSR_OE if self.overrun else 0)
            self.overrun = False
            return lsr
        if offset == MSR:
            return self._msr()
        return self.scr

    def _write(self, offset: int, value: int) -> bytes | None:
        """Store a register; returns a byte to transmit when there is one."""
        dlab = self.lcr & LCR_DLAB
        if offset == RBR_THR_DLL:
            if dlab:
                self.divisor = (self.divisor & 0xFF00) | value
                return None
            self.thre_pending = True  # transmitted at once, so the holding register is empty again
            if self.mcr & MCR_LOOP:
                self._receive(bytes([value]))
                return None
            return bytes([value])
        if offset == IER_DLM:
            if dlab:
                self.divisor = (self.divisor & 0xFF) | value << 8
            else:
                if value & IER_THRI and not self.ier & IER_THRI:
                    self.thre_pending = True  # enabling ETBEI with THR empty raises THRE
                self.ier = value & IER_MASK
        elif offset == IIR_FCR:
            self.fifo_enabled = bool(value & FCR_ENABLE_FIFO)
            if value & FCR_CLEAR_RCVR:
                self.rx.clear()
        elif offset == LCR:
            self.lcr = value
        elif offset == MCR:
            self.mcr = value & MCR_MASK
        elif offset == SCR:
            self.scr = value
        return None  # LSR and MSR are read-only

    def _msr(self) -> int:
        if not self.mcr & MCR_LOOP:
            return MSR_CONNECTED
        msr = 0
        for mcr_bit, msr_bit in ((MCR_RTS, MSR_CTS), (MCR_DTR, MSR_DSR), (MCR_OUT1, MSR_RI), (MCR_OUT2, MSR_DCD)):
            if self.mcr & mcr_bit:
                msr |= msr_bit
        return msr

    def _iir(self) -> int:
        """The interrupt identification without the FIFO bits: the highest-priority enabled cause."""
        if self.ier & IER_RLSI and self.overrun:
            return IIR_RLSI
        if self.ier & IER_RDI and self.rx:
            return IIR_RDI
        if self.ier & IER_THRI and self.thre_pending:
            return IIR_THRI
        return IIR_NO_INT

    def _update_line(self) -> None:
        level = self._iir() != IIR_NO_INT
        if level != self._line:
            self._line = level
            self.irq.set_level(level)
