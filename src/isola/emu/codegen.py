"""Source fragments shared by the integer and floating-point templates of the block translator.

Registers are read as `x[r]` (x0 as the literal 0); a memory access computes its address into the local `a`,
which the run loop reads back from the frame when the access traps.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isola.emu.isa import Insn


M = "0xffffffffffffffff"
S = "0x8000000000000000"
MASK = (1 << 64) - 1
SIGN = 1 << 63


def xr(r: int) -> str:
    """Source for reading integer register r (x0 reads as the literal 0)."""
    return f"x[{r}]" if r else "0"


def signed(r: int) -> str:
    """Source for register r biased so that unsigned comparison orders it as a signed value."""
    return f"(x[{r}] ^ {S})" if r else S


def sx32(expr: str) -> str:
    """Source sign-extending the low 32 bits of `expr` into an unsigned 64-bit value."""
    return f"((({expr}) & 0xffffffff ^ 0x80000000) - 0x80000000) & {M}"


def s32(r: int) -> str:
    """Source for the low 32 bits of register r as a signed Python int."""
    return f"((x[{r}] & 0xffffffff ^ 0x80000000) - 0x80000000)" if r else "0"


def addr(insn: Insn) -> str:
    if insn.rs1 == 0:
        return f"a = {insn.imm & MASK}"
    return f"a = x[{insn.rs1}]" if insn.imm == 0 else f"a = (x[{insn.rs1}] + {insn.imm}) & {M}"


# Aligned loads and stores index guest memory through memoryviews cast to their width: `MV_<format>`.
STORE_VIEW = {2: "H", 4: "I", 8: "Q"}


def _aligned(width: int) -> str:
    """Source testing that an access of `width` bytes at `a` is naturally aligned (a byte always is). An aligned
    access stays in one page, so checking the first byte's page is enough; a misaligned one takes the slow
    path, which handles it in full."""
    return "" if width == 1 else f" and not a & {width - 1}"


def _element(width: int) -> str:
    """Source for the index of the `width`-byte element at `a` in a view cast to that width."""
    return f"a >> {width.bit_length() - 1}"


def store_lines(width: int, value: str) -> list[str]:
    """A guest store of `value` (already reduced to `width` bytes) at local `a`."""
    fast = f"MEM[a] = {value}" if width == 1 else f"MV_{STORE_VIEW[width]}[{_element(width)}] = {value}"
    return [f"if W[a >> 12]{_aligned(width)}: {fast}", f"else: WSLOW(a, {width}, {value})"]


def load_expr(fmt: str, is_signed: bool) -> str:
    """Source for a guest load in struct format `fmt` at local `a`, as an unsigned 64-bit value."""
    width = struct.calcsize(fmt)
    if fmt == "<B":
        value = "MEM[a]"  # indexing the mapping is twice as fast as unpack_from for one byte
    elif fmt == "<b":
        value = f"((MEM[a] ^ 0x80) - 0x80) & {M}"
    else:
        value = f"MV_{fmt[1]}[{_element(width)}]" + (f" & {M}" if is_signed else "")
    return f"{value} if R[a >> 12]{_aligned(width)} else RSLOW(a, '{fmt}')"


def setx(rd: int, expr: str) -> list[str]:
    return [f"x[{rd}] = {expr}"] if rd else []
