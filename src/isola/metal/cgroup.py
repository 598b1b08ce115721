"""The cgroup of one metal instance: where its processes live, what bounds them, and how all of them are ended.

`/isola-metal/<id>` in every v1 hierarchy (on a hybrid host pids, memory, cpu and cpuacct are v1; the cgroup2
tree is not used) — absolute, not below the daemon's own cgroup, so an instance outlives the daemon's cgroup
and a restarted daemon finds it from the id alone. The spec's memory becomes `memory.limit_in_bytes` and its
vCPUs a CFS quota (vcpus times the period): a cap on CPU time, not a pinning, so every CPU and its features stay
visible. Both are written again by a live resize.

Ending every process of a tree that may fork as it is killed is done as runc does on v1: freeze, SIGKILL each
member, thaw, until the cgroup and every cgroup the tenant made below it are empty. A tenant's program runs as
root on its own host and may make sub-cgroups; they are walked and removed too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from isola.cgroups import files, hierarchies
from isola.cgroups.group import Group
from isola.engine import Resources
from isola.errors import EngineError, IsolaError, UnsupportedError

PARENT = "isola-metal"
CFS_PERIOD_US = 100_000
KILL_SECONDS = 5.0


class InstanceGroup:
    """The cgroup `/isola-metal/<instance_id>` across the host's v1 hierarchies."""

    def __init__(self, instance_id: str) -> None:
        layout = hierarchies.probe()
        if not layout.v1:
            raise UnsupportedError(f"the metal engine needs cgroup v1 controllers; this host has {layout.mode}")
        self.group = Group.for_path(layout, f"/{PARENT}/{instance_id}")

    @property
    def dirs(self) -> list[str]:
        """The instance's directory in each hierarchy (what a process writes itself into to join)."""
        return sorted(set(self.group.dirs.values()))

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self.dirs)

    def create(self, resources: Resources) -> None:
        try:
            self.group.create()
        except OSError as exc:
            raise EngineError(f"cannot make the cgroup {self.dirs[0]}: {exc.strerror}") from None
        self.limit(resources)

    def limit(self, resources: Resources) -> None:
        """Write the memory limit and the CPU quota now (on a running instance too: cgroups apply at once)."""
        self.group.apply(
            {
                "memory": {"limit": resources.memory_mib << 20},
                "cpu": {"period": CFS_PERIOD_US, "quota": resources.vcpus * CFS_PERIOD_US},
            }
        )

    def pids(self) -> list[int]:
        """Every process in the instance's cgroup and the cgroups below it."""
        found: set[int] = set()
        for top in self.dirs:
            for directory, _, _ in os.walk(top):
                found.update(files.pids(directory))
        return sorted(found)

    def kill_all(self, timeout: float = KILL_SECONDS) -> bool:
        """SIGKILL every process of the instance, frozen so none can fork meanwhile; whether none is left."""
        deadline = time.monotonic() + timeout
        while self.pids():
            if time.monotonic() > deadline:
                return False
            frozen = self._freeze(True)
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if frozen:
                self._freeze(False)
            time.sleep(0.01)
        return True

    def _freeze(self, frozen: bool) -> bool:
        try:
            self.group.freeze(frozen)
        except (IsolaError, OSError):
            return False  # no freezer, or the cgroup is gone: kill unfrozen, and loop
        return True

    def cpu_ns(self) -> int:
        for directory in self.dirs:
            if files.exists(directory, "cpuacct.usage"):
                return int(files.read(directory, "cpuacct.usage"))
        return 0

    def memory_bytes(self) -> int:
        for directory in self.dirs:
            if files.exists(directory, "memory.usage_in_bytes"):
                return int(files.read(directory, "memory.usage_in_bytes"))
        return 0

    def remove(self) -> None:
        """Remove the cgroup and any below it (deepest first); ConflictError while a process is left in one."""
        for top in self.dirs:
            if not os.path.isdir(top):
                continue
            below = [d for d, _, _ in os.walk(top)]
            for directory in reversed(below):
                files.remove(directory)
