"""`isola tour`: one workload on every rung of the ladder — for each rung, what exists today and what it costs.

A rung runs its workload only when isola has the engine for it *and* this host can run it; otherwise the tour
says which of the two is missing, so it never claims more than the code does.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from isola import paths
from isola.assets import manifest
from isola.cli.output import emit, json_option, stdout, table
from isola.doctor import facts as host_facts
from isola.doctor.verdicts import Status, judge
from isola.engine import Kind
from isola.errors import NotFoundError

RUNGS: dict[Kind, str] = {
    Kind.EMULATED: "riscv64 instructions run by software",
    Kind.VM: "KVM hardware virtualization",
    Kind.CONTAINER: "namespaces + cgroups, host kernel",
    Kind.METAL: "a whole host for one tenant",
}


def _emulated() -> list[str]:
    busybox = manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "riscv64", "busybox")
    return [
        sys.executable,
        "-m",
        "isola.emu",
        str(busybox),
        "sh",
        "-c",
        "echo $(uname -m): $(seq 1 10 | sort -rn | head -n 3)",
    ]


def _vm_kernel() -> list[str]:
    return [sys.executable, "-m", "isola.cli", "vm", "run", "--timeout", "300"]


def _vm_process() -> list[str]:
    busybox = manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "amd64", "busybox")
    script = "echo $(uname -m) at CPL 3, PID $$: $(seq 1 10 | sort -rn | head -n 3)"
    return [sys.executable, "-m", "isola.vmm.command", "run", "--process", "--", str(busybox), "sh", "-c", script]


def _container() -> list[str]:
    """`isola container run` of busybox, building the image from the cached asset first if the store lacks it
    (a missing asset is NotFoundError: the rung needs assets)."""
    from isola.container.images.build import busybox_image
    from isola.container.images.store import ImageStore

    images = ImageStore()
    try:
        images.get("busybox")
    except NotFoundError:
        images.add(busybox_image(), ["busybox:latest"])
    script = "echo in a container, PID $$: $(seq 1 10 | sort -rn | head -n 3)"
    return [sys.executable, "-m", "isola.cli", "container", "run", "--rm", "busybox", "sh", "-c", script]


# (kind, mode) -> (the engine's command, a function giving the workload's argv, the marker of the output line
# to show). A rung appears here when its engine lands.
WORKLOADS: dict[tuple[str, str | None], tuple[str, Callable[[], list[str]], str]] = {
    ("emulated", None): ("isola-emu", _emulated, "riscv64:"),
    ("vm", "kernel"): ("isola-vmm", _vm_kernel, "hello from a VM"),
    ("vm", "process"): ("isola-vmm run --process", _vm_process, "at CPL 3"),
    ("container", None): ("isola container run", _container, "in a container"),
}


def _run(argv: Callable[[], list[str]], marker: str) -> tuple[str, float | None]:
    try:
        cmd = argv()
    except NotFoundError as err:
        return f"needs assets: {err.hint or err.message}", None
    t0 = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [""])[-1]  # a traceback's last line says what went wrong
        return f"failed ({result.returncode}): {last[:200]}", wall
    shown = [line.strip() for line in result.stdout.splitlines() if marker in line]
    return (shown[-1] if shown else result.stdout.strip()[-200:]), wall


def plan() -> list[dict[str, Any]]:
    rows = []
    for v in judge(host_facts.gather()):
        engine = WORKLOADS.get((v.kind, v.mode))
        output, wall = None, None
        if engine is None:
            step = "no engine yet"
        elif v.status is Status.UNUSABLE:
            step = "engine built, host cannot run it"
        else:
            output, wall = _run(engine[1], engine[2])
            step = "ran" if wall is not None and not output.startswith("failed") else output
        rows.append(
            {
                "kind": v.kind,
                "mode": v.mode,
                "isolation": RUNGS[Kind(v.kind)],
                "engine": engine[0] if engine else None,
                "host": v.status.value,
                "host_reason": v.reason,
                "tour": step,
                "output": output,
                "seconds": round(wall, 3) if wall is not None else None,
            }
        )
    return rows


def render(rows: list[dict[str, Any]]) -> None:
    stdout.print(
        table(
            "The isolation ladder on this host",
            ["rung", "isolation", "engine", "host", "tour"],
            [
                [
                    r["kind"] + (f" ({r['mode']})" if r["mode"] else ""),
                    r["isolation"],
                    r["engine"] or "[dim]not built[/]",
                    r["host"],
                    f"{r['output']} [dim]({r['seconds']} s)[/]" if r["tour"] == "ran" else r["tour"],
                ]
                for r in rows
            ],
        )
    )


@click.command()
@json_option
def tour(as_json: bool) -> None:
    """Walk the isolation ladder: which rungs exist, and one workload on each that does."""
    emit(plan(), render, as_json)
