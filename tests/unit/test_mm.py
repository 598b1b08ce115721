"""The address space over real FlatMemory: Linux's placement, splitting and error rules, and that the pages
themselves (contents and protection) follow the bookkeeping."""

from __future__ import annotations

import errno
import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from isola.emu.memory import FlatMemory
from isola.linux.guest import PAGE_SIZE, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, GuestFault, SyscallError
from isola.linux.mm import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    AddressSpace,
    Vma,
)

P = PAGE_SIZE
MIB = 1 << 20
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
BASE = 48 * MIB  # mmap_base of the test address space


@pytest.fixture
def mm() -> AddressSpace:
    return AddressSpace(FlatMemory(64 * MIB), mmap_base=BASE)


def errno_of(call: object, *args: int) -> int:
    assert callable(call)
    with pytest.raises(SyscallError) as info:
        call(*args)
    return info.value.errno


def spans(mm: AddressSpace) -> list[tuple[int, int, int]]:
    return [(v.start, v.end, v.prot) for v in mm.vmas]


# -- mmap ---------------------------------------------------------------------------------------------------


def test_mmap_places_top_down_below_mmap_base_and_rounds_to_pages(mm: AddressSpace) -> None:
    a = mm.mmap(0, 100, RW, ANON)
    b = mm.mmap(0, 3 * P, PROT_READ, ANON)
    assert a == BASE - P
    assert b == a - 3 * P
    assert spans(mm) == [(b, a, PROT_READ), (a, BASE, RW)]
    assert mm.mem.read(a, P) == bytes(P)
    mm.mem.write(a + 5, b"hello")
    with pytest.raises(GuestFault):
        mm.mem.write(b, b"x")


def test_mmap_takes_a_free_hint_rounded_up_and_ignores_a_taken_one(mm: AddressSpace) -> None:
    assert mm.mmap(0x100001, P, RW, ANON) == 0x101000
    assert mm.mmap(0x101000, P, RW, ANON) == BASE - P
    assert mm.mmap(0x10, P, RW, ANON) == 0x10000  # below mmap_min_addr: raised to it


def test_mmap_fixed_replaces_and_splits_what_is_there(mm: AddressSpace) -> None:
    a = mm.mmap(0, 4 * P, RW, ANON)
    mm.mem.write(a, b"\xaa" * 4 * P)
    assert mm.mmap(a + P, P, PROT_READ | PROT_EXEC, ANON | MAP_FIXED) == a + P
    assert spans(mm) == [(a, a + P, RW), (a + P, a + 2 * P, PROT_READ | PROT_EXEC), (a + 2 * P, a + 4 * P, RW)]
    assert mm.mem.read(a + P, P) == bytes(P)  # fresh zero pages
    assert mm.mem.read(a, 1) == mm.mem.read(a + 2 * P, 1) == b"\xaa"


def test_mmap_fixed_noreplace(mm: AddressSpace) -> None:
    a = mm.mmap(0, 2 * P, RW, ANON)
    assert errno_of(mm.mmap, a + P, 2 * P, RW, ANON | MAP_FIXED_NOREPLACE) == errno.EEXIST
    assert errno_of(mm.mmap, a + P, 2 * P, RW, ANON | MAP_FIXED | MAP_FIXED_NOREPLACE) == errno.EEXIST
    assert mm.mmap(a + 2 * P, P, RW, ANON | MAP_FIXED_NOREPLACE) == a + 2 * P
    assert spans(mm) == [(a, a + 3 * P, RW)]  # alike neighbours merge


@pytest.mark.parametrize(
    ("addr", "length", "flags", "code"),
    [
        (0, 0, ANON, errno.EINVAL),
        (0, P, MAP_ANONYMOUS, errno.EINVAL),  # neither shared nor private
        (0, P, ANON | 0x4, errno.EINVAL),  # an unknown mapping type
        (0x100001, P, ANON | MAP_FIXED, errno.EINVAL),
        (0, 65 * MIB, ANON, errno.ENOMEM),
        (63 * MIB, 2 * MIB, ANON | MAP_FIXED, errno.ENOMEM),
        (0x1000, P, ANON | MAP_FIXED, errno.EPERM),
    ],
)
def test_mmap_errors(mm: AddressSpace, addr: int, length: int, flags: int, code: int) -> None:
    assert errno_of(mm.mmap, addr, length, RW, flags) == code
    assert mm.vmas == ()


