"""`isola daemon start|stop|status`: the isolad behind the CLI."""

from __future__ import annotations

import os
import signal
import time

import click

from isola import paths
from isola.cli import connect
from isola.cli.output import emit, json_option, stdout, table
from isola.errors import EngineError
from isola.host import unix_socket

STOP_SECONDS = 15.0


@click.group()
def daemon() -> None:
    """The isolad daemon: tenants, quotas, instances, the scheduler (see docs/platform.md)."""


@daemon.command("start")
def start_cmd() -> None:
    """Start isolad detached on $ISOLA_SOCKET (default /run/isola/isolad.sock), unless it already runs."""
    sock = paths.isolad_socket()
    if unix_socket.serving(sock):
        click.echo(f"isolad already serves on {sock}")
        return
    pid = connect.start_daemon(sock)
    click.echo(f"isolad started (pid {pid}) on {sock}; log: {connect.log_path()}")


@daemon.command("stop")
def stop_cmd() -> None:
    """Stop isolad (SIGTERM). Guests keep running; the next isolad finds them."""
    sock = paths.isolad_socket()
    if not unix_socket.serving(sock):
        click.echo(f"isolad is not running on {sock}")
        return
    with connect.client(start=False) as c:
        pid = int(c.system()["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while unix_socket.serving(sock):
        if time.monotonic() > deadline:
            raise EngineError(f"isolad (pid {pid}) did not stop within {STOP_SECONDS:.0f} s")
        time.sleep(0.05)
    click.echo(f"isolad (pid {pid}) stopped")


@daemon.command("status")
@json_option
def status_cmd(as_json: bool) -> None:
    """Whether isolad runs, and which: pid, host, socket, store, engines. Exit status 3 when it does not."""
    sock = paths.isolad_socket()
    if not unix_socket.serving(sock):
        emit({"running": False, "socket": str(sock)}, lambda d: click.echo(f"isolad is not running on {sock}"), as_json)
        raise click.exceptions.Exit(3)
    with connect.client(start=False) as c:
        doc = {"running": True, **c.system()}

    def render(d: dict[str, object]) -> None:
        rows = [[k, str(v if not isinstance(v, list) else ", ".join(map(str, v)))] for k, v in d.items()]
        stdout.print(table("isolad", ["", ""], rows, header=False))

    emit(doc, render, as_json)
