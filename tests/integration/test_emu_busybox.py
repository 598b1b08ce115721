"""Debian's riscv64 busybox-static under isola-emu prints byte-identical output to qemu-riscv64.

Each case runs in a fresh scratch directory holding the same files for both emulators, so the commands
exercise files, directories, pipes, fork/exec, signals and floating point on real data.

busybox's shell runs applets by exec'ing /proc/self/exe. isola-emu emulates that; qemu-riscv64 cannot (it
execs itself and fails), and its shell then searches PATH — where it would find the host's x86 tools. So
both run with a PATH holding one wrapper per applet that runs `qemu-riscv64 busybox APPLET`: every stage
of every pipeline is the riscv64 busybox on both sides.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from isola import paths
from isola.assets import manifest
from isola.errors import NotFoundError

QEMU = shutil.which("qemu-riscv64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="needs qemu-riscv64 (Debian: qemu-user)")

CASES = {
    "echo": ["echo", "hello", "from", "riscv64"],
    "ls": ["ls", "-l", "--full-time", "data"],
    "cat": ["cat", "data/lines.txt", "data/words.txt"],
    "sha256sum": ["sha256sum", "data/lines.txt", "data/blob.bin"],
    "md5sum": ["md5sum", "data/blob.bin"],
    "sort": ["sort", "-r", "data/words.txt"],
    "sort-numeric": ["sort", "-n", "data/numbers.txt"],
    "awk-fp": [
        "awk",
        'BEGIN { s = 0; for (i = 1; i <= 20000; i++) s += 1 / (i * i); printf "%.12f %g\\n", s, s * s / 3 }',
    ],
    "awk-fields": ["awk", "-F", ":", "{ n += $2 } END { print n, NR }", "data/fields.txt"],
    "sed": ["sed", "-e", "s/[aeiou]/_/g", "-e", "3q", "data/words.txt"],
    "grep": ["grep", "-n", "-E", "^(al|be)", "data/words.txt"],
    "find": ["find", "data", "-name", "*.txt", "-type", "f"],
    "expr": ["expr", "123456789", "*", "987", "%", "1000007"],
    "dc": ["dc", "-e", "20 k 2 v p 3 4 ^ p"],
    "seq-wc": ["sh", "-c", "seq 1 5000 | wc -l -c"],
    "pipeline": ["sh", "-c", "cat data/words.txt | tr a-z A-Z | sort | uniq -c | head -n 5"],
    "subshell-status": ["sh", "-c", "(exit 3); echo status $?; false || echo fallback; kill -0 $$ && echo alive"],
    "gzip-roundtrip": [
        "sh",
        "-c",
        "gzip -c data/lines.txt > out.gz && gunzip -c out.gz | sha256sum && ls -l out.gz | wc -l",
    ],
    "tar": ["sh", "-c", "tar cf out.tar data && tar tf out.tar | sort && tar xOf out.tar data/words.txt | head -n 2"],
    "trap-signal": ["sh", "-c", "trap 'echo got TERM' TERM; kill -TERM $$; echo after"],
    "sigpipe": ["sh", "-c", "seq 1 100000 | head -n 1; echo done"],
}


def busybox() -> Path:
    try:
        return manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "riscv64", "busybox")
    except NotFoundError:
        pytest.skip("riscv64 busybox not cached: run `isola assets fetch --arch riscv64`")


def scratch(root: Path) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    words = ["delta", "alpha", "echo", "bravo", "charlie", "alpha", "beta", "zulu", "yankee", "alpha"]
    (data / "words.txt").write_text("\n".join(words * 3) + "\n")
    (data / "lines.txt").write_text("".join(f"line {i} {'x' * (i % 17)}\n" for i in range(800)))
    (data / "numbers.txt").write_text("\n".join(str((i * 7919) % 1000 - 500) for i in range(300)) + "\n")
    (data / "fields.txt").write_text("".join(f"k{i}:{i * 3}:v\n" for i in range(100)))
    (data / "blob.bin").write_bytes(bytes((i * 31 + 7) % 256 for i in range(70000)))
    (data / "sub").mkdir()
    (data / "sub" / "nested.txt").write_text("nested\n")
    for p in [*data.rglob("*"), data]:
        os.utime(p, (1_700_000_000, 1_700_000_000))
    return root


@pytest.fixture(scope="module")
def applets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert QEMU is not None
    bb = busybox()
    listed = subprocess.run([QEMU, str(bb), "--list"], capture_output=True, text=True, check=True).stdout.split()
    wrappers = tmp_path_factory.mktemp("applets")
    for name in listed:
        wrapper = wrappers / name
        wrapper.write_text(f'#!/bin/sh\nexec {QEMU} {bb} {name} "$@"\n')
        wrapper.chmod(0o755)
    return wrappers


@pytest.mark.parametrize("name", CASES)
def test_applet_matches_qemu(name: str, tmp_path: Path, applets: Path) -> None:
    bb = str(busybox())
    args = CASES[name]
    ours_dir, theirs_dir = scratch(tmp_path / "isola"), scratch(tmp_path / "qemu")
    assert QEMU is not None
    env = {"PATH": str(applets), "LC_ALL": "C", "HOME": "/"}
    # busybox's sh finds applets through /proc/self/exe, so both get the same busybox binary that way.
    ours = subprocess.run(
        [sys.executable, "-m", "isola.emu", bb, *args], cwd=ours_dir, capture_output=True, timeout=300, env=env
    )
    theirs = subprocess.run([QEMU, bb, *args], cwd=theirs_dir, capture_output=True, timeout=300, env=env)
    assert ours.stdout == theirs.stdout, (ours.stdout[-2000:], ours.stderr[-2000:])
    assert ours.returncode == theirs.returncode, ours.stderr[-2000:]
    assert ours.stdout, "the command printed nothing: the comparison would prove nothing"
