"""The power switch of a hardware-reduced ACPI platform: the sleep control, sleep status and reset registers.

On a hardware-reduced platform (no PM1 blocks) the guest enters a sleep state by writing
`SLP_TYP << 2 | SLP_EN` to the FADT's sleep control register, with SLP_TYP taken from the `\\_Sx_` package
of the DSDT; it resets the machine by writing the FADT's reset value to the reset register. This device
decodes three consecutive I/O ports: control, status, reset. Sleep state S5 (soft off) is the only one a VM
without firmware can honour, so any other sleep request is ignored and the guest carries on, as on a machine
that does not support it.
"""

from __future__ import annotations

from collections.abc import Callable

SLEEP_CONTROL = 0
SLEEP_STATUS = 1
RESET = 2
LENGTH = 3

SLP_EN = 1 << 5
SLP_TYP_SHIFT = 2
SLP_TYP_MASK = 0x7
WAK_STS = 1 << 7


class AcpiPowerManagement:
    """Register it on the port-I/O bus; `on_poweroff` runs when the guest enters `soft_off_type` (the value the
    DSDT's `\\_S5_` holds), `on_reset` when it writes `reset_value` to the reset register."""

    def __init__(
        self,
        *,
        soft_off_type: int,
        reset_value: int,
        on_poweroff: Callable[[], None],
        on_reset: Callable[[], None],
    ) -> None:
        self.soft_off_type = soft_off_type
        self.reset_value = reset_value
        self.on_poweroff = on_poweroff
        self.on_reset = on_reset

    def read(self, offset: int, size: int) -> int:
        # WAK_STS reads as set: a guest that polls for the end of a sleep it did not get sees it "woke" at once.
        return WAK_STS if offset == SLEEP_STATUS else 0

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == SLEEP_CONTROL and value & SLP_EN:
            if (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK == self.soft_off_type:
                self.on_poweroff()
        elif offset == RESET and value == self.reset_value:
            self.on_reset()
