"""`isola container`: docker's verbs over isola's images and `isola-oci`.

    isola container run [-d] [-i] [-t] [--rm] [--name N] [-e K=V] [-v HOST:CTR[:ro]] [-w DIR] [--user U]
                        [--cpus F] [--memory M] [--pids-limit N] [--network none|host] IMAGE [CMD...]
    isola container ps [-a] · logs [-f] · exec [-i] [-t] · stop [-t] · kill [-s] · rm [-f] · inspect

Exit statuses follow docker's for `run` and `exec`: the container's own status, 125 when isola itself failed,
126 when the program cannot be executed, 127 when it does not exist. Other verbs exit as every isola command.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from rich.markup import escape

from isola.cli.output import emit, json_option, stderr, stdout, table
from isola.errors import IsolaError, UsageError

F = TypeVar("F", bound=Callable[..., Any])
ISOLA_FAILED = 125


def docker_status(func: F) -> F:
    """Errors of `run`/`exec` exit 125 (or 126/127 for the program), so they never pass for the container's own
    status, which is what these commands exit with otherwise."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from isola.container.containers.runtime import CommandError

        try:
            return func(*args, **kwargs)
        except IsolaError as err:
            stderr.print(f"[bold red]isola: error:[/] {escape(err.message)}")
            if err.hint:
                stderr.print(f"[dim]hint: {escape(err.hint)}[/]")
            sys.exit(err.status if isinstance(err, CommandError) else ISOLA_FAILED)

    return wrapper  # type: ignore[return-value]


def _store() -> Any:
    from isola.container.containers.store import ContainerStore

    return ContainerStore()


@click.group()
def container() -> None:
    """Run and manage containers (docker's verbs), confined by isola's default profile."""


@container.command(context_settings={"allow_interspersed_args": False})
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("-d", "--detach", is_flag=True, help="Run in the background and print the container's id.")
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin open (in the foreground).")
@click.option("-t", "--tty", is_flag=True, help="Give the container a terminal.")
@click.option("--rm", "auto_remove", is_flag=True, help="Remove the container when it exits.")
@click.option("--name", help="Name the container.")
@click.option("-e", "--env", multiple=True, help="KEY=VALUE (or KEY: the caller's value).")
@click.option("-v", "--volume", multiple=True, help="HOST:CONTAINER[:ro] bind mount.")
@click.option("-w", "--workdir", help="The program's working directory.")
@click.option("-u", "--user", help="USER[:GROUP] by name or number.")
@click.option("--cpus", help="CPU time limit, in CPUs (0.5 = half of one).")
@click.option("-m", "--memory", help="Memory limit (64m, 1g); no swap beyond it.")
@click.option("--pids-limit", type=int, help="The most processes the container may have.")
@click.option("--network", default="none", show_default=True, type=click.Choice(["none", "host"]))
@click.option("--security-opt", multiple=True, help="seccomp=unconfined turns the default seccomp profile off.")
@docker_status
def run(
    image: str,
    command: tuple[str, ...],
    detach: bool,
    interactive: bool,
    tty: bool,
    auto_remove: bool,
    name: str | None,
    env: tuple[str, ...],
    volume: tuple[str, ...],
    workdir: str | None,
    user: str | None,
    cpus: str | None,
    memory: str | None,
    pids_limit: int | None,
    network: str,
    security_opt: tuple[str, ...],
) -> None:
    """Run COMMAND (or the image's) in a new container of IMAGE."""
    from isola.container.containers import bundle, lifecycle

    if pids_limit is not None and pids_limit <= 0:
        pids_limit = None  # docker: 0 or -1 means unlimited
    opts = bundle.RunOptions(
        command=list(command),
        env=list(env),
        volumes=list(volume),
        workdir=workdir,
        user=user,
        cpus=bundle.parse_cpus(cpus) if cpus is not None else None,
        memory=bundle.parse_memory(memory) if memory is not None else None,
        pids_limit=pids_limit,
        network=network,
        tty=tty,
        interactive=interactive,
        seccomp=bundle.parse_security_opt(security_opt),
    )
    store = _store()
    c = lifecycle.prepare(store, image, opts, name, auto_remove)
    if detach:
        lifecycle.run_detached(store, c)
        click.echo(c.id)
        return
    sys.exit(lifecycle.run_foreground(store, c, interactive))


