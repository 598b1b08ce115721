"""The schema of the state store, as an ordered list of steps tracked by `PRAGMA user_version`.

Step N (1-based) brings a database from version N-1 to N. Each step runs in its own write transaction together
with the version bump, so a crash or a failing statement leaves the database at N-1, never in between. Steps
are append-only history: never edit a released one, add the next. Steps run with foreign keys off (SQLite
ignores that pragma inside a transaction, and a table rebuild needs it off), so every step ends with
`PRAGMA foreign_key_check` instead.

`PRAGMA application_id` marks the file as isola's, so a stray SQLite database at the store's path is refused
rather than migrated.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from isola.errors import StoreError

if TYPE_CHECKING:
    from isola.platform.store import Store

APPLICATION_ID = 0x69736F6C  # "isol"

V1 = """
CREATE TABLE hosts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 63),
    address     TEXT NOT NULL,
    kinds       TEXT NOT NULL CHECK (json_valid(kinds) AND json_type(kinds) = 'array'),
    vcpus       INTEGER NOT NULL CHECK (vcpus >= 0),
    memory_mib  INTEGER NOT NULL CHECK (memory_mib >= 0),
    disk_gib    INTEGER NOT NULL CHECK (disk_gib >= 0),
    state       TEXT NOT NULL CHECK (state IN ('ready', 'draining', 'maintenance', 'offline')),
    facts       TEXT NOT NULL CHECK (json_valid(facts) AND json_type(facts) = 'object'),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;

CREATE TABLE tenants (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 63),
    token_hash      TEXT UNIQUE,
    max_instances   INTEGER CHECK (max_instances >= 0),
    max_vcpus       INTEGER CHECK (max_vcpus >= 0),
    max_memory_mib  INTEGER CHECK (max_memory_mib >= 0),
    max_disk_gib    INTEGER CHECK (max_disk_gib >= 0),
    max_networks    INTEGER CHECK (max_networks >= 0),
    max_leases      INTEGER CHECK (max_leases >= 0),
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
) STRICT;

CREATE TABLE images (
    id          TEXT PRIMARY KEY,
    digest      TEXT NOT NULL UNIQUE CHECK (digest GLOB 'sha256:*'),
    ref         TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('oci', 'kernel', 'initramfs', 'disk', 'elf')),
    size_bytes  INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE instances (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 63),
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    kind           TEXT NOT NULL CHECK (kind IN ('emulated', 'vm', 'container', 'metal')),
    mode           TEXT CHECK (mode IN ('kernel', 'process')),
    state          TEXT NOT NULL CHECK (state IN ('creating', 'created', 'running', 'paused', 'stopped',
                                                  'failed', 'deleting')),
    vcpus          INTEGER NOT NULL CHECK (vcpus > 0),
    memory_mib     INTEGER NOT NULL CHECK (memory_mib > 0),
    disk_gib       INTEGER NOT NULL CHECK (disk_gib >= 0),
    host_id        TEXT REFERENCES hosts(id),
    image_id       TEXT REFERENCES images(id),
    spec           TEXT NOT NULL CHECK (json_valid(spec) AND json_type(spec) = 'object'),
    monitor_pid    INTEGER CHECK (monitor_pid > 0),
    monitor_start  INTEGER CHECK (monitor_start >= 0),
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (tenant_id, name),
    CHECK ((kind = 'vm') = (mode IS NOT NULL)),
    CHECK ((monitor_pid IS NULL) = (monitor_start IS NULL))
) STRICT;
CREATE INDEX instances_host ON instances(host_id);
CREATE INDEX instances_image ON instances(image_id);

CREATE TABLE networks (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 63),
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    cidr        TEXT NOT NULL,
    bridge      TEXT NOT NULL UNIQUE CHECK (length(bridge) BETWEEN 1 AND 15),
    vni         INTEGER UNIQUE CHECK (vni BETWEEN 1 AND 16777215),
    created_at  TEXT NOT NULL,
    UNIQUE (tenant_id, name)
) STRICT;

CREATE TABLE network_attachments (
    id           TEXT PRIMARY KEY,
    instance_id  TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    network_id   TEXT NOT NULL REFERENCES networks(id),
    mac          TEXT NOT NULL,
    ip           TEXT,
    created_at   TEXT NOT NULL,
    UNIQUE (instance_id, network_id),
    UNIQUE (network_id, mac),
    UNIQUE (network_id, ip)
) STRICT;

CREATE TABLE volumes (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 63),
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    size_gib     INTEGER NOT NULL CHECK (size_gib > 0),
    path         TEXT NOT NULL UNIQUE,
    instance_id  TEXT REFERENCES instances(id) ON DELETE SET NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (tenant_id, name)
) STRICT;
CREATE INDEX volumes_instance ON volumes(instance_id);

