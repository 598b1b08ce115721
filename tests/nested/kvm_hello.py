"""The smallest KVM guest, in Python: one page of real-mode code that writes a greeting to a port, then halts.

It proves a KVM can run guest code natively (kvm_amd in the nested lane's L1, or kvm_intel/kvm_amd on a host
with VMX/SVM) using nothing but ctypes, fcntl.ioctl and mmap, the same means isola's VMM uses. `kvm_pvm`
cannot run it: PVM has no real mode. Run as a script it prints one JSON line for a caller outside L1.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import mmap
import os
import sys
import time
from dataclasses import asdict, dataclass

from isola.vmm.kvm import ioctls

PORT = 0x10
GREETING = b"hello from L2\n"
GUEST_ADDR = 0x1000
# mov al, <byte>; out PORT, al  -- once per byte -- then hlt.
CODE = b"".join(bytes([0xB0, c, 0xE6, PORT]) for c in GREETING) + b"\xf4"

KVM_EXIT_IO, KVM_EXIT_HLT = 2, 5
KVM_EXIT_IO_OUT = 1


class Segment(ctypes.Structure):
    _fields_ = [
        ("base", ctypes.c_uint64), ("limit", ctypes.c_uint32), ("selector", ctypes.c_uint16),
        ("type", ctypes.c_uint8), ("present", ctypes.c_uint8), ("dpl", ctypes.c_uint8), ("db", ctypes.c_uint8),
        ("s", ctypes.c_uint8), ("l", ctypes.c_uint8), ("g", ctypes.c_uint8), ("avl", ctypes.c_uint8),
        ("unusable", ctypes.c_uint8), ("padding", ctypes.c_uint8),
    ]  # fmt: skip


class Sregs(ctypes.Structure):
    _fields_ = [
        ("segments", Segment * 8),  # cs ds es fs gs ss tr ldt
        ("dtables", ctypes.c_uint64 * 4),  # gdt, idt: base u64 + limit u16 + padding
        ("control", ctypes.c_uint64 * 7),  # cr0 cr2 cr3 cr4 cr8 efer apic_base
        ("interrupt_bitmap", ctypes.c_uint64 * 4),
    ]


class Regs(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", *(f"r{i}" for i in range(8, 16)))
    ] + [("rip", ctypes.c_uint64), ("rflags", ctypes.c_uint64)]


class MemoryRegion(ctypes.Structure):
    _fields_ = [
        ("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("guest_phys_addr", ctypes.c_uint64),
        ("memory_size", ctypes.c_uint64), ("userspace_addr", ctypes.c_uint64),
    ]  # fmt: skip


class IoExit(ctypes.Structure):
    """`struct kvm_run` up to the io member of its exit union (which starts at offset 32)."""

    _fields_ = [
        ("request_interrupt_window", ctypes.c_uint8), ("immediate_exit", ctypes.c_uint8),
        ("padding1", ctypes.c_uint8 * 6), ("exit_reason", ctypes.c_uint32),
        ("ready_for_interrupt_injection", ctypes.c_uint8), ("if_flag", ctypes.c_uint8), ("flags", ctypes.c_uint16),
        ("cr8", ctypes.c_uint64), ("apic_base", ctypes.c_uint64),
        ("direction", ctypes.c_uint8), ("size", ctypes.c_uint8), ("port", ctypes.c_uint16),
        ("count", ctypes.c_uint32), ("data_offset", ctypes.c_uint64),
    ]  # fmt: skip


KVM_SET_USER_MEMORY_REGION = ioctls.iow(0x46, ctypes.sizeof(MemoryRegion))
KVM_CREATE_VCPU = ioctls.io(0x41)
KVM_RUN = ioctls.io(0x80)
KVM_SET_REGS = ioctls.iow(0x82, ctypes.sizeof(Regs))
KVM_GET_SREGS = ioctls.ior(0x83, ctypes.sizeof(Sregs))
KVM_SET_SREGS = ioctls.iow(0x84, ctypes.sizeof(Sregs))


@dataclass(frozen=True)
class HelloResult:
    output: str
    io_exits: int
    last_exit: int
    seconds: float


def run(dev: str = "/dev/kvm") -> HelloResult:
    """Create a VM with one page of memory and one vCPU at real-mode 0:0x1000, and run it until HLT."""
    start = time.monotonic()
    kvm = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    vm = fcntl.ioctl(kvm, ioctls.KVM_CREATE_VM, 0)
    memory = mmap.mmap(-1, mmap.PAGESIZE)
    memory[: len(CODE)] = CODE
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, MemoryRegion(0, 0, GUEST_ADDR, mmap.PAGESIZE, address))
    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    run_area = mmap.mmap(vcpu, fcntl.ioctl(kvm, ioctls.KVM_GET_VCPU_MMAP_SIZE, 0))
    sregs = Sregs()
    fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs)
    sregs.segments[0].base, sregs.segments[0].selector = 0, 0  # cs = 0, so cs:ip = 0:0x1000
    fcntl.ioctl(vcpu, KVM_SET_SREGS, sregs)
    fcntl.ioctl(vcpu, KVM_SET_REGS, Regs(rip=GUEST_ADDR, rflags=0x2))
    exit_info = IoExit.from_buffer(run_area)
    out, exits = bytearray(), 0
    while True:
        fcntl.ioctl(vcpu, KVM_RUN, 0)
        if exit_info.exit_reason != KVM_EXIT_IO:
            break
        exits += 1
        if exit_info.direction == KVM_EXIT_IO_OUT and exit_info.port == PORT and exit_info.size == 1:
            out += run_area[exit_info.data_offset : exit_info.data_offset + exit_info.count]
    reason = exit_info.exit_reason
    del exit_info  # release the export on run_area before closing it
    run_area.close()
    for fd in (vcpu, vm, kvm):
        os.close(fd)
    return HelloResult(out.decode("latin-1"), exits, reason, time.monotonic() - start)


if __name__ == "__main__":
    print("KVM-HELLO " + json.dumps(asdict(run(*sys.argv[1:]))))
