"""The nested lane end to end: L0 QEMU (TCG) boots L1, L1 has kvm_amd, and a KVM guest runs inside it.

Each test boots L1 (about 3-10 s here), so the facts that one boot can show are gathered by one run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from isola.vmm.nested import lane
from tests.nested import kvm_hello
from tests.nested.conftest import LaneRunner, lane_note

pytestmark = pytest.mark.slow

PROJECT = lane.project_dir()
FACTS_MARK = "L1-FACTS "


@pytest.fixture(scope="module")
def facts_run(lane_run: LaneRunner) -> tuple[lane.L1Result, dict[str, Any]]:
    if PROJECT is None:
        pytest.skip("isola is not running from a source checkout")
    result = lane_run(["python", "-m", "tests.nested.l1_facts"], timeout=180)
    assert result.status == 0, result.console
    line = next(line for line in result.output.splitlines() if line.startswith(FACTS_MARK))
    facts: dict[str, Any] = json.loads(line.removeprefix(FACTS_MARK))
    lane_note("tiny KVM guest in L1 (open → HLT)", f"{facts['hello']['seconds'] * 1000:.0f}ms")
    return result, facts


def test_l1_reaches_init_and_reports_its_stages(facts_run):
    result, _ = facts_run
    assert list(result.stages) == ["init", "modules", "mounted", "done"]
    assert 0 < result.stages["init"] < result.stages["modules"] < result.stages["done"] <= result.wall
    assert "launch→L1 /init" in result.summary()


def test_l1_kvm_is_kvm_amd_and_usable(facts_run):
    _, facts = facts_run
    assert facts["kvm"] == {"usable": True, "provider": "kvm_amd", "api_version": 12}


def test_nested_kvm_guest_runs_in_l1(facts_run):
    _, facts = facts_run
    hello = facts["hello"]
    assert hello["output"] == kvm_hello.GREETING.decode()
    assert hello["last_exit"] == kvm_hello.KVM_EXIT_HLT


def test_host_files_are_visible_and_read_only(facts_run):
    _, facts = facts_run
    assert PROJECT is not None
    assert facts["pyproject_sha256"] == hashlib.sha256((PROJECT / "pyproject.toml").read_bytes()).hexdigest()
    assert facts["host_write_errno"] == errno.EROFS
    assert facts["tmp_write_errno"] == 0


def test_project_is_writable_in_l1_only(facts_run):
    _, facts = facts_run
    assert PROJECT is not None
    assert facts["project_write_errno"] == 0
    assert not (PROJECT / "isola-nested-lane-probe").exists()


def test_exit_status_and_output_come_back(lane_run):
    """The venv's Python, in the project directory; its run is also the lane's measure of Python's start-up."""
    code = "import os, sys; print(f'out-{6 * 7}'); print(os.getcwd()); sys.exit(7)"
    result = lane_run(["python", "-c", code], timeout=120)
    assert result.status == 7
    assert result.output == f"out-42\n{PROJECT or '/'}\n"
    lane_note(
        "python start in L1 (chroot, venv python -c, exit)", f"{result.stages['done'] - result.stages['mounted']:.2f}s"
    )


def test_real_kvm_tests_pass_under_pytest_in_l1(lane_run):
    """What `make test-nested` does, on this module's real_kvm tests: they must run there, not skip."""
    argv = ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:anyio", "-p", "no:hypothesispytest",
            "-m", "real_kvm", "-rs",
            "tests/nested/test_real_kvm.py"]  # fmt: skip
    result = lane_run(argv, timeout=300)
    assert result.status == 0, result.output
    assert "2 passed" in result.output
    assert "skipped" not in result.output


def test_hung_command_is_killed_at_the_timeout(lane_run):
    started = time.monotonic()
    with pytest.raises(lane.LaneTimeoutError, match=r"L1 command still running after 15s; QEMU killed") as err:
        lane_run(["sleep", "600"], timeout=15)
    assert 15 <= time.monotonic() - started < 15 + lane._REAP_TIMEOUT
    assert "stage=mounted" in err.value.console


def test_boot_that_does_not_reach_init_is_killed(lane_run):
    with pytest.raises(lane.LaneTimeoutError, match=r"L1 did not reach /init within 0.2s"):
        lane_run(["true"], timeout=60, boot_timeout=0.2)


def test_set_up_failure_in_l1_is_an_error_not_a_status(lane_run, tmp_path):
    # The host checks that a writable directory exists, so make one vanish between that check and L1's mount.
    doomed = Path("/var/tmp") / f"isola-nested-{tmp_path.name}"
    doomed.mkdir()
    try:
        with pytest.raises(lane.LaneError, match=rf"L1 set-up failed: overlay on {doomed}"):
            writable = [lane.project_dir(), doomed]  # the project stays visible wherever it is checked out
            lane_run(["true"], timeout=120, writable=writable, on_line=lambda line: _remove_at_init(line, doomed))
    finally:
        if doomed.exists():
            doomed.rmdir()


def _remove_at_init(line: str, doomed: Path) -> None:
    if " stage=init " in line and doomed.exists():
        doomed.rmdir()
