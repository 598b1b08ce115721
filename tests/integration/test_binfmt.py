"""exec of real Debian riscv64 programs into emulator memory, checked by reading guest memory back, and the
initial stack compared with what the host's own kernel builds for an x86-64 program."""

from __future__ import annotations

import errno
import functools
import itertools
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isola import paths
from isola.assets import manifest
from isola.emu.memory import FlatMemory
from isola.errors import FormatError, IsolaError, NotFoundError, UsageError
from isola.linux import binfmt, elf
from isola.linux.abi.riscv64 import ABI as RISCV64
from isola.linux.binfmt import (
    AT_BASE,
    AT_CLKTCK,
    AT_EGID,
    AT_ENTRY,
    AT_EUID,
    AT_EXECFN,
    AT_FLAGS,
    AT_GID,
    AT_HWCAP,
    AT_HWCAP2,
    AT_PAGESZ,
    AT_PHDR,
    AT_PHENT,
    AT_PHNUM,
    AT_PLATFORM,
    AT_RANDOM,
    AT_SECURE,
    AT_UID,
    ArgumentListTooLongError,
    Credentials,
    LoadedProgram,
    NotExecutableError,
)
from isola.linux.elf import EM_X86_64
from isola.linux.guest import PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, GuestMemory
from isola.linux.mm import AddressSpace, page_up
from tests.unit.test_elf import DATA, STACK, TEXT, build_elf, dynamic_elf, static_elf


@dataclass(frozen=True)
class _X86_64:
    """The exec facts of x86-64 (CPUID.1:EDX and FSGSBASE of an ordinary CPU), until isola has that ABI."""

    elf_machine: int = EM_X86_64
    hwcap: int = 0x178BFBFF
    hwcap2: int | None = 0x2
    platform: str | None = "x86_64"
    stack_size: int = 8 << 20


X86_64 = _X86_64()
rv_load = functools.partial(binfmt.load, abi=RISCV64)  # a call may still pass abi=X86_64

GIB4 = 1 << 32
RX, RW = PROT_READ | PROT_EXEC, PROT_READ | PROT_WRITE
RANDOM = bytes(range(0xA0, 0xB0))
USER = Credentials(uid=1000, euid=1000, gid=100, egid=100)
RISCV_AUXV = [AT_HWCAP, AT_PAGESZ, AT_CLKTCK, AT_PHDR, AT_PHENT, AT_PHNUM, AT_BASE, AT_FLAGS, AT_ENTRY]
RISCV_AUXV += [AT_UID, AT_EUID, AT_GID, AT_EGID, AT_SECURE, AT_RANDOM, AT_EXECFN]


def asset(arch: str, role: str) -> Path:
    cache = paths.assets_dir()
    try:
        found = manifest.load(cache).artifact(cache, arch, role)
    except NotFoundError as e:
        pytest.skip(f"{arch} {role} is not cached: {e}")
    if not found.exists():
        pytest.skip(f"{arch} {role} is in the manifest but missing on disk: {found}")
    return found


@pytest.fixture
def aspace() -> AddressSpace:
    return binfmt.new_address_space(FlatMemory(GIB4), RISCV64)


