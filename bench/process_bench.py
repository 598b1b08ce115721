"""isola-vmm process mode beside the same static programs run natively (and QEMU's tiny guest), in one run.

    .venv/bin/python bench/process_bench.py [--quick] [--runs N] [--file-mib M] [--out bench/results]
    .venv/bin/python bench/process_bench.py --no-vm        # only the native and QEMU sides (no process VM needed)

A process VM (`isola-vmm run --process -- PROGRAM`) runs a static x86-64 ELF at CPL 3 in a KVM VM and serves its
system calls in Python. What is compared, each workload's variants interleaved round by round (rotating which goes
first), one untimed warm-up each, medians of `--runs` runs:

1. CPU: busybox awk's 3M-iteration loop (measurements.md §2e) natively and in a process VM, and the same loop
   at 30M iterations. Throughput ratio native/VM, raw and with each side's start-up (its `busybox true`)
   subtracted. The goal (≥ 0.95) is about CPU-bound work, so it is judged on the 30M loop, where start-up is a
   rounding error; at 3M the ~0.1 s of Python start-up is an eighth of the run, and the raw 3M ratio says so.
2. Syscall round trip: `bench/process/getppid.c` (static, built at bench time) times 20,000 `syscall(SYS_getppid)`
   with clock_gettime; natively and in the VM, beside the 28.5 µs floor that measurements.md §7 measured for a
   bare `syscall` → KVM_EXIT_IO → back on this kvm_pvm host.
3. File reads: `busybox sha256sum`, `busybox cat > /dev/null` (sendfile natively) and `busybox dd bs=64k >
   /dev/null` (read + write) of a deterministic file (300 MiB, generated once under `<out>/build/process`, read
   through `--root`) natively and in the VM with and without `--no-fastpath` (the exit-avoiding file pages and
   batched writes). Goal: sha256sum ≥ 0.8x native with the fast path.
4. Launch → exit: `busybox true` in a process VM (through `python -m isola.vmm.command` and the `isola-vmm`
   script), `busybox echo`, native `busybox true`/`echo`, bare Python start-up, and QEMU `-M microvm` with KVM
   booting `bench/process/tinyguest.S` (a firmware-less guest: reset vector → long mode → one serial line →
   isa-debug-exit), the peer of measurements.md §2b (44 ms there). If QEMU cannot run it here, the 44 ms anchor
   is the reference, labelled as such.

Each command is timed from this Python with time.perf_counter around subprocess.Popen + os.wait4 (what
subprocess.run does, plus the child's rusage: user and system CPU, max RSS). One more run of each VM variant with
`--stats` records the VMM's exit counts (where the time goes). Writes `process.json` and `process.png`.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from emu_bench import ENV
from isola import paths
from isola.assets import manifest
from vmm_bench import spread

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
VMM_MODULE = [sys.executable, "-m", "isola.vmm.command"]
VMM_SCRIPT = [str(Path(sys.executable).parent / "isola-vmm")]

AWK = "BEGIN { s = 0; for (i = 0; i < 3000000; i++) s += i * 2 % 7; print s }"
AWK_LONG = AWK.replace("3000000", "30000000")
"""The same loop ten times longer (~7 s natively): long enough that each side's start-up is under 2% of it."""
GETPPID_CALLS = 20000
DATA_NAME = "data.bin"
DATA_SEED = 0x15014
CHUNK = 1 << 20
DD_BLOCK = "64k"
READS = {
    "sha256": "busybox sha256sum FILE",
    "cat": "busybox cat FILE > /dev/null (sendfile natively)",
    "dd": f"busybox dd if=FILE bs={DD_BLOCK} > /dev/null (read + write)",
}

SYSCALL_FLOOR_US = 28.5
SYSCALL_FLOOR = {
    "value_us": SYSCALL_FLOOR_US,
    "source": "../shared/research/measurements.md §7, table 'Results on this machine': C twin "
    "(fixtures/pvm-exitcost.c), one run of 50,000 exits: `syscall` → LSTAR stub `out` → KVM_EXIT_IO → back, "
    "no register access (the Python twin: 28.9 µs)",
}
QEMU_ANCHOR_MS = 44.0
QEMU_ANCHOR = {
    "value_ms": QEMU_ANCHOR_MS,
    "source": "../shared/research/measurements.md §2b and 'Key figures': qemu-system-x86_64 -M microvm "
    "-accel kvm -cpu host,-arch-capabilities, firmware-less tiny guest (-bios), launch→exit wall, median of 3 "
    "(0.042-0.045 s)",
}
IMPORT_VMM = "import isola.vmm.command, isola.vmm.process.cli, isola.vmm.process.vm"
"""What `isola-vmm run --process` imports before it starts a VM: Python's share of the VMM's start-up."""
QEMU_MARKER = "TINY-GUEST-OK"
QEMU_EXIT_STATUS = 1  # isa-debug-exit: (value 0 << 1) | 1
GOALS = {"cpu_ratio_min": 0.95, "sha256_ratio_min": 0.8}


