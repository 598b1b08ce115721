"""The tables the VMM writes into guest memory (GDT, page tables, MP table) and the per-vCPU CPUID/MSR/LAPIC
state, checked byte for byte against the x86 and MP specifications."""

from __future__ import annotations

import struct

import pytest

from isola.errors import UsageError
from isola.vmm.kvm.vcpu import CpuidEntry
from isola.vmm.x86 import cpuid, entry, gdt, mptable, msrs, paging
from isola.vmm.x86.layout import IOAPIC_ADDR, LAPIC_ADDR, MPTABLE_ADDR

# -- GDT


def test_descriptors_match_the_well_known_encodings():
    # The values Linux's own boot GDT and every VMM use for flat 4 GiB segments.
    assert gdt.descriptor(gdt.CODE32, 0, 0xFFFFF) == 0x00CF9B000000FFFF
    assert gdt.descriptor(gdt.CODE64, 0, 0xFFFFF) == 0x00AF9B000000FFFF
    assert gdt.descriptor(gdt.DATA, 0, 0xFFFFF) == 0x00CF93000000FFFF
    assert gdt.descriptor(0x0093, 0x12345678, 0xABCDE) == 0x120A93345678BCDE


def test_boot_gdt_puts_code_and_data_at_the_protocol_selectors():
    table = gdt.boot_gdt(long_mode=False)
    assert gdt.BOOT_CS == 0x10 and gdt.BOOT_DS == 0x18
    assert table[0] == 0
    assert table[gdt.BOOT_CS >> 3] == 0x00CF9B000000FFFF
    assert table[gdt.BOOT_DS >> 3] == 0x00CF93000000FFFF
    assert gdt.boot_gdt(long_mode=True)[gdt.BOOT_CS >> 3] == 0x00AF9B000000FFFF
    assert len(gdt.to_bytes(table)) == 8 * len(table)


@pytest.mark.parametrize("long_mode", [False, True])
def test_segment_registers_mirror_the_descriptors(long_mode):
    table = gdt.boot_gdt(long_mode)
    cs = gdt.segment(table, gdt.BOOT_CS)
    assert (cs.base, cs.limit, cs.selector) == (0, 0xFFFFFFFF, 0x10)
    assert (cs.type, cs.present, cs.dpl, cs.s, cs.g) == (0xB, 1, 0, 1, 1)
    assert (cs.l, cs.db) == ((1, 0) if long_mode else (0, 1))
    ds = gdt.segment(table, gdt.BOOT_DS)
    assert (ds.type, ds.db, ds.l, ds.limit, ds.selector) == (0x3, 1, 0, 0xFFFFFFFF, 0x18)
    tr = gdt.segment(table, gdt.BOOT_TSS)
    assert (tr.type, tr.s, tr.present, tr.limit, tr.g) == (0xB, 0, 1, 0x67, 0)


# -- page tables


def test_identity_map_covers_4g_with_2m_pages():
    base = 0x9000
    tables = paging.identity_4g(base)
    assert len(tables) == paging.SIZE == 6 * 4096
    (pml4e,) = struct.unpack_from("<Q", tables, 0)
    assert pml4e == (base + 0x1000) | 0x3
    assert tables[8:4096] == bytes(4088)
    pdpt = struct.unpack_from("<512Q", tables, 4096)
    assert pdpt[:4] == tuple((base + 0x2000 + i * 0x1000) | 0x3 for i in range(4))
    assert set(pdpt[4:]) == {0}
    pdes = struct.unpack_from("<2048Q", tables, 0x2000)
    for i in (0, 1, 511, 512, 1535, 2047):
        assert pdes[i] == (i << 21) | 0x83
    # the LAPIC page maps to itself
    assert pdes[LAPIC_ADDR >> 21] & ~0xFFF == LAPIC_ADDR & ~((1 << 21) - 1)


def test_page_tables_must_be_aligned():
    with pytest.raises(ValueError):
        paging.identity_4g(0x9001)


# -- MP table


def _checksum_ok(data: bytes) -> bool:
    return sum(data) % 256 == 0


