"""isola-oci beside runc and crun: `run` of /bin/true in a busybox bundle, start to exit, and peak RSS; and,
with --podman, `isola container run --rm busybox true` beside `podman run --rm` of the same rootfs.

    python bench/oci_bench.py [--runs 20] [--podman] [--out bench/results/oci.json]

Recipe of research/measurements.md §3: the bundle's config.json is `runc spec` with no terminal and args
/bin/true (pid/net/ipc/uts/mount namespaces, read-only root). crun refuses this host's hybrid cgroups, so the
whole benchmark re-executes itself in a private mount namespace (`unshare -m --propagation private`) where the
cgroup2 mount at /sys/fs/cgroup/unified is unmounted: every runtime sees the same plain-v1 host. Runs are
interleaved (one of each runtime per round), so drift on this shared machine hits all alike. Peak RSS is the
runtime process's ru_maxrss from wait4 (as GNU time's %M: the process and the children it waited for).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from isola import paths
from isola.assets import manifest

REEXEC = "ISOLA_OCI_BENCH_PRIVATE_NS"
UNIFIED = "/sys/fs/cgroup/unified"


def private_namespace() -> None:
    """Re-run this script in a private mount namespace without the cgroup2 mount (crun's condition here)."""
    if os.environ.get(REEXEC):
        if os.path.ismount(UNIFIED):
            subprocess.run(["umount", UNIFIED], check=True)
        return
    os.environ[REEXEC] = "1"
    os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable, *sys.argv])


def make_bundle(root: Path) -> Path:
    busybox = manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "amd64", "busybox")
    rootfs = root / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    for applet in ("true", "sh"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp"):
        (rootfs / d).mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(root)], check=True)
    config = json.loads((root / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    (root / "config.json").write_text(json.dumps(config))
    return root


def busybox() -> str:
    return str(manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "amd64", "busybox"))


def timed(argv: list[str]) -> tuple[float, int, int]:
    """(seconds from spawn to exit, peak RSS in KiB, exit status). The RSS comes from busybox's `time -f %M`:
    a child forked from this Python process would carry Python's own high-water mark across its exec."""
    start = time.perf_counter()
    done = subprocess.run([busybox(), "time", "-f", "%M", *argv], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)  # fmt: skip
    elapsed = time.perf_counter() - start
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    if done.returncode != 0:
        sys.stderr.write(f"{argv[0]}: exit {done.returncode}: {' '.join(lines[:-1])}\n")
    # busybox 1.35's %M takes ru_maxrss (KiB) for pages and multiplies by 4: undone here (runc then shows the
    # 10 MB measured with GNU time in research/measurements.md §3)
    rss = int(lines[-1]) // 4 if lines and lines[-1].isdigit() else 0
    return elapsed, rss, done.returncode


def summary(samples: list[tuple[float, int, int]]) -> dict[str, Any]:
    ok = [s for s in samples if s[2] == 0]
    if not ok:
        return {"runs": len(samples), "failed": len(samples)}
    times = [s[0] * 1000 for s in ok]
    return {
        "runs": len(samples),
        "failed": len(samples) - len(ok),
        "median_ms": round(statistics.median(times), 2),
        "min_ms": round(min(times), 2),
        "max_ms": round(max(times), 2),
        "peak_rss_kib": max(s[1] for s in ok),
        "median_rss_kib": int(statistics.median(s[1] for s in ok)),
    }


def oci_runtimes(bundle: Path, state: Path) -> dict[str, Any]:
    found = {"isola-oci": str(Path(sys.executable).parent / "isola-oci")}
    for name in ("runc", "crun"):
        if shutil.which(name):
            found[name] = shutil.which(name)  # type: ignore[assignment]
    return {
        name: (lambda i, b=binary, n=name: [b, "--root", str(state / n), "run", "--bundle", str(bundle), f"b{i}"])
        for name, binary in found.items()
    }


def podman_commands(work: Path, rootfs: Path) -> dict[str, Any]:
    """`isola container run` and `podman run` of the same busybox rootfs (imported into each)."""
    isola = str(Path(sys.executable).parent / "isola")
    env_home = work / "isola-home"
    env_home.mkdir()
    (env_home / "assets").symlink_to(paths.assets_dir())
    os.environ["ISOLA_HOME"] = str(env_home)
    subprocess.run([isola, "image", "build"], check=True, stdout=subprocess.DEVNULL)
    tar = work / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    subprocess.run(
        ["podman", "import", str(tar), "localhost/isola-bench:latest"], check=True, stdout=subprocess.DEVNULL
    )
    podman = ["podman", "--cgroup-manager=cgroupfs", "--events-backend=file", "--runtime", "runc", "run", "--rm",
              "--pull", "never", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
              "localhost/isola-bench:latest", "/bin/true"]  # fmt: skip
    return {
        "isola container run": lambda i: [isola, "container", "run", "--rm", "busybox", "true"],
        "podman run (runc)": lambda i: podman,
    }


def bench(commands: dict[str, Any], runs: int) -> dict[str, Any]:
    samples: dict[str, list[tuple[float, int, int]]] = {name: [] for name in commands}
    for argv in commands.values():  # one warm-up each: page cache, pyc files
        timed(argv(f"warm-{os.getpid()}"))
    for i in range(runs):
        for name, argv in commands.items():
            samples[name].append(timed(argv(f"{os.getpid()}-{i}")))
    return {name: summary(s) for name, s in samples.items()}


def ratios(results: dict[str, Any], subject: str, peers: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    mine = results.get(subject, {})
    for peer in peers:
        theirs = results.get(peer, {})
        if "median_ms" in mine and "median_ms" in theirs:
            out[f"time_vs_{peer}"] = round(mine["median_ms"] / theirs["median_ms"], 2)
            out[f"rss_vs_{peer}"] = round(mine["peak_rss_kib"] / theirs["peak_rss_kib"], 2)
    return out


def plot(results: dict[str, Any], target: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')")
        return
    names = [n for n, r in results.items() if "median_ms" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(names, [results[n]["median_ms"] for n in names], color="#4c72b0")
    left.set_ylabel("start → exit, median (ms)")
    right.bar(names, [results[n]["peak_rss_kib"] / 1024 for n in names], color="#dd8452")
    right.set_ylabel("peak RSS (MiB)")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle("run of /bin/true in a busybox bundle")
    fig.tight_layout()
    fig.savefig(target, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--podman", action="store_true", help="also isola container run vs podman run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "oci.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("oci_bench needs root (namespaces, cgroups)", file=sys.stderr)
        return 77
    private_namespace()
    with tempfile.TemporaryDirectory(prefix="oci-bench-") as tmp:
        work = Path(tmp)
        bundle = make_bundle(work / "bundle")
        runtimes = bench(oci_runtimes(bundle, work / "state"), args.runs)
        report: dict[str, Any] = {
            "runs": args.runs,
            "host": os.uname().release,
            "runtimes": runtimes,
            "ratios": ratios(runtimes, "isola-oci", ("runc", "crun")),
        }
        if args.podman and shutil.which("podman"):
            containers = bench(podman_commands(work, bundle / "rootfs"), max(3, args.runs // 4))
            report["containers"] = containers
            report["container_ratios"] = ratios(containers, "isola container run", ("podman run (runc)",))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    plot(runtimes, args.out.with_suffix(".png"))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
