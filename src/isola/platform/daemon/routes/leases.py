"""Bare-metal leases: an admin leases a host to a tenant; release cleans it (see `isola.platform.leases`)."""

from __future__ import annotations

from fastapi import APIRouter

from isola.platform.daemon import models
from isola.platform.daemon.routes.deps import CallerDep, PlatformDep
from isola.platform.records import Lease

router = APIRouter(tags=["leases"])


def lease_out(lease: Lease) -> models.LeaseOut:
    return models.LeaseOut(
        id=lease.id,
        host_id=lease.host_id,
        tenant_id=lease.tenant_id,
        state=lease.state,
        starts_at=lease.starts_at,
        ends_at=lease.ends_at,
        released_at=lease.released_at,
    )


@router.post("/v1/leases", operation_id="createLease", summary="Lease a whole host to one tenant", status_code=201)
def create_lease(body: models.LeaseCreate, platform: PlatformDep, caller: CallerDep) -> models.LeaseOut:
    return lease_out(platform.leases.lease(caller, body.host, body.tenant, body.until, drain=body.drain))


@router.get("/v1/leases", operation_id="listLeases", summary="The caller's leases, history included")
def list_leases(platform: PlatformDep, caller: CallerDep) -> list[models.LeaseOut]:
    return [lease_out(lease) for lease in platform.leases.list(caller)]


@router.get("/v1/leases/{ref}", operation_id="getLease", summary="A lease by id, or a host's current one")
def get_lease(ref: str, platform: PlatformDep, caller: CallerDep) -> models.LeaseOut:
    return lease_out(platform.leases.get(caller, ref))


@router.post("/v1/leases/{ref}/release", operation_id="releaseLease", summary="End the lease and clean the host")
def release_lease(ref: str, platform: PlatformDep, caller: CallerDep) -> models.Released:
    lease, cleaning = platform.leases.release(caller, ref)
    return models.Released(lease=lease_out(lease), deleted=cleaning.deleted, failures=cleaning.failures)
