"""Hosts in the store: this host registering itself, and every host as the scheduler sees it.

A host offers what `isola doctor`'s verdicts find usable on it, per kind and per `vm` mode (`vm/process`,
not `vm/kernel`, on a kvm_pvm host); the store's `kinds` column holds the kinds, `facts["offers"]` the
kind/mode pairs the scheduler matches. Capacity is the CPU count, the memory and the free disk under
`$ISOLA_HOME` at registration; what is in use is summed from the instances placed there, in the
transaction that places the next one. A host with an active lease is its lessee's; one whose lease is
`cleaning` or `clean-failed` is out of the pool (its state says which).
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from typing import get_args

from isola.doctor import facts as host_facts
from isola.doctor.verdicts import Status, judge
from isola.platform.records import Host, Kind
from isola.platform.repos import Repos
from isola.platform.scheduler.model import HostView, offer


def register_self(repos: Repos, address: str) -> Host:
    """Add or refresh this host's row from a fresh look at the host; its id stays."""
    found = host_facts.gather()
    offers = sorted(offer(v.kind, v.mode) for v in judge(found) if v.status in (Status.USABLE, Status.LIMITED))
    kinds = tuple(k for k in get_args(Kind) if any(o.split("/")[0] == k for o in offers))
    fields = {
        "address": address,
        "kinds": kinds,
        "vcpus": found.cpu.count,
        "memory_mib": found.memory_mib,
        "disk_gib": int(found.disk_free_gib),
        "facts": {"offers": offers, "kvm_provider": found.kvm.provider, "kernel": found.kernel},
    }
    with repos.store.transaction():
        existing = repos.hosts.list(name=found.hostname)
        if existing:
            return repos.hosts.update(existing[0].id, **fields)
        return repos.hosts.add(Host(name=found.hostname, **fields))  # type: ignore[arg-type]


def views(conn: sqlite3.Connection) -> list[HostView]:
    """Every host with its current load, in registration order; call inside a store transaction."""
    used: dict[str, tuple[int, int, int, int]] = {
        host: (vcpus, memory, disk, count)
        for host, vcpus, memory, disk, count in conn.execute(
            """SELECT host_id, sum(vcpus), sum(memory_mib), sum(disk_gib), count(*) FROM instances
               WHERE host_id IS NOT NULL GROUP BY host_id"""
        )
    }
    labels: dict[str, list[tuple[str, dict[str, str]]]] = defaultdict(list)
    for host, tenant, text in conn.execute(
        "SELECT host_id, tenant_id, labels FROM instances WHERE host_id IS NOT NULL AND labels != '{}'"
    ):
        labels[host].append((tenant, json.loads(text)))
    leases = {
        host: (tenant, state)
        for host, tenant, state in conn.execute(
            "SELECT host_id, tenant_id, state FROM leases WHERE state IN ('active', 'cleaning', 'clean-failed')"
        )
    }
    result = []
    for host_id, name, state, vcpus, memory, disk, facts in conn.execute(
        "SELECT id, name, state, vcpus, memory_mib, disk_gib, facts FROM hosts ORDER BY created_at, id"
    ):
        lessee, lease_state = leases.get(host_id, (None, "active"))
        u = used.get(host_id, (0, 0, 0, 0))
        result.append(
            HostView(
                id=host_id,
                name=name,
                state=state if lease_state == "active" else lease_state,  # cleaning, clean-failed: out of the pool
                offers=frozenset(json.loads(facts).get("offers", [])),
                vcpus=vcpus,
                memory_mib=memory,
                disk_gib=disk,
                used_vcpus=u[0],
                used_memory_mib=u[1],
                used_disk_gib=u[2],
                instances=u[3],
                leased_to=lessee if lease_state == "active" else None,
                labels=tuple(labels.get(host_id, ())),
            )
        )
    return result
