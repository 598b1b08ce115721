"""`docker save` / `podman save` tarballs: `manifest.json` = `[{"Config", "RepoTags", "Layers"}]`, the config at
`<hex>.json` (legacy) or `blobs/sha256/<hex>` (Docker ≥ 25, which also writes an OCI layout, preferred when
present), layers at `<id>/layer.tar` or `blobs/sha256/<hex>`.

The legacy format names layers by path, not digest: those are checked against the config's `rootfs.diff_ids`
(the digest of each uncompressed tar) as they are unpacked. A config named by its hash is checked against it.
"""

from __future__ import annotations

import json
import re
from functools import partial
from typing import Any

from isola.container.images import digest, json_doc
from isola.container.images.archive import Archive, read_document
from isola.container.images.model import DOCKER_LAYER, ImageIn, LayerIn
from isola.errors import FormatError

_HASHED = re.compile(r"(?:^|/)(?:sha256/)?([0-9a-f]{64})(?:\.json)?$")


def is_docker(archive: Archive) -> bool:
    return archive.exists("manifest.json")


def _named_digest(path: str) -> str | None:
    """The digest a file name claims (`<hex>.json`, `blobs/sha256/<hex>`), if it claims one."""
    m = _HASHED.search(path)
    return f"sha256:{m.group(1)}" if m else None


def _image(archive: Archive, entry: Any, i: int) -> ImageIn:
    what = f"manifest.json[{i}]"
    if not isinstance(entry, dict):
        raise FormatError(f"{what}: expected a JSON object")
    config_path = json_doc.field(entry, "Config", str, what)
    config = read_document(archive, config_path)
    config_digest = digest.of_bytes(config)
    claimed = _named_digest(config_path)
    if claimed is not None:
        digest.verify_bytes(config, claimed, f"{what}.Config {config_path}")
    tags = entry.get("RepoTags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise FormatError(f"{what}.RepoTags: must be a list of strings")
    layers = []
    for j, path in enumerate(json_doc.field(entry, "Layers", list, what)):
        if not isinstance(path, str):
            raise FormatError(f"{what}.Layers[{j}]: must be a path")
        if not archive.exists(path):
            raise FormatError(f"{what}.Layers[{j}]: {path} is missing from the archive")
        named = _named_digest(path) if path.startswith("blobs/") else None
        layers.append(LayerIn(named, DOCKER_LAYER, partial(archive.open, path)))
    return ImageIn(config, config_digest, layers, list(tags), None)


def read(archive: Archive) -> list[ImageIn]:
    data = read_document(archive, "manifest.json")
    try:
        entries = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"manifest.json: not valid JSON: {exc}") from None
    if not isinstance(entries, list) or not entries:
        raise FormatError("manifest.json: expected a non-empty list of images")
    return [_image(archive, e, i) for i, e in enumerate(entries)]
