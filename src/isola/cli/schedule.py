"""`isola schedule --dry-run SPEC` and `isola host ls`: where an instance would go, and the hosts."""

from __future__ import annotations

import json
from typing import Any

import click

from isola.cli import connect
from isola.cli.output import emit, json_option, stdout, table
from isola.errors import InvalidSpecError, UsageError


def _render_decision(d: dict[str, Any]) -> None:
    rows = [[c["host"], f"{c['score']:.3f}", "[green]chosen[/]" if c["host"] == d["chosen"] else ""] for c in
            d["candidates"]]  # fmt: skip
    rows += [[host, "", f"[red]filtered:[/] {why}"] for host, why in d["rejected"].items()]
    stdout.print(table(None, ["host", "score", ""], rows))
    if d["chosen"] is None:
        stdout.print("[red]no host can take it[/]")


@click.command("schedule")
@click.option("--dry-run", is_flag=True, help="Only show the decision (the one mode: creating places for real).")
@click.argument("spec", type=click.File("r"))
@json_option
def schedule(dry_run: bool, spec: Any, as_json: bool) -> None:
    """Where the instance SPEC (a JSON file like POST /v1/instances takes; `-` for stdin) would go: the
    candidates with their scores, and why each other host was filtered out."""
    if not dry_run:
        raise UsageError("isola schedule only has --dry-run: `isola instance create` places for real")
    try:
        doc = json.load(spec)
    except ValueError as err:
        raise InvalidSpecError(f"{spec.name} is not JSON: {err}") from None
    with connect.client() as c:
        emit(c.schedule(doc), _render_decision, as_json)


@click.group("host")
def host() -> None:
    """The hosts isolad schedules onto."""


@host.command("ls")
@json_option
def host_ls(as_json: bool) -> None:
    """Every host: what it offers, its capacity and its load."""

    def render(hosts: list[dict[str, Any]]) -> None:
        rows = [
            [
                h["name"],
                h["state"],
                ", ".join(h["offers"]),
                f"{h['used_vcpus']}/{h['vcpus']}",
                f"{h['used_memory_mib']}/{h['memory_mib']} MiB",
                f"{h['used_disk_gib']}/{h['disk_gib']} GiB",
                str(h["instances"]),
                h["leased_to"] or "",
            ]
            for h in hosts
        ]
        stdout.print(
            table(None, ["host", "state", "offers", "vcpus", "memory", "disk", "instances", "leased to"], rows)
        )

    with connect.client() as c:
        emit(c.hosts(), render, as_json)
