"""Fetching guest assets: resolve, download, verify against the archive's index, unpack, record.

Every step is checked and every write is atomic. A `.deb` is downloaded to a `.part` file and renamed only
after its sha256 matches the archive's Packages index; a package is unpacked into a temporary tree and renamed
into place; the manifest is written last. So whatever is interrupted, the cache holds either the old complete
asset or the new complete asset, and a re-run repairs anything found damaged (a cached `.deb` whose hash no
longer matches is downloaded again; an unpacked file whose hash changed is unpacked again).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx

from isola.assets import manifest as mf
from isola.assets.apt import AptArchive, PackageRef, first_alternatives
from isola.assets.catalog import Wanted
from isola.assets.sources import Source, entries_for
from isola.errors import AssetError, ChecksumError, MirrorUnreachableError

CHUNK = 1 << 20


class Reporter(Protocol):
    """How a fetch tells the user what it does; the CLI draws progress bars, tests collect events."""

    def begin(self, label: str, total: int | None) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def end(self, label: str, outcome: str) -> None: ...
    def warn(self, message: str) -> None: ...


@dataclass(frozen=True)
class Outcome:
    package: mf.Package
    action: str  # cached | downloaded | repaired | unpacked


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One fetch per cache at a time (make test and a developer's make demo may overlap)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _sweep(cache: Path) -> None:
    """Remove what an interrupted fetch left: partial downloads and temporary trees."""
    for leftover in [*cache.glob("debs/*.part"), *cache.glob("*/.*.tmp"), *cache.glob("*/.*.old")]:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()


def download(ref: PackageRef, dest: Path, reporter: Reporter, client: httpx.Client) -> None:
    """Download `ref` to `dest`, verifying size and sha256 before the file takes its final name."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    size = 0
    reporter.begin(f"{ref.name} {ref.version}", ref.size)
    try:
        with client.stream("GET", ref.uri) as response, open(part, "wb") as out:
            if response.status_code != 200:
                raise MirrorUnreachableError(f"GET {ref.uri}: HTTP {response.status_code}")
            for chunk in response.iter_bytes(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                reporter.advance(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    except httpx.HTTPError as exc:
        part.unlink(missing_ok=True)
        raise MirrorUnreachableError(f"cannot download {ref.uri}: {exc}") from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != ref.sha256 or size != ref.size:
        part.unlink()
        raise ChecksumError(
            f"{ref.filename} from {ref.uri} has sha256 {digest.hexdigest()} and {size} bytes; "
            f"the archive's index says {ref.sha256} and {ref.size} bytes",
            hint="the download was damaged or the mirror is inconsistent; try again later",
        )
    os.replace(part, dest)


def unpack(deb: Path, tree: Path) -> None:
    """Unpack `deb` into `tree`, replacing an older tree only once the new one is complete."""
    tree.parent.mkdir(parents=True, exist_ok=True)
    tmp = tree.with_name(f".{tree.name}.tmp")
    old = tree.with_name(f".{tree.name}.old")
    for d in (tmp, old):
        if d.exists():
            shutil.rmtree(d)
    tmp.mkdir()
    result = subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(tmp)
        raise AssetError(f"cannot unpack {deb.name}: {result.stderr.strip()}")
    if tree.exists():
        os.rename(tree, old)
    os.rename(tmp, tree)
    if old.exists():
        shutil.rmtree(old)


def locate(w: Wanted, cache: Path, tree: Path) -> tuple[mf.Artifact, ...]:
    """Find each artifact of `w` in the unpacked `tree` and hash it."""
    found = []
    for role, pattern in w.artifacts.items():
        matches = sorted(p for p in tree.glob(pattern) if p.is_file())
        if not matches:
            raise AssetError(f"{w.package} ({w.arch}) has no file matching {pattern}; isola's catalog is out of date")
        path = matches[-1]
        found.append(mf.Artifact(role, str(path.relative_to(cache)), sha256_file(path)))
    return tuple(found)


def artifacts_intact(cache: Path, pkg: mf.Package) -> bool:
    return (cache / pkg.tree).is_dir() and all(
        (cache / a.path).is_file() and sha256_file(cache / a.path) == a.sha256 for a in pkg.artifacts
    )


def _remove_replaced(cache: Path, old: mf.Package | None, new: mf.Package) -> None:
    if old is None:
        return
    if old.deb != new.deb:
        (cache / old.deb).unlink(missing_ok=True)
    if old.tree != new.tree and (cache / old.tree).exists():
        shutil.rmtree(cache / old.tree)


class Fetcher:
    """Fetches catalog entries into `cache`, with private apt state under `apt_root`."""

    def __init__(
        self,
        cache: Path,
        apt_root: Path,
        host_sources: list[Source],
        reporter: Reporter,
        refresh: bool = False,
    ) -> None:
        self.cache = cache
        self.apt_root = apt_root
        self.host_sources = host_sources
        self.reporter = reporter
        self.refresh = refresh
        self._archives: dict[tuple[str, str], AptArchive] = {}

    def archive(self, release: str, arch: str) -> AptArchive:
        key = (release, arch)
        if key not in self._archives:
            a = AptArchive(self.apt_root / f"{release}-{arch}", release, arch, entries_for(self.host_sources, release))
            warning = a.update(force=self.refresh)
            if warning:
                self.reporter.warn(warning)
            self._archives[key] = a
        return self._archives[key]

    def resolve(self, wanted: list[Wanted]) -> list[PackageRef]:
        """The package to download for each entry (a metapackage's chosen dependency in its place), with
        a few apt calls per archive rather than a few per package."""
        out: dict[int, PackageRef] = {}
        for key in dict.fromkeys((w.release, w.arch) for w in wanted):
            group = {i: w for i, w in enumerate(wanted) if (w.release, w.arch) == key}
            archive = self.archive(*key)
            metas = [w.package for w in group.values() if w.follow]
            stanzas = archive.show(metas) if metas else {}
            chosen = {}
            for i, w in group.items():
                chosen[i] = w.package
                if w.follow:
                    deps = first_alternatives(stanzas[w.package].get("Depends", ""))
                    follow = [d for d in deps if d.startswith(w.follow)]
                    if not follow:
                        raise AssetError(f"{w.package} ({w.release}/{w.arch}) depends on no {w.follow}* package")
                    chosen[i] = follow[0]
            refs = archive.resolve(list(chosen.values()))
            out.update({i: refs[name] for i, name in chosen.items()})
        return [out[i] for i in range(len(wanted))]

    def fetch(self, wanted: list[Wanted]) -> list[Outcome]:
        with _locked(self.cache), httpx.Client(timeout=httpx.Timeout(30.0), follow_redirects=True) as client:
            _sweep(self.cache)
            manifest = mf.load(self.cache)
            refs = self.resolve(wanted)
            return [self._one(w, ref, manifest, client) for w, ref in zip(wanted, refs, strict=True)]

    def _one(self, w: Wanted, ref: PackageRef, manifest: mf.Manifest, client: httpx.Client) -> Outcome:
        prev = manifest.find(w.arch, w.package)
        deb = self.cache / "debs" / ref.filename
        action = "cached"
        if not deb.exists():
            action = "downloaded"
        elif sha256_file(deb) != ref.sha256:
            self.reporter.warn(f"cached {deb.name} does not match the archive's sha256: fetching it again")
            action = "repaired"
        if action != "cached":
            download(ref, deb, self.reporter, client)
        same = prev is not None and prev.version == ref.version and prev.sha256 == ref.sha256
        if prev is not None and same and action == "cached" and artifacts_intact(self.cache, prev):
            self.reporter.end(f"{w.arch} {ref.name} {ref.version}", "cached, verified")
            return Outcome(prev, "cached")
        if action == "cached":
            action = "repaired" if same else "unpacked"
            if same:
                self.reporter.warn(f"unpacked {ref.name} ({w.arch}) was damaged: unpacking it again")
        tree = self.cache / w.arch / ref.name
        unpack(deb, tree)
        pkg = mf.Package(
            name=ref.name,
            version=ref.version,
            arch=w.arch,
            release=w.release,
            requested=w.package,
            sha256=ref.sha256,
            size=ref.size,
            deb=str(deb.relative_to(self.cache)),
            tree=str(tree.relative_to(self.cache)),
            artifacts=locate(w, self.cache, tree),
            tree_role=w.tree_role,
            fetched_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        manifest.put(pkg)
        mf.save(self.cache, manifest)
        _remove_replaced(self.cache, prev, pkg)
        self.reporter.end(f"{w.arch} {ref.name} {ref.version}", f"{action}, sha256 verified")
        return Outcome(pkg, action)


def verify(cache: Path, pkg: mf.Package) -> bool:
    """Whether the cached .deb still hashes to the index's sha256 and every artifact to its recorded one."""
    deb = cache / pkg.deb
    return deb.is_file() and sha256_file(deb) == pkg.sha256 and artifacts_intact(cache, pkg)
