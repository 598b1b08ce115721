"""A container's cgroup on whatever layout the host has: v1, v2, or the hybrid of both.

On a hybrid host the v1 hierarchies carry the controllers (this is where limits are written, as runc does).
The cgroup2 tree holds whatever controllers v1 did not claim (`hugetlb` here); the container joins a cgroup
there only when it limits one of those. runc always joins it, but moving a process within cgroup2 waits for
an RCU grace period (~14 ms here, half a `runc run`), while a process moves itself between v1 cgroups for free
(`join_self`). `dirs` (hierarchy mountpoint -> the container's directory in it) is what a runtime stores to
find the cgroup again later.
"""

from __future__ import annotations

import os

from isola.cgroups.hierarchies import Hierarchies
from isola.cgroups.v1 import V1
from isola.cgroups.v2 import V2
from isola.errors import InvalidSpecError, UnsupportedError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, which costs ~2 ms
if TYPE_CHECKING:
    from typing import Any


def own_paths() -> dict[str, str]:
    """The calling process's cgroup per hierarchy, keyed by controller list ('' for the unified one)."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                out[name] = path
    return out


class Group:
    """The cgroup of one container across the hierarchies of `layout`."""

    def __init__(self, layout: Hierarchies, dirs: dict[str, str]) -> None:
        self.layout = layout
        self.dirs = dirs
        v1_dirs = {c: dirs[m] for c, m in layout.v1.items() if m in dirs}
        self.v1 = V1(v1_dirs) if v1_dirs else None
        self.v2 = None
        if layout.v2_mount is not None and layout.v2_mount in dirs:
            self.v2 = V2(layout.v2_mount, dirs[layout.v2_mount])

    @classmethod
    def for_path(cls, layout: Hierarchies, cgroups_path: str, resources: dict[str, Any] | None = None) -> Group:
        """The cgroup at `cgroups_path` (OCI linux.cgroupsPath): absolute is from each hierarchy's root,
        relative is below the runtime's own cgroup in that hierarchy. On a hybrid host the cgroup2 tree is
        used only if `resources` limit a controller that lives there."""
        if layout.mode == "none":
            raise UnsupportedError("this host has no cgroup hierarchy mounted")
        if ":" in cgroups_path:
            raise UnsupportedError(
                f"linux.cgroupsPath {cgroups_path!r} is in the systemd driver's slice:prefix:name form; "
                "isola-oci manages cgroupfs directly"
            )
        parts = [p for p in cgroups_path.split("/") if p]
        if not parts or ".." in parts:
            raise InvalidSpecError(f"{cgroups_path!r} does not name a cgroup below the root", field="linux.cgroupsPath")
        own = {} if cgroups_path.startswith("/") else own_paths()
        dirs = {}
        for controller, mount in layout.v1.items():
            dirs[mount] = os.path.join(mount, own.get(controller, "/").lstrip("/"), *parts)
        v2_needed = layout.mode != "hybrid" or any(
            layout.where(controller) == "v2" for controller in _controllers(resources or {})
        )
        if layout.v2_mount is not None and v2_needed:
            dirs[layout.v2_mount] = os.path.join(layout.v2_mount, own.get("", "/").lstrip("/"), *parts)
        return cls(layout, dirs)

    def _backends(self) -> list[V1 | V2]:
        return [b for b in (self.v1, self.v2) if b is not None]

    def create(self) -> None:
        for backend in self._backends():
            backend.create()

    def add(self, pid: int) -> None:
        for backend in self._backends():
            backend.add(pid)

    def join_self(self) -> None:
        """Move the calling process (single-threaded: a freshly forked child) into the cgroup."""
        for backend in self._backends():
            backend.join_self()

    def _limits(self) -> V1 | V2:
        backend = self.v1 or self.v2
        if backend is None:
            raise UnsupportedError("this host has no cgroup hierarchy mounted")
        return backend

    def apply(self, resources: dict[str, Any]) -> None:
        """Write `linux.resources`. On a hybrid host, limits of controllers that live in the cgroup2 tree
        (hugetlb) go there; everything else to v1."""
        hybrid = self.v1 is not None and self.v2 is not None
        if hybrid and resources.get("hugepageLimits") and self.layout.where("hugetlb") == "v2":
            assert self.v1 is not None and self.v2 is not None
            self.v1.apply({k: v for k, v in resources.items() if k != "hugepageLimits"})
            self.v2.apply({"hugepageLimits": resources["hugepageLimits"]})
            return
        self._limits().apply(resources)

    def freeze(self, frozen: bool) -> None:
        backend = self.v1 if self.v1 is not None and "freezer" in self.v1.dirs else self.v2
        if backend is None:
            raise UnsupportedError("pause needs the freezer: this host has neither cgroup v1 freezer nor cgroup v2")
        backend.freeze(frozen)

    def frozen(self) -> bool:
        if self.v1 is not None and "freezer" in self.v1.dirs:
            return self.v1.frozen()
        return self.v2.frozen() if self.v2 is not None else False

    def pids(self) -> list[int]:
        return self._limits().pids()

    def stats(self) -> dict[str, Any]:
        return self._limits().stats()

    def destroy(self) -> None:
        for backend in self._backends():
            backend.destroy()


_RESOURCE_CONTROLLERS = {
    "memory": "memory",
    "cpu": "cpu",
    "pids": "pids",
    "blockIO": "blkio",
    "hugepageLimits": "hugetlb",
    "devices": "devices",
    "network": "net_cls",
    "rdma": "rdma",
}


def _controllers(resources: dict[str, Any]) -> set[str]:
    """The v1 names of the controllers that `resources` (OCI linux.resources) limit."""
    return {_RESOURCE_CONTROLLERS[key] for key, value in resources.items() if value and key in _RESOURCE_CONTROLLERS}
