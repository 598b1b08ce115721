"""isola-emu beside qemu-riscv64 on the same riscv64 programs, in one run.

    .venv/bin/python bench/emu_bench.py [--quick] [--out bench/results]

Builds the CPU kernels of `bench/emu/kernels.c` (freestanding, so start-up cost stays out of the kernels)
and a static glibc "hello", runs each under both emulators, and reports guest MIPS — exact instruction counts
from `isola-emu --stats` (the same program executes the same instructions under any correct emulator) over
each emulator's best wall time — and the ratio. Writes `emu.json` and `emu.png` into the output directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KERNELS = {"intloop": (0, "int"), "sieve": (1, "int"), "crc32": (2, "int"), "matmul": (3, "fp")}
HELLO = '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'
ISOLA_EMU = [sys.executable, "-m", "isola.emu"]


def build(out: Path, scale: int) -> dict[str, Path]:
    cc = shutil.which("riscv64-linux-gnu-gcc")
    if cc is None:
        sys.exit("bench: riscv64-linux-gnu-gcc is missing (Debian: gcc-riscv64-linux-gnu)")
    out.mkdir(parents=True, exist_ok=True)
    programs = {}
    for name, (number, _) in KERNELS.items():
        exe = out / f"{name}.elf"
        subprocess.run(
            [cc, "-O2", "-static", "-nostdlib", "-ffreestanding", "-fno-builtin", f"-DKERNEL={number}",
             f"-DSCALE={scale}", "-o", str(exe), str(HERE / "emu" / "kernels.c")],
            check=True,
        )  # fmt: skip
        programs[name] = exe
    (out / "hello.c").write_text(HELLO)
    subprocess.run([cc, "-O2", "-static", "-o", str(out / "hello.elf"), str(out / "hello.c")], check=True)
    programs["hello"] = out / "hello.elf"
    return programs


# A warm start is what is measured: the emulator's code cache and Python's bytecode cache both filled by the
# first run. PYTHONDONTWRITEBYTECODE would leave every changed module to be compiled again at each start.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def best_wall(cmd: list[str], runs: int) -> tuple[float, subprocess.CompletedProcess[str]]:
    best, last = float("inf"), None
    for _ in range(runs):
        t0 = time.perf_counter()
        last = subprocess.run(cmd, capture_output=True, text=True, check=False, env=ENV)
        best = min(best, time.perf_counter() - t0)
        if last.returncode != 0:
            sys.exit(f"bench: {' '.join(cmd)} failed ({last.returncode}): {last.stderr.strip()}")
    assert last is not None
    return best, last


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller kernels and fewer runs")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    qemu = shutil.which("qemu-riscv64")
    if qemu is None:
        sys.exit("bench: qemu-riscv64 is missing (Debian: qemu-user)")
    runs = 2 if args.quick else 3
    programs = build(args.out / "build", scale=1 if args.quick else 3)
    rows = []
    for name, exe in programs.items():
        t_isola, res = best_wall([*ISOLA_EMU, "--stats", str(exe)], runs)
        t_qemu, ref = best_wall([qemu, str(exe)], runs)
        if res.stdout != ref.stdout:
            sys.exit(f"bench: {name}: isola-emu printed {res.stdout!r}, qemu-riscv64 {ref.stdout!r}")
        match = re.search(r"(\d+) instructions", res.stderr)
        if match is None:
            sys.exit(f"bench: no --stats line from isola-emu: {res.stderr}")
        insns = int(match.group(1))
        kind = KERNELS.get(name, (0, "startup"))[1]
        row = {
            "program": name,
            "kind": kind,
            "instructions": insns,
            "isola_s": round(t_isola, 4),
            "qemu_s": round(t_qemu, 4),
            "isola_mips": round(insns / t_isola / 1e6, 2),
            "qemu_mips": round(insns / t_qemu / 1e6, 1),
            "slowdown": round(t_isola / t_qemu, 1),
        }
        rows.append(row)
        print(
            f"{name:8} {kind:7} {insns:>11,} insns  isola-emu {t_isola:7.3f}s {row['isola_mips']:7.2f} MIPS"
            f"   qemu {t_qemu:6.3f}s {row['qemu_mips']:8.1f} MIPS   isola/qemu time x{row['slowdown']}"
        )
    doc = {
        "benchmark": "isola-emu vs qemu-riscv64",
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "qemu": subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0],
        "goals": {"int_mips": 30, "fp_mips": 10, "hello_s": 0.060},
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "emu.json").write_text(json.dumps(doc, indent=2) + "\n")
    plot(rows, args.out / "emu.png")
    print(f"wrote {args.out / 'emu.json'} and {args.out / 'emu.png'}")


def plot(rows: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kernels = [r for r in rows if r["kind"] != "startup"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [str(r["program"]) for r in kernels]
    ax.bar(names, [float(str(r["isola_mips"])) for r in kernels], color="#4c72b0")
    for i, r in enumerate(kernels):
        ax.text(i, float(str(r["isola_mips"])), f"qemu x{r['slowdown']}", ha="center", va="bottom", fontsize=8)
    ax.axhline(30, ls="--", lw=1, color="gray")
    ax.axhline(10, ls=":", lw=1, color="gray")
    ax.set_ylabel("guest MIPS (isola-emu)")
    ax.set_title("isola-emu on riscv64 kernels (dashed: int goal 30, dotted: FP goal 10)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
