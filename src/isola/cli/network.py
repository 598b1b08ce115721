"""`isola network create|ls|rm`: a tenant's isolated networks (a bridge in a namespace of its own each)."""

from __future__ import annotations

from typing import Any

import click

from isola.cli import connect
from isola.cli.output import emit, json_option, stdout, table


def _render(networks: list[dict[str, Any]]) -> None:
    rows = [
        [n["name"], n["id"][:12], n["tenant_id"][:12], n["subnet"], n["namespace"],
         ", ".join(f"{i[:12]}={ip}" for i, ip in n["attached"].items())]
        for n in networks
    ]  # fmt: skip
    stdout.print(table(None, ["name", "id", "tenant", "subnet", "namespace", "attached"], rows))


@click.group()
def network() -> None:
    """Isolated tenant networks: metal instances attach with `--network NAME`; two networks never meet."""


@network.command("create")
@click.argument("name")
@click.option("--subnet", metavar="CIDR", default=None, help="IPv4 subnet, /8 to /29 [10.88.0.0/24].")
@click.option("--tenant", default=None, help="Whose network (an admin must say; a tenant: itself).")
@json_option
def create_cmd(name: str, subnet: str | None, tenant: str | None, as_json: bool) -> None:
    """Create network NAME (counts against the tenant's `networks` quota)."""
    with connect.client() as c:
        emit(c.create_network(name, subnet, tenant), lambda d: _render([d]), as_json)


@network.command("ls")
@json_option
def ls_cmd(as_json: bool) -> None:
    """The networks (a tenant: its own), with what is attached."""
    with connect.client() as c:
        emit(c.networks(), _render, as_json)


@network.command("rm")
@click.argument("ref")
def rm_cmd(ref: str) -> None:
    """Delete network REF (id or name); refused while instances are attached."""
    with connect.client() as c:
        c.delete_network(ref)
