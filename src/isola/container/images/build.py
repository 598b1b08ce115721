"""`isola image build`: a base image made offline from the static busybox of isola's assets (Debian's
`busybox-static`), so that containers can be run on a host with no registry in reach.

The layer is a tar written in memory with fixed owners and times, so the same busybox always gives the same
layer and image digests (the build is reproducible, and building twice stores nothing twice). It then takes the
same path as an imported image: through the store, digest checks and all.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path

from isola import paths
from isola.assets import manifest
from isola.container.images import digest
from isola.container.images.model import LAYER_GZIP, ImageIn, LayerIn
from isola.errors import FormatError, NotFoundError

EPOCH = 0
ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
ETC = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hostname": "isola\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
}
DIRS = ("bin", "dev", "etc", "home", "proc", "root", "sys", "tmp", "usr", "usr/bin", "usr/sbin", "sbin", "var")


def busybox_asset() -> Path:
    """The cached amd64 static busybox (`isola assets fetch` puts it there)."""
    return manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "amd64", "busybox")


def applets(busybox: Path) -> list[str]:
    """The applet paths busybox installs itself as (`busybox --list-full`: `bin/sh`, `usr/bin/wc`, …)."""
    try:
        out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        raise FormatError(f"{busybox}: cannot list its applets: {exc}") from None
    return sorted({line.strip() for line in out.stdout.splitlines() if line.strip() and ".." not in line})


def _info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def layer_tar(busybox: Path) -> bytes:
    """The one layer: directories, /bin/busybox, a symlink per applet, a minimal /etc."""
    program = busybox.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in DIRS:
            tar.addfile(_info(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))
        tar.addfile(_info("bin/busybox", tarfile.REGTYPE, 0o755, len(program)), io.BytesIO(program))
        for applet in applets(busybox):
            if applet == "bin/busybox" or applet.split("/")[0] not in ("bin", "sbin", "usr"):
                continue
            link = _info(applet, tarfile.SYMTYPE, 0o777)
            link.linkname = "/bin/busybox"
            tar.addfile(link)
        for name, text in ETC.items():
            data = text.encode()
            tar.addfile(_info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return buf.getvalue()


def busybox_image(busybox: Path | None = None) -> ImageIn:
    """The busybox base image, ready for `ImageStore.add`."""
    if busybox is None:
        busybox = busybox_asset()
    if not busybox.is_file():
        raise NotFoundError(f"{busybox}: no such file")
    plain = layer_tar(busybox)
    compressed = gzip.compress(plain, mtime=EPOCH)
    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ENV, "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [digest.of_bytes(plain)]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"isola image build (busybox {busybox.name})"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    layer = LayerIn(digest.of_bytes(compressed), LAYER_GZIP, lambda: io.BytesIO(compressed))
    return ImageIn(config_bytes, digest.of_bytes(config_bytes), [layer], [], None)
