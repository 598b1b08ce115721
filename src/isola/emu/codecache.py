"""A persistent cache of translated cold blocks, so that a program starts fast from its second run on.

Translating is mostly `compile()`, and short programs (a busybox applet, a static hello) spend nearly all
their time translating code they run once. Cold blocks never cross a page, so a page's translations depend
only on the page's address and bytes: they are stored per page under the SHA-1 of (translator version, page
address, page bytes), as marshalled code objects. A page whose bytes change (self-modifying code, another
build of the binary) simply has another key. Files are written at exit, atomically (temp + rename), so
concurrent emulators (a pipeline of forked guests) at worst redo a translation.

The location is `$ISOLA_EMU_CACHE`, default `$ISOLA_HOME/emu-cache`; an empty value, or a directory that
cannot be written, turns the cache off.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import marshal
import os
from pathlib import Path
from typing import Any

from isola import paths

# A record: (code object, n, end, pcs, lines, loop_len), everything `Block` needs but the function.
Record = tuple[Any, int, int, list[int], list[int], int]


def _translator_version() -> bytes:
    """Translations change when the translator does: key them by its source and the Python bytecode magic."""
    digest = hashlib.sha1(importlib.util.MAGIC_NUMBER)
    here = Path(__file__).parent
    for name in ("translate.py", "codegen.py", "fpgen.py"):
        digest.update((here / name).read_bytes())
    return digest.digest()


def default_root() -> Path | None:
    configured = os.environ.get("ISOLA_EMU_CACHE")
    if configured is not None:
        return Path(configured) if configured else None
    return paths.home() / "emu-cache"


class CodeCache:
    def __init__(self, root: Path | None) -> None:
        self.root = root if root is not None and _writable(root) else None
        self._version = _translator_version() if self.root is not None else b""
        self._pages: dict[int, tuple[str, dict[int, Record]]] = {}  # page -> (key, start -> record)
        self._dirty: set[int] = set()

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def page(self, page: int, data: bytes) -> dict[int, Record]:
        """The cached records of `page` (whose current bytes are `data`), loading them on first use."""
        known = self._pages.get(page)
        if known is None:
            key = hashlib.sha1(self._version + page.to_bytes(8, "little") + data).hexdigest()
            records: dict[int, Record] = {}
            assert self.root is not None
            # absent or damaged: translate afresh, and overwrite it at exit
            with contextlib.suppress(OSError, EOFError, ValueError, TypeError):
                records = marshal.loads((self.root / key[:2] / key).read_bytes())
            known = self._pages[page] = (key, records)
        return known[1]

    def add(self, page: int, start: int, record: Record) -> None:
        self._pages[page][1][start] = record
        self._dirty.add(page)

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
