"""Tenants: an admin creates, lists, changes and deletes them; a tenant sees itself."""

from __future__ import annotations

from fastapi import APIRouter, Response

from isola.platform.daemon import models
from isola.platform.daemon.routes.deps import CallerDep, PlatformDep
from isola.platform.records import Tenant, Usage
from isola.platform.tenants import quotas_of

router = APIRouter(tags=["tenants"])


def tenant_out(tenant: Tenant, usage: Usage | None = None) -> models.TenantOut:
    return models.TenantOut(
        id=tenant.id,
        name=tenant.name,
        quotas=quotas_of(tenant),
        created_at=tenant.created_at,
        usage=models.UsageOut(**usage.__dict__) if usage is not None else None,
    )


@router.post("/v1/tenants", operation_id="createTenant", summary="Create a tenant and its token", status_code=201)
def create_tenant(body: models.TenantCreate, platform: PlatformDep, caller: CallerDep) -> models.TenantCreated:
    tenant, token = platform.tenants.create(caller, body.name, body.quotas.model_dump(exclude_unset=True))
    return models.TenantCreated(tenant=tenant_out(tenant), token=token)


@router.get("/v1/tenants", operation_id="listTenants", summary="Every tenant (a tenant: itself)")
def list_tenants(platform: PlatformDep, caller: CallerDep) -> list[models.TenantOut]:
    return [tenant_out(t) for t in platform.tenants.list(caller)]


@router.get("/v1/tenants/{ref}", operation_id="getTenant", summary="One tenant by id or name, with its usage")
def get_tenant(ref: str, platform: PlatformDep, caller: CallerDep) -> models.TenantOut:
    tenant = platform.tenants.get(caller, ref)
    return tenant_out(tenant, platform.tenants.usage(caller, tenant.id))


@router.patch("/v1/tenants/{ref}/quotas", operation_id="setQuotas", summary="Change quotas (null: unlimited)")
def set_quotas(ref: str, body: models.Quotas, platform: PlatformDep, caller: CallerDep) -> models.TenantOut:
    return tenant_out(platform.tenants.set_quotas(caller, ref, body.model_dump(exclude_unset=True)))


@router.post("/v1/tenants/{ref}/token", operation_id="rotateToken", summary="A new token; the old one stops working")
def rotate_token(ref: str, platform: PlatformDep, caller: CallerDep) -> models.Token:
    return models.Token(token=platform.tenants.rotate_token(caller, ref))


@router.delete("/v1/tenants/{ref}", operation_id="deleteTenant", summary="Delete a tenant that holds nothing",
               status_code=204, response_class=Response)  # fmt: skip
def delete_tenant(ref: str, platform: PlatformDep, caller: CallerDep) -> None:
    platform.tenants.delete(caller, ref)
