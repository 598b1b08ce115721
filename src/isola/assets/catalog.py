"""Which Debian packages isola takes its guests from, and which files in them matter (the *artifacts*).

An artifact is a role ("kernel", "busybox", "sysroot-loader", "fw_dynamic") found by glob inside the unpacked
package, so the engines ask for `assets.artifact("riscv64", "kernel")` and never hard-code a kernel version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ARCHES = ("amd64", "riscv64")


@dataclass(frozen=True)
class Wanted:
    arch: str
    release: str
    package: str
    artifacts: dict[str, str] = field(default_factory=dict)  # role -> glob inside the unpacked tree
    follow: str | None = None  # metapackage: fetch its first dependency starting with this prefix instead
    tree_role: str | None = None  # the whole unpacked package plays this role


CATALOG: tuple[Wanted, ...] = (
    Wanted("amd64", "bookworm", "linux-image-amd64", {"kernel": "boot/vmlinuz-*"}, follow="linux-image-"),
    Wanted("amd64", "bookworm", "busybox-static", {"busybox": "bin/busybox"}),
    Wanted("riscv64", "trixie", "busybox-static", {"busybox": "usr/bin/busybox"}),
    Wanted(
        "riscv64",
        "trixie",
        "libc6",
        {"loader": "usr/lib/riscv64-linux-gnu/ld-linux-riscv64-lp64d.so.1"},
        tree_role="sysroot",
    ),
    Wanted("riscv64", "trixie", "linux-image-riscv64", {"kernel": "boot/vmlinu[xz]-*"}, follow="linux-image-"),
    # A dynamically linked Debian program, to run through the libc6 sysroot.
    Wanted("riscv64", "trixie", "hello", {"hello": "usr/bin/hello"}),
    Wanted(
        "riscv64",
        "trixie",
        "opensbi",
        {
            "fw_dynamic": "usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin",
            "fw_jump": "usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin",
        },
    ),
)


def wanted_for(arches: tuple[str, ...]) -> list[Wanted]:
    return [w for w in CATALOG if w.arch in arches]
