"""The API's request and response bodies, as pydantic models: they are the OpenAPI document's schemas.

Request bodies forbid unknown fields and are strict (a string is not a number), so a typo is a 422 naming the
field instead of a silently ignored option. Semantic checks (a name's characters, a vm's mode) stay in
`InstanceSpec.from_dict`, which the create route calls, so the CLI, the API and the engines share one set of
rules and messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Error(BaseModel):
    """Every error answer. `type` is the isola error class (`NotFoundError`, …); `field` names the part of
    the request that is wrong, for validation errors."""

    error: str
    type: str
    field: str | None = None
    hint: str | None = None


class System(BaseModel):
    version: str
    pid: int
    host: str
    host_id: str
    socket: str
    store: str
    engines: list[str]


# -- tenants ---------------------------------------------------------------------------------------------------


class Quotas(Body):
    """null (or absent, at creation) is unlimited."""

    instances: int | None = Field(default=None, ge=0)
    vcpus: int | None = Field(default=None, ge=0)
    memory_mib: int | None = Field(default=None, ge=0)
    disk_gib: int | None = Field(default=None, ge=0)
    networks: int | None = Field(default=None, ge=0)
    leases: int | None = Field(default=None, ge=0)


class TenantCreate(Body):
    name: str
    quotas: Quotas = Field(default_factory=Quotas)


class UsageOut(BaseModel):
    instances: int
    vcpus: int
    memory_mib: int
    disk_gib: int
    volume_gib: int
    networks: int
    leases: int


class TenantOut(BaseModel):
    id: str
    name: str
    quotas: dict[str, int | None]
    created_at: datetime
    usage: UsageOut | None = None


class TenantCreated(BaseModel):
    """The token is shown this once; the daemon keeps only its hash."""

    tenant: TenantOut
    token: str


class Token(BaseModel):
    token: str


# -- instances -------------------------------------------------------------------------------------------------


class ResourcesIn(Body):
    vcpus: int = 1
    memory_mib: int = 256
    disk_gib: int = 0


class InstanceCreate(Body):
    """An instance: the engine's spec (`name` … `networks`), its labels and placement rules, whose it is
    (`tenant`, for an admin), and whether to start it at once."""

    name: str
    kind: Literal["emulated", "vm", "container", "metal"]
    mode: Literal["kernel", "process"] | None = None
    resources: ResourcesIn = Field(default_factory=ResourcesIn)
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    networks: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    affinity: list[str] = Field(default_factory=list, description="key=value: go where such an instance is")
    anti_affinity: list[str] = Field(default_factory=list, description="key=value: avoid hosts with one")
    tenant: str | None = Field(default=None, description="id or name; an admin must say, a tenant may omit")
    start: bool = False


class ResourcesOut(BaseModel):
    vcpus: int
    memory_mib: int
    disk_gib: int


class InstanceOut(BaseModel):
    id: str
    name: str
    tenant_id: str
    kind: str
    mode: str | None
    state: str
    resources: ResourcesOut
    host_id: str | None
    engine_id: str | None
    labels: dict[str, str]
    image: str | None
    command: list[str]
    created_at: datetime
    updated_at: datetime


class Stop(Body):
    timeout_s: float = Field(default=10.0, ge=0, le=600)


class Kill(Body):
    signal: int = Field(default=9, ge=1, le=64)


class Resize(Body):
    """Absent fields keep their value."""

    vcpus: int | None = None
    memory_mib: int | None = None
    disk_gib: int | None = None


class Exec(Body):
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)


class ExecOut(BaseModel):
    """Output as base64: a program's bytes need not be text."""

    exit_code: int
    stdout_base64: str
    stderr_base64: str


class Logs(BaseModel):
    """The end of the console log, as base64."""

    data_base64: str


class StatsOut(BaseModel):
    cpu_ns: int
    memory_bytes: int
    io_read_bytes: int
    io_write_bytes: int
    engine: dict[str, float]


# -- leases ----------------------------------------------------------------------------------------------------


class LeaseCreate(Body):
    host: str = Field(description="id or name")
    tenant: str = Field(description="id or name")
    until: datetime | None = Field(
        default=None, strict=False, description="ISO 8601; when it ends: then it is released, with cleaning"
    )
    drain: bool = Field(
        default=False, description="move other tenants' instances to other hosts (all, or the lease is refused)"
    )


class LeaseOut(BaseModel):
    id: str
    host_id: str
    tenant_id: str
    state: str
    starts_at: datetime
    ends_at: datetime | None
    released_at: datetime | None


class Released(BaseModel):
    """The lease after release, and what cleaning did: `failures` empty means the host is clean."""

    lease: LeaseOut
    deleted: list[str]
    failures: dict[str, str]


# -- events ----------------------------------------------------------------------------------------------------


class EventOut(BaseModel):
    """One line of `GET /v1/events`: `kind` is `instance.<state>`, `instance.deleted` or `lease.<state>`."""

    id: int
    at: datetime
    tenant_id: str
    kind: str
    object_id: str


# -- hosts and the scheduler -----------------------------------------------------------------------------------


class HostOut(BaseModel):
    id: str
    name: str
    state: str
    offers: list[str]
    vcpus: int
    memory_mib: int
    disk_gib: int
    used_vcpus: int
    used_memory_mib: int
    used_disk_gib: int
    instances: int
    leased_to: str | None


class CandidateOut(BaseModel):
    host: str
    score: float


class DecisionOut(BaseModel):
    chosen: str | None
    candidates: list[CandidateOut]
    rejected: dict[str, str]