def test_mmap_unaligned_file_offset_is_einval(mm: AddressSpace) -> None:
    with pytest.raises(SyscallError) as info:
        mm.mmap(0, P, PROT_READ, MAP_PRIVATE, name="/f", offset=100)
    assert info.value.errno == errno.EINVAL


def test_mmap_falls_back_above_mmap_base_then_runs_out(mm: AddressSpace) -> None:
    below = mm.mmap(0, BASE - 0x10000, RW, ANON)
    assert below == 0x10000
    above = mm.mmap(0, 8 * MIB, RW, ANON)
    assert above == BASE
    assert mm.mmap(0, 8 * MIB, RW, ANON) == BASE + 8 * MIB
    assert errno_of(mm.mmap, 0, P, RW, ANON) == errno.ENOMEM


def test_file_mappings_keep_their_offsets_and_merge_only_when_contiguous(mm: AddressSpace) -> None:
    a = mm.mmap(0x200000, 2 * P, PROT_READ, MAP_PRIVATE | MAP_FIXED, name="/lib/x.so", offset=0)
    mm.mmap(a + 2 * P, P, PROT_READ, MAP_PRIVATE | MAP_FIXED, name="/lib/x.so", offset=2 * P)
    mm.mmap(a + 3 * P, P, PROT_READ, MAP_PRIVATE | MAP_FIXED, name="/lib/x.so", offset=8 * P)
    assert [(v.start, v.end, v.offset) for v in mm.vmas] == [(a, a + 3 * P, 0), (a + 3 * P, a + 4 * P, 8 * P)]
    mm.mprotect(a + P, P, RW)
    assert [(v.start, v.offset, v.prot) for v in mm.vmas][:3] == [
        (a, 0, PROT_READ),
        (a + P, P, RW),
        (a + 2 * P, 2 * P, 1),
    ]


# -- munmap -------------------------------------------------------------------------------------------------


def test_munmap_splits_and_really_unmaps(mm: AddressSpace) -> None:
    a = mm.mmap(0, 4 * P, RW, ANON)
    mm.mem.write(a, b"\x11" * 4 * P)
    mm.munmap(a + P, 2 * P - 1)  # rounded up to whole pages
    assert spans(mm) == [(a, a + P, RW), (a + 3 * P, a + 4 * P, RW)]
    with pytest.raises(GuestFault):
        mm.mem.read(a + P, 1)
    assert mm.mem.prot_at(a + 2 * P) is None
    assert mm.mem.read(a + 3 * P, 1) == b"\x11"
    mm.munmap(a - 10 * P, 20 * P)  # holes are fine
    assert mm.vmas == ()


@pytest.mark.parametrize(("addr", "length"), [(0x100001, P), (0x100000, 0), (63 * MIB, 2 * MIB)])
def test_munmap_errors(mm: AddressSpace, addr: int, length: int) -> None:
    assert errno_of(mm.munmap, addr, length) == errno.EINVAL


# -- mprotect -----------------------------------------------------------------------------------------------


def test_mprotect_splits_and_merges_back(mm: AddressSpace) -> None:
    a = mm.mmap(0, 3 * P, RW, ANON)
    mm.mprotect(a + P, 1, PROT_READ)
    assert spans(mm) == [(a, a + P, RW), (a + P, a + 2 * P, PROT_READ), (a + 2 * P, a + 3 * P, RW)]
    with pytest.raises(GuestFault):
        mm.mem.write(a + P, b"x")
    mm.mem.write(a + 2 * P, b"x")
    mm.mprotect(a + P, P, RW)
    assert spans(mm) == [(a, a + 3 * P, RW)]
    mm.mprotect(a, 0, PROT_NONE)  # length 0: nothing
    assert mm.mem.prot_at(a) == RW


