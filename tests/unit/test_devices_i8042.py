"""The i8042 and its PS/2 keyboard, driven byte by byte as Linux's i8042 and atkbd drivers drive them.

`Linux` below performs the port accesses of drivers/input/serio/i8042.c (`__i8042_command`, `i8042_flush`,
the wait loops with their 10000-poll timeouts) and of libps2/atkbd on top of it (a byte written to the data
port, replies collected by the IRQ 1 handler). A probe that would hit a timeout in the guest fails here.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isola.devices import i8042
from isola.devices.bus import Bus
from isola.devices.i8042 import COMMAND, DATA, I8042, I8042_BASE, I8042_LENGTH, ctrl_alt_del_scancodes
from tests.unit.test_devices_support import FakeIrq

# Linux's names for what it sends (drivers/input/serio/i8042.h, atkbd.c): the low byte is the command, bits
# 12-15 count the parameters it writes, bits 8-11 the bytes it reads back.
CTL_RCTR = 0x0120
CTL_WCTR = 0x1060
CTL_TEST = 0x01AA
KBD_TEST = 0x01AB
AUX_LOOP = 0x11D3
AUX_TEST = 0x01A9
A20_ON = 0x10D1
NULL_COMMAND = 0x00FF

STR_OBF = 0x01
STR_IBF = 0x02
STR_SYSTEM = 0x04
STR_CMDDAT = 0x08
STR_KEYLOCK = 0x10
STR_AUXDATA = 0x20

CTR_KBDINT = 0x01
CTR_KBDDIS = 0x10
CTR_XLATE = 0x40

ACK = 0xFA
CTRL_ALT_DEL_SET1 = bytes.fromhex("1d 38 e0 53 e0 d3 b8 9d")
CTRL_ALT_DEL_SET2 = bytes.fromhex("14 11 e0 71 e0 f0 71 f0 11 f0 14")
CTRL_ALT_DEL_SET3 = bytes.fromhex("11 19 64 f0 64 f0 19 f0 11")


class Timeout(Exception):
    """Where Linux would have spun I8042_CTL_TIMEOUT times (0.5 s) and given up."""


class Linux:
    """The guest's side of the port bus, IRQ 1 included."""

    CTL_TIMEOUT = 10000
    BUFFER_SIZE = 16

    def __init__(self, ctr: int | None = None) -> None:
        self.irq = FakeIrq()
        self.resets = 0
        self.kbc = I8042(self.irq, self._reset)
        if ctr is not None:
            self.kbc.ram[0] = ctr
        self.bus = Bus()
        self.bus.register(I8042_BASE, I8042_LENGTH, self.kbc)

    def _reset(self) -> None:
        self.resets += 1

    # -- i8042-x86ia64io.h -----------------------------------------------------------------------------------

    def status(self) -> int:
        return self.bus.read(I8042_BASE + COMMAND, 1)

    def read_data(self) -> int:
        return self.bus.read(I8042_BASE + DATA, 1)

    def write_data(self, value: int) -> None:
        self.bus.write(I8042_BASE + DATA, 1, value)

    def write_command(self, value: int) -> None:
        self.bus.write(I8042_BASE + COMMAND, 1, value)

    # -- i8042.c ---------------------------------------------------------------------------------------------

    def wait_read(self) -> None:
        for _ in range(self.CTL_TIMEOUT):
            if self.status() & STR_OBF:
                return
        raise Timeout("wait_read")

    def wait_write(self) -> None:
        for _ in range(self.CTL_TIMEOUT):
            if not self.status() & STR_IBF:
                return
        raise Timeout("wait_write")

    def flush(self) -> int:
        """Bytes flushed; Linux says "No controller found" when the buffer never empties."""
        count = 0
        while self.status() & STR_OBF:
            if count >= self.BUFFER_SIZE:
                raise Timeout("the output buffer never empties")
            self.read_data()
            count += 1
        return count

    def command(self, command: int, params: bytes = b"") -> bytes:
        """__i8042_command. Raises AuxError where Linux says "auxerr"."""
        self.wait_write()
        self.write_command(command & 0xFF)
        assert len(params) == (command >> 12) & 0xF
        for param in params:
            self.wait_write()
            self.write_data(param)
        result = bytearray()
        for _ in range((command >> 8) & 0xF):
            self.wait_read()
            if command == AUX_LOOP and not self.status() & STR_AUXDATA:
                raise AuxError
            result.append(self.read_data())
        return bytes(result)

    def interrupts(self) -> bytes:
        """What i8042_interrupt hands to serio while IRQ 1 keeps firing: one byte per rising edge."""
        received = bytearray()
        while self.irq.high():
            edges = self.irq.changes.count(True)
            status = self.status()
            assert status & STR_OBF, "an interrupt without data"
            assert not status & STR_AUXDATA
            received.append(self.read_data())
            assert self.irq.changes.count(True) == edges + (1 if self.irq.high() else 0), "no edge for this byte"
        return bytes(received)

    # -- libps2 / atkbd --------------------------------------------------------------------------------------

    def ps2_command(self, command: int, *args: int) -> bytes:
        """A keyboard command and its arguments, each acknowledged; returns the replies after the last ACK."""
        self.wait_write()
        self.write_data(command)
        replies = self.interrupts()
        for arg in args:
            assert replies == bytes([ACK]), f"{command:#x}: {replies.hex()}"
            self.wait_write()
            self.write_data(arg)
            replies = self.interrupts()
        assert replies[:1] == bytes([ACK]), f"{command:#x}: {replies.hex()}"
        return replies[1:]

    # -- the sequences ---------------------------------------------------------------------------------------

    def platform_init(self) -> None:
        self.command(A20_ON, bytes([0xDF]))
        self.command(NULL_COMMAND)

    def controller_init(self) -> int:
        """i8042_controller_init: a stable CTR read, keyboard disabled without interrupt, written back."""
        ctr = [self.command(CTL_RCTR)[0], self.command(CTL_RCTR)[0]]
        assert ctr[0] == ctr[1]
        new = (ctr[0] | CTR_KBDDIS) & ~CTR_KBDINT
        assert self.status() & STR_KEYLOCK, "Linux would warn: Keylock active"
        self.command(CTL_WCTR, bytes([new]))
        self.flush()
        return new

    def enable_kbd_port(self, ctr: int) -> int:
        ctr = (ctr & ~CTR_KBDDIS) | CTR_KBDINT
        self.command(CTL_WCTR, bytes([ctr]))
        return ctr

    def probe(self) -> int:
        """i8042_init → i8042_probe with i8042.noaux i8042.nomux: the CTR Linux leaves in place."""
        self.platform_init()
        assert self.flush() == 0  # i8042_controller_check
        ctr = self.controller_init()
        return self.enable_kbd_port(ctr)

    def atkbd_connect(self) -> bytes:
        """atkbd_probe (GETID, deactivate), atkbd_reset_state (LEDs off, fastest repeat), atkbd_activate.
        Returns the keyboard's ID bytes."""
        ident = self.ps2_command(0xF2)
        assert self.ps2_command(0xF5) == b""
        assert self.ps2_command(0xED, 0x00) == b""
        assert self.ps2_command(0xF3, 0x00) == b""
        assert self.ps2_command(0xF4) == b""
        return ident


