"""`isola initramfs`: build an initramfs from a JSON spec and list what an image holds."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from isola.assets.cpio import CpioEntry, read_archive
from isola.assets.initramfs import build, load_spec
from isola.cli.output import emit, json_option, stdout, table

_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


@click.group("initramfs")
def initramfs() -> None:
    """Build and inspect initramfs images (cpio newc, gzip-compressed by default)."""


@initramfs.command("build")
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Image to write.")
@click.option("--no-gzip", is_flag=True, help="Write a plain cpio archive instead of a gzip-compressed one.")
def build_cmd(spec: Path, output: Path, no_gzip: bool) -> None:
    """Build the image described by the JSON file SPEC."""
    image = load_spec(spec)
    build(image, output, compress=not no_gzip)
    count = sum(1 for _ in image.members())
    stdout.print(f"wrote {output}: {count} entries, {output.stat().st_size} bytes", markup=False, soft_wrap=True)


def _row(entry: CpioEntry) -> dict[str, Any]:
    kind = _TYPES.get(stat.S_IFMT(entry.mode), "unknown")
    is_device = kind in ("char", "block")
    return {
        "name": entry.name,
        "type": kind,
        "mode": f"{stat.S_IMODE(entry.mode):04o}",
        "filemode": stat.filemode(entry.mode),
        "uid": entry.uid,
        "gid": entry.gid,
        "size": entry.size,
        "target": entry.link_target,
        "major": entry.rdev_major if is_device else None,
        "minor": entry.rdev_minor if is_device else None,
    }


def _render(rows: list[dict[str, Any]]) -> None:
    lines = []
    for row in rows:
        size = f"{row['major']}, {row['minor']}" if row["major"] is not None else str(row["size"])
        target = f"-> {row['target']}" if row["target"] is not None else ""
        # Names are data, not rich markup: busybox alone installs applets called "[" and "[[".
        lines.append([row["filemode"], str(row["uid"]), str(row["gid"]), size, escape(row["name"]), escape(target)])
    stdout.print(table(None, ["MODE", "UID", "GID", "SIZE", "NAME", "TARGET"], lines))


@initramfs.command("ls")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def ls_cmd(image: Path, as_json: bool) -> None:
    """List the entries of IMAGE, a newc cpio archive, gzip-compressed or not."""
    emit([_row(entry) for entry in read_archive(image)], _render, as_json)
