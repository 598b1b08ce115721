"""cgroup v1: one hierarchy per controller (or per group of controllers), each with its own directory for the
container, and the OCI `linux.resources` written into the files of the controller that owns each of them.

v1 quirks handled here: a new cpuset cgroup starts with no cpus and no mems, so both are copied down from the
parent before any process can join; `memory.memsw.limit_in_bytes` (memory + swap) may never be below
`memory.limit_in_bytes`, so the two are written in whichever order keeps that true.
"""

from __future__ import annotations

import os

from isola.cgroups import files
from isola.errors import ConflictError, InvalidSpecError, UnsupportedError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, which costs ~2 ms
if TYPE_CHECKING:
    from typing import Any


class V1:
    """The container's cgroups on a v1 host: `dirs` maps each controller to its directory."""

    def __init__(self, dirs: dict[str, str]) -> None:
        self.dirs = dirs

    def create(self) -> None:
        for controller, directory in self.dirs.items():
            if controller == "cpuset":
                _make_cpuset(directory)
            else:
                os.makedirs(directory, exist_ok=True)

    def add(self, pid: int) -> None:
        for directory in set(self.dirs.values()):
            files.write(directory, "cgroup.procs", pid)

    def join_self(self) -> None:
        """Move the calling (single-threaded) process here by writing 0 to `tasks`: moving one's own thread
        skips the kernel's global threadgroup lock, whose first use costs an RCU grace period (~10 ms)."""
        for directory in set(self.dirs.values()):
            files.write(directory, "tasks", 0)

    def _dir(self, controller: str, what: str) -> str:
        if controller not in self.dirs:
            raise UnsupportedError(f"{what} needs the {controller} cgroup controller, which this host lacks")
        return self.dirs[controller]

    def apply(self, resources: dict[str, Any]) -> None:
        """Write `linux.resources` (the OCI names) into the controllers' files."""
        memory = resources.get("memory") or {}
        if memory:
            self._memory(memory)
        cpu = resources.get("cpu") or {}
        if {"shares", "quota", "period", "realtimeRuntime", "realtimePeriod"} & cpu.keys():
            d = self._dir("cpu", "linux.resources.cpu")
            if "shares" in cpu:
                files.write(d, "cpu.shares", cpu["shares"])
            if "period" in cpu:
                files.write(d, "cpu.cfs_period_us", cpu["period"])
            if "quota" in cpu:
                files.write(d, "cpu.cfs_quota_us", cpu["quota"])
            if "realtimePeriod" in cpu:
                files.write(d, "cpu.rt_period_us", cpu["realtimePeriod"])
            if "realtimeRuntime" in cpu:
                files.write(d, "cpu.rt_runtime_us", cpu["realtimeRuntime"])
        for key in ("cpus", "mems"):
            if cpu.get(key):
                files.write(self._dir("cpuset", f"linux.resources.cpu.{key}"), f"cpuset.{key}", cpu[key])
        pids = resources.get("pids")
        if pids:
            limit = pids["limit"]
            files.write(self._dir("pids", "linux.resources.pids"), "pids.max", limit if limit > 0 else "max")
        block = resources.get("blockIO") or {}
        if block:
            self._blkio(block)
        for i, rule in enumerate(resources.get("devices") or ()):
            self.device_rule(rule, f"linux.resources.devices[{i}]")
        for entry in resources.get("hugepageLimits") or ():
            d = self._dir("hugetlb", "linux.resources.hugepageLimits")
            files.write(d, f"hugetlb.{entry['pageSize']}.limit_in_bytes", entry["limit"])
        network = resources.get("network") or {}
        if "classID" in network:
            files.write(self._dir("net_cls", "linux.resources.network.classID"), "net_cls.classid", network["classID"])
        for prio in network.get("priorities") or ():
            d = self._dir("net_prio", "linux.resources.network.priorities")
            files.write(d, "net_prio.ifpriomap", f"{prio['name']} {prio['priority']}")
        if resources.get("unified"):
            raise UnsupportedError("linux.resources.unified sets cgroup v2 files; this host's controllers are v1")

    def _memory(self, memory: dict[str, Any]) -> None:
        d = self._dir("memory", "linux.resources.memory")
        limit, swap = memory.get("limit"), memory.get("swap")
        if swap is not None and limit is not None and swap != -1 and (limit == -1 or swap < limit):
            raise InvalidSpecError(
                "memory+swap must not be below the memory limit", field="linux.resources.memory.swap"
            )
        if swap is not None and not files.exists(d, "memory.memsw.limit_in_bytes"):
            raise UnsupportedError("linux.resources.memory.swap: this kernel does not account swap (swapaccount=1)")
        if limit is not None and swap is not None:
            current = int(files.read(d, "memory.limit_in_bytes"))
            raising = limit == -1 or limit > current
            order = [("memory.memsw.limit_in_bytes", swap), ("memory.limit_in_bytes", limit)]
            for name, value in order if raising else reversed(order):
                files.write(d, name, value)
        elif limit is not None:
            files.write(d, "memory.limit_in_bytes", limit)
        elif swap is not None:
            files.write(d, "memory.memsw.limit_in_bytes", swap)
        if memory.get("reservation") is not None:
            files.write(d, "memory.soft_limit_in_bytes", memory["reservation"])
        if memory.get("swappiness") is not None:
            files.write(d, "memory.swappiness", memory["swappiness"])
        if memory.get("disableOOMKiller"):
            files.write(d, "memory.oom_control", 1)

    def _blkio(self, block: dict[str, Any]) -> None:
        d = self._dir("blkio", "linux.resources.blockIO")
        prefix = "blkio." if files.exists(d, "blkio.weight") else "blkio.bfq."
        if "weight" in block:
            if not files.exists(d, f"{prefix}weight"):
                raise UnsupportedError("linux.resources.blockIO.weight: no blkio.weight here (CFQ/BFQ scheduler?)")
            files.write(d, f"{prefix}weight", block["weight"])
        if "leafWeight" in block:
            files.write(d, "blkio.leaf_weight", block["leafWeight"])
        for dev in block.get("weightDevice") or ():
            if "weight" in dev:
                files.write(d, f"{prefix}weight_device", f"{dev['major']}:{dev['minor']} {dev['weight']}")
        for key, name in (
            ("throttleReadBpsDevice", "read_bps_device"),
            ("throttleWriteBpsDevice", "write_bps_device"),
            ("throttleReadIOPSDevice", "read_iops_device"),
            ("throttleWriteIOPSDevice", "write_iops_device"),
        ):
            for dev in block.get(key) or ():
                files.write(d, f"blkio.throttle.{name}", f"{dev['major']}:{dev['minor']} {dev['rate']}")

    def device_rule(self, rule: dict[str, Any], where: str) -> None:
        """One entry of the device allow/deny list, in devices.allow / devices.deny syntax."""
        d = self._dir("devices", where)
        kind = rule.get("type", "a")
        major = rule.get("major", -1)
        minor = rule.get("minor", -1)
        access = rule.get("access") or "rwm"
        numbers = f"{'*' if major < 0 else major}:{'*' if minor < 0 else minor}"
        entry = f"{kind} {numbers} {access}" if kind != "a" or access != "rwm" else "a"
        files.write(d, "devices.allow" if rule.get("allow") else "devices.deny", entry)

    def freeze(self, frozen: bool) -> None:
        d = self._dir("freezer", "pause/resume")
        want = "FROZEN" if frozen else "THAWED"
        files.write(d, "freezer.state", want)
        for _ in range(1000):
            if files.read(d, "freezer.state") == want:
                return
            files.write(d, "freezer.state", want)
        raise ConflictError(f"the freezer did not reach {want}")

    def frozen(self) -> bool:
        d = self.dirs.get("freezer")
        return d is not None and os.path.isdir(d) and files.read(d, "freezer.state") != "THAWED"

    def pids(self) -> list[int]:
        for controller in ("pids", "memory", "cpu", "freezer"):
            if controller in self.dirs:
                return files.pids(self.dirs[controller])
        return files.pids(next(iter(self.dirs.values()))) if self.dirs else []

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "cpuacct" in self.dirs:
            d = self.dirs["cpuacct"]
            percpu = [int(x) for x in files.read(d, "cpuacct.usage_percpu").split()]
            out["cpu"] = {"usage": {"total": int(files.read(d, "cpuacct.usage")), "percpu": percpu}}
        if "cpu" in self.dirs:
            throttling = files.keyed(files.read(self.dirs["cpu"], "cpu.stat"))
            out.setdefault("cpu", {})["throttling"] = {
                "periods": throttling.get("nr_periods", 0),
                "throttledPeriods": throttling.get("nr_throttled", 0),
                "throttledTime": throttling.get("throttled_time", 0),
            }
        if "memory" in self.dirs:
            d = self.dirs["memory"]
            out["memory"] = {
                "usage": {
                    "usage": int(files.read(d, "memory.usage_in_bytes")),
                    "max": int(files.read(d, "memory.max_usage_in_bytes")),
                    "limit": int(files.read(d, "memory.limit_in_bytes")),
                    "failcnt": int(files.read(d, "memory.failcnt")),
                },
                "stats": files.keyed(files.read(d, "memory.stat")),
            }
        if "pids" in self.dirs:
            d = self.dirs["pids"]
            limit = files.read(d, "pids.max")
            out["pids"] = {"current": int(files.read(d, "pids.current")), "limit": 0 if limit == "max" else int(limit)}
        return out

    def destroy(self) -> None:
        for directory in set(self.dirs.values()):
            files.remove(directory)


def _make_cpuset(directory: str) -> None:
    """mkdir a cpuset cgroup and each missing ancestor, copying cpus and mems down from the parent: a v1
    cpuset cgroup starts empty, and no process may join an empty one."""
    if os.path.isdir(directory):
        return
    parent = os.path.dirname(directory)
    _make_cpuset(parent)
    os.makedirs(directory, exist_ok=True)
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not files.read(directory, name):
            files.write(directory, name, files.read(parent, name))
