"""KVM ioctl request numbers, built the way <asm-generic/ioctl.h> builds them, capability and exit-reason
numbers, and `call`, the one place an ioctl failure becomes an error that names the ioctl.

Values are checked against <linux/kvm.h>; KVMIO is the magic 0xAE every KVM ioctl carries.
"""

from __future__ import annotations

import ctypes
import fcntl
import os

from isola.errors import EngineError
from isola.host.libc import ioctl_ulong

_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2

KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << _IOC_DIRSHIFT) | (KVMIO << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT)


def io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def ior(nr: int, size: int) -> int:
    return _ioc(_IOC_READ, nr, size)


def iow(nr: int, size: int) -> int:
    return _ioc(_IOC_WRITE, nr, size)


def iowr(nr: int, size: int) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, size)


_INT_MAX = (1 << 31) - 1


def call(fd: int, name: str, request: int, arg: int | ctypes.Structure | ctypes.c_uint64 = 0) -> int:
    """`fcntl.ioctl` with a failure reported as an EngineError that names the ioctl.

    A ctypes object is passed in place (mutate flag on) so KVM's answer lands in it; an int is passed by value,
    which is also the form CPython issues with the GIL released (KVM_RUN relies on that).
    """
    try:
        if isinstance(arg, int) and arg > _INT_MAX:
            result: int = ioctl_ulong(fd, request, arg)
        elif isinstance(arg, int):
            result = fcntl.ioctl(fd, request, arg)
        else:
            result = fcntl.ioctl(fd, request, arg, True)
    except OSError as exc:
        raise EngineError(f"{name} failed: {os.strerror(exc.errno or 0)} (errno {exc.errno})") from exc
    return result


# System ioctls (on the /dev/kvm fd)
KVM_GET_API_VERSION = io(0x00)
KVM_CREATE_VM = io(0x01)
KVM_CHECK_EXTENSION = io(0x03)
KVM_GET_VCPU_MMAP_SIZE = io(0x04)

KVM_API_VERSION = 12  # the only stable version there has ever been

# Capabilities (KVM_CAP_*), the ones isola asks about.
KVM_CAP_IRQCHIP = 0
KVM_CAP_HLT = 1
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_VCPUS = 9
KVM_CAP_PIT2 = 33
KVM_CAP_IRQFD = 32
KVM_CAP_IOEVENTFD = 36
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_SYNC_REGS = 74
KVM_CAP_SET_IDENTITY_MAP_ADDR = 37
KVM_CAP_READONLY_MEM = 81
KVM_CAP_XSAVE = 55
KVM_CAP_XCRS = 56
KVM_CAP_NR_MEMSLOTS = 10

# Sizes of the structs the ioctl numbers below encode; the structs themselves live in `structs.py`, and a unit
# test checks that each ctypes struct has exactly the size written here (the size is part of the number).
_SIZEOF_KVM_CPUID2 = 8
_SIZEOF_KVM_USERSPACE_MEMORY_REGION = 32
_SIZEOF_U64 = 8
_SIZEOF_KVM_IRQ_LEVEL = 8
_SIZEOF_KVM_PIT_CONFIG = 64
_SIZEOF_KVM_IRQFD = 32
_SIZEOF_KVM_IOEVENTFD = 64
_SIZEOF_KVM_REGS = 144
_SIZEOF_KVM_SREGS = 312
_SIZEOF_KVM_TRANSLATION = 24
_SIZEOF_KVM_MSRS = 8
_SIZEOF_KVM_SIGNAL_MASK = 4
_SIZEOF_KVM_FPU = 416
_SIZEOF_KVM_LAPIC_STATE = 1024
_SIZEOF_KVM_XSAVE = 4096
_SIZEOF_KVM_XCRS = 392

KVM_GET_SUPPORTED_CPUID = iowr(0x05, _SIZEOF_KVM_CPUID2)

# VM ioctls (on the fd KVM_CREATE_VM returns)
KVM_CREATE_VCPU = io(0x41)
KVM_SET_USER_MEMORY_REGION = iow(0x46, _SIZEOF_KVM_USERSPACE_MEMORY_REGION)
KVM_SET_TSS_ADDR = io(0x47)
KVM_SET_IDENTITY_MAP_ADDR = iow(0x48, _SIZEOF_U64)
KVM_CREATE_IRQCHIP = io(0x60)
KVM_IRQ_LINE = iow(0x61, _SIZEOF_KVM_IRQ_LEVEL)
KVM_IRQFD = iow(0x76, _SIZEOF_KVM_IRQFD)
KVM_CREATE_PIT2 = iow(0x77, _SIZEOF_KVM_PIT_CONFIG)
KVM_IOEVENTFD = iow(0x79, _SIZEOF_KVM_IOEVENTFD)

# vCPU ioctls (on the fd KVM_CREATE_VCPU returns)
KVM_RUN = io(0x80)
KVM_GET_REGS = ior(0x81, _SIZEOF_KVM_REGS)
KVM_SET_REGS = iow(0x82, _SIZEOF_KVM_REGS)
KVM_GET_SREGS = ior(0x83, _SIZEOF_KVM_SREGS)
KVM_SET_SREGS = iow(0x84, _SIZEOF_KVM_SREGS)
KVM_TRANSLATE = iowr(0x85, _SIZEOF_KVM_TRANSLATION)
KVM_GET_MSRS = iowr(0x88, _SIZEOF_KVM_MSRS)
KVM_SET_MSRS = iow(0x89, _SIZEOF_KVM_MSRS)
KVM_SET_SIGNAL_MASK = iow(0x8B, _SIZEOF_KVM_SIGNAL_MASK)
KVM_SET_FPU = iow(0x8D, _SIZEOF_KVM_FPU)
KVM_GET_LAPIC = ior(0x8E, _SIZEOF_KVM_LAPIC_STATE)
KVM_SET_LAPIC = iow(0x8F, _SIZEOF_KVM_LAPIC_STATE)
KVM_SET_CPUID2 = iow(0x90, _SIZEOF_KVM_CPUID2)
KVM_GET_XSAVE = ior(0xA4, _SIZEOF_KVM_XSAVE)
KVM_SET_XSAVE = iow(0xA5, _SIZEOF_KVM_XSAVE)
KVM_SET_XCRS = iow(0xA7, _SIZEOF_KVM_XCRS)

# kvm_run.exit_reason values (KVM_EXIT_*)
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

KVM_SYSTEM_EVENT_SHUTDOWN = 1
KVM_SYSTEM_EVENT_RESET = 2
KVM_SYSTEM_EVENT_CRASH = 3

KVM_INTERNAL_ERROR_EMULATION = 1
KVM_INTERNAL_ERROR_SIMUL_EX = 2
KVM_INTERNAL_ERROR_DELIVERY_EV = 3
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4

# kvm_run.kvm_valid_regs / kvm_dirty_regs bits (KVM_CAP_SYNC_REGS)
KVM_SYNC_X86_REGS = 1 << 0
KVM_SYNC_X86_SREGS = 1 << 1

# kvm_userspace_memory_region.flags
KVM_MEM_READONLY = 1 << 1

KVM_PIT_SPEAKER_DUMMY = 1
KVM_IRQFD_FLAG_DEASSIGN = 1 << 0
KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0
KVM_IOEVENTFD_FLAG_PIO = 1 << 1
KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2
