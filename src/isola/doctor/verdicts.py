"""From host facts to a verdict per kind of isolation: usable, usable with limits, or unusable, and why.

Pure logic over `Facts`, so every branch is tested on made-up hosts (a VMX host, a PVM host, a host with
no KVM, a v2-only host) without needing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from isola.cgroups.layout import Mode
from isola.doctor.facts import Facts


class Status(StrEnum):
    USABLE = "usable"
    LIMITED = "usable with limits"
    UNUSABLE = "unusable"


@dataclass(frozen=True)
class Verdict:
    kind: str
    mode: str | None
    status: Status
    reason: str


PROVIDER_MEANING = {
    "kvm_intel": "Intel VMX: guest kernel and user code run natively",
    "kvm_amd": "AMD SVM: guest kernel and user code run natively",
    "kvm_pvm": (
        "PVM, nested virtualization without VMX/SVM: guest user-mode code runs natively, guest kernel-mode "
        "code is emulated about 5000x slower, so unmodified kernels cannot boot"
    ),
}

CONTAINER_NAMESPACES = ("mnt", "pid", "net", "uts", "ipc")


def _emulated(f: Facts) -> Verdict:
    if "riscv64" not in f.assets:
        return Verdict(
            "emulated",
            None,
            Status.LIMITED,
            "needs nothing from the host, but no riscv64 guest assets are cached (isola assets fetch --arch riscv64)",
        )
    return Verdict("emulated", None, Status.USABLE, "pure Python, needs no host feature; riscv64 assets cached")


def _vm_kernel(f: Facts) -> Verdict:
    if not f.kvm.usable:
        return Verdict("vm", "kernel", Status.UNUSABLE, f.kvm.problem or "KVM is not usable")
    if f.kvm.provider == "kvm_pvm":
        lane = (
            "the nested test lane (QEMU TCG -> kvm_amd) can still run the VMM"
            if f.tools.get("qemu-system-x86_64")
            else "install qemu-system-x86 for the nested test lane"
        )
        return Verdict(
            "vm",
            "kernel",
            Status.UNUSABLE,
            f"kvm_pvm emulates guest kernel mode ~5000x slower: no stock kernel boots; {lane}",
        )
    if f.kvm.provider is None:
        return Verdict("vm", "kernel", Status.LIMITED, "KVM works but its vendor module is unknown; boots untested")
    missing = [c for c in ("irqchip", "pit2", "user_memory") if not f.kvm.capabilities.get(c)]
    if missing:
        return Verdict("vm", "kernel", Status.UNUSABLE, f"KVM lacks {', '.join(missing)}")
    return Verdict("vm", "kernel", Status.USABLE, f"{f.kvm.provider}: guests boot their own kernel at native speed")


def _vm_process(f: Facts) -> Verdict:
    if not f.kvm.usable:
        return Verdict("vm", "process", Status.UNUSABLE, f.kvm.problem or "KVM is not usable")
    if f.kvm.provider == "kvm_pvm":
        return Verdict(
            "vm",
            "process",
            Status.USABLE,
            "guest user code runs natively; each syscall served by isola costs an exit (~28 µs on kvm_pvm)",
        )
    return Verdict("vm", "process", Status.USABLE, "program at CPL3 in a KVM VM, syscalls served by isola")


def _container(f: Facts) -> Verdict:
    if not f.root:
        return Verdict("container", None, Status.UNUSABLE, "needs root (rootless containers are not supported yet)")
    missing = [n for n in CONTAINER_NAMESPACES if not f.namespaces.get(n) or not f.namespaces[n].ok]
    if missing:
        return Verdict("container", None, Status.UNUSABLE, f"cannot create {', '.join(missing)} namespaces")
    if f.cgroups.mode is Mode.NONE:
        return Verdict("container", None, Status.UNUSABLE, "no cgroup hierarchy is mounted")
    limits = []
    if not f.overlayfs.ok:
        limits.append("no overlayfs (images are copied, not layered)")
    if not f.seccomp.ok:
        limits.append("no libseccomp (seccomp profiles refused)")
    if not (f.namespaces.get("user") and f.namespaces["user"].ok):
        limits.append("no user namespaces")
    if not (f.namespaces.get("cgroup") and f.namespaces["cgroup"].ok):
        limits.append("no cgroup namespaces")
    if limits:
        return Verdict("container", None, Status.LIMITED, "; ".join(limits))
    return Verdict("container", None, Status.USABLE, f"namespaces, overlayfs, seccomp, cgroups {f.cgroups.mode.value}")


def _metal(f: Facts) -> Verdict:
    if not f.root:
        return Verdict("metal", None, Status.UNUSABLE, "leasing a host needs root to run and clean tenant processes")
    if f.cgroups.where("pids") is None or f.cgroups.where("memory") is None:
        return Verdict("metal", None, Status.UNUSABLE, "tenant processes need the pids and memory cgroup controllers")
    return Verdict(
        "metal",
        None,
        Status.USABLE,
        f"whole host for one tenant: {f.cpu.count} CPUs, {f.memory_mib} MiB, no neighbours",
    )


def judge(f: Facts) -> list[Verdict]:
    """One verdict per kind (and per mode for `vm`), in the order of the isolation ladder."""
    return [_emulated(f), _vm_kernel(f), _vm_process(f), _container(f), _metal(f)]