def test_mprotect_over_a_hole_is_enomem_after_changing_what_precedes_it(mm: AddressSpace) -> None:
    a = mm.mmap(0x200000, P, RW, ANON | MAP_FIXED)
    mm.mmap(a + 2 * P, P, RW, ANON | MAP_FIXED)
    assert errno_of(mm.mprotect, a, 3 * P, PROT_READ) == errno.ENOMEM
    assert spans(mm) == [(a, a + P, PROT_READ), (a + 2 * P, a + 3 * P, RW)]
    assert mm.mem.prot_at(a) == PROT_READ and mm.mem.prot_at(a + 2 * P) == RW
    assert errno_of(mm.mprotect, a + P, P, PROT_READ) == errno.ENOMEM


@pytest.mark.parametrize(("addr", "prot"), [(0x200001, PROT_READ), (0x200000, 0x10)])
def test_mprotect_einval(mm: AddressSpace, addr: int, prot: int) -> None:
    mm.mmap(0x200000, P, RW, ANON | MAP_FIXED)
    assert errno_of(mm.mprotect, addr, P, prot) == errno.EINVAL


# -- mremap -------------------------------------------------------------------------------------------------


def test_mremap_shrinks_in_place(mm: AddressSpace) -> None:
    a = mm.mmap(0, 4 * P, RW, ANON)
    assert mm.mremap(a, 4 * P, P, 0) == a
    assert spans(mm) == [(a, a + P, RW)]
    assert mm.mem.prot_at(a + P) is None


def test_mremap_grows_in_place_when_the_pages_after_are_free(mm: AddressSpace) -> None:
    a = mm.mmap(0x200000, P, RW, ANON | MAP_FIXED)
    mm.mem.write(a, b"keep")
    assert mm.mremap(a, P, 3 * P, 0) == a
    assert spans(mm) == [(a, a + 3 * P, RW)]
    assert mm.mem.read(a, 4) == b"keep"
    mm.mem.write(a + 2 * P, b"new page")


def test_mremap_moves_contents_when_it_may(mm: AddressSpace) -> None:
    a = mm.mmap(0x200000, 2 * P, PROT_READ | PROT_WRITE, ANON | MAP_FIXED, name="[anon:x]")
    mm.mmap(a + 2 * P, P, PROT_READ, ANON | MAP_FIXED)  # blocks growing in place
    mm.mem.write(a, b"A" * P + b"B" * P)
    mm.mprotect(a, 2 * P, PROT_NONE)  # the contents move even when they cannot be read
    assert errno_of(mm.mremap, a, 2 * P, 4 * P, 0) == errno.ENOMEM
    b = mm.mremap(a, 2 * P, 4 * P, MREMAP_MAYMOVE)
    assert b != a and mm.find(a) is None and mm.mem.prot_at(a) is None
    assert mm.find(b) == Vma(b, b + 4 * P, PROT_NONE, ANON, "[anon:x]")
    mm.mprotect(b, 4 * P, PROT_READ)
    assert mm.mem.read(b, 2 * P) == b"A" * P + b"B" * P
    assert mm.mem.read(b + 2 * P, 2 * P) == bytes(2 * P)


def test_mremap_fixed_replaces_the_target_and_moves_part_of_a_mapping(mm: AddressSpace) -> None:
    a = mm.mmap(0x200000, 3 * P, RW, ANON | MAP_FIXED)
    mm.mem.write(a + P, b"middle")
    t = mm.mmap(0x400000, 4 * P, PROT_READ, ANON | MAP_FIXED)
    assert mm.mremap(a + P, P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, t + P) == t + P
    assert spans(mm) == [
        (a, a + P, RW),
        (a + 2 * P, a + 3 * P, RW),
        (t, t + P, PROT_READ),
        (t + P, t + 3 * P, RW),
        (t + 3 * P, t + 4 * P, PROT_READ),
    ]
    assert mm.mem.read(t + P, 6) == b"middle"


