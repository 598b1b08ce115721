"""Metal instances through isolad, and cleaning after a lease for real: release kills every process of the
tenant, removes its files and cgroups and verifies it; what cleaning cannot remove (a mount the tenant left in
its files) leaves the lease `clean-failed` and the host out of the pool until an admin retries."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from isola.errors import ConflictError
from isola.metal.cgroup import InstanceGroup
from tests.platform import metal_fixtures
from tests.platform.conftest import wait_for
from tests.platform.metal_fixtures import MetalDaemon, alive, processes_in

metal_daemon = metal_fixtures.metal_daemon  # the fixture, by name

if os.geteuid() != 0:
    pytest.skip("the metal engine needs root (cgroups)", allow_module_level=True)


def _metal(name: str, *command: str) -> dict[str, object]:
    return {"name": name, "kind": "metal", "command": list(command), "start": True}


def test_metal_instances_through_isolad(metal_daemon: MetalDaemon) -> None:
    daemon = metal_daemon
    admin = daemon.client()
    a = daemon.client(admin.create_tenant("a")["token"])
    box = a.create_instance({**_metal("box", "sh", "-c", "echo hi; sleep 60"), "resources": {"memory_mib": 32}})
    assert box["state"] == "running" and box["kind"] == "metal"
    wait_for(lambda: a.logs("box") == b"hi\n")
    assert a.exec("box", ["sh", "-c", "cat /proc/self/cgroup | grep memory"])[1].decode().strip().endswith(box["id"])
    assert a.stats("box")["memory_bytes"] > 0
    a.action("box", "resize", {"vcpus": 1, "memory_mib": 48, "disk_gib": 0})
    limit = Path(f"/sys/fs/cgroup/memory/isola-metal/{box['id']}/memory.limit_in_bytes").read_text()
    assert int(limit) == 48 << 20
    assert a.action("box", "stop", {"timeout_s": 5})["state"] == "stopped"
    a.delete_instance("box")
    assert not InstanceGroup(box["id"]).exists() and not (daemon.metal_state / box["id"]).exists()


def test_release_cleans_every_trace_of_the_tenant(metal_daemon: MetalDaemon) -> None:
    daemon = metal_daemon
    admin = daemon.client()
    a = daemon.client(admin.create_tenant("a")["token"])
    b = daemon.client(admin.create_tenant("b")["token"])
    host = admin.system()["host"]
    lease = admin.lease(host, "a")
    with pytest.raises(ConflictError, match="leased to another tenant"):
        b.create_instance(_metal("intruder", "true"))
    work = a.create_instance(_metal("work", "sh", "-c", "echo secret > data; sleep 60 & sleep 60 & wait"))
    done = a.create_instance(_metal("done", "sh", "-c", "echo x > left-behind"))
    wait_for(lambda: len(processes_in(work["id"])) == 3)
    members = processes_in(work["id"])
    assert (daemon.metal_state / work["id"] / "files" / "data").read_text() == "secret\n"
    released = a.release(lease["id"])
    assert released["lease"]["state"] == "released" and released["failures"] == {}
    assert sorted(released["deleted"]) == sorted([work["id"], done["id"]])
    assert not any(alive(pid) for pid in members)
    for instance in (work, done):
        assert not InstanceGroup(instance["id"]).exists()
    assert list(daemon.metal_state.iterdir()) == []
    b.create_instance(_metal("welcome", "true"))  # shared again


def test_a_clean_that_cannot_remove_the_tenants_files_fails_and_keeps_the_host(metal_daemon: MetalDaemon) -> None:
    daemon = metal_daemon
    admin = daemon.client()
    a = daemon.client(admin.create_tenant("a")["token"])
    b = daemon.client(admin.create_tenant("b")["token"])
    lease = admin.lease(admin.system()["host"], "a")
    # The tenant is root on its host: it mounts a filesystem in its files, which nothing may delete under it.
    box = a.create_instance(_metal("box", "sh", "-c", "mkdir mnt && mount -t tmpfs none mnt && sleep 60"))
    mountpoint = daemon.metal_state / box["id"] / "files" / "mnt"
    wait_for(lambda: os.path.ismount(mountpoint))
    released = a.release(lease["id"])
    assert released["lease"]["state"] == "clean-failed"
    assert "mnt" in released["failures"][box["id"]] and "busy" in released["failures"][box["id"]].lower()
    assert processes_in(box["id"]) == []  # its processes are gone; its files are what is left
    with pytest.raises(ConflictError, match="clean-failed"):
        b.create_instance(_metal("x", "true"))
    subprocess.run(["umount", str(mountpoint)], check=True)  # the admin removes what blocked cleaning
    assert admin.release(lease["id"])["lease"]["state"] == "released"
    assert list(daemon.metal_state.iterdir()) == []
    b.create_instance(_metal("x", "true"))
