"""`isola compare WORKLOAD`: the same busybox workload on every rung this host can run, timed side by side.

What each rung costs is measured, not claimed: the same busybox applet with the same input runs emulated
(riscv64 busybox under isola-emu), in a process VM (amd64 busybox under `isola-vmm run --process`), in a
container (`isola-oci run` of a bundle holding only busybox) and on metal (directly, in a cgroup of its own,
as the metal engine runs a tenant's program). Start-up is the wall time of `busybox true` on the rung; run
time the wall time of the workload; both include launching the rung's tool, which is part of its cost. Every
rung must print the same answer, or the row says so. A rung this host cannot run is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from isola import paths
from isola.assets import manifest
from isola.cli.output import emit, json_option, stdout, table
from isola.doctor import facts as host_facts
from isola.doctor.verdicts import Status, judge
from isola.engine import Resources
from isola.errors import IsolaError
from isola.metal import enter
from isola.metal.cgroup import InstanceGroup

TIMEOUT_SECONDS = 600.0
WORKLOADS: dict[str, tuple[Callable[[int], list[str]], int, int]] = {
    "awk": (lambda n: ["awk", f"BEGIN {{ s = 0; for (i = 0; i < {n}; i++) s += i; print s }}"], 2_000, 100_000),
    "sha256": (lambda n: ["sh", "-c", f"seq 1 {n} | sha256sum"], 5_000, 200_000),
}
"""name -> (busybox arguments for a size, the --quick size, the full size)."""


@dataclass
class Rung:
    """How to run busybox ARGS on one rung: `argv(args)`, and what the child does before exec (metal)."""

    name: str
    argv: Callable[[list[str]], list[str]]
    preexec: Callable[[], None] | None = None


def _busybox(arch: str) -> Path:
    return manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), arch, "busybox")


@contextmanager
def _rungs(verdicts: dict[str, tuple[Status, str]]) -> Iterator[dict[str, Rung | str]]:
    """Each rung, or why it is skipped; what the rungs need (a bundle, a cgroup) is removed afterwards."""
    found: dict[str, Rung | str] = {}
    with ExitStack() as stack:
        for name, make in (("emulated", _emulated), ("vm/process", _vm), ("container", _container), ("metal", _metal)):
            status, reason = verdicts.get(name, (Status.UNUSABLE, "not judged"))
            if status is Status.UNUSABLE:
                found[name] = f"this host cannot: {reason}"
                continue
            try:
                found[name] = make(stack)
            except IsolaError as err:
                found[name] = err.message + (f" ({err.hint})" if err.hint else "")
        yield found


def _emulated(stack: ExitStack) -> Rung:
    busybox = str(_busybox("riscv64"))
    return Rung("emulated", lambda args: [sys.executable, "-m", "isola.emu", busybox, *args])


def _vm(stack: ExitStack) -> Rung:
    busybox = str(_busybox("amd64"))
    launcher = [sys.executable, "-m", "isola.vmm.command", "run", "--process", "--"]
    return Rung("vm/process", lambda args: [*launcher, busybox, *args])


def _container(stack: ExitStack) -> Rung:
    busybox = _busybox("amd64")
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="isola-compare-")))
    (work / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy2(busybox, work / "rootfs" / "bin" / "busybox")
    runtime = Path(sys.executable).parent / "isola-oci"  # the console script installed with isola
    if not runtime.is_file():
        raise IsolaError(f"{runtime} is not installed", hint="pip install -e . in isola's venv")
    oci = [str(runtime), "--root", str(work / "state")]
    made = subprocess.run([*oci, "spec", "--bundle", str(work)], capture_output=True, text=True, check=False)
    if made.returncode != 0 or not (work / "config.json").is_file():
        raise IsolaError(f"isola-oci spec failed: {made.stderr.strip()[-200:] or 'no config.json'}")
    config = json.loads((work / "config.json").read_text())

    def argv(args: list[str]) -> list[str]:
        config["process"].update(terminal=False, args=["/bin/busybox", *args])
        (work / "config.json").write_text(json.dumps(config))
        return [*oci, "run", "--bundle", str(work), f"compare-{uuid.uuid4().hex[:12]}"]

    return Rung("container", argv)


def _metal(stack: ExitStack) -> Rung:
    busybox = str(_busybox("amd64"))
    group = InstanceGroup(f"compare-{os.getpid()}")
    group.create(Resources(vcpus=os.cpu_count() or 1, memory_mib=4096))
    stack.callback(group.remove)
    stack.callback(group.kill_all)
    return Rung("metal", lambda args: [busybox, *args], preexec=lambda: enter.enter(group.dirs, None))


def _timed(rung: Rung, args: list[str]) -> tuple[float, str]:
    """Wall seconds and output of busybox ARGS on `rung`; IsolaError when it fails."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            rung.argv(args),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
            preexec_fn=rung.preexec,  # `isola compare` is single-threaded: safe
        )
    except subprocess.TimeoutExpired:
        raise IsolaError(f"did not finish within {TIMEOUT_SECONDS:.0f} s") from None
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise IsolaError(f"failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-200:]}")
    return seconds, done.stdout.strip()


