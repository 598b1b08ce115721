"""`isola doctor` on this very host, checked against independent readings of the same facts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from isola.vmm.kvm import DEV_KVM, ioctls, system

ISOLA = [sys.executable, "-m", "isola.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ISOLA, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    result = run("doctor", "--json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_one_line_per_kind_and_mode(report):
    got = [(k["kind"], k["mode"]) for k in report["kinds"]]
    assert got == [("emulated", None), ("vm", "kernel"), ("vm", "process"), ("container", None), ("metal", None)]
    for k in report["kinds"]:
        assert k["status"] in {"usable", "usable with limits", "unusable"}
        assert k["reason"] and "\n" not in k["reason"]


def test_kvm_provider_matches_the_loaded_module(report):
    loaded = [m for m in ("kvm_pvm", "kvm_intel", "kvm_amd") if Path("/sys/module", m).exists()]
    if not loaded:
        assert report["kvm"]["provider"] is None
        return
    assert report["kvm"]["provider"] == loaded[0]
    if loaded[0] == "kvm_pvm":
        kinds = {(k["kind"], k["mode"]): k["status"] for k in report["kinds"]}
        assert kinds["vm", "kernel"] == "unusable"
        assert kinds["vm", "process"] == "usable"
        assert "5000x" in report["kvm"]["meaning"]


def test_cgroup_mode_matches_the_mount_table(report):
    fstypes = {line.split()[2] for line in Path("/proc/mounts").read_text().splitlines()}
    v1, v2 = "cgroup" in fstypes, "cgroup2" in fstypes
    expected = "hybrid" if v1 and v2 else "v1" if v1 else "v2" if v2 else "none"
    assert report["cgroups"]["mode"] == expected
    if v2 and report["cgroups"]["v2_mount"]:
        controllers = Path(report["cgroups"]["v2_mount"], "cgroup.controllers").read_text().split()
        assert sorted(controllers) == report["cgroups"]["v2_controllers"]


def test_namespaces_are_really_tried(report):
    if os.geteuid() != 0:
        pytest.skip("needs root: unprivileged unshare of most namespaces fails by design")
    for name in ("user", "pid", "net", "mnt", "uts", "ipc", "cgroup"):
        present = Path("/proc/self/ns", name).exists()
        assert report["namespaces"][name]["ok"] == present, report["namespaces"][name]


def test_kvm_api_version_by_a_real_ioctl():
    if not DEV_KVM.exists():
        pytest.skip("no /dev/kvm on this host")
    info = system.probe()
    assert info.usable, info.problem
    assert info.api_version == ioctls.KVM_API_VERSION
    assert info.capabilities["user_memory"] == 1


def test_table_output_names_the_provider_and_every_kind():
    result = run("doctor")
    assert result.returncode == 0, result.stderr
    for word in ("kvm", "cgroups", "emulated", "vm (kernel)", "vm (process)", "container", "metal"):
        assert word in result.stdout


def test_tour_runs_the_rungs_that_exist_and_is_honest_about_the_rest():
    from isola.cli.tour import WORKLOADS

    result = run("tour", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["kind"] for r in rows} == {"emulated", "vm", "container", "metal"}
    for r in rows:
        built = (r["kind"], r["mode"]) in WORKLOADS
        assert (r["engine"] is not None) == built
        if not built:
            assert r["tour"] == "no engine yet" and r["output"] is None
    container = next(r for r in rows if r["kind"] == "container")
    if container["host"] != "unusable" and not container["tour"].startswith("needs assets"):
        assert container["tour"] == "ran", container  # the busybox image is built first when the store lacks it
        assert container["output"] == "in a container, PID 1: 10 9 8"
    emulated = next(r for r in rows if r["kind"] == "emulated")
    if emulated["tour"].startswith("needs assets"):
        pytest.skip("riscv64 assets not cached")
    assert emulated["tour"] == "ran"
    assert emulated["output"] == "riscv64: 10 9 8"
    process_vm = next(r for r in rows if (r["kind"], r["mode"]) == ("vm", "process"))
    if process_vm["host"] == "usable" and not process_vm["tour"].startswith("needs assets"):
        assert process_vm["tour"] == "ran", process_vm
        assert process_vm["output"] == "x86_64 at CPL 3, PID 1: 10 9 8"
