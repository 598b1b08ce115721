"""The typed rows of the state store: one frozen dataclass per table, field names equal to column names.

Enumerated columns are `Literal` types so mypy catches a misspelt state in platform code; `repos` reads the
same `Literal`s to reject a bad value with a clear message before SQLite's CHECK constraint (the backstop)
sees it. The migrations spell the allowed values out in SQL on purpose: a migration is history and must not
change when these types do.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Kind = Literal["emulated", "vm", "container", "metal"]
VmMode = Literal["kernel", "process"]
InstanceState = Literal["creating", "created", "running", "paused", "stopped", "failed", "deleting"]
HostState = Literal["ready", "draining", "maintenance", "offline"]
LeaseState = Literal["active", "cleaning", "clean-failed", "released"]
ImageKind = Literal["oci", "kernel", "initramfs", "disk", "elf"]
Json = Mapping[str, Any]


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Record:
    """Every row has a TEXT id and a creation time; both default so callers only say what is particular."""

    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, kw_only=True)
class Host(Record):
    name: str
    address: str
    kinds: tuple[Kind, ...]
    vcpus: int
    memory_mib: int
    disk_gib: int
    state: HostState = "ready"
    facts: Json = field(default_factory=dict)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, kw_only=True)
class Tenant(Record):
    """A `max_*` of None means unlimited; the platform decides what a new tenant gets."""

    name: str
    token_hash: str | None = None
    max_instances: int | None = None
    max_vcpus: int | None = None
    max_memory_mib: int | None = None
    max_disk_gib: int | None = None
    max_networks: int | None = None
    max_leases: int | None = None
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, kw_only=True)
class Instance(Record):
    """`monitor_start` is the monitor's start time in clock ticks since boot (/proc/PID/stat field 22), so
    reconcile can tell our monitor from an unrelated process that reused its pid. `engine_id` is None until the
    engine has created the guest; `labels` are what the scheduler's affinity rules match."""

    name: str
    tenant_id: str
    kind: Kind
    mode: VmMode | None = None
    state: InstanceState = "creating"
    vcpus: int
    memory_mib: int
    disk_gib: int = 0
    host_id: str | None = None
    image_id: str | None = None
    spec: Json = field(default_factory=dict)
    monitor_pid: int | None = None
    monitor_start: int | None = None
    updated_at: datetime = field(default_factory=utcnow)
    engine_id: str | None = None
    labels: Json = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Network(Record):
    name: str
    tenant_id: str
    cidr: str
    bridge: str
    vni: int | None = None


@dataclass(frozen=True, kw_only=True)
class Volume(Record):
    name: str
    tenant_id: str
    size_gib: int
    path: str
    instance_id: str | None = None
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, kw_only=True)
class Image(Record):
    digest: str
    ref: str
    kind: ImageKind
    size_bytes: int


@dataclass(frozen=True, kw_only=True)
class Lease(Record):
    """`released_at` is when the tenant lost the host (release or expiry), set from `cleaning` on."""

    host_id: str
    tenant_id: str
    state: LeaseState = "active"
    starts_at: datetime = field(default_factory=utcnow)
    ends_at: datetime | None = None
    released_at: datetime | None = None
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, kw_only=True)
class Attachment(Record):
    """An instance's port on a network; `ip` is None until the address is known."""

    instance_id: str
    network_id: str
    mac: str
    ip: str | None = None


@dataclass(frozen=True)
class Usage:
    """What a tenant holds now, in the units of its quotas. Instances in every state count, `deleting` and
    `failed` included, because they hold their host's resources until their row is gone."""

    instances: int
    vcpus: int
    memory_mib: int
    disk_gib: int
    volume_gib: int
    networks: int
    leases: int
