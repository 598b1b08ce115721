"""exec(2) of an ELF program: map it and its interpreter, build the initial stack, as Linux's binfmt_elf does.

What a program sees at its first instruction is an ABI: glibc's start-up code and ld.so read argc, argv, envp
and the auxiliary vector from exactly where Linux puts them, find their own program headers through AT_PHDR
(static glibc locates its TLS template that way), seed stack protectors from AT_RANDOM, and start the heap at
the break Linux chose. This module reproduces that layout for any 64-bit ABI; what differs between riscv64
and x86-64 (machine, hwcaps, platform string, stack size) is the `Abi` record.

Like execve, `load` first reads and validates the program and its interpreter, and only then (the point of no
return) drops the old address space: a missing file or a malformed ELF leaves the caller's process intact.

The address-space layout follows Linux with randomization off: the stack ends at the top of guest memory,
mmap_base sits a stack-sized gap (at least 128 MiB) below it and mappings grow down from there; a PIE with an
interpreter goes to ELF_ET_DYN_BASE (2/3 of the space), its interpreter and any static-pie to the mmap area.
A static-pie's heap then starts at ELF_ET_DYN_BASE, as Linux arranges so the heap does not run into mmaps.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

from isola.errors import FormatError, IsolaError, NotFoundError, PermissionDeniedError, UsageError
from isola.linux.elf import ET_DYN, ET_EXEC, PHDR, PT_PHDR, ElfFile, parse
from isola.linux.guest import PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, GuestMemory, SyscallError
from isola.linux.mm import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_PRIVATE,
    AddressSpace,
    page_up,
)

# <uapi/linux/auxvec.h>
AT_NULL = 0
AT_PHDR = 3
AT_PHENT = 4
AT_PHNUM = 5
AT_PAGESZ = 6
AT_BASE = 7
AT_FLAGS = 8
AT_ENTRY = 9
AT_UID = 11
AT_EUID = 12
AT_GID = 13
AT_EGID = 14
AT_PLATFORM = 15
AT_HWCAP = 16
AT_CLKTCK = 17
AT_SECURE = 23
AT_RANDOM = 25
AT_HWCAP2 = 26
AT_EXECFN = 31

CLOCK_TICKS = 100  # USER_HZ, what times() counts in on every Linux ABI
MIN_GAP = 128 << 20  # Linux keeps at least this much between the stack top and mmap_base
STACK_GUARD_GAP = 256 * PAGE_SIZE
MAX_ARG_STRLEN = 32 * PAGE_SIZE  # Linux's limit on one argument or environment string


class ExecAbi(Protocol):
    """What exec needs to know about an architecture; `isola.linux.abi` ABIs provide it. Pages are
    `guest.PAGE_SIZE` on every ABI isola runs."""

    @property
    def elf_machine(self) -> int: ...  # e_machine the CPU executes
    @property
    def hwcap(self) -> int: ...  # AT_HWCAP
    @property
    def hwcap2(self) -> int | None: ...  # AT_HWCAP2, if the ABI's kernel defines it
    @property
    def platform(self) -> str | None: ...  # AT_PLATFORM
    @property
    def stack_size(self) -> int: ...  # the stack mapped for the program


class Credentials(NamedTuple):
    uid: int
    euid: int
    gid: int
    egid: int

    @classmethod
    def of_host(cls) -> Credentials:
        return cls(os.getuid(), os.geteuid(), os.getgid(), os.getegid())


class LoadedProgram(NamedTuple):
    entry: int  # the first pc: the interpreter's entry if there is one, else the program's
    sp: int  # 16-byte aligned, pointing at argc
    brk: int  # the initial program break
    load_bias: int  # added to the program's p_vaddr (0 for ET_EXEC)
    interp_base: int  # where the interpreter was loaded (AT_BASE), 0 without one
    phdr: int  # AT_PHDR
    path: str  # the host file loaded
    execfn: str  # the name the program was executed by (AT_EXECFN)
    elf: ElfFile
    interp_path: str | None  # the host file loaded as interpreter
    auxv: tuple[tuple[int, int], ...]  # as written to the stack, without the closing AT_NULL


class NotExecutableError(FormatError):
    """The path names something exec refuses before reading it: a directory, a device, a file without x bits."""


class ArgumentListTooLongError(UsageError):
    """argv and envp do not fit the stack (execve's E2BIG)."""


def exec_errno(err: IsolaError) -> int:
    """The errno execve(2) fails with when `load` raised `err`."""
    if isinstance(err, ArgumentListTooLongError):
        return errno.E2BIG
    if isinstance(err, NotFoundError):
        return errno.ENOENT
    if isinstance(err, NotExecutableError | PermissionDeniedError):
        return errno.EACCES
    if isinstance(err, FormatError):
        return errno.ENOEXEC
    return errno.EINVAL


def resolve_in_sysroot(sysroot: Path | None, path: str) -> str:
    """qemu-user's `-L` rule: an absolute path means SYSROOT+path if that exists, else the host's path.

    Debian's unpacked libc6 has no /lib -> usr/lib symlink (merged /usr comes from another package), yet
    PT_INTERP says /lib/ld-linux-...; so /lib, /lib64, /bin and /sbin are also looked up under SYSROOT/usr.
    Symlinks inside the sysroot resolve on the host, so an absolute one leaves it, as under qemu.
    """
    if sysroot is None or not path.startswith("/"):
        return path
    candidates = [path]
    if path.startswith(("/lib/", "/lib64/", "/bin/", "/sbin/")):
        candidates.append("/usr" + path)
    for candidate in candidates:
        full = f"{sysroot}{candidate}"
        if os.path.exists(full):
            return full
    return path


def new_address_space(mem: GuestMemory, abi: ExecAbi) -> AddressSpace:
    """An empty address space over `mem` with Linux's mmap_base for a stack of `abi.stack_size`."""
    gap = min(max(abi.stack_size + STACK_GUARD_GAP, MIN_GAP), mem.size // 6 * 5)
    return AddressSpace(mem, mmap_base=_page_down(mem.size - gap))


def load(
    aspace: AddressSpace,
    path: str,
    argv: Sequence[str | bytes],
    envp: Sequence[str | bytes],
    *,
    abi: ExecAbi,
    sysroot: Path | None = None,
    execfn: str | None = None,
    creds: Credentials | None = None,
    random: bytes | None = None,
) -> LoadedProgram:
    """Replace the contents of `aspace` with the program at host path `path`, ready to run.

    `execfn` is the name the program was executed by (default `path`); `random` the 16 AT_RANDOM bytes
    (default fresh ones). Raises NotFoundError, NotExecutableError, PermissionDeniedError, FormatError,
    ArgumentListTooLongError or (a NUL in a string) UsageError, with the path in the message; `exec_errno`
    turns them into execve's errno. Every check Linux makes before its point of no return is made before
    `aspace` is touched. The few failures past it (an image that cannot be placed) raise FormatError and
    leave `aspace` empty: `not aspace.vmas` then tells the caller to kill the process, as Linux would.
    """
    mem = aspace.mem
    data = _read(path, path, mem.size)
    exe = _parse(data, path, abi)
    interp: _Interp | None = None
    if exe.interp is not None:
        host = resolve_in_sysroot(sysroot, exe.interp)
        if not os.path.exists(host):
            where = f"sysroot {sysroot}" if sysroot else "no sysroot given"
            raise NotFoundError(f"{path}: interpreter {exe.interp} not found ({where})")
        what = f"{host} (interpreter of {path})"
        interp_data = _read(host, what, mem.size)
        interp = _Interp(exe.interp, host, interp_data, _parse(interp_data, what, abi))
    name = execfn if execfn is not None else path
    args, env, name_bytes = [_encode(a) for a in argv], [_encode(e) for e in envp], _encode(name)
    arg_bytes = sum(len(s) + 1 + 8 for s in [*args, *env, name_bytes])  # strings and their pointers
    if arg_bytes > abi.stack_size // 4:
        raise ArgumentListTooLongError(f"{path}: argument list too long ({arg_bytes} bytes)")
    stack_bottom = mem.size - abi.stack_size
    dyn_base = _page_down(mem.size // 3 * 2)
    lo, hi = _extent(exe)
    static_pie = exe.type == ET_DYN and interp is None
    bias = 0 if exe.type == ET_EXEC or static_pie else (dyn_base & ~(_max_align(exe) - 1)) - lo
    if not static_pie and (lo + bias < aspace.min_addr or hi + bias > stack_bottom):
        raise FormatError(
            f"{path}: segments at {lo + bias:#x}-{hi + bias:#x} do not fit in guest memory "
            f"(usable {aspace.min_addr:#x}-{stack_bottom:#x})"
        )

    # -- the point of no return: from here a failure leaves the process without an image ------------------
    aspace.clear()
    try:
        stack_prot = PROT_READ | PROT_WRITE | (PROT_EXEC if exe.executable_stack else 0)
        flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_GROWSDOWN
        aspace.mmap(stack_bottom, abi.stack_size, stack_prot, flags, name="[stack]")
        if static_pie:
            bias = _place(aspace, exe, path) - lo
        _map_segments(aspace, exe, data, bias, os.path.abspath(path), path)
        entry = exe.entry + bias
        interp_base = 0
        if interp is not None:
            if interp.elf.type == ET_DYN:
                interp_base = _place(aspace, interp.elf, interp.host) - _extent(interp.elf)[0]
            _map_segments(aspace, interp.elf, interp.data, interp_base, interp.name, interp.host)
            entry = interp.elf.entry + interp_base
    except FormatError:
        aspace.clear()
        raise
    brk = dyn_base if static_pie else page_up(hi + bias)
    aspace.set_brk_start(brk)

    phdr = _phdr_address(exe, bias)
    ids = creds or Credentials.of_host()
    auxv = [
        (AT_HWCAP, abi.hwcap),
        (AT_PAGESZ, PAGE_SIZE),
        (AT_CLKTCK, CLOCK_TICKS),
        (AT_PHDR, phdr),
        (AT_PHENT, PHDR.size),
        (AT_PHNUM, len(exe.phdrs)),
        (AT_BASE, interp_base),
        (AT_FLAGS, 0),
        (AT_ENTRY, exe.entry + bias),
        (AT_UID, ids.uid),
        (AT_EUID, ids.euid),
        (AT_GID, ids.gid),
        (AT_EGID, ids.egid),
        (AT_SECURE, int(ids.uid != ids.euid or ids.gid != ids.egid)),
        (AT_RANDOM, 0),  # the addresses of what the stack holds are filled in by _build_stack
        *([(AT_HWCAP2, abi.hwcap2)] if abi.hwcap2 is not None else []),
        (AT_EXECFN, 0),
        *([(AT_PLATFORM, 0)] if abi.platform is not None else []),
    ]
    rand = random if random is not None else os.urandom(16)
    if len(rand) != 16:
        raise ValueError("AT_RANDOM needs exactly 16 bytes")
    sp, blob, auxv = _build_stack(mem.size, args, env, name_bytes, abi.platform, rand, auxv)
    mem.poke(sp, blob)
    interp_host = interp.host if interp is not None else None
    return LoadedProgram(entry, sp, brk, bias, interp_base, phdr, path, name, exe, interp_host, tuple(auxv))


class _Interp(NamedTuple):
    name: str  # PT_INTERP, as the program names it
    host: str  # the file read
    data: bytes
    elf: ElfFile


def _page_down(n: int) -> int:
    return n & ~(PAGE_SIZE - 1)


def _encode(s: str | bytes) -> bytes:
    raw = os.fsencode(s)
    if b"\0" in raw:
        raise UsageError(f"argument or environment string contains a NUL byte: {raw[:40]!r}")
    if len(raw) >= MAX_ARG_STRLEN:
        raise ArgumentListTooLongError(f"argument or environment string of {len(raw)} bytes is too long")
    return raw


def _read(path: str, what: str, limit: int) -> bytes:
    """The whole file, after the checks exec makes on the path itself."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise NotExecutableError(f"{what}: is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise NotExecutableError(f"{what}: not a regular file")
        if not st.st_mode & 0o111:
            raise NotExecutableError(f"{what}: not executable")
        if st.st_size > limit:
            raise FormatError(f"{what}: {st.st_size} bytes, larger than guest memory")
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        raise NotFoundError(f"{what}: no such file") from None
    except PermissionError:
        raise PermissionDeniedError(f"{what}: permission denied") from None
    except (OSError, ValueError) as e:
        raise FormatError(f"{what}: cannot be read ({e})") from None


def _parse(data: bytes, what: str, abi: ExecAbi) -> ElfFile:
    try:
        return parse(data, machine=abi.elf_machine)
    except FormatError as e:
        raise FormatError(f"{what}: {e.message}") from None


def _extent(elf: ElfFile) -> tuple[int, int]:
    """The page-aligned range the PT_LOADs span, before relocation."""
    loads = elf.loads
    return _page_down(loads[0].vaddr), page_up(max(p.end for p in loads))


def _max_align(elf: ElfFile) -> int:
    """The largest power-of-two p_align of the PT_LOADs, at least a page (Linux ignores other values)."""
    aligns = [p.align for p in elf.loads if p.align & (p.align - 1) == 0 and p.align <= MIN_GAP]
    return max([PAGE_SIZE, *aligns])


def _place(aspace: AddressSpace, elf: ElfFile, what: str) -> int:
    """Where an ET_DYN image goes when nothing asks for an address: the mmap area."""
    lo, hi = _extent(elf)
    try:
        return aspace.unmapped_area(hi - lo, align=_max_align(elf))
    except SyscallError:
        raise FormatError(f"{what}: {hi - lo:#x} bytes of segments do not fit in guest memory") from None


def _map_segments(aspace: AddressSpace, elf: ElfFile, data: bytes, bias: int, name: str, what: str) -> None:
    """Map each PT_LOAD at p_vaddr + bias and copy its file bytes in; the rest of its pages stays zero (bss).

    Pages backed by the file are named after it, the bss pages past them are anonymous, as /proc/self/maps
    shows on Linux. Two segments may share a page (never a byte: `parse` checks): it gets both protections.
    """
    mapped_to = 0
    prev_prot = 0
    view = memoryview(data)
    for p in elf.loads:
        start, file_end, end = _page_down(bias + p.vaddr), page_up(bias + p.vaddr + p.filesz), page_up(bias + p.end)
        offset = _page_down(p.offset)
        try:
            if start < mapped_to:
                aspace.mprotect(start, PAGE_SIZE, prev_prot | p.prot)
                offset += mapped_to - start
                start = mapped_to
            if start < file_end:
                flags = MAP_PRIVATE | MAP_FIXED_NOREPLACE
                aspace.mmap(start, file_end - start, p.prot, flags, name=name, offset=offset)
            if max(start, file_end) < end:
                flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
                aspace.mmap(max(start, file_end), end - max(start, file_end), p.prot, flags)
        except SyscallError as e:
            reason = "collides with another mapping" if e.errno == errno.EEXIST else "cannot be mapped"
            raise FormatError(f"{what}: segment at {bias + p.vaddr:#x} {reason}") from None
        aspace.mem.poke(bias + p.vaddr, view[p.offset : p.offset + p.filesz])
        mapped_to, prev_prot = max(mapped_to, end), p.prot


def _phdr_address(elf: ElfFile, bias: int) -> int:
    """AT_PHDR: PT_PHDR says where the table is mapped; without it, find the PT_LOAD that holds e_phoff.
    0 when no segment maps the table (Linux then passes a meaningless value; nothing can use it)."""
    pt = elf.find(PT_PHDR)
    if pt is not None:
        return bias + pt.vaddr
    table = len(elf.phdrs) * PHDR.size
    for p in elf.loads:
        if p.offset <= elf.phoff and elf.phoff + table <= p.offset + p.filesz:
            return bias + p.vaddr + elf.phoff - p.offset
    return 0


def _build_stack(
    top: int,
    argv: list[bytes],
    envp: list[bytes],
    execfn: bytes,
    platform: str | None,
    rand: bytes,
    auxv: list[tuple[int, int]],
) -> tuple[int, bytes, list[tuple[int, int]]]:
    """Lay out the initial stack below `top`; returns (sp, the bytes from sp to top, auxv with addresses).

    From the top down, as Linux builds it: a zero word; the execfn string; the environment strings, then the
    argument strings (so argv[0] is lowest); alignment to 16; the platform string; the 16 AT_RANDOM bytes;
    padding chosen so that sp ends 16-byte aligned; auxv ending with AT_NULL; envp and NULL; argv and NULL;
    argc at sp.
    """
    p = top - 8
    strings: list[tuple[int, bytes]] = []

    def push(s: bytes) -> int:
        nonlocal p
        p -= len(s)
        strings.append((p, s))
        return p

    execfn_at = push(execfn + b"\0")
    env_at = [push(s + b"\0") for s in reversed(envp)][::-1]
    arg_at = [push(s + b"\0") for s in reversed(argv)][::-1]
    p &= ~15
    addrs = {AT_EXECFN: execfn_at, AT_PLATFORM: push(platform.encode() + b"\0") if platform else 0}
    addrs[AT_RANDOM] = push(rand)
    auxv = [(key, addrs.get(key, value)) for key, value in auxv]
    words = [len(argv), *arg_at, 0, *env_at, 0, *(x for pair in auxv for x in pair), AT_NULL, 0]
    sp = (p - 8 * len(words)) & ~15
    blob = bytearray(top - sp)
    struct.pack_into(f"<{len(words)}Q", blob, 0, *words)
    for at, s in strings:
        blob[at - sp : at - sp + len(s)] = s
    return sp, bytes(blob), auxv
