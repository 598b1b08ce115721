"""Initramfs images checked by an independent reader: Debian's GNU cpio lists and extracts what isola wrote.

Needs the `cpio` and `gzip` binaries (Debian packages cpio, gzip). Device nodes and ownership are only
checked when running as root, since only root can extract them; the busybox tests take the static busybox
of isola's amd64 guest assets and run its /init under chroot as root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from isola import paths
from isola.assets import manifest
from isola.assets.initramfs import (
    Dir,
    Entry,
    Fifo,
    File,
    ImageSpec,
    Node,
    Symlink,
    build,
    busybox_applets,
    busybox_image,
)
from isola.cli.initramfs import initramfs
from isola.cli.main import cli
from isola.errors import InvalidSpecError, NotFoundError

IS_ROOT = os.geteuid() == 0
MTIME = 1234567890
HOST_DATA = bytes(range(256)) * 16 + b"odd"  # 4099 bytes: not a multiple of 4

# What GNU cpio must report for `_spec()`, written out by hand: (mode string, uid, gid, size or "maj,min",
# name, symlink target). Implicit parent directories appear right before their first child.
EXPECTED = [
    ("drwxr-x---", 0, 4, "0", "etc", None),
    ("-rw-r-----", 1000, 1000, "6", "etc/hostname", None),
    ("drwxr-xr-x", 0, 0, "0", "usr", None),
    ("drwxr-xr-x", 0, 0, "0", "usr/bin", None),
    ("-rwsr-xr-x", 0, 0, "4099", "usr/bin/tool", None),
    ("-rw-r--r--", 0, 0, "0", "empty", None),
    ("drwxr-xr-x", 0, 0, "0", "bin", None),
    ("lrwxrwxrwx", 5, 6, "7", "bin/sh", "busybox"),
    ("lrwxrwxrwx", 0, 0, "7", "lib", "usr/lib"),
    ("drwxrwxrwt", 0, 0, "0", "tmp", None),
    ("drwxr-xr-x", 0, 0, "0", "dev", None),
    ("crw-------", 0, 0, "5,1", "dev/console", None),
    ("crw-rw-rw-", 0, 0, "1,3", "dev/null", None),
    ("brw-rw----", 0, 6, "254,0", "dev/vda", None),
    ("drwxr-xr-x", 0, 0, "0", "run", None),
    ("prw--w----", 0, 0, "0", "run/ctl", None),
]
CONTENTS = {"etc/hostname": b"guest\n", "usr/bin/tool": HOST_DATA, "empty": b""}

_TV_LINE = re.compile(
    r"(?P<mode>\S{10})\s+\d+\s+(?P<uid>\d+)\s+(?P<gid>\d+)\s+(?:(?P<major>\d+),\s*(?P<minor>\d+)|(?P<size>\d+))"
    r"\s+\w{3}\s+\d+\s+(?:\d{4}|\d\d:\d\d)\s+(?P<name>.+?)(?: -> (?P<target>.+))?"
)


@pytest.fixture(scope="module")
def cpio() -> str:
    found = shutil.which("cpio")
    if found is None:
        pytest.skip("GNU cpio is not installed (Debian package: cpio)")
    return found


def _spec(host_file: Path, *, with_nodes: bool = True) -> ImageSpec:
    entries: list[Entry] = [
        Dir("/etc", mode=0o750, gid=4),
        File("/etc/hostname", b"guest\n", mode=0o640, uid=1000, gid=1000),
        File("/usr/bin/tool", host_file, mode=0o4755),
        File("/empty", b""),
        Symlink("/bin/sh", "busybox", uid=5, gid=6),
        Symlink("lib", "usr/lib"),
        Dir("/tmp", mode=0o1777),
        Dir("/dev"),
        Node("/dev/console", "char", 5, 1),
        Node("/dev/null", "char", 1, 3, mode=0o666),
        Node("/dev/vda", "block", 254, 0, mode=0o660, gid=6),
        Fifo("/run/ctl", mode=0o620),
    ]
    if not with_nodes:
        entries = [e for e in entries if not isinstance(e, Node)]
    return ImageSpec(tuple(entries), mtime=MTIME)


def _expected(with_nodes: bool = True) -> list[tuple[str, int, int, str, str, str | None]]:
    return [row for row in EXPECTED if with_nodes or row[0][0] not in "cb"]


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    path = tmp_path / "host-tool"
    path.write_bytes(HOST_DATA)
    return path


def _run(args: list[str], stdin: bytes) -> str:
    done = subprocess.run(
        args, input=stdin, capture_output=True, check=True, timeout=60, env={**os.environ, "LC_ALL": "C"}
    )
    return done.stdout.decode()


def _listing(cpio: str, archive: bytes) -> list[tuple[str, int, int, str, str, str | None]]:
    rows = []
    for line in _run([cpio, "-tvn", "--quiet"], archive).splitlines():
        m = _TV_LINE.fullmatch(line)
        assert m, f"unexpected cpio -tv line: {line!r}"
        size = f"{m['major']},{m['minor']}" if m["major"] else m["size"]
        rows.append((m["mode"], int(m["uid"]), int(m["gid"]), size, m["name"], m["target"]))
    return rows


def _extract(cpio: str, image: Path, dest: Path) -> None:
    """Unpack with GNU cpio; without root only its failures to mknod device nodes are tolerated."""
    dest.mkdir()
    with image.open("rb") as archive:
        done = subprocess.run(
            [cpio, "-idm", "--quiet", "--no-absolute-filenames"],
            stdin=archive,
            cwd=dest,
            capture_output=True,
            timeout=60,
            env={**os.environ, "LC_ALL": "C"},
        )
    errors = [line for line in done.stderr.decode().splitlines() if IS_ROOT or "Cannot mknod" not in line]
    assert not errors and (done.returncode == 0 or not IS_ROOT), done.stderr.decode()


def test_cpio_lists_exactly_the_names_in_order(cpio: str, tmp_path: Path, host_file: Path) -> None:
    image = tmp_path / "initrd.cpio"
    build(_spec(host_file), image, compress=False)
    names = _run([cpio, "-t", "--quiet"], image.read_bytes()).splitlines()
    assert names == [row[4] for row in EXPECTED]


def test_cpio_verbose_listing_shows_modes_owners_sizes_devices_and_targets(
    cpio: str, tmp_path: Path, host_file: Path
) -> None:
    image = tmp_path / "initrd.cpio"
    build(_spec(host_file), image, compress=False)
    assert _listing(cpio, image.read_bytes()) == EXPECTED


def test_extraction_recreates_the_tree(cpio: str, tmp_path: Path, host_file: Path) -> None:
    image = tmp_path / "initrd.cpio"
    build(_spec(host_file, with_nodes=IS_ROOT), image, compress=False)
    root = tmp_path / "root"
    _extract(cpio, image, root)
    seen = []
    for mode, uid, gid, size, name, target in _expected(with_nodes=IS_ROOT):
        st = (root / name).lstat()
        seen.append(name)
        assert stat.filemode(st.st_mode) == mode, name
        if IS_ROOT:
            assert (st.st_uid, st.st_gid) == (uid, gid), name
        if target is not None:
            assert os.readlink(root / name) == target
        elif mode[0] in "cb":
            assert f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}" == size, name
        elif mode[0] == "-":
            assert (root / name).read_bytes() == CONTENTS[name]
            assert st.st_mtime == MTIME, name
    on_disk = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert on_disk == sorted(seen)
    if not IS_ROOT:
        pytest.skip("device nodes and ownership were not checked: extracting them needs root")


def test_gzip_image_decompresses_to_the_same_archive(cpio: str, tmp_path: Path, host_file: Path) -> None:
    if shutil.which("gzip") is None:
        pytest.skip("gzip is not installed (Debian package: gzip)")
    spec = _spec(host_file)
    build(spec, tmp_path / "initrd.gz")
    build(spec, tmp_path / "initrd.cpio", compress=False)
    with (
        (tmp_path / "initrd.gz").open("rb") as src,
        subprocess.Popen(["gzip", "-dc"], stdin=src, stdout=subprocess.PIPE) as gunzip,
    ):
        listed = subprocess.run(
            [cpio, "-t", "--quiet"], stdin=gunzip.stdout, capture_output=True, check=True, timeout=60
        )
        assert gunzip.wait(timeout=60) == 0
    assert listed.stdout.decode().splitlines() == [row[4] for row in EXPECTED]
    plain = subprocess.run(["gzip", "-dc", tmp_path / "initrd.gz"], capture_output=True, check=True).stdout
    assert plain == (tmp_path / "initrd.cpio").read_bytes()


def test_builds_are_reproducible(tmp_path: Path, host_file: Path) -> None:
    for compress in (True, False):
        build(_spec(host_file), tmp_path / "a", compress=compress)
        build(_spec(host_file), tmp_path / "b", compress=compress)
        assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o644


def test_failed_build_leaves_the_old_image_and_no_temp_file(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    image = out_dir / "initrd.gz"
    image.write_bytes(b"previous image")
    spec = ImageSpec((File("/big", b"x" * 100_000), File("/tool", tmp_path / "vanished")))
    with pytest.raises(NotFoundError, match=r"tool: source .*vanished does not exist"):
        build(spec, image)
    assert image.read_bytes() == b"previous image"
    assert [p.name for p in out_dir.iterdir()] == ["initrd.gz"]
    with pytest.raises(NotFoundError, match="output directory does not exist"):
        build(spec, tmp_path / "missing" / "initrd.gz")


# --- busybox ------------------------------------------------------------------------------------------------


def _is_static_elf(path: Path) -> bool:
    """True when the ELF file has no program interpreter, so it runs inside a chroot with nothing else."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        return False
    order = "<" if data[5] == 1 else ">"
    if data[4] == 2:
        (phoff,) = struct.unpack_from(order + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 0x36)
    else:
        (phoff,) = struct.unpack_from(order + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 0x2A)
    pt_interp = 3
    return all(struct.unpack_from(order + "I", data, phoff + i * phentsize)[0] != pt_interp for i in range(phnum))


