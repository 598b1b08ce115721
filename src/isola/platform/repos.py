"""Typed access to the store's tables: `Repos(store).instances.add(Instance(...))`.

Every method runs in `store.transaction()` (writes) or `store.snapshot()` (reads), which join a transaction
already open on the store, so a multi-table change is written as

    with store.transaction():
        repos.instances.add(...)
        repos.attachments.add(...)

and commits or rolls back as a whole. Each method issues at most one write, so a failing one leaves the
enclosing transaction as it was before the call.

SQLite's constraint failures become isola errors naming the thing: UNIQUE → ConflictError, a missing
referenced row → NotFoundError, a row still referenced on delete → ConflictError, CHECK / NOT NULL / type →
InvalidSpecError. Enumerated fields are checked against the records' `Literal` types first, for a message
that lists the allowed values.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import sqlite3
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from isola.errors import ConflictError, InvalidSpecError, IsolaError, NotFoundError
from isola.platform.records import (
    Attachment,
    Host,
    Image,
    Instance,
    Lease,
    Network,
    Record,
    Tenant,
    Usage,
    Volume,
    utcnow,
)
from isola.platform.store import Store

R = TypeVar("R", bound=Record)


class Repo(Generic[R]):
    table: str
    noun: str
    record: type[R]

    def __init__(self, store: Store) -> None:
        self.store = store
        self._columns = tuple(f.name for f in dataclasses.fields(self.record))
        self._decoders = _decoders(self.record)
        self._enums = _enums(self.record)

    def add(self, record: R) -> R:
        row = self._encode(record)
        sql = f"INSERT INTO {self.table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})"
        with self.store.transaction() as conn:
            self._execute(conn, sql, tuple(row.values()), record)
        return record

    def get(self, id: str) -> R:
        return self._one(f"'{id}'", id=id)

    def list(self, **where: object) -> builtins.list[R]:
        """Rows matching every `column=value`; None matches NULL, a tuple/list/set matches any item."""
        clauses: builtins.list[str] = []
        params: builtins.list[object] = []
        for column, value in where.items():
            self._check_column(column)
            if value is None:
                clauses.append(f"{column} IS NULL")
            elif isinstance(value, tuple | builtins.list | set | frozenset):
                clauses.append(f"{column} IN ({', '.join('?' * len(value))})")
                params.extend(_encode(item) for item in value)
            else:
                clauses.append(f"{column} = ?")
                params.append(_encode(value))
        sql = f"SELECT {', '.join(self._columns)} FROM {self.table}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        with self.store.snapshot() as conn:
            rows = conn.execute(sql + " ORDER BY created_at, id", params).fetchall()
        return [self._decode(row) for row in rows]

    def update(self, id: str, /, **changes: Any) -> R:
        """Set the given fields (and `updated_at`, where the table has it); return the new row."""
        for column in changes:
            self._check_column(column)
            if column in ("id", "created_at"):
                raise TypeError(f"{self.table}.{column} cannot change")
        if "updated_at" in self._columns:
            changes.setdefault("updated_at", utcnow())
        with self.store.transaction() as conn:
            new = dataclasses.replace(self.get(id), **changes)
            row = {c: v for c, v in self._encode(new).items() if c in changes}
            sql = f"UPDATE {self.table} SET {', '.join(f'{c} = ?' for c in row)} WHERE id = ?"
            self._execute(conn, sql, (*row.values(), id), new)
        return new

    def delete(self, id: str) -> None:
        with self.store.transaction() as conn:
            record = self.get(id)
            try:
                conn.execute(f"DELETE FROM {self.table} WHERE id = ?", (id,))
            except sqlite3.IntegrityError as err:
                raise ConflictError(
                    f"{self.noun} '{self.label(record)}' is still used by {self._users(conn, id)}"
                ) from err

    def label(self, record: R) -> str:
        """How messages name a row."""
        name = getattr(record, "name", None)
        return name if isinstance(name, str) else record.id

    def _one(self, what: str, **where: object) -> R:
        rows = self.list(**where)
        if not rows:
            raise NotFoundError(f"{self.noun} {what} does not exist")
        return rows[0]

    def _check_column(self, column: str) -> None:
        if column not in self._columns:
            raise TypeError(f"{self.table} has no column {column!r}")

    def _decode(self, row: tuple[object, ...]) -> R:
        fields: dict[str, Any] = {}
        for column, value in zip(self._columns, row, strict=True):
            decoder = self._decoders.get(column)
            fields[column] = value if decoder is None or value is None else decoder(value)
        return self.record(**fields)

    def _encode(self, record: R) -> dict[str, object]:
        for column, allowed in self._enums.items():
            value = getattr(record, column)
            for item in value if isinstance(value, tuple) else (value,):
                if item is not None and item not in allowed:
                    raise InvalidSpecError(f"{self.noun} {column} '{item}' is not one of {', '.join(allowed)}")
        return {column: _encode(getattr(record, column)) for column in self._columns}

    def _execute(self, conn: sqlite3.Connection, sql: str, params: tuple[object, ...], record: R) -> None:
        try:
            conn.execute(sql, params)
        except sqlite3.IntegrityError as err:
            raise self._integrity(conn, err, record) from err

    def _integrity(self, conn: sqlite3.Connection, err: sqlite3.IntegrityError, record: R) -> IsolaError:
        if err.sqlite_errorname in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
            # "UNIQUE constraint failed: instances.tenant_id, instances.name"
            columns = [c.split(".")[-1] for c in str(err).split(": ", 1)[-1].split(", ")]
            return ConflictError(self._taken(conn, record, columns))
        if err.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
            for column, parent in conn.execute(
                f'SELECT "from", "table" FROM pragma_foreign_key_list(\'{self.table}\')'
            ):
                value = getattr(record, column)
                if value is not None and not conn.execute(f"SELECT 1 FROM {parent} WHERE id = ?", (value,)).fetchone():
                    return NotFoundError(f"{parent.removesuffix('s')} '{value}' does not exist")
        return InvalidSpecError(f"{self.noun} '{self.label(record)}' is invalid: {err}")

    def _taken(self, conn: sqlite3.Connection, record: R, columns: builtins.list[str]) -> str:
        if columns[-1] == "name":
            return f"{self.noun} '{self.label(record)}' already exists"
        return f"another {self.noun} already has {columns[-1]} '{getattr(record, columns[-1])}'"

    def _users(self, conn: sqlite3.Connection, id: str) -> str:
        """Which tables still point at row `id`, from the schema itself, so the message stays true."""
        users = []
        for child, column in conn.execute(
            """SELECT m.name, f."from" FROM sqlite_schema AS m JOIN pragma_foreign_key_list(m.name) AS f
               WHERE m.type = 'table' AND f."table" = ? AND f.on_delete IN ('NO ACTION', 'RESTRICT')""",
            (self.table,),
        ):
            count = conn.execute(f"SELECT count(*) FROM {child} WHERE {column} = ?", (id,)).fetchone()[0]
            if count:
                users.append(f"{count} {child.replace('_', ' ')}")
        return ", ".join(users)


class _Named(Repo[R]):
    def get_by_name(self, name: str) -> R:
        return self._one(f"'{name}'", name=name)


class _Owned(Repo[R]):
    """Names are unique per tenant."""

    def get_by_name(self, tenant_id: str, name: str) -> R:
        return self._one(f"'{name}'", tenant_id=tenant_id, name=name)


class Hosts(_Named[Host]):
    table, noun, record = "hosts", "host", Host


class Tenants(_Named[Tenant]):
    table, noun, record = "tenants", "tenant", Tenant

    def usage(self, tenant_id: str) -> Usage:
        """What the tenant holds now, for quota checks; run it in the transaction that adds the new thing."""
        with self.store.snapshot() as conn:
            self.get(tenant_id)
            row = conn.execute(
                """SELECT count(*), coalesce(sum(vcpus), 0), coalesce(sum(memory_mib), 0),
                          coalesce(sum(disk_gib), 0),
                          (SELECT coalesce(sum(size_gib), 0) FROM volumes WHERE tenant_id = :t),
                          (SELECT count(*) FROM networks WHERE tenant_id = :t),
                          (SELECT count(*) FROM leases WHERE tenant_id = :t AND state = 'active')
                   FROM instances WHERE tenant_id = :t""",
                {"t": tenant_id},
            ).fetchone()
        return Usage(*row)


class Instances(_Owned[Instance]):
    table, noun, record = "instances", "instance", Instance


class Networks(_Owned[Network]):
    table, noun, record = "networks", "network", Network


class Volumes(_Owned[Volume]):
    table, noun, record = "volumes", "volume", Volume


class Images(Repo[Image]):
    table, noun, record = "images", "image", Image

    def get_by_digest(self, digest: str) -> Image:
        return self._one(f"'{digest}'", digest=digest)

    def label(self, record: Image) -> str:
        return record.ref


class Leases(Repo[Lease]):
    table, noun, record = "leases", "lease", Lease

    def live_for_host(self, host_id: str) -> Lease | None:
        """The lease that keeps `host_id` from everyone else (active or cleaning), if any."""
        rows = self.list(host_id=host_id, state=("active", "cleaning"))
        return rows[0] if rows else None

    def _taken(self, conn: sqlite3.Connection, record: Lease, columns: builtins.list[str]) -> str:
        if columns == ["host_id"]:
            host = conn.execute("SELECT name FROM hosts WHERE id = ?", (record.host_id,)).fetchone()
            return f"host '{host[0]}' already has an active or cleaning lease"
        return super()._taken(conn, record, columns)


class Attachments(Repo[Attachment]):
    table, noun, record = "network_attachments", "network attachment", Attachment


class Repos:
    """All repositories of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.hosts = Hosts(store)
        self.tenants = Tenants(store)
        self.instances = Instances(store)
        self.networks = Networks(store)
        self.volumes = Volumes(store)
        self.images = Images(store)
        self.leases = Leases(store)
        self.attachments = Attachments(store)


