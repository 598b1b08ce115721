"""`isola instance create|start|stop|kill|rm|ls|show|logs|exec|console`: instances through isolad.

Instances are named by name or id. `create -- COMMAND...` takes the guest's program and arguments after `--`;
`--json` prints what the API answered, for scripts.
"""

from __future__ import annotations

import signal as signals
import sys
from typing import Any

import click

from isola.cli import connect
from isola.cli.output import emit, json_option, stderr, stdout, table


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        out[key] = value
    return out


def _render_list(instances: list[dict[str, Any]]) -> None:
    rows = [
        [
            i["name"],
            i["id"][:12],
            i["kind"] + (f"/{i['mode']}" if i["mode"] else ""),
            i["state"],
            str(i["resources"]["vcpus"]),
            f"{i['resources']['memory_mib']} MiB",
            " ".join(f"{k}={v}" for k, v in i["labels"].items()),
        ]
        for i in instances
    ]
    stdout.print(table(None, ["name", "id", "kind", "state", "vcpus", "memory", "labels"], rows))


def _render_one(i: dict[str, Any]) -> None:
    rows = [[k, str(v)] for k, v in i.items() if k != "resources"]
    rows += [[k, str(v)] for k, v in i["resources"].items()]
    stdout.print(table(f"instance {i['name']}", ["", ""], rows, header=False))


@click.group()
def instance() -> None:
    """Instances on every rung, through isolad ($ISOLA_TOKEN acts as a tenant; root is the admin)."""


@instance.command("create")
@click.argument("name")
@click.option("--kind", type=click.Choice(["emulated", "vm", "container", "metal"]), required=True)
@click.option("--mode", type=click.Choice(["kernel", "process"]), default=None, help="For a vm.")
@click.option("--cpus", "vcpus", type=int, default=1, show_default=True)
@click.option("--memory", "memory_mib", type=int, default=256, show_default=True, help="MiB")
@click.option("--disk", "disk_gib", type=int, default=0, show_default=True, help="GiB")
@click.option("--image", default=None, help="A root directory (process VM), initramfs (kernel VM), image ref.")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE")
@click.option("--label", "-l", multiple=True, metavar="KEY=VALUE")
@click.option("--affinity", multiple=True, metavar="KEY=VALUE", help="Place next to an instance with this label.")
@click.option("--anti-affinity", multiple=True, metavar="KEY=VALUE", help="Avoid hosts with such an instance.")
@click.option("--network", multiple=True, metavar="NAME", help="Attach to this network of the tenant (metal).")
@click.option("--tenant", default=None, help="Whose instance (an admin must say).")
@click.option("--start", is_flag=True, help="Start it at once.")
@click.argument("command", nargs=-1)
@json_option
def create_cmd(
    name: str,
    kind: str,
    mode: str | None,
    vcpus: int,
    memory_mib: int,
    disk_gib: int,
    image: str | None,
    env: tuple[str, ...],
    label: tuple[str, ...],
    affinity: tuple[str, ...],
    anti_affinity: tuple[str, ...],
    network: tuple[str, ...],
    tenant: str | None,
    start: bool,
    command: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create instance NAME running COMMAND (after `--`)."""
    spec = {
        "name": name,
        "kind": kind,
        "mode": mode,
        "resources": {"vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": disk_gib},
        "image": image,
        "command": list(command),
        "env": _pairs(env, "--env"),
        "labels": _pairs(label, "--label"),
        "affinity": list(affinity),
        "anti_affinity": list(anti_affinity),
        "networks": list(network),
        "tenant": tenant,
        "start": start,
    }
    with connect.client() as c:
        emit(c.create_instance(spec), _render_one, as_json)


@instance.command("ls")
@click.option("--tenant", default=None, help="An admin: only this tenant's.")
@json_option
def ls_cmd(tenant: str | None, as_json: bool) -> None:
    """The caller's instances (an admin: everyone's)."""
    with connect.client() as c:
        emit(c.instances(tenant), _render_list, as_json)


@instance.command("show")
@click.argument("ref")
@json_option
def show_cmd(ref: str, as_json: bool) -> None:
    """One instance, its state asked of its engine."""
    with connect.client() as c:
        emit(c.instance(ref), _render_one, as_json)


@instance.command("start")
@click.argument("ref")
@json_option
def start_cmd(ref: str, as_json: bool) -> None:
    """Start REF; returns once it runs."""
    with connect.client() as c:
        emit(c.action(ref, "start"), _render_one, as_json)


@instance.command("stop")
@click.argument("ref")
@click.option("--timeout", "timeout_s", type=float, default=10.0, show_default=True, help="Seconds before SIGKILL")
@json_option
def stop_cmd(ref: str, timeout_s: float, as_json: bool) -> None:
    """Stop REF: SIGTERM, then SIGKILL after --timeout."""
    with connect.client() as c:
        emit(c.action(ref, "stop", {"timeout_s": timeout_s}), _render_one, as_json)


@instance.command("kill")
@click.argument("ref")
@click.option("--signal", "-s", "sig", default="KILL", show_default=True, help="Name (TERM) or number (15)")
@json_option
def kill_cmd(ref: str, sig: str, as_json: bool) -> None:
    """Send a signal to REF's guest."""
    if sig.isdigit():
        number = int(sig)
    else:
        try:
            number = int(signals.Signals["SIG" + sig.upper().removeprefix("SIG")])
        except KeyError:
            raise click.BadParameter(f"{sig!r} is not a signal", param_hint="--signal") from None
    with connect.client() as c:
        emit(c.action(ref, "kill", {"signal": number}), _render_one, as_json)


@instance.command("rm")
@click.argument("refs", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True, help="Kill a running one first.")
def rm_cmd(refs: tuple[str, ...], force: bool) -> None:
    """Delete instances."""
    with connect.client() as c:
        for ref in refs:
            c.delete_instance(ref, force=force)


@instance.command("logs")
@click.argument("ref")
@click.option("--tail", "tail_bytes", type=click.IntRange(min=1), default=65536, show_default=True, help="Bytes")
def logs_cmd(ref: str, tail_bytes: int) -> None:
    """What REF's guest wrote to its console (the end of it)."""
    with connect.client() as c:
        data = c.logs(ref, tail_bytes)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@instance.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("ref")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(ref: str, env: tuple[str, ...], argv: tuple[str, ...]) -> None:
    """Run ARGV inside REF; its output is shown and its exit status is this command's."""
    with connect.client() as c:
        code, out, err = c.exec(ref, list(argv), _pairs(env, "--env"))
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(err)
    sys.stderr.buffer.flush()
    raise click.exceptions.Exit(code)


@instance.command("console")
@click.argument("ref")
def console_cmd(ref: str) -> None:
    """Attach to REF's console (Ctrl-] detaches); from a pipe, send stdin, then show output until quiet."""
    from isola.cli.attach import attach  # websockets: only for the console

    with connect.client() as c, c.console(ref) as ws:
        why = attach(ws)
    if sys.stdin.isatty():
        stderr.print(f"\r\nisola: {why}")
