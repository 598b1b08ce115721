"""`isola events`: what happened to the caller's instances and leases, oldest first."""

from __future__ import annotations

from typing import Any

import click

from isola.cli import connect
from isola.cli.output import emit, json_option, stdout, table


def _render(events: list[dict[str, Any]]) -> None:
    rows = [[str(e["id"]), str(e["at"]), e["tenant_id"][:12], e["kind"], e["object_id"][:12]] for e in events]
    stdout.print(table(None, ["id", "at", "tenant", "event", "object"], rows))


@click.command()
@click.option("--since", type=click.IntRange(min=0), default=0, show_default=True,
              help="Only events after this id (the last one seen).")  # fmt: skip
@json_option
def events(since: int, as_json: bool) -> None:
    """Instance and lease state changes (a tenant: its own; the admin: everyone's)."""
    with connect.client() as c:
        emit(c.events(since), _render, as_json)
