"""`isola tenant create|ls|show|quota|token|rm`: tenants and their quotas, through isolad."""

from __future__ import annotations

from typing import Any

import click

from isola.cli import connect
from isola.cli.output import emit, json_option, stdout, table
from isola.platform.quotas import QUOTAS


def _quota_options(f: Any) -> Any:
    for name in reversed(QUOTAS):
        f = click.option(
            f"--{name.replace('_', '-')}", name, type=click.IntRange(min=0), default=None,
            help=f"Quota on {name.replace('_', ' ')}",
        )(f)  # fmt: skip
    return f


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def _render_tenants(tenants: list[dict[str, Any]]) -> None:
    rows = [[t["name"], t["id"], *(_limit(t["quotas"][q]) for q in QUOTAS)] for t in tenants]
    stdout.print(table(None, ["name", "id", *QUOTAS], rows))


@click.group()
def tenant() -> None:
    """Tenants: who may hold instances, and how much (admin: root on isolad's socket)."""


@tenant.command("create")
@click.argument("name")
@_quota_options
@json_option
def create_cmd(name: str, as_json: bool, **quotas: int | None) -> None:
    """Create tenant NAME; prints its token once (only a hash is kept). Quotas not given are unlimited."""
    with connect.client() as c:
        doc = c.create_tenant(name, {k: v for k, v in quotas.items() if v is not None})

    def render(d: dict[str, Any]) -> None:
        _render_tenants([d["tenant"]])
        stdout.print(f"token (shown once): [bold]{d['token']}[/]")

    emit(doc, render, as_json)


@tenant.command("ls")
@json_option
def ls_cmd(as_json: bool) -> None:
    """Every tenant (a tenant's token: itself)."""
    with connect.client() as c:
        emit(c.tenants(), _render_tenants, as_json)


@tenant.command("show")
@click.argument("ref")
@json_option
def show_cmd(ref: str, as_json: bool) -> None:
    """One tenant with its quotas and what it holds now."""
    with connect.client() as c:
        doc = c.tenant(ref)

    def render(d: dict[str, Any]) -> None:
        rows = [[q, str(d["usage"][q]), _limit(d["quotas"][q])] for q in QUOTAS]
        stdout.print(table(f"tenant {d['name']} ({d['id']})", ["quota", "holds", "may hold"], rows))

    emit(doc, render, as_json)


@tenant.command("quota")
@click.argument("ref")
@_quota_options
@click.option("--unlimited", multiple=True, type=click.Choice(QUOTAS), help="Lift this quota (repeatable).")
@json_option
def quota_cmd(ref: str, unlimited: tuple[str, ...], as_json: bool, **quotas: int | None) -> None:
    """Change some quotas of tenant REF; the others stay."""
    changes: dict[str, int | None] = {k: v for k, v in quotas.items() if v is not None}
    changes.update(dict.fromkeys(unlimited))
    if not changes:
        raise click.UsageError("give at least one quota to change")
    with connect.client() as c:
        emit(c.set_quotas(ref, changes), lambda d: _render_tenants([d]), as_json)


@tenant.command("token")
@click.argument("ref")
def token_cmd(ref: str) -> None:
    """Issue a new token for tenant REF; the old one stops working at once."""
    with connect.client() as c:
        click.echo(c.rotate_token(ref))


@tenant.command("rm")
@click.argument("ref")
def rm_cmd(ref: str) -> None:
    """Delete tenant REF (it must hold nothing)."""
    with connect.client() as c:
        c.delete_tenant(ref)
