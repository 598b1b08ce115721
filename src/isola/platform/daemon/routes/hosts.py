"""Hosts and the scheduler: what each host offers and holds, and where an instance would go (dry run)."""

from __future__ import annotations

from fastapi import APIRouter

from isola.platform import hosts
from isola.platform.daemon import models
from isola.platform.daemon.routes.deps import CallerDep, PlatformDep
from isola.platform.daemon.routes.instances import create_request

router = APIRouter(tags=["hosts"])


@router.get("/v1/hosts", operation_id="listHosts", summary="Every host with its offers and load")
def list_hosts(platform: PlatformDep, caller: CallerDep) -> list[models.HostOut]:
    with platform.store.snapshot() as conn:
        views = hosts.views(conn)
    return [
        models.HostOut(
            id=v.id,
            name=v.name,
            state=v.state,
            offers=sorted(v.offers),
            vcpus=v.vcpus,
            memory_mib=v.memory_mib,
            disk_gib=v.disk_gib,
            used_vcpus=v.used_vcpus,
            used_memory_mib=v.used_memory_mib,
            used_disk_gib=v.used_disk_gib,
            instances=v.instances,
            # A tenant learns only whether a host is leased to itself.
            leased_to=v.leased_to if caller.is_admin or v.leased_to == caller.tenant_id else None,
        )
        for v in views
    ]


@router.post("/v1/schedule", operation_id="scheduleDryRun",
             summary="Where an instance would go, and why not elsewhere")  # fmt: skip
def schedule(body: models.InstanceCreate, platform: PlatformDep, caller: CallerDep) -> models.DecisionOut:
    decision = platform.instances.decide(caller, create_request(body))
    return models.DecisionOut(
        chosen=decision.chosen,
        candidates=[models.CandidateOut(host=c.host, score=c.score) for c in decision.candidates],
        rejected=dict(decision.rejected),
    )
