"""The host's cgroup layout as a container runtime needs it on every start, without paying for the probe.

`isola.cgroups.layout.probe()` is the authority, but importing it (dataclasses, pathlib, enum) costs ~15 ms,
half a `runc run`. The layout only changes when cgroup filesystems are mounted or unmounted, so the runtime
keeps the probe's answer in a small JSON file next to its state, keyed by the cgroup lines of
/proc/self/mountinfo and the cgroup2 root's controllers, and probes again whenever that key changes.
"""

from __future__ import annotations

import json
import os


class Hierarchies:
    """What `layout.Layout` says, in plain values: mode is "v1", "v2", "hybrid" or "none"."""

    __slots__ = ("mode", "v1", "v2_controllers", "v2_mount")

    def __init__(self, mode: str, v1: dict[str, str], v2_mount: str | None, v2_controllers: tuple[str, ...]) -> None:
        self.mode = mode
        self.v1 = v1  # controller -> mountpoint
        self.v2_mount = v2_mount
        self.v2_controllers = v2_controllers

    def _fields(self) -> tuple[object, ...]:
        return self.mode, self.v1, self.v2_mount, self.v2_controllers

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hierarchies) and self._fields() == other._fields()

    def __repr__(self) -> str:
        return "Hierarchies(mode={!r}, v1={!r}, v2_mount={!r}, v2_controllers={!r})".format(*self._fields())

    def where(self, controller: str) -> str | None:
        """'v1' or 'v2' for the hierarchy that holds `controller`, None if the host lacks it."""
        if controller in self.v1:
            return "v1"
        if controller in self.v2_controllers:
            return "v2"
        return None


def _key() -> str:
    with open("/proc/self/mountinfo") as f:
        lines = [line for line in f if " - cgroup" in line]
    key = "".join(lines)
    for line in lines:
        if " - cgroup2 " in line:
            mountpoint = line.split()[4]
            try:
                with open(os.path.join(mountpoint, "cgroup.controllers")) as f:
                    key += f.read()
            except OSError:
                pass
    return key


def probe() -> Hierarchies:
    """Ask isola.cgroups.layout (slow to import, exact)."""
    from isola.cgroups import layout

    found = layout.probe()
    return Hierarchies(str(found.mode), dict(found.v1), found.v2_mount, tuple(found.v2_controllers))


def cached(path: str) -> Hierarchies:
    """The layout, from the cache file at `path` when its key still matches this host's mounts."""
    key = _key()
    try:
        with open(path) as f:
            saved = json.load(f)
        if saved["key"] == key:
            return Hierarchies(saved["mode"], saved["v1"], saved["v2_mount"], tuple(saved["v2_controllers"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    found = probe()
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(
                {
                    "key": key,
                    "mode": found.mode,
                    "v1": found.v1,
                    "v2_mount": found.v2_mount,
                    "v2_controllers": found.v2_controllers,
                },
                f,
            )
        os.rename(tmp, path)
    except OSError:
        pass  # a read-only --root: probe every time
    return found
