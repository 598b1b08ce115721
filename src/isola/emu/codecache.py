"""A persistent cache of translated blocks, so that a program starts fast from its second run on.

Translating is mostly `compile()`, and short programs (a busybox applet, a static hello) spend nearly all
their time translating code they run once. A translation depends only on the address and bytes of the pages
it was made from: entries are stored per (first) page under the SHA-1 of (translator version, page address,
page bytes); an entry for a block spanning pages also records the other pages' digests and is used only while
they match. A page whose bytes change (self-modifying code, another build of the binary) simply has another
key. Each block's record stays marshalled inside its page's file until the block first runs, so loading a
page costs little more than reading it, whatever else was once translated there. Files are written at exit,
atomically (temp + rename), so concurrent emulators (a pipeline of forked guests) at worst redo a translation.

The location is `$ISOLA_EMU_CACHE`, default `$ISOLA_HOME/emu-cache`; an empty value, or a directory that
cannot be written, turns the cache off.
"""

from __future__ import annotations

# CPython's own SHA-1 rather than hashlib: hashlib loads OpenSSL, which costs ~3 ms of every start-up.
import _sha1  # type: ignore[import-not-found]
import contextlib
import importlib.util
import marshal
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from isola import paths

# A record: (code object, n, pcs, ends, nexts, offsets, lines, pages): everything `Block` needs but the
# function, under the key (start, hot). An entry holds it marshalled; a hot block may span pages, so its
# entry also carries the other pages' digests.
Record = tuple[Any, int, list[int], list[int], list[int], list[int], list[int], tuple[int, ...]]
Entry = tuple[bytes, tuple[tuple[int, str], ...]]


def _sha1_hex(data: bytes) -> str:
    return str(_sha1.sha1(data).hexdigest())


def _translator_version() -> bytes:
    """Translations change when the translator does: key them by its source and the Python bytecode magic."""
    here = Path(__file__).parent
    names = ("translate.py", "codegen.py", "fpgen.py", "fpfast.py", "facts.py", "codecache.py")
    sources = b"".join((here / name).read_bytes() for name in names)
    return _sha1_hex(importlib.util.MAGIC_NUMBER + sources).encode()


def default_root() -> Path | None:
    configured = os.environ.get("ISOLA_EMU_CACHE")
    if configured is not None:
        return Path(configured) if configured else None
    return paths.home() / "emu-cache"


class CodeCache:
    def __init__(self, root: Path | None) -> None:
        self.root = root if root is not None and _writable(root) else None
        self._version = _translator_version() if self.root is not None else b""
        self._pages: dict[int, tuple[str, dict[tuple[int, bool], Entry]]] = {}  # page -> (key, entries)
        self._dirty: set[int] = set()

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def lookup(self, page: int, start: int, hot: bool, read_page: Callable[[int], bytes]) -> Record | None:
        """The cached translation of the block at `start` (in `page`), if every page it covers is unchanged."""
        entry = self._entries(page, read_page).get((start, hot))
        if entry is None:
            return None
        data, others = entry
        for other, key in others:
            if self._key(other, read_page) != key:
                return None
        try:
            record: Record = marshal.loads(data)
        except (EOFError, ValueError, TypeError):
            return None  # damaged: translate afresh
        return record

    def add(self, page: int, start: int, hot: bool, record: Record, read_page: Callable[[int], bytes]) -> None:
        others = tuple((p, self._key(p, read_page)) for p in record[7] if p != page)
        self._entries(page, read_page)[(start, hot)] = (marshal.dumps(record), others)
        self._dirty.add(page)

    def _key(self, page: int, read_page: Callable[[int], bytes]) -> str:
        return self._load(page, read_page)[0]

    def _entries(self, page: int, read_page: Callable[[int], bytes]) -> dict[tuple[int, bool], Entry]:
        return self._load(page, read_page)[1]

    def _load(self, page: int, read_page: Callable[[int], bytes]) -> tuple[str, dict[tuple[int, bool], Entry]]:
        """A page's key (from its current bytes) and cached entries, read from disk on first use."""
        known = self._pages.get(page)
        if known is None:
            key = _sha1_hex(self._version + page.to_bytes(8, "little") + read_page(page))
            records: dict[tuple[int, bool], Entry] = {}
            assert self.root is not None
            # absent or damaged: translate afresh, and overwrite it at exit
            with contextlib.suppress(OSError, EOFError, ValueError, TypeError):
                records = marshal.loads((self.root / key[:2] / key).read_bytes())
            known = self._pages[page] = (key, records)
        return known

    def forget(self, page: int) -> None:
        """The page changed or went away: its next use hashes it again."""
        self._pages.pop(page, None)
        self._dirty.discard(page)

    def save(self) -> None:
        if self.root is None:
            return
        for page in sorted(self._dirty):
            key, records = self._pages[page]
            target = self.root / key[:2] / key
            try:
                target.parent.mkdir(exist_ok=True)
                tmp = target.with_name(f".{key}.{os.getpid()}")
                tmp.write_bytes(marshal.dumps(records))
                os.replace(tmp, target)
            except OSError:
                return  # a full or read-only disk costs speed, never correctness
        self._dirty.clear()


def _writable(root: Path) -> bool:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(root, os.W_OK | os.X_OK)
