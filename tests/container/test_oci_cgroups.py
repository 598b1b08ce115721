"""Resources through cgroups, checked in the host's cgroup files and by what the container can (not) do:
memory, cpu, cpuset, pids, devices, the freezer, update, stats, clean-up. This host is a v1/v2 hybrid; the v2
translation is checked on a directory tree standing in for cgroup2 (its controllers are bound to v1 here)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from isola.cgroups import hierarchies
from isola.cgroups import layout as cgroup_layout
from isola.cgroups.group import Group
from isola.cgroups.v2 import V2, cpu_weight, io_weight
from isola.errors import UnsupportedError
from tests.container.conftest import ISOLA_OCI, Oci, container_id

LAYOUT = hierarchies.probe()


def _v1(controller: str) -> Path:
    if LAYOUT.where(controller) != "v1":
        pytest.skip(f"the {controller} controller is not on cgroup v1 here ({LAYOUT.mode})")
    return Path(LAYOUT.v1[controller])


def _resources(**resources: Any):
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["resources"].update(resources)

    return edit


def test_limits_land_in_the_v1_files(oci: Oci, bundle, request) -> None:
    cid = container_id(request)
    edit = _resources(
        memory={"limit": 64 << 20, "reservation": 32 << 20, "swap": 96 << 20, "swappiness": 10},
        cpu={"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        pids={"limit": 50},
    )
    oci("create", "-b", str(bundle(["/bin/true"], edit)), cid)
    memory = _v1("memory") / "isola-oci" / cid
    assert (memory / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    assert (memory / "memory.soft_limit_in_bytes").read_text().strip() == str(32 << 20)
    assert (memory / "memory.memsw.limit_in_bytes").read_text().strip() == str(96 << 20)
    assert (memory / "memory.swappiness").read_text().strip() == "10"
    cpu = _v1("cpu") / "isola-oci" / cid
    assert (cpu / "cpu.shares").read_text().strip() == "512"
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (_v1("cpuset") / "isola-oci" / cid / "cpuset.cpus").read_text().strip() == "0"
    assert (_v1("pids") / "isola-oci" / cid / "pids.max").read_text().strip() == "50"
    pid = oci.state(cid)["pid"]
    assert str(pid) in (memory / "cgroup.procs").read_text().split()
    if LAYOUT.mode == "hybrid":  # the cgroup2 tree is used only for the controllers that live there
        assert not (Path(LAYOUT.v2_mount or "/") / "isola-oci" / cid).exists()
    oci("delete", cid)
    assert not memory.exists() and not cpu.exists()


def test_hybrid_hugetlb_limits_go_to_the_cgroup2_tree(oci: Oci, bundle, request) -> None:
    if LAYOUT.mode != "hybrid" or LAYOUT.where("hugetlb") != "v2":
        pytest.skip(f"needs a hybrid host with hugetlb on cgroup2 (this one: {LAYOUT.mode})")
    cid = container_id(request)
    edit = _resources(hugepageLimits=[{"pageSize": "2MB", "limit": 4 << 20}], pids={"limit": 20})
    oci("create", "-b", str(bundle(["/bin/true"], edit)), cid)
    unified = Path(LAYOUT.v2_mount or "/") / "isola-oci" / cid
    assert (unified / "hugetlb.2MB.max").read_text().strip() == str(4 << 20)
    assert str(oci.state(cid)["pid"]) in (unified / "cgroup.procs").read_text().split()
    assert (_v1("pids") / "isola-oci" / cid / "pids.max").read_text().strip() == "20"
    oci("delete", cid)
    assert not unified.exists()


def test_fork_bomb_stops_at_pids_max(oci: Oci, bundle, request) -> None:
    _v1("pids")
    script = "for i in $(seq 40); do sleep 5 & done"
    out = oci(
        "run",
        "-b",
        str(bundle(["/bin/sh", "-c", script], _resources(pids={"limit": 10}))),
        container_id(request),
        check=False,
    )
    assert "can't fork" in out.stderr  # busybox sh gives up at the limit; the host never saw 40 sleeps


def test_memory_hog_is_oom_killed_inside_its_cgroup(oci: Oci, bundle, request) -> None:
    _v1("memory")
    edit = _resources(memory={"limit": 32 << 20, "swap": 32 << 20})
    script = "dd if=/dev/zero of=/dev/null bs=200M count=1 2>/dev/null; echo status=$?"
    out = oci("run", "-b", str(bundle(["/bin/sh", "-c", script], edit)), container_id(request)).stdout
    assert out.strip() == f"status={128 + 9}"  # dd was killed; the shell, pid 1, carried on


def test_device_rules_deny_by_default(oci: Oci, bundle, request) -> None:
    _v1("devices")

    def edit(c: dict[str, Any]) -> None:
        for name in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][name].append("CAP_MKNOD")

    script = (
        "grep CapEff /proc/self/status; mknod /dev/mem2 c 1 1 2>/dev/null && echo mknod-ok || echo mknod-denied; "
        "mknod /dev/null2 c 1 3 && echo x > /dev/null2 && echo null-ok"
    )
    out = oci("run", "-b", str(bundle(["/bin/sh", "-c", script], edit)), container_id(request)).stdout.splitlines()
    assert int(out[0].split()[1], 16) & (1 << 27)  # CAP_MKNOD: only the cgroup stands in the way
    assert out[1:] == ["mknod-denied", "null-ok"]


def test_pause_resume(oci: Oci, bundle, request) -> None:
    cid = container_id(request)
    oci("run", "-d", "-b", str(bundle(["/bin/sleep", "30"])), cid)
    oci("pause", cid)
    assert oci.state(cid)["status"] == "paused"
    if LAYOUT.where("freezer") == "v1":
        assert (Path(LAYOUT.v1["freezer"]) / "isola-oci" / cid / "freezer.state").read_text().strip() == "FROZEN"
    again = oci("pause", cid, check=False)
    assert again.returncode == os.EX_CANTCREAT
    oci("resume", cid)
    assert oci.state(cid)["status"] == "running"
    oci("pause", cid)
    oci("delete", "--force", cid)  # a paused container is thawed to die
    assert oci.ids() == []


def test_update_and_stats(oci: Oci, bundle, request) -> None:
    cid = container_id(request)
    oci("run", "-d", "-b", str(bundle(["/bin/sleep", "30"], _resources(memory={"limit": 64 << 20}))), cid)
    update = {"memory": {"limit": 48 << 20}, "pids": {"limit": 20}, "cpu": {"shares": 256}}
    oci("update", "--resources", "-", cid, input=json.dumps(update))
    assert (_v1("memory") / "isola-oci" / cid / "memory.limit_in_bytes").read_text().strip() == str(48 << 20)
    assert (_v1("pids") / "isola-oci" / cid / "pids.max").read_text().strip() == "20"
    oci("update", "--pids-limit", "30", cid)
    assert (_v1("pids") / "isola-oci" / cid / "pids.max").read_text().strip() == "30"
    bad = oci("update", "-r", "-", cid, input='{"memory": {"limit": "lots"}}', check=False)
    assert bad.returncode == os.EX_DATAERR and "linux.resources.memory.limit" in bad.stderr
    stats = json.loads(oci("events", "--stats", cid).stdout)
    assert stats["type"] == "stats" and stats["id"] == cid
    assert stats["data"]["pids"] == {"current": 1, "limit": 30}
    assert 0 < stats["data"]["memory"]["usage"]["usage"] <= 48 << 20
    assert stats["data"]["memory"]["usage"]["limit"] == 48 << 20


def test_unsupported_resource_is_a_clear_error(oci: Oci, bundle, request) -> None:
    cid = container_id(request)
    edit = _resources(unified={"memory.high": "1000000"})
    result = oci("create", "-b", str(bundle(["/bin/true"], edit)), cid, check=False)
    if LAYOUT.mode == cgroup_layout.Mode.V2:
        pytest.skip("this host is pure v2: unified keys are supported")
    assert result.returncode == os.EX_UNAVAILABLE and "unified" in result.stderr
    assert not list(Path("/sys/fs/cgroup").glob(f"*/isola-oci/{cid}"))


def test_v2_freeze_and_membership_in_the_unified_tree(tmp_path: Path) -> None:
    """The parts of the v2 backend this hybrid host can run for real: create, join, freeze, list, remove."""
    if LAYOUT.v2_mount is None or not Path(LAYOUT.v2_mount, "cgroup.procs").exists():
        pytest.skip("no cgroup2 tree mounted")
    group = V2(LAYOUT.v2_mount, os.path.join(LAYOUT.v2_mount, "isola-oci-test", f"v2-{os.getpid()}"))
    group.create()
    child = subprocess.Popen(["sleep", "30"])
    try:
        group.add(child.pid)
        assert group.pids() == [child.pid]
        group.freeze(True)
        assert group.frozen()
        assert Path(f"/proc/{child.pid}/stat").read_text().split()[2] in ("S", "D", "T")
        group.freeze(False)
        assert not group.frozen()
    finally:
        child.kill()
        child.wait()
        group.destroy()
        os.rmdir(os.path.dirname(group.path))


def _fake_v2(tmp_path: Path) -> V2:
    """A directory laid out like a cgroup2 cgroup with the memory, cpu, cpuset, io and pids controllers."""
    root = tmp_path / "cg"
    (root / "c").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    for name, value in {
        "memory.max": "max",
        "memory.swap.max": "max",
        "memory.low": "0",
        "cpu.weight": "100",
        "cpu.max": "max 100000",
        "cpuset.cpus": "",
        "cpuset.mems": "",
        "pids.max": "max",
        "io.weight": "default 100",
    }.items():
        (root / "c" / name).write_text(value)
    return V2(str(root), str(root / "c"))


def test_v2_translation_of_v1_style_resources(tmp_path: Path) -> None:
    group = _fake_v2(tmp_path)
    group.apply(
        {
            "memory": {"limit": 100 << 20, "swap": 150 << 20, "reservation": 50 << 20},
            "cpu": {"shares": 1024, "quota": 20000, "period": 50000, "cpus": "0-1"},
            "pids": {"limit": 0},
            "blockIO": {"weight": 500},
        }
    )

    def read(name: str) -> str:
        return (Path(group.path) / name).read_text()

    assert read("memory.max") == str(100 << 20)
    assert read("memory.swap.max") == str(50 << 20)  # v2 counts swap alone: swap - limit
    assert read("memory.low") == str(50 << 20)
    assert read("cpu.weight") == "39"
    assert read("cpu.max") == "20000 50000"
    assert read("cpuset.cpus") == "0-1"
    assert read("pids.max") == "max"
    assert read("io.weight") == str(io_weight(500))
    assert (cpu_weight(2), cpu_weight(262144)) == (1, 10000)
    with pytest.raises(UnsupportedError, match="eBPF"):
        group.apply({"devices": [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]})


def test_group_paths_for_absolute_relative_and_systemd_forms() -> None:
    group = Group.for_path(LAYOUT, "/a/b")
    for mount, directory in group.dirs.items():
        assert directory == os.path.join(mount, "a/b")
    with pytest.raises(UnsupportedError, match="systemd"):
        Group.for_path(LAYOUT, "system.slice:isola:x")
    assert subprocess.run([ISOLA_OCI, "--help"], capture_output=True, check=False).returncode == 0


def test_cached_layout_matches_the_probe_and_follows_changes(tmp_path: Path) -> None:
    cache = tmp_path / "layout.json"
    first = hierarchies.cached(str(cache))
    assert first == hierarchies.probe()
    assert hierarchies.cached(str(cache)) == first  # from the file now
    saved = json.loads(cache.read_text())
    saved.update(key="mounts of another boot", mode="v2", v1={})
    cache.write_text(json.dumps(saved))
    assert hierarchies.cached(str(cache)) == first  # a stale key means a new probe
    assert str(cgroup_layout.probe().mode) == first.mode
