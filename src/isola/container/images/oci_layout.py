"""The OCI image layout (image-spec `image-layout.md`): `oci-layout`, `index.json`, `blobs/sha256/<hex>`, as a
directory or inside a tarball (`podman save --format oci-archive`, and `docker save` since Docker 25).

index.json → (nested indexes, linux/amd64 chosen) → manifests → config + layers. Every document read here is
checked against its descriptor's digest before it is parsed; layers are checked by the store as it copies them.
"""

from __future__ import annotations

from functools import partial
from pathlib import PurePosixPath
from typing import Any

from isola.container.images import digest, json_doc
from isola.container.images.archive import Archive, read_document
from isola.container.images.model import INDEX_TYPES, LAYER_TYPES, MANIFEST_TYPES, ImageIn, LayerIn
from isola.errors import FormatError, UnsupportedError

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
MAX_NESTING = 4


def is_layout(archive: Archive) -> bool:
    return archive.exists("oci-layout") and archive.exists("index.json")


def blob_name(d: str) -> str:
    return f"blobs/sha256/{digest.hex_of(d)}"


def read_blob(archive: Archive, d: str, what: str) -> bytes:
    """A small blob, verified against its digest."""
    return digest.verify_bytes(read_document(archive, blob_name(d)), d, what)


def _descriptor(desc: Any, what: str) -> tuple[str, str, dict[str, Any]]:
    if not isinstance(desc, dict):
        raise FormatError(f"{what}: a descriptor must be a JSON object")
    d = digest.check(desc.get("digest"), f"{what}.digest")
    media = desc.get("mediaType", "")
    annotations = desc.get("annotations") or {}
    if not isinstance(media, str) or not isinstance(annotations, dict):
        raise FormatError(f"{what}: mediaType must be a string and annotations an object")
    return d, media, annotations


def _amd64(desc: dict[str, Any]) -> bool:
    platform = desc.get("platform")
    return not isinstance(platform, dict) or (platform.get("os"), platform.get("architecture")) == ("linux", "amd64")


def _names(annotations: dict[str, Any], default_repo: str) -> list[str]:
    name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)
    if not isinstance(name, str) or not name:
        return []
    if ":" not in name and "/" not in name:  # the spec's ref.name may be a bare tag
        return [f"{default_repo}:{name}"]
    return [name]


def _manifests(archive: Archive, index: dict[str, Any], what: str, depth: int) -> list[tuple[str, dict[str, Any]]]:
    """(manifest digest, its descriptor's annotations) for every linux/amd64 image under `index`."""
    if depth > MAX_NESTING:
        raise FormatError(f"{what}: indexes nested more than {MAX_NESTING} deep")
    found: list[tuple[str, dict[str, Any]]] = []
    for i, desc in enumerate(json_doc.field(index, "manifests", list, what)):
        d, media, annotations = _descriptor(desc, f"{what}.manifests[{i}]")
        if media in INDEX_TYPES:
            nested = json_doc.parse(read_blob(archive, d, f"index {d}"), f"index {d}")
            for m, inner in _manifests(archive, nested, f"index {d}", depth + 1):
                found.append((m, {**inner, **annotations}))
        elif media in MANIFEST_TYPES and _amd64(desc):
            found.append((d, annotations))
    return found


def read_manifest(archive: Archive, manifest_digest: str, names: list[str]) -> ImageIn:
    """One image of the layout: its manifest (verified), config (verified) and layer descriptors."""
    what = f"manifest {manifest_digest}"
    raw = read_blob(archive, manifest_digest, what)
    manifest = json_doc.parse(raw, what)
    config_digest, _, _ = _descriptor(json_doc.field(manifest, "config", dict, what), f"{what}.config")
    config = read_blob(archive, config_digest, f"config {config_digest}")
    layers = []
    for i, desc in enumerate(json_doc.field(manifest, "layers", list, what)):
        d, media, _ = _descriptor(desc, f"{what}.layers[{i}]")
        if media not in LAYER_TYPES:
            raise UnsupportedError(f"{what}.layers[{i}]: unsupported layer media type {media!r}")
        layers.append(LayerIn(d, media, partial(archive.open, blob_name(d))))
    return ImageIn(config, config_digest, layers, names, raw)


def read(archive: Archive) -> list[ImageIn]:
    """Every linux/amd64 image of the layout."""
    layout = json_doc.parse(read_document(archive, "oci-layout"), "oci-layout")
    if not isinstance(layout.get("imageLayoutVersion"), str):
        raise FormatError("oci-layout: imageLayoutVersion is missing")
    index = json_doc.parse(read_document(archive, "index.json"), "index.json")
    repo = PurePosixPath(archive.label).name.split(".")[0] or "image"
    images = [read_manifest(archive, d, _names(a, repo)) for d, a in _manifests(archive, index, "index.json", 0)]
    if not images:
        raise FormatError(f"{archive.label}: index.json names no linux/amd64 image")
    return images
