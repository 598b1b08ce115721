"""cgroup v2: one unified tree, the container's cgroup a directory in it, and the OCI `linux.resources` (which
speak v1's language) translated into v2 files the way crun and runc do:

    memory.limit -> memory.max      memory.reservation -> memory.low      memory.swap -> memory.swap.max = swap - limit
    cpu.shares   -> cpu.weight = 1 + ((shares - 2) * 9999) / 262142
    cpu.quota/period -> cpu.max "quota period"                    cpus/mems -> cpuset.cpus/mems
    blockIO.weight -> io.bfq.weight, else io.weight = 1 + (weight - 10) * 9999 / 990     pids.limit -> pids.max

A controller only works in a cgroup whose ancestors list it in cgroup.subtree_control, so `create` enables
each needed one from the top down. Device rules would need an eBPF program attached to the cgroup, which this
runtime does not load: they are refused with the reason.
"""

from __future__ import annotations

import os

from isola.cgroups import files
from isola.errors import ConflictError, InvalidSpecError, UnsupportedError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, which costs ~2 ms
if TYPE_CHECKING:
    from typing import Any


def cpu_weight(shares: int) -> int:
    """runc's conversion of v1 cpu.shares [2, 262144] to v2 cpu.weight [1, 10000]."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def io_weight(weight: int) -> int:
    """v1 blkio.weight [10, 1000] to v2 io.weight [1, 10000]."""
    return 1 + (weight - 10) * 9999 // 990


def _max(value: int) -> str:
    return "max" if value < 0 else str(value)


class V2:
    """The container's cgroup in the unified hierarchy mounted at `mount`: the directory `path`."""

    def __init__(self, mount: str, path: str) -> None:
        self.mount = mount
        self.path = path

    def create(self) -> None:
        os.makedirs(self.path, exist_ok=True)
        wanted = files.read(self.mount, "cgroup.controllers").split()
        relative = os.path.relpath(self.path, self.mount)
        parent = self.mount
        for part in relative.split(os.sep)[:-1] if relative != "." else []:
            self._enable(parent, wanted)
            parent = os.path.join(parent, part)
        self._enable(parent, wanted)

    @staticmethod
    def _enable(directory: str, wanted: list[str]) -> None:
        enabled = set(files.read(directory, "cgroup.subtree_control").split())
        missing = [c for c in wanted if c not in enabled]
        if missing:
            files.write(directory, "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))

    def add(self, pid: int) -> None:
        files.write(self.path, "cgroup.procs", pid)

    def join_self(self) -> None:
        """Move the calling process here (cgroup2 has no cheaper way for a whole process than cgroup.procs)."""
        files.write(self.path, "cgroup.procs", 0)

    def _need(self, name: str, what: str) -> str:
        if not files.exists(self.path, name):
            raise UnsupportedError(f"{what} needs {name}, which this host's cgroup v2 tree does not offer")
        return self.path

    def apply(self, resources: dict[str, Any]) -> None:
        """Write `linux.resources`, translated to v2 (see the module docstring)."""
        memory = resources.get("memory") or {}
        limit, swap = memory.get("limit"), memory.get("swap")
        if limit is not None:
            files.write(self._need("memory.max", "linux.resources.memory.limit"), "memory.max", _max(limit))
        if swap is not None:
            if swap >= 0 and limit is not None and limit >= 0 and swap < limit:
                raise InvalidSpecError(
                    "memory+swap must not be below the memory limit", field="linux.resources.memory.swap"
                )
            value = "max" if swap < 0 or limit is None or limit < 0 else str(swap - limit)
            files.write(self._need("memory.swap.max", "linux.resources.memory.swap"), "memory.swap.max", value)
        if memory.get("reservation") is not None:
            files.write(
                self._need("memory.low", "linux.resources.memory.reservation"),
                "memory.low",
                _max(memory["reservation"]),
            )
        if memory.get("swappiness") is not None:
            raise UnsupportedError("linux.resources.memory.swappiness has no cgroup v2 equivalent")
        if memory.get("disableOOMKiller"):
            raise UnsupportedError("linux.resources.memory.disableOOMKiller has no cgroup v2 equivalent")
        cpu = resources.get("cpu") or {}
        if cpu.get("shares"):
            files.write(self._need("cpu.weight", "linux.resources.cpu.shares"), "cpu.weight", cpu_weight(cpu["shares"]))
        if "quota" in cpu or "period" in cpu:
            d = self._need("cpu.max", "linux.resources.cpu.quota")
            old_quota, old_period = files.read(d, "cpu.max").split()
            quota = _max(cpu["quota"]) if "quota" in cpu else old_quota
            files.write(d, "cpu.max", f"{quota} {cpu.get('period') or old_period}")
        for key in ("cpus", "mems"):
            if cpu.get(key):
                files.write(self._need(f"cpuset.{key}", f"linux.resources.cpu.{key}"), f"cpuset.{key}", cpu[key])
        if resources.get("pids"):
            files.write(
                self._need("pids.max", "linux.resources.pids"), "pids.max", _max(resources["pids"]["limit"] or -1)
            )
        block = resources.get("blockIO") or {}
        if "weight" in block:
            if files.exists(self.path, "io.bfq.weight"):
                files.write(self.path, "io.bfq.weight", block["weight"])
            else:
                files.write(
                    self._need("io.weight", "linux.resources.blockIO.weight"), "io.weight", io_weight(block["weight"])
                )
        for key, name in (
            ("throttleReadBpsDevice", "rbps"),
            ("throttleWriteBpsDevice", "wbps"),
            ("throttleReadIOPSDevice", "riops"),
            ("throttleWriteIOPSDevice", "wiops"),
        ):
            for dev in block.get(key) or ():
                d = self._need("io.max", f"linux.resources.blockIO.{key}")
                files.write(d, "io.max", f"{dev['major']}:{dev['minor']} {name}={dev['rate']}")
        for entry in resources.get("hugepageLimits") or ():
            name = f"hugetlb.{entry['pageSize']}.max"
            files.write(self._need(name, "linux.resources.hugepageLimits"), name, entry["limit"])
        if any(
            not (rule.get("allow") is False and rule.get("type", "a") == "a") for rule in resources.get("devices") or ()
        ):
            raise UnsupportedError(
                "device rules on cgroup v2 need an eBPF device program, which isola-oci does not load"
            )
        for name, value in (resources.get("unified") or {}).items():
            if "/" in name or name.startswith("."):
                raise InvalidSpecError(f"{name!r} is not a cgroup file name", field="linux.resources.unified")
            files.write(self._need(name, f"linux.resources.unified[{name}]"), name, value)

    def freeze(self, frozen: bool) -> None:
        files.write(self._need("cgroup.freeze", "pause/resume"), "cgroup.freeze", int(frozen))
        for _ in range(1000):
            if self.frozen() == frozen:
                return
            os.sched_yield()
        raise ConflictError(f"the cgroup did not become {'frozen' if frozen else 'thawed'}")

    def frozen(self) -> bool:
        if not files.exists(self.path, "cgroup.events"):
            return False
        return files.keyed(files.read(self.path, "cgroup.events")).get("frozen") == 1

    def pids(self) -> list[int]:
        return files.pids(self.path)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if files.exists(self.path, "cpu.stat"):
            cpu = files.keyed(files.read(self.path, "cpu.stat"))
            out["cpu"] = {
                "usage": {
                    "total": cpu.get("usage_usec", 0) * 1000,
                    "kernel": cpu.get("system_usec", 0) * 1000,
                    "user": cpu.get("user_usec", 0) * 1000,
                },
                "throttling": {
                    "periods": cpu.get("nr_periods", 0),
                    "throttledPeriods": cpu.get("nr_throttled", 0),
                    "throttledTime": cpu.get("throttled_usec", 0) * 1000,
                },
            }
        if files.exists(self.path, "memory.current"):
            limit = files.read(self.path, "memory.max")
            out["memory"] = {
                "usage": {
                    "usage": int(files.read(self.path, "memory.current")),
                    "limit": 0 if limit == "max" else int(limit),
                },
                "stats": files.keyed(files.read(self.path, "memory.stat")),
            }
        if files.exists(self.path, "pids.current"):
            limit = files.read(self.path, "pids.max")
            out["pids"] = {
                "current": int(files.read(self.path, "pids.current")),
                "limit": 0 if limit == "max" else int(limit),
            }
        return out

    def destroy(self) -> None:
        files.remove(self.path)