def test_mremap_dontunmap_leaves_the_old_range_mapped_and_empty(mm: AddressSpace) -> None:
    a = mm.mmap(0x200000, P, RW, ANON | MAP_FIXED)
    mm.mem.write(a, b"data")
    b = mm.mremap(a, P, P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP)
    assert b != a
    assert mm.mem.read(b, 4) == b"data"
    assert mm.mem.read(a, 4) == bytes(4)


@pytest.mark.parametrize(
    ("old_len", "new_len", "flags", "new_addr", "code"),
    [
        (P, P, 0x8, 0, errno.EINVAL),  # unknown flag
        (P, 2 * P, MREMAP_FIXED, 0x400000, errno.EINVAL),  # FIXED needs MAYMOVE
        (P, 2 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0, errno.EINVAL),  # DONTUNMAP keeps the size
        (P, 0, MREMAP_MAYMOVE, 0, errno.EINVAL),
        (0, P, MREMAP_MAYMOVE, 0, errno.EINVAL),  # duplicating needs a shared mapping
        (P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, 0x200000 - P, errno.EINVAL),  # overlapping ranges
        (P, P, MREMAP_MAYMOVE | MREMAP_FIXED, 0x400001, errno.EINVAL),
        (4 * P, 8 * P, MREMAP_MAYMOVE, 0, errno.EFAULT),  # old range runs past its mapping
    ],
)
def test_mremap_errors(mm: AddressSpace, old_len: int, new_len: int, flags: int, new_addr: int, code: int) -> None:
    mm.mmap(0x200000, 2 * P, RW, ANON | MAP_FIXED)
    assert errno_of(mm.mremap, 0x200000, old_len, new_len, flags, new_addr) == code
    assert spans(mm) == [(0x200000, 0x202000, RW)]


def test_mremap_of_unmapped_memory_is_efault(mm: AddressSpace) -> None:
    assert errno_of(mm.mremap, 0x200000, P, P, 0) == errno.EFAULT


# -- brk ----------------------------------------------------------------------------------------------------


def test_brk_grows_a_heap_and_shrinks_it(mm: AddressSpace) -> None:
    mm.set_brk_start(0x300000)
    assert mm.brk(0) == 0x300000
    assert mm.brk(0x300123) == 0x300123
    assert spans(mm) == [(0x300000, 0x301000, RW)]
    assert mm.vmas[0].name == "[heap]"
    mm.mem.write(0x300000, b"heap")
    assert mm.brk(0x303000) == 0x303000
    assert spans(mm) == [(0x300000, 0x303000, RW)]
    assert mm.brk(0x301001) == 0x301001
    assert spans(mm) == [(0x300000, 0x302000, RW)]
    assert mm.mem.prot_at(0x302000) is None
    assert mm.mem.read(0x300000, 4) == b"heap"
    assert mm.brk(0x2FF000) == 0x301001  # below the start: refused, the break is returned


def test_brk_never_grows_into_another_mapping(mm: AddressSpace) -> None:
    mm.set_brk_start(0x300000)
    mm.mmap(0x305000, P, PROT_READ, ANON | MAP_FIXED)
    assert mm.brk(0x305000) == 0x300000
    assert mm.brk(0x304001) == 0x300000  # Linux keeps a page between the heap and the next mapping
    assert mm.brk(0x304000) == 0x304000
    assert mm.brk(64 * MIB + P) == 0x304000
    assert [v.name for v in mm.vmas] == ["[heap]", ""]


# -- /proc/self/maps and clear ------------------------------------------------------------------------------


