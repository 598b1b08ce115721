"""The architectural state of one RV64GC hart in user mode.

Registers are Python ints kept unsigned in [0, 2**64): x[0] is always 0 (translated code never writes it),
f[] holds raw 64-bit patterns (binary32 values NaN-boxed), and fcsr is split into `frm` and `fflags` because
translated FP code updates the flags far more often than anything reads the whole register.
"""

from __future__ import annotations


class IllegalInstruction(Exception):
    """The guest executed an encoding RV64GC does not define; the engine delivers SIGILL for it.

    This is the guest's fault, not isola's, so it is deliberately not an `IsolaError`. It lives here rather
    than with the decoder (`isa` re-exports it) so that the run loop can catch it without loading the
    decoder's tables, which a warm start, taking every block from the code cache, never needs.
    """

    def __init__(self, pc: int, raw: int, length: int) -> None:
        super().__init__(f"illegal instruction {raw:#0{length * 2 + 2}x} at pc {pc:#x}")
        self.pc = pc
        self.raw = raw
        self.length = length


class Cpu:
    __slots__ = ("f", "fflags", "frm", "instret", "pc", "reservation", "x")

    def __init__(self) -> None:
        self.x: list[int] = [0] * 32
        self.f: list[int] = [0] * 32
        self.pc = 0
        self.frm = 0
        self.fflags = 0
        self.instret = 0
        self.reservation: int | None = None  # address held by LR, for SC

    @property
    def fcsr(self) -> int:
        return (self.frm << 5) | self.fflags

    @fcsr.setter
    def fcsr(self, value: int) -> None:
        self.frm = (value >> 5) & 7
        self.fflags = value & 0x1F
