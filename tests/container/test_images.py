"""Images: import of OCI layouts and docker-save tarballs built here with tarfile, layers applied with whiteouts
and opaque directories and stacked by overlayfs, shared layers counted, export round trips, and every kind of
malformed image refused with one clear error that leaves the store as it was."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from isola.container.images import rootfs
from isola.container.images.store import ImageStore
from tests.conftest import require_root
from tests.container.test_container_cli import ISOLA, overlay_mounts

Entry = tuple[str, str, str]  # (name, kind: file|dir|symlink|link, content or link target)


def layer(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind in ("symlink", "link"):
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data.encode()))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_for(layers: list[bytes]) -> bytes:
    return json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers",
         "diff_ids": [sha(x) for x in layers]}}
    ).encode()  # fmt: skip


def oci_layout(path: Path, layers: list[bytes], *, name: str = "test:1", compress: str = "gzip") -> Path:
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        (blobs / sha(data)[7:]).write_bytes(data)
        return sha(data)

    stored = []
    for plain in layers:
        if compress == "gzip":
            stored.append((gzip.compress(plain), "application/vnd.oci.image.layer.v1.tar+gzip"))
        elif compress == "zstd":
            zst = subprocess.run(["zstd", "-q", "-c"], input=plain, capture_output=True, check=True).stdout
            stored.append((zst, "application/vnd.oci.image.layer.v1.tar+zstd"))
        else:
            stored.append((plain, "application/vnd.oci.image.layer.v1.tar"))
    config = config_for(layers)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config),
                       "size": len(config)},
            "layers": [{"mediaType": m, "digest": put(b), "size": len(b)} for b, m in stored],
        }
    ).encode()  # fmt: skip
    index = {
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
             "size": len(manifest), "annotations": {"io.containerd.image.name": name}}
        ],
    }  # fmt: skip
    (path / "index.json").write_text(json.dumps(index))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return path


def docker_save(path: Path, layers: list[bytes], tag: str = "legacy:latest") -> Path:
    config = config_for(layers)
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add(f"{sha(config)[7:]}.json", config)
        for i, data in enumerate(layers):
            add(f"layer{i}/layer.tar", data)
        manifest = [{"Config": f"{sha(config)[7:]}.json", "RepoTags": [tag],
                     "Layers": [f"layer{i}/layer.tar" for i in range(len(layers))]}]  # fmt: skip
        add("manifest.json", json.dumps(manifest).encode())
    return path


BASE = layer(
    [("a", "dir", ""), ("a/keep", "file", "k"), ("a/gone", "file", "g"), ("d", "dir", ""), ("d/old", "file", "o"),
     ("link", "symlink", "/a/keep"), ("hard", "link", "a/keep")]
)  # fmt: skip
TOP = layer([("a/.wh.gone", "file", ""), ("d", "dir", ""), ("d/.wh..wh..opq", "file", ""), ("d/new", "file", "n")])


class Cli:
    def __init__(self, home: Path) -> None:
        self.home = home

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"ISOLA_HOME": str(self.home), "PATH": "/usr/bin:/bin"}
        return subprocess.run([ISOLA, "image", *args], env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    require_root()  # layers hold whiteout devices and trusted.* xattrs
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("ISOLA_HOME", str(h))
    yield h
    for target in overlay_mounts(tmp_path):
        subprocess.run(["umount", "-l", target], check=False)


def assert_store_empty(home: Path) -> None:
    root = home / "images"
    for sub in ("blobs/sha256", "layers", "images", "tmp"):
        left = list((root / sub).iterdir()) if (root / sub).exists() else []
        assert left == [], f"{sub}: {left}"


def test_oci_layout_whiteouts_opaque_dirs_and_overlay(home: Path, tmp_path: Path) -> None:
    cli = Cli(home)
    done = cli("import", str(oci_layout(tmp_path / "layout", [BASE, TOP])))
    assert done.returncode == 0, done.stderr
    store = ImageStore()
    image = store.get("test:1")
    target = tmp_path / "root"
    rootfs.mount_overlay(store.layer_dirs(image), tmp_path / "upper", tmp_path / "work", target)
    try:
        assert sorted(p.name for p in (target / "a").iterdir()) == ["keep"]
        assert sorted(p.name for p in (target / "d").iterdir()) == ["new"]
        assert (target / "link").readlink() == Path("/a/keep")
        assert (target / "hard").read_text() == "k"
        (target / "a" / "keep").write_text("changed")  # copied up: the shared layer is untouched
        assert (store.layer_dirs(image)[0] / "a" / "keep").read_text() == "k"
    finally:
        rootfs.unmount(target)
    ls = json.loads(cli("ls", "--json").stdout)
    assert [i["names"] for i in ls] == [["test:1"]]


@pytest.mark.parametrize("compress", ["gzip", "zstd", "none"])
def test_layer_compressions(home: Path, tmp_path: Path, compress: str) -> None:
    if compress == "zstd" and shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    done = Cli(home)("import", str(oci_layout(tmp_path / "layout", [BASE], compress=compress)))
    assert done.returncode == 0, done.stderr
    assert (ImageStore().layer_dirs(ImageStore().get("test:1"))[0] / "a" / "keep").read_text() == "k"


def test_docker_save_shares_layers_and_rm_collects_them(home: Path, tmp_path: Path) -> None:
    cli = Cli(home)
    assert cli("import", str(docker_save(tmp_path / "one.tar", [BASE], "one:latest"))).returncode == 0
    assert cli("import", "--name", "two:x", str(docker_save(tmp_path / "two.tar", [BASE, TOP], "t:1"))).returncode == 0
    store = ImageStore()
    assert store.layer_refs()[sha(BASE)] == 2
    assert len(list(store.layers.iterdir())) == 2
    assert cli("rm", "one").returncode == 0
    assert len(list(store.layers.iterdir())) == 2  # BASE still used by two
    assert cli("rm", "t:1").returncode == 0  # untag only: two:x remains
    assert cli("rm", "two:x").returncode == 0
    assert_store_empty(home)


def test_export_round_trip(home: Path, tmp_path: Path) -> None:
    cli = Cli(home)
    assert cli("import", str(oci_layout(tmp_path / "layout", [BASE, TOP]))).returncode == 0
    before = ImageStore().get("test:1")
    assert cli("export", "test:1", "-o", str(tmp_path / "out.tar")).returncode == 0
    assert cli("rm", "test:1").returncode == 0
    assert_store_empty(home)
    done = cli("import", str(tmp_path / "out.tar"))
    assert done.returncode == 0, done.stderr
    assert ImageStore().get("test:1").id == before.id
    inspect = json.loads(cli("inspect", "test:1").stdout)[0]
    assert inspect["config_document"]["config"]["Cmd"] == ["sh"]


def _corrupt_layer_digest(path: Path) -> None:
    blobs = path / "blobs" / "sha256"
    biggest = max(blobs.iterdir(), key=lambda p: p.stat().st_size)
    biggest.write_bytes(gzip.compress(layer([("x", "file", "tampered")])))


def _remove_a_blob(path: Path) -> None:
    max((path / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size).unlink()


BAD_LAYERS = {
    "dotdot": layer([("../escape", "file", "x")]),
    "absolute": layer([("/etc/escape", "file", "x")]),
    "symlink-escape": layer([("etc", "symlink", "/etc"), ("etc/isola-escape", "file", "x")]),
    "hardlink-escape": layer([("h", "link", "../../../../etc/passwd")]),
}


@pytest.mark.parametrize("kind", ["bad-json", "wrong-digest", "missing-blob", "not-an-image", *BAD_LAYERS])
def test_malformed_images_are_refused_and_leave_nothing(home: Path, tmp_path: Path, kind: str) -> None:
    path = oci_layout(tmp_path / "layout", [BAD_LAYERS.get(kind, BASE)])
    if kind == "bad-json":
        (path / "index.json").write_text("{not json")
    elif kind == "wrong-digest":
        _corrupt_layer_digest(path)
    elif kind == "missing-blob":
        _remove_a_blob(path)
    elif kind == "not-an-image":
        (path / "oci-layout").unlink()
    done = Cli(home)("import", str(path))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("isola: error:") and "Traceback" not in done.stderr and len(lines) <= 2, done.stderr
    assert_store_empty(home)
    assert not Path("/etc/isola-escape").exists() and not (tmp_path / "escape").exists()


def test_a_tarball_with_dotdot_member_names_is_refused(home: Path, tmp_path: Path) -> None:
    archive = docker_save(tmp_path / "bad.tar", [BASE])
    with tarfile.open(archive, "a") as tar:
        info = tarfile.TarInfo("../outside")
        tar.addfile(info, io.BytesIO(b""))
    done = Cli(home)("import", str(archive))
    assert done.returncode == 65 and "climbs out" in done.stderr
    assert_store_empty(home)
