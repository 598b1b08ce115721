"""The scheduler as pure logic: each filter's reason, the weighers' choice, and the fast index agreeing with
the reference on random clusters (the index is only worth having if it decides exactly the same)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from isola.errors import InvalidSpecError
from isola.platform.scheduler.index import PlacementIndex
from isola.platform.scheduler.model import HostView, Policy, Request, Selector
from isola.platform.scheduler.scheduler import place

PROCESS_ONLY = frozenset({"vm/process", "emulated", "container", "metal"})
EVERYTHING = PROCESS_ONLY | {"vm/kernel"}


def host(name: str, **fields: object) -> HostView:
    values: dict[str, object] = {
        "id": name,
        "name": name,
        "state": "ready",
        "offers": EVERYTHING,
        "vcpus": 8,
        "memory_mib": 8192,
        "disk_gib": 100,
    }
    values.update(fields)
    return HostView(**values)  # type: ignore[arg-type]


def request(**fields: object) -> Request:
    values: dict[str, object] = {"tenant_id": "t1", "kind": "vm", "mode": "process", "vcpus": 1, "memory_mib": 256}
    values.update(fields)
    return Request(**values)  # type: ignore[arg-type]


def test_each_filter_names_its_reason() -> None:
    hosts = [
        host("pvm", offers=PROCESS_ONLY),
        host("full", used_vcpus=32),
        host("leased", leased_to="t2"),
        host("down", state="maintenance"),
        host("ok"),
    ]
    decision = place(request(mode="kernel"), hosts, Policy())
    assert decision.chosen == "ok"
    assert decision.rejected["pvm"].startswith("does not run vm/kernel")
    assert decision.rejected["full"] == "vcpus: 1 wanted, 0 free of 8 x 4"
    assert decision.rejected["leased"] == "leased to another tenant"
    assert decision.rejected["down"] == "host is maintenance"
    assert [c.host for c in decision.candidates] == ["ok"]


def test_overcommit_ratios_apply_per_resource() -> None:
    hosts = [host("h", vcpus=2, memory_mib=1024)]
    assert place(request(vcpus=8), hosts, Policy(cpu_ratio=4)).chosen == "h"
    assert place(request(vcpus=9), hosts, Policy(cpu_ratio=4)).chosen is None
    assert place(request(memory_mib=1025), hosts, Policy()).rejected["h"].startswith("memory_mib: 1025 wanted")
    assert place(request(memory_mib=1536), hosts, Policy(memory_ratio=1.5)).chosen == "h"


def test_the_lessee_may_use_its_leased_host() -> None:
    assert place(request(tenant_id="t2"), [host("leased", leased_to="t2")], Policy()).chosen == "leased"


def test_spread_prefers_the_emptiest_and_pack_the_fullest() -> None:
    hosts = [host("busy", used_vcpus=6, used_memory_mib=6000, instances=6), host("idle")]
    assert place(request(), hosts, Policy(strategy="spread")).chosen == "idle"
    assert place(request(), hosts, Policy(strategy="pack")).chosen == "busy"


def test_ties_go_to_the_host_listed_first() -> None:
    assert place(request(), [host("b"), host("a")], Policy()).chosen == "b"


def test_affinity_follows_the_group_and_anti_affinity_avoids_it() -> None:
    web = (("t1", {"group": "web"}),)
    hosts = [host("a"), host("b", labels=web, used_vcpus=4, instances=1), host("c", labels=(("t2", {"group": "web"}),))]
    group = (Selector("group", "web"),)
    assert place(request(affinity=group), hosts, Policy()).chosen == "b"
    anti = place(request(anti_affinity=group), hosts, Policy())
    assert anti.rejected == {"b": "anti-affinity: instance group=web here"}
    assert anti.chosen == "a"
    # The first of a group goes anywhere; another tenant's labels are not ours.
    assert place(request(affinity=(Selector("group", "db"),)), hosts, Policy()).chosen == "a"
    assert place(request(tenant_id="t2", anti_affinity=group), hosts, Policy()).rejected == {
        "c": "anti-affinity: instance group=web here"
    }


def test_bad_selectors_and_policies_name_the_field() -> None:
    with pytest.raises(InvalidSpecError, match="anti_affinity"):
        Selector.parse("novalue", "anti_affinity")
    with pytest.raises(InvalidSpecError, match="cpu_ratio"):
        Policy(cpu_ratio=0).validate()


def _cluster(rng: random.Random, n: int) -> list[HostView]:
    hosts = []
    for i in range(n):
        hosts.append(
            host(
                f"h{i:03}",
                state=rng.choice(["ready"] * 9 + ["draining"]),
                offers=rng.choice([EVERYTHING, PROCESS_ONLY, frozenset({"container"})]),
                vcpus=rng.choice([2, 4, 8]),
                memory_mib=rng.choice([2048, 4096, 8192]),
                disk_gib=rng.choice([0, 20, 100]),
                leased_to=rng.choice([None] * 8 + ["t1", "t2"]),
            )
        )
    return hosts


@pytest.mark.parametrize("strategy", ["spread", "pack"])
@pytest.mark.parametrize("seed", range(6))
def test_the_index_decides_exactly_as_the_reference(strategy: str, seed: int) -> None:
    """Place instances one after another with both, feeding each placement back into the hosts."""
    rng = random.Random(seed)
    hosts = _cluster(rng, rng.choice([1, 7, 40]))
    policy = Policy(strategy=strategy, disk_weight=rng.choice([0.0, 0.3]))  # type: ignore[arg-type]
    index = PlacementIndex(hosts, policy)
    groups = [Selector("group", g) for g in ("a", "b", "c")]
    for _ in range(150):
        wanted = request(
            tenant_id=rng.choice(["t1", "t2", "t3"]),
            kind=rng.choice(["vm", "container"]),
            vcpus=rng.choice([1, 2, 4]),
            memory_mib=rng.choice([128, 512, 1024, 3000]),
            disk_gib=rng.choice([0, 0, 5, 30]),
            affinity=tuple(rng.sample(groups, rng.choice([0, 0, 1]))),
            anti_affinity=tuple(rng.sample(groups, rng.choice([0, 0, 1]))),
        )
        if wanted.kind == "container":
            wanted = replace(wanted, mode=None)
        labels = {"group": rng.choice(["a", "b", "c"])}
        expected = place(wanted, hosts, policy).chosen
        got = index.place(wanted)
        assert (hosts[got].name if got is not None else None) == expected
        if got is None:
            continue
        index.commit(got, wanted, labels)
        h = hosts[got]
        hosts[got] = replace(
            h,
            used_vcpus=h.used_vcpus + wanted.vcpus,
            used_memory_mib=h.used_memory_mib + wanted.memory_mib,
            used_disk_gib=h.used_disk_gib + wanted.disk_gib,
            instances=h.instances + 1,
            labels=(*h.labels, (wanted.tenant_id, labels)),
        )