@pytest.fixture(scope="module")
def riscv_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A C program built dynamic and static, and a freestanding static-pie (Debian's cross libc6-dev has no
    rcrt1.o, so glibc cannot be linked static-pie)."""
    cc = shutil.which("riscv64-linux-gnu-gcc")
    if cc is None:
        pytest.skip("riscv64-linux-gnu-gcc is not installed (Debian package gcc-riscv64-linux-gnu)")
    out = tmp_path_factory.mktemp("riscv")
    (out / "hello.c").write_text('#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n')
    (out / "start.S").write_text(
        ".globl _start\n_start:\n li a0, 0\n li a7, 93\n ecall\n.data\n.word 42\n.bss\n.space 8192\n"
    )
    builds = {
        "dynamic": ["-O2", "hello.c"],
        "static": ["-O2", "-static", "hello.c"],
        "static-pie": ["-nostdlib", "-static-pie", "-fPIE", "-Wl,--no-dynamic-linker", "start.S"],
    }
    for name, args in builds.items():
        subprocess.run([cc, *args, "-o", name], cwd=out, check=True, capture_output=True)
    return {name: out / name for name in builds}


def u64(mem: GuestMemory, addr: int) -> int:
    value: int = struct.unpack("<Q", mem.read(addr, 8))[0]
    return value


def read_stack(mem: GuestMemory, sp: int) -> tuple[list[bytes], list[bytes], list[tuple[int, int]]]:
    """argv, envp and auxv as a program finds them from its initial sp."""
    argc = u64(mem, sp)
    argv = [mem.read_cstring(u64(mem, sp + 8 + 8 * i)) for i in range(argc)]
    assert u64(mem, sp + 8 + 8 * argc) == 0
    p = sp + 16 + 8 * argc
    envp = []
    while ptr := u64(mem, p):
        envp.append(mem.read_cstring(ptr))
        p += 8
    auxv = []
    p += 8
    while key := u64(mem, p):
        auxv.append((key, u64(mem, p + 8)))
        p += 16
    assert u64(mem, p + 8) == 0
    return argv, envp, auxv


def check_segments(aspace: AddressSpace, path: Path, e: elf.ElfFile, bias: int) -> None:
    """Every PT_LOAD is mapped with its protection, holds its file bytes, and is zero past them."""
    data = path.read_bytes()
    mem = aspace.mem
    for p in e.loads:
        start = bias + p.vaddr
        assert mem.prot_at(start) == p.prot
        assert mem.prot_at(page_up(start + p.memsz) - 1) == p.prot
        mem.protect(start & ~(PAGE_SIZE - 1), page_up(start + p.memsz) - (start & ~(PAGE_SIZE - 1)), PROT_READ)
        assert mem.read(start, p.filesz) == data[p.offset : p.offset + p.filesz]
        assert mem.read(start + p.filesz, page_up(start + p.memsz) - start - p.filesz).count(0) == (
            page_up(start + p.memsz) - start - p.filesz
        )
        mem.protect(start & ~(PAGE_SIZE - 1), page_up(start + p.memsz) - (start & ~(PAGE_SIZE - 1)), p.prot)


def check_phdr(mem: GuestMemory, prog: LoadedProgram) -> None:
    table = prog.elf.phentsize * len(prog.elf.phdrs)
    assert mem.read(prog.phdr, table) == Path(prog.path).read_bytes()[prog.elf.phoff : prog.elf.phoff + table]


# -- real programs ------------------------------------------------------------------------------------------


def test_static_busybox(aspace: AddressSpace) -> None:
    busybox = asset("riscv64", "busybox")
    env = ["PATH=/bin:/usr/bin", "LANG=C.UTF-8"]
    prog = rv_load(aspace, str(busybox), ["busybox", "echo", "hi"], env, creds=USER, random=RANDOM)
    mem = aspace.mem
    e = prog.elf
    assert (e.type, prog.load_bias, prog.interp_base, prog.interp_path) == (elf.ET_EXEC, 0, 0, None)
    assert prog.entry == e.entry and mem.prot_at(prog.entry) == RX
    check_segments(aspace, busybox, e, 0)
    assert prog.brk == page_up(max(p.end for p in e.loads)) == aspace.brk(0)

    assert prog.sp % 16 == 0
    argv, envp, auxv = read_stack(mem, prog.sp)
    assert argv == [b"busybox", b"echo", b"hi"]
    assert envp == [s.encode() for s in env]
    assert [k for k, _ in auxv] == RISCV_AUXV
    assert list(prog.auxv) == auxv
    a = dict(auxv)
    assert a[AT_HWCAP] == 0x112D  # I M A F D C
    assert (a[AT_PAGESZ], a[AT_CLKTCK], a[AT_PHENT], a[AT_PHNUM]) == (4096, 100, 56, len(e.phdrs))
    assert (a[AT_BASE], a[AT_FLAGS], a[AT_ENTRY], a[AT_SECURE]) == (0, 0, e.entry, 0)
    assert (a[AT_UID], a[AT_EUID], a[AT_GID], a[AT_EGID]) == (1000, 1000, 100, 100)
    assert a[AT_PHDR] == prog.phdr
    check_phdr(mem, prog)
    assert mem.read(a[AT_RANDOM], 16) == RANDOM
    assert mem.read_cstring(a[AT_EXECFN]) == str(busybox).encode()

    # the strings sit at the top of the stack, execfn highest, under one zero word
    top = mem.size
    assert mem.read(top - 8, 8) == bytes(8)
    assert a[AT_EXECFN] == top - 8 - len(str(busybox)) - 1
    strings = [u64(mem, prog.sp + 8 * i) for i in (1, 2, 3, 5, 6)] + [a[AT_EXECFN]]  # argv, envp, execfn
    lengths = [len(s) + 1 for s in [*argv, *envp]]
    assert [b - a for a, b in itertools.pairwise(strings)] == lengths  # packed, argv[0] lowest
    assert 0 <= strings[0] - (a[AT_RANDOM] + 16) < 16  # below them: 16-byte alignment, then AT_RANDOM
    stack = aspace.find(prog.sp)
    assert stack is not None and (stack.start, stack.end, stack.prot, stack.name) == (
        top - (8 << 20),
        top,
        RW,
        "[stack]",
    )
    maps = aspace.maps_text()
    assert f"00010000-{page_up(e.loads[0].end):08x} r-xp 00000000 00:00 0" in maps
    assert maps.rstrip().endswith("[stack]")


def test_dynamic_program_gets_its_interpreter_from_the_sysroot(
    aspace: AddressSpace, riscv_programs: dict[str, Path]
) -> None:
    sysroot = asset("riscv64", "sysroot")
    program = riscv_programs["dynamic"]
    prog = rv_load(aspace, str(program), ["hello"], [], sysroot=sysroot, random=RANDOM)
    mem = aspace.mem
    e = prog.elf
    assert e.type == elf.ET_DYN and e.interp == "/lib/ld-linux-riscv64-lp64d.so.1"
    assert prog.interp_path is not None
    assert Path(prog.interp_path).resolve() == (sysroot / "usr/lib/riscv64-linux-gnu/ld-linux-riscv64-lp64d.so.1")
    ld = elf.parse(Path(prog.interp_path).read_bytes(), machine=elf.EM_RISCV)

    assert prog.load_bias == (mem.size // 3 * 2) & ~(PAGE_SIZE - 1)  # ELF_ET_DYN_BASE
    assert prog.interp_base == aspace.mmap_base - page_up(ld.loads[-1].end)  # top-down below mmap_base
    assert prog.entry == ld.entry + prog.interp_base
    assert prog.brk == page_up(prog.load_bias + e.loads[-1].end)
    check_segments(aspace, program, e, prog.load_bias)
    check_segments(aspace, Path(prog.interp_path), ld, prog.interp_base)
    interp_vma = aspace.find(prog.interp_base)
    assert interp_vma is not None and interp_vma.name == "/lib/ld-linux-riscv64-lp64d.so.1" and interp_vma.prot == RX
    assert mem.read(prog.interp_base, 4) == b"\x7fELF"

    _, _, auxv = read_stack(mem, prog.sp)
    a = dict(auxv)
    assert a[AT_BASE] == prog.interp_base
    assert a[AT_ENTRY] == e.entry + prog.load_bias
    pt_phdr = e.find(elf.PT_PHDR)
    assert pt_phdr is not None and a[AT_PHDR] == prog.load_bias + pt_phdr.vaddr
    check_phdr(mem, prog)


def test_static_glibc_program_finds_its_program_headers(aspace: AddressSpace, riscv_programs: dict[str, Path]) -> None:
    program = riscv_programs["static"]
    prog = rv_load(aspace, str(program), ["hello"], [])
    e = prog.elf
    assert e.type == elf.ET_EXEC and e.find(elf.PT_PHDR) is None and e.find(elf.PT_TLS) is not None
    check_segments(aspace, program, e, 0)
    assert prog.phdr == e.loads[0].vaddr + e.phoff  # through the PT_LOAD that holds e_phoff
    check_phdr(aspace.mem, prog)


def test_static_pie_goes_to_the_mmap_area_and_its_heap_to_dyn_base(
    aspace: AddressSpace, riscv_programs: dict[str, Path]
) -> None:
    program = riscv_programs["static-pie"]
    prog = rv_load(aspace, str(program), ["spie"], [])
    e = prog.elf
    assert e.type == elf.ET_DYN and e.interp is None
    assert prog.load_bias % PAGE_SIZE == 0 and aspace.mmap_base - 0x10000 <= prog.load_bias < aspace.mmap_base
    assert prog.entry == e.entry + prog.load_bias and prog.interp_base == 0
    assert prog.brk == (aspace.mem.size // 3 * 2) & ~(PAGE_SIZE - 1)
    check_segments(aspace, program, e, prog.load_bias)
    check_phdr(aspace.mem, prog)
    assert aspace.brk(prog.brk + 5 * PAGE_SIZE) == prog.brk + 5 * PAGE_SIZE


def test_the_dynamic_linker_runs_as_a_program(aspace: AddressSpace) -> None:
    ld_so = asset("riscv64", "sysroot") / "usr/lib/riscv64-linux-gnu/ld-linux-riscv64-lp64d.so.1"
    prog = rv_load(aspace, str(ld_so), ["ld.so", "--help"], [])
    assert prog.elf.type == elf.ET_DYN and prog.interp_base == 0 and prog.load_bias > 0
    check_segments(aspace, ld_so, prog.elf, prog.load_bias)


def test_x86_64_busybox_with_the_x86_64_abi(aspace: AddressSpace) -> None:
    busybox = asset("amd64", "busybox")
    prog = rv_load(aspace, str(busybox), ["sh"], [], abi=X86_64)
    _, _, auxv = read_stack(aspace.mem, prog.sp)
    a = dict(auxv)
    assert aspace.mem.read_cstring(a[AT_PLATFORM]) == b"x86_64"
    assert a[AT_HWCAP2] == 2 and [k for k, _ in auxv][-3:] == [AT_HWCAP2, AT_EXECFN, AT_PLATFORM]
    check_segments(aspace, busybox, prog.elf, prog.load_bias)
    with pytest.raises(FormatError, match=r"ELF for x86-64, expected RISC-V"):
        rv_load(aspace, str(busybox), ["sh"], [], abi=RISCV64)


# -- the host kernel as the reference -----------------------------------------------------------------------

DUMP_C = r"""
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv, char **envp) {
    unsigned long top = 0, lo; char line[512];
    FILE *f = fopen("/proc/self/maps", "r");
    while (fgets(line, sizeof line, f)) if (strstr(line, "[stack]")) sscanf(line, "%lx-%lx", &lo, &top);
    char **e = envp; while (*e) e++;
    printf("sp %lu\n", top - ((unsigned long)argv - 8));
    for (int i = 0; i < argc; i++) printf("arg %lu\n", top - (unsigned long)argv[i]);
    for (char **p = envp; *p; p++) printf("env %lu\n", top - (unsigned long)*p);
    for (unsigned long *aux = (unsigned long *)(e + 1); aux[0]; aux += 2)
        if (aux[0] == 15 || aux[0] == 25 || aux[0] == 31) printf("aux %lu %lu\n", aux[0], top - aux[1]);
        else printf("aux %lu\n", aux[0]);
    return 0;
}
"""
# Entries Linux x86-64 adds that isola does not: the vDSO, the signal frame size, rseq, newer hwcaps.
KERNEL_ONLY = {33, 51, 27, 28, 29, 30}


def stack_layout(lines: list[str]) -> tuple[int, list[int], list[int], list[int], dict[int, int]]:
    sp = 0
    args: list[int] = []
    envs: list[int] = []
    keys: list[int] = []
    ptrs: dict[int, int] = {}
    for line in lines:
        kind, *nums = line.split()
        if kind == "sp":
            sp = int(nums[0])
        elif kind in ("arg", "env"):
            (args if kind == "arg" else envs).append(int(nums[0]))
        else:
            keys.append(int(nums[0]))
            if len(nums) > 1:
                ptrs[int(nums[0])] = int(nums[1])
    return sp, args, envs, keys, ptrs


def test_initial_stack_matches_the_host_kernel(tmp_path: Path) -> None:
    """The same x86-64 program, argv and environment: the host kernel's stack (ASLR off) and ours agree on
    every string's distance from the stack top, on the auxv order, and on the rule that places sp."""
    gcc = shutil.which("gcc")
    if gcc is None or os.uname().machine != "x86_64":
        pytest.skip("needs an x86-64 host with gcc")
    (tmp_path / "dump.c").write_text(DUMP_C)
    built = subprocess.run([gcc, "-O2", "-static", "dump.c", "-o", "dump"], cwd=tmp_path, capture_output=True)
    if built.returncode:
        pytest.skip(f"cannot link a static x86-64 program: {built.stderr.decode()[-200:]}")
    program = str(tmp_path / "dump")
    argv, env = [program, "first", "second arg", ""], {"A": "1", "LONGER_NAME": "some value"}
    ran = subprocess.run(["setarch", "-R", *argv], env=env, capture_output=True, text=True)
    if ran.returncode:
        pytest.skip(f"setarch -R cannot disable address randomization here: {ran.stderr.strip()}")
    k_sp, k_args, k_envs, k_keys, k_ptrs = stack_layout(ran.stdout.splitlines())

    aspace = binfmt.new_address_space(FlatMemory(GIB4), X86_64)
    prog = rv_load(aspace, program, argv, [f"{k}={v}" for k, v in env.items()], abi=X86_64)
    mem, top = aspace.mem, aspace.mem.size
    args, envs, auxv = read_stack(mem, prog.sp)
    our_args = [top - u64(mem, prog.sp + 8 + 8 * i) for i in range(len(args))]
    our_envs = [top - u64(mem, prog.sp + 8 * (len(args) + 2 + i)) for i in range(len(envs))]
    assert (our_args, our_envs) == (k_args, k_envs)
    for key in (AT_EXECFN, AT_PLATFORM, AT_RANDOM):
        assert top - dict(auxv)[key] == k_ptrs[key]
    ours = [k for k, _ in auxv]
    assert ours == [k for k in k_keys if k not in KERNEL_ONLY]
    assert set(k_keys) - set(ours) <= KERNEL_ONLY

    def sp_rule(nkeys: int) -> int:
        words = 1 + len(argv) + 1 + len(env) + 1 + 2 * (nkeys + 1)
        return (k_ptrs[AT_RANDOM] + 8 * words + 15) & ~15

    assert k_sp == sp_rule(len(k_keys))
    assert top - prog.sp == sp_rule(len(ours))


