"""Tenant networks: create, list, show, delete (see `isola.platform.networks`)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from isola.platform.daemon.models import Body
from isola.platform.daemon.routes.deps import CallerDep, PlatformDep
from isola.platform.networks import Networks
from isola.platform.records import Network

router = APIRouter(tags=["networks"])


class NetworkCreate(Body):
    name: str = Field(description="unique among the tenant's networks")
    subnet: str | None = Field(default=None, description="IPv4 CIDR, /8 to /29 (default 10.88.0.0/24)")
    tenant: str | None = Field(default=None, description="whose network (an admin must say; a tenant: itself)")


class NetworkOut(BaseModel):
    id: str
    name: str
    tenant_id: str
    subnet: str
    namespace: str
    attached: dict[str, str] = Field(description="instance id -> its address on this network")
    created_at: datetime


def network_out(networks: Networks, network: Network) -> NetworkOut:
    return NetworkOut(
        id=network.id,
        name=network.name,
        tenant_id=network.tenant_id,
        subnet=network.cidr,
        namespace=network.bridge,
        attached=networks.addresses(network),
        created_at=network.created_at,
    )


@router.post("/v1/networks", operation_id="createNetwork", summary="Create an isolated network", status_code=201)
def create_network(body: NetworkCreate, platform: PlatformDep, caller: CallerDep) -> NetworkOut:
    networks = platform.instances.networks
    return network_out(networks, networks.create(caller, body.name, body.subnet, body.tenant))


@router.get("/v1/networks", operation_id="listNetworks", summary="The caller's networks")
def list_networks(platform: PlatformDep, caller: CallerDep) -> list[NetworkOut]:
    networks = platform.instances.networks
    return [network_out(networks, n) for n in networks.list(caller)]


@router.get("/v1/networks/{ref}", operation_id="getNetwork", summary="A network by id or name")
def get_network(ref: str, platform: PlatformDep, caller: CallerDep) -> NetworkOut:
    networks = platform.instances.networks
    return network_out(networks, networks.get(caller, ref))


@router.delete("/v1/networks/{ref}", operation_id="deleteNetwork", summary="Delete a network nothing is attached to",
               status_code=204, response_class=Response)  # fmt: skip
def delete_network(ref: str, platform: PlatformDep, caller: CallerDep) -> None:
    platform.instances.networks.delete(caller, ref)
