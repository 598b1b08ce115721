"""Tenants: creating them with a token, their quotas, and resolving the caller behind a token.

Only an admin creates, changes or deletes tenants; a tenant may read itself. A tenant is deleted only when it
holds nothing (the store's foreign keys refuse otherwise, naming what is left).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from isola.errors import InvalidSpecError, NotFoundError, PermissionDeniedError
from isola.platform.access import Caller
from isola.platform.quotas import QUOTAS
from isola.platform.records import Tenant, Usage
from isola.platform.repos import Repos
from isola.platform.tokens import new_token, token_hash


class Tenants:
    def __init__(self, repos: Repos) -> None:
        self.repos = repos

    def create(self, caller: Caller, name: str, quotas: Mapping[str, int | None]) -> tuple[Tenant, str]:
        """The new tenant and its token (shown this once: only its hash is kept)."""
        caller.require_admin("create tenants")
        token = new_token()
        tenant = Tenant(name=name, token_hash=token_hash(token), **_quota_fields(quotas))
        return self.repos.tenants.add(tenant), token

    def list(self, caller: Caller) -> list[Tenant]:
        if caller.tenant_id is not None:
            return [self.repos.tenants.get(caller.tenant_id)]
        return self.repos.tenants.list()

    def get(self, caller: Caller, ref: str) -> Tenant:
        """By id or name; another tenant's is not found."""
        with self.repos.store.snapshot():
            found = self.repos.tenants.list(id=ref) or self.repos.tenants.list(name=ref)
        if not found or not caller.may_see(found[0].id):
            raise NotFoundError(f"tenant '{ref}' does not exist")
        return found[0]

    def usage(self, caller: Caller, ref: str) -> Usage:
        return self.repos.tenants.usage(self.get(caller, ref).id)

    def set_quotas(self, caller: Caller, ref: str, quotas: Mapping[str, int | None]) -> Tenant:
        """Change the given quotas (None: unlimited); the others stay."""
        caller.require_admin("change quotas")
        with self.repos.store.transaction():
            tenant = self.get(caller, ref)
            return self.repos.tenants.update(tenant.id, **_quota_fields(quotas))

    def rotate_token(self, caller: Caller, ref: str) -> str:
        """A new token for the tenant; the old one stops working at once."""
        caller.require_admin("issue tokens")
        token = new_token()
        with self.repos.store.transaction():
            self.repos.tenants.update(self.get(caller, ref).id, token_hash=token_hash(token))
        return token

    def delete(self, caller: Caller, ref: str) -> None:
        caller.require_admin("delete tenants")
        with self.repos.store.transaction():
            self.repos.tenants.delete(self.get(caller, ref).id)

    def authenticate(self, token: str) -> Caller:
        """The tenant a bearer token belongs to."""
        found = self.repos.tenants.list(token_hash=token_hash(token))
        if not found:
            raise PermissionDeniedError("the token is not valid", hint="ask an admin for a new one")
        return Caller(found[0].id)


def _quota_fields(quotas: Mapping[str, int | None]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in quotas.items():
        if name not in QUOTAS:
            raise InvalidSpecError(f"unknown quota; quotas are {', '.join(QUOTAS)}", field=f"quotas.{name}")
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise InvalidSpecError("must be a whole number >= 0, or null for unlimited", field=f"quotas.{name}")
        fields[f"max_{name}"] = value
    return fields


def quotas_of(tenant: Tenant) -> dict[str, int | None]:
    return {name: getattr(tenant, f"max_{name}") for name in QUOTAS}


def tenant_doc(tenant: Tenant) -> dict[str, object]:
    """The tenant as the API shows it: never its token hash."""
    return {"id": tenant.id, "name": tenant.name, "quotas": quotas_of(tenant), "created_at": tenant.created_at}
