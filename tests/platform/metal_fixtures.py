"""What the metal and network tests share: an isolad that runs metal instances under a temporary state root,
and the guarantee that whatever a test started — processes, cgroups, mounts a tenant made under its files,
network namespaces — is gone afterwards, even when it failed."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from isola.host import libc, netlink
from isola.metal.cgroup import InstanceGroup
from isola.metal.engine import STATE_ROOT_VARIABLE, MetalEngine
from tests.platform.conftest import Daemon, cleanup, short_root


class MetalDaemon(Daemon):
    """isolad with its metal engine's state under the test's directory."""

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, STATE_ROOT_VARIABLE: str(self.metal_state)}

    @property
    def metal_state(self) -> Path:
        return self.root / "metal"


@pytest.fixture
def metal_daemon() -> Iterator[MetalDaemon]:
    before = set(netlink.namespaces())
    root = short_root()
    d = MetalDaemon(root)
    try:
        d.start()
        yield d
    finally:
        try:
            d.stop()
            sweep(d.metal_state)
        finally:
            for name in set(netlink.namespaces()) - before:
                netlink.remove(name)
            cleanup(root, [d])


def sweep(root: Path) -> None:
    """Unmount what tenants mounted under `root`, delete every instance with force, then check that no
    cgroup and no process of them is left; remove `root`."""
    try:
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f]
        for target in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
            libc.umount(target, libc.MNT_DETACH)
        if root.is_dir():
            engine = MetalEngine(root)
            ids = [p.name for p in root.iterdir() if not p.name.startswith(".")]
            for instance_id in ids:
                with contextlib.suppress(Exception):
                    engine.delete(instance_id, force=True)
            left = engine.clean(ids)
            assert not left, f"instances outlived delete(force=True): {left}"
            for instance_id in ids:
                assert not InstanceGroup(instance_id).exists(), f"cgroup of {instance_id} is left"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def processes_in(instance_id: str) -> list[int]:
    group = InstanceGroup(instance_id)
    return group.pids() if group.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
