"""Tenants, tokens, quotas and isolation through a real isolad: what one tenant can never see or touch, and
quotas that hold under concurrent creates."""

from __future__ import annotations

import socket
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from isola.errors import ConflictError, NotFoundError, PermissionDeniedError, QuotaExceededError
from isola.platform.client import Client
from tests.platform.conftest import Daemon, cleanup, short_root, vm_spec


def test_a_token_is_shown_once_and_stored_only_as_a_hash(daemon: Daemon) -> None:
    created = daemon.client().create_tenant("alice", {"instances": 3})
    token = created["token"]
    assert token.startswith("isola_") and created["tenant"]["quotas"]["instances"] == 3
    with sqlite3.connect(daemon.store) as db:
        (stored,) = db.execute("SELECT token_hash FROM tenants WHERE name = 'alice'").fetchone()
        assert token not in stored and stored.startswith("sha256:")
        dump = "\n".join(db.iterdump())
    assert token not in dump
    me = daemon.client(token)
    assert [t["name"] for t in me.tenants()] == ["alice"]
    rotated = daemon.client().rotate_token("alice")
    with pytest.raises(PermissionDeniedError, match="not valid"):
        me.tenants()
    assert daemon.client(rotated).tenant("alice")["usage"]["instances"] == 0


def test_only_an_admin_manages_tenants(daemon: Daemon) -> None:
    admin = daemon.client()
    alice = daemon.client(admin.create_tenant("alice")["token"])
    with pytest.raises(PermissionDeniedError, match="only an admin"):
        alice.create_tenant("mallory")
    with pytest.raises(PermissionDeniedError):
        alice.set_quotas("alice", {"instances": 100})
    with pytest.raises(ConflictError, match="already exists"):
        admin.create_tenant("alice")
    assert admin.set_quotas("alice", {"vcpus": 4})["quotas"]["vcpus"] == 4
    admin.delete_tenant("alice")
    with pytest.raises(NotFoundError):
        admin.tenant("alice")


def test_a_tenant_cannot_see_or_touch_another_tenants_instances(daemon: Daemon, busybox: Path) -> None:
    admin = daemon.client()
    a = daemon.client(admin.create_tenant("a")["token"])
    b = daemon.client(admin.create_tenant("b")["token"])
    mine = a.create_instance(vm_spec("web", busybox, "true"))
    assert b.instances() == []
    for ref in (mine["id"], "web"):
        with pytest.raises(NotFoundError, match="does not exist"):
            b.instance(ref)
        with pytest.raises(NotFoundError):
            b.delete_instance(ref, force=True)
        with pytest.raises(NotFoundError):
            b.action(ref, "start")
        with pytest.raises(NotFoundError):
            b.logs(ref)
    with pytest.raises(NotFoundError):
        b.tenant("a")
    with pytest.raises(NotFoundError):  # nor create on another's behalf
        b.create_instance(vm_spec("x", busybox, "true", tenant="a"))
    # The same name in another tenant is another instance.
    b.create_instance(vm_spec("web", busybox, "true"))
    assert {i["tenant_id"] for i in admin.instances()} == {a.tenant("a")["id"], b.tenant("b")["id"]}
    with pytest.raises(ConflictError, match="2 tenants"):
        admin.instance("web")
    assert admin.instance(mine["id"])["name"] == "web"
    with pytest.raises(ConflictError, match="still used"):
        admin.delete_tenant("a")
    a.delete_instance("web")
    admin.delete_tenant("a")


def test_two_concurrent_creates_cannot_both_take_the_last_slot(daemon: Daemon, busybox: Path) -> None:
    admin = daemon.client()
    token = admin.create_tenant("t", {"instances": 1})["token"]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def create(name: str) -> None:
        with Client(daemon.socket, token) as client:
            barrier.wait()
            try:
                client.create_instance(vm_spec(name, busybox, "true"))
                outcomes.append("created")
            except QuotaExceededError as err:
                assert "quota instances: holds 1, asks 1 more, may hold 1" in err.message
                outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(f"i{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created", "refused"]
    assert len(admin.instances()) == 1


def test_quotas_on_vcpus_and_memory_count_what_the_tenant_holds(daemon: Daemon, busybox: Path) -> None:
    admin = daemon.client()
    t = daemon.client(admin.create_tenant("t", {"memory_mib": 600})["token"])
    t.create_instance(vm_spec("one", busybox, "true", resources={"memory_mib": 400}))
    with pytest.raises(QuotaExceededError, match="memory_mib: holds 400, asks 256 more, may hold 600"):
        t.create_instance(vm_spec("two", busybox, "true"))
    t.create_instance(vm_spec("two", busybox, "true", resources={"memory_mib": 200}))
    assert t.tenant("t")["usage"]["memory_mib"] == 600


def test_tcp_needs_a_token_and_a_token_sees_only_its_tenant(busybox: Path) -> None:
    root = short_root()
    d = Daemon(root, tcp=_free_port_address())
    try:
        with httpx.Client() as probe:
            d.start()
            url = f"http://{d.tcp}"
            answer = probe.get(url + "/v1/instances")
            assert answer.status_code == 403
            assert answer.json()["type"] == "PermissionDeniedError"
            assert probe.get(url + "/v1/instances", headers={"Authorization": "Bearer nope"}).status_code == 403
        admin = d.client()
        token = admin.create_tenant("a")["token"]
        admin.create_tenant("b")
        with Client.tcp(url, token) as a:
            assert [t["name"] for t in a.tenants()] == ["a"]
            a.create_instance(vm_spec("web", busybox, "true"))
            assert [i["name"] for i in a.instances()] == ["web"]
            with pytest.raises(PermissionDeniedError):
                a.create_tenant("c")
    finally:
        cleanup(root, [d])


def _free_port_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"