# --- running and timing one command -------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    wall: float
    user: float
    sys: float
    maxrss_kib: int
    status: int
    stdout: str
    stderr: str


def run(cmd: Sequence[str], *, stdout_null: bool = False, timeout: float = 900.0) -> Run:
    """Run `cmd` once: wall time around Popen + wait4, the child's rusage, its output (stdout to /dev/null if
    asked). Output goes to temporary files, so nothing has to be read while the clock runs."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, open(os.devnull, "wb") as null:
        sink: IO[bytes] = null if stdout_null else out
        started: list[subprocess.Popen[bytes]] = []

        def kill() -> None:
            for p in started:
                p.kill()

        timer = threading.Timer(timeout, kill)  # started outside the clock
        timer.start()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sink, stderr=err, env=ENV)
        started.append(proc)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        timer.cancel()
        out.seek(0)
        err.seek(0)
        return Run(
            wall=wall,
            user=usage.ru_utime,
            sys=usage.ru_stime,
            maxrss_kib=usage.ru_maxrss,
            status=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


@dataclass(frozen=True)
class Variant:
    """One way of running a workload; `check` validates a run's output and returns its extra metric (or None),
    raising ValueError if the run is wrong."""

    name: str
    cmd: list[str]
    check: Callable[[Run], float | None]
    stdout_null: bool = False
    vm: bool = False


class RunFailed(Exception):
    pass


def checked(variant: Variant, result: Run) -> float | None:
    try:
        return variant.check(result)
    except ValueError as e:
        raise RunFailed(
            f"{variant.name}: {e}\n  command: {' '.join(variant.cmd)}\n  status {result.status}\n"
            f"  stdout: {result.stdout[-800:]!r}\n  stderr: {result.stderr[-1500:]!r}"
        ) from None


def measure(workload: str, variants: Sequence[Variant], runs: int) -> list[dict[str, Any]]:
    """Warm each variant up once, then `runs` rounds of all variants, rotating which goes first."""
    for v in variants:
        checked(v, run(v.cmd, stdout_null=v.stdout_null))
    samples = []
    for r in range(runs):
        shift = r % len(variants)
        for v in [*variants[shift:], *variants[:shift]]:
            result = run(v.cmd, stdout_null=v.stdout_null)
            metric = checked(v, result)
            samples.append(
                {
                    "workload": workload,
                    "variant": v.name,
                    "round": r,
                    "wall_ms": round(result.wall * 1000, 3),
                    "user_ms": round(result.user * 1000, 3),
                    "sys_ms": round(result.sys * 1000, 3),
                    "maxrss_kib": result.maxrss_kib,
                    "metric": metric,
                }
            )
        walls = "  ".join(f"{s['variant']} {s['wall_ms']:.1f} ms" for s in samples[-len(variants) :])
        print(f"process-bench: {workload} round {r + 1}/{runs}: {walls}", flush=True)
    return samples


# --- checks ---------------------------------------------------------------------------------------------------


def expect_status(result: Run, status: int = 0) -> None:
    if result.status != status:
        raise ValueError(f"exit status {result.status}, expected {status}")


def expect_status_only(result: Run) -> float | None:
    expect_status(result)
    return None


def expect_stdout(text: str) -> Callable[[Run], float | None]:
    def check(result: Run) -> float | None:
        expect_status(result)
        if result.stdout != text:
            raise ValueError(f"printed {result.stdout!r}, expected {text!r}")
        return None

    return check


def ns_per_call(result: Run) -> float:
    expect_status(result)
    match = re.search(r"getppid (\d+) calls ([0-9.]+) ns/call", result.stdout)
    if match is None:
        raise ValueError("no 'getppid N calls X ns/call' line")
    return float(match.group(2))


def qemu_check(result: Run) -> float | None:
    expect_status(result, QEMU_EXIT_STATUS)
    if QEMU_MARKER not in result.stdout:
        raise ValueError(f"no {QEMU_MARKER} on the serial console")
    return None


# --- building the inputs -------------------------------------------------------------------------------------


def build_getppid(tmp: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("bench: gcc is missing (Debian: gcc libc6-dev)")
    exe = tmp / "getppid"
    subprocess.run([gcc, "-static", "-O2", "-o", str(exe), str(HERE / "process" / "getppid.c")], check=True)
    return exe


def build_tinyguest(tmp: Path) -> Path:
    image = tmp / "tinyguest.bin"
    subprocess.run(
        ["gcc", "-nostdlib", "-static", "-Wl,--oformat=binary", "-Wl,-Ttext=0xf0000", "-o", str(image),
         str(HERE / "process" / "tinyguest.S")],
        check=True,
    )  # fmt: skip
    if image.stat().st_size != 0x10000:
        sys.exit(f"bench: {image} is {image.stat().st_size} bytes, not 64 KiB")
    return image


def data_file(cache: Path, mib: int) -> tuple[Path, str]:
    """The deterministic input of the read workloads (a seeded PRNG, 1 MiB at a time), made once; its SHA-256."""
    path = cache / f"data-{mib}m-{DATA_SEED:x}.bin"
    digest_path = path.with_suffix(".sha256")
    if path.exists() and digest_path.exists() and path.stat().st_size == mib * CHUNK:
        return path, digest_path.read_text().strip()
    cache.mkdir(parents=True, exist_ok=True)
    print(f"process-bench: writing {path} ({mib} MiB, once)", flush=True)
    rng, digest = random.Random(DATA_SEED), hashlib.sha256()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for _ in range(mib):
            chunk = rng.randbytes(CHUNK)
            digest.update(chunk)
            f.write(chunk)
    tmp.rename(path)
    digest_path.write_text(digest.hexdigest() + "\n")
    return path, digest.hexdigest()


def process_root(cache: Path, busybox: Path, data: Path) -> Path:
    """The `--root` of the read workloads: a copy of busybox (the program is uid 0 in there, so never a link to
    the asset cache) and a hard link to the data file."""
    root = cache / "root"
    root.mkdir(parents=True, exist_ok=True)
    program = root / "busybox"
    if not program.exists() or program.read_bytes() != busybox.read_bytes():
        shutil.copy2(busybox, program)
    link = root / DATA_NAME
    if not (link.exists() and link.stat().st_ino == data.stat().st_ino):
        link.unlink(missing_ok=True)
        try:
            os.link(data, link)
        except OSError:
            shutil.copy2(data, link)
    return root


def vmm(*opts: str, program: Sequence[str], entry: Sequence[str] = VMM_MODULE) -> list[str]:
    return [*entry, "run", "--process", *opts, "--", *program]


# --- the workloads --------------------------------------------------------------------------------------------


@dataclass
class Setup:
    busybox: Path
    getppid: Path
    tinyguest: Path
    root: Path
    data: Path
    data_sha256: str
    qemu: str | None
    with_vm: bool


def workloads(s: Setup) -> dict[str, list[Variant]]:
    bb = str(s.busybox)
    awk_out = run([bb, "awk", AWK]).stdout
    awk_long_out = run([bb, "awk", AWK_LONG]).stdout
    in_root = ["/busybox"]
    data = f"/{DATA_NAME}"

    def sha_check(result: Run) -> float | None:
        expect_status(result)
        if result.stdout.split()[:1] != [s.data_sha256]:
            raise ValueError(f"printed {result.stdout!r}, expected the digest {s.data_sha256}")
        return None

    def reads(path: str) -> dict[str, tuple[list[str], Callable[[Run], float | None], bool]]:
        """The read workloads on the file at `path`: argv after busybox, check, stdout to /dev/null."""
        return {
            "sha256": (["sha256sum", path], sha_check, False),
            "cat": (["cat", path], expect_stdout(""), True),
            "dd": (["dd", f"if={path}", f"bs={DD_BLOCK}"], expect_status_only, True),
        }

    launch = [
        Variant("native true", [bb, "true"], expect_stdout("")),
        Variant("native echo", [bb, "echo", "hello"], expect_stdout("hello\n")),
        Variant("python -c pass", [sys.executable, "-c", "pass"], expect_stdout("")),
        Variant("python import launch", [sys.executable, "-c", IMPORT_VMM], expect_stdout("")),
    ]
    if s.with_vm:
        launch += [
            Variant("vm true", vmm(program=[bb, "true"]), expect_stdout(""), vm=True),
            Variant("vm true (isola-vmm)", vmm(program=[bb, "true"], entry=VMM_SCRIPT), expect_stdout(""), vm=True),
            Variant("vm echo", vmm(program=[bb, "echo", "hello"]), expect_stdout("hello\n"), vm=True),
        ]
    if s.qemu is not None:
        launch.append(Variant("qemu microvm tiny", qemu_cmd(s.qemu, s.tinyguest), qemu_check))
    out: dict[str, list[Variant]] = {
        "launch": launch,
        "syscall": [Variant("native", [str(s.getppid), str(GETPPID_CALLS)], ns_per_call)],
        "cpu": [Variant("native", [bb, "awk", AWK], expect_stdout(awk_out))],
        "cpu-long": [Variant("native", [bb, "awk", AWK_LONG], expect_stdout(awk_long_out))],
    }
    for workload, (argv, check, null) in reads(str(s.data)).items():
        out[workload] = [Variant("native", [bb, *argv], check, stdout_null=null)]
    if s.with_vm:
        out["syscall"].append(Variant("vm", vmm(program=[str(s.getppid), str(GETPPID_CALLS)]), ns_per_call, vm=True))
        out["cpu"].append(Variant("vm", vmm(program=[bb, "awk", AWK]), expect_stdout(awk_out), vm=True))
        out["cpu-long"].append(Variant("vm", vmm(program=[bb, "awk", AWK_LONG]), expect_stdout(awk_long_out), vm=True))
        for workload, (argv, check, null) in reads(data).items():
            for name, opts in (("vm", ()), ("vm --no-fastpath", ("--no-fastpath",))):
                cmd = vmm("--root", str(s.root), *opts, program=[*in_root, *argv])
                out[workload].append(Variant(name, cmd, check, stdout_null=null, vm=True))
    return out


def qemu_cmd(qemu: str, image: Path) -> list[str]:
    return [
        qemu, "-M", "microvm", "-accel", "kvm", "-cpu", "host,-arch-capabilities", "-m", "64", "-display", "none",
        "-nodefaults", "-no-user-config", "-serial", "stdio", "-no-reboot",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-bios", str(image),
    ]  # fmt: skip


def probe_qemu(qemu: str | None, image: Path) -> tuple[str | None, str | None]:
    """QEMU if it runs the tiny guest here under KVM (else None), and why not."""
    if qemu is None:
        return None, "qemu-system-x86_64 is not installed (Debian: qemu-system-x86)"
    result = run(qemu_cmd(qemu, image), timeout=30.0)
    try:
        qemu_check(result)
    except ValueError as e:
        return None, f"QEMU+KVM did not run the tiny guest on this host: {e}; stderr: {result.stderr[-500:]!r}"
    return qemu, None


def probe_vm(busybox: Path) -> str | None:
    """Why the process VM does not run `busybox true` (None when it does)."""
    result = run(vmm(program=[str(busybox), "true"]), timeout=120.0)
    if result.status == 0:
        return None
    return f"status {result.status}: {result.stderr.strip()[-1500:]}"


def vm_stats(variants: dict[str, list[Variant]]) -> dict[str, dict[str, Any]]:
    """One more run of each VM variant with `--stats`: the VMM's exit counts (stderr), its CPU split."""
    stats: dict[str, dict[str, Any]] = {}
    for workload, vs in variants.items():
        for v in vs:
            if not v.vm:
                continue
            at = v.cmd.index("--process") + 1
            cmd = [*v.cmd[:at], "--stats", *v.cmd[at:]]
            result = run(cmd, stdout_null=v.stdout_null)
            stats[f"{workload}/{v.name}"] = {
                "command": cmd,
                "status": result.status,
                "wall_ms": round(result.wall * 1000, 3),
                "user_ms": round(result.user * 1000, 3),
                "sys_ms": round(result.sys * 1000, 3),
                "maxrss_kib": result.maxrss_kib,
                "stderr": result.stderr[-6000:],
                "counts": parse_counts(result.stderr),
            }
    return stats


