"""The state store and its repositories on a real SQLite file: transactions, constraints, concurrent readers."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import get_args

import pytest

from isola import paths
from isola.errors import ConflictError, InvalidSpecError, NotFoundError, StoreError
from isola.platform.records import (
    Attachment,
    Host,
    HostState,
    Image,
    ImageKind,
    Instance,
    InstanceState,
    Kind,
    Lease,
    LeaseState,
    Network,
    Tenant,
    Usage,
    Volume,
)
from isola.platform.repos import Repos
from isola.platform.store import Store


@pytest.fixture
def store(isola_home: Path) -> Iterator[Store]:
    with Store.open(paths.store_path()) as store:
        yield store


@pytest.fixture
def db(store: Store) -> Repos:
    return Repos(store)


def host(name: str = "h1") -> Host:
    return Host(name=name, address="10.0.0.1", kinds=("vm", "container"), vcpus=8, memory_mib=16384, disk_gib=100)


def vm(tenant: Tenant, name: str = "web", **kw: object) -> Instance:
    fields: dict[str, object] = {"kind": "vm", "mode": "kernel", "vcpus": 2, "memory_mib": 512} | kw
    return Instance(name=name, tenant_id=tenant.id, **fields)  # type: ignore[arg-type]


def pragma(store: Store, name: str) -> object:
    return store.connection.execute(f"PRAGMA {name}").fetchone()[0]


def test_open_sets_up_connection(tmp_path: Path) -> None:
    with Store.open(tmp_path / "deep" / "er" / "isola.db", busy_timeout=2.5) as store:
        assert pragma(store, "journal_mode") == "wal"
        assert pragma(store, "foreign_keys") == 1
        assert pragma(store, "busy_timeout") == 2500
        assert pragma(store, "synchronous") == 1  # NORMAL


def test_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot create the directory"):
        Store.open(tmp_path / "file" / "isola.db")
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="cannot open the state store"):
        Store.open(tmp_path / "dir.db")


def test_rows_round_trip_with_their_types(db: Repos) -> None:
    h = db.hosts.add(host())
    t = db.tenants.add(Tenant(name="acme", max_vcpus=16))
    i = db.instances.add(vm(t, host_id=h.id, spec={"kernel": "/k", "args": ["a", 1]}))
    assert db.hosts.get(h.id) == h
    assert db.hosts.get_by_name("h1").kinds == ("vm", "container")
    got = db.instances.get_by_name(t.id, "web")
    assert got == i
    assert got.spec == {"kernel": "/k", "args": ["a", 1]}
    assert got.created_at.tzinfo is not None
    assert db.tenants.get_by_name("acme").max_vcpus == 16


def test_list_filters(db: Repos) -> None:
    t = db.tenants.add(Tenant(name="acme"))
    a = db.instances.add(vm(t, "a", state="running"))
    b = db.instances.add(vm(t, "b", state="stopped"))
    c = db.instances.add(Instance(name="c", tenant_id=t.id, kind="container", vcpus=1, memory_mib=64))
    assert db.instances.list(state="running") == [a]
    assert db.instances.list(state=("running", "creating")) == [a, c]
    assert db.instances.list(mode=None) == [c]
    assert db.instances.list(tenant_id=t.id, kind="vm") == [a, b]
    with pytest.raises(TypeError, match="no column 'colour'"):
        db.instances.list(colour="red")


def test_update_returns_new_row_and_bumps_updated_at(db: Repos) -> None:
    t = db.tenants.add(Tenant(name="acme"))
    i = db.instances.add(vm(t))
    new = db.instances.update(i.id, state="running", monitor_pid=4242, monitor_start=99)
    assert (new.state, new.monitor_pid, new.updated_at > i.updated_at) == ("running", 4242, True)
    assert db.instances.get(i.id) == new
    with pytest.raises(TypeError, match="cannot change"):
        db.instances.update(i.id, id="other")


def test_missing_rows_are_not_found(db: Repos) -> None:
    with pytest.raises(NotFoundError, match="instance 'nope' does not exist"):
        db.instances.get("nope")
    with pytest.raises(NotFoundError, match="tenant 'ghost' does not exist"):
        db.tenants.get_by_name("ghost")
    with pytest.raises(NotFoundError):
        db.hosts.update("nope", state="offline")
    with pytest.raises(NotFoundError):
        db.volumes.delete("nope")


def test_duplicates_are_conflicts(db: Repos) -> None:
    acme = db.tenants.add(Tenant(name="acme", token_hash="h1"))
    with pytest.raises(ConflictError, match="tenant 'acme' already exists"):
        db.tenants.add(Tenant(name="acme"))
    with pytest.raises(ConflictError, match="another tenant already has token_hash 'h1'"):
        db.tenants.add(Tenant(name="other", token_hash="h1"))
    other = db.tenants.add(Tenant(name="other"))
    db.instances.add(vm(acme))
    db.instances.add(vm(other))  # names are per tenant
    with pytest.raises(ConflictError, match="instance 'web' already exists"):
        db.instances.add(vm(acme))
    db.networks.add(Network(name="n1", tenant_id=acme.id, cidr="10.1.0.0/24", bridge="isola0"))
    with pytest.raises(ConflictError, match="another network already has bridge 'isola0'"):
        db.networks.add(Network(name="n2", tenant_id=acme.id, cidr="10.2.0.0/24", bridge="isola0"))


def test_bad_values_are_invalid_specs(db: Repos) -> None:
    t = db.tenants.add(Tenant(name="acme"))
    with pytest.raises(InvalidSpecError, match="instance kind 'foo' is not one of emulated, vm, container, metal"):
        db.instances.add(vm(t, kind="foo"))
    with pytest.raises(InvalidSpecError, match="host kinds 'x86' is not one of"):
        db.hosts.add(Host(name="h", address="a", kinds=("vm", "x86"), vcpus=1, memory_mib=1, disk_gib=1))  # type: ignore[arg-type]
    with pytest.raises(InvalidSpecError, match="instance 'web' is invalid: CHECK constraint failed: vcpus > 0"):
        db.instances.add(vm(t, vcpus=0))
    with pytest.raises(InvalidSpecError, match=r"kind = 'vm'\) = \(mode IS NOT NULL"):
        db.instances.add(vm(t, mode=None))
    with pytest.raises(InvalidSpecError, match="instance state 'gone' is not one of"):
        db.instances.update(db.instances.add(vm(t)).id, state="gone")


@pytest.mark.parametrize(
    ("table", "column", "allowed"),
    [
        ("instances", "kind", get_args(Kind)),
        ("instances", "state", get_args(InstanceState)),
        ("leases", "state", get_args(LeaseState)),
        ("images", "kind", get_args(ImageKind)),
        ("hosts", "state", get_args(HostState)),
    ],
)
def test_schema_checks_agree_with_record_types(store: Store, table: str, column: str, allowed: tuple[str, ...]) -> None:
    """The CHECK constraints are the backstop for writers that bypass the repositories."""
    sql = store.connection.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (table,)).fetchone()[0]
    check = f"{column} IN ({', '.join(repr(v) for v in allowed)})"
    assert " ".join(check.split()) in " ".join(sql.split())


def test_foreign_keys_are_enforced(db: Repos) -> None:
    with pytest.raises(NotFoundError, match="tenant 'nobody' does not exist"):
        db.instances.add(Instance(name="x", tenant_id="nobody", kind="container", vcpus=1, memory_mib=1))
    t = db.tenants.add(Tenant(name="acme"))
    with pytest.raises(NotFoundError, match="host 'nowhere' does not exist"):
        db.instances.add(vm(t, host_id="nowhere"))
    i = db.instances.add(vm(t))
    with pytest.raises(ConflictError, match="tenant 'acme' is still used by 1 instances"):
        db.tenants.delete(t.id)
    with pytest.raises(sqlite3.IntegrityError), db.store.transaction() as conn:
        conn.execute("UPDATE instances SET tenant_id = 'nobody'")
    assert db.instances.get(i.id).tenant_id == t.id


def test_deleting_an_instance_drops_ports_and_detaches_volumes(db: Repos) -> None:
    t = db.tenants.add(Tenant(name="acme"))
    i = db.instances.add(vm(t))
    n = db.networks.add(Network(name="n1", tenant_id=t.id, cidr="10.1.0.0/24", bridge="isola0", vni=7))
    db.attachments.add(Attachment(instance_id=i.id, network_id=n.id, mac="02:00:00:00:00:01", ip="10.1.0.2"))
    v = db.volumes.add(Volume(name="data", tenant_id=t.id, size_gib=5, path="/v/data", instance_id=i.id))
    with pytest.raises(ConflictError, match="network 'n1' is still used by 1 network attachments"):
        db.networks.delete(n.id)
    db.instances.delete(i.id)
    assert db.attachments.list() == []
    assert db.volumes.get(v.id).instance_id is None
    db.networks.delete(n.id)


def test_one_live_lease_per_host(db: Repos) -> None:
    h = db.hosts.add(host("metal-1"))
    a = db.tenants.add(Tenant(name="a"))
    b = db.tenants.add(Tenant(name="b"))
    first = db.leases.add(Lease(host_id=h.id, tenant_id=a.id))
    with pytest.raises(ConflictError, match="host 'metal-1' already has an active or cleaning lease"):
        db.leases.add(Lease(host_id=h.id, tenant_id=b.id))
    now = datetime.now(UTC)
    db.leases.update(first.id, state="cleaning", released_at=now)
    assert db.leases.live_for_host(h.id) == db.leases.get(first.id)
    with pytest.raises(ConflictError):
        db.leases.add(Lease(host_id=h.id, tenant_id=b.id))
    db.leases.update(first.id, state="released")
    assert db.leases.live_for_host(h.id) is None
    second = db.leases.add(Lease(host_id=h.id, tenant_id=b.id, ends_at=now + timedelta(days=1)))
    assert db.leases.live_for_host(h.id) == second
    with pytest.raises(InvalidSpecError, match="ends_at > starts_at"):
        db.leases.update(second.id, ends_at=second.starts_at - timedelta(seconds=1))


def test_usage_sums_what_a_tenant_holds(db: Repos) -> None:
    h = db.hosts.add(host())
    t = db.tenants.add(Tenant(name="acme"))
    other = db.tenants.add(Tenant(name="other"))
    assert db.tenants.usage(t.id) == Usage(0, 0, 0, 0, 0, 0, 0)
    db.instances.add(vm(t, "a", vcpus=2, memory_mib=512, disk_gib=10))
    db.instances.add(vm(t, "b", vcpus=1, memory_mib=256, disk_gib=0, state="deleting"))
    db.instances.add(vm(other, "c", vcpus=8, memory_mib=8192))
    db.volumes.add(Volume(name="v", tenant_id=t.id, size_gib=20, path="/v"))
    db.networks.add(Network(name="n", tenant_id=t.id, cidr="10.0.0.0/24", bridge="isola0"))
    db.leases.add(Lease(host_id=h.id, tenant_id=t.id))
    assert db.tenants.usage(t.id) == Usage(2, 3, 768, 10, 20, 1, 1)
    with pytest.raises(NotFoundError):
        db.tenants.usage("nobody")


def test_images(db: Repos) -> None:
    img = db.images.add(Image(digest="sha256:" + "a" * 64, ref="debian:trixie", kind="oci", size_bytes=123))
    assert db.images.get_by_digest(img.digest) == img
    with pytest.raises(ConflictError, match="another image already has digest 'sha256:a"):
        db.images.add(Image(digest=img.digest, ref="other", kind="oci", size_bytes=1))
    t = db.tenants.add(Tenant(name="acme"))
    db.instances.add(Instance(name="c", tenant_id=t.id, kind="container", vcpus=1, memory_mib=1, image_id=img.id))
    with pytest.raises(ConflictError, match="image 'debian:trixie' is still used by 1 instances"):
        db.images.delete(img.id)


def test_failed_multi_step_change_leaves_nothing(db: Repos) -> None:
    db.tenants.add(Tenant(name="taken"))
    with pytest.raises(ConflictError), db.store.transaction():
        t = db.tenants.add(Tenant(name="acme"))
        db.instances.add(vm(t))
        db.tenants.add(Tenant(name="taken"))
    assert [t.name for t in db.tenants.list()] == ["taken"]
    assert db.instances.list() == []


def test_any_exception_rolls_back(db: Repos) -> None:
    with pytest.raises(KeyboardInterrupt), db.store.transaction():
        db.tenants.add(Tenant(name="acme"))
        raise KeyboardInterrupt
    assert db.tenants.list() == []
    assert not db.store.connection.in_transaction


def test_snapshot_cannot_turn_into_a_writer(db: Repos) -> None:
    with pytest.raises(RuntimeError, match="read snapshot"), db.store.snapshot():
        db.tenants.add(Tenant(name="acme"))
    assert db.tenants.list() == []


def test_reader_sees_only_committed_state(db: Repos, isola_home: Path) -> None:
    with Store.open(paths.store_path()) as other_store:
        other = Repos(other_store)
        with other_store.snapshot():
            assert other.tenants.list() == []  # the snapshot starts here
            with db.store.transaction():
                db.tenants.add(Tenant(name="acme"))
                assert other.tenants.list() == []  # not committed yet
            assert other.tenants.list() == []  # committed, but after the snapshot began
        assert [t.name for t in other.tenants.list()] == ["acme"]


def test_second_writer_waits_then_gives_a_store_error(db: Repos, isola_home: Path) -> None:
    with Store.open(paths.store_path(), busy_timeout=0.05) as other_store, db.store.transaction():
        db.tenants.add(Tenant(name="acme"))
        with pytest.raises(StoreError, match="is busy"):
            Repos(other_store).tenants.add(Tenant(name="other"))
        assert not other_store.connection.in_transaction


def test_threads_share_one_store(db: Repos) -> None:
    """The daemon's pattern: transactions from asyncio.to_thread workers run one at a time."""

    def add_next() -> None:
        with db.store.transaction():
            n = len(db.tenants.list())
            time.sleep(0.001)  # invite another thread in
            db.tenants.add(Tenant(name=f"t{n}"))

    async def main() -> None:
        await asyncio.gather(*(asyncio.to_thread(add_next) for _ in range(20)))

    asyncio.run(main())
    assert sorted(t.name for t in db.tenants.list()) == sorted(f"t{n}" for n in range(20))
