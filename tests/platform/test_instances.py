"""Instances through isolad for real: process VMs running busybox on this host's KVM, their console over a
WebSocket, errors as answers, and reconcile after a daemon restart (SIGKILL included) while a guest runs."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from isola.engine import InstanceSpec
from isola.errors import ConflictError, InvalidSpecError, NotFoundError, UnsupportedError
from isola.vmm.engine import VmEngine
from tests.platform.conftest import Daemon, vm_spec, wait_for


def _tenant(daemon: Daemon, name: str = "t") -> str:
    token: str = daemon.client().create_tenant(name)["token"]
    return token


def test_a_process_vm_through_its_whole_life(daemon: Daemon, busybox: Path) -> None:
    t = daemon.client(_tenant(daemon))
    created = t.create_instance(vm_spec("box", busybox, "sh", "-c", "echo hello from the guest; exec sleep 60"))
    assert created["state"] == "created" and created["engine_id"] == created["id"]
    assert created["host_id"] == daemon.client().system()["host_id"]
    assert t.action("box", "start")["state"] == "running"
    with pytest.raises(ConflictError, match="running already"):
        t.action("box", "start")
    wait_for(lambda: b"hello from the guest" in t.logs("box"))
    code, out, err = t.exec("box", ["/busybox", "sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (code, out, err) == (3, b"out\n", b"err\n")
    stats = t.stats("box")
    assert stats["memory_bytes"] > 0 and stats["engine"]["processes"] >= 1
    with pytest.raises(UnsupportedError, match="running VM cannot change"):
        t.action("box", "resize", {"memory_mib": 512})
    assert t.instance("box")["resources"]["memory_mib"] == 256  # put back when the engine refused
    assert t.action("box", "stop", {"timeout_s": 5})["state"] == "stopped"
    assert t.action("box", "resize", {"memory_mib": 512})["resources"]["memory_mib"] == 512
    assert t.tenant("t")["usage"]["memory_mib"] == 512
    assert t.action("box", "start")["state"] == "running"
    t.action("box", "kill", {"signal": 9})
    wait_for(lambda: t.instance("box")["state"] == "stopped")
    t.delete_instance("box")
    assert t.instances() == []
    assert not any(p for p in (daemon.vm_state).iterdir() if not p.name.startswith("."))


def test_a_running_instance_is_deleted_only_with_force(daemon: Daemon, busybox: Path) -> None:
    t = daemon.client(_tenant(daemon))
    t.create_instance(vm_spec("s", busybox, "sleep", "60", start=True))
    with pytest.raises(ConflictError, match="stop it first"):
        t.delete_instance("s")
    assert t.instance("s")["state"] == "running"  # the refused delete left it as it was
    t.delete_instance("s", force=True)
    with pytest.raises(NotFoundError):
        t.instance("s")


def test_the_console_is_a_websocket_to_the_guest(daemon: Daemon, busybox: Path) -> None:
    t = daemon.client(_tenant(daemon))
    t.create_instance(vm_spec("cat", busybox, "cat", start=True))
    with t.console("cat") as ws:
        ws.send(b"ping over the websocket\n")
        received = b""
        deadline = time.monotonic() + 10
        while b"ping over the websocket\n" not in received and time.monotonic() < deadline:
            frame = ws.recv(timeout=10)
            assert isinstance(frame, bytes)
            received += frame
    assert b"ping over the websocket\n" in received
    t.action("cat", "stop", {"timeout_s": 2})
    with t.console("cat") as ws:  # a stopped guest has no console: the refusal is one text frame, then 4409
        refusal = json.loads(ws.recv(timeout=10))
        assert refusal["type"] == "ConflictError" and "its console exists while it runs" in refusal["error"]
        with pytest.raises(Exception, match="4409"):
            ws.recv(timeout=10)
    other = daemon.client(_tenant(daemon, "other"))
    with other.console("cat") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "NotFoundError"


def test_bad_requests_answer_with_the_field_and_the_right_status(daemon: Daemon, busybox: Path) -> None:
    token = _tenant(daemon)
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://isolad") as raw:
        auth = {"Authorization": f"Bearer {token}"}
        cases = [
            ({"name": "a", "kind": "vm", "mode": "process", "resources": {"vcpus": "2"}}, 422, "resources.vcpus"),
            ({"name": "a", "kind": "vm", "mode": "process", "colour": "red"}, 422, "colour"),
            ({"name": "a b", "kind": "vm", "mode": "process", "command": [str(busybox)]}, 422, "name"),
            ({"name": "a", "kind": "vm", "mode": "process", "command": [str(busybox), 7]}, 422, "command[1]"),
            ({"name": "a", "kind": "vm"}, 422, "mode"),
            ({"name": "a", "kind": "vm", "mode": "process"}, 422, "command"),
            ({"name": "a", "kind": "vm", "mode": "process", "command": ["x"], "affinity": ["g"]}, 422, "affinity[0]"),
            ({"name": "a", "kind": "rocket"}, 422, "kind"),
        ]
        for body, status, field in cases:
            answer = raw.post("/v1/instances", json=body, headers=auth)
            assert (answer.status_code, answer.json()["field"]) == (status, field), (body, answer.json())
        assert raw.post("/v1/instances", content=b"{", headers=auth).status_code == 422
        unsupported = raw.post("/v1/instances", json={"name": "e", "kind": "emulated"}, headers=auth)
        assert unsupported.status_code == 501 and "no emulated engine" in unsupported.json()["error"]
        kernel = raw.post(
            "/v1/instances", json={"name": "k", "kind": "vm", "mode": "kernel", "image": "/x"}, headers=auth
        )
        assert kernel.status_code == 501 and "no host runs vm/kernel" in kernel.json()["error"], kernel.json()
        assert raw.get("/v1/nothing").status_code == 404
        assert raw.get("/v1/instances/none").json()["type"] == "NotFoundError"
    with pytest.raises(InvalidSpecError) as caught:
        daemon.client(token).create_instance({"name": "a", "kind": "vm"})
    assert caught.value.field == "mode"


def test_a_guest_outlives_a_daemon_restart_and_reconcile_fixes_the_records(daemon: Daemon, busybox: Path) -> None:
    t = daemon.client(_tenant(daemon))
    running = t.create_instance(vm_spec("runs", busybox, "sleep", "60", start=True))
    vanishing = t.create_instance(vm_spec("ends", busybox, "sleep", "60", start=True))
    daemon.restart(signal.SIGKILL)  # no chance to clean up anything
    assert t.instance("runs")["state"] == "running"
    # While the daemon is down, one guest ends and a create and a delete are caught half-way.
    daemon.stop()
    VmEngine(daemon.vm_state).kill(vanishing["engine_id"], signal.SIGKILL)
    VmEngine(daemon.vm_state).create("reached", InstanceSpec.from_dict(vm_spec("got-there", busybox, "true")))
    wait_for(lambda: VmEngine(daemon.vm_state).state(vanishing["engine_id"]).state.value == "stopped")
    with sqlite3.connect(daemon.store) as db:
        host, tenant = db.execute("SELECT host_id, tenant_id FROM instances LIMIT 1").fetchone()
        db.execute(
            """INSERT INTO instances (id, name, tenant_id, kind, mode, state, vcpus, memory_mib, disk_gib, host_id,
               spec, created_at, updated_at) VALUES ('halfmade', 'half', ?, 'vm', 'process', 'creating', 1, 256, 0,
               ?, '{}', '2026-01-01T00:00:00.000000+00:00', '2026-01-01T00:00:00.000000+00:00')""",
            (tenant, host),
        )
        db.execute(  # this create reached the engine before the daemon died
            """INSERT INTO instances (id, name, tenant_id, kind, mode, state, vcpus, memory_mib, disk_gib, host_id,
               spec, created_at, updated_at) SELECT 'reached', 'got-there', tenant_id, kind, mode, 'creating', vcpus,
               memory_mib, disk_gib, host_id, spec, created_at, updated_at FROM instances WHERE id = ?""",
            (vanishing["id"],),
        )
        db.execute("UPDATE instances SET state = 'deleting' WHERE id = ?", (running["id"],))
    daemon.start()
    with sqlite3.connect(daemon.store) as db:  # reconcile's work, before any request could refresh a state
        states = dict(db.execute("SELECT name, state FROM instances").fetchall())
    assert states == {"ends": "stopped", "got-there": "created"}
    assert t.instance("got-there")["engine_id"] == "reached"
    assert not (daemon.vm_state / running["engine_id"]).exists()
    log = daemon.log.read_text()
    assert "reconciled: 1 changed, 1/1 creates finished/undone, 1 deletes finished, 0 problems" in log


def test_affinity_rules_apply_through_the_daemon(daemon: Daemon, busybox: Path) -> None:
    t = daemon.client(_tenant(daemon))
    t.create_instance(vm_spec("web1", busybox, "true", labels={"group": "web"}))
    host = daemon.client().system()["host"]
    with pytest.raises(ConflictError, match=f"no host can take it now: {host}: anti-affinity: instance group=web here"):
        t.create_instance(vm_spec("web2", busybox, "true", anti_affinity=["group=web"]))
    assert t.create_instance(vm_spec("db", busybox, "true", affinity=["group=web"]))["host_id"]
    assert t.schedule(vm_spec("web2", busybox, "true", anti_affinity=["group=db"]))["chosen"] == host