def test_auxv_keys_are_ones_the_host_kernel_gives() -> None:
    """The keys `LD_SHOW_AUXV=1 /bin/true` lists (the host's ld.so printing the kernel's auxv) include ours."""
    shown = subprocess.run(["/bin/true"], env={"LD_SHOW_AUXV": "1"}, capture_output=True, text=True).stdout
    names = {line.split(":")[0] for line in shown.splitlines()}
    if os.uname().machine != "x86_64" or "AT_PHDR" not in names:
        pytest.skip("the host's ld.so does not show the auxv of an x86-64 kernel")
    by_value = {v: k for k, v in vars(binfmt).items() if k.startswith("AT_") and isinstance(v, int)}
    aspace = binfmt.new_address_space(FlatMemory(1 << 28), X86_64)
    prog = rv_load(aspace, "/bin/true", ["true"], [], abi=X86_64, sysroot=Path("/"))
    assert {by_value[k] for k, _ in prog.auxv} <= names
    assert prog.interp_base and prog.entry != prog.elf.entry + prog.load_bias


# -- synthetic programs: the corners real binaries do not reach ---------------------------------------------


def write_program(path: Path, data: bytes, mode: int = 0o755) -> str:
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


def test_segments_sharing_a_page_get_both_protections(aspace: AddressSpace, tmp_path: Path) -> None:
    data: tuple[int, int, int, int, int, int, int] = (elf.PT_LOAD, elf.PF_R | elf.PF_W, 0x800, 0x10800, 0x80, 0x900, 1)
    program = write_program(tmp_path / "prog", build_elf([TEXT, data, STACK], size=0x880))
    prog = rv_load(aspace, program, ["p"], [])
    mem = aspace.mem
    assert mem.prot_at(0x10000) == RW | PROT_EXEC and mem.prot_at(0x11000) == RW
    raw = Path(program).read_bytes()
    assert mem.read(0x10000, 0x880) == raw[:0x880]
    assert mem.read(0x10880, 0x880) == bytes(0x880)
    assert prog.brk == 0x12000
    assert [(v.start, v.end, v.offset, v.name) for v in aspace.vmas][:2] == [
        (0x10000, 0x11000, 0, program),
        (0x11000, 0x12000, 0, ""),
    ]


