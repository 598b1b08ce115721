"""The fast scheduler: the same decisions as `scheduler.place`, without looking at every host.

`place` runs each filter on each host: fine for the daemon's few hosts, tens of placements/s on 10,000. Here
the filters become indexes:

- **kind/mode and leases** partition the hosts into pools keyed by (what they offer, who leases them); a
  request only searches the pools it may use.
- **capacity and the weighers** become one max segment tree per pool, over its hosts in their listed order:
  each node keeps the most free vCPUs, memory and disk of any host below it and the best score below it. A
  search is branch and bound: a subtree whose best free amounts cannot hold the request, or whose best score
  cannot beat the best host found so far, is skipped; the better child is searched first. A placement updates
  one leaf and its O(log n) ancestors.
- **affinity and anti-affinity** use a map from (tenant, label key, label value) to the hosts holding such
  instances: affinity turns the search into a check of those few hosts, anti-affinity into a set of leaves
  to skip.

Scores come from `weighers.score` and free amounts from `filters.free`, the functions the reference uses, so
both pick the same host, ties included (the host listed first wins); a test checks it on random clusters.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from isola.platform.scheduler.filters import free
from isola.platform.scheduler.model import HostView, Policy, Request, Selector
from isola.platform.scheduler.weighers import score

_NONE = float("-inf")
_LAST = 1 << 62


@dataclass
class _Tree:
    """A max segment tree over some hosts (global indexes `hosts`, ascending)."""

    hosts: list[int]
    size: int = 1
    free_vcpus: list[float] = field(default_factory=list)
    free_memory: list[float] = field(default_factory=list)
    free_disk: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)
    first: list[int] = field(default_factory=list)
    """The smallest global host index under each node: ties go to the host listed first."""

    def __post_init__(self) -> None:
        while self.size < len(self.hosts):
            self.size *= 2
        nodes = 2 * self.size
        self.free_vcpus, self.free_memory = [_NONE] * nodes, [_NONE] * nodes
        self.free_disk, self.best = [_NONE] * nodes, [_NONE] * nodes
        self.first = [_LAST] * nodes
        for position, host in enumerate(self.hosts):
            self.first[self.size + position] = host
        for node in range(self.size - 1, 0, -1):
            self.first[node] = min(self.first[2 * node], self.first[2 * node + 1])

    def update(self, position: int, vcpus: float, memory: float, disk: float, value: float) -> None:
        node = self.size + position
        fv, fm, fd, best = self.free_vcpus, self.free_memory, self.free_disk, self.best
        fv[node], fm[node], fd[node], best[node] = vcpus, memory, disk, value
        node //= 2
        while node:
            left, right = 2 * node, 2 * node + 1
            fv[node] = fv[left] if fv[left] > fv[right] else fv[right]
            fm[node] = fm[left] if fm[left] > fm[right] else fm[right]
            fd[node] = fd[left] if fd[left] > fd[right] else fd[right]
            best[node] = best[left] if best[left] > best[right] else best[right]
            node //= 2

    def search(self, vcpus: int, memory: int, disk: int, skip: set[int], found: tuple[float, int]) -> tuple[float, int]:
        """The best (score, host) that fits and is not in `skip`, or `found` if none beats it."""
        best_score, best_host = found
        fv, fm, fd, best, first, size = (
            self.free_vcpus,
            self.free_memory,
            self.free_disk,
            self.best,
            self.first,
            self.size,
        )
        stack = [1]
        while stack:
            node = stack.pop()
            value = best[node]
            if value < best_score or (value == best_score and first[node] > best_host):
                continue
            if fv[node] < vcpus or fm[node] < memory or fd[node] < disk:
                continue
            if node >= size:
                host = first[node]
                if host not in skip:
                    best_score, best_host = value, host
                continue
            left, right = 2 * node, 2 * node + 1
            if best[left] >= best[right]:
                stack.append(right)
                stack.append(left)
            else:
                stack.append(left)
                stack.append(right)
        return best_score, best_host


class PlacementIndex:
    """Hosts and their load, indexed for placing one request after another (`place`, then `commit`)."""

    def __init__(self, hosts: Sequence[HostView], policy: Policy) -> None:
        policy.validate()
        self.policy = policy
        self.hosts = list(hosts)
        self._used = [[h.used_vcpus, h.used_memory_mib, h.used_disk_gib, h.instances] for h in self.hosts]
        self._labels: dict[tuple[str, str, str], Counter[int]] = defaultdict(Counter)
        members: dict[tuple[frozenset[str], str | None], list[int]] = defaultdict(list)
        for index, host in enumerate(self.hosts):
            for tenant, labels in host.labels:
                self._count(index, tenant, labels)
            if host.state == "ready":
                members[(host.offers, host.leased_to)].append(index)
        self._pools = {key: _Tree(indexes) for key, indexes in members.items()}
        self._where: dict[int, tuple[_Tree, int]] = {}
        for tree in self._pools.values():
            for position, index in enumerate(tree.hosts):
                self._where[index] = (tree, position)
                self._refresh(index)

    def place(self, request: Request) -> int | None:
        """The index (in `hosts`) of the host `scheduler.place` would choose, or None; nothing changes until
        `commit`."""
        pools = [
            tree
            for (offers, lessee), tree in self._pools.items()
            if request.offer in offers and (lessee is None or lessee == request.tenant_id)
        ]
        skip: set[int] = set()
        for selector in request.anti_affinity:
            skip.update(self._holding(request.tenant_id, selector))
        wanted = [s for s in request.affinity if self._holding(request.tenant_id, s)]
        found: tuple[float, int] = (_NONE, _LAST)
        if wanted:
            allowed = {id(tree) for tree in pools}
            hosts = set.intersection(*(set(self._holding(request.tenant_id, s)) for s in wanted)) - skip
            for index in sorted(hosts):
                where = self._where.get(index)
                if where is None or id(where[0]) not in allowed or not self._fits(index, request):
                    continue
                value = self._score(index)
                if value > found[0]:
                    found = (value, index)
        else:
            for tree in pools:
                found = tree.search(request.vcpus, request.memory_mib, request.disk_gib, skip, found)
        return None if found[1] == _LAST else found[1]

    def commit(self, index: int, request: Request, labels: Mapping[str, str]) -> None:
        """Record that `request` (with `labels`) now runs on host `index`."""
        used = self._used[index]
        used[0] += request.vcpus
        used[1] += request.memory_mib
        used[2] += request.disk_gib
        used[3] += 1
        self._count(index, request.tenant_id, labels)
        self._refresh(index)

    def _holding(self, tenant: str, selector: Selector) -> list[int]:
        counts = self._labels.get((tenant, selector.key, selector.value))
        return list(counts) if counts else []

    def _count(self, index: int, tenant: str, labels: Mapping[str, str]) -> None:
        for key, value in labels.items():
            self._labels[(tenant, key, value)][index] += 1

    def _free(self, index: int) -> tuple[float, float, float]:
        host, used, policy = self.hosts[index], self._used[index], self.policy
        return (
            free(host.vcpus, policy.cpu_ratio, used[0]),
            free(host.memory_mib, policy.memory_ratio, used[1]),
            free(host.disk_gib, policy.disk_ratio, used[2]),
        )

    def _fits(self, index: int, request: Request) -> bool:
        vcpus, memory, disk = self._free(index)
        return request.vcpus <= vcpus and request.memory_mib <= memory and request.disk_gib <= disk

    def _score(self, index: int) -> float:
        host, used = self.hosts[index], self._used[index]
        return score(self.policy, host.vcpus, host.memory_mib, host.disk_gib, used[0], used[1], used[2], used[3])

    def _refresh(self, index: int) -> None:
        tree, position = self._where[index]
        tree.update(position, *self._free(index), self._score(index))
