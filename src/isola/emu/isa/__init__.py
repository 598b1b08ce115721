"""The RV64GC instruction set: decoding words into `Insn` records, RVC expansion, and disassembly."""

from isola.emu.cpu import IllegalInstruction
from isola.emu.isa.decode import (
    Insn,
    decode,
    decode_at,
    decode_compressed,
    instruction_length,
)
from isola.emu.isa.disasm import disasm
from isola.emu.isa.opcodes import ROWS, Fmt, Row
from isola.emu.isa.rvc import expand_compressed

__all__ = [
    "ROWS",
    "Fmt",
    "IllegalInstruction",
    "Insn",
    "Row",
    "decode",
    "decode_at",
    "decode_compressed",
    "disasm",
    "expand_compressed",
    "instruction_length",
]
