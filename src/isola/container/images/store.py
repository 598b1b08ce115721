"""isola's image store, under `$ISOLA_HOME/images`:

    blobs/sha256/<hex>     every blob (manifests, configs, layer tarballs) by content digest
    layers/<hex>/          each layer unpacked once, named by its diff_id; shared by every image that has it
    images/<hex>.json      one record per image (named by its config digest): names, manifest, layers
    tmp/                   where imports are staged; emptied under the lock, so a crash leaves nothing for long
    lock                   flock(2) held by anything that changes the store

A blob is written to tmp/, hashed on the way, checked against its digest and only then renamed into place; a
layer is unpacked in tmp/, its diff_id checked, then renamed. An import that fails removes everything it had
added, so a bad image leaves the store as it was. Blobs and layers are reference-counted by the image records
that name them: removing an image deletes what no other image still uses.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from isola import paths
from isola.container.images import digest, json_doc
from isola.container.images.digest import CHUNK, HashingReader
from isola.container.images.model import CONFIG, LAYER_GZIP, LAYER_TAR, LAYER_ZSTD, MANIFEST, ImageIn
from isola.container.images.unpack import apply_layer, decompressed
from isola.errors import ChecksumError, ConflictError, FormatError, NotFoundError, UnsupportedError, UsageError

_NAME = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"


def normalize(ref: str) -> str:
    """`name[:tag]` with the tag made explicit (`busybox` → `busybox:latest`), as docker shows names."""
    if not _NAME.match(ref) or ".." in ref or "//" in ref:
        raise UsageError(f"invalid image name {ref!r}: use lowercase letters, digits and . _ / : - only")
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


@dataclass
class Layer:
    digest: str  # the stored blob
    diff_id: str  # the uncompressed tar, which names the unpacked directory
    size: int
    media_type: str


@dataclass
class Image:
    id: str  # the config digest, as docker's image id
    names: list[str]
    manifest: str
    config: str
    layers: list[Layer]
    created: str
    architecture: str
    os: str
    size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return digest.hex_of(self.id)[:12]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Image:
        return cls(**{**data, "layers": [Layer(**layer) for layer in data["layers"]]})


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def _media_type(blob: Path) -> str:
    with open(blob, "rb") as f:
        head = f.read(4)
    return LAYER_GZIP if head.startswith(_GZIP) else LAYER_ZSTD if head.startswith(_ZSTD) else LAYER_TAR


class ImageStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or paths.home() / "images"
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers"
        self.records = self.root / "images"
        self.tmp = self.root / "tmp"

    # --- paths -----------------------------------------------------------------------------------------

    def blob_path(self, d: str) -> Path:
        return self.blobs / digest.hex_of(d)

    def layer_dir(self, layer: Layer) -> Path:
        return self.layers / digest.hex_of(layer.diff_id)

    def layer_dirs(self, image: Image) -> list[Path]:
        """The image's unpacked layers, bottom first."""
        return [self.layer_dir(layer) for layer in image.layers]

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the store; stale staging files of a crashed import are removed on the way in."""
        for d in (self.blobs, self.layers, self.records, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for stale in self.tmp.iterdir():
                _remove_tree(stale)
            yield
        finally:
            os.close(fd)

    # --- reading ---------------------------------------------------------------------------------------

    def images(self) -> list[Image]:
        if not self.records.is_dir():
            return []
        found = []
        for path in sorted(self.records.glob("*.json")):
            try:
                found.append(Image.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, TypeError, KeyError):
                continue  # removed while we listed, or not ours
        return found

    def get(self, ref: str) -> Image:
        """An image by name (`busybox`, `busybox:1.35`), full id (`sha256:…`) or a unique id prefix."""
        images = self.images()
        if _NAME.match(ref):
            wanted = normalize(ref) if not re.fullmatch(r"(sha256:)?[0-9a-f]{4,64}", ref) else ref
            for image in images:
                if wanted in image.names:
                    return image
        hex_ref = ref.removeprefix("sha256:")
        if re.fullmatch(r"[0-9a-f]{4,64}", hex_ref):
            matches = [i for i in images if digest.hex_of(i.id).startswith(hex_ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ConflictError(f"image id prefix {ref!r} is ambiguous: give more digits")
        raise NotFoundError(f"no such image: {ref}", hint="`isola image ls` lists them; `isola image import` adds one")

    def open_blob(self, d: str) -> IO[bytes]:
        try:
            return open(self.blob_path(d), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {d} is missing from the image store") from None

    def config(self, image: Image) -> dict[str, Any]:
        with self.open_blob(image.config) as f:
            return json_doc.parse(f.read(), f"config {image.config}")

    def layer_refs(self) -> dict[str, int]:
        """How many images use each layer (by diff_id)."""
        counts: dict[str, int] = {}
        for image in self.images():
            for layer in image.layers:
                counts[layer.diff_id] = counts.get(layer.diff_id, 0) + 1
        return counts

    # --- adding ----------------------------------------------------------------------------------------

    def add(self, image: ImageIn, names: list[str]) -> Image:
        """Verify and store one image; every blob is checked against its digest before it is used. On any
        failure what this call added is removed again."""
        names = [normalize(n) for n in names]
        config_bytes = digest.verify_bytes(image.config, image.config_digest, "image config")
        config = json_doc.parse(config_bytes, f"config {image.config_digest}")
        if config.get("os", "linux") != "linux" or config.get("architecture", "amd64") != "amd64":
            raise UnsupportedError(
                f"image is {config.get('os')}/{config.get('architecture')}: isola runs linux/amd64 images here"
            )
        rootfs = json_doc.field(config, "rootfs", dict, "image config")
        diff_ids = json_doc.field(rootfs, "diff_ids", list, "image config rootfs")
        if len(diff_ids) != len(image.layers):
            raise FormatError(f"image config lists {len(diff_ids)} diff_ids for {len(image.layers)} layers")
        added: list[Path] = []
        with self.lock():
            try:
                layers = []
                for i, (layer, diff_id) in enumerate(zip(image.layers, diff_ids, strict=True)):
                    diff_id = digest.check(diff_id, f"image config rootfs.diff_ids[{i}]")
                    layers.append(self._add_layer(layer.open, layer.digest, diff_id, added, f"layer {i}"))
                manifest_bytes = image.manifest or self._manifest(image.config_digest, len(config_bytes), layers)
                manifest_digest = digest.of_bytes(manifest_bytes)
                for d, data in ((manifest_digest, manifest_bytes), (image.config_digest, config_bytes)):
                    if not self.blob_path(d).exists():
                        _write_atomic(self.blob_path(d), data)
                        added.append(self.blob_path(d))
                record = Image(
                    id=image.config_digest,
                    names=[],
                    manifest=manifest_digest,
                    config=image.config_digest,
                    layers=layers,
                    created=str(config.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                    architecture="amd64",
                    os="linux",
                    size=sum(_tree_size(self.layer_dir(layer)) for layer in layers),
                )
                path = self.records / f"{digest.hex_of(record.id)}.json"
                if path.exists():
                    record.names = Image.from_json(json.loads(path.read_text())).names
                else:
                    added.append(path)
                self._write(record)
                self._tag(record, names)
                return record
            except BaseException:
                for p in reversed(added):
                    _remove_tree(p)
                raise

    def _add_layer(self, opener: Any, expected: str | None, diff_id: str, added: list[Path], what: str) -> Layer:
        if expected is not None and self.blob_path(expected).is_file():
            d = expected
            blob = self.blob_path(d)
        else:
            d = self._ingest(opener, expected, added, what)
            blob = self.blob_path(d)
            if blob in added:  # a new blob must hold the diff_id's tar, even when that layer is already here
                with open(blob, "rb") as f, decompressed(f) as plain:
                    hashing = HashingReader(plain)
                    hashing.drain()
                _check_diff(hashing.digest(), diff_id, what)
        target = self.layers / digest.hex_of(diff_id)
        if not target.is_dir():
            staging = self.tmp / f"layer-{uuid.uuid4().hex}"
            staging.mkdir(mode=0o755)
            try:
                with open(blob, "rb") as f:
                    _check_diff(apply_layer(f, staging), diff_id, what)
                os.rename(staging, target)
            except BaseException:
                _remove_tree(staging)
                raise
            added.append(target)
        return Layer(d, diff_id, blob.stat().st_size, _media_type(blob))

    def _ingest(self, opener: Any, expected: str | None, added: list[Path], what: str) -> str:
        """Copy a blob into the store through a hash; its digest, once checked against `expected`."""
        staging = self.tmp / f"blob-{uuid.uuid4().hex}"
        try:
            with opener() as src, open(staging, "wb") as out:
                hashing = HashingReader(src)
                while data := hashing.read(CHUNK):
                    out.write(data)
                out.flush()
                os.fsync(out.fileno())
            actual = hashing.digest()
            if expected is not None and actual != expected:
                raise ChecksumError(f"{what}: digest mismatch: expected {expected}, got {actual}")
            target = self.blob_path(actual)
            if target.exists():
                staging.unlink()
            else:
                os.rename(staging, target)
                added.append(target)
            return actual
        except BaseException:
            staging.unlink(missing_ok=True)
            raise

    def _manifest(self, config_digest: str, config_size: int, layers: list[Layer]) -> bytes:
        """An OCI manifest for an image whose archive had none (docker save's legacy layout)."""
        doc = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": la.media_type, "digest": la.digest, "size": la.size} for la in layers],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    def _write(self, record: Image) -> None:
        _write_atomic(self.records / f"{digest.hex_of(record.id)}.json", json.dumps(record.to_json()).encode())

    def _tag(self, record: Image, names: list[str]) -> None:
        """Give `names` to `record`, taking them from any image that had them (as `docker tag` does)."""
        if not names:
            return
        for other in self.images():
            if other.id != record.id and set(other.names) & set(names):
                other.names = [n for n in other.names if n not in names]
                self._write(other)
        record.names = sorted(set(record.names) | set(names))
        self._write(record)

    def tag(self, ref: str, name: str) -> Image:
        with self.lock():
            image = self.get(ref)
            self._tag(image, [normalize(name)])
            return image

    # --- removing --------------------------------------------------------------------------------------

    def remove(self, ref: str, in_use: set[str], *, force: bool = False) -> list[str]:
        """Untag `ref` if it is one of several names of an image, else delete the image and whatever of its
        blobs and layers no other image uses. An image that containers use (`in_use`, ids) stays unless
        `force`. Returns what was done, in docker's words (`Untagged: …`, `Deleted: …`)."""
        with self.lock():
            image = self.get(ref)
            name = normalize(ref) if _NAME.match(ref) else None
            if name in image.names and len(image.names) > 1:
                image.names.remove(name)
                self._write(image)
                return [f"Untagged: {name}"]
            if image.id in in_use and not force:
                raise ConflictError(
                    f"image {ref} is used by a container", hint="remove the container first, or use --force"
                )
            (self.records / f"{digest.hex_of(image.id)}.json").unlink()
            done = [f"Untagged: {n}" for n in image.names] + [f"Deleted: {image.id}"]
            self._collect()
            return done

    def _collect(self) -> None:
        """Delete the blobs and layers no image record names any more."""
        blobs: set[str] = set()
        layers: set[str] = set()
        for image in self.images():
            blobs |= {digest.hex_of(image.manifest), digest.hex_of(image.config)}
            blobs |= {digest.hex_of(la.digest) for la in image.layers}
            layers |= {digest.hex_of(la.diff_id) for la in image.layers}
        for path in self.blobs.iterdir():
            if path.name not in blobs:
                path.unlink()
        for path in self.layers.iterdir():
            if path.name not in layers:
                _remove_tree(path)


def _check_diff(actual: str, expected: str, what: str) -> None:
    if actual != expected:
        raise ChecksumError(f"{what}: uncompressed digest mismatch: config says {expected}, the layer is {actual}")


def _tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
