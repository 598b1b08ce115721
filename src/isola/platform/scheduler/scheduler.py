"""The reference scheduler: every filter on every host, then the weighers, with a reason for each refusal.

This is the scheduler the daemon runs on its few hosts, and the definition the fast index
(`isola.platform.scheduler.index`) must agree with; it is written for clarity, not speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from isola.platform.scheduler.filters import FILTERS
from isola.platform.scheduler.model import Candidate, Decision, HostView, Policy, Request
from isola.platform.scheduler.weighers import weigh


def applicable_affinity(request: Request, hosts: Sequence[HostView]) -> Request:
    """Drop affinity selectors that match no instance of the tenant anywhere: the first instance of a group
    may go anywhere, the next ones follow it."""
    if not request.affinity:
        return request
    kept = tuple(
        selector
        for selector in request.affinity
        if any(tenant == request.tenant_id and selector.matches(labels) for h in hosts for tenant, labels in h.labels)
    )
    return replace(request, affinity=kept)


def place(request: Request, hosts: Sequence[HostView], policy: Policy) -> Decision:
    """Filter, weigh and choose; `hosts` in a stable order (ties go to the earlier host)."""
    request = applicable_affinity(request, hosts)
    rejected: dict[str, str] = {}
    passed: list[tuple[float, int, HostView]] = []
    for position, host in enumerate(hosts):
        for check in FILTERS:
            reason = check(host, request, policy)
            if reason is not None:
                rejected[host.name] = reason
                break
        else:
            passed.append((weigh(host, policy), position, host))
    passed.sort(key=lambda item: (-item[0], item[1]))
    candidates = tuple(Candidate(host.name, value) for value, _, host in passed)
    return Decision(candidates[0].host if candidates else None, candidates, rejected)
