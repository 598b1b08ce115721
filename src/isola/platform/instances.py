"""Instances: the platform's side of every guest, driven only through the `Engine` interface.

A create is three steps, so a crash between any two leaves something reconcile can finish or undo:

1. one store transaction: the tenant's quota, the scheduler's choice of host, the row in state `creating`
   (quota and capacity are read and checked in the transaction that inserts, so concurrent creates queue);
2. the engine creates the guest under the instance's id;
3. one transaction records the engine id and state `created`.

A delete marks the row `deleting`, has the engine delete the guest, then removes the row. Engine calls never
run inside a transaction: they can take seconds (a VM starting), and the store has one writer.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from isola.engine import (
    Engine,
    ExecResult,
    InstanceSpec,
    KeepsLog,
    Kind,
    Resources,
    State,
    Stats,
    Status,
    engine_for,
)
from isola.errors import ConflictError, InvalidSpecError, IsolaError, NotFoundError, UnsupportedError
from isola.platform import hosts as host_views
from isola.platform.access import Caller
from isola.platform.networks import Networks
from isola.platform.quotas import Delta, check
from isola.platform.records import Instance, Tenant
from isola.platform.repos import Repos
from isola.platform.scheduler.filters import capacity
from isola.platform.scheduler.model import Decision, Policy, Request, Selector
from isola.platform.scheduler.scheduler import place

LOG_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class CreateRequest:
    """An instance to create: the engine's spec plus what only the platform knows. `tenant` (id or name) is
    for an admin creating on a tenant's behalf; a tenant creates for itself."""

    spec: InstanceSpec
    labels: Mapping[str, str] = field(default_factory=dict)
    affinity: tuple[Selector, ...] = ()
    anti_affinity: tuple[Selector, ...] = ()
    tenant: str | None = None


class Engines:
    """One engine object per kind, made on first use (`engine_for` imports the engine's module)."""

    def __init__(self) -> None:
        self._made: dict[Kind, Engine] = {}

    def __call__(self, kind: str) -> Engine:
        k = Kind(kind)
        if k not in self._made:
            self._made[k] = engine_for(k)
        return self._made[k]