@pytest.fixture(scope="module")
def busybox() -> Path:
    """The amd64 busybox-static from isola's guest assets (fetched by `make test`), else the host's."""
    try:
        cached: Path | None = manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "amd64", "busybox")
    except NotFoundError:
        cached = None
    for candidate in (cached, Path("/bin/busybox"), shutil.which("busybox")):
        if candidate and Path(candidate).is_file() and _is_static_elf(Path(candidate)):
            return Path(candidate)
    pytest.skip("no static busybox: run `isola assets fetch --arch amd64`")


def _chroot_init(root: Path) -> str:
    if not IS_ROOT:
        pytest.skip("running the image's /init under chroot needs root")
    done = subprocess.run(
        ["chroot", str(root), "/init"],
        capture_output=True,
        timeout=60,
        env={"PATH": "/bin:/sbin:/usr/bin:/usr/sbin", "LC_ALL": "C"},
    )
    if done.returncode != 0 and b"Operation not permitted" in done.stderr:
        pytest.skip(f"chroot is not permitted here: {done.stderr.decode().strip()}")
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


INIT = '#!/bin/sh\necho "init ran as $(id -u)"\nls /dev\ncat /proc-less 2>/dev/null || echo no-proc-needed\n'


def test_busybox_image_links_the_applets_it_reports(cpio: str, busybox: Path, tmp_path: Path) -> None:
    listed = subprocess.run([busybox, "--list"], capture_output=True, check=True).stdout.decode().split()
    assert busybox_applets(busybox) == listed
    image = tmp_path / "initrd.gz"
    build(busybox_image(busybox, INIT), image)
    rows = _listing(cpio, subprocess.run(["gzip", "-dc", image], capture_output=True, check=True).stdout)
    by_name = {row[4]: row for row in rows}
    links = {name for name, row in by_name.items() if row[5] == "busybox"}
    assert links == {f"bin/{a}" for a in listed if a != "busybox"}
    assert by_name["bin/busybox"][:4] == ("-rwxr-xr-x", 0, 0, str(busybox.stat().st_size))
    assert by_name["dev/console"][:4] == ("crw-------", 0, 0, "5,1")
    assert by_name["dev/null"][:4] == ("crw-rw-rw-", 0, 0, "1,3")
    assert by_name["init"][0] == "-rwxr-xr-x"
    for name, mode in [
        ("proc", "dr-xr-xr-x"),
        ("sys", "dr-xr-xr-x"),
        ("tmp", "drwxrwxrwt"),
        ("root", "drwx------"),
    ]:
        assert by_name[name][0] == mode
    root = tmp_path / "root"
    _extract(cpio, _gunzip(image, tmp_path), root)
    assert (root / "bin/busybox").read_bytes() == busybox.read_bytes()
    assert (root / "init").read_text() == INIT
    output = _chroot_init(root)
    assert output.splitlines() == ["init ran as 0", "console", "null", "no-proc-needed"]


