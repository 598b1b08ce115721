"""KVM ioctl request numbers, built the way <asm-generic/ioctl.h> builds them, and capability numbers.

Values are checked against <linux/kvm.h>; KVMIO is the magic 0xAE every KVM ioctl carries.
"""

from __future__ import annotations

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
