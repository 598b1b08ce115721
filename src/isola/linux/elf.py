"""ELF64 little-endian executables: parse and validate the headers that exec(2) acts on.

The loader trusts nothing it has not checked here: every offset, size and address it will use is proven to lie
inside the file or inside a sane user address space before `parse` returns. Any byte string either yields an
`ElfFile` or raises `FormatError` with one sentence a user can act on; nothing else escapes (the unit tests
fuzz this). Sections are never looked at: exec(2) does not need them, and a stripped binary has none.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

from isola.errors import FormatError
from isola.linux.guest import PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE

EM_X86_64 = 62
EM_RISCV = 243
MACHINE_NAMES = {
    3: "i386",
    8: "MIPS",
    20: "PowerPC",
    21: "PowerPC64",
    22: "S/390",
    40: "ARM",
    62: "x86-64",
    183: "AArch64",
    243: "RISC-V",
    258: "LoongArch",
}

ET_REL, ET_EXEC, ET_DYN, ET_CORE = 1, 2, 3, 4

PT_LOAD = 1
PT_DYNAMIC = 2
PT_INTERP = 3
PT_NOTE = 4
PT_PHDR = 6
PT_TLS = 7
PT_GNU_STACK = 0x6474E551
PT_GNU_RELRO = 0x6474E552

PF_X, PF_W, PF_R = 1, 2, 4

EF_RISCV_RVC = 0x1
EF_RISCV_FLOAT_ABI = 0x6  # mask: 0 soft, 2 single, 4 double, 6 quad
EF_RISCV_FLOAT_ABI_QUAD = 0x6

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr, 64 bytes
PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr, 56 bytes
USER_LIMIT = 1 << 47  # no 64-bit Linux ABI isola runs gives user space more than 47 bits
PATH_MAX = 4096
MAX_PHDR_TABLE = 65536  # Linux refuses larger program header tables, so do we


class ProgramHeader(NamedTuple):
    type: int
    flags: int  # PF_*
    offset: int
    vaddr: int
    filesz: int
    memsz: int
    align: int

    @property
    def prot(self) -> int:
        """PF_R/W/X as mmap's PROT_* (the bit orders differ)."""
        return (
            (PROT_READ if self.flags & PF_R else 0)
            | (PROT_WRITE if self.flags & PF_W else 0)
            | (PROT_EXEC if self.flags & PF_X else 0)
        )

    @property
    def end(self) -> int:
        return self.vaddr + self.memsz


class ElfFile(NamedTuple):
    type: int  # ET_EXEC or ET_DYN
    machine: int
    flags: int  # e_flags, machine-specific (RISC-V: EF_RISCV_*)
    entry: int
    phoff: int
    phentsize: int
    phdrs: tuple[ProgramHeader, ...]
    interp: str | None  # PT_INTERP, decoded like a file name (os.fsdecode)

    @property
    def loads(self) -> tuple[ProgramHeader, ...]:
        """The PT_LOAD segments, in ascending address order (`parse` guarantees it)."""
        return tuple(p for p in self.phdrs if p.type == PT_LOAD)

    def find(self, type_: int) -> ProgramHeader | None:
        return next((p for p in self.phdrs if p.type == type_), None)

    @property
    def executable_stack(self) -> bool:
        """Only PT_GNU_STACK with PF_X asks for one; without the header modern Linux ABIs default to none."""
        stack = self.find(PT_GNU_STACK)
        return stack is not None and bool(stack.flags & PF_X)


def machine_name(machine: int) -> str:
    return MACHINE_NAMES.get(machine, f"machine {machine}")


