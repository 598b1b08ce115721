"""Quota checks: whether a tenant may hold what it holds now plus what it asks for.

Call `check` inside the store transaction that records the new thing, with the usage read in that same
transaction: the store's writer lock then makes "read usage, check, insert" one step, so two concurrent
creates can never both fit into the last slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from isola.errors import QuotaExceededError
from isola.platform.records import Tenant, Usage

QUOTAS = ("instances", "vcpus", "memory_mib", "disk_gib", "networks", "leases")
"""The quotas a tenant has: `Tenant.max_<name>` bounds `Usage.<name>`; None means unlimited."""


@dataclass(frozen=True)
class Delta:
    """What a change adds to a tenant's holdings (negative for what a resize gives back)."""

    instances: int = 0
    vcpus: int = 0
    memory_mib: int = 0
    disk_gib: int = 0
    networks: int = 0
    leases: int = 0


def check(tenant: Tenant, usage: Usage, delta: Delta) -> None:
    """QuotaExceededError naming the first quota `delta` would break; quotas that `delta` does not grow are
    not checked, so a tenant over a lowered quota can still shrink."""
    for name in QUOTAS:
        limit: int | None = getattr(tenant, f"max_{name}")
        wanted: int = getattr(delta, name)
        if limit is None or wanted <= 0:
            continue
        held: int = getattr(usage, name)
        if held + wanted > limit:
            raise QuotaExceededError(
                f"tenant '{tenant.name}' quota {name}: holds {held}, asks {wanted} more, may hold {limit}",
                hint="delete something first, or ask an admin to raise the quota",
            )
