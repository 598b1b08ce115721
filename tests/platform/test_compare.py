"""`isola compare` for real on this host: one busybox workload on every rung, the same answer from each, metal
the baseline, a rung that cannot run skipped with its reason, and nothing of it (cgroups, bundles) left."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

if os.geteuid() != 0:
    pytest.skip("compare runs metal in a cgroup and containers: root", allow_module_level=True)


def _isola(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "isola.cli", *args], capture_output=True, text=True, timeout=300)


def test_every_rung_gives_the_same_answer_and_metal_is_the_baseline() -> None:
    done = _isola("compare", "awk", "--quick", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    rows = {r["rung"]: r for r in doc["rungs"]}
    assert list(rows) == ["emulated", "vm/process", "container", "metal"]
    metal = rows["metal"]
    assert metal["output"] == "1999000" and metal["vs_metal"] == 1.0 and metal["startup_s"] > 0
    for row in rows.values():
        if row.get("skipped"):
            assert row["output"] is None and row["skipped"]  # a reason, never a silent gap
        else:
            assert row["output"] == "1999000" and row["agrees"] and row["run_s"] > 0 and row["vs_metal"] > 0
    if not rows["emulated"].get("skipped"):
        assert rows["emulated"]["vs_metal"] > 1  # interpretation costs; the measurement must show it
    assert not glob.glob("/sys/fs/cgroup/*/isola-metal/compare-*")
    assert not glob.glob("/tmp/isola-compare-*")


def test_the_table_and_a_bad_workload() -> None:
    done = _isola("compare", "sha256", "--quick")
    assert done.returncode == 0, done.stderr
    assert "vs metal" in done.stdout and "metal" in done.stdout
    bad = _isola("compare", "bogus")
    assert bad.returncode == 2 and "Invalid value" in bad.stderr and "Traceback" not in bad.stderr