class AuxError(Exception):
    pass


# -- Linux's probe ---------------------------------------------------------------------------------------------


def test_linux_probes_the_controller_and_atkbd_binds_translated() -> None:
    linux = Linux()
    ctr = linux.probe()
    assert ctr & CTR_XLATE, "firmware left translation on, so atkbd calls it 'AT Translated Set 2 keyboard'"
    assert linux.kbc.command_byte == ctr
    assert not linux.irq.high()
    assert linux.atkbd_connect() == bytes([0xAB, 0x41])  # 0x83 goes through translation too, as on hardware
    assert linux.kbc.keyboard.scanning and linux.kbc.keyboard.leds == 0 and linux.kbc.keyboard.typematic == 0
    assert linux.resets == 0
    assert not linux.irq.high()


def test_linux_with_i8042_direct_sees_the_raw_id() -> None:
    linux = Linux()
    linux.platform_init()
    ctr = linux.controller_init() & ~CTR_XLATE  # i8042.direct
    linux.command(CTL_WCTR, bytes([ctr]))
    linux.enable_kbd_port(ctr)
    assert linux.atkbd_connect() == bytes([0xAB, 0x83])


def test_controller_self_tests() -> None:
    linux = Linux()
    assert linux.command(CTL_TEST) == bytes([0x55])  # i8042_controller_selftest
    assert linux.command(KBD_TEST) == bytes([0x00])
    assert linux.flush() == 0


