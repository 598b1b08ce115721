"""Migration mechanics on real SQLite files, with test-only schemas so the rules are tested apart from isola's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from isola.errors import StoreError
from isola.platform.migrations import APPLICATION_ID, MIGRATIONS, migrate
from isola.platform.store import Store

V1 = """
CREATE TABLE owners (id TEXT PRIMARY KEY, name TEXT NOT NULL) STRICT;
CREATE TABLE pets (id TEXT PRIMARY KEY, owner_id TEXT NOT NULL REFERENCES owners(id)) STRICT;
"""
# Rebuilds a table other rows point at, SQLite's way (create, copy, drop, rename): only possible with foreign
# keys off during the step, which is what the runner promises.
V2 = """
CREATE TABLE owners_new (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT) STRICT;
INSERT INTO owners_new (id, name) SELECT id, name FROM owners;
DROP TABLE owners;
ALTER TABLE owners_new RENAME TO owners;
CREATE TABLE audit (what TEXT NOT NULL) STRICT;
CREATE TRIGGER owners_audit AFTER INSERT ON owners BEGIN
    INSERT INTO audit VALUES ('owner;' || new.name);
    INSERT INTO audit VALUES ('again');
END;
"""


def tables(store: Store) -> set[str]:
    return {r[0] for r in store.connection.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}


def test_empty_file_gets_every_step(tmp_path: Path) -> None:
    with Store.open(tmp_path / "a" / "b" / "s.db", migrations=(V1, V2)) as store:
        assert store.schema_version == 2
        assert tables(store) == {"owners", "pets", "audit"}
        assert store.connection.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_reopen_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store.open(path, migrations=(V1,)).close()
    # V1 has no IF NOT EXISTS: running it again would fail.
    with Store.open(path, migrations=(V1,)) as store:
        assert migrate(store, (V1,)) == []
        assert store.schema_version == 1


def test_v1_upgrades_to_v2_and_data_survives(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store.open(path, migrations=(V1,)) as store, store.transaction() as conn:
        conn.execute("INSERT INTO owners VALUES ('o1', 'ada')")
        conn.execute("INSERT INTO pets VALUES ('p1', 'o1')")
    with Store.open(path, migrations=(V1, V2)) as store:
        assert store.schema_version == 2
        conn = store.connection
        assert conn.execute("SELECT id, name, email FROM owners").fetchall() == [("o1", "ada", None)]
        assert conn.execute("SELECT owner_id FROM pets").fetchall() == [("o1",)]
        # The pets → owners key follows the rebuilt table, and is enforced again after migrating.
        with pytest.raises(sqlite3.IntegrityError), store.transaction():
            conn.execute("INSERT INTO pets VALUES ('p2', 'nobody')")
        # The trigger was applied whole, ';' inside its body and string included.
        with store.transaction():
            conn.execute("INSERT INTO owners (id, name) VALUES ('o2', 'bob')")
        assert conn.execute("SELECT what FROM audit").fetchall() == [("owner;bob",), ("again",)]


@pytest.mark.parametrize(
    ("bad_step", "why"),
    [
        ("CREATE TABLE half (x INTEGER) STRICT; INSERT INTO no_such_table VALUES (1);", "no such table"),
        ("CREATE TABLE half (x INTEGER) STRICT; DELETE FROM owners;", "would break foreign keys"),
    ],
)
def test_failing_step_leaves_version_and_schema_unchanged(tmp_path: Path, bad_step: str, why: str) -> None:
    path = tmp_path / "s.db"
    with Store.open(path, migrations=(V1,)) as store, store.transaction() as conn:
        conn.execute("INSERT INTO owners VALUES ('o1', 'ada')")
        conn.execute("INSERT INTO pets VALUES ('p1', 'o1')")
    with pytest.raises(StoreError, match=f"version 2 .*{why}.*unchanged at version 1"):
        Store.open(path, migrations=(V1, bad_step))
    with Store.open(path, migrations=(V1,)) as store:
        assert store.schema_version == 1
        assert "half" not in tables(store)
        assert store.connection.execute("SELECT count(*) FROM owners").fetchone()[0] == 1


def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store.open(path, migrations=(V1, V2)).close()
    with pytest.raises(StoreError, match=r"version 2: it was created by a newer isola .*up to 1"):
        Store.open(path, migrations=(V1,))


def test_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"definitely not a database\n" * 100)
    with pytest.raises(StoreError, match="is not a SQLite database"):
        Store.open(path)
    assert path.read_bytes() == b"definitely not a database\n" * 100


def test_someone_elses_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE hosts (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="is a SQLite database but not an isola state store"):
        Store.open(path)


def test_real_schema_migrates_from_empty(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        assert store.schema_version == len(MIGRATIONS)
        strict = dict(store.connection.execute("SELECT name, strict FROM pragma_table_list WHERE schema = 'main'"))
        ours = {name: flag for name, flag in strict.items() if not name.startswith("sqlite_")}
        assert set(ours) == {
            "hosts",
            "tenants",
            "images",
            "instances",
            "networks",
            "network_attachments",
            "volumes",
            "leases",
            "events",
        }
        assert all(ours.values()), ours
