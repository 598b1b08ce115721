"""Tests that need a hardware-assisted KVM. Here they skip; `make test-nested` runs them in L1 under kvm_amd."""

from __future__ import annotations

import pytest

from isola.vmm.kvm import system
from tests.nested import kvm_hello

pytestmark = pytest.mark.real_kvm


def test_kvm_is_hardware_assisted():
    info = system.probe()
    assert info.usable, info.problem
    assert info.provider in ("kvm_amd", "kvm_intel")


def test_tiny_real_mode_guest_runs_to_hlt():
    result = kvm_hello.run()
    assert result.output == kvm_hello.GREETING.decode()
    assert result.io_exits == len(kvm_hello.GREETING)
    assert result.last_exit == kvm_hello.KVM_EXIT_HLT
