"""Fixtures of the emulator tests: where the self-checking programs live, and the cross toolchain."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emu.bare import AS, LD, QEMU, missing_tools

ISA_DIR = Path(__file__).parent / "isa"


@pytest.fixture(scope="session")
def isa_dir() -> Path:
    return ISA_DIR


@pytest.fixture
def cross_tools() -> None:
    """Skip (with the package to install) unless GNU as/ld for riscv64 and qemu-riscv64 are present."""
    reason = missing_tools(AS, LD, QEMU)
    if reason:
        pytest.skip(reason)
