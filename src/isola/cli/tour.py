"""`isola tour`: one workload on every rung of the ladder — for each rung, what exists today and what it costs.

A rung is shown as runnable only when isola has an engine for it *and* this host can run it; otherwise the
tour says which of the two is missing, so it never claims more than the code does.
"""

from __future__ import annotations

from typing import Any

import click

from isola.cli.output import emit, json_option, stdout, table
from isola.doctor import facts as host_facts
from isola.doctor.verdicts import Status, judge
from isola.engine import ENGINES, Kind

RUNGS: dict[Kind, str] = {
    Kind.EMULATED: "riscv64 instructions run by software",
    Kind.VM: "KVM hardware virtualization",
    Kind.CONTAINER: "namespaces + cgroups, host kernel",
    Kind.METAL: "a whole host for one tenant",
}


def plan() -> list[dict[str, Any]]:
    verdicts = judge(host_facts.gather())
    rows = []
    for v in verdicts:
        kind = Kind(v.kind)
        has_engine = kind in ENGINES
        if has_engine and v.status is not Status.UNUSABLE:
            step = "runs"
        elif has_engine:
            step = "engine built, host cannot run it"
        else:
            step = "no engine yet"
        rows.append(
            {
                "kind": v.kind,
                "mode": v.mode,
                "isolation": RUNGS[kind],
                "engine": ENGINES.get(kind),
                "host": v.status.value,
                "host_reason": v.reason,
                "tour": step,
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
                    r["tour"],
                ]
                for r in rows
            ],
        )
    )
    runnable = [r for r in rows if r["tour"] == "runs"]
    if not runnable:
        stdout.print(
            "\nNo rung can run a workload yet: isola has the host checks, guest assets and state store, "
            "and no engine. The tour runs one workload per rung as the engines land."
        )


@click.command()
@json_option
def tour(as_json: bool) -> None:
    """Walk the isolation ladder: which rungs exist, and one workload on each that does."""
    emit(plan(), render, as_json)
