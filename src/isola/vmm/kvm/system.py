"""The /dev/kvm system file descriptor: is KVM there, which API, which capabilities, which kernel module.

The *provider* matters as much as the API version. `kvm_intel` and `kvm_amd` run a guest kernel natively with
VMX/SVM. `kvm_pvm` (the PVM project: nested virtualization without VMX/SVM) runs guest user-mode code natively
but emulates guest kernel-mode code roughly 5000x slower, so stock kernels cannot boot there while process-mode
VMs (a program at CPL3, syscalls served by the VMM) run at full speed.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

from isola.vmm.kvm import DEV_KVM, ioctls

PROVIDERS = ("kvm_intel", "kvm_amd", "kvm_pvm")

CAPABILITIES = {
    "irqchip": ioctls.KVM_CAP_IRQCHIP,
    "user_memory": ioctls.KVM_CAP_USER_MEMORY,
    "ext_cpuid": ioctls.KVM_CAP_EXT_CPUID,
    "pit2": ioctls.KVM_CAP_PIT2,
    "irqfd": ioctls.KVM_CAP_IRQFD,
    "ioeventfd": ioctls.KVM_CAP_IOEVENTFD,
    "sync_regs": ioctls.KVM_CAP_SYNC_REGS,
    "nr_vcpus": ioctls.KVM_CAP_NR_VCPUS,
    "max_vcpus": ioctls.KVM_CAP_MAX_VCPUS,
}


@dataclass(frozen=True)
class KvmInfo:
    present: bool
    usable: bool
    api_version: int | None = None
    provider: str | None = None
    capabilities: dict[str, int] = field(default_factory=dict)
    problem: str | None = None


def provider(sys_module: Path = Path("/sys/module")) -> str | None:
    """The loaded KVM vendor module. PVM wins if several are loaded: it is the one /dev/kvm then serves."""
    loaded = [p for p in PROVIDERS if (sys_module / p).exists()]
    if "kvm_pvm" in loaded:
        return "kvm_pvm"
    return loaded[0] if loaded else None


def probe(dev: Path = DEV_KVM) -> KvmInfo:
    """Open `dev` and ask KVM what it is. Never raises: an unusable KVM is a finding, not an error."""
    if not dev.exists():
        return KvmInfo(present=False, usable=False, problem=f"{dev} does not exist (no KVM module loaded)")
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        why = "permission denied (run as root or join the kvm group)" if exc.errno == errno.EACCES else exc.strerror
        return KvmInfo(present=True, usable=False, provider=provider(), problem=f"cannot open {dev}: {why}")
    try:
        version = fcntl.ioctl(fd, ioctls.KVM_GET_API_VERSION)
        caps = {name: fcntl.ioctl(fd, ioctls.KVM_CHECK_EXTENSION, nr) for name, nr in CAPABILITIES.items()}
    except OSError as exc:
        return KvmInfo(present=True, usable=False, provider=provider(), problem=f"KVM ioctl failed: {exc.strerror}")
    finally:
        os.close(fd)
    usable = version == ioctls.KVM_API_VERSION
    return KvmInfo(
        present=True,
        usable=usable,
        api_version=version,
        provider=provider(),
        capabilities=caps,
        problem=None if usable else f"KVM API version {version}, isola needs {ioctls.KVM_API_VERSION}",
    )
