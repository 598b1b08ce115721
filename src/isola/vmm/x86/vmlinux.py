"""An x86-64 ELF `vmlinux`: the uncompressed kernel, its load segments, and its two entry points.

A bzImage carries this same ELF compressed inside it, and its decompressor (running in the guest) unpacks and
relocates it before jumping to it. Loading the ELF directly skips that work (the slowest part of an xz kernel's
boot under nested virtualization, measurements §6c): each PT_LOAD segment goes to its *physical* address
(`p_paddr`; `p_vaddr` is the kernel's high virtual mapping), and the vCPU starts at one of two entries:

- `startup_64` (`e_entry`, already a physical address): the 64-bit boot protocol, as for a bzImage's +0x200
  entry: long mode on identity page tables, %rsi = a zero page;
- PVH (the `XEN_ELFNOTE_PHYS32_ENTRY` note, present when the kernel was built with CONFIG_PVH): 32-bit
  protected mode with paging off, %ebx = an `hvm_start_info` (`pvh.py`). No page tables, no zero page.

The file is untrusted input like any kernel image: every offset and size is checked against the file before use,
and anything wrong is a `FormatError` naming the file and the problem.
"""

from __future__ import annotations

import itertools
import re
import struct
from dataclasses import dataclass

from isola.errors import FormatError
from isola.linux.elf import EHDR, EM_X86_64, ET_EXEC, PHDR, PT_LOAD, PT_NOTE, machine_name
from isola.vmm.x86.bzimage import BOOT_FLAG, HDRS_MAGIC, LOADED_HIGH, SETUP_HEADER_OFFSET, SetupHeader

ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
XEN_ELFNOTE_PHYS32_ENTRY = 18
XEN_NOTE_NAME = b"Xen\0"
NOTE_HEADER = struct.Struct("<III")  # namesz, descsz, type
ENTRY_LIMIT = 1 << 32
"""Both entries start with the low 4 GiB only: PVH with paging off, startup_64 on identity tables of 4 GiB."""

COMMAND_LINE_SIZE = 2048
"""x86 Linux's fixed command-line buffer, NUL included. A bzImage states its `cmdline_size`; an ELF does not."""
MAX_CMDLINE = COMMAND_LINE_SIZE - 1
INITRD_ADDR_MAX = 0x7FFF_FFFF
"""The highest initrd address every boot protocol ≥ 2.03 kernel accepts (the value the setup header carries)."""
BOOT_PROTOCOL = 0x020C
"""The protocol version in the setup header isola makes up for an ELF: 2.12, the one Linux's own PVH code writes
into the `boot_params` it builds from an `hvm_start_info`."""

