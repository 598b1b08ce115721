"""``python -m isola.vmm.nested [options] -- COMMAND...``: run COMMAND in the nested lane's L1.

The console streams to stdout as it arrives, the time summary goes to stderr, and the exit status is the
command's, so a Makefile target (``make test-nested``) can run a test suite in L1 like any other command.
Lane failures (L1 set-up, timeout, panic) exit with isola's usual status for an engine error.
"""

from __future__ import annotations

import argparse
import sys

from isola.errors import IsolaError, exit_code
from isola.vmm.nested.lane import LaneTimeoutError, run_in_l1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m isola.vmm.nested", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds from launch to the end (1800)")
    parser.add_argument("--memory", type=int, default=2048, metavar="MIB", help="L1 memory in MiB (2048)")
    parser.add_argument("--cpus", type=int, default=2, help="L1 vCPUs (2)")
    parser.add_argument(
        "--retries", type=int, default=0, help="run the command again (in a fresh L1) after L1 hung, this many times"
    )
    parser.add_argument("command", nargs="+", help="the command to run in L1, after --")
    args = parser.parse_args(argv)
    for attempt in range(args.retries + 1):
        try:
            result = run_in_l1(
                args.command,
                timeout=args.timeout,
                memory_mib=args.memory,
                cpus=args.cpus,
                on_line=lambda line: print(line, flush=True),
            )
            break
        except LaneTimeoutError as exc:
            print(f"nested lane: {exc.message}", file=sys.stderr)
            if attempt == args.retries:
                return exit_code(exc)
            print("nested lane: running the command again in a fresh L1", file=sys.stderr)
        except IsolaError as exc:
            print(f"nested lane: {exc.message}", file=sys.stderr)
            return exit_code(exc)
    print(f"nested lane: exit {result.status}; {result.summary()}", file=sys.stderr)
    return result.status


if __name__ == "__main__":
    sys.exit(main())
