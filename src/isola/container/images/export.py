"""`isola image export`: an image back out as one tarball that both OCI tools and docker read — an OCI layout
(`oci-layout`, `index.json`, `blobs/sha256/…`) plus docker's `manifest.json`, the way `docker save` writes
since Docker 25. The blobs are the stored ones, byte for byte, so the digests survive a round trip."""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from pathlib import Path

from isola.container.images import digest
from isola.container.images.model import INDEX, MANIFEST
from isola.container.images.store import Image, ImageStore
from isola.errors import UsageError


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def export(store: ImageStore, image: Image, target: Path) -> None:
    """Write `image` to the tarball `target` (through a temporary name, renamed when complete)."""
    if target.is_dir():
        raise UsageError(f"{target} is a directory: give a file name for the tarball")
    manifest_size = store.blob_path(image.manifest).stat().st_size
    descriptor = {"mediaType": MANIFEST, "digest": image.manifest, "size": manifest_size}
    if image.names:
        descriptor["annotations"] = {
            "io.containerd.image.name": image.names[0],
            "org.opencontainers.image.ref.name": image.names[0].rsplit(":", 1)[1],
        }
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [descriptor]}
    docker = [
        {
            "Config": f"blobs/sha256/{digest.hex_of(image.config)}",
            "RepoTags": image.names,
            "Layers": [f"blobs/sha256/{digest.hex_of(layer.digest)}" for layer in image.layers],
        }
    ]
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            _add_bytes(tar, "index.json", json.dumps(index).encode())
            _add_bytes(tar, "manifest.json", json.dumps(docker).encode())
            seen: set[str] = set()
            for d in (image.manifest, image.config, *(layer.digest for layer in image.layers)):
                if d not in seen:
                    seen.add(d)
                    tar.add(store.blob_path(d), arcname=f"blobs/sha256/{digest.hex_of(d)}", recursive=False)
        os.rename(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