@pytest.mark.parametrize("cpus", [1, 2, 4, 32, 254])
def test_mp_table_checksums_and_lengths(cpus):
    blob = mptable.build(cpus, MPTABLE_ADDR)
    floating = blob[:16]
    assert floating[:4] == b"_MP_"
    assert _checksum_ok(floating)
    _sig, config, length, rev, _, features = mptable.FLOATING.unpack(floating)
    assert (config, length, rev, features) == (MPTABLE_ADDR + 16, 1, 4, bytes(5))
    table = blob[16:]
    assert table[:4] == b"PCMP"
    base_length, spec_rev = struct.unpack_from("<HB", table, 4)
    assert base_length == len(table)
    assert spec_rev == 4
    assert _checksum_ok(table)
    count = struct.unpack_from("<H", table, 34)[0]
    assert count == cpus + 1 + 1 + 24 + 2
    assert struct.unpack_from("<I", table, 36)[0] == LAPIC_ADDR


def _entries(table: bytes) -> list[bytes]:
    out, off = [], mptable.HEADER.size
    while off < len(table):
        size = 20 if table[off] == mptable.ENTRY_PROCESSOR else 8
        out.append(table[off : off + size])
        off += size
    return out


def test_mp_table_describes_every_cpu_the_ioapic_and_the_isa_irqs():
    cpus = 3
    entries = _entries(mptable.build(cpus, MPTABLE_ADDR)[16:])
    processors = [e for e in entries if e[0] == mptable.ENTRY_PROCESSOR]
    assert [(p[1], p[3]) for p in processors] == [(0, 0x3), (1, 0x1), (2, 0x1)]  # APIC id, enabled (+BSP)
    (bus,) = [e for e in entries if e[0] == mptable.ENTRY_BUS]
    assert bus[2:8] == b"ISA   "
    (ioapic,) = [e for e in entries if e[0] == mptable.ENTRY_IOAPIC]
    _, ioapic_id, _version, flags, addr = mptable.IOAPIC.unpack(ioapic)
    assert (ioapic_id, flags, addr) == (cpus, 1, IOAPIC_ADDR)
    irqs = [mptable.INTERRUPT.unpack(e) for e in entries if e[0] == mptable.ENTRY_IO_INTERRUPT]
    assert [(i[4], i[5], i[6]) for i in irqs] == [(n, cpus, n) for n in range(24)]  # src irq, ioapic, pin
    lints = [mptable.INTERRUPT.unpack(e) for e in entries if e[0] == mptable.ENTRY_LOCAL_INTERRUPT]
    assert [(i[1], i[6]) for i in lints] == [(mptable.INT_TYPE_EXTINT, 0), (mptable.INT_TYPE_NMI, 1)]


def test_mp_table_fits_below_the_bios_area():
    assert MPTABLE_ADDR + len(mptable.build(mptable.MAX_CPUS, MPTABLE_ADDR)) < 0xE0000


@pytest.mark.parametrize("cpus", [0, 255])
def test_mp_table_cpu_limits(cpus):
    with pytest.raises(UsageError):
        mptable.build(cpus, MPTABLE_ADDR)


# -- CPUID


SUPPORTED = [
    CpuidEntry(0x0, 0, 0, 0xD, 0x68747541, 0x444D4163, 0x69746E65),
    CpuidEntry(0x1, 0, 0, 0x00A00F11, 0x00000800, 0x76D8320B, 0x178BFBFF),
    CpuidEntry(0x7, 0, 1, 0, 0x219C07AB, 0x0040069C, 0x00000010),
    CpuidEntry(0x7, 1, 1, 0x30, 0, 0, 0),
    CpuidEntry(0xB, 0, 1, 1, 1, 0x100, 0),
    CpuidEntry(0xB, 1, 1, 1, 2, 0x201, 0),
    CpuidEntry(0xD, 0, 1, 7, 0x340, 0x340, 0),
    CpuidEntry(0x4000_0000, 0, 0, 0x4000_0001, 0x4B4D564B, 0x564B4D56, 0x4D),
    CpuidEntry(0x8000_0001, 0, 0, 0, 0, 0x00010800, 0),
    CpuidEntry(0x8000_001E, 0, 0, 0, 0, 0, 0),
]


