"""The part of `vmm_bench.py` that runs inside the nested lane's L1: isola-vmm and QEMU, turn about.

    python bench/vmm_l1.py PLAN.json        (in L1; `vmm_bench.py` writes the plan and starts the lane)

Why a separate script: both VMMs need a KVM that boots kernels, which only L1 has here, and the timings must be
taken next to the VMM process (a host clock across the lane would add L1's console latency to every sample).
Each round boots the same kernel and initramfs under both VMMs, alternating which goes first so that drift in
L1 (page cache warming, other work on the host's two cores) lands on both. Per boot it records the wall time
from launching the VMM to the guest's /init marker on the console, the guest's own uptime at that marker, the
virtio-blk sequential read (`dd iflag=direct` over the whole disk, timed by the guest's clock), the VMM's RSS
without its guest RAM, and launch → exit. The results go to stdout as one `VMM-BENCH-RESULT {json}` line.
"""

from __future__ import annotations

import compileall
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULT_PREFIX = "VMM-BENCH-RESULT "
MIB = 1 << 20
DISK = Path("/tmp/vmm-bench-disk.img")
VM_DOCUMENT = Path("/tmp/vmm-bench-vm.json")
RUN_TIMEOUT = 300.0
GUEST_RAM_SLACK = 16 * MIB
"""QEMU rounds its RAM block up and adds guard pages: the guest-RAM mapping is this much larger at most."""


@dataclass
class Sample:
    """One boot of one VMM. Times are seconds; `*_wall` on L1's clock from launch, `*_uptime` on the guest's."""

    vmm: str
    round: int
    init_wall: float | None = None
    init_uptime: float | None = None
    ready_wall: float | None = None
    ready_uptime: float | None = None
    read_mb_s: float | None = None
    dd_line: str = ""
    rss_total_kib: int | None = None
    rss_guest_kib: int | None = None
    rss_vmm_kib: int | None = None
    guest_mapping_kib: int | None = None
    large_anon_kib: list[tuple[int, int]] = field(default_factory=list)
    """(size, Rss) of each anonymous mapping of 1 MiB or more: to check which one was taken for guest RAM."""
    exit_wall: float | None = None
    returncode: int | None = None
    error: str | None = None
    console_tail: list[str] = field(default_factory=list)


def make_disk(path: Path, mib: int) -> None:
    """A disk image of `mib` MiB of incompressible bytes in L1's tmpfs (zeros could be read from holes)."""
    block = os.urandom(MIB)
    with path.open("wb") as f:
        for i in range(mib):
            f.write(block[i % 251 :] + block[: i % 251])  # a different rotation per MiB: no two blocks alike


def warm_up(plan: dict[str, Any]) -> dict[str, float]:
    """Bring both VMMs to the state they are in on a host that launches them often, and say what it cost.

    isola-vmm is Python: a deployed one has its bytecode compiled at install time, but the lane shows L1 the
    project's sources without `__pycache__` (and forbids writing it), so each launch would compile every module
    again under TCG (~3 s). The overlay over the project is writable, so the bytecode is compiled once here.
    Then the kernel, the initramfs and both VMMs' files are read once, so that the first boot does not pay for
    fetching them over 9p and the order of the VMMs in a round does not matter.
    """
    import isola  # the package the isola-vmm subprocesses will import

    costs = {}
    t0 = time.monotonic()
    compileall.compile_dir(Path(isola.__file__).parent, quiet=1)
    costs["compile_isola_s"] = round(time.monotonic() - t0, 2)
    for name, argv in (
        ("import_launch_s", [sys.executable, "-c", "import isola.vmm.launch"]),
        ("qemu_version_s", ["qemu-system-x86_64", "--version"]),
    ):
        t0 = time.monotonic()
        subprocess.run(argv, check=True, capture_output=True)
        costs[name] = round(time.monotonic() - t0, 2)
    for path in (
        plan["kernel"],
        plan["initrd"],
        *Path("/usr/share/qemu").glob("*microvm*"),
        "/usr/share/qemu/linuxboot_dma.bin",
    ):
        Path(path).read_bytes()
    return costs