_RELEASE = re.compile(rb"Linux version (\d[!-~]*)")  # the banner; its first word is the release (uname -r)


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD segment: `data` goes at guest-physical `paddr`, followed by zeros up to `memsz` (the BSS)."""

    paddr: int
    data: memoryview
    memsz: int

    @property
    def end(self) -> int:
        return self.paddr + self.memsz


@dataclass(frozen=True)
class Vmlinux:
    segments: tuple[Segment, ...]
    """Non-empty, sorted by physical address, not overlapping, all below 4 GiB."""
    entry: int
    """`startup_64`: where the 64-bit boot protocol enters (physical)."""
    pvh_entry: int | None
    """The 32-bit PVH entry (physical), or None for a kernel built without CONFIG_PVH."""
    release: str
    """The kernel release from its "Linux version …" banner (e.g. "6.1.0-56-amd64"); empty if not found."""

    @property
    def footprint(self) -> tuple[int, int]:
        """[start, end) of the physical memory the segments occupy, BSS included."""
        return self.segments[0].paddr, self.segments[-1].end


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def parse(data: bytes, source: str = "kernel image") -> Vmlinux:
    """Parse and validate an x86-64 ELF vmlinux; `source` names the file in error messages."""
    if not is_elf(data):
        raise FormatError(f"{source} is not an ELF file")
    if len(data) < EHDR.size:
        raise FormatError(f"{source} is truncated: {len(data)} bytes, an ELF header needs {EHDR.size}")
    ident, e_type, e_machine, _version, entry, phoff, _shoff, _flags, _ehsize, phentsize, phnum, *_ = EHDR.unpack_from(
        data
    )
    if ident[4] != ELFCLASS64:
        raise FormatError(f"{source} is a 32-bit ELF file; an x86-64 vmlinux is a 64-bit one")
    if ident[5] != ELFDATA2LSB:
        raise FormatError(f"{source} is a big-endian ELF file; an x86-64 vmlinux is little-endian")
    if e_machine != EM_X86_64:
        raise FormatError(f"{source} is an ELF file for {machine_name(e_machine)}, not x86-64")
    if e_type != ET_EXEC:
        raise FormatError(f"{source} is an ELF file of type {e_type}, not an executable like a vmlinux")
    if phentsize != PHDR.size or phnum == 0:
        raise FormatError(f"{source} has no usable program headers ({phnum} of {phentsize} bytes)")
    if phoff + phnum * PHDR.size > len(data):
        raise FormatError(f"{source} is truncated: its program headers end past the end of the file")
    phdrs = [PHDR.unpack_from(data, phoff + i * PHDR.size) for i in range(phnum)]
    view = memoryview(data)
    segments: list[Segment] = []
    notes: list[memoryview] = []
    for p_type, _pflags, offset, _vaddr, paddr, filesz, memsz, _align in phdrs:
        if p_type not in (PT_LOAD, PT_NOTE):
            continue
        if offset + filesz > len(data):
            raise FormatError(f"{source} is truncated: a segment at file offset {offset:#x} ends past the end")
        if p_type == PT_NOTE:
            notes.append(view[offset : offset + filesz])
        elif memsz:
            if filesz > memsz:
                raise FormatError(f"{source}: the segment at {paddr:#x} has more file bytes than memory bytes")
            if paddr + memsz > ENTRY_LIMIT:
                raise FormatError(f"{source} loads at {paddr:#x}+{memsz:#x}, beyond the 4 GiB a boot entry reaches")
            segments.append(Segment(paddr, view[offset : offset + filesz], memsz))
    if not segments:
        raise FormatError(f"{source} has no loadable segments")
    segments.sort(key=lambda s: s.paddr)
    for before, after in itertools.pairwise(segments):
        if after.paddr < before.end:
            raise FormatError(f"{source}: segments at {before.paddr:#x} and {after.paddr:#x} overlap")
    if not _in_segments(entry, segments):
        raise FormatError(f"{source}: its entry point {entry:#x} is outside every segment (not a vmlinux?)")
    pvh_entry = _pvh_entry(notes, source)
    if pvh_entry is not None and not _in_segments(pvh_entry, segments):
        raise FormatError(f"{source}: its PVH entry point {pvh_entry:#x} is outside every segment")
    found = _RELEASE.search(data)
    release = found.group(1).decode("ascii") if found else ""
    return Vmlinux(tuple(segments), entry, pvh_entry, release)


def _in_segments(address: int, segments: list[Segment]) -> bool:
    return any(s.paddr <= address < s.paddr + len(s.data) for s in segments)


def _pvh_entry(notes: list[memoryview], source: str) -> int | None:
    """The address in the Xen PHYS32_ENTRY note: 4 bytes by the PVH spec, 8 as Linux writes it (`.quad`)."""
    for block in notes:
        at = 0
        while at + NOTE_HEADER.size <= len(block):
            namesz, descsz, note_type = NOTE_HEADER.unpack_from(block, at)
            name_at = at + NOTE_HEADER.size
            desc_at = name_at + _align4(namesz)
            at = desc_at + _align4(descsz)
            if at > len(block):
                raise FormatError(f"{source}: an ELF note runs past the end of its segment")
            if note_type == XEN_ELFNOTE_PHYS32_ENTRY and block[name_at : name_at + namesz] == XEN_NOTE_NAME:
                if descsz not in (4, 8):
                    raise FormatError(f"{source}: the PVH entry note holds {descsz} bytes, not a 4- or 8-byte address")
                return int.from_bytes(block[desc_at : desc_at + descsz], "little")
    return None


def _align4(n: int) -> int:
    return (n + 3) & ~3


def setup_header() -> SetupHeader:
    """The setup header of a zero page for an ELF kernel, which brings none of its own.

    The kernel proper reads only loader-owned fields from it (command line, initrd, loader type, all written by
    `boot_params.build`); the signature and version make it a well-formed header for anything that checks
    (/sys/kernel/boot_params, kexec). The initrd limit and command-line size are what any such kernel accepts.
    """
    fields = (
        (0x1FE, "<H", BOOT_FLAG),
        (0x202, "<4s", HDRS_MAGIC),
        (0x206, "<H", BOOT_PROTOCOL),
        (0x211, "<B", LOADED_HIGH),
        (0x22C, "<I", INITRD_ADDR_MAX),
        (0x238, "<I", MAX_CMDLINE),
    )
    raw = bytearray(0x23C - SETUP_HEADER_OFFSET)  # through cmdline_size, the last field set
    for offset, fmt, value in fields:
        struct.pack_into(fmt, raw, offset - SETUP_HEADER_OFFSET, value)
    return SetupHeader(
        setup_sects=0,
        syssize=0,
        version=BOOT_PROTOCOL,
        loadflags=LOADED_HIGH,
        code32_start=0,
        initrd_addr_max=INITRD_ADDR_MAX,
        kernel_alignment=0,
        relocatable=False,
        xloadflags=0,
        cmdline_size=MAX_CMDLINE,
        pref_address=0,
        init_size=0,
        raw=bytes(raw),
    )