def test_executable_stack(aspace: AddressSpace, tmp_path: Path) -> None:
    exec_stack = (elf.PT_GNU_STACK, elf.PF_R | elf.PF_W | elf.PF_X, 0, 0, 0, 0, 16)
    prog = rv_load(aspace, write_program(tmp_path / "p", build_elf([TEXT, exec_stack])), ["p"], [])
    assert aspace.mem.prot_at(prog.sp) == RW | PROT_EXEC


def test_program_that_does_not_fit(aspace: AddressSpace, tmp_path: Path) -> None:
    high = (elf.PT_LOAD, elf.PF_R | elf.PF_X, 0, 0xFFFF0000, 0x800, 0x800, 0x1000)
    program = write_program(tmp_path / "p", build_elf([high], entry=0xFFFF0100))
    with pytest.raises(FormatError, match=r"p: segments at 0xffff0000-0xffff1000 do not fit in guest memory"):
        rv_load(aspace, program, ["p"], [])


# -- errors: one line, the path in it, and the old image intact ----------------------------------------------


@pytest.fixture
def loaded(aspace: AddressSpace, tmp_path: Path) -> Iterator[AddressSpace]:
    """`aspace` holding a program already, to show that a failed exec leaves it alone."""
    rv_load(aspace, write_program(tmp_path / "old", static_elf()), ["old"], [])
    before = aspace.maps_text()
    yield aspace
    assert aspace.maps_text() == before