def test_the_aux_probe_fails_at_once_without_timeouts() -> None:
    """Without i8042.noaux and i8042.nomux: the mux test and the aux check both end on "auxerr"."""
    linux = Linux()
    linux.probe()
    with pytest.raises(AuxError):  # i8042_set_mux_mode's first loop byte
        linux.flush()
        linux.command(AUX_LOOP, bytes([0xF0]))
    linux.flush()  # i8042_check_aux
    with pytest.raises(AuxError):
        linux.command(AUX_LOOP, bytes([0x5A]))
    result = linux.command(AUX_TEST)[0]
    assert result not in (0x00, 0xFA, 0xFF)  # "no aux port": i8042_check_aux returns -1
    linux.flush()
    linux.command(0x00A7)  # aux disable / enable only flip the command byte
    assert linux.command(CTL_RCTR)[0] & 0x20
    linux.command(0x00A8)
    assert not linux.command(CTL_RCTR)[0] & 0x20
    linux.command(0x10D4, bytes([0xFF]))  # a byte for the mouse: nobody answers
    assert linux.flush() == 0


def test_keyboard_reset_and_echo() -> None:
    linux = Linux()
    linux.probe()
    assert linux.ps2_command(0xFF) == bytes([0xAA])  # ATKBD_CMD_RESET_BAT
    linux.write_data(0xEE)
    assert linux.interrupts() == bytes([0xEE])  # echo: no ACK


def test_keyboard_refuses_unknown_commands_and_resends() -> None:
    linux = Linux()
    linux.probe()
    for unknown in (0x00, 0x42, 0xEF, 0xF1):
        linux.write_data(unknown)
        assert linux.interrupts() == bytes([0xFE])
    linux.write_data(0xF2)
    assert linux.interrupts() == bytes([ACK, 0xAB, 0x41])
    linux.write_data(0xFE)  # resend: the last byte again
    assert linux.interrupts() == bytes([0x41])


def test_an_argument_that_is_a_command_starts_that_command() -> None:
    linux = Linux()
    linux.probe()
    linux.write_data(0xED)
    assert linux.interrupts() == bytes([ACK])
    linux.write_data(0xF2)  # not an LED mask: GET ID
    assert linux.interrupts() == bytes([ACK, 0xAB, 0x41])
    assert linux.ps2_command(0xED, 0x07) == b""
    assert linux.kbc.keyboard.leds == 7


def test_scancode_sets() -> None:
    linux = Linux(ctr=i8042.CTR_SYSTEM | CTR_KBDINT)  # untranslated
    assert linux.ps2_command(0xF0, 0x00) == bytes([2])
    assert linux.ps2_command(0xF0, 0x03) == b""
    assert linux.ps2_command(0xF0, 0x00) == bytes([3])
    linux.write_data(0xF0)
    linux.interrupts()
    linux.write_data(0x07)  # no such set
    assert linux.interrupts() == bytes([0xFE])
    assert linux.ps2_command(0xFA) == b""  # set 3: all keys make/release
    assert linux.ps2_command(0xFC, 0x64, 0x11) == b""  # set 3: these keys make only
    assert linux.ps2_command(0xF6) == b""  # defaults: back to set 2
    assert linux.kbc.keyboard.scancode_set == 2


# -- interrupts and the output buffer ----------------------------------------------------------------------------


def test_no_interrupt_while_the_command_byte_disables_it() -> None:
    linux = Linux()
    ctr = linux.controller_init()  # keyboard interface disabled, no interrupt
    before = len(linux.irq.changes)
    assert linux.kbc.press_ctrl_alt_del()
    assert len(linux.irq.changes) == before and not linux.status() & STR_OBF  # held in the keyboard
    linux.enable_kbd_port(ctr)
    assert linux.interrupts() == CTRL_ALT_DEL_SET1
    assert linux.irq.changes[before:].count(True) == len(CTRL_ALT_DEL_SET1)


def test_controller_commands_disable_and_enable_the_keyboard() -> None:
    linux = Linux()
    linux.probe()
    linux.command(0x00AD)
    assert linux.kbc.command_byte & CTR_KBDDIS
    linux.kbc.press_ctrl_alt_del()
    assert not linux.irq.high()
    linux.command(0x00AE)
    assert linux.interrupts() == CTRL_ALT_DEL_SET1


def test_polled_reads_without_interrupts() -> None:
    linux = Linux(ctr=i8042.CTR_SYSTEM | CTR_XLATE)
    linux.kbc.press_ctrl_alt_del()
    got = bytearray()
    while linux.status() & STR_OBF:
        got.append(linux.read_data())
    assert got == CTRL_ALT_DEL_SET1
    assert linux.irq.changes == []
    assert linux.read_data() == 0x9D  # an empty buffer reads its last byte again


