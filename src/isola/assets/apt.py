"""A private apt for one Debian release and architecture: resolves packages, never installs them.

apt-get and apt-cache run with their state (lists, cache, status) redirected into a directory of isola's, and
with sources written by isola from the host's own mirror. The host's package database is never read or
written, so fetching riscv64 packages from trixie on a bookworm amd64 host changes nothing on the host.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from isola.assets.sources import Source
from isola.errors import AssetError, MirrorUnreachableError, NotFoundError

INDEX_MAX_AGE_S = 24 * 3600


@dataclass(frozen=True)
class PackageRef:
    """A package as the archive's Packages index describes it: where it is and what its bytes hash to."""

    name: str
    version: str
    arch: str
    uri: str
    filename: str
    size: int
    sha256: str


def _one_line(source: Source, arch: str) -> str:
    opts = f"arch={arch}" + (f" signed-by={source.signed_by}" if source.signed_by else "")
    return "\n".join(f"deb [{opts}] {source.uri} {suite} {' '.join(source.components)}" for suite in source.suites)


def parse_print_uris(text: str) -> list[tuple[str, str, int, str]]:
    """Lines of `apt-get download --print-uris`: 'URI' FILENAME SIZE SHA256:HEX."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 4 or not parts[0].startswith("'") or not parts[3].startswith("SHA256:"):
            continue
        out.append((parts[0].strip("'"), parts[1], int(parts[2]), parts[3].removeprefix("SHA256:")))
    return out


def parse_control(text: str) -> list[dict[str, str]]:
    """deb822 stanzas (apt-cache show output) as dicts; continuation lines are joined."""
    stanzas: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if fields:
                stanzas.append(fields)
                fields = {}
            continue
        if line[:1].isspace() and key:
            fields[key] += "\n" + line.strip()
            continue
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return stanzas


def first_alternatives(depends: str) -> list[str]:
    """Package names from a Depends field, taking the first of each `a | b` group and dropping versions."""
    names = []
    for group in depends.split(","):
        first = group.split("|")[0].strip()
        if first:
            names.append(first.split()[0].split(":")[0])
    return names


class AptArchive:
    """apt for `release`/`arch`, with all state under `root`."""

    def __init__(self, root: Path, release: str, arch: str, sources: list[Source]) -> None:
        self.root = root
        self.release = release
        self.arch = arch
        self.sources = sources
        self.lists = root / "lists"

    def _options(self) -> list[str]:
        r = self.root
        conf = {
            "Dir::State": r,
            "Dir::State::Lists": self.lists,
            "Dir::State::status": r / "status",
            "Dir::Cache": r / "cache",
            # Hosts built from container images often disable apt's binary cache; without it every apt
            # call re-parses the whole index (~0.5 s for trixie riscv64).
            "Dir::Cache::pkgcache": "pkgcache.bin",
            "Dir::Cache::srcpkgcache": "srcpkgcache.bin",
            "Dir::Etc::SourceList": r / "sources.list",
            "Dir::Etc::SourceParts": r / "sources.list.d",
            "Dir::Etc::Preferences": r / "preferences",
            "Dir::Etc::PreferencesParts": r / "preferences.d",
            "APT::Architecture": self.arch,
            "APT::Architectures": self.arch,
            "APT::Sandbox::User": "root",
            "Debug::NoLocking": "1",
            "Acquire::Languages": "none",
            "Acquire::Retries": "2",
            "Acquire::http::Timeout": "30",
        }
        return [arg for k, v in conf.items() for arg in ("-o", f"{k}={v}")]

    def _prepare(self) -> None:
        for d in ("lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        text = "\n".join(_one_line(s, self.arch) for s in self.sources) + "\n"
        sources_list = self.root / "sources.list"
        if not sources_list.exists() or sources_list.read_text() != text:
            sources_list.write_text(text)
            for stale in self.lists.glob("*_Packages*"):  # indexes of other sources must not linger
                stale.unlink()

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool, "-q", *self._options(), *args], cwd=self.root, capture_output=True, text=True, check=False
        )

    def has_index(self) -> bool:
        return any(self.lists.glob("*_Packages*"))

    def index_age(self) -> float | None:
        """Seconds since the Packages index was fetched, None if there is none."""
        stamps = [p.stat().st_mtime for p in self.lists.glob("*_Packages*")]
        return time.time() - min(stamps) if stamps else None

    def update(self, force: bool = False) -> str | None:
        """Fetch the signed index unless a fresh one is cached. Returns a warning when the mirror failed but
        a cached index could be used; raises MirrorUnreachableError when there is nothing to fall back on."""
        self._prepare()
        age = self.index_age()
        if not force and age is not None and age < INDEX_MAX_AGE_S:
            return None
        result = self._run("apt-get", "--error-on=any", "update")
        if result.returncode == 0:
            for p in self.lists.glob("*_Packages*"):
                p.touch()  # apt keeps the old mtime when the index did not change; we track our last check
            return None
        errors = [ln for ln in (result.stderr + result.stdout).splitlines() if ln.startswith(("E:", "W:", "Err"))]
        reason = errors[0] if errors else f"apt-get update exited {result.returncode}"
        mirrors = ", ".join(sorted({s.uri for s in self.sources}))
        if self.has_index():
            return (
                f"cannot refresh the {self.release}/{self.arch} index from {mirrors} ({reason}); using the cached one"
            )
        raise MirrorUnreachableError(
            f"cannot fetch the {self.release}/{self.arch} package index from {mirrors}: {reason}",
            hint="check the network and the host's apt sources; `apt-get update` shows the same problem",
        )

    def show(self, packages: list[str]) -> dict[str, dict[str, str]]:
        """The candidate version's index stanza of each package, by name."""
        result = self._run("apt-cache", "show", "--no-all-versions", *packages)
        stanzas = {st.get("Package", ""): st for st in parse_control(result.stdout)}
        missing = [p for p in packages if p not in stanzas]
        if missing:
            raise NotFoundError(f"package {missing[0]} is not in Debian {self.release} for {self.arch}")
        return stanzas

    def resolve(self, packages: list[str]) -> dict[str, PackageRef]:
        """Where each package is and the sha256 the signed index gives it, in two apt calls for all."""
        stanzas = self.show(packages)
        result = self._run("apt-get", "download", "--print-uris", *packages)
        by_sha = {sha: (uri, filename, size) for uri, filename, size, sha in parse_print_uris(result.stdout)}
        refs = {}
        for name, st in stanzas.items():
            sha = st.get("SHA256", "")
            if sha not in by_sha:
                raise AssetError(f"apt-get gave no download for {name}: {result.stderr.strip() or 'no URI printed'}")
            uri, filename, size = by_sha[sha]
            refs[name] = PackageRef(
                name, st.get("Version", ""), st.get("Architecture", self.arch), uri, filename, size, sha
            )
        return refs
