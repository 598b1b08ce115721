"""Bare-metal leases through isolad: a leased host takes only its lessee's instances, release cleans the
lessee's guests away for real, a failed clean keeps the host out of the pool, and leases stay private."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from isola.errors import ConflictError, InvalidSpecError, NotFoundError, PermissionDeniedError, QuotaExceededError
from tests.platform.conftest import Daemon, vm_spec, wait_for


def _host(daemon: Daemon) -> str:
    name: str = daemon.client().system()["host"]
    return name


def test_a_leased_host_takes_only_its_lessees_instances_and_release_cleans_them(daemon: Daemon, busybox: Path) -> None:
    admin = daemon.client()
    a = daemon.client(admin.create_tenant("a", {"leases": 1})["token"])
    b = daemon.client(admin.create_tenant("b")["token"])
    host = _host(daemon)
    with pytest.raises(PermissionDeniedError, match="only an admin"):
        a.lease(host, "a")
    lease = admin.lease(host, "a")
    assert lease["state"] == "active"
    with pytest.raises(ConflictError, match="leased to another tenant"):
        b.create_instance(vm_spec("intruder", busybox, "true"))
    assert b.schedule(vm_spec("intruder", busybox, "true"))["rejected"] == {host: "leased to another tenant"}
    guest = a.create_instance(vm_spec("mine", busybox, "sleep", "60", start=True))
    assert [x["id"] for x in a.leases()] == [lease["id"]]
    assert b.leases() == []
    with pytest.raises(NotFoundError):
        b.get_lease(lease["id"])
    with pytest.raises(NotFoundError):
        b.release(lease["id"])
    with pytest.raises(ConflictError, match=r"not free: lease .* is active"):
        admin.lease(host, "b")
    released = a.release(host)
    assert released["lease"]["state"] == "released" and released["lease"]["released_at"]
    assert released["deleted"] == [guest["id"]] and released["failures"] == {}
    assert a.instances() == [] and not (daemon.vm_state / guest["engine_id"]).exists()
    with pytest.raises(ConflictError, match="released already"):
        admin.release(lease["id"])
    assert admin.get_lease(lease["id"])["state"] == "released"  # history is kept
    b.create_instance(vm_spec("welcome", busybox, "true"))  # shared again


def test_a_lease_needs_an_empty_host_quota_and_a_future_end(daemon: Daemon, busybox: Path) -> None:
    admin = daemon.client()
    a = daemon.client(admin.create_tenant("a", {"leases": 0})["token"])
    b = daemon.client(admin.create_tenant("b")["token"])
    host = _host(daemon)
    with pytest.raises(QuotaExceededError, match="quota leases"):
        admin.lease(host, "a")
    with pytest.raises(InvalidSpecError, match="until: must be in the future"):
        admin.lease(host, "b", "2001-01-01T00:00:00+00:00")
    with pytest.raises(InvalidSpecError, match="until: must be in the future"):
        admin.lease(host, "b", "2001-01-01T00:00:00")  # no offset: UTC
    with pytest.raises(InvalidSpecError, match="until"):
        admin.lease(host, "b", "next tuesday")
    b.create_instance(vm_spec("neighbour", busybox, "true"))
    admin.set_quotas("a", {"leases": None})
    with pytest.raises(ConflictError, match="runs 1 instances of other tenants: b/neighbour") as refused:
        admin.lease(host, "a")
    assert refused.value.hint is not None and "--drain" in refused.value.hint
    assert a.leases() == []


def test_a_failed_clean_keeps_the_host_out_of_the_pool(daemon: Daemon, busybox: Path) -> None:
    admin = daemon.client()
    a = daemon.client(admin.create_tenant("a")["token"])
    b = daemon.client(admin.create_tenant("b")["token"])
    host = _host(daemon)
    lease = admin.lease(host, "a")
    # An instance whose engine this isola does not have cannot be deleted by cleaning.
    with sqlite3.connect(daemon.store) as db:
        db.execute(
            """INSERT INTO instances (id, name, tenant_id, kind, state, vcpus, memory_mib, disk_gib, host_id, spec,
               engine_id, created_at, updated_at) VALUES ('stuck', 'stuck', ?, 'emulated', 'running', 1, 64, 0, ?,
               '{}', 'stuck', '2026-01-01T00:00:00.000000+00:00', '2026-01-01T00:00:00.000000+00:00')""",
            (lease["tenant_id"], lease["host_id"]),
        )
    released = a.release(lease["id"])
    assert released["lease"]["state"] == "clean-failed"
    assert "no emulated engine" in released["failures"]["stuck"]
    with pytest.raises(ConflictError, match="host is clean-failed"):
        b.create_instance(vm_spec("x", busybox, "true"))
    with pytest.raises(PermissionDeniedError, match="retry cleaning"):
        a.release(lease["id"])
    with pytest.raises(ConflictError, match=r"not free: lease .* is clean-failed"):
        admin.lease(host, "b")
    with sqlite3.connect(daemon.store) as db:  # the admin fixes what blocked cleaning, then retries
        db.execute("DELETE FROM instances WHERE id = 'stuck'")
    assert admin.release(lease["id"])["lease"]["state"] == "released"
    b.create_instance(vm_spec("x", busybox, "true"))


def _soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def test_a_lease_ends_at_its_time_with_cleaning_at_start_and_while_running(daemon: Daemon, busybox: Path) -> None:
    admin = daemon.client()
    a = daemon.client(admin.create_tenant("a")["token"])
    host = _host(daemon)
    # Due while the daemon is down: released (and cleaned) at start, before it answers anyone.
    first = admin.lease(host, "a", _soon(2))
    guest = a.create_instance(vm_spec("mine", busybox, "sleep", "60", start=True))
    daemon.stop()
    time.sleep(max(0.0, (datetime.fromisoformat(first["ends_at"]) - datetime.now(UTC)).total_seconds()) + 0.2)
    daemon.start()
    assert daemon.client().get_lease(first["id"])["state"] == "released"
    assert a.instances() == [] and not (daemon.vm_state / guest["engine_id"]).exists()
    # Due while it runs: the reaper releases it within seconds, nobody calling release.
    second = admin.lease(host, "a", _soon(3))
    guest = a.create_instance(vm_spec("mine", busybox, "sleep", "60", start=True))
    assert admin.get_lease(second["id"])["state"] == "active"
    wait_for(lambda: admin.get_lease(second["id"])["state"] == "released", timeout=15)
    assert a.instances() == [] and not (daemon.vm_state / guest["engine_id"]).exists()
    kinds = [e["kind"] for e in a.events() if e["object_id"] == second["id"]]
    assert kinds == ["lease.active", "lease.cleaning", "lease.released"]


def test_drain_refuses_the_whole_lease_when_nothing_can_take_the_others(daemon: Daemon, busybox: Path) -> None:
    admin = daemon.client()
    daemon.client(admin.create_tenant("a")["token"])
    b = daemon.client(admin.create_tenant("b")["token"])
    host = _host(daemon)
    first = b.create_instance(vm_spec("one", busybox, "sleep", "60", start=True))
    b.create_instance(vm_spec("two", busybox, "true"))
    seen = admin.events()[-1]["id"]
    with pytest.raises(ConflictError, match=rf"cannot drain host '{host}': no other host can take b/one \({host}: "):
        admin.lease(host, "a", drain=True)
    assert admin.events(seen) == []  # nothing changed: no lease, no instance touched
    assert admin.leases() == []
    assert [(i["name"], i["host_id"], i["state"]) for i in b.instances()] == [
        ("one", first["host_id"], "running"),
        ("two", first["host_id"], "created"),
    ]
    assert b.instance("one")["state"] == "running"


def test_drain_recreates_the_others_on_another_host(daemon: Daemon, busybox: Path) -> None:
    """The other host is a row in the store, as another isolad would register it: the scheduler places there,
    while the guest is re-created by this daemon's engine (the platform drives no engine on another host)."""
    admin = daemon.client()
    a = daemon.client(admin.create_tenant("a")["token"])
    b = daemon.client(admin.create_tenant("b")["token"])
    host = _host(daemon)
    moved = b.create_instance(vm_spec("moved", busybox, "sh", "-c", "echo up; sleep 60", start=True))
    wait_for(lambda: b.logs("moved") == b"up\n")
    with sqlite3.connect(daemon.store) as db:
        db.execute(
            """INSERT INTO hosts (id, name, address, kinds, vcpus, memory_mib, disk_gib, state, facts, created_at,
               updated_at) VALUES ('other', 'other', 'unix:/nowhere', '["vm"]', 8, 8192, 10, 'ready',
               '{"offers": ["vm/process"]}', '2026-01-01T00:00:00.000000+00:00', '2026-01-01T00:00:00.000000+00:00')"""
        )
    seen = admin.events()[-1]["id"]
    lease = admin.lease(host, "a", drain=True)
    assert lease["state"] == "active"
    after = b.instance("moved")
    assert (after["id"], after["host_id"], after["state"]) == (moved["id"], "other", "running")
    assert [(e["kind"], e["object_id"]) for e in admin.events(seen)] == [
        ("instance.creating", moved["id"]),
        ("lease.active", lease["id"]),
        ("instance.running", moved["id"]),
    ]
    wait_for(lambda: b.logs("moved") == b"up\n")  # a fresh guest: its console log starts again
    a.create_instance(vm_spec("mine", busybox, "true"))
    assert a.instances()[0]["host_id"] == lease["host_id"]