def _gunzip(image: Path, tmp_path: Path) -> Path:
    plain = tmp_path / "plain.cpio"
    plain.write_bytes(subprocess.run(["gzip", "-dc", image], capture_output=True, check=True).stdout)
    return plain


def test_busybox_that_cannot_run_here_installs_its_applets_at_boot(cpio: str, busybox: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "busybox"
    shutil.copyfile(busybox, foreign)
    foreign.chmod(0o644)  # not executable: this host cannot ask it for its applets
    assert busybox_applets(foreign) is None
    spec = busybox_image(foreign, "#!/bin/sh\nls /bin/ls /sbin/ifconfig\n")
    image = tmp_path / "initrd.cpio"
    build(spec, image, compress=False)
    rows = _listing(cpio, image.read_bytes())
    assert [row[4] for row in rows if row[5] is not None] == ["bin/sh"]
    assert next(row for row in rows if row[4] == "bin/busybox")[0] == "-rwxr-xr-x"
    root = tmp_path / "root"
    _extract(cpio, image, root)
    assert (root / "init").read_text() == "#!/bin/sh\n/bin/busybox --install -s\nls /bin/ls /sbin/ifconfig\n"
    assert _chroot_init(root).split() == ["/bin/ls", "/sbin/ifconfig"]
    assert os.readlink(root / "bin/ls") == "/bin/busybox"


def test_busybox_image_takes_an_explicit_applet_list(cpio: str, busybox: Path, tmp_path: Path) -> None:
    spec = busybox_image(
        busybox, "#!/bin/sh\n", applets=["sh", "echo", "busybox", "sh"], extra=[File("/etc/motd", b"hi\n")]
    )
    image = tmp_path / "initrd.cpio"
    build(spec, image, compress=False)
    rows = _listing(cpio, image.read_bytes())
    assert [row[4] for row in rows if row[5] is not None] == ["bin/sh", "bin/echo"]
    assert rows[-1][4] == "etc/motd"
    with pytest.raises(InvalidSpecError) as info:
        busybox_image(busybox, "#!/bin/sh\n", applets=["ls", "../../etc/passwd"])
    assert info.value.field == "applets[1]"
    with pytest.raises(InvalidSpecError) as info:
        busybox_image(busybox, "echo no shebang\n", applets=[])
    assert info.value.field == "init"
    with pytest.raises(InvalidSpecError, match=r"'dev/null' is also"):
        busybox_image(busybox, "#!/bin/sh\n", applets=[], extra=[Node("/dev/null", "char", 1, 3)])
    with pytest.raises(NotFoundError):
        busybox_image(tmp_path / "nope", "#!/bin/sh\n")


# --- CLI ----------------------------------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    assert cli.get_command(click.Context(cli), "initramfs") is initramfs
    return CliRunner()


def test_cli_builds_and_lists_an_image(cpio: str, runner: CliRunner, tmp_path: Path, host_file: Path) -> None:
    spec = {
        "mtime": 5,
        "entries": [
            {"type": "file", "path": "/usr/bin/tool", "source": host_file.name, "mode": "4755"},
            {"type": "symlink", "path": "/bin/sh", "target": "busybox", "uid": 5, "gid": 6},
            {"type": "node", "path": "/dev/console", "kind": "char", "major": 5, "minor": 1},
        ],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    image = tmp_path / "out.gz"
    result = runner.invoke(cli, ["initramfs", "build", str(tmp_path / "spec.json"), "-o", str(image)])
    assert result.exit_code == 0, result.output
    assert f"wrote {image}: 7 entries" in result.stdout
    assert image.read_bytes()[:2] == b"\x1f\x8b"

    result = runner.invoke(cli, ["initramfs", "ls", str(image), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["name"], r["type"], r["mode"], r["uid"], r["gid"], r["size"], r["target"]) for r in rows] == [
        ("usr", "dir", "0755", 0, 0, 0, None),
        ("usr/bin", "dir", "0755", 0, 0, 0, None),
        ("usr/bin/tool", "file", "4755", 0, 0, len(HOST_DATA), None),
        ("bin", "dir", "0755", 0, 0, 0, None),
        ("bin/sh", "symlink", "0777", 5, 6, 7, "busybox"),
        ("dev", "dir", "0755", 0, 0, 0, None),
        ("dev/console", "char", "0600", 0, 0, 0, None),
    ]
    assert (rows[-1]["major"], rows[-1]["minor"]) == (5, 1)

    result = runner.invoke(cli, ["initramfs", "ls", str(image)])
    assert result.exit_code == 0
    table_rows = [line.split() for line in result.stdout.splitlines() if "bin/sh" in line or "console" in line]
    assert [[c for c in row if c not in "│┃"] for row in table_rows] == [
        ["lrwxrwxrwx", "5", "6", "7", "bin/sh", "->", "busybox"],
        ["crw-------", "0", "0", "5,", "1", "dev/console"],
    ]

    plain = tmp_path / "out.cpio"
    result = runner.invoke(cli, ["initramfs", "build", str(tmp_path / "spec.json"), "-o", str(plain), "--no-gzip"])
    assert result.exit_code == 0, result.output
    assert _run([cpio, "-t", "--quiet"], plain.read_bytes()).splitlines() == [r["name"] for r in rows]


def _unfold(stderr: str) -> tuple[str, str]:
    """The error line and the hint of a CLI failure; rich folds long lines at the terminal width."""
    error, _, hint = stderr.partition("\nhint: ")
    return error.replace("\n", ""), hint.replace("\n", "")


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (
            '{"entries": [{"type": "dir", "path": "/a"}, {"type": "dir", "path": "/b", "mode": 493}]}',
            "entries[1].mode",
        ),
        ('{"entries": [{"type": "file", "path": "/x", "source": "missing.bin"}]}', "entries[0].source"),
        ('{"entries": [', "not valid JSON"),
    ],
)
def test_cli_reports_a_bad_spec_in_one_line(runner: CliRunner, tmp_path: Path, doc: str, needle: str) -> None:
    (tmp_path / "spec.json").write_text(doc)
    image = tmp_path / "out.gz"
    result = runner.invoke(cli, ["initramfs", "build", str(tmp_path / "spec.json"), "-o", str(image)])
    assert result.exit_code == os.EX_DATAERR
    error, hint = _unfold(result.stderr)
    assert error.startswith("isola: error: ") and needle in error
    assert "isola:" not in hint
    assert "Traceback" not in result.output
    assert not image.exists()


def test_cli_ls_rejects_what_is_not_an_image(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"#!/bin/sh\necho not an archive at all, but long enough for a header" * 3)
    result = runner.invoke(cli, ["initramfs", "ls", str(tmp_path / "junk")])
    assert result.exit_code == os.EX_DATAERR
    assert "not a newc cpio archive" in _unfold(result.stderr)[0] and "Traceback" not in result.output
    result = runner.invoke(cli, ["initramfs", "ls", str(tmp_path / "missing")])
    assert result.exit_code == os.EX_NOINPUT
    assert "no such file" in _unfold(result.stderr)[0]


def test_cli_table_shows_names_that_look_like_markup(runner: CliRunner, tmp_path: Path) -> None:
    image = tmp_path / "initrd.gz"
    build(ImageSpec((Symlink("/bin/[[", "busybox"), File("/[bold]x[/bold]", b""), Symlink("/l", "[red]t"))), image)
    result = runner.invoke(cli, ["initramfs", "ls", str(image)])
    assert result.exit_code == 0, result.output
    assert "bin/[[" in result.stdout and "[bold]x[/bold]" in result.stdout and "-> [red]t" in result.stdout
