"""Bare-metal leases through isolad: a leased host takes only its lessee's instances, release cleans the
lessee's guests away for real, a failed clean keeps the host out of the pool, and leases stay private."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from isola.errors import ConflictError, InvalidSpecError, NotFoundError, PermissionDeniedError, QuotaExceededError
from tests.platform.conftest import Daemon, vm_spec


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
    with pytest.raises(ConflictError, match="1 instances of 1 other tenants"):
        admin.lease(host, "a")
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
               engine_id, created_at, updated_at) VALUES ('stuck', 'stuck', ?, 'container', 'running', 1, 64, 0, ?,
               '{}', 'stuck', '2026-01-01T00:00:00.000000+00:00', '2026-01-01T00:00:00.000000+00:00')""",
            (lease["tenant_id"], lease["host_id"]),
        )
    released = a.release(lease["id"])
    assert released["lease"]["state"] == "clean-failed"
    assert "no container engine" in released["failures"]["stuck"]
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
