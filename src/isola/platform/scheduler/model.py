"""What the scheduler reasons about: hosts as it sees them, the request, the policy, and its decision.

These are plain values with no tie to the store, so the filters and weighers can be tested (and benchmarked
on 10,000 simulated hosts) without a database or root. The daemon builds them from the store inside the
transaction that records the placement, which is what makes a placement and its capacity check one step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from isola.errors import InvalidSpecError

Strategy = Literal["spread", "pack"]


def offer(kind: str, mode: str | None) -> str:
    """How a host names one thing it can run: `vm/process`, `vm/kernel`, `container`, …"""
    return f"{kind}/{mode}" if mode else kind


@dataclass(frozen=True)
class Selector:
    """`key=value` over instance labels: what affinity and anti-affinity rules match."""

    key: str
    value: str

    @classmethod
    def parse(cls, text: str, field: str) -> Selector:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise InvalidSpecError(f"{text!r} is not key=value", field=field)
        return cls(key, value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) == self.value

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


@dataclass(frozen=True)
class Request:
    """One instance to place. `affinity`: every selector must match an instance of the same tenant on the
    host (a selector nothing matches yet constrains nothing: the first of a group goes anywhere);
    `anti_affinity`: no instance of the same tenant on the host may match any selector."""

    tenant_id: str
    kind: str
    mode: str | None
    vcpus: int
    memory_mib: int
    disk_gib: int = 0
    affinity: tuple[Selector, ...] = ()
    anti_affinity: tuple[Selector, ...] = ()

    @property
    def offer(self) -> str:
        return offer(self.kind, self.mode)


@dataclass(frozen=True)
class HostView:
    """A host with what is placed on it now. `labels` holds one (tenant id, labels) pair per instance on the
    host, for the affinity rules; `leased_to` is the tenant whose lease excludes everyone else."""

    id: str
    name: str
    state: str
    offers: frozenset[str]
    vcpus: int
    memory_mib: int
    disk_gib: int
    used_vcpus: int = 0
    used_memory_mib: int = 0
    used_disk_gib: int = 0
    instances: int = 0
    leased_to: str | None = None
    labels: tuple[tuple[str, Mapping[str, str]], ...] = ()


@dataclass(frozen=True)
class Policy:
    """Overcommit ratios per resource (Nova's allocation ratios) and the weighers' multipliers.

    `spread` puts the next instance where the most is free; `pack` where the least is free that still fits, to
    keep whole hosts empty. `load` weighs the number of instances per schedulable vCPU against the host.
    """

    cpu_ratio: float = 4.0
    memory_ratio: float = 1.0
    disk_ratio: float = 1.0
    strategy: Strategy = "spread"
    cpu_weight: float = 1.0
    memory_weight: float = 1.0
    disk_weight: float = 0.0
    load_weight: float = 0.5

    def validate(self) -> None:
        for name in ("cpu_ratio", "memory_ratio", "disk_ratio"):
            if getattr(self, name) <= 0:
                raise InvalidSpecError("must be positive", field=name)
        if self.strategy not in ("spread", "pack"):
            raise InvalidSpecError("must be spread or pack", field="strategy")


@dataclass(frozen=True)
class Candidate:
    host: str
    score: float


@dataclass(frozen=True)
class Decision:
    """The chosen host (None when nothing passed), every host that passed with its score (best first), and
    why each other host was filtered out, by host name — what `isola schedule --dry-run` shows."""

    chosen: str | None
    candidates: tuple[Candidate, ...] = ()
    rejected: Mapping[str, str] = field(default_factory=dict)