def _encode(value: object) -> object:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value} has no time zone")
        # Fixed width, so text order is time order (the leases' CHECK (ends_at > starts_at) relies on it).
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True)
    if isinstance(value, tuple):
        return json.dumps(value)
    return value


def _tuple_from_json(text: str) -> tuple[object, ...]:
    return tuple(json.loads(text))


def _without_none(hint: object) -> object:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not types.NoneType]
        return args[0] if len(args) == 1 else hint
    return hint


def _decoders(cls: type[Record]) -> dict[str, Callable[[Any], object]]:
    """Column text → field value, chosen by each field's type: datetimes, JSON objects, JSON arrays."""
    decoders: dict[str, Callable[[Any], object]] = {}
    for name, hint in typing.get_type_hints(cls).items():
        base = _without_none(hint)
        if base is datetime:
            decoders[name] = datetime.fromisoformat
        elif typing.get_origin(base) is Mapping:
            decoders[name] = json.loads
        elif typing.get_origin(base) is tuple:
            decoders[name] = _tuple_from_json
    return decoders


def _enums(cls: type[Record]) -> dict[str, tuple[str, ...]]:
    """The allowed values of each `Literal` field (or tuple of `Literal`s)."""
    enums: dict[str, tuple[str, ...]] = {}
    for name, hint in typing.get_type_hints(cls).items():
        base = _without_none(hint)
        if typing.get_origin(base) is tuple:
            base = typing.get_args(base)[0]
        if typing.get_origin(base) is Literal:
            enums[name] = typing.get_args(base)
    return enums