CREATE TABLE leases (
    id           TEXT PRIMARY KEY,
    host_id      TEXT NOT NULL REFERENCES hosts(id),
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    state        TEXT NOT NULL CHECK (state IN ('active', 'cleaning', 'clean-failed', 'released')),
    starts_at    TEXT NOT NULL,
    ends_at      TEXT CHECK (ends_at > starts_at),
    released_at  TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    CHECK ((state = 'active') = (released_at IS NULL))
) STRICT;
-- A host belongs to at most one tenant until it has been cleaned.
CREATE UNIQUE INDEX leases_one_live_per_host ON leases(host_id) WHERE state IN ('active', 'cleaning');
CREATE INDEX leases_tenant ON leases(tenant_id);
"""

# The platform's own bookkeeping of an instance: the id its engine knows it by (set once the engine has
# created it, so reconcile can tell a create that never reached the engine from one that did), and the
# labels the scheduler's affinity rules match.
V2 = """
ALTER TABLE instances ADD COLUMN engine_id TEXT;
ALTER TABLE instances ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'
    CHECK (json_valid(labels) AND json_type(labels) = 'object');
CREATE INDEX instances_tenant ON instances(tenant_id);
"""

# Events: every instance and lease state change, written by triggers in the statement that makes the change (so
# no code path can change a state without its event, and a rolled-back change leaves none). `id` orders them for
# `GET /v1/events?since=ID`; a tenant's events go with the tenant. Times have the store's fixed-width format.
V3 = """
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    object_id   TEXT NOT NULL
) STRICT;
CREATE INDEX events_tenant ON events(tenant_id, id);
CREATE TRIGGER instances_insert_event AFTER INSERT ON instances BEGIN
    INSERT INTO events (at, tenant_id, kind, object_id)
    VALUES (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000+00:00', new.tenant_id, 'instance.' || new.state, new.id);
END;
CREATE TRIGGER instances_state_event AFTER UPDATE OF state ON instances WHEN new.state IS NOT old.state BEGIN
    INSERT INTO events (at, tenant_id, kind, object_id)
    VALUES (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000+00:00', new.tenant_id, 'instance.' || new.state, new.id);
END;
CREATE TRIGGER instances_delete_event AFTER DELETE ON instances BEGIN
    INSERT INTO events (at, tenant_id, kind, object_id)
    VALUES (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000+00:00', old.tenant_id, 'instance.deleted', old.id);
END;
CREATE TRIGGER leases_insert_event AFTER INSERT ON leases BEGIN
    INSERT INTO events (at, tenant_id, kind, object_id)
    VALUES (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000+00:00', new.tenant_id, 'lease.' || new.state, new.id);
END;
CREATE TRIGGER leases_state_event AFTER UPDATE OF state ON leases WHEN new.state IS NOT old.state BEGIN
    INSERT INTO events (at, tenant_id, kind, object_id)
    VALUES (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000+00:00', new.tenant_id, 'lease.' || new.state, new.id);
END;
"""

MIGRATIONS: tuple[str, ...] = (V1, V2, V3)


def user_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def migrate(store: Store, steps: Sequence[str]) -> list[int]:
    """Bring the store up to `len(steps)`; return the versions applied (empty when it was current)."""
    conn = store.connection
    current = user_version(conn)
    _check_ours(store, current)
    if current > len(steps):
        raise StoreError(
            f"state store {store.path} has schema version {current}: it was created by a newer isola "
            f"(this one knows versions up to {len(steps)})",
            hint="upgrade isola, or point ISOLA_HOME at another directory",
        )
    applied: list[int] = []
    if current == len(steps):
        return applied
    for version, step in enumerate(steps, start=1):
        # Re-read under the write lock: another process may have migrated since we looked.
        with store.transaction():
            if user_version(conn) >= version:
                continue
            try:
                for statement in _statements(step):
                    conn.execute(statement)
            except sqlite3.DatabaseError as err:
                raise StoreError(
                    f"migrating state store {store.path} to schema version {version} failed: {err}; "
                    f"it is unchanged at version {version - 1}"
                ) from err
            if conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
                raise StoreError(
                    f"migrating state store {store.path} to schema version {version} would break foreign "
                    f"keys; it is unchanged at version {version - 1}"
                )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {version}")
        applied.append(version)
    return applied


def _check_ours(store: Store, version: int) -> None:
    conn = store.connection
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    empty = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0] == 0
    if app_id != APPLICATION_ID and not (app_id == 0 and version == 0 and empty):
        raise StoreError(
            f"{store.path} is a SQLite database but not an isola state store",
            hint="move it away, or point ISOLA_HOME at another directory",
        )


def _statements(script: str) -> Iterator[str]:
    """Split a script into single statements, since `executescript` would commit our open transaction.
    `complete_statement` keeps a trigger body or a quoted ';' in one piece."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
    if pending.strip(" \n;"):
        yield pending
