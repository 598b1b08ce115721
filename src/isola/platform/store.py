"""The state store: one SQLite file (WAL) holding everything the platform must not forget.

Every state change is one transaction: `with store.transaction():` takes SQLite's write lock up front
(`BEGIN IMMEDIATE`, so two writers queue on `busy_timeout` instead of one failing half-way with a stale read)
and commits at the end of the block or rolls back on any exception. `with store.snapshot():` is a read
transaction: one consistent view, never blocking or blocked by the writer (WAL). Python's implicit
transactions are off (`isolation_level=None`), so nothing begins or commits behind our back.

Threads: a Store has one connection. The daemon drives it through `asyncio.to_thread` with one writer; a lock
serialises transactions, so each one must live inside a single to_thread call, never across an `await`.
Nested `transaction()`/`snapshot()` calls join the outer transaction (no savepoints): a repository method
can be called alone or as part of a larger change, which then commits or rolls back as a whole.

Durability: `synchronous=NORMAL` in WAL mode never corrupts the database; a power cut may lose the last
commits, which reconcile-on-start recovers from, in exchange for no fsync per transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from isola.errors import StoreError
from isola.platform.migrations import MIGRATIONS, migrate, user_version

# Failures of the file or the host rather than of isola's SQL, keyed by SQLite's primary result code.
_ENVIRONMENT = {
    sqlite3.SQLITE_BUSY: "is busy: another process has held its write lock too long",
    sqlite3.SQLITE_LOCKED: "is locked",
    sqlite3.SQLITE_READONLY: "is read-only",
    sqlite3.SQLITE_IOERR: "could not be read or written",
    sqlite3.SQLITE_CORRUPT: "is corrupt",
    sqlite3.SQLITE_FULL: "cannot grow: the disk is full",
    sqlite3.SQLITE_CANTOPEN: "cannot be opened",
    sqlite3.SQLITE_NOTADB: "is not a SQLite database",
}


class Store:
    """Open with `Store.open(path)`; use as a context manager or call `close()`."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self.connection = connection
        self.path = path
        self._lock = threading.RLock()
        self._writing = False

    @classmethod
    def open(cls, path: Path, *, migrations: Sequence[str] = MIGRATIONS, busy_timeout: float = 5.0) -> Store:
        """Open (creating if needed) and migrate the store at `path`; tests pass their own `migrations`."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the directory of the state store {path}: {err.strerror}") from err
        store = cls(_connect(path, busy_timeout), path)
        try:
            with store._errors():
                mode = store.connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise StoreError(f"state store {path} cannot use write-ahead logging (journal mode {mode})")
                store.connection.execute("PRAGMA synchronous = NORMAL")
                migrate(store, migrations)
                store.connection.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            store.close()
            raise
        return store

    @property
    def schema_version(self) -> int:
        with self.snapshot() as conn:
            return user_version(conn)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; see the module docstring."""
        with self._begin(write=True) as conn:
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: all reads inside see the same committed state."""
        with self._begin(write=False) as conn:
            yield conn

    @contextmanager
    def _begin(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        conn = self.connection
        with self._lock, self._errors():
            if conn.in_transaction:
                if write and not self._writing:
                    # Upgrading a read snapshot to a writer fails with SQLITE_BUSY_SNAPSHOT whenever another
                    # writer committed meanwhile; start with transaction() instead.
                    raise RuntimeError("cannot write inside a read snapshot")
                yield conn
                return
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
            self._writing = write
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as err:
            # Errors raised by Python itself (a closed connection) carry no SQLite code.
            reason = _ENVIRONMENT.get(getattr(err, "sqlite_errorcode", 0) & 0xFF)
            if reason is None:
                raise
            raise StoreError(f"state store {self.path} {reason} ({err})") from err

    def close(self) -> None:
        """Close the connection; an open transaction is rolled back."""
        self.connection.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _rollback(conn: sqlite3.Connection) -> None:
    # Some errors (SQLITE_FULL, SQLITE_IOERR) have already rolled the transaction back.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    try:
        # check_same_thread=False: asyncio.to_thread may use a different worker thread each call; the
        # Store's lock does the serialising SQLite's check would otherwise demand.
        return sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as err:
        raise StoreError(f"cannot open the state store {path}: {err}") from err
