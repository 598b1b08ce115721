"""Guest assets against the real Debian archive named by this host's apt sources.

The shared cache ($ISOLA_HOME, default /var/lib/isola) keeps reruns fast; tests that damage a cache use a
private one and share only the apt index.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from isola import paths
from isola.assets import fetch as fetching
from isola.assets import manifest as mf
from isola.assets.apt import PackageRef
from isola.assets.catalog import CATALOG, Wanted, wanted_for
from isola.assets.sources import Source, host_sources
from isola.errors import ChecksumError, MirrorUnreachableError

pytestmark = pytest.mark.network

ISOLA = [sys.executable, "-m", "isola.cli"]


class Events:
    """A Reporter that remembers what happened."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, str]] = []
        self.warnings: list[str] = []
        self.bytes = 0

    def begin(self, label: str, total: int | None) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        self.bytes += nbytes

    def end(self, label: str, outcome: str) -> None:
        self.ended.append((label, outcome))

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@pytest.fixture(scope="module")
def shared_apt() -> Path:
    if os.geteuid() != 0:
        pytest.skip("fetching assets runs apt and writes $ISOLA_HOME: needs root")
    return paths.apt_dir()


def small_riscv64() -> list[Wanted]:
    return [w for w in wanted_for(("riscv64",)) if w.package in ("opensbi", "busybox-static")]


def test_fetch_all_then_list_shows_every_asset_verified(shared_apt):
    fetched = subprocess.run([*ISOLA, "assets", "fetch", "--all"], capture_output=True, text=True, timeout=1200)
    assert fetched.returncode == 0, fetched.stderr
    listed = subprocess.run([*ISOLA, "assets", "list", "--json"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {(r["arch"], r["requested"]) for r in rows} == {(w.arch, w.package) for w in CATALOG}
    for r in rows:
        assert r["verified"] is True, r
        assert r["version"] and len(r["sha256"]) == 64
        for art in r["artifacts"].values():
            assert Path(art["path"]).is_file()
    roles = {(r["arch"], role) for r in rows for role in r["artifacts"]}
    assert {("amd64", "kernel"), ("amd64", "busybox"), ("riscv64", "busybox"), ("riscv64", "kernel")} <= roles
    assert {("riscv64", "loader"), ("riscv64", "fw_dynamic")} <= roles
    # The amd64 kernel is a real bzImage: the setup header's magic "HdrS" at 0x202.
    kernel = next(r for r in rows if r["arch"] == "amd64" and r["requested"] == "linux-image-amd64")
    with open(kernel["artifacts"]["kernel"]["path"], "rb") as f:
        f.seek(0x202)
        assert f.read(4) == b"HdrS"
    sysroot = subprocess.run([*ISOLA, "assets", "path", "riscv64", "sysroot"], capture_output=True, text=True)
    assert sysroot.returncode == 0 and Path(sysroot.stdout.strip(), "usr/lib/riscv64-linux-gnu/libc.so.6").exists()


def test_corrupted_cache_is_detected_and_repaired(shared_apt, tmp_path):
    cache = tmp_path / "assets"
    events = Events()
    fetcher = fetching.Fetcher(cache, shared_apt, host_sources(), events)
    first = fetcher.fetch(small_riscv64())
    assert {o.action for o in first} == {"downloaded"}
    assert events.bytes == sum(o.package.size for o in first)

    again = fetching.Fetcher(cache, shared_apt, host_sources(), Events()).fetch(small_riscv64())
    assert {o.action for o in again} == {"cached"}

    # One flipped byte in a cached .deb: the index's sha256 no longer matches, so it is fetched again.
    opensbi = next(o.package for o in first if o.package.name == "opensbi")
    deb = cache / opensbi.deb
    data = bytearray(deb.read_bytes())
    data[len(data) // 2] ^= 0xFF
    deb.write_bytes(bytes(data))
    assert not fetching.verify(cache, opensbi)
    events = Events()
    repaired = fetching.Fetcher(cache, shared_apt, host_sources(), events).fetch(small_riscv64())
    assert {o.package.name: o.action for o in repaired}["opensbi"] == "repaired"
    assert fetching.sha256_file(deb) == opensbi.sha256
    assert any("does not match" in w for w in events.warnings)

    # A damaged unpacked file: unpacked again from the verified .deb, without downloading.
    fw = cache / next(a.path for a in opensbi.artifacts if a.role == "fw_dynamic")
    fw.write_bytes(b"not firmware")
    events = Events()
    fixed = fetching.Fetcher(cache, shared_apt, host_sources(), events).fetch(small_riscv64())
    assert {o.package.name: o.action for o in fixed}["opensbi"] == "repaired"
    assert events.bytes == 0
    assert all(fetching.verify(cache, p) for p in mf.load(cache).packages)


def test_leftovers_of_an_interrupted_fetch_are_swept(shared_apt, tmp_path):
    cache = tmp_path / "assets"
    (cache / "debs").mkdir(parents=True)
    (cache / "debs" / "x.deb.part").write_bytes(b"half")
    (cache / "riscv64" / ".opensbi.tmp" / "usr").mkdir(parents=True)
    fetching.Fetcher(cache, shared_apt, host_sources(), Events()).fetch(small_riscv64()[:1])
    assert not (cache / "debs" / "x.deb.part").exists()
    assert not (cache / "riscv64" / ".opensbi.tmp").exists()


def test_an_unreachable_mirror_is_a_clear_error_and_leaves_nothing(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("apt-get update needs root")
    dead = [Source("http://127.0.0.1:9/debian", ("trixie",), ("main",))]  # loopback port 9: nothing listens
    cache = tmp_path / "assets"
    fetcher = fetching.Fetcher(cache, tmp_path / "apt", dead, Events())
    with pytest.raises(MirrorUnreachableError) as info:
        fetcher.fetch(small_riscv64())
    assert "127.0.0.1" in str(info.value)
    assert not (cache / "debs").exists() and not (cache / mf.FILENAME).exists()


def test_the_cli_reports_an_unreachable_mirror_in_one_line(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("apt-get update needs root")
    etc = tmp_path / "etc-apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text("deb http://127.0.0.1:9/debian bookworm main\n")
    code = (
        f"import isola.assets.sources as s, pathlib; s.APT_ETC = pathlib.Path({str(etc)!r}); "
        "from isola.cli.main import main; main()"
    )
    env = {**os.environ, "ISOLA_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-c", code, "assets", "fetch", "--arch", "riscv64"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == os.EX_TEMPFAIL
    assert "Traceback" not in result.stderr
    assert "127.0.0.1" in result.stderr


class _WrongBytes(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"these are not the bytes the index promised"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_download_whose_checksum_fails_is_refused_and_removed(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _WrongBytes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ref = PackageRef("x", "1", "all", f"http://127.0.0.1:{server.server_port}/x.deb", "x_1_all.deb", 42, "00" * 32)
        dest = tmp_path / "debs" / ref.filename
        with httpx.Client() as client, pytest.raises(ChecksumError) as info:
            fetching.download(ref, dest, Events(), client)
        assert "sha256" in str(info.value)
        assert list((tmp_path / "debs").iterdir()) == []
    finally:
        server.shutdown()
        server.server_close()