def test_controller_replies_interrupt_too() -> None:
    """The command byte's bit 0 enables the interrupt for any byte placed in the output buffer."""
    linux = Linux()  # firmware's command byte: interrupt enabled
    linux.write_command(0x20)
    assert linux.irq.high()
    assert linux.interrupts() == bytes([i8042.CTR_AT_BOOT])


def test_interrupt_is_dropped_when_the_command_byte_clears_it() -> None:
    linux = Linux()
    linux.probe()
    linux.kbc.press_ctrl_alt_del()
    assert linux.irq.high()
    linux.command(CTL_WCTR, bytes([linux.kbc.command_byte & ~CTR_KBDINT]))
    assert not linux.irq.high()


# -- Ctrl+Alt+Del ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scancode_set", "expected"), [(1, CTRL_ALT_DEL_SET1), (2, CTRL_ALT_DEL_SET2), (3, CTRL_ALT_DEL_SET3)]
)
def test_ctrl_alt_del_in_each_scancode_set_untranslated(scancode_set: int, expected: bytes) -> None:
    assert ctrl_alt_del_scancodes(scancode_set) == expected
    linux = Linux(ctr=i8042.CTR_SYSTEM | CTR_KBDINT)
    assert linux.ps2_command(0xF0, scancode_set) == b""
    assert linux.kbc.press_ctrl_alt_del()
    assert linux.interrupts() == expected


def test_ctrl_alt_del_translated_is_set_1() -> None:
    linux = Linux()
    linux.probe()
    linux.atkbd_connect()
    assert linux.kbc.press_ctrl_alt_del()
    assert linux.interrupts() == CTRL_ALT_DEL_SET1


def test_a_disabled_keyboard_drops_keys() -> None:
    linux = Linux()
    linux.probe()
    assert linux.ps2_command(0xF5) == b""
    assert not linux.kbc.press_ctrl_alt_del()
    assert linux.interrupts() == b""
    assert linux.ps2_command(0xF4) == b""
    assert linux.kbc.press_ctrl_alt_del()
    assert linux.interrupts() == CTRL_ALT_DEL_SET1


def test_an_undrained_keyboard_stops_taking_keys() -> None:
    linux = Linux()
    linux.controller_init()  # nobody collects
    presses = [linux.kbc.press_ctrl_alt_del() for _ in range(10)]
    assert presses[0] and not presses[-1]
    assert len(linux.kbc.keyboard.out) <= i8042.KEYBOARD_BUFFER


def test_translation_table_matches_known_keys() -> None:
    known = {  # set 2 → set 1, from the keyboard's scancode tables
        0x76: 0x01,  # Esc
        0x16: 0x02,  # 1
        0x66: 0x0E,  # Backspace
        0x0D: 0x0F,  # Tab
        0x15: 0x10,  # Q
        0x5A: 0x1C,  # Enter
        0x14: 0x1D,  # Left Ctrl
        0x1C: 0x1E,  # A
        0x12: 0x2A,  # Left Shift
        0x1A: 0x2C,  # Z
        0x59: 0x36,  # Right Shift
        0x11: 0x38,  # Left Alt
        0x29: 0x39,  # Space
        0x58: 0x3A,  # Caps Lock
        0x05: 0x3B,  # F1
        0x77: 0x45,  # Num Lock
        0x7E: 0x46,  # Scroll Lock
        0x70: 0x52,  # keypad 0, and Insert after 0xE0
        0x71: 0x53,  # keypad ., and Delete after 0xE0
        0x78: 0x57,  # F11
        0x07: 0x58,  # F12
    }
    for set2, set1 in known.items():
        assert i8042.SET2_TO_SET1[set2] == set1, hex(set2)
    assert len(i8042.SET2_TO_SET1) == 0x80
    assert len(set(i8042.SET2_TO_SET1[1:])) == 0x7F  # every code has its own translation


def test_translation_of_codes_from_0x80() -> None:
    linux = Linux(ctr=i8042.CTR_SYSTEM | CTR_KBDINT | CTR_XLATE)
    assert linux.kbc.send_scancodes(bytes([0x83, 0xF0, 0x83, 0xE1, 0xAA]))  # F7 down/up, then codes that pass through
    assert linux.interrupts() == bytes([0x41, 0xC1, 0xE1, 0xAA])


