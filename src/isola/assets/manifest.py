"""The asset manifest: what is cached, from which package version, and the checksums that prove it.

`manifest.json` sits at the top of the asset cache and is replaced atomically, so a crash mid-fetch leaves
the previous manifest, which only names trees that were complete when it was written.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from isola.errors import NotFoundError

FILENAME = "manifest.json"
SCHEMA = 1


@dataclass(frozen=True)
class Artifact:
    role: str
    path: str  # relative to the asset cache
    sha256: str


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str  # the architecture asked for (an `all` package is recorded under the arch that wanted it)
    release: str
    requested: str  # what the catalog asked for: a metapackage name, or the package itself
    sha256: str  # of the .deb, as the archive's Packages index states it
    size: int
    deb: str  # relative to the asset cache
    tree: str  # the unpacked package, relative to the asset cache
    artifacts: tuple[Artifact, ...] = ()
    tree_role: str | None = None  # the unpacked tree itself plays this role (libc6: "sysroot")
    fetched_at: str = ""


@dataclass
class Manifest:
    packages: list[Package] = field(default_factory=list)

    def find(self, arch: str, requested: str) -> Package | None:
        return next((p for p in self.packages if p.arch == arch and p.requested == requested), None)

    def put(self, pkg: Package) -> None:
        """Record `pkg`, replacing what was fetched for the same request before."""
        self.packages = [p for p in self.packages if not (p.arch == pkg.arch and p.requested == pkg.requested)]
        self.packages.append(pkg)
        self.packages.sort(key=lambda p: (p.arch, p.requested))

    def artifact(self, cache: Path, arch: str, role: str) -> Path:
        """The cached file (or tree) that plays `role` for `arch`, e.g. riscv64 "kernel" or "sysroot"."""
        for p in self.packages:
            if p.arch != arch:
                continue
            if p.tree_role == role:
                return cache / p.tree
            for a in p.artifacts:
                if a.role == role:
                    return cache / a.path
        raise NotFoundError(
            f"no {arch} asset plays the role '{role}'", hint=f"run `isola assets fetch --arch {arch}` first"
        )


def _package(d: dict[str, Any]) -> Package:
    return Package(**{**d, "artifacts": tuple(Artifact(**a) for a in d.get("artifacts", []))})


def load(cache: Path) -> Manifest:
    """The manifest of the cache at `cache`; an empty one if there is none or it cannot be read (a fetch
    then re-verifies and rebuilds everything, which is the right answer to a damaged manifest)."""
    try:
        doc = json.loads((cache / FILENAME).read_text())
        if doc.get("schema") != SCHEMA:
            return Manifest()
        return Manifest([_package(p) for p in doc["packages"]])
    except (OSError, ValueError, KeyError, TypeError):
        return Manifest()


def save(cache: Path, manifest: Manifest) -> None:
    """Write atomically: temp file, fsync, rename."""
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{FILENAME}.{os.getpid()}.tmp"
    doc = {"schema": SCHEMA, "packages": [asdict(p) for p in manifest.packages]}
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, cache / FILENAME)
