from pathlib import Path

import pytest

from isola.assets import sources
from isola.errors import AssetError

DEB822 = """\
Types: deb
# a comment inside a stanza
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://mirror.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""

ONE_LINE = """\
# comment
deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main
deb-src http://one.example/debian bookworm main
deb http://vendor.example/apt nodistro main  # a vendor repository
"""


def test_deb822_reads_enabled_binary_stanzas_only():
    got = sources.parse_deb822(DEB822)
    assert [s.uri for s in got] == ["http://mirror.example/debian", "http://mirror.example/debian-security"]
    assert got[0].suites == ("bookworm", "bookworm-updates")
    assert got[0].components == ("main", "contrib")
    assert got[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"


def test_one_line_format_with_options_and_comments():
    got = sources.parse_one_line(ONE_LINE)
    assert got[0] == sources.Source("http://one.example/debian", ("bookworm",), ("main",), "/k.gpg")
    assert got[1].uri == "http://vendor.example/apt"


def test_the_debian_mirror_is_the_source_with_a_release_suite_not_a_vendor_repo():
    vendor = sources.Source("http://vendor.example/apt", ("nodistro",), ("main",))
    debian = sources.parse_deb822(DEB822)
    assert sources.debian_mirror([vendor, *debian]).uri == "http://mirror.example/debian"
    with pytest.raises(AssetError):
        sources.debian_mirror([vendor])


def test_the_hosts_own_release_keeps_its_updates_and_security_entries():
    got = sources.entries_for(sources.parse_deb822(DEB822), "bookworm")
    assert [(s.uri, s.suites) for s in got] == [
        ("http://mirror.example/debian", ("bookworm", "bookworm-updates")),
        ("http://mirror.example/debian-security", ("bookworm-security",)),
    ]


def test_another_release_comes_from_the_same_mirror():
    got = sources.entries_for(sources.parse_deb822(DEB822), "trixie")
    assert got == [
        sources.Source(
            "http://mirror.example/debian", ("trixie",), ("main",), "/usr/share/keyrings/debian-archive-keyring.gpg"
        )
    ]


def test_host_sources_reads_list_and_sources_files_and_ignores_others(tmp_path: Path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(ONE_LINE)
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "old.list.disabled").write_text("deb http://no.example/debian sid main\n")
    uris = [s.uri for s in sources.host_sources(tmp_path)]
    assert "http://no.example/debian" not in uris
    assert uris[0] == "http://one.example/debian"
    assert "http://mirror.example/debian-security" in uris
