"""An i8042 keyboard controller with a PS/2 keyboard behind it (ports 0x60 and 0x64, IRQ 1).

Why a keyboard at all: it is how a VMM asks a guest to restart politely. Ctrl+Alt+Del on the keyboard reaches
Linux's keyboard handler, which either reboots at once or signals init (Firecracker's `SendCtrlAltDel` is the
same idea). The controller also carries the machine's reset line, which is how `reboot=k` resets the machine.

What the guest sees, and why each part is there:

* **The controller** answers the commands Linux's i8042 driver sends while probing (`i8042_controller_check`,
  `i8042_controller_init`, the A20 and null commands of `i8042_platform_init`): read/write the command byte
  (0x20/0x60, and the rest of its 32 bytes of RAM), self-test (0xAA → 0x55), keyboard interface test
  (0xAB → 0x00), disable/enable the keyboard (0xAD/0xAE), read/write the output port (0xD0/0xD1) and write
  the keyboard's output buffer (0xD2). Commands it does not know are ignored, as an 8042 does.
* **No aux (mouse) port**: 0xA7/0xA8 only flip the command byte's aux-disable bit, the aux interface test
  (0xA9) fails with 0x02, bytes for the mouse (0xD4) vanish, and the aux loop (0xD3) echoes its byte *without*
  the status register's aux bit. Linux's loop test reads that as "auxerr" and gives up on the aux port at once;
  a controller that simply ignored 0xD3 would cost the guest a 0.5 s timeout per loop test.
* **The reset line is immediate.** The status register never shows the input buffer full, because every
  write is processed as it happens, so `reboot=k` (which polls that bit up to 65536 times before writing)
  writes its reset at once; 0xFE (pulse output line 0), any other 0xF0-0xFF pulse that includes line 0, or an
  output-port write with bit 0 clear call `on_reset` before the write returns.
* **The keyboard** is an MF2 keyboard in scancode set 2 (sets 1 and 3 can be selected): reset (0xFF →
  0xFA 0xAA), get ID (0xF2 → 0xFA 0xAB 0x83), disable/enable scanning (0xF5/0xF4), defaults (0xF6), LEDs
  (0xED + argument), typematic rate (0xF3 + argument), scancode set (0xF0 + argument, 0 asks), echo (0xEE),
  resend (0xFE) and the set-3 key-type commands (0xF7-0xFD, acknowledged). Anything else gets 0xFE (resend),
  a keyboard's "I did not understand". Its bytes wait in the keyboard until the controller's one-byte output
  buffer is free and the keyboard interface is enabled.
* **Translation**: with the command byte's XLATE bit set (as firmware leaves it, so Linux names the keyboard
  "AT Translated Set 2 keyboard"), bytes from the keyboard pass through the 8042's set 2 → set 1 table on
  their way to the output buffer, a 0xF0 break prefix turning into bit 7 of the next code.
* **IRQ 1** is high while the output buffer holds a byte and the command byte enables the keyboard
  interrupt. The PIC and IOAPIC see edges, so after the guest reads a byte the line drops and, if another byte
  is already waiting, rises again: one edge per byte, as on hardware, where the next byte takes a while to come.

`press_ctrl_alt_del()` is the VMM's side: it makes the keyboard send Ctrl, Alt, Delete down and up again.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from isola.devices.bus import IrqLine

I8042_BASE = 0x60
I8042_LENGTH = 5  # 0x60..0x64; 0x61..0x63 are not the controller's and read 0xff, like the empty bus
I8042_IRQ = 1
DATA = 0
COMMAND = 4  # status on read, command on write

# Status register.
STATUS_OUTPUT_FULL = 0x01
STATUS_INPUT_FULL = 0x02  # never set: writes are processed at once
STATUS_SYSTEM = 0x04  # mirrors the command byte's system flag (POST passed)
STATUS_COMMAND = 0x08  # the last write went to the command port
STATUS_UNLOCKED = 0x10  # keyboard not inhibited by a keylock
STATUS_AUX_DATA = 0x20

# Command byte ("CTR" in Linux).
CTR_KBD_INT = 0x01
CTR_AUX_INT = 0x02
CTR_SYSTEM = 0x04
CTR_KBD_DISABLE = 0x10
CTR_AUX_DISABLE = 0x20
CTR_XLATE = 0x40
CTR_AT_BOOT = CTR_XLATE | CTR_AUX_DISABLE | CTR_SYSTEM | CTR_KBD_INT
"""What firmware leaves behind: POST passed, keyboard enabled with its interrupt, translation on, no aux."""

# Controller commands (port 0x64).
CMD_READ_RAM = 0x20  # 0x20..0x3f: RAM byte n - 0x20, byte 0 being the command byte
CMD_WRITE_RAM = 0x60  # 0x60..0x7f
CMD_AUX_DISABLE = 0xA7
CMD_AUX_ENABLE = 0xA8
CMD_AUX_TEST = 0xA9
CMD_SELF_TEST = 0xAA
CMD_KBD_TEST = 0xAB
CMD_KBD_DISABLE = 0xAD
CMD_KBD_ENABLE = 0xAE
CMD_READ_OUTPUT_PORT = 0xD0
CMD_WRITE_OUTPUT_PORT = 0xD1
CMD_WRITE_KBD_OUTPUT = 0xD2
CMD_WRITE_AUX_OUTPUT = 0xD3  # Linux's "aux loop"
CMD_WRITE_AUX = 0xD4
CMD_PULSE = 0xF0  # 0xF0..0xFF: pulse the output-port lines whose bit (0-3) is clear
CMD_PULSE_RESET = 0xFE

SELF_TEST_OK = 0x55
KBD_TEST_OK = 0x00
AUX_TEST_CLOCK_HIGH = 0x02  # nothing drives the aux clock line

OUTPUT_PORT_RESET = 0x01  # active low: 0 holds the CPU in reset
OUTPUT_PORT_A20 = 0x02
OUTPUT_PORT_KBD_FULL = 0x10
OUTPUT_PORT_AT_BOOT = 0xC0 | OUTPUT_PORT_A20 | OUTPUT_PORT_RESET  # clock and data lines idle high

# Keyboard commands (port 0x60) and replies.
KBD_SET_LEDS = 0xED
KBD_ECHO = 0xEE
KBD_SCANCODE_SET = 0xF0
KBD_GET_ID = 0xF2
KBD_TYPEMATIC = 0xF3
KBD_ENABLE = 0xF4
KBD_DISABLE = 0xF5
KBD_DEFAULTS = 0xF6
KBD_SET3_FIRST = 0xF7  # 0xF7..0xFA: all keys typematic / make-release / make / all; 0xFB..0xFD: per key
KBD_SET3_PER_KEY = 0xFB
KBD_SET3_LAST = 0xFD
KBD_RESEND = 0xFE
KBD_RESET = 0xFF
KBD_ACK = 0xFA
KBD_BAT_OK = 0xAA
KBD_NAK = 0xFE
KBD_ID = (0xAB, 0x83)  # an MF2 keyboard

KEYBOARD_BUFFER = 64
"""Bytes the keyboard holds for the controller. A real one holds 16; a virtual one can afford more, so that a
few quick Ctrl+Alt+Dels are not lost, and it still bounds what an undrained keyboard can pile up."""
CONTROLLER_REPLIES = 16
"""Replies to controller commands waiting behind an unread output buffer; more are dropped (a guest that
sends commands and never reads must not grow the VMM)."""

SET2_BREAK = 0xF0
EXTENDED = 0xE0

SET2_TO_SET1 = bytes.fromhex(
    "ff 43 41 3f 3d 3b 3c 58 64 44 42 40 3e 0f 29 59 "
    "65 38 2a 70 1d 10 02 5a 66 71 2c 1f 1e 11 03 5b "
    "67 2e 2d 20 12 05 04 5c 68 39 2f 21 14 13 06 5d "
    "69 31 30 23 22 15 07 5e 6a 72 32 24 16 08 09 5f "
    "6b 33 25 17 18 0b 0a 60 6c 34 35 26 27 19 0c 61 "
    "6d 73 28 74 1a 0d 62 6e 3a 36 1c 1b 75 2b 63 76 "
    "55 56 77 78 79 7a 0e 7b 7c 4f 7d 4b 47 7e 7f 6f "
    "52 53 50 4c 4d 48 01 45 57 4e 51 4a 37 49 46 54 "
)
"""The 8042's translation of scancodes 0x00-0x7f from set 2 to set 1. Codes from 0x80 pass unchanged, except
0x83 (F7, the one set-2 key code above 0x7f), which becomes 0x41."""
SET2_F7 = 0x83
SET1_F7 = 0x41

# Ctrl, Alt, Delete in each scancode set: (make, break).
_CTRL_ALT_DEL: dict[int, tuple[tuple[bytes, bytes], ...]] = {
    1: ((b"\x1d", b"\x9d"), (b"\x38", b"\xb8"), (b"\xe0\x53", b"\xe0\xd3")),
    2: ((b"\x14", b"\xf0\x14"), (b"\x11", b"\xf0\x11"), (b"\xe0\x71", b"\xe0\xf0\x71")),
    3: ((b"\x11", b"\xf0\x11"), (b"\x19", b"\xf0\x19"), (b"\x64", b"\xf0\x64")),
}


def ctrl_alt_del_scancodes(scancode_set: int) -> bytes:
    """What a keyboard in `scancode_set` sends for Ctrl, Alt, Delete pressed in that order and released in
    reverse."""
    keys = _CTRL_ALT_DEL[scancode_set]
    return b"".join(make for make, _ in keys) + b"".join(brk for _, brk in reversed(keys))


class Ps2Keyboard:
    """The keyboard: takes command bytes, queues replies and scancodes for the controller to collect."""

    def __init__(self) -> None:
        self.out: deque[int] = deque()
        self.scanning = True
        self.scancode_set = 2
        self.leds = 0
        self.typematic = 0x2B  # 10.9 characters/s after 500 ms: the power-on default
        self._awaiting: int | None = None  # the command whose argument comes next
        self._last_sent = KBD_ACK

    def reset_defaults(self) -> None:
        self.scancode_set = 2
        self.typematic = 0x2B

    def receive(self, byte: int) -> None:
        """A byte from the controller: a command, or the argument of the last one."""
        if self._awaiting is not None and not self._takes_over(byte):
            command, self._awaiting = self._awaiting, None
            self._argument(command, byte)
            return
        self._awaiting = None
        self._command(byte)

    def _takes_over(self, byte: int) -> bool:
        """While an argument is expected, a command byte (0xED and up) starts a new command instead: that is
        how the list of key codes after a set-3 per-key command ends, and how a driver that gave up on an
        argument gets the keyboard back."""
        return byte >= KBD_SET_LEDS

    def _command(self, byte: int) -> None:
        if byte == KBD_RESET:
            self.out.clear()
            self.reset_defaults()
            self.leds = 0
            self.scanning = True
            self._send(KBD_ACK, KBD_BAT_OK)
        elif byte == KBD_RESEND:
            self._send(self._last_sent)
        elif byte in (KBD_SET_LEDS, KBD_TYPEMATIC, KBD_SCANCODE_SET):
            self._awaiting = byte
            self._send(KBD_ACK)
        elif byte == KBD_GET_ID:
            self._send(KBD_ACK, *KBD_ID)
        elif byte == KBD_ENABLE:
            self.out.clear()
            self.scanning = True
            self._send(KBD_ACK)
        elif byte == KBD_DISABLE:
            self.out.clear()
            self.reset_defaults()
            self.scanning = False
            self._send(KBD_ACK)
        elif byte == KBD_DEFAULTS:
            self.reset_defaults()
            self._send(KBD_ACK)
        elif byte == KBD_ECHO:
            self._send(KBD_ECHO)
        elif KBD_SET3_FIRST <= byte <= KBD_SET3_LAST:
            if byte >= KBD_SET3_PER_KEY:
                self._awaiting = byte  # key codes follow until the next command
            self._send(KBD_ACK)
        else:
            self._send(KBD_NAK)

    def _argument(self, command: int, value: int) -> None:
        if command == KBD_SET_LEDS:
            self.leds = value & 0x07
            self._send(KBD_ACK)
        elif command == KBD_TYPEMATIC:
            self.typematic = value & 0x7F
            self._send(KBD_ACK)
        elif command == KBD_SCANCODE_SET:
            if value == 0:
                self._send(KBD_ACK, self.scancode_set)
            elif value in (1, 2, 3):
                self.scancode_set = value
                self._send(KBD_ACK)
            else:
                self._send(KBD_NAK)
        else:  # a set-3 per-key command: one key code acknowledged, the next may follow
            self._awaiting = command
            self._send(KBD_ACK)

    def _send(self, *data: int) -> None:
        """Replies beyond the buffer are lost, so a guest that never reads cannot make the keyboard grow."""
        self.out.extend(data[: KEYBOARD_BUFFER - len(self.out)])
        self._last_sent = data[-1]

    def keys(self, scancodes: bytes) -> bool:
        """Scancodes from the key matrix. Dropped (False) while scanning is off or when they do not fit."""
        if not self.scanning or len(self.out) + len(scancodes) > KEYBOARD_BUFFER:
            return False
        self.out.extend(scancodes)
        return True


class I8042:
    """Register it on the port-I/O bus at `I8042_BASE` with `I8042_LENGTH`; `irq` is IRQ 1."""

    def __init__(self, irq: IrqLine, on_reset: Callable[[], None]) -> None:
        self.irq = irq
        self.on_reset = on_reset
        self.keyboard = Ps2Keyboard()
        self.ram = bytearray(32)
        self.ram[0] = CTR_AT_BOOT
        self.output_port = OUTPUT_PORT_AT_BOOT
        self._controller_out: deque[int] = deque()  # replies to controller commands, ahead of the keyboard's
        self._buffer: int | None = None  # the output buffer: what port 0x60 reads next
        self._last_read = 0
        self._pending_command: int | None = None  # a controller command waiting for its data byte
        self._last_was_command = False
        self._break_prefix = False  # translation saw 0xF0 and owes the next code a break bit
        self._line = False
        self._lock = threading.Lock()

    @property
    def command_byte(self) -> int:
        return self.ram[0]

    # -- the VMM's side --------------------------------------------------------------------------------------

    def press_ctrl_alt_del(self) -> bool:
        """Press and release Ctrl+Alt+Del. False when the keyboard dropped the keys (scanning disabled by the
        guest, or its buffer full)."""
        with self._lock:
            return self._keys(ctrl_alt_del_scancodes(self.keyboard.scancode_set))

    def send_scancodes(self, scancodes: bytes) -> bool:
        """Scancodes as the keyboard's matrix produces them, in the keyboard's current set (see
        `keyboard.scancode_set`). False when the keyboard dropped them."""
        with self._lock:
            return self._keys(scancodes)

    def _keys(self, scancodes: bytes) -> bool:
        queued = self.keyboard.keys(scancodes)
        self._refill()
        self._update_line()
        return queued

    # -- bus.Device --------------------------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        with self._lock:
            if offset == DATA:
                value = self._read_data()
            elif offset == COMMAND:
                value = self._status()
            else:
                return (1 << (8 * size)) - 1
            self._update_line()
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        with self._lock:
            if offset == DATA:
                reset = self._write_data(value & 0xFF)
            elif offset == COMMAND:
                reset = self._write_command(value & 0xFF)
            else:
                return
            self._refill()
            self._update_line()
        if reset:
            self.on_reset()  # outside the lock: stopping the machine may wait for other device users

    # -- registers -----------------------------------------------------------------------------------------

    def _status(self) -> int:
        status = STATUS_UNLOCKED | (self.command_byte & CTR_SYSTEM)
        if self._buffer is not None:
            status |= STATUS_OUTPUT_FULL
        if self._last_was_command:
            status |= STATUS_COMMAND
        return status

    def _read_data(self) -> int:
        if self._buffer is None:
            return self._last_read  # an empty output buffer reads its last byte again
        self._last_read, self._buffer = self._buffer, None
        if self._line:  # drop the line, so that a byte waiting behind this one raises a new edge
            self._line = False
            self.irq.set_level(False)
        self._refill()
        return self._last_read

    def _write_data(self, value: int) -> bool:
        self._last_was_command = False
        command, self._pending_command = self._pending_command, None
        if command is None:
            self.keyboard.receive(value)
        elif CMD_WRITE_RAM <= command < CMD_WRITE_RAM + len(self.ram):
            self.ram[command - CMD_WRITE_RAM] = value
        elif command == CMD_WRITE_OUTPUT_PORT:
            self.output_port = value
            return not value & OUTPUT_PORT_RESET
        elif command in (CMD_WRITE_KBD_OUTPUT, CMD_WRITE_AUX_OUTPUT):
            self._reply(value)
        # CMD_WRITE_AUX: there is no mouse to take the byte
        return False

    def _write_command(self, command: int) -> bool:
        self._last_was_command = True
        self._pending_command = None
        if CMD_READ_RAM <= command < CMD_READ_RAM + len(self.ram):
            self._reply(self.ram[command - CMD_READ_RAM])
        elif CMD_WRITE_RAM <= command < CMD_WRITE_RAM + len(self.ram) or command in (
            CMD_WRITE_OUTPUT_PORT,
            CMD_WRITE_KBD_OUTPUT,
            CMD_WRITE_AUX_OUTPUT,
            CMD_WRITE_AUX,
        ):
            self._pending_command = command
        elif command == CMD_AUX_DISABLE:
            self.ram[0] |= CTR_AUX_DISABLE
        elif command == CMD_AUX_ENABLE:
            self.ram[0] &= ~CTR_AUX_DISABLE
        elif command == CMD_AUX_TEST:
            self._reply(AUX_TEST_CLOCK_HIGH)
        elif command == CMD_SELF_TEST:
            self._reply(SELF_TEST_OK)
        elif command == CMD_KBD_TEST:
            self._reply(KBD_TEST_OK)
        elif command == CMD_KBD_DISABLE:
            self.ram[0] |= CTR_KBD_DISABLE
        elif command == CMD_KBD_ENABLE:
            self.ram[0] &= ~CTR_KBD_DISABLE
        elif command == CMD_READ_OUTPUT_PORT:
            full = OUTPUT_PORT_KBD_FULL if self._buffer is not None else 0
            self._reply((self.output_port & ~OUTPUT_PORT_KBD_FULL) | full)
        elif command >= CMD_PULSE:
            return not command & OUTPUT_PORT_RESET  # a pulse that includes line 0, the reset line
        return False

    # -- the output buffer and the interrupt line -------------------------------------------------------------

    def _reply(self, value: int) -> None:
        if len(self._controller_out) < CONTROLLER_REPLIES:
            self._controller_out.append(value)

    def _refill(self) -> None:
        """Load the output buffer if it is empty: a controller reply first, else the keyboard's next byte
        (translated) while the keyboard interface is enabled."""
        if self._buffer is not None:
            return
        if self._controller_out:
            self._buffer = self._controller_out.popleft()
            return
        if self.command_byte & CTR_KBD_DISABLE:
            return
        queue = self.keyboard.out
        while queue:
            byte = queue.popleft()
            if not self.command_byte & CTR_XLATE:
                self._buffer = byte
                return
            if byte == SET2_BREAK:
                self._break_prefix = True
                continue
            self._buffer = _translate(byte) | (0x80 if self._break_prefix else 0)
            self._break_prefix = False
            return

    def _update_line(self) -> None:
        level = self._buffer is not None and bool(self.command_byte & CTR_KBD_INT)
        if level != self._line:
            self._line = level
            self.irq.set_level(level)


def _translate(byte: int) -> int:
    if byte < 0x80:
        return SET2_TO_SET1[byte]
    return SET1_F7 if byte == SET2_F7 else byte
