"""Shared fixtures. Tests that need a host feature that is missing skip with the reason; none pass silently."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


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