class Instances:
    def __init__(self, repos: Repos, engines: Engines, policy: Policy) -> None:
        self.repos = repos
        self.engines = engines
        self.policy = policy
        self.networks = Networks(repos)

    # -- reading -----------------------------------------------------------------------------------------------

    def list(self, caller: Caller, tenant: str | None = None) -> builtins.list[Instance]:
        """The caller's instances (an admin's: everyone's, or one tenant's)."""
        if caller.tenant_id is not None:
            return self.repos.instances.list(tenant_id=caller.tenant_id)
        if tenant is not None:
            return self.repos.instances.list(tenant_id=self.tenant(caller, tenant).id)
        return self.repos.instances.list()

    def get(self, caller: Caller, ref: str) -> Instance:
        """By id, else by name among the caller's (an admin's: among all, if the name is unambiguous)."""
        with self.repos.store.snapshot():
            found = self.repos.instances.list(id=ref)
            if not found or not caller.may_see(found[0].tenant_id):
                found = (
                    self.repos.instances.list(name=ref)
                    if caller.is_admin
                    else self.repos.instances.list(tenant_id=caller.tenant_id, name=ref)
                )
        if not found:
            raise NotFoundError(f"instance '{ref}' does not exist")
        if len(found) > 1:
            raise ConflictError(f"{len(found)} tenants have an instance '{ref}'", hint="name it by its id")
        return found[0]

    def decide(self, caller: Caller, wanted: CreateRequest) -> Decision:
        """Where the scheduler would place `wanted` now, and why not elsewhere (`isola schedule --dry-run`)."""
        tenant = self._owner(caller, wanted.tenant)
        with self.repos.store.snapshot() as conn:
            return place(self._request(tenant, wanted), host_views.views(conn), self.policy)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def create(self, caller: Caller, wanted: CreateRequest) -> Instance:
        spec = wanted.spec
        engine = self.engines(spec.kind.value)  # a kind without an engine is refused before anything is stored
        if spec.networks and spec.kind is not Kind.METAL:
            raise InvalidSpecError(f"a {spec.kind.value} instance attaches to no network yet", field="networks")
        with self.repos.store.transaction() as conn:
            tenant = self._owner(caller, wanted.tenant)
            networks = [self.networks.get(Caller(tenant.id), name) for name in spec.networks]
            res = spec.resources
            check(
                tenant,
                self.repos.tenants.usage(tenant.id),
                Delta(instances=1, vcpus=res.vcpus, memory_mib=res.memory_mib, disk_gib=res.disk_gib),
            )
            decision = place(self._request(tenant, wanted), host_views.views(conn), self.policy)
            if decision.chosen is None:
                raise _unplaceable(spec, decision)
            host = self.repos.hosts.get_by_name(decision.chosen)
            instance = self.repos.instances.add(
                Instance(
                    name=spec.name,
                    tenant_id=tenant.id,
                    kind=spec.kind.value,
                    mode=spec.mode.value if spec.mode else None,
                    vcpus=res.vcpus,
                    memory_mib=res.memory_mib,
                    disk_gib=res.disk_gib,
                    host_id=host.id,
                    spec=_spec_doc(spec),
                    labels=dict(wanted.labels),
                )
            )
        try:
            # The engine starts the guest in the namespaces the platform wired to the networks (as CNI does).
            joined = tuple(self.networks.attach(instance.id, network) for network in networks)
            status = engine.create(instance.id, replace(spec, networks=joined))
        except BaseException:
            self.networks.detach(instance.id)
            self.repos.instances.delete(instance.id)
            raise
        return self.repos.instances.update(instance.id, engine_id=instance.id, state=status.state.value)

    def start(self, caller: Caller, ref: str) -> Instance:
        instance, engine = self._ready(caller, ref)
        return self._record(instance, engine.start(self._engine_id(instance)))

    def stop(self, caller: Caller, ref: str, timeout_s: float) -> Instance:
        instance, engine = self._ready(caller, ref)
        return self._record(instance, engine.stop(self._engine_id(instance), timeout_s))

    def kill(self, caller: Caller, ref: str, signal: int) -> Instance:
        instance, engine = self._ready(caller, ref)
        engine.kill(self._engine_id(instance), signal)
        return self._record(instance, engine.state(self._engine_id(instance)))

    def state(self, caller: Caller, ref: str) -> Instance:
        """The instance with its state as the engine sees it now (and the record brought up to date)."""
        instance = self.get(caller, ref)
        if instance.engine_id is None or instance.state == "deleting":
            return instance
        return self.refresh(instance)

    def refresh(self, instance: Instance) -> Instance:
        """Ask the engine; a guest the engine no longer knows has failed."""
        try:
            status = self.engines(instance.kind).state(self._engine_id(instance))
        except NotFoundError:
            return self.repos.instances.update(instance.id, state="failed")
        return self._record(instance, status)

    def delete(self, caller: Caller, ref: str, force: bool) -> None:
        """Delete; a running instance only with `force`. Whether it runs is what the engine's `state` says: a
        guest that has ended may keep its monitor a moment longer (closing the console), which an engine's
        delete can still count as running, so for an ended guest the platform deletes with force."""
        instance = self.get(caller, ref)
        if instance.state == "creating":
            raise ConflictError(f"instance '{instance.name}' is still being created")
        engine = self.engines(instance.kind)
        if not force and instance.engine_id is not None:
            try:
                force = engine.state(instance.engine_id).state not in (State.RUNNING, State.PAUSED)
            except NotFoundError:
                force = True
            if not force:
                raise ConflictError(f"instance '{instance.name}' is running: stop it first, or delete with force")
        self.repos.instances.update(instance.id, state="deleting")
        try:
            self.finish_delete(instance, engine, force=force)
        except BaseException:
            self.repos.instances.update(instance.id, state=instance.state)
            raise

    def finish_delete(self, instance: Instance, engine: Engine, *, force: bool) -> None:
        """The engine's half of a delete, then the row; a guest the engine no longer knows is already gone."""
        if instance.engine_id is not None:
            with contextlib.suppress(NotFoundError):
                engine.delete(instance.engine_id, force=force)
        self.networks.detach(instance.id)
        self.repos.instances.delete(instance.id)

    def recreate(self, before: Instance) -> Instance:
        """Re-create a guest from its record, after its row was moved to another host in state `creating`: the old
        guest is deleted, a new one created from the stored spec, and started if `before` was running. A failure
        leaves the instance `failed`, which the tenant can delete."""
        engine = self.engines(before.kind)
        try:
            if before.engine_id is not None:
                with contextlib.suppress(NotFoundError):
                    engine.delete(before.engine_id, force=True)
            status = engine.create(before.id, InstanceSpec.from_dict(dict(before.spec)))
            if before.state == "running":
                status = engine.start(before.id)
        except IsolaError:  # the engine id is recorded either way: deleting a guest it does not know is no error
            return self.repos.instances.update(before.id, engine_id=before.id, state="failed")
        return self.repos.instances.update(before.id, engine_id=before.id, state=status.state.value)

    def resize(self, caller: Caller, ref: str, resources: Resources) -> Instance:
        """Quota and the host's room are checked and the new size recorded in one transaction; if the engine
        then refuses, the old size is put back."""
        resources.validate()
        instance, engine = self._ready(caller, ref)
        with self.repos.store.transaction() as conn:
            tenant = self.repos.tenants.get(instance.tenant_id)
            delta = Delta(
                vcpus=resources.vcpus - instance.vcpus,
                memory_mib=resources.memory_mib - instance.memory_mib,
                disk_gib=resources.disk_gib - instance.disk_gib,
            )
            check(tenant, self.repos.tenants.usage(tenant.id), delta)
            for view in host_views.views(conn):
                if view.id == instance.host_id:
                    grown = Request(
                        tenant.id, instance.kind, instance.mode, max(delta.vcpus, 0), max(delta.memory_mib, 0),
                        max(delta.disk_gib, 0),
                    )  # fmt: skip
                    reason = capacity(view, grown, self.policy)
                    if reason is not None:
                        raise ConflictError(f"host '{view.name}' has no room for the new size: {reason}")
            spec = {**instance.spec, "resources": _resources_doc(resources)}
            self.repos.instances.update(
                instance.id,
                vcpus=resources.vcpus,
                memory_mib=resources.memory_mib,
                disk_gib=resources.disk_gib,
                spec=spec,
            )
        try:
            engine.resize(self._engine_id(instance), resources)
        except BaseException:
            self.repos.instances.update(
                instance.id,
                vcpus=instance.vcpus,
                memory_mib=instance.memory_mib,
                disk_gib=instance.disk_gib,
                spec=instance.spec,
            )
            raise
        return self.repos.instances.get(instance.id)

    # -- talking to the guest ----------------------------------------------------------------------------------

    def logs(self, caller: Caller, ref: str, tail_bytes: int = LOG_TAIL_BYTES) -> bytes:
        """The end of what the guest wrote to its console."""
        instance, engine = self._ready(caller, ref)
        if not isinstance(engine, KeepsLog):
            raise UnsupportedError(f"the {instance.kind} engine keeps no console log")
        path = engine.log(self._engine_id(instance))
        try:
            with open(path, "rb") as log:
                size = log.seek(0, 2)
                log.seek(max(0, size - tail_bytes))
                return log.read()
        except FileNotFoundError:
            return b""

    def stats(self, caller: Caller, ref: str) -> Stats:
        instance, engine = self._ready(caller, ref)
        return engine.stats(self._engine_id(instance))

    def exec(self, caller: Caller, ref: str, argv: builtins.list[str], env: Mapping[str, str]) -> ExecResult:
        instance, engine = self._ready(caller, ref)
        return engine.exec(self._engine_id(instance), argv, env)

    def console(self, caller: Caller, ref: str) -> str:
        """The unix socket carrying the guest's console."""
        instance, engine = self._ready(caller, ref)
        return engine.console(self._engine_id(instance))

    # -- helpers -----------------------------------------------------------------------------------------------

    def _ready(self, caller: Caller, ref: str) -> tuple[Instance, Engine]:
        instance = self.get(caller, ref)
        if instance.state in ("creating", "deleting"):
            raise ConflictError(f"instance '{instance.name}' is {instance.state}")
        return instance, self.engines(instance.kind)

    @staticmethod
    def _engine_id(instance: Instance) -> str:
        if instance.engine_id is None:
            raise ConflictError(f"instance '{instance.name}' has not reached its engine")
        return instance.engine_id

    def _record(self, instance: Instance, status: Status) -> Instance:
        if status.state.value == instance.state:
            return instance
        return self.repos.instances.update(instance.id, state=status.state.value)

    def tenant(self, caller: Caller, ref: str) -> Tenant:
        """A tenant by id or name, as `caller` may see it."""
        with self.repos.store.snapshot():
            found = self.repos.tenants.list(id=ref) or self.repos.tenants.list(name=ref)
        if not found or not caller.may_see(found[0].id):
            raise NotFoundError(f"tenant '{ref}' does not exist")
        return found[0]

    def _owner(self, caller: Caller, ref: str | None) -> Tenant:
        if caller.tenant_id is not None:
            own = self.repos.tenants.get(caller.tenant_id)
            if ref is not None and ref not in (own.id, own.name):
                raise NotFoundError(f"tenant '{ref}' does not exist")
            return own
        if ref is None:
            raise InvalidSpecError("is required when an admin creates an instance: whose is it?", field="tenant")
        return self.tenant(caller, ref)

    @staticmethod
    def _request(tenant: Tenant, wanted: CreateRequest) -> Request:
        spec = wanted.spec
        return Request(
            tenant_id=tenant.id,
            kind=spec.kind.value,
            mode=spec.mode.value if spec.mode else None,
            vcpus=spec.resources.vcpus,
            memory_mib=spec.resources.memory_mib,
            disk_gib=spec.resources.disk_gib,
            affinity=wanted.affinity,
            anti_affinity=wanted.anti_affinity,
        )


def _unplaceable(spec: InstanceSpec, decision: Decision) -> ConflictError | UnsupportedError:
    reasons = "; ".join(f"{host}: {why}" for host, why in decision.rejected.items()) or "no host is registered"
    wanted = f"{spec.kind.value}/{spec.mode.value}" if spec.mode else spec.kind.value
    if all(why.startswith("does not run") for why in decision.rejected.values()):
        return UnsupportedError(f"no host runs {wanted}: {reasons}")
    return ConflictError(f"no host can take it now: {reasons}")


def _resources_doc(resources: Resources) -> dict[str, int]:
    return {"vcpus": resources.vcpus, "memory_mib": resources.memory_mib, "disk_gib": resources.disk_gib}


def _spec_doc(spec: InstanceSpec) -> dict[str, Any]:
    """The spec as `InstanceSpec.from_dict` reads it back."""
    return {
        "name": spec.name,
        "kind": spec.kind.value,
        "mode": spec.mode.value if spec.mode else None,
        "resources": _resources_doc(spec.resources),
        "image": spec.image,
        "command": list(spec.command),
        "env": dict(spec.env),
        "networks": list(spec.networks),
    }
