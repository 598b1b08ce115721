"""Verdicts on made-up hosts: every branch without needing such a host."""

from dataclasses import replace

import pytest

from isola.cgroups.layout import Layout, Mode
from isola.doctor.facts import Cpu, Facts, Feature
from isola.doctor.verdicts import Status, judge
from isola.vmm.kvm.system import KvmInfo

ALL_CAPS = {"irqchip": 1, "pit2": 1, "user_memory": 1}


def host(**changes) -> Facts:
    base = Facts(
        hostname="h",
        kernel="6.1",
        arch="x86_64",
        root=True,
        kvm=KvmInfo(present=True, usable=True, api_version=12, provider="kvm_amd", capabilities=ALL_CAPS),
        cgroups=Layout(Mode.V2, {}, "/sys/fs/cgroup", ("cpu", "memory", "pids", "io")),
        namespaces={n: Feature(True) for n in ("user", "pid", "net", "mnt", "uts", "ipc", "cgroup")},
        overlayfs=Feature(True),
        tun=Feature(True),
        seccomp=Feature(True, "2.5.4"),
        cpu=Cpu("EPYC", "AuthenticAMD", 8, {"svm": True}),
        memory_mib=16384,
        memory_available_mib=8000,
        disk_path="/var/lib",
        disk_total_gib=100.0,
        disk_free_gib=50.0,
        tools={"qemu-system-x86_64": None},
        assets={"riscv64": ["busybox-static 1"]},
    )
    return replace(base, **changes)


def verdicts(f: Facts) -> dict[tuple[str, str | None], Status]:
    return {(v.kind, v.mode): v.status for v in judge(f)}


def test_a_hardware_kvm_host_runs_every_kind():
    assert set(verdicts(host()).values()) == {Status.USABLE}
    assert list(verdicts(host())) == [
        ("emulated", None),
        ("vm", "kernel"),
        ("vm", "process"),
        ("container", None),
        ("metal", None),
    ]


def test_pvm_runs_process_vms_but_not_kernels():
    pvm = host(kvm=KvmInfo(True, True, 12, "kvm_pvm", ALL_CAPS))
    got = {(v.kind, v.mode): v for v in judge(pvm)}
    assert got["vm", "kernel"].status is Status.UNUSABLE
    assert "5000x" in got["vm", "kernel"].reason
    assert "qemu-system-x86" in got["vm", "kernel"].reason  # the nested lane needs it and it is missing
    assert got["vm", "process"].status is Status.USABLE


def test_pvm_with_qemu_points_at_the_nested_lane():
    pvm = host(kvm=KvmInfo(True, True, 12, "kvm_pvm", ALL_CAPS), tools={"qemu-system-x86_64": "/usr/bin/q"})
    (kernel,) = [v for v in judge(pvm) if v.mode == "kernel"]
    assert "nested test lane" in kernel.reason and "install" not in kernel.reason


@pytest.mark.parametrize(
    "kvm",
    [
        KvmInfo(False, False, problem="/dev/kvm does not exist"),
        KvmInfo(True, False, provider="kvm_intel", problem="cannot open /dev/kvm: permission denied"),
    ],
)
def test_no_usable_kvm_means_no_vm_of_either_mode(kvm):
    v = verdicts(host(kvm=kvm))
    assert v["vm", "kernel"] is Status.UNUSABLE and v["vm", "process"] is Status.UNUSABLE
    assert v["container", None] is Status.USABLE


def test_missing_irqchip_blocks_kernel_mode():
    f = host(kvm=KvmInfo(True, True, 12, "kvm_intel", {"irqchip": 0, "pit2": 1, "user_memory": 1}))
    (kernel,) = [v for v in judge(f) if v.mode == "kernel"]
    assert kernel.status is Status.UNUSABLE and "irqchip" in kernel.reason


def test_containers_need_root_and_namespaces_and_degrade_without_overlay_or_seccomp():
    assert verdicts(host(root=False))["container", None] is Status.UNUSABLE
    no_pid = host(namespaces={"pid": Feature(False, "EPERM")})
    assert verdicts(no_pid)["container", None] is Status.UNUSABLE
    limited = host(overlayfs=Feature(False), seccomp=Feature(False))
    (c,) = [v for v in judge(limited) if v.kind == "container"]
    assert c.status is Status.LIMITED and "overlayfs" in c.reason and "seccomp" in c.reason


def test_metal_needs_pids_and_memory_controllers():
    no_mem = host(cgroups=Layout(Mode.V2, {}, "/sys/fs/cgroup", ("cpu", "pids")))
    assert verdicts(no_mem)["metal", None] is Status.UNUSABLE
    hybrid = host(cgroups=Layout(Mode.HYBRID, {"memory": "/m", "pids": "/p"}, "/u", ("hugetlb",)))
    assert verdicts(hybrid)["metal", None] is Status.USABLE


def test_emulated_without_riscv64_assets_is_limited():
    assert verdicts(host(assets={}))["emulated", None] is Status.LIMITED
