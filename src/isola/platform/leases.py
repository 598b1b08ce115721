"""Bare-metal leases: a whole host for one tenant, and cleaning before anyone else gets it back.

Ironic's vocabulary, on the store's `leases` table: a lease is `active` while the tenant holds the host (the
scheduler then places only that tenant's instances there), `cleaning` from release until the host is
verified empty of the tenant, then `released` (kept as history) — or `clean-failed`, which keeps the host
out of the shared pool until an admin releases it again and cleaning succeeds. Never silently shared.

Cleaning here deletes every instance the tenant has on the host, through its engine, with force, then asks
each engine that can (`Cleans`: the metal engine) to verify that nothing of those instances is left — no
process, no cgroup, no file — and to remove what is; finally it checks that no instance of the tenant is
recorded on the host. (Volumes join it when they land.) A lease with an end is released, cleaning included,
by `expire`, which the daemon runs at start and every few seconds.

A host where other tenants' instances run is leased only with `drain`: each of them is placed by the scheduler
on another host, all in the transaction that grants the lease — if one cannot go anywhere, nothing changes —
and then re-created there from its record (started again if it ran). Re-creating goes through this daemon's
engines, as every create does: the platform does not yet drive engines on other hosts.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from isola.errors import ConflictError, InvalidSpecError, IsolaError, NotFoundError
from isola.platform import hosts as host_views
from isola.platform.access import ADMIN, Caller
from isola.platform.instances import Instances
from isola.platform.quotas import Delta, check
from isola.platform.records import Host, Instance, Lease, Tenant, utcnow
from isola.platform.repos import Repos
from isola.platform.scheduler.model import HostView, Request
from isola.platform.scheduler.scheduler import place

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

    def lease(
        self, caller: Caller, host_ref: str, tenant_ref: str, until: datetime | None = None, *, drain: bool = False
    ) -> Lease:
        """Give host `host_ref` to tenant `tenant_ref`. Refused while it is not back from a previous lease, and
        while other tenants' instances are on it — unless `drain`, which moves them to other hosts (all of them,
        or the lease is refused and nothing changes)."""
        caller.require_admin("lease hosts")
        if until is not None and until.tzinfo is None:
            until = until.replace(tzinfo=UTC)  # a time without an offset is UTC, as the store keeps it
        if until is not None and until <= utcnow():
            raise InvalidSpecError("must be in the future", field="until")
        with self.repos.store.transaction():
            host = self._host(host_ref)
            tenant = self.instances.tenant(caller, tenant_ref)
            blocking = self.repos.leases.list(host_id=host.id, state=BLOCKING)
            if blocking:
                raise ConflictError(f"host '{host.name}' is not free: lease {blocking[0].id} is {blocking[0].state}")
            others = [i for i in self.repos.instances.list(host_id=host.id) if i.tenant_id != tenant.id]
            if others and not drain:
                raise ConflictError(
                    f"host '{host.name}' runs {len(others)} instances of other tenants: {self._names(others)}",
                    hint="lease with --drain to move them to other hosts, or delete them first",
                )
            check(tenant, self.repos.tenants.usage(tenant.id), Delta(leases=1))
            moves = self._plan_moves(host, tenant, others)
            for instance, target in moves:
                self.repos.instances.update(instance.id, host_id=target, state="creating", engine_id=None)
            lease = self.repos.leases.add(Lease(host_id=host.id, tenant_id=tenant.id, ends_at=until))
        for instance, _ in moves:
            self.instances.recreate(instance)
        return lease

    def _plan_moves(
        self, host: Host, tenant: Tenant, others: builtins.list[Instance]
    ) -> builtins.list[tuple[Instance, str]]:
        """Where the scheduler puts each of `others` once `host` is the tenant's: (instance, host id) pairs, or a
        ConflictError naming the first that fits nowhere. Call inside the lease's transaction."""
        with self.repos.store.snapshot() as conn:
            views = [
                dataclasses.replace(v, leased_to=tenant.id) if v.id == host.id else v for v in host_views.views(conn)
            ]
        moves = []
        for instance in others:
            if instance.state in ("creating", "deleting"):
                raise ConflictError(
                    f"cannot drain host '{host.name}': {self._names([instance])} is {instance.state}",
                    hint="try again in a moment",
                )
            if self.repos.attachments.list(instance_id=instance.id):
                raise ConflictError(
                    f"cannot drain host '{host.name}': {self._names([instance])} is attached to a network, "
                    "which cannot move yet"
                )
            wanted = Request(
                instance.tenant_id, instance.kind, instance.mode, instance.vcpus, instance.memory_mib, instance.disk_gib
            )
            decision = place(wanted, views, self.instances.policy)
            if decision.chosen is None:
                reasons = "; ".join(f"{name}: {why}" for name, why in decision.rejected.items())
                raise ConflictError(
                    f"cannot drain host '{host.name}': no other host can take {self._names([instance])} ({reasons})",
                    hint="nothing was changed",
                )
            views = [_placed(v, wanted) if v.name == decision.chosen else v for v in views]
            moves.append((instance, next(v.id for v in views if v.name == decision.chosen)))
        return moves

    def _names(self, instances: builtins.list[Instance]) -> str:
        """`tenant/instance, …`, for messages to the admin."""
        tenants = {t.id: t.name for t in self.repos.tenants.list(id=tuple({i.tenant_id for i in instances}))}
        return ", ".join(f"{tenants[i.tenant_id]}/{i.name}" for i in instances)

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
        found = self.get(caller, ref)
        with self.repos.store.transaction():  # re-read under the write lock: expiry may be releasing it now
            lease = self.repos.leases.get(found.id)
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

    def expire(self) -> builtins.list[tuple[Lease, Cleaning]]:
        """Release, with cleaning, every active lease whose end has passed; what each release did."""
        now = utcnow()
        done = []
        for lease in self.repos.leases.list(state="active"):
            if lease.ends_at is not None and lease.ends_at <= now:
                try:
                    done.append(self.release(ADMIN, lease.id))
                except ConflictError:
                    continue  # released by someone else meanwhile
        return done

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


def _placed(view: HostView, request: Request) -> HostView:
    """`view` with `request` placed on it, so the next placement of a drain sees it."""
    return dataclasses.replace(
        view,
        used_vcpus=view.used_vcpus + request.vcpus,
        used_memory_mib=view.used_memory_mib + request.memory_mib,
        used_disk_gib=view.used_disk_gib + request.disk_gib,
        instances=view.instances + 1,
    )
