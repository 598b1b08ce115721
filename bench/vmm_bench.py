"""isola-vmm beside QEMU (`-M microvm -enable-kvm`) on the same kernel, initramfs and disk, in one run.

    .venv/bin/python bench/vmm_bench.py [--rounds N] [--disk-mib M] [--out bench/results]

What is compared: launch → the guest's /init (wall time, and the guest's own uptime there), virtio-blk
sequential read throughput (`dd if=/dev/vda bs=1M iflag=direct` over the whole disk), and the VMM process's RSS
without its guest RAM. The goals (issue 4): isola-vmm boots no slower than QEMU (ratio ≤ 1.0) and reads at
≥ 50% of QEMU's MB/s.

Where: this host's /dev/kvm is kvm_pvm, which cannot boot a kernel, so both VMMs run inside the nested lane's
L1 (a TCG guest with kvm_amd; `isola.vmm.nested`), one after the other in the same L1 boot, alternating which
goes first. Absolute numbers are those of a nested guest under TCG — about 3x slower than bare metal for the
guest kernel and far slower for the VMM process itself — so only the ratios carry over. The host builds the
initramfs (Debian's kernel with busybox and the virtio modules) and a plan; `bench/vmm_l1.py` runs the boots in
L1 and prints its samples; this script takes medians and writes `vmm.json` and `vmm.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from isola import paths
from isola.assets import initramfs, kmod, manifest
from isola.vmm import guest, launch
from isola.vmm.nested import run_in_l1

HERE = Path(__file__).resolve().parent
RESULT_PREFIX = "VMM-BENCH-RESULT "  # what bench/vmm_l1.py prints its samples after
PROFILE_PREFIX = "VMM-PROFILE-RESULT "  # and bench/vmm_profile_l1.py its findings
APPEND = f"{launch.DEFAULT_APPEND} quiet"
"""Both VMMs boot with isola-vmm's default command line (QEMU's microvm ignores the i8042 options)."""
MEMORY_MIB = 256

# The guest's /init: a marker with its uptime as soon as /proc is there (boot-to-init), another once the
# virtio modules are loaded, then the whole disk read once with O_DIRECT (no guest page cache), timed by the
# guest's clock. BENCH-RSS asks the L1 driver to sample the VMM's memory; the guest waits a second so that the
# VMM is still there to be sampled. `benchdmesg=1` on the kernel command line (an unknown parameter without a dot
# becomes an environment variable of /init) dumps the kernel log with its timestamps, for `--profile`.
INIT = """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
read up _ < /proc/uptime; echo "BENCH-INIT $up"
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
{load_modules} || echo "BENCH-MODULES-FAILED"
read up _ < /proc/uptime; echo "BENCH-READY $up"
read up _ < /proc/uptime; echo "BENCH-DD-START $up"
dd if=/dev/vda of=/dev/null bs=1M iflag=direct 2>&1
read up _ < /proc/uptime; echo "BENCH-DD-END $up"
echo BENCH-RSS
sleep 1
[ -n "$benchdmesg" ] && dmesg | sed 's/^/DMESG /'
poweroff -f
"""


def build_inputs(build: Path, rounds: int, disk_mib: int) -> Path:
    """The initramfs and the plan for the L1 driver, under `build` (inside the project, which L1 sees)."""
    assets = paths.assets_dir()
    cached = manifest.load(assets)
    kernel = cached.artifact(assets, "amd64", "kernel")
    busybox = cached.artifact(assets, "amd64", "busybox")
    modules = kmod.load_order(guest.VIRTIO_MODULES, kmod.index(kmod.modules_root(kernel)))
    spec = initramfs.busybox_image(
        busybox, INIT.format(load_modules=kmod.LOAD_SCRIPT), extra=kmod.initramfs_entries(modules)
    )
    build.mkdir(parents=True, exist_ok=True)
    initrd = build / "initrd.cpio.gz"
    initramfs.build(spec, initrd)
    plan = {
        "kernel": str(kernel),
        "initrd": str(initrd),
        "append": APPEND,
        "memory_mib": MEMORY_MIB,
        "rounds": rounds,
        "disk_mib": disk_mib,
    }
    plan_path = build / "plan.json"
    plan_path.write_text(json.dumps(plan, indent=2) + "\n")
    return plan_path


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """Median, min and max of `values` (None when there are none)."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values), "n": len(values)}


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per VMM the spread of each metric over the good samples, and isola/QEMU ratios of the medians."""
    metrics = ("init_wall", "init_uptime", "ready_wall", "read_mb_s", "rss_vmm_kib", "exit_wall")
    per_vmm: dict[str, dict[str, Any]] = {}
    for vmm in ("isola-vmm", "qemu"):
        good = [s for s in samples if s["vmm"] == vmm and s["error"] is None]
        per_vmm[vmm] = {m: spread([s[m] for s in good if s[m] is not None]) for m in metrics}
        # Boot time outside the guest kernel: VMM start-up plus the bzImage decompressing itself.
        per_vmm[vmm]["pre_kernel"] = spread(
            [s["init_wall"] - s["init_uptime"] for s in good if s["init_wall"] is not None]
        )
        per_vmm[vmm]["failed"] = sum(1 for s in samples if s["vmm"] == vmm and s["error"] is not None)

    def ratio(metric: str) -> float | None:
        a, b = per_vmm["isola-vmm"][metric]["median"], per_vmm["qemu"][metric]["median"]
        return round(a / b, 3) if a is not None and b else None

    ratios = {
        "boot_to_init_wall": ratio("init_wall"),
        "boot_to_init_guest_uptime": ratio("init_uptime"),
        "read_mb_s": ratio("read_mb_s"),
        "vmm_rss": ratio("rss_vmm_kib"),
    }
    goals = {
        "boot_ratio_max": 1.0,
        "read_ratio_min": 0.5,
        "boot_met": ratios["boot_to_init_wall"] is not None and ratios["boot_to_init_wall"] <= 1.0,
        "read_met": ratios["read_mb_s"] is not None and ratios["read_mb_s"] >= 0.5,
    }
    return {"per_vmm": per_vmm, "ratios": ratios, "goals": goals}


def print_table(summary: dict[str, Any]) -> None:
    rows = (
        ("launch → /init (s)", "init_wall"),
        ("guest uptime at /init (s)", "init_uptime"),
        ("before the kernel clock (s)", "pre_kernel"),
        ("launch → modules loaded (s)", "ready_wall"),
        ("virtio-blk seq. read (MB/s)", "read_mb_s"),
        ("VMM RSS w/o guest RAM (KiB)", "rss_vmm_kib"),
        ("launch → exit (s)", "exit_wall"),
    )
    print(f"{'':30} {'isola-vmm median (min-max)':>28} {'QEMU median (min-max)':>28} {'isola/QEMU':>10}")
    for label, metric in rows:
        cells = []
        for vmm in ("isola-vmm", "qemu"):
            s = summary["per_vmm"][vmm][metric]
            cells.append("-" if s["median"] is None else f"{s['median']:g} ({s['min']:g}-{s['max']:g})")
        a, b = (summary["per_vmm"][v][metric]["median"] for v in ("isola-vmm", "qemu"))
        ratio = f"{a / b:.2f}" if a is not None and b else "-"
        print(f"{label:30} {cells[0]:>28} {cells[1]:>28} {ratio:>10}")
    goals = summary["goals"]
    print(
        f"goals: boot ratio ≤ 1.0: {'met' if goals['boot_met'] else 'MISSED'}; "
        f"read ratio ≥ 0.5: {'met' if goals['read_met'] else 'MISSED'}"
    )


def plot(samples: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"isola-vmm": "#4c72b0", "qemu": "#dd8452"}
    panels = (
        ("init_wall", "launch → /init (s)"),
        ("read_mb_s", "virtio-blk read (MB/s)"),
        ("rss_vmm_kib", "VMM RSS w/o guest RAM (KiB)"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(11, 3.6))
    for ax, (metric, title) in zip(axes, panels, strict=True):
        for i, vmm in enumerate(("isola-vmm", "qemu")):
            median = summary["per_vmm"][vmm][metric]["median"]
            ax.bar(i, median or 0, color=colors[vmm], alpha=0.8)
            points = [s[metric] for s in samples if s["vmm"] == vmm and s[metric] is not None]
            ax.plot([i] * len(points), points, "k.", ms=5)
        ax.set_xticks([0, 1], ["isola-vmm", "QEMU"])
        ax.set_title(title, fontsize=10)
    ratios = summary["ratios"]
    fig.suptitle(
        f"nested lane (L1 = TCG + kvm_amd): boot isola/QEMU x{ratios['boot_to_init_wall']}, "
        f"read x{ratios['read_mb_s']} (bars: medians, dots: samples)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="boots per VMM (interleaved); at least 3 for a median")
    ap.add_argument("--disk-mib", type=int, default=256, help="size of the disk the guest reads")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds for the whole L1 run")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--profile", action="store_true", help="instead: where isola-vmm's time goes (vmm-profile.json)")
    args = ap.parse_args()
    plan = build_inputs(args.out / "build" / "vmm", args.rounds, args.disk_mib)
    if args.profile:
        profile(plan, args.out, args.timeout)
        return
    result = run_in_l1(
        ["python", str(HERE / "vmm_l1.py"), str(plan)],
        timeout=args.timeout,
        on_line=lambda line: print(line, flush=True) if line.startswith("vmm-bench:") else None,
    )
    line = next((ln for ln in result.output.splitlines() if ln.startswith(RESULT_PREFIX)), None)
    if result.status != 0 or line is None:
        sys.exit(f"bench: the L1 driver failed (status {result.status}):\n{result.output[-3000:]}")
    l1 = json.loads(line.removeprefix(RESULT_PREFIX))
    summary = summarize(l1["samples"])
    doc = {
        "benchmark": "isola-vmm vs qemu-system-x86_64 -M microvm -enable-kvm, nested lane",
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "l1": {"kvm": l1["kvm"], "cpus": l1["l1_cpus"], "lane": result.summary()},
        "qemu": l1["qemu"],
        "config": json.loads(plan.read_text()),
        **summary,
        "samples": l1["samples"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vmm.json").write_text(json.dumps(doc, indent=2) + "\n")
    plot(l1["samples"], summary, args.out / "vmm.png")
    print_table(summary)
    print(f"wrote {args.out / 'vmm.json'} and {args.out / 'vmm.png'}")


def profile(plan: Path, out: Path, timeout: float) -> None:
    """Run `vmm_profile_l1.py` in L1 and keep what it found in `vmm-profile.json`."""
    result = run_in_l1(
        ["python", str(HERE / "vmm_profile_l1.py"), str(plan)],
        timeout=timeout,
        on_line=lambda line: print(line, flush=True) if line.startswith("vmm-profile:") else None,
    )
    line = next((ln for ln in result.output.splitlines() if ln.startswith(PROFILE_PREFIX)), None)
    if result.status != 0 or line is None:
        sys.exit(f"bench: the L1 profiler failed (status {result.status}):\n{result.output[-3000:]}")
    doc = json.loads(line.removeprefix(PROFILE_PREFIX))
    out.mkdir(parents=True, exist_ok=True)
    (out / "vmm-profile.json").write_text(json.dumps(doc, indent=2) + "\n")
    isola = doc["isola"]
    print(f"isola exits by kind: {isola['exit_counts']}")
    print(f"bus accesses: {isola['bus_total']}")
    for row in isola["bus_top"]:
        print(f"  {row['access']:>16} {row['count']:>8} {row['seconds']:8.3f} s")
    for label, text in doc["cprofile"].items():
        print(f"--- {label}\n{text}")
    print(f"wrote {out / 'vmm-profile.json'}")


if __name__ == "__main__":
    main()
