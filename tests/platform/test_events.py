"""Events through isolad: instance and lease state changes are recorded as they happen, a tenant reads only its
own, and `since` continues where the reader stopped."""

from __future__ import annotations

from pathlib import Path

from tests.platform.conftest import Daemon, vm_spec


def test_instances_and_leases_leave_events_each_tenant_sees_its_own(daemon: Daemon, busybox: Path) -> None:
    admin = daemon.client()
    a = daemon.client(admin.create_tenant("a")["token"])
    b = daemon.client(admin.create_tenant("b")["token"])
    box = a.create_instance(vm_spec("box", busybox, "sleep", "60"))
    a.action("box", "start")
    a.delete_instance("box", force=True)
    other = b.create_instance(vm_spec("other", busybox, "true"))
    b.delete_instance("other")
    lease = admin.lease(admin.system()["host"], "a")
    a.release(lease["id"])

    mine = a.events()
    assert [(e["kind"], e["object_id"]) for e in mine] == [
        ("instance.creating", box["id"]),
        ("instance.created", box["id"]),
        ("instance.running", box["id"]),
        ("instance.deleting", box["id"]),
        ("instance.deleted", box["id"]),
        ("lease.active", lease["id"]),
        ("lease.cleaning", lease["id"]),
        ("lease.released", lease["id"]),
    ]
    assert {e["tenant_id"] for e in mine} == {box["tenant_id"]}
    assert all(e["at"] for e in mine)
    theirs = b.events()
    assert [e["kind"] for e in theirs] == [
        "instance.creating",
        "instance.created",
        "instance.deleting",
        "instance.deleted",
    ]
    assert {e["object_id"] for e in theirs} == {other["id"]}
    everyone = admin.events()
    assert sorted(e["id"] for e in everyone) == sorted(e["id"] for e in mine + theirs)
    assert [e["id"] for e in everyone] == sorted(e["id"] for e in everyone)
    assert a.events(mine[4]["id"]) == mine[5:]
    assert a.events(mine[-1]["id"]) == []