def isola_argv(plan: dict[str, Any]) -> list[str]:
    document = {
        "boot-source": {
            "kernel_image_path": plan["kernel"],
            "initrd_path": plan["initrd"],
            "boot_args": plan["append"],
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": plan["memory_mib"]},
        "drives": [{"drive_id": "bench", "path_on_host": str(DISK), "is_read_only": True}],
    }
    VM_DOCUMENT.write_text(json.dumps(document))
    return [sys.executable, "-m", "isola.vmm.launch", "--config", str(VM_DOCUMENT)]


def qemu_argv(plan: dict[str, Any]) -> list[str]:
    return [
        "qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-cpu", "host", "-smp", "1",
        "-m", str(plan["memory_mib"]), "-nodefaults", "-no-user-config", "-display", "none",
        "-serial", "stdio", "-no-reboot", "-L", "/usr/share/qemu",
        "-kernel", plan["kernel"], "-initrd", plan["initrd"], "-append", plan["append"],
        "-drive", f"id=d0,file={DISK},format=raw,if=none,readonly=on",
        "-device", "virtio-blk-device,drive=d0",
    ]  # fmt: skip


def smaps_rss(pid: int, guest_bytes: int) -> tuple[int, int, int, list[tuple[int, int]]]:
    """(total Rss, Rss of the guest-RAM mapping, that mapping's size, [(size, Rss) of every anonymous mapping of
    1 MiB or more]), in KiB, from /proc/PID/smaps.

    The guest RAM is the first anonymous mapping at least as large as the guest's memory and at most
    `GUEST_RAM_SLACK` larger (both VMMs keep it in one mapping; the kernel may merge a neighbouring anonymous
    mapping into it, which the list of large mappings shows); its resident pages are what the guest touched,
    which is not the VMM's own cost.
    """
    total = guest = size = 0
    found = in_guest = anonymous = False
    length = 0
    large: list[tuple[int, int]] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=6)
            if not head[0].endswith(":") and "-" in head[0]:
                start, end = (int(x, 16) for x in head[0].split("-"))
                anonymous = len(head) == 5 or not head[5].startswith("/")
                length = end - start
                in_guest = not found and anonymous and guest_bytes <= length <= guest_bytes + GUEST_RAM_SLACK
                if in_guest:
                    found, size = True, length // 1024
            elif head[0] == "Rss:":
                kib = int(head[1])
                total += kib
                if in_guest:
                    guest = kib
                if anonymous and length >= MIB:
                    large.append((length // 1024, kib))
    return total, guest, size, large


def run_one(vmm: str, argv: list[str], plan: dict[str, Any], round_: int) -> Sample:
    """Boot once and watch the console: the markers the guest's /init prints, then the exit."""
    sample = Sample(vmm, round_)
    lines: list[str] = []
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    watchdog = threading.Timer(RUN_TIMEOUT, proc.kill)
    watchdog.start()
    dd_start: float | None = None
    try:
        for raw in proc.stdout:
            now = time.monotonic() - start
            text = raw.decode("utf-8", "replace").strip()
            lines.append(text)
            word, _, rest = text.partition(" ")
            if word == "BENCH-INIT":
                sample.init_wall, sample.init_uptime = round(now, 3), float(rest)
            elif word == "BENCH-READY":
                sample.ready_wall, sample.ready_uptime = round(now, 3), float(rest)
            elif word == "BENCH-DD-START":
                dd_start = float(rest)
            elif word == "BENCH-DD-END" and dd_start is not None:
                seconds = float(rest) - dd_start
                sample.read_mb_s = round(plan["disk_mib"] * MIB / 1e6 / seconds, 1) if seconds > 0 else None
            elif "copied" in text:
                sample.dd_line = text
            elif word == "BENCH-RSS":
                try:
                    total, guest, size, large = smaps_rss(proc.pid, plan["memory_mib"] * MIB)
                except OSError as exc:
                    sample.error = f"smaps: {exc}"
                else:
                    sample.rss_total_kib, sample.rss_guest_kib, sample.guest_mapping_kib = total, guest, size
                    sample.rss_vmm_kib = total - guest
                    sample.large_anon_kib = large
        sample.returncode = proc.wait()
        sample.exit_wall = round(time.monotonic() - start, 3)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sample.returncode != 0 or sample.init_wall is None or sample.read_mb_s is None:
        sample.error = sample.error or f"exit status {sample.returncode}, markers incomplete"
        sample.console_tail = lines[-25:]
    return sample


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    t0 = time.monotonic()
    make_disk(DISK, plan["disk_mib"])
    print(f"vmm-bench: {plan['disk_mib']} MiB disk image in {time.monotonic() - t0:.1f} s", flush=True)
    warm = warm_up(plan)
    print(f"vmm-bench: warm-up {warm}", flush=True)
    argvs = {"isola-vmm": isola_argv(plan), "qemu": qemu_argv(plan)}
    samples: list[Sample] = []
    for round_ in range(plan["rounds"]):
        order = ["isola-vmm", "qemu"] if round_ % 2 == 0 else ["qemu", "isola-vmm"]
        for vmm in order:
            sample = run_one(vmm, argvs[vmm], plan, round_)
            samples.append(sample)
            print(
                f"vmm-bench: round {round_} {vmm:9} /init {sample.init_wall} s (guest {sample.init_uptime} s), "
                f"read {sample.read_mb_s} MB/s, VMM RSS {sample.rss_vmm_kib} KiB, exit {sample.exit_wall} s"
                + (f"  ERROR {sample.error}" if sample.error else ""),
                flush=True,
            )
            for line in sample.console_tail:
                print(f"vmm-bench:   | {line}", flush=True)
    qemu_version = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False)
    doc = {
        "samples": [asdict(s) for s in samples],
        "warm_up": warm,
        "qemu": qemu_version.stdout.splitlines()[0] if qemu_version.stdout else "",
        "kvm": "kvm_amd" if Path("/sys/module/kvm_amd").exists() else "kvm_intel or other",
        "l1_cpus": os.cpu_count(),
    }
    print(RESULT_PREFIX + json.dumps(doc, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
