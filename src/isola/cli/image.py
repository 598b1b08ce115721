"""`isola image`: import, build, list, inspect, remove and export the OCI images `isola container run` uses.

isola image import PATH [--name NAME:TAG]     an OCI layout (directory or tarball) or a docker-save tarball
isola image build [--name busybox:latest] [--busybox PATH]
isola image ls [--json] · inspect IMAGE... · rm [-f] IMAGE... · export IMAGE -o FILE
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from isola.cli.output import emit, json_option, stdout, table


def _store() -> Any:
    from isola.container.images.store import ImageStore

    return ImageStore()


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.3g}{unit}"
        value /= 1000
    return f"{size}B"


@click.group()
def image() -> None:
    """OCI images: import, build, list, inspect, remove, export."""


@image.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", "names", multiple=True, help="Name the image NAME[:TAG] (as well as the archive's names).")
def import_(path: Path, names: tuple[str, ...]) -> None:
    """Import the images of an OCI layout directory, an OCI archive or a docker-save tarball."""
    from isola.container.images.reader import images_in
    from isola.errors import UsageError

    store = _store()
    with images_in(path) as images:
        if names and len(images) > 1:
            raise UsageError(f"{path} holds {len(images)} images: --name can only name one")
        for found in images:
            record = store.add(found, [*found.names, *names])
            stdout.print(f"Loaded image: {', '.join(record.names) or record.id}")


@image.command()
@click.option("--name", default="busybox:latest", show_default=True, help="The image's NAME:TAG.")
@click.option(
    "--busybox",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A static busybox to build from (default: the cached amd64 asset of `isola assets fetch`).",
)
def build(name: str, busybox: Path | None) -> None:
    """Build a busybox base image offline, from isola's assets."""
    from isola.container.images.build import busybox_image

    record = _store().add(busybox_image(busybox), [name])
    stdout.print(f"Built image: {name} ({record.id})")


@image.command("ls")
@json_option
def ls(as_json: bool) -> None:
    """List the images."""
    images = _store().images()
    rows = []
    for img in images:
        for name in img.names or ["<none>:<none>"]:
            repo, _, tag = name.rpartition(":")
            rows.append([repo, tag, img.short_id, img.created, _human(img.size)])

    def render(_: Any) -> None:
        stdout.print(table(None, ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows))

    emit([img.to_json() for img in images], render, as_json)


@image.command()
@click.argument("refs", nargs=-1, required=True)
def inspect(refs: tuple[str, ...]) -> None:
    """Show images' records and configs as JSON (as `docker image inspect`)."""
    import json
    import sys

    store = _store()
    out = []
    refs_count = store.layer_refs()
    for ref in refs:
        img = store.get(ref)
        doc = img.to_json()
        doc["config_document"] = store.config(img)
        doc["layer_dirs"] = [str(p) for p in store.layer_dirs(img)]
        doc["layer_refs"] = {layer.diff_id: refs_count.get(layer.diff_id, 0) for layer in img.layers}
        out.append(doc)
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


@image.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Remove even an image that containers use.")
def rm(refs: tuple[str, ...], force: bool) -> None:
    """Remove images (or, for an image with several names, the name given)."""
    from isola.container.containers.store import ContainerStore

    store = _store()
    in_use = ContainerStore().images_in_use()
    for ref in refs:
        for line in store.remove(ref, in_use, force=force):
            stdout.print(line)


@image.command()
@click.argument("ref")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The tarball to write.")
def export(ref: str, output: Path) -> None:
    """Write an image to a tarball (an OCI layout plus docker's manifest.json, as `docker save`)."""
    from isola.container.images.export import export as write

    store = _store()
    write(store, store.get(ref), output)