def test_maps_text_looks_like_linux(mm: AddressSpace) -> None:
    mm.mmap(0x10000, 2 * P, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED, name="/bin/busybox")
    mm.mmap(0x12000, P, RW, MAP_PRIVATE | MAP_FIXED, name="/bin/busybox", offset=0x2000)
    mm.mmap(0x20000, P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    mm.set_brk_start(0x30000)
    mm.brk(0x31000)
    assert mm.maps_text() == (
        "00010000-00012000 r-xp 00000000 00:00 0" + " " * 34 + "/bin/busybox\n"
        "00012000-00013000 rw-p 00002000 00:00 0" + " " * 34 + "/bin/busybox\n"
        "00020000-00021000 rw-s 00000000 00:00 0 \n"
        "00030000-00031000 rw-p 00000000 00:00 0" + " " * 34 + "[heap]\n"
    )
    assert mm.maps_text().splitlines()[0].index("/") == 73  # where Linux puts the name


def test_clear_drops_every_mapping_and_the_break(mm: AddressSpace) -> None:
    a = mm.mmap(0, P, RW, ANON)
    mm.set_brk_start(0x300000)
    mm.brk(0x302000)
    mm.clear()
    assert mm.vmas == ()
    assert mm.brk(0) == 0
    assert mm.mem.prot_at(a) is None and mm.mem.prot_at(0x300000) is None


def test_find(mm: AddressSpace) -> None:
    a = mm.mmap(0x200000, 2 * P, RW, ANON | MAP_FIXED)
    assert mm.find(a + P + 5) == mm.vmas[0]
    assert mm.find(a - 1) is None and mm.find(a + 2 * P) is None


# -- a random walk: the VMA list and the pages never disagree --------------------------------------------------

SMALL = 2 * MIB
PAGES = st.integers(0, SMALL // P - 1)
LENGTHS = st.integers(1, 64 * P)
PROTS = st.sampled_from([PROT_NONE, PROT_READ, RW, PROT_READ | PROT_EXEC])


class AddressSpaceWalk(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.mm = AddressSpace(FlatMemory(SMALL), mmap_base=SMALL // 2)
        self.mm.set_brk_start(SMALL // 4)

    def _try(self, call: object, *args: int) -> None:
        assert callable(call)
        try:
            call(*args)
        except SyscallError as e:
            assert e.errno in (errno.EINVAL, errno.ENOMEM, errno.EEXIST, errno.EPERM, errno.EFAULT)

    @rule(page=PAGES, length=LENGTHS, prot=PROTS, fixed=st.sampled_from([0, MAP_FIXED, MAP_FIXED_NOREPLACE]))
    def mmap(self, page: int, length: int, prot: int, fixed: int) -> None:
        self._try(self.mm.mmap, page * P, length, prot, ANON | fixed)

    @rule(page=PAGES, length=LENGTHS)
    def munmap(self, page: int, length: int) -> None:
        self._try(self.mm.munmap, page * P, length)

    @rule(page=PAGES, length=LENGTHS, prot=PROTS)
    def mprotect(self, page: int, length: int, prot: int) -> None:
        self._try(self.mm.mprotect, page * P, length, prot)

    @rule(page=PAGES, old=LENGTHS, new=LENGTHS, flags=st.sampled_from([0, MREMAP_MAYMOVE]))
    def mremap(self, page: int, old: int, new: int, flags: int) -> None:
        self._try(self.mm.mremap, page * P, old, new, flags)

    @rule(addr=st.integers(0, SMALL))
    def brk(self, addr: int) -> None:
        self.mm.brk(addr)

    @invariant()
    def pages_agree_with_vmas(self) -> None:
        vmas = self.mm.vmas
        for v, w in itertools.pairwise(vmas):
            assert v.end <= w.start and not v.mergeable_with(w)
        expected: list[int | None] = [None] * (SMALL // P)
        for v in vmas:
            assert v.start % P == 0 and v.end % P == 0 and v.start < v.end
            for p in range(v.start // P, v.end // P):
                expected[p] = v.prot
        assert [self.mm.mem.prot_at(p * P) for p in range(SMALL // P)] == expected


TestAddressSpaceWalk = AddressSpaceWalk.TestCase
TestAddressSpaceWalk.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
