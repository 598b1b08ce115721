"""`isola-oci`: runc's command line, so that podman (--runtime), containerd (BinaryName) and people who know
runc can drive isola's container runtime unchanged.

    isola-oci [--root DIR] [--log FILE] [--log-format text|json] [--debug] COMMAND [OPTIONS] ID ...

Errors are one line on stderr (and, with --log, a record in the log file, which containerd reads back) and an
exit status from isola.errors. argparse, not click: this is on the path of every container start.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any, NoReturn

from isola.container.oci import runtime as rt
from isola.container.oci import spec
from isola.container.oci.state import DEFAULT_ROOT
from isola.errors import IsolaError, NotFoundError, UnsupportedError, UsageError, exit_code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _signal(text: str) -> int:
    """A signal by number (9), name (KILL) or full name (SIGKILL), as `runc kill` accepts."""
    if text.isdigit():
        return int(text)
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UsageError(f"unknown signal {text!r}") from None


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def cmd_spec(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    if args.rootless:
        raise UnsupportedError("spec --rootless: isola-oci runs containers as root only")
    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise UsageError(f"{path} already exists; remove it first")
    with open(path, "w") as f:
        json.dump(spec.default(), f, indent="\t")
    return 0


def cmd_create(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    runtime.create(
        args.id,
        args.bundle,
        pid_file=args.pid_file,
        console_socket=args.console_socket,
        no_pivot=args.no_pivot,
        preserve_fds=args.preserve_fds,
    )
    return 0


def cmd_run(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    return rt.run(
        runtime,
        args.id,
        args.bundle,
        detach=args.detach,
        pid_file=args.pid_file,
        console_socket=args.console_socket,
        no_pivot=args.no_pivot,
        preserve_fds=args.preserve_fds,
    )


def cmd_start(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    runtime.start(args.id)
    return 0


def cmd_state(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    _print_json(runtime.state(args.id))
    return 0


def cmd_list(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    states = []
    for container_id in runtime.store.ids():
        try:
            states.append(runtime.state(container_id))
        except NotFoundError:  # deleted while we listed
            continue
    if args.quiet:
        for st in states:
            print(st["id"])
    elif args.format == "json":
        _print_json(states)
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"] or "root") for s in states]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_kill(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    runtime.kill(args.id, _signal(args.signal), args.all)
    return 0


def cmd_delete(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    runtime.delete(args.id, args.force)
    return 0


def cmd_pause(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    runtime.pause(args.id, True)
    return 0


def cmd_resume(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    runtime.pause(args.id, False)
    return 0


def cmd_ps(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    pids = runtime.pids(args.id)
    if args.format == "json":
        sys.stdout.write(json.dumps(pids) + "\n")
        return 0
    print("PID     CMD")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        print(f"{pid:<7} {cmd}")
    return 0


def cmd_update(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    resources: dict[str, Any] = {}
    if args.resources:
        if args.resources == "-":
            text = sys.stdin.read()
        else:
            with open(args.resources) as f:
                text = f.read()
        try:
            resources = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--resources: not JSON: {exc.msg}") from None
    memory = {
        k: v
        for k, v in (("limit", args.memory), ("reservation", args.memory_reservation), ("swap", args.memory_swap))
        if v is not None
    }
    cpu = {
        k: v
        for k, v in (
            ("shares", args.cpu_share),
            ("quota", args.cpu_quota),
            ("period", args.cpu_period),
            ("cpus", args.cpuset_cpus),
            ("mems", args.cpuset_mems),
        )
        if v is not None
    }
    if memory:
        resources.setdefault("memory", {}).update(memory)
    if cpu:
        resources.setdefault("cpu", {}).update(cpu)
    if args.pids_limit is not None:
        resources["pids"] = {"limit": args.pids_limit}
    if args.blkio_weight is not None:
        resources.setdefault("blockIO", {})["weight"] = args.blkio_weight
    runtime.update(args.id, resources)
    return 0


def cmd_events(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    if args.stats:
        _print_json(runtime.stats(args.id))
        return 0
    while True:
        sys.stdout.write(json.dumps(runtime.stats(args.id)) + "\n")
        sys.stdout.flush()
        time.sleep(args.interval)


def cmd_features(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    from isola.container.oci import features

    _print_json(features.features())
    return 0


def cmd_exec(args: argparse.Namespace, runtime: rt.Runtime) -> int:
    from isola.container.oci import exec as oci_exec

    return oci_exec.main(runtime, args)


_GLOBAL_WITH_VALUE = ("--root", "--log", "--log-format", "--rootless", "--criu")


def _command_name(argv: list[str]) -> str | None:
    """The command word of argv (past the global options), so that only its sub-parser need be built: building
    all sixteen costs ~10 ms, a third of a `runc run`."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("-"):
            return word
        if word in _GLOBAL_WITH_VALUE:
            i += 1
        i += 1
    return None


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="isola-oci", description="isola's OCI container runtime, with runc's command line")
    parser.add_argument("--root", default=DEFAULT_ROOT, help="where container state lives (default %(default)s)")
    parser.add_argument("--log", help="also write errors to this file")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    parser.add_argument("--systemd-cgroup", action="store_true", help="not supported: isola-oci drives cgroupfs")
    parser.add_argument("--rootless", default="auto", help="accepted for runc compatibility; only root is supported")
    parser.add_argument("--criu", help=argparse.SUPPRESS)
    parser.add_argument("-v", "--version", action="version", version="isola-oci 0.1.0\nspec: " + spec.OCI_VERSION)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, func: Any, help_text: str, *, with_id: bool = True) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return _Parser(add_help=False)  # a stand-in that is never used
        p = sub.add_parser(name, help=help_text)
        if with_id:
            p.add_argument("id")
        p.set_defaults(func=func)
        return p

    def creating(p: argparse.ArgumentParser) -> None:
        p.add_argument("-b", "--bundle", default=".")
        p.add_argument("--pid-file")
        p.add_argument("--console-socket")
        p.add_argument("--no-pivot", action="store_true")
        p.add_argument("--no-new-keyring", action="store_true", help="accepted; isola-oci makes no session keyring")
        p.add_argument("--preserve-fds", type=int, default=0)

    p = command("spec", cmd_spec, "write a default config.json", with_id=False)
    p.add_argument("-b", "--bundle", default=".")
    p.add_argument("--rootless", action="store_true", help="not supported")
    creating(command("create", cmd_create, "create a container, its program not yet started"))
    p = command("run", cmd_run, "create and start a container")
    creating(p)
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("--keep", action="store_true", help="accepted for compatibility")
    command("start", cmd_start, "start a created container's program")
    command("state", cmd_state, "print a container's state JSON")
    p = command("list", cmd_list, "list containers", with_id=False)
    p.add_argument("-f", "--format", choices=("table", "json"), default="table")
    p.add_argument("-q", "--quiet", action="store_true")
    p = command("kill", cmd_kill, "send a signal to a container's init (or all its processes)")
    p.add_argument("signal", nargs="?", default="SIGTERM")
    p.add_argument("-a", "--all", action="store_true")
    p = command("delete", cmd_delete, "delete a stopped (or created) container")
    p.add_argument("-f", "--force", action="store_true")
    command("pause", cmd_pause, "freeze every process of a container")
    command("resume", cmd_resume, "thaw a paused container")
    p = command("ps", cmd_ps, "list a container's processes")
    p.add_argument("-f", "--format", choices=("table", "json"), default="table")
    p = command("update", cmd_update, "change a running container's resources")
    p.add_argument("-r", "--resources", help="a LinuxResources JSON file, - for stdin")
    p.add_argument("--memory", type=int)
    p.add_argument("--memory-reservation", type=int)
    p.add_argument("--memory-swap", type=int)
    p.add_argument("--cpu-share", type=int)
    p.add_argument("--cpu-quota", type=int)
    p.add_argument("--cpu-period", type=int)
    p.add_argument("--cpuset-cpus")
    p.add_argument("--cpuset-mems")
    p.add_argument("--pids-limit", type=int)
    p.add_argument("--blkio-weight", type=int)
    p = command("events", cmd_events, "print a container's resource statistics")
    p.add_argument("--stats", action="store_true", help="print them once and exit")
    p.add_argument("--interval", type=float, default=5.0)
    command("features", cmd_features, "print the features JSON", with_id=False)
    p = command("exec", cmd_exec, "run another process in a container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.add_argument("-p", "--process", help="a process.json, as in config.json's `process`")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("--console-socket")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--cwd")
    p.add_argument("-u", "--user")
    p.add_argument("--pid-file")
    p.add_argument("--cap", action="append", default=[])
    p.add_argument("--no-new-privs", action="store_true")
    p.add_argument("--preserve-fds", type=int, default=0)
    return parser


_COMMANDS = frozenset(
    (
        "spec",
        "create",
        "run",
        "start",
        "state",
        "list",
        "kill",
        "delete",
        "pause",
        "resume",
        "ps",
        "update",
        "events",
        "features",
        "exec",
    )
)


def _report(exc: IsolaError, log: str | None, log_format: str) -> None:
    line = exc.message if not exc.hint else f"{exc.message} ({exc.hint})"
    sys.stderr.write(f"isola-oci: {line}\n")
    if log:
        if log_format == "json":
            record = json.dumps(
                {"level": "error", "msg": line, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            )
        else:
            record = f'time="{time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}" level=error msg={json.dumps(line)}'
        try:
            with open(log, "a") as f:
                f.write(record + "\n")
        except OSError:
            pass


def main(argv: list[str] | None = None) -> NoReturn:
    """The console-script entry point."""
    log = None
    log_format = "text"
    debug = bool(os.environ.get("ISOLA_DEBUG"))
    try:
        words = sys.argv[1:] if argv is None else argv
        command = _command_name(words)
        known = command in _COMMANDS
        args = _parser(command if known and "-h" not in words and "--help" not in words else None).parse_args(words)
        log, log_format, debug = args.log, args.log_format, debug or args.debug
        if args.systemd_cgroup:
            raise UnsupportedError(
                "--systemd-cgroup: isola-oci manages cgroups directly (cgroupfs), not through systemd"
            )
        code = args.func(args, rt.Runtime(args.root))
    except IsolaError as exc:
        _report(exc, log, log_format)
        sys.exit(exit_code(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        _report(
            IsolaError(f"internal error: {type(exc).__name__}: {exc}", hint="ISOLA_DEBUG=1 shows the traceback"),
            log,
            log_format,
        )
        sys.exit(70)
    sys.stdout.flush()
    sys.exit(code)
