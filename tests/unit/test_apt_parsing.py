from isola.assets import apt

BB = "http://m.example/debian/pool/main/b/busybox/busybox-static_1.35.0-4%2bb1_amd64.deb"

PRINT_URIS = f"""\
'{BB}' busybox-static_1%3a1.35.0-4+b1_amd64.deb 928188 SHA256:3d3f
W: some warning
'http://m.example/debian/pool/main/o/opensbi/opensbi_1.6-1_all.deb' opensbi_1.6-1_all.deb 204072 SHA256:dc4a
"""

SHOW = """\
Package: linux-image-amd64
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
Description: Linux for 64-bit PCs (meta-package)
 This package depends on the latest Linux kernel.

Package: libc6
Version: 2.41-12
Depends: libgcc-s1 | libgcc1, foo:any (>= 1)
"""


def test_print_uris_lines_are_parsed_and_noise_ignored():
    got = apt.parse_print_uris(PRINT_URIS)
    assert got == [
        (
            BB,
            "busybox-static_1%3a1.35.0-4+b1_amd64.deb",
            928188,
            "3d3f",
        ),
        ("http://m.example/debian/pool/main/o/opensbi/opensbi_1.6-1_all.deb", "opensbi_1.6-1_all.deb", 204072, "dc4a"),
    ]


def test_control_stanzas_with_continuation_lines():
    stanzas = apt.parse_control(SHOW)
    assert [s["Package"] for s in stanzas] == ["linux-image-amd64", "libc6"]
    assert stanzas[0]["Description"].endswith("latest Linux kernel.")


def test_depends_takes_first_alternatives_without_versions_or_arch_qualifiers():
    assert apt.first_alternatives("libgcc-s1 | libgcc1, foo:any (>= 1)") == ["libgcc-s1", "foo"]
    assert apt.first_alternatives("linux-image-6.1.0-56-amd64 (= 6.1.192-2)") == ["linux-image-6.1.0-56-amd64"]
    assert apt.first_alternatives("") == []
