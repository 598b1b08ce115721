"""Which image format a path holds, and its images: an OCI layout (directory or tarball) or a docker-save
tarball. The archive stays open while the store copies the layers out of it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from isola.container.images import docker_archive, oci_layout
from isola.container.images.archive import open_archive
from isola.container.images.model import ImageIn
from isola.errors import FormatError


@contextmanager
def images_in(path: Path) -> Iterator[list[ImageIn]]:
    archive = open_archive(path)
    try:
        if oci_layout.is_layout(archive):
            yield oci_layout.read(archive)
        elif docker_archive.is_docker(archive):
            yield docker_archive.read(archive)
        else:
            raise FormatError(
                f"{path}: not an image: neither an OCI layout (oci-layout, index.json) nor a docker-save "
                "archive (manifest.json)"
            )
    finally:
        archive.close()