def _row(c: Any) -> list[str]:
    from isola.container.containers.store import live_status

    status = live_status(c)
    shown = f"Exited ({c.exit_code})" if status == "exited" and c.exit_code is not None else status.capitalize()
    return [c.short_id, c.image, " ".join(c.command)[:40], c.created, shown, c.name]


@container.command()
@click.option("-a", "--all", "show_all", is_flag=True, help="Also the containers that are not running.")
@click.option("-q", "--quiet", is_flag=True, help="Only the ids.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@json_option
def ps(show_all: bool, quiet: bool, fmt: str, as_json: bool) -> None:
    """List the running containers (-a: all)."""
    from isola.container.containers.store import live_status

    found = [c for c in _store().containers() if show_all or live_status(c) == "running"]
    if quiet:
        for c in found:
            click.echo(c.short_id)
        return
    docs = [{**c.to_json(), "status": live_status(c)} for c in found]
    rows = [_row(c) for c in found]
    emit(
        docs,
        lambda _: stdout.print(table(None, ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"], rows)),
        as_json or fmt == "json",
    )


@container.command()
@click.argument("ref")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the container writes until it exits.")
def logs(ref: str, follow: bool) -> None:
    """Print what a container wrote: stdout on stdout, stderr on stderr."""
    from isola.container.containers import logs as log_file
    from isola.container.containers.store import live_status

    store = _store()
    c = store.get(ref)
    path = store.log_path(c.id)
    sys.stdout.flush()

    def running() -> bool:
        try:
            return live_status(store.get(c.id)) == "running"
        except IsolaError:
            return False

    entries = log_file.follow(path, running) if follow else iter(log_file.entries(path)[0])
    for stream, data in entries:
        log_file.write_all(2 if stream == "stderr" else 1, data)


@container.command("exec", context_settings={"allow_interspersed_args": False})
@click.argument("ref")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin open.")
@click.option("-t", "--tty", is_flag=True, help="Give the process a terminal.")
@click.option("-e", "--env", multiple=True, help="KEY=VALUE.")
@click.option("-w", "--workdir", help="The working directory.")
@click.option("-u", "--user", help="USER[:GROUP].")
@docker_status
def exec_(
    ref: str,
    command: tuple[str, ...],
    interactive: bool,
    tty: bool,
    env: tuple[str, ...],
    workdir: str | None,
    user: str | None,
) -> None:
    """Run COMMAND in a running container; exit with its status."""
    from isola.container.containers import lifecycle

    c = _store().get(ref)
    if not interactive:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    sys.exit(lifecycle.exec_in(c, list(command), tty=tty, env=list(env), workdir=workdir, user=user))


@container.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("-t", "--time", "timeout", type=float, default=10.0, show_default=True, help="Seconds before SIGKILL.")
def stop(refs: tuple[str, ...], timeout: float) -> None:
    """Stop containers: SIGTERM, then SIGKILL after --time seconds."""
    from isola.container.containers import lifecycle

    store = _store()
    for ref in refs:
        lifecycle.stop(store, store.get(ref), timeout)
        click.echo(ref)


def _signal(text: str) -> int:
    if text.isdigit():
        return int(text)
    name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UsageError(f"--signal {text!r}: unknown signal") from None


@container.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("-s", "--signal", "sig", default="KILL", show_default=True, help="The signal, by name or number.")
def kill(refs: tuple[str, ...], sig: str) -> None:
    """Send a signal to containers' main process."""
    from isola.container.containers import lifecycle

    store = _store()
    signum = _signal(sig)
    for ref in refs:
        lifecycle.kill(store.get(ref), signum)
        click.echo(ref)


@container.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Kill a running container first.")
def rm(refs: tuple[str, ...], force: bool) -> None:
    """Remove containers: their root, upper directory, log and record."""
    from isola.container.containers import lifecycle

    store = _store()
    for ref in refs:
        lifecycle.remove(store, store.get(ref), force)
        click.echo(ref)


@container.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["json"]), default="json", help="Only JSON, as docker's default.")
def inspect(refs: tuple[str, ...], fmt: str) -> None:
    """Show containers' records as JSON: state, image, command, host configuration, paths."""
    from isola.container.containers.store import live_status

    store = _store()
    out = []
    for ref in refs:
        c = store.get(ref)
        doc = c.to_json()
        doc["status"] = live_status(c)
        doc["paths"] = {"dir": str(store.dir(c.id)), "log": str(store.log_path(c.id))}
        out.append(doc)
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
