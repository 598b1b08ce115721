"""The boot GDT and the KVM segment registers that match it.

The boot protocol fixes the selectors: `__BOOT_CS` = 0x10 and `__BOOT_DS` = 0x18, flat 4 GiB segments. The
kernel loads its own GDT within a few instructions, but until then the hidden parts of the segment registers
(what KVM_SET_SREGS sets) must agree with the table in memory, or a segment reload faults.
"""

from __future__ import annotations

import struct

from isola.vmm.kvm import structs

BOOT_CS = 0x10
BOOT_DS = 0x18
BOOT_TSS = 0x20

# Descriptor "flags" as Firecracker and the kernel's GDT_ENTRY() write them: access byte in bits 0-7, the
# G/D-B/L/AVL nibble in bits 12-15.
CODE32 = 0xC09B  # G, D=1 (32-bit), present, code, execute/read, accessed
CODE64 = 0xA09B  # G, L=1 (64-bit), present, code, execute/read, accessed
DATA = 0xC093  # G, B=1, present, data, read/write, accessed
TSS_BUSY = 0x008B  # present, system, busy TSS (32-bit in protected mode, 64-bit in long mode)
TSS_LIMIT = 0x67  # the smallest valid TSS (104 bytes)
FLAT_LIMIT = 0xFFFFF  # with G=1: 4 GiB


def descriptor(flags: int, base: int, limit: int) -> int:
    """An 8-byte segment descriptor."""
    return (
        ((base & 0xFF00_0000) << 32)
        | ((flags & 0xF0FF) << 40)
        | ((limit & 0xF_0000) << 32)
        | ((base & 0xFF_FFFF) << 16)
        | (limit & 0xFFFF)
    )


def boot_gdt(long_mode: bool) -> list[int]:
    """Null, unused, code (0x10), data (0x18), TSS (0x20; two slots, as a 64-bit TSS descriptor takes 16 bytes)."""
    return [
        0,
        0,
        descriptor(CODE64 if long_mode else CODE32, 0, FLAT_LIMIT),
        descriptor(DATA, 0, FLAT_LIMIT),
        descriptor(TSS_BUSY, 0, TSS_LIMIT),
        0,
    ]


def to_bytes(entries: list[int]) -> bytes:
    return struct.pack(f"<{len(entries)}Q", *entries)


def segment(entries: list[int], selector: int) -> structs.Segment:
    """The KVM view of the descriptor `selector` names: what the CPU caches after loading it."""
    d = entries[selector >> 3]
    access = (d >> 40) & 0xFF
    flags = (d >> 52) & 0xF
    base = ((d >> 16) & 0xFF_FFFF) | ((d >> 32) & 0xFF00_0000)
    limit = (d & 0xFFFF) | ((d >> 32) & 0xF_0000)
    granular = bool(flags & 0x8)
    return structs.Segment(
        base=base,
        limit=(limit << 12) | 0xFFF if granular else limit,
        selector=selector,
        type=access & 0xF,
        present=(access >> 7) & 1,
        dpl=(access >> 5) & 3,
        db=(flags >> 2) & 1,
        s=(access >> 4) & 1,
        l=(flags >> 1) & 1,
        g=int(granular),
        avl=flags & 1,
    )
