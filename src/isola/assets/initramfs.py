"""Initramfs images described as data: files, directories, links and device nodes, built into a cpio.

A spec rather than a directory tree on disk because an initramfs needs root-owned files and device nodes that
an unprivileged isola cannot create, and because the same spec must give the same image byte for byte. The
JSON form is what `isola initramfs build` reads; `busybox_image` makes the spec almost every guest wants.

JSON document::

    {"mtime": 0,
     "entries": [
       {"type": "file", "path": "/init", "source": "init.sh", "mode": "0755"},
       {"type": "file", "path": "/etc/hostname", "content": "guest\\n"},
       {"type": "file", "path": "/etc/blob", "content_base64": "AAEC"},
       {"type": "dir", "path": "/tmp", "mode": "1777"},
       {"type": "symlink", "path": "/bin/sh", "target": "busybox"},
       {"type": "node", "path": "/dev/console", "kind": "char", "major": 5, "minor": 1, "mode": "0600"},
       {"type": "fifo", "path": "/run/ctl"}]}

Modes are octal strings, because a JSON number would be read as decimal and 755 is not 0o755. A relative
``source`` is taken relative to the spec file. Every entry may carry ``uid`` and ``gid`` (default 0).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isola.assets.cpio import CpioWriter, DeterministicGzip, DeviceKind, WritableStream, validate_name
from isola.errors import InvalidSpecError, IsolaError, NotFoundError, UsageError

_MAX_ID = 0xFFFFFFFF
_MODE_RE = re.compile(r"(?:0o)?([0-7]{1,4})")
_APPLET_RE = re.compile(r"[A-Za-z0-9_.\[\]+-]+")
_LIST_TIMEOUT = 10.0


@dataclass(frozen=True)
class File:
    """A regular file whose content is either given as bytes or read from a host path at build time."""

    path: str
    content: bytes | Path
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Dir:
    path: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Symlink:
    path: str
    target: str
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Node:
    """A device node; the guest kernel creates it with mknod, so the build host needs no privilege."""

    path: str
    kind: DeviceKind
    major: int
    minor: int
    mode: int = 0o600
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Fifo:
    path: str
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


Entry = File | Dir | Symlink | Node | Fifo


def _normalize(path: str, where: str) -> str:
    name = path.strip("/")
    if not name:
        raise InvalidSpecError("the root directory cannot be an entry; it always exists", field=where)
    try:
        validate_name(name)
    except InvalidSpecError as exc:
        raise InvalidSpecError(
            f"{path!r} is not a clean path (no '.', '..' or empty components, no NUL)", field=where
        ) from exc
    return name


def _check_range(value: int, high: int, where: str) -> None:
    if not 0 <= value <= high:
        raise InvalidSpecError(f"{value} is outside 0..{high}", field=where)


@dataclass(frozen=True)
class ImageSpec:
    """A whole image. Constructing one validates it, so every `ImageSpec` that exists can be built.

    Paths may be written with or without a leading ``/``. Missing parent directories are added (mode 0755,
    owned by root) just before their first child, since the kernel does not create them while unpacking.
    """

    entries: tuple[Entry, ...]
    mtime: int = 0
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_range(self.mtime, _MAX_ID, "mtime")
        names: list[str] = []
        index_of: dict[str, int] = {}
        for i, entry in enumerate(self.entries):
            where = f"entries[{i}]"
            name = _normalize(entry.path, f"{where}.path")
            if name in index_of:
                raise InvalidSpecError(f"{name!r} is also entries[{index_of[name]}]", field=f"{where}.path")
            index_of[name] = i
            names.append(name)
            _check_range(entry.uid, _MAX_ID, f"{where}.uid")
            _check_range(entry.gid, _MAX_ID, f"{where}.gid")
            if not isinstance(entry, Symlink):
                _check_range(entry.mode, 0o7777, f"{where}.mode")
            if isinstance(entry, Symlink) and (not entry.target or "\0" in entry.target):
                raise InvalidSpecError("must be a non-empty path without NUL", field=f"{where}.target")
            if isinstance(entry, Node):
                if entry.kind not in ("char", "block"):
                    raise InvalidSpecError(f"{entry.kind!r} is not 'char' or 'block'", field=f"{where}.kind")
                _check_range(entry.major, _MAX_ID, f"{where}.major")
                _check_range(entry.minor, _MAX_ID, f"{where}.minor")
        for i, name in enumerate(names):
            for parent in _ancestors(name):
                j = index_of.get(parent)
                if j is not None and not isinstance(self.entries[j], Dir):
                    raise InvalidSpecError(
                        f"parent {parent!r} is entries[{j}], which is not a directory",
                        field=f"entries[{i}].path",
                    )
        object.__setattr__(self, "_names", tuple(names))

    def members(self) -> Iterator[tuple[str, Entry]]:
        """Archive names and entries in writing order: spec order, each directory before what it holds."""
        explicit = dict(zip(self._names, self.entries, strict=True))
        written: set[str] = set()
        for name in self._names:
            for path in [*reversed(_ancestors(name)), name]:
                if path not in written:
                    written.add(path)
                    yield path, explicit[path] if path in explicit else Dir(path)


def _ancestors(name: str) -> list[str]:
    """``a/b/c`` -> ``['a/b', 'a']``."""
    out = []
    while "/" in name:
        name = name.rpartition("/")[0]
        out.append(name)
    return out


# --- JSON ---------------------------------------------------------------------------------------------------

_COMMON = {"type", "path", "uid", "gid"}
_KEYS: dict[str, set[str]] = {
    "file": _COMMON | {"mode", "source", "content", "content_base64"},
    "dir": _COMMON | {"mode"},
    "symlink": _COMMON | {"target"},
    "node": _COMMON | {"mode", "kind", "major", "minor"},
    "fifo": _COMMON | {"mode"},
}


def _field(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _get_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    if key not in obj:
        raise InvalidSpecError("is required", field=_field(where, key))
    value = obj[key]
    if not isinstance(value, str):
        raise InvalidSpecError(f"must be a string, not {_json_type(value)}", field=_field(where, key))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidSpecError("is not valid Unicode text", field=_field(where, key)) from exc
    return value


def _get_int(obj: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    if key not in obj:
        if default is None:
            raise InvalidSpecError("is required", field=_field(where, key))
        return default
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpecError(f"must be an integer, not {_json_type(value)}", field=_field(where, key))
    return value


def _get_mode(obj: Mapping[str, Any], where: str, default: int) -> int:
    if "mode" not in obj:
        return default
    value = obj["mode"]
    match = _MODE_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidSpecError(
            f'{json.dumps(value)} is not an octal mode string such as "0755"',
            field=f"{where}.mode",
            hint="a JSON number would be read as decimal, so modes are written as strings",
        )
    return int(match.group(1), 8)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _file_content(obj: Mapping[str, Any], where: str, base_dir: Path) -> bytes | Path:
    given = [key for key in ("source", "content", "content_base64") if key in obj]
    if len(given) != 1:
        raise InvalidSpecError("needs exactly one of 'source', 'content' or 'content_base64'", field=where)
    key = given[0]
    text = _get_str(obj, key, where)
    if key == "content":
        return text.encode("utf-8")
    if key == "content_base64":
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise InvalidSpecError(f"is not valid base64 ({exc})", field=f"{where}.{key}") from exc
    source = base_dir / text
    if not source.is_file():
        raise InvalidSpecError(f"{source} is not an existing regular file", field=f"{where}.source")
    return source


def _entry_from_json(obj: object, where: str, base_dir: Path) -> Entry:
    if not isinstance(obj, dict):
        raise InvalidSpecError(f"must be an object, not {_json_type(obj)}", field=where)
    kind = _get_str(obj, "type", where)
    if kind not in _KEYS:
        raise InvalidSpecError(f"{kind!r} is not one of {', '.join(sorted(_KEYS))}", field=f"{where}.type")
    for key in obj:
        if key not in _KEYS[kind]:
            raise InvalidSpecError(
                f"unknown field for a {kind} (known: {', '.join(sorted(_KEYS[kind]))})",
                field=f"{where}.{key}",
            )
    path = _get_str(obj, "path", where)
    owner = {"uid": _get_int(obj, "uid", where, 0), "gid": _get_int(obj, "gid", where, 0)}
    if kind == "file":
        content = _file_content(obj, where, base_dir)
        return File(path, content, mode=_get_mode(obj, where, 0o644), **owner)
    if kind == "dir":
        return Dir(path, mode=_get_mode(obj, where, 0o755), **owner)
    if kind == "symlink":
        return Symlink(path, _get_str(obj, "target", where), **owner)
    if kind == "fifo":
        return Fifo(path, mode=_get_mode(obj, where, 0o644), **owner)
    node_kind = _get_str(obj, "kind", where)
    if node_kind not in ("char", "block"):
        raise InvalidSpecError(f"{node_kind!r} is not 'char' or 'block'", field=f"{where}.kind")
    device: DeviceKind = "char" if node_kind == "char" else "block"
    major, minor = _get_int(obj, "major", where), _get_int(obj, "minor", where)
    return Node(path, device, major, minor, mode=_get_mode(obj, where, 0o600), **owner)


def spec_from_document(doc: object, *, base_dir: Path) -> ImageSpec:
    """Validate a parsed JSON document into a spec; relative sources resolve against `base_dir`."""
    if not isinstance(doc, dict):
        raise InvalidSpecError(f"an initramfs spec must be a JSON object, not {_json_type(doc)}")
    for key in doc:
        if key not in ("entries", "mtime"):
            raise InvalidSpecError("unknown field (known: entries, mtime)", field=key)
    raw_entries = doc.get("entries")
    if not isinstance(raw_entries, list):
        raise InvalidSpecError(f"must be an array, not {_json_type(raw_entries)}", field="entries")
    entries = tuple(_entry_from_json(obj, f"entries[{i}]", base_dir) for i, obj in enumerate(raw_entries))
    return ImageSpec(entries, mtime=_get_int(doc, "mtime", "", 0))


def load_spec(path: Path) -> ImageSpec:
    """Read and validate the JSON spec at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise NotFoundError(f"{path}: no such spec file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read spec: {exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidSpecError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    try:
        return spec_from_document(doc, base_dir=path.parent)
    except InvalidSpecError as exc:
        located = InvalidSpecError(f"{path}: {exc.message}", hint=exc.hint)
        located.field = exc.field
        raise located from exc


# --- building -----------------------------------------------------------------------------------------------


def _add_host_file(writer: CpioWriter, name: str, entry: File, source: Path) -> None:
    try:
        st = source.stat()
        if not stat.S_ISREG(st.st_mode):
            # Opening a FIFO or a device to read it could block or never end.
            raise UsageError(f"{name}: source {source} is not a regular file")
        with source.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            writer.add_file_stream(name, f, size, mode=entry.mode, uid=entry.uid, gid=entry.gid)
    except FileNotFoundError as exc:
        raise NotFoundError(f"{name}: source {source} does not exist") from exc
    except OSError as exc:
        raise UsageError(f"{name}: cannot read source {source}: {exc.strerror or exc}") from exc


def write_spec(spec: ImageSpec, stream: WritableStream) -> None:
    """Write `spec` as an uncompressed newc archive to `stream`."""
    with CpioWriter(stream, mtime=spec.mtime) as writer:
        for name, entry in spec.members():
            if isinstance(entry, File):
                if isinstance(entry.content, Path):
                    _add_host_file(writer, name, entry, entry.content)
                else:
                    writer.add_file(name, entry.content, mode=entry.mode, uid=entry.uid, gid=entry.gid)
            elif isinstance(entry, Dir):
                writer.add_dir(name, mode=entry.mode, uid=entry.uid, gid=entry.gid)
            elif isinstance(entry, Symlink):
                writer.add_symlink(name, entry.target, uid=entry.uid, gid=entry.gid)
            elif isinstance(entry, Node):
                writer.add_device(
                    name, entry.kind, entry.major, entry.minor, mode=entry.mode, uid=entry.uid, gid=entry.gid
                )
            else:
                writer.add_fifo(name, mode=entry.mode, uid=entry.uid, gid=entry.gid)


def build(spec: ImageSpec, out_path: Path, *, compress: bool = True) -> None:
    """Write the image for `spec` to `out_path`, gzip-compressed unless `compress` is false.

    The image is written to a temporary file next to `out_path` and renamed over it only when complete, so a
    failure (a missing source, a full disk) leaves any previous image in place and no partial one behind.
    """
    if out_path.is_dir():
        raise UsageError(f"{out_path} is a directory; give the path of the image file to write")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    except FileNotFoundError as exc:
        raise NotFoundError(f"{out_path.parent}: output directory does not exist") from exc
    except OSError as exc:
        raise IsolaError(f"{out_path}: cannot create the image: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            if compress:
                with DeterministicGzip(raw) as gz:
                    write_spec(spec, gz)
            else:
                write_spec(spec, raw)
            raw.flush()
            os.fsync(raw.fileno())
        tmp.chmod(0o644)
        tmp.replace(out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- busybox ------------------------------------------------------------------------------------------------


def busybox_applets(busybox: Path) -> list[str] | None:
    """The applets `busybox` was built with, or None when that binary cannot run on this host.

    A busybox for another architecture (the riscv64 guests) fails to execute here unless binfmt_misc hands it
    to an emulator; either way the answer is only trusted if the binary ran and listed something.
    """
    try:
        done = subprocess.run(
            [str(busybox), "--list"],
            capture_output=True,
            timeout=_LIST_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    applets = done.stdout.decode("utf-8", "replace").split()
    if done.returncode != 0 or not applets:
        return None
    return applets


def busybox_image(
    busybox: Path,
    init: str,
    *,
    applets: Sequence[str] | None = None,
    extra: Sequence[Entry] = (),
    mtime: int = 0,
) -> ImageSpec:
    """The usual minimal guest: static `busybox` at /bin/busybox, its applets, console and null, and `init`.

    `init` becomes /init and must start with ``#!``, since the kernel execs /init directly. Applets are
    symlinks in /bin. Without an explicit list, and when the binary cannot run here to list its own applets,
    /bin/sh alone is linked and /init first runs ``/bin/busybox --install -s`` so the guest links the rest.
    """
    if not busybox.is_file():
        raise NotFoundError(f"{busybox}: no such busybox binary")
    if not init.startswith("#!"):
        raise InvalidSpecError(
            "must start with '#!' (for example '#!/bin/sh'); the kernel executes /init directly", field="init"
        )
    names = list(applets) if applets is not None else busybox_applets(busybox)
    if names is None:
        shebang, _, rest = init.partition("\n")
        init = f"{shebang}\n/bin/busybox --install -s\n{rest}"
        names = ["sh"]
    for i, applet in enumerate(names):
        if not _APPLET_RE.fullmatch(applet) or applet in (".", ".."):
            raise InvalidSpecError(f"{applet!r} is not a plain applet name", field=f"applets[{i}]")
    entries: list[Entry] = [
        Dir("/bin"),
        Dir("/sbin"),
        Dir("/usr/bin"),
        Dir("/usr/sbin"),
        Dir("/dev"),
        Dir("/proc", mode=0o555),
        Dir("/sys", mode=0o555),
        Dir("/tmp", mode=0o1777),
        Dir("/root", mode=0o700),
        File("/bin/busybox", busybox, mode=0o755),
        *(Symlink(f"/bin/{a}", "busybox") for a in dict.fromkeys(names) if a != "busybox"),
        Node("/dev/console", "char", 5, 1, mode=0o600),
        Node("/dev/null", "char", 1, 3, mode=0o666),
        File("/init", init.encode("utf-8"), mode=0o755),
        *extra,
    ]
    return ImageSpec(tuple(entries), mtime=mtime)