def expect(
    err: type[IsolaError], code: int, aspace: AddressSpace, path: str, *, match: str, sysroot: Path | None = None
) -> None:
    with pytest.raises(err, match=match) as info:
        rv_load(aspace, path, ["x"], [], sysroot=sysroot)
    assert "\n" not in str(info.value)
    assert binfmt.exec_errno(info.value) == code


def test_missing_program(loaded: AddressSpace, tmp_path: Path) -> None:
    expect(NotFoundError, errno.ENOENT, loaded, str(tmp_path / "nope"), match=r"nope: no such file")
    expect(NotFoundError, errno.ENOENT, loaded, str(tmp_path / "old/x"), match=r"old/x: no such file")


def test_directory(loaded: AddressSpace, tmp_path: Path) -> None:
    expect(NotExecutableError, errno.EACCES, loaded, str(tmp_path), match=r"is a directory")


def test_not_executable(loaded: AddressSpace, tmp_path: Path) -> None:
    path = write_program(tmp_path / "plain", static_elf(), mode=0o644)
    expect(NotExecutableError, errno.EACCES, loaded, path, match=r"plain: not executable")
    expect(NotExecutableError, errno.EACCES, loaded, "/dev/null", match=r"/dev/null: not a regular file")


def test_not_an_elf(loaded: AddressSpace, tmp_path: Path) -> None:
    path = write_program(tmp_path / "script", b"#!/bin/sh\necho hi\n")
    expect(FormatError, errno.ENOEXEC, loaded, path, match=r"script: not an ELF file$")