# -- reset, status, registers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [0xFE, 0xF0, 0xFC, 0xFA])
def test_pulsing_the_reset_line_resets_at_once(command: int) -> None:
    linux = Linux()
    linux.write_command(command)
    assert linux.resets == 1


def test_what_does_not_reset() -> None:
    linux = Linux()
    linux.platform_init()  # A20 on (output port 0xDF) and the null command 0xFF
    linux.write_command(0xFD)  # pulses line 1, not 0
    linux.write_data(0xFE)  # the data port: a keyboard resend
    assert linux.resets == 0


def test_writing_the_output_port_with_reset_low_resets() -> None:
    linux = Linux()
    linux.command(0x10D1, bytes([0xDE]))
    assert linux.resets == 1


def test_reboot_k_writes_at_once() -> None:
    """native_machine_emergency_restart, BOOT_KBD: kb_wait() (input buffer empty?) then 0xFE, ten times."""
    linux = Linux()
    linux.probe()
    linux.kbc.press_ctrl_alt_del()  # whatever the keyboard still has to say
    for _ in range(10):
        assert not linux.status() & STR_IBF
        linux.write_command(0xFE)
    assert linux.resets == 10


def test_status_bits() -> None:
    linux = Linux()
    status = linux.status()
    assert status & STR_SYSTEM and status & STR_KEYLOCK
    assert not status & (STR_OBF | STR_IBF | STR_AUXDATA | 0xC0)
    linux.write_command(0x20)
    assert linux.status() & STR_CMDDAT and linux.status() & STR_OBF
    linux.write_data(0xF4)  # to the keyboard
    assert not linux.status() & STR_CMDDAT
    linux.command(CTL_WCTR, bytes([0x00]))  # firmware's system flag gone from the command byte
    assert not linux.status() & STR_SYSTEM


def test_controller_ram_and_output_port() -> None:
    linux = Linux()
    linux.command(0x1061, bytes([0x5A]))
    assert linux.command(0x0121) == bytes([0x5A])
    assert linux.command(0x013F) == bytes([0x00])
    linux.command(0x10D1, bytes([0xCB]))
    assert linux.command(0x01D0) == bytes([0xCB])  # bit 4 would say the output buffer is full
    linux.command(0x10D2, bytes([0x33]))  # as if from the keyboard, untranslated
    assert linux.read_data() == 0x33


def test_unknown_controller_commands_are_ignored() -> None:
    linux = Linux()
    for command in (0x00, 0x90, 0xA1, 0xC0, 0xE0):
        linux.write_command(command)
    assert linux.flush() == 0
    assert linux.resets == 0


def test_a_guest_that_never_reads_cannot_grow_the_device() -> None:
    linux = Linux()
    linux.write_command(0xAD)  # keyboard interface off: its replies stay in the keyboard
    for _ in range(1000):
        linux.write_command(0x20)
        linux.write_data(0xF2)
    assert len(linux.kbc.keyboard.out) <= i8042.KEYBOARD_BUFFER
    waiting = 0
    while linux.status() & STR_OBF:
        linux.read_data()
        waiting += 1
    assert waiting == i8042.CONTROLLER_REPLIES + 1  # the output buffer and the replies behind it


def test_other_ports_in_the_window_read_all_ones() -> None:
    linux = Linux()
    assert [linux.bus.read(port, 1) for port in (0x61, 0x62, 0x63)] == [0xFF] * 3
    linux.bus.write(0x61, 1, 0xFE)
    assert linux.resets == 0


# -- any guest -------------------------------------------------------------------------------------------------

_access = st.tuples(st.sampled_from(["read", "write", "press"]), st.integers(0, 4), st.integers(0, 255))


@settings(max_examples=400, deadline=None)
@given(st.lists(_access, max_size=200))
def test_any_port_access_sequence_is_survived(accesses: list[tuple[str, int, int]]) -> None:
    """FakeIrq fails on a repeated level, so this also proves the line only ever changes."""
    linux = Linux()
    for op, offset, value in accesses:
        if op == "read":
            assert 0 <= linux.bus.read(I8042_BASE + offset, 1) <= 0xFF
        elif op == "write":
            linux.bus.write(I8042_BASE + offset, 1, value)
        else:
            linux.kbc.press_ctrl_alt_del()
        status = linux.status()
        assert not status & STR_IBF
        assert linux.irq.high() == bool(status & STR_OBF and linux.kbc.command_byte & CTR_KBDINT)
        assert len(linux.kbc.keyboard.out) <= i8042.KEYBOARD_BUFFER
