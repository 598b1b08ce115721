"""A `container` instance through isolad: created and started by a tenant, its logs and exec read back over the
API, deleted. isolad runs with a private $ISOLA_HOME holding the busybox image; whatever container the test
leaves is deleted through the engine afterwards, even when it fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from isola.container.containers.store import ContainerStore
from isola.container.engine import ContainerEngine
from isola.container.images.build import busybox_image
from isola.container.images.store import ImageStore
from tests.conftest import amd64_asset, require_root
from tests.platform.conftest import Daemon, cleanup, short_root, wait_for


@pytest.fixture
def container_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    require_root()
    busybox = amd64_asset("busybox")
    root = short_root()
    monkeypatch.setenv("ISOLA_HOME", str(root / "home"))  # isolad and its engines inherit it
    ImageStore().add(busybox_image(busybox), ["busybox:latest"])
    d = Daemon(root)
    try:
        d.start()
        yield d
    finally:
        try:
            engine = ContainerEngine()
            for c in ContainerStore().containers():
                engine.delete(c.id, force=True)
        finally:
            cleanup(root, [d])


def test_a_container_instance_through_isolad(container_daemon: Daemon) -> None:
    token = container_daemon.client().create_tenant("acme")["token"]
    t = container_daemon.client(token)
    spec = {
        "name": "web",
        "kind": "container",
        "image": "busybox",
        "command": ["sh", "-c", "echo hello from $WHO; exec sleep 60"],
        "env": {"WHO": "a container"},
        "resources": {"vcpus": 1, "memory_mib": 64},
        "start": True,
    }
    created = t.create_instance(spec)
    assert created["state"] == "running"
    wait_for(lambda: t.logs("web") == b"hello from a container\n")
    assert t.exec("web", ["hostname"])[0] == 0
    assert ContainerStore().read(created["id"]).name == created["id"]  # the engine's container is the instance
    t.delete_instance("web", force=True)
    assert ContainerStore().containers() == []
    assert not (container_daemon.root / "home" / "containers" / created["id"]).exists()
