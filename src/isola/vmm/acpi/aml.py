"""A small encoder for ACPI Machine Language (ACPI 6.5 §20.2): the subset a DSDT needs to describe a microVM.

A DSDT is a byte-coded tree of named objects that the guest's AML interpreter loads at boot. isola only
declares things — devices with a hardware id and the resources they decode, and the `\\_S5_` sleep state that
makes `poweroff` work — so there are no methods and no arithmetic here: names, integers, strings, buffers,
packages, scopes and devices, each encoded to bytes by a plain function. Names are strings in ASL spelling
(`"\\_SB_.VR00"`, `"_HID"`); every segment is one to four characters and padded with `_` as ASL does.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable

ZERO_OP = 0x00
ONE_OP = 0x01
ONES_OP = 0xFF
NAME_OP = 0x08
BYTE_PREFIX = 0x0A
WORD_PREFIX = 0x0B
DWORD_PREFIX = 0x0C
STRING_PREFIX = 0x0D
QWORD_PREFIX = 0x0E
SCOPE_OP = 0x10
BUFFER_OP = 0x11
PACKAGE_OP = 0x12
EXT_OP_PREFIX = 0x5B
DEVICE_OP = 0x82  # after EXT_OP_PREFIX
ROOT_CHAR = 0x5C  # "\"
PARENT_PREFIX = 0x5E  # "^"
DUAL_NAME_PREFIX = 0x2E
MULTI_NAME_PREFIX = 0x2F

MAX_PKG_LENGTH = (1 << 28) - 1
_SEGMENT = re.compile(r"^[A-Z_][A-Z0-9_]{0,3}$")

# Resource descriptors (ACPI 6.5 §6.4): what a device decodes, inside a `_CRS` buffer.
_MEMORY32_FIXED = 0x86
_EXTENDED_IRQ = 0x89
_IO_PORT = 0x47
_IRQ = 0x22  # small IRQ descriptor, 2-byte form
_END_TAG = 0x79
IRQ_CONSUMER = 1 << 0
IRQ_EDGE = 1 << 1
IRQ_ACTIVE_LOW = 1 << 2
IRQ_SHARED = 1 << 3


def pkg_length(body_len: int) -> bytes:
    """The PkgLength prefix for `body_len` bytes that follow it; the encoded length counts itself too."""
    for extra in range(4):
        total = body_len + 1 + extra
        if extra == 0 and total < 0x40:
            return bytes([total])
        if extra and total < 1 << (4 + 8 * extra):
            tail = (total >> 4).to_bytes(extra, "little")
            return bytes([extra << 6 | (total & 0xF)]) + tail
    raise ValueError(f"an AML package of {body_len} bytes is longer than PkgLength can say ({MAX_PKG_LENGTH})")


def name_seg(segment: str) -> bytes:
    """One 4-byte NameSeg; ASL's short names (`_S5`) are padded with underscores."""
    if not _SEGMENT.match(segment):
        raise ValueError(f"{segment!r} is not an ACPI name segment (1-4 of A-Z, 0-9, _, not starting with a digit)")
    return segment.ljust(4, "_").encode("ascii")


def name_string(path: str) -> bytes:
    """A NameString: optional root (`\\`) or parent (`^`) prefixes, then zero or more dot-separated segments."""
    prefix = b""
    if path.startswith("\\"):
        prefix, path = bytes([ROOT_CHAR]), path[1:]
    while path.startswith("^"):
        prefix, path = prefix + bytes([PARENT_PREFIX]), path[1:]
    segments = [name_seg(s) for s in path.split(".")] if path else []
    if not segments:
        return prefix + bytes([ZERO_OP])  # NullName
    if len(segments) == 1:
        return prefix + segments[0]
    if len(segments) == 2:
        return prefix + bytes([DUAL_NAME_PREFIX]) + b"".join(segments)
    if len(segments) > 255:
        raise ValueError(f"{path!r} has more than 255 segments")
    return prefix + bytes([MULTI_NAME_PREFIX, len(segments)]) + b"".join(segments)


