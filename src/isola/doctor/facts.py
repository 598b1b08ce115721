"""Gathering what the host is: KVM, cgroups, namespaces, filesystems, devices, CPU, memory, disk, tools.

Each probe does the real thing where that is cheap (unshare a namespace in a child, mount an overlay in a
private mount namespace, open /dev/net/tun), because files in /proc say what the kernel was built with, not
what this process may use. Nothing here raises: a missing feature is a finding.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from isola import paths
from isola.assets import manifest
from isola.cgroups import layout as cgroup_layout
from isola.host import child, libc, seccomp
from isola.vmm.kvm import system as kvm

NAMESPACES = {
    "user": libc.CLONE_NEWUSER,
    "pid": libc.CLONE_NEWPID,
    "net": libc.CLONE_NEWNET,
    "mnt": libc.CLONE_NEWNS,
    "uts": libc.CLONE_NEWUTS,
    "ipc": libc.CLONE_NEWIPC,
    "cgroup": libc.CLONE_NEWCGROUP,
}

# CPU flags worth showing: virtualization, and what guests and benchmarks care about.
CPU_FLAGS_OF_INTEREST = ("vmx", "svm", "hypervisor", "avx2", "avx512f", "fma", "sha_ni", "aes", "rdrand")

TOOLS = ("qemu-system-x86_64", "qemu-riscv64", "runc", "crun", "cpio")


@dataclass(frozen=True)
class Feature:
    """A host feature and whether this process can use it; `detail` says why not, or what version."""

    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Cpu:
    model: str
    vendor: str
    count: int
    flags: dict[str, bool]


@dataclass(frozen=True)
class Facts:
    hostname: str
    kernel: str
    arch: str
    root: bool
    kvm: kvm.KvmInfo
    cgroups: cgroup_layout.Layout
    namespaces: dict[str, Feature]
    overlayfs: Feature
    tun: Feature
    seccomp: Feature
    cpu: Cpu
    memory_mib: int
    memory_available_mib: int
    disk_path: str
    disk_total_gib: float
    disk_free_gib: float
    tools: dict[str, str | None]
    assets: dict[str, list[str]] = field(default_factory=dict)  # arch -> "name version"


def _namespace(flag: int) -> Feature:
    failure = child.run_in_child(lambda: libc.unshare(flag))
    return Feature(ok=failure is None, detail=failure or "")


def _overlay_probe() -> None:
    libc.unshare(libc.CLONE_NEWNS)
    libc.mount("none", "/", None, libc.MS_REC | libc.MS_PRIVATE)
    with tempfile.TemporaryDirectory(prefix="isola-doctor-") as tmp:
        for d in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(tmp, d))
        opts = f"lowerdir={tmp}/lower,upperdir={tmp}/upper,workdir={tmp}/work"
        libc.mount("overlay", f"{tmp}/merged", "overlay", 0, opts)
        Path(tmp, "merged", "probe").write_text("x")
        libc.umount(f"{tmp}/merged")
        if not Path(tmp, "upper", "probe").exists():
            raise OSError("overlay mounted, but a write did not reach the upper dir")


def _overlayfs() -> Feature:
    if "overlay" not in Path("/proc/filesystems").read_text().split():
        return Feature(False, "the kernel lists no overlay filesystem in /proc/filesystems")
    failure = child.run_in_child(_overlay_probe)
    return Feature(failure is None, failure or "")


def _tun() -> Feature:
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return Feature(False, f"/dev/net/tun: {exc.strerror}")
    os.close(fd)
    return Feature(True)


def _seccomp() -> Feature:
    v = seccomp.version()
    return Feature(False, "libseccomp.so.2 not found (Debian: libseccomp2)") if v is None else Feature(True, v)


def _cpu() -> Cpu:
    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if info:
                break  # the first processor's block is enough
            continue
        info.setdefault(key.strip(), value.strip())
    flags = set(info.get("flags", "").split())
    return Cpu(
        model=info.get("model name", platform.processor() or "unknown"),
        vendor=info.get("vendor_id", "unknown"),
        count=os.cpu_count() or 1,
        flags={f: f in flags for f in CPU_FLAGS_OF_INTEREST},
    )


def _meminfo() -> tuple[int, int]:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) // 1024
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)


def _existing_parent(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _assets() -> dict[str, list[str]]:
    by_arch: dict[str, list[str]] = {}
    for pkg in manifest.load(paths.assets_dir()).packages:
        by_arch.setdefault(pkg.arch, []).append(f"{pkg.name} {pkg.version}")
    return by_arch


def gather() -> Facts:
    """Probe the host as the calling process sees it."""
    uname = os.uname()
    mem_total, mem_avail = _meminfo()
    disk_path = _existing_parent(paths.home())
    disk = shutil.disk_usage(disk_path)
    return Facts(
        hostname=uname.nodename,
        kernel=uname.release,
        arch=uname.machine,
        root=os.geteuid() == 0,
        kvm=kvm.probe(),
        cgroups=cgroup_layout.probe(),
        namespaces={name: _namespace(flag) for name, flag in NAMESPACES.items()},
        overlayfs=_overlayfs(),
        tun=_tun(),
        seccomp=_seccomp(),
        cpu=_cpu(),
        memory_mib=mem_total,
        memory_available_mib=mem_avail,
        disk_path=str(disk_path),
        disk_total_gib=round(disk.total / 2**30, 1),
        disk_free_gib=round(disk.free / 2**30, 1),
        tools={t: shutil.which(t) for t in TOOLS},
        assets=_assets(),
    )
