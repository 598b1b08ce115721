"""Fixtures of the nested-lane tests: the `lane` that boots L1, and its time report.

(The `real_kvm` marker and its skip live in tests/conftest.py: every test directory may use them.) Tests that
boot L1 skip when QEMU or the cached assets are missing, and inside L1 itself (no lane within the lane).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from isola.errors import NotFoundError
from isola.vmm.nested import image, lane

_TIMES: list[tuple[str, str]] = []


LaneRunner = Callable[..., lane.L1Result]


@pytest.fixture(scope="session")
def lane_ready() -> None:
    """Skip unless this host can boot L1: QEMU installed, amd64 assets cached, not already inside L1."""
    if os.environ.get("ISOLA_NESTED_L1"):
        pytest.skip("already inside the nested lane's L1")
    if shutil.which(lane.QEMU) is None:
        pytest.skip(f"{lane.QEMU} is not installed (apt-get install qemu-system-x86)")
    try:
        image.prepare()
    except NotFoundError as exc:
        pytest.skip(f"amd64 assets missing: {exc.message} ({exc.hint})")


@pytest.fixture(scope="session")
def lane_run(lane_ready: None) -> LaneRunner:
    """`run_in_l1`, with each run's time summary kept for the end-of-session report."""

    def run(argv: list[str], **kwargs: Any) -> lane.L1Result:
        result = lane.run_in_l1(argv, **kwargs)
        lane_note(" ".join(argv), result.summary())
        return result

    return run


def lane_note(what: str, text: str) -> None:
    """Add a line to the "nested lane times" section printed at the end of the session."""
    _TIMES.append((what, text))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TIMES:
        terminalreporter.section("nested lane times")
        for what, text in _TIMES:
            terminalreporter.write_line(f"{what}: {text}")
