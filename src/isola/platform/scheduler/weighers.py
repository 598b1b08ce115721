"""The weighers: one score per host that passed the filters; the highest wins, ties go to the host listed first.

As in Nova, the score is a sum of multiplier x normalised value. The values are the free fractions of vCPUs,
memory and disk (overcommit included) and the load (instances per schedulable vCPU, counted against the
host). `spread` uses the sum as it is, `pack` its negative, so one formula serves both and the fast index
can keep the score of each host without knowing about the request.
"""

from __future__ import annotations

from isola.platform.scheduler.filters import free
from isola.platform.scheduler.model import HostView, Policy


def score(
    policy: Policy,
    vcpus: int,
    memory_mib: int,
    disk_gib: int,
    used_vcpus: int,
    used_memory_mib: int,
    used_disk_gib: int,
    instances: int,
) -> float:
    """The score of a host from its numbers alone (the index calls this on every change of a host)."""
    total = 0.0
    for weight, capacity, ratio, used in (
        (policy.cpu_weight, vcpus, policy.cpu_ratio, used_vcpus),
        (policy.memory_weight, memory_mib, policy.memory_ratio, used_memory_mib),
        (policy.disk_weight, disk_gib, policy.disk_ratio, used_disk_gib),
    ):
        if weight and capacity:
            total += weight * free(capacity, ratio, used) / (capacity * ratio)
    if policy.load_weight and vcpus:
        total -= policy.load_weight * instances / (vcpus * policy.cpu_ratio)
    return total if policy.strategy == "spread" else -total


def weigh(host: HostView, policy: Policy) -> float:
    return score(
        policy,
        host.vcpus,
        host.memory_mib,
        host.disk_gib,
        host.used_vcpus,
        host.used_memory_mib,
        host.used_disk_gib,
        host.instances,
    )
