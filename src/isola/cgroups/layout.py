"""Which cgroup hierarchies a host has, and where each controller lives.

Three layouts exist in the wild: pure v1 (a hierarchy per controller), pure v2 (one unified tree), and the
systemd "hybrid" (v1 controllers plus a cgroup2 mount, usually at /sys/fs/cgroup/unified, holding whatever
controllers v1 did not claim — `hugetlb` on the machines isola is developed on). Runtimes must know which:
crun refuses hybrid hosts, runc copes, and isola's container engine drives each controller where it lives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from isola.host import mountinfo


class Mode(StrEnum):
    V1 = "v1"
    V2 = "v2"
    HYBRID = "hybrid"
    NONE = "none"


@dataclass(frozen=True)
class Layout:
    mode: Mode
    v1: dict[str, str] = field(default_factory=dict)  # controller -> mountpoint
    v2_mount: str | None = None
    v2_controllers: tuple[str, ...] = ()

    def where(self, controller: str) -> str | None:
        """'v1' or 'v2' for the hierarchy that holds `controller`, None if the host lacks it."""
        if controller in self.v1:
            return "v1"
        if controller in self.v2_controllers:
            return "v2"
        return None


def known_controllers(proc_cgroups: str) -> set[str]:
    """Controller names the kernel has compiled in and enabled, from /proc/cgroups."""
    names = set()
    for line in proc_cgroups.splitlines():
        cols = line.split()
        if line.startswith("#") or len(cols) < 4:
            continue
        if cols[3] == "1":
            names.add(cols[0])
    return names


def detect(mounts: list[mountinfo.Mount], known: set[str], read_controllers: dict[str, str] | None = None) -> Layout:
    """Work out the layout from the mount table. `read_controllers` maps a cgroup2 mountpoint to the text of
    its cgroup.controllers (passed in by `probe()`, or by a test)."""
    v1: dict[str, str] = {}
    v2_mount = None
    for m in mounts:
        if m.fstype == "cgroup":
            for opt in m.super_options:
                if opt in known:
                    v1.setdefault(opt, m.mountpoint)
        elif m.fstype == "cgroup2" and v2_mount is None:
            v2_mount = m.mountpoint
    v2_controllers: tuple[str, ...] = ()
    if v2_mount is not None and read_controllers is not None:
        v2_controllers = tuple(sorted(read_controllers.get(v2_mount, "").split()))
    if v1 and v2_mount:
        mode = Mode.HYBRID
    elif v1:
        mode = Mode.V1
    elif v2_mount:
        mode = Mode.V2
    else:
        mode = Mode.NONE
    return Layout(mode=mode, v1=dict(sorted(v1.items())), v2_mount=v2_mount, v2_controllers=v2_controllers)


def probe() -> Layout:
    """The calling process's view of the host's cgroups."""
    mounts = mountinfo.read()
    known = known_controllers(Path("/proc/cgroups").read_text())
    texts = {}
    for m in mounts:
        if m.fstype == "cgroup2":
            try:
                texts[m.mountpoint] = (Path(m.mountpoint) / "cgroup.controllers").read_text()
            except OSError:
                texts[m.mountpoint] = ""
    return detect(mounts, known, texts)
