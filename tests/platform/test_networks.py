"""Tenant networks for real: a bridge in a namespace per network, metal instances wired to it by veth pairs,
addresses from the store — and isolation proved with busybox ping inside the namespaces: within a network it
answers, across two tenants' networks it does not, even with a route pointing there. Nothing appears in the
host's own namespace; every namespace a test made is gone after it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from isola.errors import ConflictError, InvalidSpecError, NotFoundError, QuotaExceededError
from isola.host import netlink
from tests.platform import metal_fixtures
from tests.platform.metal_fixtures import MetalDaemon

metal_daemon = metal_fixtures.metal_daemon  # the fixture, by name

BUSYBOX = "/usr/bin/busybox"

if os.geteuid() != 0:
    pytest.skip("networks need root (namespaces, veths, bridges)", allow_module_level=True)
if not Path(BUSYBOX).is_file():
    pytest.skip(f"{BUSYBOX} is missing (apt-get install busybox)", allow_module_level=True)


def _host_links() -> list[str]:
    return sorted(line.split(":")[1].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:])


def _metal(name: str, network: str) -> dict[str, object]:
    return {"name": name, "kind": "metal", "command": ["sleep", "60"], "networks": [network], "start": True}


def test_two_tenants_networks_cannot_reach_each_other(metal_daemon: MetalDaemon) -> None:
    host_links = _host_links()
    admin = metal_daemon.client()
    a = metal_daemon.client(admin.create_tenant("a", {"networks": 1})["token"])
    b = metal_daemon.client(admin.create_tenant("b")["token"])
    blue_a = a.create_network("blue", "10.77.1.0/24")
    with pytest.raises(QuotaExceededError, match="quota networks"):
        a.create_network("green")
    blue_b = b.create_network("blue", "10.77.2.0/24")  # names are per tenant
    assert [n["id"] for n in b.networks()] == [blue_b["id"]]
    with pytest.raises(NotFoundError):
        b.network(blue_a["id"])
    with pytest.raises(NotFoundError):
        b.delete_network(blue_a["id"])
    assert netlink.links(blue_a["namespace"]) == ["br0", "lo"]

    a1, a2 = a.create_instance(_metal("a1", "blue")), a.create_instance(_metal("a2", "blue"))
    b1 = b.create_instance(_metal("b1", "blue"))
    with pytest.raises(NotFoundError, match="network 'nope' does not exist"):
        admin.create_instance({**_metal("x", "blue"), "tenant": "a", "networks": ["nope"]})
    attached = a.network("blue")["attached"]
    assert attached == {a1["id"]: "10.77.1.2", a2["id"]: "10.77.1.3"}
    assert b.network("blue")["attached"] == {b1["id"]: "10.77.2.2"}

    def ping(client: object, instance: str, address: str) -> int:
        code, _, _ = client.exec(instance, [BUSYBOX, "ping", "-c", "1", "-W", "1", address])  # type: ignore[attr-defined]
        return int(code)

    assert ping(a, "a1", "10.77.1.3") == 0  # the neighbour on the same network
    assert ping(a, "a1", "10.77.1.1") == 0  # the network's bridge
    for client, instance, other in ((a, "a1", "10.77.2.0/24"), (b, "b1", "10.77.1.0/24")):
        code, _, err = client.exec(instance, [BUSYBOX, "ip", "route", "add", other, "dev", "eth0"])
        assert code == 0, err  # point the other tenant's subnet at eth0: only L2 separates them now
    assert ping(a, "a1", "10.77.2.2") != 0
    assert ping(b, "b1", "10.77.1.2") != 0
    assert ping(b, "b1", "10.77.1.3") != 0
    assert _host_links() == host_links  # nothing of any network in the host's namespace

    with pytest.raises(ConflictError, match="2 instances attached"):
        a.delete_network("blue")
    for name in ("a1", "a2"):
        a.delete_instance(name, force=True)
    assert a.network("blue")["attached"] == {}
    a.delete_network("blue")
    assert blue_a["namespace"] not in netlink.namespaces()
    assert not any(a1["id"] in name or a2["id"] in name for name in netlink.namespaces())


def test_bad_network_requests_are_refused_clearly(metal_daemon: MetalDaemon, tmp_path: Path) -> None:
    admin = metal_daemon.client()
    a = metal_daemon.client(admin.create_tenant("a")["token"])
    with pytest.raises(InvalidSpecError, match="subnet: 'nonsense' is not a subnet"):
        a.create_network("n", "nonsense")
    with pytest.raises(InvalidSpecError, match="subnet: an IPv4 subnet"):
        a.create_network("n", "10.0.0.0/30")
    with pytest.raises(InvalidSpecError, match="name"):
        a.create_network("no/slash")
    with pytest.raises(InvalidSpecError, match="tenant: is required"):
        admin.create_network("n")
    with pytest.raises(InvalidSpecError, match="networks: a vm instance attaches to no network"):
        a.create_instance({"name": "v", "kind": "vm", "mode": "process", "command": ["/bin/true"], "networks": ["n"]})
    a.create_network("n")
    with pytest.raises(ConflictError, match="already exists"):
        a.create_network("n")
    assert [n["subnet"] for n in a.networks()] == ["10.88.0.0/24"]


def test_the_cli(metal_daemon: MetalDaemon) -> None:
    token = metal_daemon.client().create_tenant("a")["token"]
    env = {**metal_daemon.env, "ISOLA_TOKEN": token}

    def isola(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "isola.cli", *args], env=env, capture_output=True, text=True)

    assert isola("network", "create", "web", "--subnet", "10.66.0.0/24").returncode == 0
    listed = isola("net", "ls", "--json")
    assert '"subnet": "10.66.0.0/24"' in listed.stdout
    bad = isola("network", "create", "x", "--subnet", "300.1.1.1/24")
    assert bad.returncode != 0 and "subnet" in bad.stderr and "Traceback" not in bad.stderr
    assert isola("network", "rm", "web").returncode == 0
    gone = isola("network", "rm", "web")
    assert gone.returncode != 0 and "does not exist" in gone.stderr
