"""Shared fixtures. Tests that need a host feature that is missing skip with the reason; none pass silently."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from isola import paths
from isola.assets import manifest
from isola.errors import NotFoundError
from isola.vmm.kvm import system

HARDWARE_KVM = ("kvm_amd", "kvm_intel")


@pytest.fixture
def isola_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private `$ISOLA_HOME` for one test, so nothing touches the host's real state."""
    home = tmp_path / "isola-home"
    home.mkdir()
    monkeypatch.setenv("ISOLA_HOME", str(home))
    yield home


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def real_kvm_problem() -> str | None:
    """Why this host's /dev/kvm cannot run `real_kvm` tests, or None when it can."""
    info = system.probe()
    if not info.usable:
        return f"no usable KVM: {info.problem}"
    if info.provider not in HARDWARE_KVM:
        return f"/dev/kvm is {info.provider or 'an unknown provider'}, not kvm_amd/kvm_intel; run `make test-nested`"
    return None


@pytest.fixture(autouse=True)
def _real_kvm_only(request: pytest.FixtureRequest) -> None:
    """`real_kvm` tests need a hardware-assisted KVM; elsewhere they skip with the reason (the nested lane
    runs them inside L1, where kvm_amd serves /dev/kvm)."""
    if request.node.get_closest_marker("real_kvm") is not None:
        problem = real_kvm_problem()
        if problem:
            pytest.skip(problem)


def skip_smp_in_nested_lane(cpus: int) -> None:
    """Guests with 2+ vCPUs hang intermittently inside the nested lane (L1 reports soft lockups under TCG's
    nested SVM; about 1 run in 4 here). They run where the KVM is real hardware, and in the lane on request."""
    if cpus > 1 and os.environ.get("ISOLA_NESTED_L1") and not os.environ.get("ISOLA_NESTED_SMP"):
        pytest.skip("SMP guests hang intermittently under TCG's nested SVM; ISOLA_NESTED_SMP=1 runs them")


def amd64_asset(name: str) -> Path:
    """A cached amd64 guest asset (kernel, busybox); the test skips with the reason when it is not cached."""
    try:
        return manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "amd64", name)
    except NotFoundError as exc:
        pytest.skip(f"amd64 {name} not cached (isola assets fetch): {exc.message}")