def test_wrong_machine(loaded: AddressSpace) -> None:
    expect(FormatError, errno.ENOEXEC, loaded, "/bin/true", match=r"^/bin/true: ELF for x86-64, expected RISC-V$")


def test_missing_interpreter_names_it_and_the_sysroot(loaded: AddressSpace, tmp_path: Path) -> None:
    path = write_program(tmp_path / "dyn", dynamic_elf())
    (tmp_path / "root").mkdir()
    match = r"dyn: interpreter /lib/ld-linux-riscv64-lp64d.so.1 not found \(sysroot .*root\)"
    expect(NotFoundError, errno.ENOENT, loaded, path, match=match, sysroot=tmp_path / "root")


def test_broken_interpreter(loaded: AddressSpace, tmp_path: Path) -> None:
    path = write_program(tmp_path / "dyn", dynamic_elf())
    (tmp_path / "root/usr/lib").mkdir(parents=True)
    write_program(tmp_path / "root/usr/lib/ld-linux-riscv64-lp64d.so.1", b"\x7fELF junk")
    match = r"ld-linux-riscv64-lp64d.so.1 \(interpreter of .*dyn\): truncated ELF header$"
    expect(FormatError, errno.ENOEXEC, loaded, path, match=match, sysroot=tmp_path / "root")