def _leaf(entries: list[CpuidEntry], function: int, index: int = 0) -> CpuidEntry:
    return next(e for e in entries if e.function == function and e.subleaf == index)


def test_cpuid_sets_the_hypervisor_bit_and_apic_ids():
    for index in range(3):
        out = cpuid.guest_cpuid(SUPPORTED, vcpu_index=index, vcpu_count=3)
        leaf1 = _leaf(out, 1)
        assert leaf1.ecx & (1 << 31)
        assert leaf1.ebx >> 24 == index
        assert (leaf1.ebx >> 16) & 0xFF == 3
        assert leaf1.ebx & 0xFFFF == 0x0800  # CLFLUSH size kept
        assert leaf1.edx & cpuid.HTT
        assert _leaf(out, 0xB, 0).edx == index
        assert _leaf(out, 0xB, 1).edx == index
        assert _leaf(out, 0x8000_001E).eax == index
    assert _leaf(out, 0x4000_0000) == _leaf(SUPPORTED, 0x4000_0000)


def test_single_cpu_has_no_htt():
    leaf1 = _leaf(cpuid.guest_cpuid(SUPPORTED, vcpu_index=0, vcpu_count=1), 1)
    assert not leaf1.edx & cpuid.HTT


def test_xsave_hiding():
    plain = cpuid.guest_cpuid(SUPPORTED, vcpu_index=0, vcpu_count=1)
    hidden = cpuid.guest_cpuid(SUPPORTED, vcpu_index=0, vcpu_count=1, hide_xsave=True)
    assert _leaf(plain, 1).ecx & (1 << 26) and _leaf(plain, 1).ecx & (1 << 28)
    assert not _leaf(hidden, 1).ecx & ((1 << 26) | (1 << 28) | (1 << 12) | (1 << 29))
    assert _leaf(hidden, 1).ecx & 1  # SSE3 untouched
    assert not any(e.function == 0xD for e in hidden)
    assert any(e.function == 0xD for e in plain)
    assert not _leaf(hidden, 7).ebx & (1 << 5)  # AVX2
    assert _leaf(hidden, 7).ebx & (1 << 0)  # FSGSBASE untouched
    assert not _leaf(hidden, 7, 1).eax & (1 << 4)  # AVX-VNNI
    assert not _leaf(hidden, 0x8000_0001).ecx & (1 << 16)  # FMA4
    assert _leaf(hidden, 0x8000_0001).ecx & (1 << 11) == 0  # XOP


# -- MSRs and LAPIC


def test_boot_msrs():
    values = msrs.boot_msrs()
    assert values[msrs.IA32_MISC_ENABLE] == 1
    assert values[msrs.IA32_MTRR_DEF_TYPE] == 0x806
    assert values[msrs.LSTAR] == 0 and values[msrs.IA32_TSC] == 0
    assert 0x10A not in values  # IA32_ARCH_CAPABILITIES: kvm_pvm refuses it (measurements §2a)


def test_lint_modes():
    page = bytearray(1024)
    struct.pack_into("<I", page, 0x350, 0x10700)  # masked, some mode
    struct.pack_into("<I", page, 0x360, 0x00400)
    struct.pack_into("<I", page, 0x20, 0xABCD)
    out = entry.with_lint_modes(bytes(page))
    assert struct.unpack_from("<I", out, 0x350)[0] == 0x10700  # ExtINT = 7, mask bit kept
    assert struct.unpack_from("<I", out, 0x360)[0] == 0x00400  # NMI = 4
    struct.pack_into("<I", page, 0x350, 0)
    struct.pack_into("<I", page, 0x360, 0x700)
    out = entry.with_lint_modes(bytes(page))
    assert struct.unpack_from("<I", out, 0x350)[0] == 0x700
    assert struct.unpack_from("<I", out, 0x360)[0] == 0x400
    assert struct.unpack_from("<I", out, 0x20)[0] == 0xABCD
