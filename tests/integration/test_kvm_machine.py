"""The Machine against the host's real /dev/kvm: buses, devices, how a guest's end becomes an ExitStatus, stopping,
and where `load_linux` puts the kernel, initrd, command line, zero page and MP table.

Booting Linux itself needs a KVM that runs guest kernel code natively (the nested lane checks that); the guests
here are a few hand-assembled instructions, which kvm_pvm runs too.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

import pytest

from isola import paths
from isola.assets import manifest
from isola.errors import FormatError, NotFoundError, UsageError
from isola.vmm.kvm import system
from isola.vmm.launch import attach_legacy_devices
from isola.vmm.machine import ExitKind, ExitStatus, Machine, MachineConfig
from isola.vmm.x86 import entry, gdt, mptable
from isola.vmm.x86.layout import CMDLINE_ADDR, KERNEL_LOAD_ADDR, MPTABLE_ADDR, PAGE_TABLES_ADDR, ZERO_PAGE_ADDR

pytestmark = pytest.mark.timeout(60)

CODE = 0x100000
MIB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def _kvm_available() -> None:
    info = system.probe()
    if not info.usable:
        pytest.skip(f"no usable KVM: {info.problem}")


@pytest.fixture(scope="module")
def kernel() -> Path:
    try:
        return manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "amd64", "kernel")
    except NotFoundError as exc:
        pytest.skip(f"amd64 kernel not cached (isola assets fetch): {exc.message}")


def boot_tiny(machine: Machine, code: bytes, *, vcpu: int = 0) -> None:
    machine.memory.write(CODE + 0x1000 * vcpu, code)
    entry.enter_long_mode(machine.vcpus[vcpu], machine.memory, rip=CODE + 0x1000 * vcpu, rsi=0)


class Register:
    """A device with one 64-bit register; records every access."""

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self.log: list[tuple[str, int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.log.append(("r", offset, size, self.value))
        return self.value

    def write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("w", offset, size, value))
        self.value = value


def print_then(message: bytes, tail: bytes) -> bytes:
    """Long mode: write `message` to COM1 byte by byte with OUT, then run `tail`."""
    # mov dx, 0x3f8 ; mov rsi, msg ; 1: lodsb ; test al, al ; jz 2f ; out dx, al ; jmp 1b ; 2: <tail>
    msg_at = CODE + 0x800
    code = bytes.fromhex("66baf803 48be") + msg_at.to_bytes(8, "little") + bytes.fromhex("ac 84c0 7403 ee ebf8")
    return code + tail + bytes(0x800 - len(code) - len(tail)) + message + b"\0"


HLT_FOREVER = bytes.fromhex("f4 ebfd")  # hlt ; jmp back to it


def test_all_vcpus_halting_without_irqchip_is_halted():
    with Machine(MachineConfig(cpus=1, memory_mib=4, irqchip=False)) as m:
        boot_tiny(m, bytes.fromhex("f4"))
        status = m.run(timeout=20)
    assert status == ExitStatus(ExitKind.HALTED, "every vCPU halted")
    assert status.exit_code == 0


def test_exits_reach_devices_on_both_buses():
    port, reg = Register(), Register(0x1122334455667788)
    # mov eax, 0x0badf00d ; mov dx, 0x510 ; out dx, eax ; in ax, dx
    # mov rbx, 0xd0000008 ; mov rax, [rbx] ; mov [rbx], eax ; mov [0x3000], rax ; hlt
    code = bytes.fromhex("b80df0ad0b 66ba1005 ef 66ed48bb080000d000000000 488b03 8903 4889042500300000 f4")
    with Machine(MachineConfig(cpus=1, memory_mib=4, irqchip=False)) as m:
        m.pio_bus.register(0x510, 4, port)
        m.mmio_bus.register(0xD000_0000, 0x1000, reg)
        boot_tiny(m, code)
        status = m.run(timeout=20)
        assert status.kind is ExitKind.HALTED, status
        assert port.log == [("w", 0, 4, 0x0BADF00D), ("r", 0, 2, 0x0BADF00D)]
        assert reg.log == [("r", 8, 8, 0x1122334455667788), ("w", 8, 4, 0x55667788)]
        assert m.memory.read(0x3000, 8) == (0x1122334455667788).to_bytes(8, "little")


def test_unclaimed_ports_read_all_ones():
    # in al, 0x71 ; mov [0x3000], al ; in eax, 0x60... (no device anywhere) ; mov [0x3004], eax ; hlt
    code = bytes.fromhex("e471 88042500300000 e560 89042504300000 f4")
    with Machine(MachineConfig(cpus=1, memory_mib=4, irqchip=False)) as m:
        boot_tiny(m, code)
        assert m.run(timeout=20).kind is ExitKind.HALTED
        assert m.memory.read(0x3000, 1) == b"\xff"
        assert m.memory.read(0x3004, 4) == b"\xff" * 4


def test_serial_output_and_console_power_off():
    out: list[bytes] = []
    with Machine(MachineConfig(cpus=1, memory_mib=8)) as m:
        attach_legacy_devices(m, out.append)
        boot_tiny(m, print_then(b"hello from the guest\r\n[ 1.0] reboot: Power down\r\n", HLT_FOREVER))
        status = m.run(timeout=30)
    assert b"".join(out) == b"hello from the guest\r\n[ 1.0] reboot: Power down\r\n"
    assert status == ExitStatus(ExitKind.POWEROFF, "[ 1.0] reboot: Power down")
    assert status.exit_code == 0


def test_i8042_reset_is_a_reboot():
    with Machine(MachineConfig(cpus=1, memory_mib=8)) as m:
        attach_legacy_devices(m, lambda data: None)
        boot_tiny(m, bytes.fromhex("b0fe e664") + HLT_FOREVER)  # mov al, 0xfe ; out 0x64, al
        status = m.run(timeout=30)
    assert status.kind is ExitKind.REBOOT
    assert status.exit_code == 0


def test_reset_after_a_panic_line_is_an_error():
    with Machine(MachineConfig(cpus=1, memory_mib=8)) as m:
        attach_legacy_devices(m, lambda data: None)
        panic = b"[ 2.0] Kernel panic - not syncing: Attempted to kill init!\r\n"
        boot_tiny(m, print_then(panic, bytes.fromhex("b0fe e664") + HLT_FOREVER))
        status = m.run(timeout=30)
    assert status.kind is ExitKind.ERROR
    assert "Kernel panic - not syncing: Attempted to kill init!" in status.message
    assert status.exit_code == 1


def test_triple_fault_is_an_error_with_a_report():
    with Machine(MachineConfig(cpus=1, memory_mib=4, irqchip=False)) as m:
        boot_tiny(m, bytes.fromhex("0f0b"))  # ud2, no IDT
        status = m.run(timeout=20)
    assert status.kind is ExitKind.ERROR
    assert "triple fault" in status.message
    assert f"RIP {CODE:#x}" in status.message or "reset state" in status.message  # AMD resets the vCPU first


def test_a_failing_device_ends_the_machine_instead_of_hanging_it():
    class Broken:
        def read(self, offset: int, size: int) -> int:
            raise RuntimeError("device bug")

        def write(self, offset: int, size: int, value: int) -> None:
            raise RuntimeError("device bug")

    with Machine(MachineConfig(cpus=1, memory_mib=4, irqchip=False)) as m:
        m.pio_bus.register(0x10, 1, Broken())
        boot_tiny(m, bytes.fromhex("e610 f4"))
        status = m.run(timeout=20)
    assert status.kind is ExitKind.ERROR
    assert "RuntimeError: device bug" in status.message


@pytest.mark.parametrize("irqchip", [False, True])
def test_stop_kicks_every_spinning_vcpu(irqchip):
    cpus = 1 if irqchip else 2  # with an irqchip, APs wait for SIPI inside KVM; stop must still end them
    with Machine(MachineConfig(cpus=2, memory_mib=4, irqchip=irqchip)) as m:
        for index in range(cpus):
            boot_tiny(m, bytes.fromhex("ebfe"), vcpu=index)  # jmp $
        m.start()
        assert m.wait(0.5) is None
        started = time.monotonic()
        status = m.stop()
        assert time.monotonic() - started < 3
    assert status == ExitStatus(ExitKind.STOPPED, "stopped by the VMM")
    assert not [t for t in threading.enumerate() if t.name.startswith("vcpu")]


def test_request_stop_from_another_thread_wins_once():
    with Machine(MachineConfig(cpus=1, memory_mib=4, irqchip=False)) as m:
        boot_tiny(m, bytes.fromhex("ebfe"))
        m.start()
        threading.Timer(0.2, m.request_stop, args=(ExitStatus(ExitKind.POWEROFF, "api"),)).start()
        assert m.wait(10) == ExitStatus(ExitKind.POWEROFF, "api")
        m.request_stop(ExitStatus(ExitKind.ERROR, "too late"))
        assert m.stop() == ExitStatus(ExitKind.POWEROFF, "api")


def test_timeout_is_an_error():
    with Machine(MachineConfig(cpus=1, memory_mib=4, irqchip=False)) as m:
        boot_tiny(m, bytes.fromhex("ebfe"))
        status = m.run(timeout=0.3)
    assert status.kind is ExitKind.ERROR and "did not finish within 0.3 s" in status.message


def test_irq_lines_and_irqfd_need_and_use_the_irqchip():
    with Machine(MachineConfig(cpus=1, memory_mib=4)) as m:
        line = m.irq_line(4)
        line.set_level(True)
        line.set_level(False)
        efd = os.eventfd(0)
        try:
            m.vm.assign_irqfd(efd, 5)
            m.vm.assign_irqfd(efd, 5, deassign=True)
        finally:
            os.close(efd)
    with Machine(MachineConfig(cpus=1, memory_mib=4, irqchip=False)) as m, pytest.raises(UsageError):
        m.irq_line(4)


# -- loading Linux (no run: that needs a real KVM)


@pytest.mark.parametrize("protocol", [64, 32])
def test_load_linux_layout(kernel, tmp_path, protocol):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 1000)
    cmdline = "console=ttyS0 panic=-1 quiet"
    with Machine(MachineConfig(cpus=2, memory_mib=256)) as m:
        layout = m.load_linux(kernel, cmdline, initrd, protocol=protocol)
        mem = m.memory
        image = kernel.read_bytes()
        pm_offset = (image[0x1F1] + 1) * 512
        assert mem.read(KERNEL_LOAD_ADDR, 4096) == image[pm_offset : pm_offset + 4096]
        assert mem.read(CMDLINE_ADDR, len(cmdline) + 1) == cmdline.encode() + b"\0"
        zp = mem.read(ZERO_PAGE_ADDR, 4096)
        assert zp[0x202:0x206] == b"HdrS"
        assert struct.unpack_from("<I", zp, 0x228)[0] == CMDLINE_ADDR
        initrd_addr, initrd_size = struct.unpack_from("<II", zp, 0x218)
        assert (initrd_addr, initrd_addr + initrd_size) == layout.initrd
        assert initrd_size == initrd.stat().st_size
        assert mem.read(initrd_addr, initrd_size) == initrd.read_bytes()
        assert initrd_addr >= layout.kernel[1] and initrd_addr + initrd_size <= 256 * MIB
        assert zp[0x1E8] == 3  # e820 entries
        table = mptable.build(2, MPTABLE_ADDR)
        assert mem.read(MPTABLE_ADDR, len(table)) == table
        assert layout.release.startswith("6.")
        regs, sregs = m.vcpus[0].get_regs(), m.vcpus[0].get_sregs()
        assert regs.rsi == ZERO_PAGE_ADDR
        assert regs.rflags == 2
        assert (sregs.cs.selector, sregs.ds.selector, sregs.ss.selector) == (gdt.BOOT_CS, gdt.BOOT_DS, gdt.BOOT_DS)
        if protocol == 64:
            assert regs.rip == KERNEL_LOAD_ADDR + 0x200 == layout.entry
            assert sregs.cs.l == 1 and sregs.cr3 == PAGE_TABLES_ADDR and sregs.cr0 & entry.CR0_PG
            assert sregs.efer & entry.EFER_LMA
        else:
            assert regs.rip == KERNEL_LOAD_ADDR == layout.entry
            assert sregs.cs.l == 0 and sregs.cs.db == 1 and not sregs.cr0 & entry.CR0_PG
            assert sregs.cr0 & entry.CR0_PE
        assert m.vcpus[1].get_regs().rip != layout.entry  # the AP waits for Linux's SIPI


def test_load_linux_refuses_too_little_memory(kernel):
    with Machine(MachineConfig(cpus=1, memory_mib=64)) as m, pytest.raises(UsageError, match="MiB of guest memory"):
        m.load_linux(kernel, "console=ttyS0")


def test_load_linux_refuses_a_long_command_line(kernel):
    with Machine(MachineConfig(cpus=1, memory_mib=256)) as m, pytest.raises(UsageError, match="2047"):
        m.load_linux(kernel, "x" * 2048)


def test_load_linux_refuses_a_corrupt_kernel(kernel, tmp_path):
    bad = tmp_path / "vmlinuz"
    bad.write_bytes(kernel.read_bytes()[:100_000])
    with Machine(MachineConfig(cpus=1, memory_mib=256)) as m, pytest.raises(FormatError, match="truncated"):
        m.load_linux(bad, "console=ttyS0")


def test_load_linux_missing_initrd(kernel, tmp_path):
    with Machine(MachineConfig(cpus=1, memory_mib=256)) as m, pytest.raises(NotFoundError):
        m.load_linux(kernel, "console=ttyS0", tmp_path / "missing")
