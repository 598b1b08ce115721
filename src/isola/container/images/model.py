"""What an importer hands the store: one image's config, its manifest (if the format had one) and its layers,
each with the digest it must have. Importers only read; the store verifies and writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, NamedTuple

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = LAYER_TAR + "+gzip"
LAYER_ZSTD = LAYER_TAR + "+zstd"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = DOCKER_LAYER + ".gzip"

LAYER_TYPES = frozenset((LAYER_TAR, LAYER_GZIP, LAYER_ZSTD, DOCKER_LAYER, DOCKER_LAYER_GZIP))
MANIFEST_TYPES = frozenset((MANIFEST, DOCKER_MANIFEST))
INDEX_TYPES = frozenset((INDEX, DOCKER_LIST))


class LayerIn(NamedTuple):
    digest: str | None  # of the blob as stored (compressed or not); None: not named, the diff_id still checks it
    media_type: str
    open: Callable[[], IO[bytes]]  # a fresh stream over the blob's bytes


class ImageIn(NamedTuple):
    config: bytes
    config_digest: str
    layers: list[LayerIn]
    names: list[str]  # name:tag references the archive carries
    manifest: bytes | None  # the original manifest, kept byte for byte when there is one
