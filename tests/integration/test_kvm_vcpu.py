"""The KVM layer against the host's real /dev/kvm, with tiny hand-assembled guests.

These run on kvm_pvm too (guest kernel-mode code is emulated there, but a handful of instructions is fine) and
on any VMX/SVM host. Skips with the reason when /dev/kvm is missing or unusable.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from isola.vmm.kvm import ioctls, system
from isola.vmm.kvm.vcpu import (
    HltExit,
    Interrupted,
    IoExit,
    MmioExit,
    ShutdownExit,
    Vcpu,
)
from isola.vmm.kvm.vm import Kvm, Vm
from isola.vmm.memory import MIB, GuestMemory
from isola.vmm.x86 import cpuid, entry, msrs

pytestmark = pytest.mark.timeout(60)

CODE = 0x100000  # long-mode guests run here, real-mode ones at 0x1000
MMIO = 0xD000_0000  # in the hole: no slot backs it


@pytest.fixture(scope="module", autouse=True)
def _kvm_available() -> None:
    info = system.probe()
    if not info.usable:
        pytest.skip(f"no usable KVM: {info.problem}")


class Guest:
    """A VM with 4 MiB of RAM in slot 0 and vCPUs made on demand."""

    def __init__(self) -> None:
        self.kvm = Kvm()
        self.vm: Vm = self.kvm.create_vm()
        self.vm.set_x86_system_pages()
        self.memory = GuestMemory(4 * MIB)
        self.vm.set_user_memory_region(0, 0, self.memory.size, self.memory.host_address)
        self.supported = self.kvm.supported_cpuid()

    def vcpu(self, index: int = 0) -> Vcpu:
        vcpu = self.vm.create_vcpu(index)
        vcpu.memory = self.memory
        vcpu.set_cpuid(cpuid.guest_cpuid(self.supported, vcpu_index=index, vcpu_count=1))
        vcpu.set_msrs(msrs.boot_msrs())
        entry.init_vcpu_state(vcpu, lapic=False)
        return vcpu

    def real_mode(self, code: bytes, at: int = 0x1000, index: int = 0) -> Vcpu:
        self.memory.write(at, code)
        vcpu = self.vcpu(index)
        sregs = vcpu.get_sregs()
        sregs.cs.base = 0
        sregs.cs.selector = 0
        vcpu.set_sregs(sregs)
        regs = vcpu.get_regs()
        regs.rip = at
        regs.rflags = 2
        vcpu.set_regs(regs)
        return vcpu

    def long_mode(self, code: bytes) -> Vcpu:
        self.memory.write(CODE, code)
        vcpu = self.vcpu()
        entry.enter_long_mode(vcpu, self.memory, rip=CODE, rsi=0x7000)
        return vcpu

    def close(self) -> None:
        self.vm.close()
        self.memory.close()
        self.kvm.close()


@pytest.fixture
def guest() -> Iterator[Guest]:
    g = Guest()
    yield g
    g.close()


def run_until_exit(vcpu: Vcpu) -> object:
    while True:
        ex = vcpu.run()
        if not isinstance(ex, Interrupted):
            return ex


# mov al, 0x42 ; out 0x10, al ; in al, 0x11 ; mov [0x3000], al ; hlt
REAL_MODE_OUT_IN_HLT = bytes.fromhex("b042 e610 e411 a20030 f4")


def test_real_mode_out_in_hlt(guest):
    vcpu = guest.real_mode(REAL_MODE_OUT_IN_HLT)
    assert run_until_exit(vcpu) == IoExit(port=0x10, size=1, is_write=True, items=1, data=b"\x42")
    assert run_until_exit(vcpu) == IoExit(port=0x11, size=1, is_write=False, items=1, data=b"")
    vcpu.complete_io_in(b"\x77")
    assert run_until_exit(vcpu) == HltExit()
    assert guest.memory.read(0x3000, 1) == b"\x77"  # the IN's answer reached the guest and guest RAM the host


# Long mode, set up by entry.enter_long_mode:
#   mov rax, 0x1122334455667788 ; mov [0x3000], rax
#   mov eax, 0x1234 ; out 0x10, eax
#   mov ebx, 0xd0000000 ; mov dword [rbx], 0xabcd ; mov eax, [rbx] ; mov [0x3008], eax
#   mov [0x3010], rsi ; hlt
LONG_MODE = bytes.fromhex(
    "48b88877665544332211 48890425 00300000"
    "b834120000 e710"
    "bb000000d0 c703cdab0000 8b03 89042508300000"
    "4889342510300000 f4"
)


def test_long_mode_entry_io_and_mmio(guest):
    vcpu = guest.long_mode(LONG_MODE)
    assert run_until_exit(vcpu) == IoExit(
        port=0x10, size=4, is_write=True, items=1, data=(0x1234).to_bytes(4, "little")
    )
    assert run_until_exit(vcpu) == MmioExit(address=MMIO, length=4, is_write=True, data=(0xABCD).to_bytes(4, "little"))
    assert run_until_exit(vcpu) == MmioExit(address=MMIO, length=4, is_write=False, data=b"")
    vcpu.complete_mmio_read(bytes([1, 2, 3, 4]))
    assert run_until_exit(vcpu) == HltExit()
    assert guest.memory.read(0x3000, 8) == (0x1122334455667788).to_bytes(8, "little")
    assert guest.memory.read(0x3008, 4) == bytes([1, 2, 3, 4])
    assert guest.memory.read(0x3010, 8) == (0x7000).to_bytes(8, "little")  # RSI as the boot protocol sets it
    sregs = vcpu.get_sregs()
    assert sregs.cs.l == 1 and sregs.efer & entry.EFER_LMA and sregs.cr0 & entry.CR0_PG


def test_string_io_carries_every_item(guest):
    # mov si, 0x3000 ; mov cx, 3 ; mov dx, 0x10 ; rep outsw ; hlt   (real mode)
    guest.memory.write(0x3000, b"aabbcc")
    vcpu = guest.real_mode(bytes.fromhex("be0030 b90300 ba1000 f36f f4"))
    data = b""
    while True:
        ex = run_until_exit(vcpu)
        if isinstance(ex, HltExit):
            break
        assert isinstance(ex, IoExit) and ex.port == 0x10 and ex.size == 2 and ex.is_write
        data += ex.data
    assert data == b"aabbcc"


def test_sync_regs_read_and_write_without_ioctls(guest):
    if not guest.vm.check_extension(ioctls.KVM_CAP_SYNC_REGS) & ioctls.KVM_SYNC_X86_REGS:
        pytest.skip("this KVM has no KVM_CAP_SYNC_REGS")
    # mov al, 1 ; out 0x10, al ; out 0x10, al ; hlt
    vcpu = guest.real_mode(bytes.fromhex("b001 e610 e610 f4"))
    vcpu.enable_sync_regs()
    assert run_until_exit(vcpu) == IoExit(0x10, 1, True, 1, b"\x01")
    regs = vcpu.exit_regs()
    assert regs.rax & 0xFF == 1
    regs.rax = 0x55
    vcpu.mark_regs_dirty()
    assert run_until_exit(vcpu) == IoExit(0x10, 1, True, 1, b"\x55")


def test_triple_fault_is_reported_with_rip_and_bytes(guest):
    vcpu = guest.long_mode(bytes.fromhex("90 0f0b"))  # nop ; ud2 -- no IDT, so #UD escalates to a triple fault
    ex = run_until_exit(vcpu)
    assert isinstance(ex, ShutdownExit)
    assert "triple fault" in ex.report
    if "reset state" in ex.report:  # standard KVM on AMD resets the vCPU at a shutdown: nothing left to show
        assert vcpu.get_regs().rip == 0xFFF0
    else:
        assert f"RIP {CODE + 1:#x}" in ex.report
        assert "64-bit" in ex.report
        assert "0f 0b" in ex.report


def test_two_vcpus_each_reach_their_out(guest):
    # vCPU n: mov al, n ; out 0x10, al ; hlt -- both run at once, each in its own thread
    cpus = [guest.real_mode(bytes([0xB0, n, 0xE6, 0x10, 0xF4]), at=0x1000 + 0x100 * n, index=n) for n in range(2)]
    seen: dict[int, object] = {}

    def run(vcpu: Vcpu) -> None:
        vcpu.prepare_thread()
        seen[vcpu.index] = run_until_exit(vcpu)
        vcpu.release_thread()

    threads = [threading.Thread(target=run, args=(v,)) for v in cpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert seen == {n: IoExit(0x10, 1, True, 1, bytes([n])) for n in range(2)}


def test_kick_interrupts_a_vcpu_spinning_in_the_guest(guest):
    vcpu = guest.long_mode(bytes.fromhex("ebfe"))  # jmp $
    result: list[object] = []
    ready = threading.Event()

    def spin() -> None:
        vcpu.prepare_thread()
        ready.set()
        result.append(vcpu.run())
        vcpu.release_thread()

    thread = threading.Thread(target=spin)
    thread.start()
    ready.wait(10)
    time.sleep(0.3)  # well inside KVM_RUN by now
    assert thread.is_alive()
    started = time.monotonic()
    vcpu.kick()
    thread.join(10)
    assert not thread.is_alive()
    assert result == [Interrupted()]
    assert time.monotonic() - started < 2
    regs = vcpu.get_regs()
    assert regs.rip == CODE  # still spinning on the jmp: nothing was skipped


def test_kick_before_run_makes_the_next_run_return(guest):
    vcpu = guest.long_mode(bytes.fromhex("ebfe"))
    vcpu.kick()  # no thread registered: immediate_exit alone must do it
    assert vcpu.run() == Interrupted()
    assert vcpu.kvm_run.immediate_exit == 0


def test_ioeventfd_takes_a_port_write_without_an_exit(guest):
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        guest.vm.assign_ioeventfd(efd, 0x500, 1, pio=True)
        # mov dx, 0x500 ; out dx, al ; mov al, 7 ; out 0x10, al ; hlt
        vcpu = guest.real_mode(bytes.fromhex("ba0005 ee b007 e610 f4"))
        assert run_until_exit(vcpu) == IoExit(0x10, 1, True, 1, b"\x07")
        assert os.eventfd_read(efd) == 1
        guest.vm.assign_ioeventfd(efd, 0x500, 1, pio=True, deassign=True)
    finally:
        os.close(efd)


def test_supported_cpuid_has_the_kvm_leaves(guest):
    leaves = {e.function for e in guest.supported}
    assert 0x1 in leaves and 0x4000_0000 in leaves


def test_msr_refusal_names_the_msr(guest):
    vcpu = guest.vcpu()
    with pytest.raises(Exception, match="0xdeadbeef"):
        vcpu.set_msrs({msrs.LSTAR: 0, 0xDEADBEEF: 1})
    assert vcpu.get_msrs([msrs.IA32_MISC_ENABLE])[msrs.IA32_MISC_ENABLE] & msrs.MISC_ENABLE_FAST_STRING
