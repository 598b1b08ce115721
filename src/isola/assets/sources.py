"""Reading the host's apt sources, to use the Debian mirror the host already trusts.

isola never names a mirror itself: a machine behind a local mirror or a snapshot keeps using it. Both apt
formats are read: one-line `sources.list` entries and deb822 `*.sources` stanzas.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from isola.errors import AssetError

APT_ETC = Path("/etc/apt")
# Debian's release names; a source carrying one of these is the Debian archive (not a vendor repository).
DEBIAN_RELEASES = frozenset(
    {
        "buster",
        "bullseye",
        "bookworm",
        "trixie",
        "forky",
        "duke",
        "sid",
        "oldstable",
        "stable",
        "testing",
        "unstable",
    }
)


@dataclass(frozen=True)
class Source:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def parse_one_line(text: str) -> list[Source]:
    """`deb [options] URI SUITE COMPONENT...` lines; deb-src and comments are skipped."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[4:].strip()
        options: dict[str, str] = {}
        if rest.startswith("["):
            opts, _, rest = rest[1:].partition("]")
            for opt in opts.split():
                key, _, value = opt.partition("=")
                options[key] = value
        fields = rest.split()
        if len(fields) >= 2:
            out.append(Source(fields[0], (fields[1],), tuple(fields[2:]), options.get("signed-by")))
    return out


def parse_deb822(text: str) -> list[Source]:
    """deb822 stanzas (sources.list(5)); only enabled `Types: deb` stanzas are returned."""
    out = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, sep, value = line.partition(":")
            if sep:
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            out.append(
                Source(
                    uri,
                    tuple(fields.get("suites", "").split()),
                    tuple(fields.get("components", "").split()),
                    fields.get("signed-by") or None,
                )
            )
    return out


def host_sources(etc: Path | None = None) -> list[Source]:
    """Every enabled binary source of the host, in the order apt reads them."""
    etc = etc or APT_ETC
    found: list[Source] = []
    main = etc / "sources.list"
    if main.exists():
        found += parse_one_line(main.read_text())
    parts = etc / "sources.list.d"
    if parts.is_dir():
        for p in sorted(parts.iterdir()):
            if p.suffix == ".list":
                found += parse_one_line(p.read_text())
            elif p.suffix == ".sources":
                found += parse_deb822(p.read_text())
    return found


def debian_mirror(sources: list[Source]) -> Source:
    """The host's main Debian archive: the first source carrying a Debian release suite with `main`
    (not -updates, -security or -backports). Its URI serves every release, trixie included."""
    for s in sources:
        if "main" in s.components and DEBIAN_RELEASES.intersection(s.suites):
            return s
    raise AssetError(
        "the host's apt sources name no Debian archive with a release suite and 'main'",
        hint="add the Debian mirror to /etc/apt/sources.list.d/debian.sources",
    )


def entries_for(sources: list[Source], release: str) -> list[Source]:
    """The sources to resolve packages of `release`: the host's own entries for it (release, -updates,
    -security) when the host runs that release, else the main mirror with just that suite."""
    mine = []
    for s in sources:
        suites = tuple(x for x in s.suites if x == release or x.startswith(release + "-"))
        if suites and "main" in s.components:
            mine.append(Source(s.uri, suites, ("main",), s.signed_by))
    if mine:
        return mine
    base = debian_mirror(sources)
    return [Source(base.uri, (release,), ("main",), base.signed_by)]
