"""Fixtures for isola-oci: a busybox bundle in tmp_path, a private --root, and a runner for the real command
line. Every container a test makes is deleted (--force) afterwards, even when the test fails, which also
removes its cgroups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from isola.container.oci import spec
from tests.conftest import amd64_asset, require_root

ISOLA_OCI = str(Path(sys.executable).parent / "isola-oci")


class Oci:
    """`isola-oci --root ROOT ...` as a subprocess, the way podman or containerd run it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, *args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Output goes through files, not pipes: `create` hands its stdout to the container, so a pipe would
        only reach end-of-file when the container ends."""
        kwargs.setdefault("timeout", 30)
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            argv = [ISOLA_OCI, "--root", str(self.root), *args]
            done = subprocess.run(argv, text=True, check=False, stdout=out, stderr=err, **kwargs)
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(argv, done.returncode, out.read(), err.read())
        if check and result.returncode != 0:
            raise AssertionError(f"isola-oci {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def state(self, container_id: str) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self("state", container_id).stdout)
        return state

    def ids(self) -> list[str]:
        return self("list", "-q").stdout.split()


@pytest.fixture
def oci(tmp_path: Path) -> Iterator[Oci]:
    require_root()
    runner = Oci(tmp_path / "state")
    yield runner
    for container_id in runner.ids():
        runner("delete", "--force", container_id, check=False)


APPLETS = (
    "sh",
    "true",
    "false",
    "echo",
    "cat",
    "ls",
    "sleep",
    "id",
    "hostname",
    "grep",
    "stat",
    "tty",
    "ip",
    "readlink",
    "touch",
    "mount",
    "wc",
    "head",
    "sysctl",
    "kill",
    "ps",
    "env",
    "pwd",
)


def make_rootfs(path: Path) -> Path:
    """A root filesystem made of the static busybox from the assets and links for the applets used here."""
    busybox = amd64_asset("busybox")
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "busybox").write_bytes(busybox.read_bytes())
    (path / "bin" / "busybox").chmod(0o755)
    for applet in APPLETS:
        (path / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (path / d).mkdir()
    (path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    return path


@pytest.fixture
def bundle(tmp_path: Path) -> Callable[..., Path]:
    """bundle(args, **changes) -> a bundle dir whose config.json is `isola-oci spec`'s with process.args set,
    no terminal, and `changes` applied by `edit`."""
    counter = iter(range(1000))
    rootfs_cache: list[Path] = []

    def make(args: list[str], edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
        path = tmp_path / f"bundle{next(counter)}"
        path.mkdir()
        if not rootfs_cache:
            rootfs_cache.append(make_rootfs(tmp_path / "rootfs"))
        config = spec.default()
        config["root"]["path"] = str(rootfs_cache[0])
        config["process"]["terminal"] = False
        config["process"]["args"] = args
        if edit is not None:
            edit(config)
        (path / "config.json").write_text(json.dumps(config))
        return path

    return make


def container_id(request: pytest.FixtureRequest, suffix: str = "") -> str:
    """An id unique to the test (and the process), so cgroups of parallel runs never collide."""
    return f"t{os.getpid()}-{request.node.name[:40]}{suffix}".replace("[", "-").replace("]", "")
