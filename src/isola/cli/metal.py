"""`isola metal lease|release|ls`: whole hosts leased to one tenant, cleaned on release."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click

from isola.cli import connect
from isola.cli.output import emit, json_option, stdout, table


def _render(leases: list[dict[str, Any]]) -> None:
    rows = [[x["id"][:12], x["host_id"][:12], x["tenant_id"][:12], x["state"], str(x["starts_at"]),
             str(x["ends_at"] or ""), _left(x), str(x["released_at"] or "")] for x in leases]  # fmt: skip
    stdout.print(table(None, ["lease", "host", "tenant", "state", "since", "until", "left", "released"], rows))


def _left(lease: dict[str, Any]) -> str:
    """The time an active lease with an end has left, to the second (`0s` once due: the daemon releases it)."""
    if lease["state"] != "active" or not lease["ends_at"]:
        return ""
    seconds = int((datetime.fromisoformat(lease["ends_at"]) - datetime.now(UTC)).total_seconds())
    return str(timedelta(seconds=seconds)) if seconds > 0 else "0s"


@click.group()
def metal() -> None:
    """Bare metal: lease a whole host to one tenant; release cleans it before it is shared again."""


@metal.command("lease")
@click.argument("host")
@click.option("--tenant", required=True, help="Who gets the host (id or name).")
@click.option("--until", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="When it ends (local time unless an offset is given); then it is released and cleaned.")  # fmt: skip
@click.option("--drain", is_flag=True,
              help="Move other tenants' instances to other hosts (all of them, or nothing happens).")  # fmt: skip
@json_option
def lease_cmd(host: str, tenant: str, until: datetime | None, drain: bool, as_json: bool) -> None:
    """Lease HOST to a tenant: from now on only its instances are placed there. Refused while other tenants'
    instances run on it, unless --drain."""
    when = None if until is None else (until if until.tzinfo else until.astimezone()).isoformat()
    with connect.client() as c:
        emit(c.lease(host, tenant, when, drain=drain), lambda d: _render([d]), as_json)


@metal.command("release")
@click.argument("ref")
@json_option
def release_cmd(ref: str, as_json: bool) -> None:
    """End lease REF (or HOST's lease) and clean the host: every instance of the tenant there is deleted.
    Exit status 1 when cleaning failed (the host stays out of the pool, `clean-failed`)."""
    with connect.client() as c:
        doc = c.release(ref)

    def render(d: dict[str, Any]) -> None:
        _render([d["lease"]])
        stdout.print(f"cleaning deleted {len(d['deleted'])} instances")
        for instance, why in d["failures"].items():
            stdout.print(f"[red]not cleaned:[/] {instance}: {why}")

    emit(doc, render, as_json)
    if doc["failures"]:
        raise click.exceptions.Exit(1)


@metal.command("ls")
@json_option
def ls_cmd(as_json: bool) -> None:
    """Leases, history included (a tenant: its own)."""
    with connect.client() as c:
        emit(c.leases(), _render, as_json)
