"""An absent i8042 keyboard controller that can still reset the machine (ports 0x60 and 0x64).

Linux probes the controller at boot; when nothing answers sensibly it says "No controller found" at once and
moves on (measured: a controller that reads 0 instead costs 0.9 s of timeouts). The status port reads 0xff like
an empty bus, except bit 1 (input buffer full) is clear: `reboot=k` polls that bit up to 65536 times with a
delay before it writes the reset command, and with the bit clear it writes at once. The output-buffer-full bit
stays set, so the probe still gives up on its first flush. Writing 0xfe (pulse the reset line) to the command
port calls `on_reset`, which is how a guest's `reboot` reaches the VMM.
"""

from __future__ import annotations

from collections.abc import Callable

I8042_BASE = 0x60
I8042_LENGTH = 5  # 0x60..0x64; 0x61..0x63 are not the controller's and read 0xff, like the empty bus
DATA = 0
COMMAND = 4  # status on read, command on write
STATUS_INPUT_FULL = 0x02
CMD_PULSE_RESET = 0xFE


class I8042:
    """Register it on the port-I/O bus at `I8042_BASE` with `I8042_LENGTH`."""

    def __init__(self, on_reset: Callable[[], None]) -> None:
        self.on_reset = on_reset

    def read(self, offset: int, size: int) -> int:
        value = (1 << (8 * size)) - 1
        return value & ~STATUS_INPUT_FULL if offset == COMMAND else value

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == COMMAND and value & 0xFF == CMD_PULSE_RESET:
            self.on_reset()
