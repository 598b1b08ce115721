"""Bare-metal leases: a whole host for one tenant, and cleaning before anyone else gets it back.

Ironic's vocabulary, on the store's `leases` table: a lease is `active` while the tenant holds the host (the
scheduler then places only that tenant's instances there), `cleaning` from release until the host is
verified empty of the tenant, then `released` (kept as history) — or `clean-failed`, which keeps the host
out of the shared pool until an admin releases it again and cleaning succeeds. Never silently shared.

Cleaning here deletes every instance the tenant has on the host, through its engine, with force, then asks
each engine that can (`Cleans`: the metal engine) to verify that nothing of those instances is left — no
process, no cgroup, no file — and to remove what is; finally it checks that no instance of the tenant is
recorded on the host. (Volumes join it when they land.)
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from isola.errors import ConflictError, InvalidSpecError, IsolaError, NotFoundError
from isola.platform.access import Caller
from isola.platform.instances import Instances
from isola.platform.quotas import Delta, check
from isola.platform.records import Host, Lease, utcnow
from isola.platform.repos import Repos

BLOCKING = ("active", "cleaning", "clean-failed")
"""Lease states that keep a host from the shared pool."""


@runtime_checkable
class Cleans(Protocol):
    """An engine that can verify, after its instances were deleted, that nothing of them is left on the host,
    removing what is; it answers what it could not remove, by instance id."""

    def clean(self, instance_ids: Sequence[str]) -> dict[str, str]: ...


@dataclass(frozen=True)
class Cleaning:
    """What cleaning did: the instances it deleted, and what it could not (empty when it succeeded)."""

    deleted: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


class Leases:
    def __init__(self, repos: Repos, instances: Instances) -> None:
        self.repos = repos
        self.instances = instances

    def lease(self, caller: Caller, host_ref: str, tenant_ref: str, until: datetime | None = None) -> Lease:
        """Give host `host_ref` to tenant `tenant_ref`. Refused while other tenants' instances are on it (they
        would have to move first) or while it is not back from a previous lease."""
        caller.require_admin("lease hosts")
        if until is not None and until.tzinfo is None:
            until = until.replace(tzinfo=UTC)  # a time without an offset is UTC, as the store keeps it
        if until is not None and until <= utcnow():
            raise InvalidSpecError("must be in the future", field="until")
        with self.repos.store.transaction() as conn:
            host = self._host(host_ref)
            tenant = self.instances.tenant(caller, tenant_ref)
            blocking = self.repos.leases.list(host_id=host.id, state=BLOCKING)
            if blocking:
                raise ConflictError(f"host '{host.name}' is not free: lease {blocking[0].id} is {blocking[0].state}")
            others = conn.execute(
                "SELECT count(*), count(DISTINCT tenant_id) FROM instances WHERE host_id = ? AND tenant_id != ?",
                (host.id, tenant.id),
            ).fetchone()
            if others[0]:
                raise ConflictError(
                    f"host '{host.name}' runs {others[0]} instances of {others[1]} other tenants",
                    hint="they must be deleted or moved first (--drain is not built yet)",
                )
            check(tenant, self.repos.tenants.usage(tenant.id), Delta(leases=1))
            return self.repos.leases.add(Lease(host_id=host.id, tenant_id=tenant.id, ends_at=until))

    def list(self, caller: Caller) -> builtins.list[Lease]:
        """The caller's leases, history included (an admin: everyone's)."""
        if caller.tenant_id is not None:
            return self.repos.leases.list(tenant_id=caller.tenant_id)
        return self.repos.leases.list()

    def get(self, caller: Caller, ref: str) -> Lease:
        """By lease id, or by host name/id for its blocking lease; another tenant's is not found."""
        with self.repos.store.snapshot():
            found = self.repos.leases.list(id=ref)
            if not found:
                hosts = self.repos.hosts.list(id=ref) or self.repos.hosts.list(name=ref)
                if hosts:
                    found = self.repos.leases.list(host_id=hosts[0].id, state=BLOCKING)
        if not found or not caller.may_see(found[0].tenant_id):
            raise NotFoundError(f"lease '{ref}' does not exist")
        return found[0]

    def release(self, caller: Caller, ref: str) -> tuple[Lease, Cleaning]:
        """End the lease and clean the host; `clean-failed` (with the reasons) when something is left.
        A tenant may release its own lease; an admin any, and may retry a failed cleaning."""
        lease = self.get(caller, ref)
        if lease.state == "released":
            raise ConflictError(f"lease {lease.id} was released already")
        if lease.state == "cleaning":
            raise ConflictError(f"lease {lease.id} is being cleaned")
        if lease.state == "clean-failed":
            caller.require_admin("retry cleaning")
        lease = self.repos.leases.update(lease.id, state="cleaning", released_at=lease.released_at or utcnow())
        cleaning = self.clean(lease)
        state = "clean-failed" if cleaning.failures else "released"
        return self.repos.leases.update(lease.id, state=state), cleaning

    def clean(self, lease: Lease) -> Cleaning:
        """Delete the tenant's instances on the host, have their engines verify nothing of them is left, then
        check that none is recorded."""
        result = Cleaning()
        deleted: dict[str, builtins.list[str]] = {}
        for instance in self.repos.instances.list(host_id=lease.host_id, tenant_id=lease.tenant_id):
            try:
                self.instances.finish_delete(instance, self.instances.engines(instance.kind), force=True)
                result.deleted.append(instance.id)
                deleted.setdefault(instance.kind, []).append(instance.engine_id or instance.id)
            except IsolaError as err:
                result.failures[instance.id] = err.message
        for kind, engine_ids in deleted.items():
            engine = self.instances.engines(kind)
            if isinstance(engine, Cleans):
                try:
                    result.failures.update(engine.clean(engine_ids))
                except IsolaError as err:
                    result.failures.update(dict.fromkeys(engine_ids, err.message))
        for instance in self.repos.instances.list(host_id=lease.host_id, tenant_id=lease.tenant_id):
            result.failures.setdefault(instance.id, "still recorded on the host after cleaning")
        return result

    def _host(self, ref: str) -> Host:
        found = self.repos.hosts.list(id=ref) or self.repos.hosts.list(name=ref)
        if not found:
            raise NotFoundError(f"host '{ref}' does not exist")
        return found[0]
