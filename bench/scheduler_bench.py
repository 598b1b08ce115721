"""The scheduler on a simulated cloud: 10,000 hosts, 100,000 instances placed one after another.

    .venv/bin/python bench/scheduler_bench.py [--hosts 10000] [--instances 100000] [--seed 1] [--out bench/results]

The hosts are a mix (seeded, so every run sees the same cloud): 16-128 vCPUs, 64-1024 GiB, three capability
pools (every rung; a kvm_pvm-like pool without `vm/kernel`; containers only), 2% draining, 1% leased to one of
the tenants. The requests come from 50 tenants: vm (process or kernel), container or emulated, 1-8 vCPUs,
256 MiB-16 GiB, a fifth of them with anti-affinity to their own group (spread a service over hosts), a
twentieth with affinity to it. Each placement is committed before the next, as the daemon would.

For each strategy (spread, pack) it reports placements per second of the fast index
(`isola.platform.scheduler.index`, goal >= 2,000/s), how many requests found no host, and the reference
scheduler's rate (every filter on every host) on the first `--reference` requests of the same stream, after
checking that both chose the same hosts there. Writes `scheduler.json` to `--out`.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from isola.platform.scheduler.index import PlacementIndex
from isola.platform.scheduler.model import HostView, Policy, Request, Selector, Strategy
from isola.platform.scheduler.scheduler import place

HERE = Path(__file__).resolve().parent
GOAL = 2000.0
ALL = frozenset({"emulated", "vm/kernel", "vm/process", "container", "metal"})
POOLS = (ALL, ALL - {"vm/kernel"}, frozenset({"container"}))
TENANTS = [f"t{i:02}" for i in range(50)]


def cloud(rng: random.Random, n: int) -> list[HostView]:
    hosts = []
    for i in range(n):
        vcpus = rng.choice([16, 32, 64, 128])
        hosts.append(
            HostView(
                id=f"h{i:05}",
                name=f"h{i:05}",
                state="draining" if rng.random() < 0.02 else "ready",
                offers=rng.choices(POOLS, weights=[6, 3, 1])[0],
                vcpus=vcpus,
                memory_mib=vcpus * rng.choice([4, 8]) * 1024,
                disk_gib=rng.choice([500, 1000, 2000]),
                leased_to=rng.choice(TENANTS) if rng.random() < 0.01 else None,
            )
        )
    return hosts


def requests(rng: random.Random, n: int) -> list[tuple[Request, dict[str, str]]]:
    stream = []
    for _ in range(n):
        kind, mode = rng.choices(
            [("vm", "process"), ("vm", "kernel"), ("container", None), ("emulated", None)], weights=[3, 3, 5, 1]
        )[0]
        group = Selector("group", f"g{rng.randrange(200)}")
        roll = rng.random()
        stream.append(
            (
                Request(
                    tenant_id=rng.choice(TENANTS),
                    kind=kind,
                    mode=mode,
                    vcpus=rng.choice([1, 1, 2, 2, 4, 8]),
                    memory_mib=rng.choice([256, 512, 1024, 2048, 4096, 8192, 16384]),
                    disk_gib=rng.choice([0, 0, 10, 20, 50]),
                    anti_affinity=(group,) if roll < 0.2 else (),
                    affinity=(group,) if 0.2 <= roll < 0.25 else (),
                ),
                {"group": group.value},
            )
        )
    return stream


def run_index(hosts: list[HostView], stream: list[tuple[Request, dict[str, str]]], policy: Policy) -> dict[str, Any]:
    started = time.perf_counter()
    index = PlacementIndex(hosts, policy)
    built = time.perf_counter() - started
    unplaced = 0
    started = time.perf_counter()
    for wanted, labels in stream:
        chosen = index.place(wanted)
        if chosen is None:
            unplaced += 1
        else:
            index.commit(chosen, wanted, labels)
    seconds = time.perf_counter() - started
    return {
        "build_s": round(built, 3),
        "seconds": round(seconds, 3),
        "placements_per_s": round(len(stream) / seconds, 1),
        "unplaced": unplaced,
    }


def run_reference(
    hosts: list[HostView], stream: list[tuple[Request, dict[str, str]]], policy: Policy
) -> dict[str, Any]:
    """The reference on the first requests, checked against the index on the same ones."""
    current = list(hosts)
    index = PlacementIndex(hosts, policy)
    position = {h.name: i for i, h in enumerate(hosts)}
    elapsed = 0.0
    for wanted, labels in stream:
        started = time.perf_counter()
        chosen = place(wanted, current, policy).chosen
        elapsed += time.perf_counter() - started
        fast = index.place(wanted)
        if (hosts[fast].name if fast is not None else None) != chosen:
            raise SystemExit(f"the index chose {fast} where the reference chose {chosen}: a bug")
        if chosen is None or fast is None:
            continue
        index.commit(fast, wanted, labels)
        h = current[position[chosen]]
        current[position[chosen]] = replace(
            h,
            used_vcpus=h.used_vcpus + wanted.vcpus,
            used_memory_mib=h.used_memory_mib + wanted.memory_mib,
            used_disk_gib=h.used_disk_gib + wanted.disk_gib,
            instances=h.instances + 1,
            labels=(*h.labels, (wanted.tenant_id, labels)),
        )
    return {"placements": len(stream), "placements_per_s": round(len(stream) / elapsed, 1), "agrees": True}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--instances", type=int, default=100_000)
    ap.add_argument("--reference", type=int, default=300, help="requests the reference scheduler also places")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    hosts = cloud(rng, args.hosts)
    stream = requests(rng, args.instances)
    doc: dict[str, Any] = {
        "bench": "scheduler",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "hosts": args.hosts,
        "instances": args.instances,
        "seed": args.seed,
        "goal_placements_per_s": GOAL,
        "strategies": {},
    }
    strategy: Strategy
    for strategy in ("spread", "pack"):
        policy = Policy(strategy=strategy)
        fast = run_index(hosts, stream, policy)
        reference = run_reference(hosts, stream[: args.reference], policy)
        fast["meets_goal"] = fast["placements_per_s"] >= GOAL
        doc["strategies"][strategy] = {"index": fast, "reference": reference}
        print(
            f"{strategy:6}: index {fast['placements_per_s']:>9,.0f} placements/s "
            f"({fast['seconds']:.1f} s for {args.instances:,}, {fast['unplaced']:,} unplaced, built in "
            f"{fast['build_s']:.2f} s); reference {reference['placements_per_s']:,.0f}/s on the first "
            f"{reference['placements']} (same choices)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scheduler.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out / 'scheduler.json'}")


if __name__ == "__main__":
    main()