def integer(value: int) -> bytes:
    """The shortest encoding of an unsigned 64-bit integer."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{value} does not fit an AML integer (unsigned 64-bit)")
    if value in (0, 1):
        return bytes([ZERO_OP if value == 0 else ONE_OP])
    for prefix, fmt in ((BYTE_PREFIX, "<B"), (WORD_PREFIX, "<H"), (DWORD_PREFIX, "<I")):
        if value < 1 << (8 * struct.calcsize(fmt)):
            return bytes([prefix]) + struct.pack(fmt, value)
    return bytes([QWORD_PREFIX]) + struct.pack("<Q", value)


def string(text: str) -> bytes:
    """A null-terminated ASCII string constant."""
    data = text.encode("ascii")
    if b"\0" in data:
        raise ValueError("AML strings cannot contain NUL")
    return bytes([STRING_PREFIX]) + data + b"\0"


def eisa_id(text: str) -> bytes:
    """ASL's EISAID("PNP0501"): three letters (5 bits each) and four hex digits packed into a 32-bit integer,
    stored big-endian as a little-endian DWORD, which is how ACPI spells compressed PNP ids."""
    if not re.fullmatch(r"[A-Z]{3}[0-9A-F]{4}", text):
        raise ValueError(f"{text!r} is not an EISA id like PNP0501")
    letters = [ord(c) - 0x40 for c in text[:3]]
    value = letters[0] << 26 | letters[1] << 21 | letters[2] << 16 | int(text[3:], 16)
    return integer(int.from_bytes(value.to_bytes(4, "big"), "little"))


def buffer(data: bytes) -> bytes:
    body = integer(len(data)) + data
    return bytes([BUFFER_OP]) + pkg_length(len(body)) + body


def package(elements: Iterable[bytes]) -> bytes:
    """A Package of already-encoded data objects (at most 255)."""
    items = list(elements)
    if len(items) > 255:
        raise ValueError("a Package holds at most 255 elements")
    body = bytes([len(items)]) + b"".join(items)
    return bytes([PACKAGE_OP]) + pkg_length(len(body)) + body


def name(path: str, value: bytes) -> bytes:
    """Name(path, value): bind an encoded data object to a name."""
    return bytes([NAME_OP]) + name_string(path) + value


def scope(path: str, terms: Iterable[bytes]) -> bytes:
    body = name_string(path) + b"".join(terms)
    return bytes([SCOPE_OP]) + pkg_length(len(body)) + body


def device(path: str, terms: Iterable[bytes]) -> bytes:
    body = name_string(path) + b"".join(terms)
    return bytes([EXT_OP_PREFIX, DEVICE_OP]) + pkg_length(len(body)) + body


# -- resource templates


def memory32_fixed(base: int, length: int, *, writable: bool = True) -> bytes:
    return struct.pack("<BHBII", _MEMORY32_FIXED, 9, int(writable), base, length)


def io_port(base: int, length: int) -> bytes:
    """IO(Decode16, base, base, 1, length): a fixed range of ports."""
    return struct.pack("<BBHHBB", _IO_PORT, 1, base, base, 1, length)


def irq_no_flags(irq: int) -> bytes:
    """IRQNoFlags(){irq}: an ISA interrupt, edge-triggered and active-high, as ISA devices have."""
    if not 0 <= irq < 16:
        raise ValueError(f"ISA IRQ {irq} is not 0-15")
    return struct.pack("<BH", _IRQ, 1 << irq)


def extended_irq(gsi: int, *, edge: bool, active_low: bool = False, shared: bool = False) -> bytes:
    """Interrupt(ResourceConsumer, Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared) {gsi}."""
    flags = IRQ_CONSUMER | (IRQ_EDGE if edge else 0) | (IRQ_ACTIVE_LOW if active_low else 0)
    flags |= IRQ_SHARED if shared else 0
    return struct.pack("<BHBBI", _EXTENDED_IRQ, 6, flags, 1, gsi)


def resource_template(descriptors: Iterable[bytes]) -> bytes:
    """ResourceTemplate(){...}: the descriptors, an end tag, all in a Buffer. The end tag's checksum byte is 0,
    which the spec defines as "treat the template as correctly summed"."""
    return buffer(b"".join(descriptors) + bytes([_END_TAG, 0]))
