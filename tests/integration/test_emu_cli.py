"""isola-emu as a user meets it: real riscv64 programs, exit statuses, faults, bad input, --stats, the cache.

Programs are compiled at test time with Debian's riscv64 cross compiler and compared with qemu-riscv64 where
a comparison means something (output, exit status, and the exact instruction count).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from isola import paths
from isola.assets import manifest
from isola.errors import NotFoundError

CC = shutil.which("riscv64-linux-gnu-gcc")
QEMU = shutil.which("qemu-riscv64")
EMU = [sys.executable, "-m", "isola.emu"]

needs_cc = pytest.mark.skipif(CC is None, reason="needs riscv64-linux-gnu-gcc (Debian: gcc-riscv64-linux-gnu)")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="needs qemu-riscv64 (Debian: qemu-user)")


def emu(*args: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*EMU, *args], capture_output=True, timeout=timeout, env=env)


def build(tmp_path: Path, name: str, source: str, *flags: str) -> Path:
    assert CC is not None
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    exe = tmp_path / name
    subprocess.run([CC, "-O2", *flags, "-o", str(exe), str(src)], check=True)
    return exe


def asset(role: str) -> Path:
    try:
        return manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "riscv64", role)
    except NotFoundError:
        pytest.skip(f"riscv64 {role} not cached: run `isola assets fetch --arch riscv64`")


HELLO = '#include <stdio.h>\nint main(int c, char **v) { printf("hello %d %s\\n", c, v[c - 1]); return 42; }\n'


FREESTANDING = r"""
static long sys3(long n, long a, long b, long c) {
    register long a0 asm("a0") = a, a1 asm("a1") = b, a2 asm("a2") = c, a7 asm("a7") = n;
    asm volatile("ecall" : "+r"(a0) : "r"(a1), "r"(a2), "r"(a7) : "memory");
    return a0;
}
static unsigned long mix(unsigned long s, int i) { return (s ^ (s << 7) ^ (s >> 3)) + (unsigned long)i; }
void _start(void) {
    static unsigned char buf[4096];
    unsigned long s = 1;
    double d = 1.0;
    for (int i = 0; i < 20000; i++) {
        s = mix(s, i);
        buf[s & 4095] += (unsigned char)i;
        if (s & 1) d = d * 1.0000001 + 0.5; else d -= 0.25;
    }
    for (int i = 0; i < 4096; i++) s += buf[i];
    char out[17];
    unsigned long v = s ^ (unsigned long)d;
    for (int i = 15; i >= 0; i--) { out[i] = "0123456789abcdef"[v & 15]; v >>= 4; }
    out[16] = '\n';
    sys3(64, 1, (long)out, 17);
    sys3(93, 3, 0, 0);
}
"""


@needs_cc
@needs_qemu
def test_instruction_counts_are_exact(tmp_path: Path) -> None:
    """A freestanding program executes exactly the same instructions under any correct emulator; qemu's
    per-instruction exec trace counts them. (A glibc program may not: qemu-user answers set_robust_list with
    ENOSYS where Linux answers 0, and glibc takes another path.)"""
    exe = build(tmp_path, "count", FREESTANDING, "-static", "-nostdlib", "-ffreestanding")
    ours = emu("--stats", str(exe))
    assert QEMU is not None
    trace = tmp_path / "trace"
    theirs = subprocess.run(
        [QEMU, "-singlestep", "-d", "exec,nochain", "-D", str(trace), str(exe)], capture_output=True
    )
    assert ours.stdout == theirs.stdout and len(ours.stdout) == 17
    assert ours.returncode == theirs.returncode == 3
    counted = re.search(rb"(\d+) instructions", ours.stderr)
    assert counted is not None, ours.stderr
    qemu_count = sum(1 for line in trace.read_text().splitlines() if line.startswith("Trace"))
    assert int(counted.group(1)) == qemu_count > 100_000


@needs_cc
@needs_qemu
def test_static_hello_matches_qemu(tmp_path: Path) -> None:
    exe = build(tmp_path, "hello", HELLO, "-static")
    assert QEMU is not None
    ours = emu(str(exe), "a", "b")
    theirs = subprocess.run([QEMU, str(exe), "a", "b"], capture_output=True)
    assert ours.stdout == theirs.stdout == b"hello 3 b\n"
    assert ours.returncode == theirs.returncode == 42


@needs_cc
def test_a_null_dereference_is_one_line_and_139(tmp_path: Path) -> None:
    exe = build(tmp_path, "segv", "int main(void) { volatile int *p = 0; return *p; }\n", "-static")
    result = emu(str(exe))
    assert result.returncode == 128 + 11
    err = result.stderr.decode()
    assert re.fullmatch(r"isola-emu: guest SIGSEGV at pc=0x[0-9a-f]+ addr=0x0\n", err), err


@needs_cc
def test_a_guest_handler_catches_its_own_segv(tmp_path: Path) -> None:
    source = r"""
    #include <signal.h>
    #include <unistd.h>
    #include <stdlib.h>
    static void on_segv(int sig) { write(1, "caught\n", 7); _exit(7); }
    int main(void) { signal(SIGSEGV, on_segv); volatile int *p = (int *)16; return *p; }
    """
    exe = build(tmp_path, "catch", source, "-static")
    result = emu(str(exe))
    assert (result.stdout, result.returncode) == (b"caught\n", 7)


@pytest.mark.parametrize(
    ("content", "code", "words"),
    [
        (b"#!/bin/sh\necho no\n", 126, "not an ELF"),
        (b"\x7fELF" + b"\x00" * 60, 126, ""),
        (None, 127, ""),
    ],
    ids=["script", "truncated-elf", "missing"],
)
def test_bad_programs_are_one_line_and_126_or_127(tmp_path: Path, content: bytes | None, code: int, words: str) -> None:
    target = tmp_path / "prog"
    if content is not None:
        target.write_bytes(content)
        target.chmod(0o755)
    result = emu(str(target))
    err = result.stderr.decode()
    assert result.returncode == code
    assert err.startswith("isola-emu: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and words in err


def test_an_x86_64_program_is_refused_by_name() -> None:
    result = emu("/bin/true")
    assert result.returncode == 126
    assert b"x86-64" in result.stderr and b"Traceback" not in result.stderr


def test_a_debian_dynamic_program_runs_through_the_sysroot() -> None:
    hello = asset("hello")
    result = emu(str(hello))
    assert (result.stdout, result.returncode) == (b"Hello, world!\n", 0)
    # The sysroot really was used: the loader and libc came from it.
    traced = emu("--strace", str(hello))
    sysroot = str(asset("sysroot"))
    assert f'"{sysroot}'.encode() in traced.stderr or b"libc.so.6" in traced.stderr


@needs_cc
def test_environment_options_like_qemu(tmp_path: Path) -> None:
    exe = build(
        tmp_path,
        "env",
        '#include <stdio.h>\n#include <stdlib.h>\nint main(void){ const char *a = getenv("A"), *b = getenv("B");'
        ' printf("%s %s\\n", a ? a : "-", b ? b : "-"); return 0; }\n',
        "-static",
    )
    env = {**os.environ, "B": "host"}
    assert emu("-E", "A=set", "-U", "B", str(exe), env=env).stdout == b"set -\n"
    assert emu(str(exe), env=env).stdout == b"- host\n"
    bad = emu("-E", "novalue", str(exe))
    assert bad.returncode == 126 and b"VAR=VALUE" in bad.stderr


@needs_cc
def test_the_code_cache_is_used_and_survives_damage(tmp_path: Path) -> None:
    exe = build(tmp_path, "hello", HELLO, "-static")
    env = {**os.environ, "ISOLA_EMU_CACHE": str(tmp_path / "cache")}
    first = emu("--stats", str(exe), env=env)
    second = emu("--stats", str(exe), env=env)
    assert first.stdout == second.stdout == b"hello 1 " + str(exe).encode() + b"\n"
    assert b" 0 blocks translated" in second.stderr, second.stderr
    for f in (tmp_path / "cache").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    third = emu("--stats", str(exe), env=env)
    assert third.stdout == first.stdout and third.returncode == 42
    off = emu("--stats", str(exe), env={**os.environ, "ISOLA_EMU_CACHE": ""})
    assert off.stdout == first.stdout and b" 0 blocks translated" not in off.stderr
