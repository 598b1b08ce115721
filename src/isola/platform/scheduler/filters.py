"""The filters: each says why a host cannot take a request, or None when it can.

They run in this order, cheapest and most decisive first, and the first refusal is the one reported, so
`--dry-run` gives each rejected host one reason. `free()` is the one capacity formula: the fast index
(`isola.platform.scheduler.index`) uses it too, so both agree to the last bit of a float.
"""

from __future__ import annotations

from collections.abc import Callable

from isola.platform.scheduler.model import HostView, Policy, Request

Filter = Callable[[HostView, Request, Policy], str | None]


def free(capacity: int, ratio: float, used: int) -> float:
    """What may still be allocated of one resource, overcommit included."""
    return capacity * ratio - used


def host_ready(host: HostView, request: Request, policy: Policy) -> str | None:
    return None if host.state == "ready" else f"host is {host.state}"


def lease(host: HostView, request: Request, policy: Policy) -> str | None:
    """A leased host takes its lessee's instances only (bare metal: no neighbour)."""
    if host.leased_to is not None and host.leased_to != request.tenant_id:
        return "leased to another tenant"
    return None


def kind(host: HostView, request: Request, policy: Policy) -> str | None:
    if request.offer in host.offers:
        return None
    offered = ", ".join(sorted(host.offers)) or "nothing"
    return f"does not run {request.offer} (offers {offered})"


def capacity(host: HostView, request: Request, policy: Policy) -> str | None:
    for what, wanted, total, ratio, used in (
        ("vcpus", request.vcpus, host.vcpus, policy.cpu_ratio, host.used_vcpus),
        ("memory_mib", request.memory_mib, host.memory_mib, policy.memory_ratio, host.used_memory_mib),
        ("disk_gib", request.disk_gib, host.disk_gib, policy.disk_ratio, host.used_disk_gib),
    ):
        left = free(total, ratio, used)
        if wanted > left:
            return f"{what}: {wanted} wanted, {max(left, 0):g} free of {total} x {ratio:g}"
    return None


def affinity(host: HostView, request: Request, policy: Policy) -> str | None:
    """Only the rules about the tenant's own instances; `applicable_affinity` has already dropped selectors
    that match nothing anywhere."""
    mine = [labels for tenant, labels in host.labels if tenant == request.tenant_id]
    for selector in request.affinity:
        if not any(selector.matches(labels) for labels in mine):
            return f"affinity: no instance {selector} here"
    for selector in request.anti_affinity:
        if any(selector.matches(labels) for labels in mine):
            return f"anti-affinity: instance {selector} here"
    return None


FILTERS: tuple[Filter, ...] = (host_ready, lease, kind, capacity, affinity)
