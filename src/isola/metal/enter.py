"""Putting a process into a metal instance: its cgroup, its network namespace (when it has one), a session of
its own — nothing else, so the program sees the host as it is: every CPU feature, /dev/kvm, the host's files.

`enter()` runs in a freshly forked child before it execs (the monitor's program: the monitor forks it while
still single-threaded, so Python code between fork and exec is safe there). For `exec` from a multi-threaded
caller (the daemon), where it is not, `python -m isola.metal.enter CGROUP_DIR... [--netns PATH] -- PROGRAM
ARGS` does the same and execs; the caller gives it a session of its own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from isola.cgroups import files
from isola.errors import IsolaError
from isola.host import libc


def enter(cgroup_dirs: Sequence[str], netns: str | None) -> None:
    """Move the calling process into the instance's cgroups and network namespace."""
    for directory in cgroup_dirs:
        files.write(directory, "cgroup.procs", 0)
    if netns is not None:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            libc.setns(fd, libc.CLONE_NEWNET)
        finally:
            os.close(fd)


def argv(cgroup_dirs: Sequence[str], netns: str | None, command: Sequence[str]) -> list[str]:
    """The command line that runs `command` inside the instance."""
    line = [sys.executable, "-m", "isola.metal.enter", *cgroup_dirs]
    if netns is not None:
        line += ["--netns", netns]
    return [*line, "--", *command]


def main(args: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if args is None else args)
    if "--" not in words or words.index("--") == len(words) - 1:
        print("usage: python -m isola.metal.enter CGROUP_DIR... [--netns PATH] -- PROGRAM [ARGS...]", file=sys.stderr)
        return 64
    split = words.index("--")
    before, command = words[:split], words[split + 1 :]
    netns = None
    if "--netns" in before:
        at = before.index("--netns")
        netns = before[at + 1]
        del before[at : at + 2]
    try:
        enter(before, netns)
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"isola-metal: {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    except IsolaError as err:
        print(f"isola-metal: cannot enter the instance: {err.message}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main())