def parse_counts(text: str) -> dict[str, float]:
    """`name: number` / `name=number` / `name number` pairs, as far as `--stats` prints them."""
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("isola-vmm"):
            for match in re.finditer(r"([A-Za-z_][\w./-]*)\s*[:=]?\s+(\d+(?:\.\d+)?)\b", line):
                counts.setdefault(match.group(1), float(match.group(2)))
    return counts


# --- summary --------------------------------------------------------------------------------------------------


def medians(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per workload and variant: the spread of wall time, CPU times, RSS and the extra metric."""
    out: dict[str, dict[str, Any]] = {}
    for s in samples:
        out.setdefault(s["workload"], {}).setdefault(s["variant"], None)
    for workload, variants in out.items():
        for variant in variants:
            mine = [s for s in samples if s["workload"] == workload and s["variant"] == variant]
            variants[variant] = {
                key: spread([s[key] for s in mine if s[key] is not None])
                for key in ("wall_ms", "user_ms", "sys_ms", "maxrss_kib", "metric")
            }
    return out


def med(m: dict[str, dict[str, Any]], workload: str, variant: str, key: str = "wall_ms") -> float | None:
    value = m.get(workload, {}).get(variant, {}).get(key, {}).get("median")
    return None if value is None else float(value)


def div(a: float | None, b: float | None, digits: int = 3) -> float | None:
    """a / b rounded; None when either is missing or b is not positive (a start-up-subtracted time can come out
    at or below zero when the run is mostly start-up and the machine is noisy)."""
    return round(a / b, digits) if a is not None and b is not None and b > 0 else None


def sub(a: float | None, b: float | None) -> float | None:
    return round(a - b, 3) if a is not None and b is not None else None


def results(m: dict[str, dict[str, Any]], file_bytes: int, qemu_measured: bool) -> dict[str, Any]:
    native_true, vm_true = med(m, "launch", "native true"), med(m, "launch", "vm true")

    def throughput(workload: str, variant: str) -> dict[str, float | None]:
        native, vm = med(m, workload, "native"), med(m, workload, variant)
        return {
            "native_ms": native,
            "vm_ms": vm,
            "ratio_native_over_vm": div(native, vm),
            "ratio_startup_subtracted": div(sub(native, native_true), sub(vm, vm_true)),
        }

    def read(workload: str) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for variant in ("native", "vm", "vm --no-fastpath"):
            wall = med(m, workload, variant)
            row[variant] = {"ms": wall, "mb_s": div(file_bytes / 1e3, wall, 1)}
        row["ratio_vm"] = throughput(workload, "vm")
        row["ratio_vm_no_fastpath"] = throughput(workload, "vm --no-fastpath")
        row["fastpath_speedup"] = div(med(m, workload, "vm --no-fastpath"), med(m, workload, "vm"))
        return row

    syscall_native = med(m, "syscall", "native", "metric")
    syscall_vm = med(m, "syscall", "vm", "metric")
    qemu = med(m, "launch", "qemu microvm tiny")
    reference = qemu if qemu_measured else QEMU_ANCHOR_MS
    launch = {variant: med(m, "launch", variant) for variant in m.get("launch", {})}
    return {
        "cpu": {**throughput("cpu", "vm"), "native_true_ms": native_true, "vm_true_ms": vm_true},
        "cpu_long": throughput("cpu-long", "vm"),
        "syscall": {
            "calls": GETPPID_CALLS,
            "native_us": div(syscall_native, 1000.0, 4),
            "vm_us": div(syscall_vm, 1000.0, 2),
            "floor_us": SYSCALL_FLOOR_US,
            "vm_over_floor": div(syscall_vm, SYSCALL_FLOOR_US * 1000.0),
            "vm_over_native": div(syscall_vm, syscall_native, 1),
        },
        **{workload: read(workload) for workload in READS},
        "launch": {
            "wall_ms": launch,
            "qemu_reference_ms": reference,
            "qemu_reference_is": "measured in this run" if qemu_measured else "the anchor of measurements.md §2b",
            "vm_true_over_qemu": div(vm_true, reference),
            "vm_true_isola_vmm_over_qemu": div(med(m, "launch", "vm true (isola-vmm)"), reference),
            "vm_true_minus_python_import_ms": sub(vm_true, med(m, "launch", "python import launch")),
        },
    }


def goals(r: dict[str, Any]) -> dict[str, Any]:
    """Each goal's threshold and whether it is met (None when the process VM was not measured)."""

    def met(ratio: float | None, minimum: float) -> bool | None:
        return None if ratio is None else ratio >= minimum

    cpu, cpu_long, sha = r["cpu"], r["cpu_long"], r["sha256"]["ratio_vm"]
    return {
        **GOALS,
        "cpu_met": met(cpu_long["ratio_native_over_vm"], GOALS["cpu_ratio_min"]),
        "cpu_3m_met": met(cpu["ratio_native_over_vm"], GOALS["cpu_ratio_min"]),
        "cpu_met_startup_subtracted": met(cpu["ratio_startup_subtracted"], GOALS["cpu_ratio_min"]),
        "sha256_met": met(sha["ratio_native_over_vm"], GOALS["sha256_ratio_min"]),
        "sha256_met_startup_subtracted": met(sha["ratio_startup_subtracted"], GOALS["sha256_ratio_min"]),
    }


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else "met" if met else "MISSED"


def fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def print_table(r: dict[str, Any], g: dict[str, Any], mib: int) -> None:
    cpu = r["cpu"]
    print(f"\n{'workload':44} {'native':>10} {'process VM':>12} {'native/VM':>10} {'w/o start-up':>13}")
    print(
        f"{'busybox awk 3M loop (ms)':44} {fmt(cpu['native_ms'], '.1f'):>10} {fmt(cpu['vm_ms'], '.1f'):>12} "
        f"{fmt(cpu['ratio_native_over_vm'], '.3f', 'x'):>10} {fmt(cpu['ratio_startup_subtracted'], '.3f', 'x'):>13}"
    )
    long = r["cpu_long"]
    print(
        f"{'busybox awk 30M loop (ms)':44} {fmt(long['native_ms'], '.1f'):>10} {fmt(long['vm_ms'], '.1f'):>12} "
        f"{fmt(long['ratio_native_over_vm'], '.3f', 'x'):>10} {fmt(long['ratio_startup_subtracted'], '.3f', 'x'):>13}"
    )
    for workload in READS:
        row = r[workload]
        for variant, key in (("vm", "ratio_vm"), ("vm --no-fastpath", "ratio_vm_no_fastpath")):
            label = f"{workload} {mib} MiB, MB/s ({variant})"
            print(
                f"{label:44} {fmt(row['native']['mb_s'], '.0f'):>10} {fmt(row[variant]['mb_s'], '.0f'):>12} "
                f"{fmt(row[key]['ratio_native_over_vm'], '.3f', 'x'):>10} "
                f"{fmt(row[key]['ratio_startup_subtracted'], '.3f', 'x'):>13}"
            )
    sc = r["syscall"]
    print(
        f"{'getppid round trip (µs)':44} {fmt(sc['native_us'], '.3f'):>10} {fmt(sc['vm_us'], '.2f'):>12} "
        f"{'floor ' + str(sc['floor_us']):>10}   VM/floor {fmt(sc['vm_over_floor'], '.2f', 'x')}"
    )
    launch = r["launch"]
    print("\nlaunch → exit (ms):")
    for variant, wall in launch["wall_ms"].items():
        print(f"  {variant:40} {fmt(wall, '.1f'):>8}")
    print(
        f"  QEMU reference: {launch['qemu_reference_ms']:.1f} ms ({launch['qemu_reference_is']}); "
        f"vm true / QEMU {fmt(launch['vm_true_over_qemu'], '.2f', 'x')}"
    )
    print(
        f"goals: CPU (30M loop) ≥ {g['cpu_ratio_min']}x native: {verdict(g['cpu_met'])} "
        f"(3M loop: {verdict(g['cpu_3m_met'])}, w/o start-up: {verdict(g['cpu_met_startup_subtracted'])}); "
        f"sha256sum ≥ {g['sha256_ratio_min']}x native: {verdict(g['sha256_met'])} "
        f"(w/o start-up: {verdict(g['sha256_met_startup_subtracted'])})"
    )


# --- plot -----------------------------------------------------------------------------------------------------

COLORS = {"native": "#55a868", "vm": "#4c72b0", "vm --no-fastpath": "#8172b2", "qemu": "#dd8452", "python": "#999999"}


def color(variant: str) -> str:
    if variant.startswith("qemu"):
        return COLORS["qemu"]
    if variant.startswith("python"):
        return COLORS["python"]
    if "no-fastpath" in variant:
        return COLORS["vm --no-fastpath"]
    return COLORS["vm"] if variant.startswith("vm") else COLORS["native"]


def plot(samples: list[dict[str, Any]], m: dict[str, dict[str, Any]], r: dict[str, Any], mib: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    file_mb_ms = mib * CHUNK / 1e3
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))

    def bars(ax: Any, workload: str, title: str, scale: Callable[[float], float], notes: dict[str, str]) -> None:
        variants = list(m.get(workload, {}))
        for i, v in enumerate(variants):
            walls = [s["wall_ms"] for s in samples if s["workload"] == workload and s["variant"] == v]
            values = [scale(w) for w in walls]
            median = statistics.median(values) if values else 0.0
            ax.bar(i, median, color=color(v), alpha=0.85)
            ax.plot([i] * len(values), values, "k.", ms=4)
            if v in notes:
                ax.text(i, median, notes[v], ha="center", va="bottom", fontsize=8)
        if len(variants) > 4:
            ax.set_xticks(range(len(variants)), variants, fontsize=7, rotation=40, ha="right")
        else:
            ax.set_xticks(range(len(variants)), [v.replace(" ", "\n", 1) for v in variants], fontsize=8)
        ax.set_title(title, fontsize=10)

    cpu = r["cpu"]
    bars(axes[0][0], "cpu", "busybox awk 3M loop (ms)", lambda w: w, {"vm": f"x{cpu['ratio_native_over_vm']}"})
    for ax, workload in zip(axes[0][1:], READS, strict=True):
        row = r[workload]
        notes = {
            "vm": f"x{row['ratio_vm']['ratio_native_over_vm']}",
            "vm --no-fastpath": f"x{row['ratio_vm_no_fastpath']['ratio_native_over_vm']}",
        }
        title = READS[workload].split(" (")[0].replace("FILE", f"{mib} MiB").removeprefix("busybox ")
        bars(ax, workload, f"{title} (MB/s)", lambda w: file_mb_ms / w, notes)
        if workload != "sha256":
            ax.set_yscale("log")

    ax = axes[1][0]
    sc = r["syscall"]
    names, values = ["native"], [sc["native_us"] or 0.0]
    if sc["vm_us"] is not None:
        names.append("vm")
        values.append(sc["vm_us"])
    ax.bar(range(len(names)), values, color=[color(n) for n in names], alpha=0.85)
    for i, value in enumerate(values):
        ax.text(i, value, f"{value:.3g} µs", ha="center", va="bottom", fontsize=8)
    ax.axhline(sc["floor_us"], ls="--", lw=1, color="gray")
    ax.text(-0.4, sc["floor_us"], f"floor {sc['floor_us']} µs (§7)", fontsize=8, va="bottom", ha="left")
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_title("syscall(SYS_getppid) round trip (µs, log)", fontsize=10)

    launch = r["launch"]
    qemu_ms = launch["qemu_reference_ms"]
    notes = {v: f"x{div(w, qemu_ms, 2)}" for v, w in launch["wall_ms"].items() if w is not None}
    bars(axes[1][1], "launch", "launch → exit (ms); labels: x QEMU's", lambda w: w, notes)
    axes[1][1].axhline(qemu_ms, ls="--", lw=1, color=COLORS["qemu"])

    ax = axes[1][3]
    ax.axis("off")
    g = goals(r)
    lines = [
        f"CPU (awk 30M) ≥ {g['cpu_ratio_min']}x native: {verdict(g['cpu_met'])}",
        f"  without start-up: {verdict(g['cpu_met_startup_subtracted'])}",
        f"sha256sum ≥ {g['sha256_ratio_min']}x native: {verdict(g['sha256_met'])}",
        f"  without start-up: {verdict(g['sha256_met_startup_subtracted'])}",
        f"getppid in the VM: {sc['vm_us']} µs (floor {sc['floor_us']} µs)",
        f"vm true: {fmt(med(m, 'launch', 'vm true'), '.1f')} ms, QEMU tiny guest: {launch['qemu_reference_ms']:.1f} ms",
        f"  ({launch['qemu_reference_is']})",
    ]
    ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=9, family="monospace", transform=ax.transAxes)
    ax = axes[1][2]
    vm_rows = [(w, v) for w, vs in m.items() for v in vs if v.startswith("vm")]
    labels = [f"{w} {v.removeprefix('vm').strip()}".strip() for w, v in vm_rows]
    walls = [med(m, w, v) or 0.0 for w, v in vm_rows]
    users = [100 * (med(m, w, v, "user_ms") or 0.0) / (wall or 1) for (w, v), wall in zip(vm_rows, walls, strict=True)]
    syss = [100 * (med(m, w, v, "sys_ms") or 0.0) / (wall or 1) for (w, v), wall in zip(vm_rows, walls, strict=True)]
    rest = [max(0.0, 100 - u - s) for u, s in zip(users, syss, strict=True)]
    y = range(len(vm_rows))
    ax.barh(y, users, label="user (VMM + guest)", color="#4c72b0")
    ax.barh(y, syss, left=users, label="system", color="#c44e52")
    ax.barh(y, rest, left=[u + s for u, s in zip(users, syss, strict=True)], label="not on CPU", color="#cccccc")
    for i, wall in enumerate(walls):
        ax.text(101, i, f"{wall:.0f} ms", va="center", fontsize=7)
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 125)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=3)
    ax.set_title("process VM runs: where the wall time goes (% of median)", fontsize=10)

    fig.suptitle(
        f"isola-vmm process mode vs native (kvm_pvm host): CPU x{cpu['ratio_native_over_vm']}, "
        f"sha256sum x{r['sha256']['ratio_vm']['ratio_native_over_vm']}, "
        f"getppid {sc['vm_us']} µs (bars: medians, dots: samples)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- machine and versions -------------------------------------------------------------------------------------


def first_line(cmd: Sequence[str]) -> str | None:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    except OSError:
        return None
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else None


def cpu_idle_percent(seconds: float = 1.0) -> float:
    """How idle the host's CPUs were over `seconds` (/proc/stat): other load skews every number here."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(fields), fields[3]

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return round(100 * (idle1 - idle0) / max(1, total1 - total0), 1)


def machine_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    kvm = [name for name in ("kvm_pvm", "kvm_amd", "kvm_intel") if Path(f"/sys/module/{name}").exists()]
    return {
        "machine": platform.machine(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": model.group(1) if model else None,
        "memory_kib": int(Path("/proc/meminfo").read_text().split()[1]),
        "kvm_modules": kvm,
        "python": platform.python_version(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "cpu_idle_percent_at_start": cpu_idle_percent(),
    }


def versions(busybox: Path, qemu: str | None) -> dict[str, Any]:
    dirty = subprocess.run(
        ["git", "-C", str(PROJECT), "status", "--porcelain", "--", "src"], capture_output=True, text=True
    ).stdout
    return {
        "isola_commit": first_line(["git", "-C", str(PROJECT), "rev-parse", "HEAD"]),
        "isola_src_uncommitted_changes": bool(dirty.strip()),
        "busybox": first_line([str(busybox)]),
        "busybox_path": str(busybox),
        "qemu": first_line([qemu, "--version"]) if qemu else None,
        "gcc": first_line(["gcc", "--version"]),
    }


# --- main -----------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs (3, launch 5)")
    ap.add_argument("--runs", type=int, default=None, help="runs per variant (default 5, launch 15)")
    ap.add_argument("--file-mib", type=int, default=300, help="size of the file the read workloads read")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--no-vm", action="store_true", help="only the native and QEMU sides (no process VM)")
    args = ap.parse_args()
    runs = args.runs or (3 if args.quick else 5)
    launch_runs = args.runs or (5 if args.quick else 15)
    if runs < 1:
        sys.exit("bench: --runs must be at least 1 (3 for a median)")

    # Byte-compile isola first, as an installation does: with PYTHONDONTWRITEBYTECODE set (it is, on these
    # machines) every run would otherwise compile the modules it imports, and start-up would measure that.
    compileall.compile_dir(PROJECT / "src" / "isola", quiet=1)
    host = machine_info()
    if host["cpu_idle_percent_at_start"] < 80:
        print(f"process-bench: the host is busy ({host['cpu_idle_percent_at_start']}% idle): expect noise", flush=True)
    assets = paths.assets_dir()
    busybox = manifest.load(assets).artifact(assets, "amd64", "busybox")
    cache = args.out / "build" / "process"
    data, data_sha256 = data_file(cache, args.file_mib)
    root = process_root(cache, busybox, data)
    with tempfile.TemporaryDirectory(prefix="process-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        getppid = build_getppid(tmp)
        tinyguest = build_tinyguest(tmp)
        qemu, qemu_error = probe_qemu(shutil.which("qemu-system-x86_64"), tinyguest)
        if qemu_error:
            print(f"process-bench: {qemu_error}; the reference is the {QEMU_ANCHOR_MS} ms anchor", flush=True)
        vm_error = None if args.no_vm else probe_vm(busybox)
        if vm_error is not None:
            sys.exit(f"bench: the process VM does not run `busybox true` ({vm_error}); --no-vm measures the rest")
        setup = Setup(busybox, getppid, tinyguest, root, data, data_sha256, qemu, with_vm=not args.no_vm)
        variants = workloads(setup)
        samples: list[dict[str, Any]] = []
        for workload, vs in variants.items():
            try:
                samples += measure(workload, vs, launch_runs if workload == "launch" else runs)
            except RunFailed as e:
                sys.exit(f"bench: {workload}: {e}")
        stats = vm_stats(variants)
        commands = {f"{w}/{v.name}": v.cmd for w, vs in variants.items() for v in vs}

    m = medians(samples)
    file_bytes = args.file_mib * CHUNK
    r = results(m, file_bytes, qemu_measured=qemu is not None)
    g = goals(r)
    doc = {
        "benchmark": "isola-vmm process mode vs native (and QEMU microvm's tiny guest for launch → exit)",
        "host": {
            **host,
            "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
            "cpu_idle_percent_at_end": cpu_idle_percent(),
        },
        "versions": versions(busybox, qemu),
        "config": {
            "runs": runs,
            "launch_runs": launch_runs,
            "quick": args.quick,
            "awk_program": AWK,
            "awk_long_program": AWK_LONG,
            "getppid_calls": GETPPID_CALLS,
            "file_bytes": file_bytes,
            "file_sha256": data_sha256,
            "file_content": f"random.Random({DATA_SEED:#x}).randbytes(1 MiB) x {args.file_mib}",
            "timing": "time.perf_counter around subprocess.Popen + os.wait4, from this Python; medians",
            "order": "one untimed warm-up per variant, then rounds of all variants, rotating the first",
            "maxrss_note": "ru_maxrss from wait4: Linux keeps the forking Python's high-water mark across exec, "
            "so a value near this bench's own RSS means 'at most that'",
            "bench_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "startup_subtracted": "(native - native `busybox true`) / (vm - vm `busybox true`), medians of the "
            "launch workload; None when a difference is not positive",
        },
        "references": {
            "syscall_floor": SYSCALL_FLOOR,
            "qemu_tiny_guest_launch_exit": {
                **QEMU_ANCHOR,
                "measured_in_this_run": qemu is not None,
                "qemu_error": qemu_error,
            },
        },
        "results": r,
        "goals": g,
        "medians": m,
        "vm_stats": stats,
        "commands": commands,
        "samples": samples,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "process.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    plot(samples, m, r, args.file_mib, args.out / "process.png")
    print_table(r, g, args.file_mib)
    for name, stat in stats.items():
        print(f"--stats {name}: {' '.join(stat['stderr'].split())[:300]}")
    print(f"wrote {args.out / 'process.json'} and {args.out / 'process.png'}")


if __name__ == "__main__":
    main()