def measure(workload: str, quick: bool) -> dict[str, Any]:
    """The comparison as data: one row per rung."""
    make, quick_size, full_size = WORKLOADS[workload]
    size = quick_size if quick else full_size
    found = host_facts.gather()
    verdicts = {v.kind + (f"/{v.mode}" if v.mode else ""): (v.status, v.reason) for v in judge(found)}
    rows: list[dict[str, Any]] = []
    with _rungs(verdicts) as rungs:
        for name, rung in rungs.items():
            row: dict[str, Any] = {"rung": name, "startup_s": None, "run_s": None, "vs_metal": None, "output": None}
            if isinstance(rung, str):
                row["skipped"] = rung
            else:
                try:
                    row["startup_s"] = round(_timed(rung, ["true"])[0], 4)
                    run_s, output = _timed(rung, make(size))
                    row["run_s"], row["output"] = round(run_s, 4), output
                except IsolaError as err:
                    row["skipped"] = err.message
            rows.append(row)
    metal = next((r["run_s"] for r in rows if r["rung"] == "metal" and r["run_s"]), None)
    outputs = {r["output"] for r in rows if r["output"] is not None}
    for row in rows:
        if metal and row["run_s"]:
            row["vs_metal"] = round(row["run_s"] / metal, 2)
        row["agrees"] = row["output"] is None or len(outputs) == 1
    return {"workload": workload, "size": size, "argv": ["busybox", *make(size)], "rungs": rows}


def render(doc: dict[str, Any]) -> None:
    rows = []
    for r in doc["rungs"]:
        if r.get("skipped"):
            rows.append([r["rung"], "", "", "", f"[dim]skipped: {r['skipped']}[/]"])
            continue
        shown = r["output"] if r["agrees"] else f"[red]{r['output']} (differs)[/]"
        ratio = f"{r['vs_metal']}x" if r["vs_metal"] is not None else ""
        rows.append([r["rung"], f"{r['startup_s']:.3f}", f"{r['run_s']:.3f}", ratio, shown])
    title = f"{doc['workload']}: {' '.join(doc['argv'])}"
    stdout.print(table(title, ["rung", "start-up s", "run s", "vs metal", "output"], rows))


@click.command()
@click.argument("workload", type=click.Choice(sorted(WORKLOADS)))
@click.option("--quick", is_flag=True, help="A small size: seconds, not minutes (the emulator is slow).")
@json_option
def compare(workload: str, quick: bool, as_json: bool) -> None:
    """Run WORKLOAD (awk: a CPU-bound loop; sha256: hashing a stream) on every rung this host can run."""
    emit(measure(workload, quick), render, as_json)