def test_argument_list_too_long(loaded: AddressSpace, tmp_path: Path) -> None:
    path = write_program(tmp_path / "p", static_elf())
    with pytest.raises(ArgumentListTooLongError) as info:
        rv_load(loaded, path, ["p"], ["X=" + "x" * 100_000] * 30)
    assert binfmt.exec_errno(info.value) == errno.E2BIG
    with pytest.raises(ArgumentListTooLongError):
        rv_load(loaded, path, ["p", "y" * 200_000], [])


def test_resolve_in_sysroot(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/ld.so").touch()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/x").touch()
    assert binfmt.resolve_in_sysroot(tmp_path, "/lib/ld.so") == f"{tmp_path}/usr/lib/ld.so"  # merged /usr
    assert binfmt.resolve_in_sysroot(tmp_path, "/usr/lib/ld.so") == f"{tmp_path}/usr/lib/ld.so"
    assert binfmt.resolve_in_sysroot(tmp_path, "/etc/x") == f"{tmp_path}/etc/x"
    assert binfmt.resolve_in_sysroot(tmp_path, "/etc/hostname") == "/etc/hostname"  # not there: the host's
    assert binfmt.resolve_in_sysroot(tmp_path, "etc/x") == "etc/x"
    assert binfmt.resolve_in_sysroot(None, "/lib/ld.so") == "/lib/ld.so"


# -- the loader under fuzzing: nothing but the documented errors comes out --------------------------------------

LD_SO = build_elf([(elf.PT_LOAD, 5, 0, 0, 0x800, 0x800, 0x1000), DATA], entry=0x100, e_type=elf.ET_DYN)


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the program under test, with a sysroot holding a small valid interpreter."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "usr/lib").mkdir(parents=True)
    write_program(root / "usr/lib/ld-linux-riscv64-lp64d.so.1", LD_SO)
    return root


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([static_elf(), dynamic_elf(), LD_SO]),
    edits=st.lists(st.tuples(st.integers(0, 64 + 56 * 4 - 1), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 0x900)),
)
def test_fuzz_loader(fuzz_root: Path, base: bytes, edits: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(base)
    for at, value in edits:
        data[at] = value
    path = write_program(fuzz_root / "prog", bytes(data[:cut]))
    aspace = binfmt.new_address_space(FlatMemory(64 << 20), RISCV64)
    try:
        prog = rv_load(aspace, path, ["prog", "arg"], ["K=V"], sysroot=fuzz_root)
    except (FormatError, NotFoundError) as e:
        assert "\n" not in str(e) and path in str(e)
        return
    assert prog.sp % 16 == 0
    assert aspace.mem.prot_at(prog.entry) is not None
    assert read_stack(aspace.mem, prog.sp)[0] == [b"prog", b"arg"]


def test_failure_past_the_point_of_no_return_leaves_no_image(tmp_path: Path) -> None:
    huge = (elf.PT_LOAD, elf.PF_R | elf.PF_X, 0, 0, 0x800, 60 << 20, 0x1000)
    path = write_program(tmp_path / "huge", build_elf([huge], e_type=elf.ET_DYN, entry=0x100))
    aspace = binfmt.new_address_space(FlatMemory(64 << 20), RISCV64)
    rv_load(aspace, write_program(tmp_path / "old", static_elf()), ["old"], [])
    with pytest.raises(FormatError, match=r"huge: 0x3c00000 bytes of segments do not fit in guest memory"):
        rv_load(aspace, path, ["huge"], [])
    assert aspace.vmas == ()


def test_nul_in_an_argument(aspace: AddressSpace, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="NUL") as info:
        rv_load(aspace, write_program(tmp_path / "p", static_elf()), ["p", "a\0b"], [])
    assert binfmt.exec_errno(info.value) == errno.EINVAL