def parse(data: bytes, *, machine: int) -> ElfFile:
    """Validate `data` as an ELF64 LE executable or shared object for `machine`, or raise FormatError."""
    if data[:4] != b"\x7fELF":
        raise FormatError("not an ELF file")
    if len(data) < EHDR.size:
        raise FormatError("truncated ELF header")
    ident, e_type, e_machine, e_version, entry, phoff, _shoff, flags, _ehsize, phentsize, phnum, *_ = EHDR.unpack_from(
        data
    )
    if ident[4] != 2:
        raise FormatError("32-bit ELF, expected 64-bit" if ident[4] == 1 else "bad ELF class")
    if ident[5] != 1:
        raise FormatError("big-endian ELF, expected little-endian" if ident[5] == 2 else "bad ELF byte order")
    if ident[6] != 1 or e_version != 1:
        raise FormatError("unknown ELF version")
    if e_type not in (ET_EXEC, ET_DYN):
        kinds = {ET_REL: "a relocatable object", ET_CORE: "a core dump"}
        raise FormatError(f"ELF file is {kinds.get(e_type, f'of type {e_type}')}, not an executable")
    if e_machine != machine:
        raise FormatError(f"ELF for {machine_name(e_machine)}, expected {machine_name(machine)}")
    if machine == EM_RISCV and flags & EF_RISCV_FLOAT_ABI == EF_RISCV_FLOAT_ABI_QUAD:
        raise FormatError("ELF uses the quad-float ABI, which RV64GC cannot run")
    if phentsize != PHDR.size:
        raise FormatError(f"program header entries of {phentsize} bytes, expected {PHDR.size}")
    if phnum == 0:
        raise FormatError("no program headers")
    if phnum * PHDR.size > MAX_PHDR_TABLE:
        raise FormatError("too many program headers")
    if phoff + phnum * PHDR.size > len(data):
        raise FormatError("truncated program header table")
    phdrs = tuple(_phdr(data, phoff + i * PHDR.size) for i in range(phnum))
    interp = _check_segments(data, phdrs)
    if not any(p.type == PT_LOAD and p.flags & PF_X and p.vaddr <= entry < p.end for p in phdrs):
        raise FormatError("entry point outside every executable segment")
    return ElfFile(e_type, e_machine, flags, entry, phoff, phentsize, phdrs, interp)


def _phdr(data: bytes, at: int) -> ProgramHeader:
    p_type, p_flags, offset, vaddr, _paddr, filesz, memsz, align = PHDR.unpack_from(data, at)
    return ProgramHeader(p_type, p_flags, offset, vaddr, filesz, memsz, align)


def _check_segments(data: bytes, phdrs: tuple[ProgramHeader, ...]) -> str | None:
    """Check what the loader relies on; returns the PT_INTERP path if there is one."""
    interp: str | None = None
    prev: ProgramHeader | None = None
    for p in phdrs:
        if p.type == PT_LOAD:
            if p.filesz > p.memsz:
                raise FormatError("segment file size larger than memory size")
            if p.memsz > USER_LIMIT:
                raise FormatError(f"absurd segment size ({p.memsz:#x} bytes)")
            if p.vaddr + p.memsz > USER_LIMIT:
                raise FormatError(f"segment at {p.vaddr:#x} lies beyond the user address space")
            if p.offset + p.filesz > len(data):
                raise FormatError("segment extends past the end of the file")
            if p.offset % PAGE_SIZE != p.vaddr % PAGE_SIZE:
                raise FormatError(f"segment at {p.vaddr:#x}: file offset and address differ modulo the page size")
            if prev is not None and p.vaddr < prev.end:
                raise FormatError("PT_LOAD segments overlap" if p.vaddr >= prev.vaddr else "PT_LOAD segments unsorted")
            prev = p
        elif p.type == PT_INTERP:
            if interp is not None:
                raise FormatError("more than one PT_INTERP")
            interp = _interp(data, p)
    if prev is None:
        raise FormatError("no loadable segments")
    return interp


def _interp(data: bytes, p: ProgramHeader) -> str:
    if p.filesz > PATH_MAX or p.filesz < 2:
        raise FormatError("PT_INTERP of absurd length")
    if p.offset + p.filesz > len(data):
        raise FormatError("PT_INTERP extends past the end of the file")
    raw = data[p.offset : p.offset + p.filesz]
    if raw[-1] != 0:
        raise FormatError("PT_INTERP not NUL-terminated")
    if 0 in raw[:-1]:
        raise FormatError("PT_INTERP contains a NUL byte")
    return os.fsdecode(raw[:-1])
