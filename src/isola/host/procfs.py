"""What /proc says about other processes: who is who (a pid is not enough), their children, their CPU and memory.

A pid alone does not name a process for long: once it ends, the kernel may give the number to a newcomer, and a
signal meant for a guest's monitor would hit a stranger. `Identity` pairs the pid with the process's start time
(field 22 of /proc/PID/stat, clock ticks since boot), which a reused pid cannot have, so a record written by one
process (a monitor's pid in an engine's state directory) can be checked by another, much later. A zombie keeps
its /proc entry and its identity until it is reaped, but runs nothing: it counts as ended.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/PID/stat that isola reads."""

    pid: int
    state: str
    ppid: int
    cpu_ns: int
    """User and system time of the process and of the children it has reaped."""
    start_ticks: int


@dataclass(frozen=True)
class Identity:
    pid: int
    start_ticks: int


def stat(pid: int) -> Stat | None:
    """/proc/PID/stat, or None when there is no such process."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return Stat(pid, fields[0], int(fields[1]), (utime + stime + cutime + cstime) * _TICK_NS, int(fields[19]))


def identity(pid: int) -> Identity | None:
    """The identity of the process `pid` now, or None when there is none."""
    found = stat(pid)
    return None if found is None else Identity(pid, found.start_ticks)


def running(who: Identity) -> bool:
    """Whether the process `who` names still runs (not ended, not a zombie, its pid not reused)."""
    found = stat(who.pid)
    return found is not None and found.start_ticks == who.start_ticks and found.state not in ("Z", "X")


def exists(who: Identity) -> bool:
    """Whether `who` still holds its pid: running, or a zombie not yet reaped (its pid, and its process group
    id, cannot be reused meanwhile)."""
    found = stat(who.pid)
    return found is not None and found.start_ticks == who.start_ticks


def _all() -> Iterator[Stat]:
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (found := stat(int(entry.name))) is not None:
            yield found


def tree(root: int) -> list[Stat]:
    """`root` and all its descendants alive now (zombies included), parents before children."""
    by_parent: dict[int, list[Stat]] = {}
    top: Stat | None = None
    for found in _all():
        by_parent.setdefault(found.ppid, []).append(found)
        if found.pid == root:
            top = found
    if top is None:
        return []
    result = [top]
    for member in result:  # grows while it is walked: breadth first
        result.extend(by_parent.get(member.pid, []))
    return result


def children(pid: int) -> list[int]:
    """The pids of `pid`'s children."""
    return [found.pid for found in _all() if found.ppid == pid]


def pss_bytes(pid: int) -> int:
    """The process's proportional set size: its private memory plus its share of what it shares, so the sum
    over a tree of forked processes counts each page once. 0 when it is gone (or a zombie)."""
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def catches(pid: int, signum: int) -> bool:
    """Whether `pid` has a handler for `signum` (SigCgt in /proc/PID/status)."""
    try:
        text = (PROC / str(pid) / "status").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False
