"""`isolad`: serve the platform on a unix socket (and optionally TCP) until SIGTERM or SIGINT.

Start-up does, in order: open the store, register this host, reconcile every instance with its engine (see
`isola.platform.reconcile`), then bind the sockets — so a client that can connect sees true records. The
unix socket is bound here (not by uvicorn) with `isola.host.unix_socket`'s rules: 0600, a stale socket
replaced, a live one refused. On the way out the socket file is removed if it is still ours. Guests are
not touched: they outlive the daemon, and the next one finds them.

One uvicorn server per listener, each stamping its transport on requests (`auth.Transport`); the daemon
handles the signals itself and tells both to finish. Beside them the lease reaper releases, with cleaning, every
lease whose end has passed, every `REAP_SECONDS` (and once at start, in `Platform.open`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import uvicorn

from isola import errors, paths
from isola.host import unix_socket
from isola.platform.daemon.app import create_app
from isola.platform.daemon.auth import Transport
from isola.platform.leases import Cleaning
from isola.platform.records import Lease
from isola.platform.scheduler.model import Policy, Strategy
from isola.platform.service import Platform

REAP_SECONDS = 2.0
log = logging.getLogger("isolad")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `serve` stops every listener on one signal."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _tcp_listener(address: str) -> socket.socket:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise errors.UsageError(f"--tcp {address}: expected HOST:PORT, e.g. 127.0.0.1:7070")
    try:
        return socket.create_server((host.strip("[]") or "127.0.0.1", int(port)), reuse_port=False)
    except OSError as err:
        raise errors.ConflictError(f"cannot listen on {address}: {err.strerror}") from None


def serve(sock_path: Path, store_path: Path, tcp: str | None = None, policy: Policy | None = None) -> None:
    platform = Platform.open(store_path, socket=sock_path, policy=policy)
    listeners: list[tuple[socket.socket, str]] = []
    try:
        report = platform.reconciled
        print(
            f"isolad: host {platform.host.name}; reconciled: {len(report.changed)} changed, "
            f"{len(report.finished_creates)}/{len(report.undone_creates)} creates finished/undone, "
            f"{len(report.finished_deletes)} deletes finished, {len(report.problems)} problems",
            file=sys.stderr,
            flush=True,
        )
        for instance_id, problem in report.problems.items():
            print(f"isolad: reconcile: {instance_id}: {problem}", file=sys.stderr, flush=True)
        _report_expired(platform.expired)
        sock_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        listeners.append((unix_socket.listen(sock_path, "isolad's socket", backlog=128), "unix"))
        identity = os.stat(sock_path)
        if tcp is not None:
            listeners.append((_tcp_listener(tcp), "tcp"))
        app = create_app(platform)
        servers = [
            (
                _Server(
                    uvicorn.Config(
                        Transport(app, transport),  # type: ignore[arg-type]
                        log_level="warning",
                        access_log=False,
                        lifespan="off",
                        ws="websockets-sansio",
                        timeout_graceful_shutdown=5,
                    )
                ),
                listener,
            )
            for listener, transport in listeners
        ]
        print(f"isolad: serving on {sock_path}" + (f" and tcp {tcp}" if tcp else ""), file=sys.stderr, flush=True)
        try:
            asyncio.run(_run(servers, platform))
        finally:
            unix_socket.remove_if_ours(sock_path, identity)
    finally:
        for listener, _ in listeners:
            listener.close()
        platform.close()


async def _run(servers: list[tuple[_Server, socket.socket]], platform: Platform) -> None:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server, _ in servers:
            server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    reaper = asyncio.create_task(_reap(platform))
    try:
        await asyncio.gather(*(server.serve(sockets=[listener]) for server, listener in servers))
    finally:
        reaper.cancel()  # a release already under way finishes in its thread before asyncio.run returns


async def _reap(platform: Platform) -> None:
    """Release expired leases every REAP_SECONDS; a failure is logged and tried again next time."""
    while True:
        await asyncio.sleep(REAP_SECONDS)
        try:
            _report_expired(await asyncio.to_thread(platform.leases.expire))
        except errors.IsolaError as err:
            log.error("releasing expired leases: %s", err.message)


def _report_expired(expired: list[tuple[Lease, Cleaning]]) -> None:
    for lease, cleaning in expired:
        failed = "".join(f"; {instance}: {why}" for instance, why in cleaning.failures.items())
        print(f"isolad: lease {lease.id} expired: {lease.state}{failed}", file=sys.stderr, flush=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", "sock", type=click.Path(path_type=Path), default=None,
              help=f"Unix socket to serve on [${paths.ISOLAD_SOCKET_VARIABLE}, else "
                   f"{paths.DEFAULT_ISOLAD_SOCKET}]")  # fmt: skip
@click.option("--store", type=click.Path(path_type=Path), default=None,
              help="The state store [$ISOLA_HOME/isola.db]")  # fmt: skip
@click.option("--tcp", metavar="HOST:PORT", default=None, help="Also serve on TCP; tenants' tokens required there.")
@click.option("--cpu-ratio", type=float, default=Policy.cpu_ratio, show_default=True, help="vCPU overcommit")
@click.option("--memory-ratio", type=float, default=Policy.memory_ratio, show_default=True, help="Memory overcommit")
@click.option("--disk-ratio", type=float, default=Policy.disk_ratio, show_default=True, help="Disk overcommit")
@click.option("--strategy", type=click.Choice(["spread", "pack"]), default=Policy.strategy, show_default=True)
def main(
    sock: Path | None,
    store: Path | None,
    tcp: str | None,
    cpu_ratio: float,
    memory_ratio: float,
    disk_ratio: float,
    strategy: Strategy,
) -> None:
    """isolad: the isola platform daemon (tenants, quotas, instances, the scheduler)."""
    logging.basicConfig(level=logging.WARNING, format="isolad: %(levelname)s %(message)s")
    try:
        policy = Policy(cpu_ratio=cpu_ratio, memory_ratio=memory_ratio, disk_ratio=disk_ratio, strategy=strategy)
        policy.validate()
        serve(sock or paths.isolad_socket(), store or paths.store_path(), tcp, policy)
    except errors.IsolaError as err:
        click.echo(f"isolad: error: {err.message}" + (f" (hint: {err.hint})" if err.hint else ""), err=True)
        sys.exit(errors.exit_code(err))
