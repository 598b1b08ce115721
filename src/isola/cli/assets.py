"""`isola assets`: fetch, list and locate guest assets from Debian's archive."""

from __future__ import annotations

import os
from typing import Any

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from isola import paths
from isola.assets import fetch as fetching
from isola.assets import manifest as mf
from isola.assets.catalog import ARCHES, wanted_for
from isola.assets.sources import host_sources
from isola.cli.output import emit, json_option, stderr, stdout, table
from isola.errors import PermissionDeniedError


class ProgressReporter:
    """Rich progress bars for downloads, one line per finished package."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def begin(self, label: str, total: int | None) -> None:
        self.task = self.progress.add_task(label, total=total)

    def advance(self, nbytes: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, nbytes)

    def end(self, label: str, outcome: str) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        self.progress.console.print(f"[green]✓[/] {label}: {outcome}")

    def warn(self, message: str) -> None:
        self.progress.console.print(f"[yellow]![/] {message}")


@click.group()
def assets() -> None:
    """Guest kernels, busybox, a riscv64 sysroot and firmware, from Debian's archive."""


@assets.command("fetch")
@click.option("--arch", "arches", multiple=True, type=click.Choice(ARCHES), help="Architecture (repeatable).")
@click.option("--all", "all_arches", is_flag=True, help="Every architecture isola uses.")
@click.option("--refresh", is_flag=True, help="Re-read the archive's index even if the cached one is fresh.")
def fetch_cmd(arches: tuple[str, ...], all_arches: bool, refresh: bool) -> None:
    """Download, verify (sha256 from the archive's index) and unpack the guest assets."""
    if os.geteuid() != 0:
        raise PermissionDeniedError("isola assets fetch runs apt and writes $ISOLA_HOME: run it as root")
    chosen = ARCHES if all_arches or not arches else arches
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
    )
    with progress:
        fetcher = fetching.Fetcher(
            paths.assets_dir(), paths.apt_dir(), host_sources(), ProgressReporter(progress), refresh
        )
        fetcher.fetch(wanted_for(tuple(chosen)))


def _rows(verify: bool) -> list[dict[str, Any]]:
    cache = paths.assets_dir()
    rows = []
    for p in mf.load(cache).packages:
        rows.append(
            {
                "name": p.name,
                "version": p.version,
                "arch": p.arch,
                "release": p.release,
                "requested": p.requested,
                "sha256": p.sha256,
                "size": p.size,
                "verified": fetching.verify(cache, p) if verify else None,
                "tree": str(cache / p.tree),
                "artifacts": {a.role: {"path": str(cache / a.path), "sha256": a.sha256} for a in p.artifacts},
            }
        )
    return rows


@assets.command("list")
@json_option
@click.option("--no-verify", is_flag=True, help="Skip re-hashing the cached files.")
def list_cmd(as_json: bool, no_verify: bool) -> None:
    """What is cached, with versions and whether the checksums still hold."""
    rows = _rows(verify=not no_verify)

    def render(data: list[dict[str, Any]]) -> None:
        if not data:
            stdout.print("No guest assets cached. Run: isola assets fetch --all")
            return
        mark = {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}
        stdout.print(
            table(
                f"Guest assets in {paths.assets_dir()}",
                ["arch", "package", "version", "sha256", "verified", "artifacts"],
                [
                    [
                        r["arch"],
                        r["name"],
                        r["version"],
                        r["sha256"][:16] + "…",
                        mark[r["verified"]],
                        ", ".join(r["artifacts"]),
                    ]
                    for r in data
                ],
            )
        )

    emit(rows, render, as_json)


@assets.command("path")
@click.argument("arch", type=click.Choice(ARCHES))
@click.argument("role")
def path_cmd(arch: str, role: str) -> None:
    """Print the cached file that plays ROLE (kernel, busybox, loader, sysroot, fw_dynamic…) for ARCH."""
    click.echo(mf.load(paths.assets_dir()).artifact(paths.assets_dir(), arch, role))
