"""Where isola-vmm's boot and disk time go, next to QEMU's: run in L1 by `vmm_bench.py --profile`.

    python bench/vmm_profile_l1.py PLAN.json

Why: the benchmark gives the ratios; when a goal is missed, this says why. It measures, in the same L1:

- Python's start-up and the import of `isola.vmm.launch` (isola-vmm pays them before it opens /dev/kvm);
- one isola boot in this process, the way `isola-vmm --config` boots (`launch.boot`), with the set-up steps
  timed, every port and MMIO access counted and timed per address, and the vCPU exits counted by kind;
- the guest kernel log of that boot and of a QEMU boot (`benchdmesg=1`), to compare the kernel's own timeline;
- a second isola boot under cProfile in the vCPU thread and the device thread (slower; read the shares).

It prints one `VMM-PROFILE-RESULT {json}` line.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import vmm_l1
from isola.devices.bus import Bus
from isola.vmm import config, launch
from isola.vmm.event_loop import EventLoop
from isola.vmm.machine import Machine

RESULT_PREFIX = "VMM-PROFILE-RESULT "


def startup_costs() -> dict[str, float]:
    """Median wall time of a bare interpreter and of one that imports the VMM's launcher (3 runs each)."""
    out = {}
    for name, code in (("python_bare_s", "pass"), ("python_import_launch_s", "import isola.vmm.launch")):
        times = []
        for _ in range(3):
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.monotonic() - t0)
        out[name] = round(statistics.median(times), 3)
    return out


class Console:
    """The guest console as timed lines: markers, the kernel log dump, and the rest."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.pending = b""
        self.markers: dict[str, float] = {}
        self.dmesg: list[str] = []

    def feed(self, data: bytes) -> None:
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for raw in lines:
            text = raw.decode("utf-8", "replace").strip()
            if text.startswith("BENCH-"):
                self.markers.setdefault(text.split()[0], round(time.monotonic() - self.start, 3))
            elif text.startswith("DMESG "):
                self.dmesg.append(text.removeprefix("DMESG "))


@contextmanager
def patched(owner: Any, name: str, make: Callable[[Any], Any]) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, make(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


def timed(steps: dict[str, float], label: str, origin: float) -> Callable[[Any], Any]:
    """A wrapper factory that records when the wrapped call returns, in seconds from `origin`."""

    def make(original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            steps[label] = round(time.monotonic() - origin, 3)
            return result

        return wrapper

    return make


def bus_accounting(stats: dict[str, list[float]]) -> Callable[[Any], Any]:
    """A wrapper factory for Bus.read/Bus.write: count and time every access by address (and direction)."""

    def make(original: Any) -> Any:
        kind = original.__name__

        def wrapper(self: Bus, addr: int, *args: Any) -> Any:
            t0 = time.perf_counter()
            result = original(self, addr, *args)
            entry = stats[f"{kind} {addr:#x}"]
            entry[0] += 1
            entry[1] += time.perf_counter() - t0
            return result

        return wrapper

    return make


def isola_boot(plan: dict[str, Any], append: str) -> dict[str, Any]:
    """One in-process boot with the set-up timed, bus accesses accounted and exits counted."""
    origin = time.monotonic()
    steps: dict[str, float] = {}
    bus: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    machines: list[Machine] = []
    console = Console()
    document = json.loads(vmm_l1.VM_DOCUMENT.read_text())
    document["boot-source"]["boot_args"] = append
    with (
        patched(Machine, "__init__", timed(steps, "machine_created", origin)),
        patched(Machine, "load_linux", timed(steps, "kernel_loaded", origin)),
        patched(Machine, "start", timed(steps, "vcpus_started", origin)),
        patched(Bus, "read", bus_accounting(bus)),
        patched(Bus, "write", bus_accounting(bus)),
    ):
        console.start = origin
        status = launch.boot(
            config.parse(document), console=console.feed, on_started=lambda vm: machines.append(vm.machine)
        )
    steps["exited"] = round(time.monotonic() - origin, 3)
    top = sorted(bus.items(), key=lambda kv: -kv[1][1])[:15]
    return {
        "status": str(status.kind),
        "steps": steps,
        "markers": console.markers,
        "exit_counts": machines[0].exit_counts if machines else [],
        "bus_total": {
            "accesses": sum(int(v[0]) for v in bus.values()),
            "seconds": round(sum(v[1] for v in bus.values()), 3),
        },
        "bus_top": [{"access": k, "count": int(v[0]), "seconds": round(v[1], 3)} for k, v in top],
        "dmesg": console.dmesg,
    }


def qemu_boot(plan: dict[str, Any], append: str) -> dict[str, Any]:
    console = Console()
    argv = vmm_l1.qemu_argv({**plan, "append": append})
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    for raw in proc.stdout:
        console.feed(raw)
    proc.wait()
    return {"markers": console.markers, "dmesg": console.dmesg, "returncode": proc.returncode}


def profiled_boot(plan: dict[str, Any]) -> dict[str, str]:
    """A boot with cProfile in each vCPU thread and in the device thread; the top functions of each."""
    profiles: dict[str, cProfile.Profile] = {}
    lock = threading.Lock()

    def profile_in_thread(label: str) -> Callable[[Any], Any]:
        def make(original: Any) -> Any:
            def wrapper(*args: Any) -> Any:
                profiler = cProfile.Profile()
                with lock:
                    profiles[f"{label}-{threading.current_thread().name}"] = profiler
                return profiler.runcall(original, *args)

            return wrapper

        return make

    console = Console()
    document = json.loads(vmm_l1.VM_DOCUMENT.read_text())
    with (
        patched(Machine, "_vcpu_loop", profile_in_thread("vcpu")),
        patched(EventLoop, "_run", profile_in_thread("devices")),
    ):
        launch.boot(config.parse(document), console=console.feed)
    out = {}
    for label, profiler in profiles.items():
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        out[label] = text.getvalue()
    out["markers"] = json.dumps(console.markers)
    return out


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    vmm_l1.make_disk(vmm_l1.DISK, plan["disk_mib"])
    vmm_l1.isola_argv(plan)  # writes the VM document
    append = plan["append"] + " benchdmesg=1"
    doc: dict[str, Any] = {"startup_without_bytecode": startup_costs()}
    doc["warm_up"] = vmm_l1.warm_up(plan)
    doc["startup"] = startup_costs()
    print(f"vmm-profile: start-up {doc['startup_without_bytecode']} → with bytecode {doc['startup']}", flush=True)
    doc["isola"] = isola_boot(plan, append)
    print(f"vmm-profile: isola {doc['isola']['steps']} {doc['isola']['markers']}", flush=True)
    doc["qemu"] = qemu_boot(plan, append)
    print(f"vmm-profile: qemu {doc['qemu']['markers']}", flush=True)
    doc["cprofile"] = profiled_boot(plan)
    print(RESULT_PREFIX + json.dumps(doc, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
