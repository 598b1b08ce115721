"""`isola-oci`: runc's command line, so that podman (--runtime), containerd (BinaryName) and people who know
runc can drive isola's container runtime unchanged.

    isola-oci [--root DIR] [--log FILE] [--log-format text|json] [--debug] COMMAND [OPTIONS] ID ...

Errors are one line on stderr (and, with --log, a record in the log file, which containerd and conmon read
back) and an exit status from isola.errors.

This is on the path of every container start, and runc's whole `run` takes ~22 ms, so the command line is read
by the small table-driven parser below rather than argparse (whose import, help formatter, gettext and locale
cost ~5 ms and 0.3 MB), each command imports only what it uses, and the process ends with os._exit once its
output is flushed: the interpreter's orderly shutdown would cost another 2-3 ms for nothing.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from isola.container.oci.state import DEFAULT_ROOT
from isola.errors import IsolaError, NotFoundError, UnsupportedError, UsageError, exit_code

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    from isola.container.oci.runtime import Runtime

VERSION = "0.1.0"


class Opt:
    """One option: its spellings, what it takes (`flag`, `str`, `int`, `float`, or `list` for a repeatable
    string) and its default. The attribute it sets is named after the last spelling (`--pid-file` -> pid_file)."""

    __slots__ = ("choices", "default", "dest", "help", "kind", "names")

    def __init__(
        self, names: str, kind: str = "flag", default: Any = None, help: str = "", choices: tuple[str, ...] = ()
    ) -> None:
        self.names = tuple(names.split())
        self.dest = self.names[-1].lstrip("-").replace("-", "_")
        self.kind = kind
        self.default = False if kind == "flag" else default
        self.help = help
        self.choices = choices


class Command:
    """A command word: its handler, positional arguments (a trailing `?` makes one optional) and, for `exec`,
    the name of the attribute that takes every word after them."""

    __slots__ = ("handler", "help", "name", "options", "positionals", "rest")

    def __init__(
        self,
        name: str,
        handler: Callable[[SimpleNamespace], int],
        help: str,
        positionals: tuple[str, ...] = ("id",),
        options: tuple[Opt, ...] = (),
        rest: str | None = None,
    ) -> None:
        self.name = name
        self.handler = handler
        self.help = help
        self.positionals = positionals
        self.options = options
        self.rest = rest


def _signal(text: str) -> int:
    """A signal by number (9), name (KILL) or full name (SIGKILL), as `runc kill` accepts."""
    if text.isdigit():
        return int(text)
    import signal

    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    number = getattr(signal, name, None)
    if not isinstance(number, int) or name.startswith("SIG_"):
        raise UsageError(f"unknown signal {text!r}")
    return number


def _print_json(value: Any) -> None:
    import json

    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def _runtime(args: SimpleNamespace) -> Runtime:
    from isola.container.oci.runtime import Runtime

    return Runtime(args.root)


def cmd_spec(args: SimpleNamespace) -> int:
    import json

    from isola.container.oci import spec

    if args.rootless:
        raise UnsupportedError("spec --rootless: isola-oci runs containers as root only")
    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise UsageError(f"{path} already exists; remove it first")
    with open(path, "w") as f:
        json.dump(spec.default(), f, indent="\t")
    return 0


def cmd_create(args: SimpleNamespace) -> int:
    _runtime(args).create(
        args.id,
        args.bundle,
        pid_file=args.pid_file,
        console_socket=args.console_socket,
        no_pivot=args.no_pivot,
        preserve_fds=args.preserve_fds,
    )
    return 0


def cmd_run(args: SimpleNamespace) -> int:
    from isola.container.oci import runtime

    return runtime.run(
        _runtime(args),
        args.id,
        args.bundle,
        detach=args.detach,
        pid_file=args.pid_file,
        console_socket=args.console_socket,
        no_pivot=args.no_pivot,
        preserve_fds=args.preserve_fds,
    )


def cmd_start(args: SimpleNamespace) -> int:
    _runtime(args).start(args.id)
    return 0


def cmd_state(args: SimpleNamespace) -> int:
    _print_json(_runtime(args).state(args.id))
    return 0


def cmd_list(args: SimpleNamespace) -> int:
    runtime = _runtime(args)
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


def cmd_kill(args: SimpleNamespace) -> int:
    _runtime(args).kill(args.id, _signal(args.signal or "SIGTERM"), args.all)
    return 0


def cmd_delete(args: SimpleNamespace) -> int:
    _runtime(args).delete(args.id, args.force)
    return 0


def cmd_pause(args: SimpleNamespace) -> int:
    _runtime(args).pause(args.id, True)
    return 0


def cmd_resume(args: SimpleNamespace) -> int:
    _runtime(args).pause(args.id, False)
    return 0


def cmd_ps(args: SimpleNamespace) -> int:
    pids = _runtime(args).pids(args.id)
    if args.format == "json":
        import json

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


def cmd_update(args: SimpleNamespace) -> int:
    import json

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
    _runtime(args).update(args.id, resources)
    return 0


def cmd_events(args: SimpleNamespace) -> int:
    import json
    import time

    runtime = _runtime(args)
    if args.stats:
        _print_json(runtime.stats(args.id))
        return 0
    while True:
        sys.stdout.write(json.dumps(runtime.stats(args.id)) + "\n")
        sys.stdout.flush()
        time.sleep(args.interval)


def cmd_features(args: SimpleNamespace) -> int:
    from isola.container.oci import features

    _print_json(features.features())
    return 0


def cmd_exec(args: SimpleNamespace) -> int:
    from isola.container.oci import exec as oci_exec

    return oci_exec.main(_runtime(args), args)


GLOBAL = (
    Opt("--root", "str", DEFAULT_ROOT, "where container state lives"),
    Opt("--log", "str", None, "also write errors to this file"),
    Opt("--log-format", "str", "text", "the --log records' format", ("text", "json")),
    Opt("--debug", help="show the traceback of internal errors"),
    Opt("--systemd-cgroup", help="not supported: isola-oci drives cgroupfs"),
    Opt("--rootless", "str", "auto", "accepted for runc compatibility; only root is supported"),
    Opt("--criu", "str", None, "accepted for runc compatibility; checkpoints are not supported"),
)
CREATING = (
    Opt("-b --bundle", "str", ".", "the bundle: config.json and the root filesystem"),
    Opt("--pid-file", "str", None, "write the container's init pid to this file"),
    Opt("--console-socket", "str", None, "unix socket that receives the terminal (process.terminal)"),
    Opt("--no-pivot", help="MS_MOVE and chroot instead of pivot_root (a rootfs on a ramfs)"),
    Opt("--no-new-keyring", help="accepted; isola-oci makes no session keyring"),
    Opt("--preserve-fds", "int", 0, "pass N more descriptors after stdio to the container"),
)
FORMAT = Opt("-f --format", "str", "table", "output format", ("table", "json"))
COMMANDS = {
    c.name: c
    for c in (
        Command(
            "spec",
            cmd_spec,
            "write a default config.json",
            (),
            (Opt("-b --bundle", "str", ".", "where to write it"), Opt("--rootless", help="not supported")),
        ),
        Command("create", cmd_create, "create a container, its program not yet started", options=CREATING),
        Command(
            "run",
            cmd_run,
            "create and start a container",
            options=(
                *CREATING,
                Opt("-d --detach", help="return once the program runs"),
                Opt("--keep", help="accepted for compatibility"),
            ),
        ),
        Command("start", cmd_start, "start a created container's program"),
        Command("state", cmd_state, "print a container's state JSON"),
        Command("list", cmd_list, "list containers", (), (FORMAT, Opt("-q --quiet", help="ids only"))),
        Command(
            "kill",
            cmd_kill,
            "send a signal (default SIGTERM) to a container's init, or all its processes",
            ("id", "signal?"),
            (Opt("-a --all", help="every process of the container's cgroup"),),
        ),
        Command("delete", cmd_delete, "delete a stopped or created container", options=(Opt("-f --force"),)),
        Command("pause", cmd_pause, "freeze every process of a container"),
        Command("resume", cmd_resume, "thaw a paused container"),
        Command("ps", cmd_ps, "list a container's processes", options=(FORMAT,)),
        Command(
            "update",
            cmd_update,
            "change a running container's resources",
            options=(
                Opt("-r --resources", "str", None, "a LinuxResources JSON file, - for stdin"),
                Opt("--memory", "int"),
                Opt("--memory-reservation", "int"),
                Opt("--memory-swap", "int"),
                Opt("--cpu-share", "int"),
                Opt("--cpu-quota", "int"),
                Opt("--cpu-period", "int"),
                Opt("--cpuset-cpus", "str"),
                Opt("--cpuset-mems", "str"),
                Opt("--pids-limit", "int"),
                Opt("--blkio-weight", "int"),
            ),
        ),
        Command(
            "events",
            cmd_events,
            "print a container's resource statistics",
            options=(Opt("--stats", help="print them once and exit"), Opt("--interval", "float", 5.0, "seconds")),
        ),
        Command("features", cmd_features, "print the features JSON", ()),
        Command(
            "exec",
            cmd_exec,
            "run another process in a container",
            rest="command",
            options=(
                Opt("-p --process", "str", None, "a process.json, as config.json's `process`"),
                Opt("-d --detach"),
                Opt("-t --tty"),
                Opt("--console-socket", "str"),
                Opt("-e --env", "list", help="VAR=VALUE"),
                Opt("--cwd", "str"),
                Opt("-u --user", "str", help="UID[:GID]"),
                Opt("--pid-file", "str"),
                Opt("--cap", "list", help="a capability to add"),
                Opt("--no-new-privs"),
                Opt("--preserve-fds", "int", 0),
            ),
        ),
    )
}


def _value(prog: str, opt: Opt, text: str) -> Any:
    if opt.kind == "int":
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"{prog}{opt.names[-1]}: not an integer: {text!r}") from None
    if opt.kind == "float":
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{prog}{opt.names[-1]}: not a number: {text!r}") from None
    if opt.choices and text not in opt.choices:
        raise UsageError(f"{prog}{opt.names[-1]}: {text!r} is not one of {', '.join(opt.choices)}")
    return text


def parse(argv: list[str]) -> tuple[Command | None, SimpleNamespace]:
    """argv -> (the command, its arguments as attributes). Global options come before the command word, the
    command's options anywhere after it (`--name value` or `--name=value`), `--` ends the options; every word
    after `exec ID` belongs to the command to run. (None, args) asks for help, args.help naming the command."""
    args = SimpleNamespace(help=None, version=False)
    command: Command | None = None
    table = {name: opt for opt in GLOBAL for name in opt.names}
    for opt in GLOBAL:
        setattr(args, opt.dest, opt.default)
    prog = ""  # what errors start with: the command word once it is known
    positionals: list[str] = []
    i = 0
    only_positionals = False
    while i < len(argv):
        word = argv[i]
        i += 1
        if command is not None and command.rest and len(positionals) == len(command.positionals):
            rest = argv[i - 1 :]
            setattr(args, command.rest, rest[1:] if rest[:1] == ["--"] else rest)
            break
        if word == "--" and not only_positionals:
            only_positionals = True
            continue
        if word.startswith("-") and len(word) > 1 and not only_positionals:
            name, eq, text = word.partition("=") if word.startswith("--") else (word, "", "")
            if name in ("-h", "--help"):
                args.help = command.name if command is not None else ""
                return None, args
            if name in ("-v", "--version") and command is None:
                args.version = True
                return None, args
            found = table.get(name)
            if found is None:
                raise UsageError(f"{prog}unknown option {name}")
            opt = found
            if opt.kind == "flag":
                if eq:
                    raise UsageError(f"{prog}{name} takes no value")
                setattr(args, opt.dest, True)
                continue
            if not eq:
                if i >= len(argv):
                    raise UsageError(f"{prog}{name} needs a value")
                text = argv[i]
                i += 1
            value = _value(prog, opt, text)
            if opt.kind == "list":
                getattr(args, opt.dest).append(value)
            else:
                setattr(args, opt.dest, value)
            continue
        if command is None:
            command = COMMANDS.get(word)
            if command is None:
                raise UsageError(f"{prog}unknown command {word!r} (isola-oci --help lists them)")
            prog = f"{word}: "
            table = {name: opt for opt in command.options for name in opt.names}
            for opt in command.options:
                setattr(args, opt.dest, [] if opt.kind == "list" else opt.default)
            if command.rest:
                setattr(args, command.rest, [])
            only_positionals = False
            continue
        if len(positionals) == len(command.positionals):
            raise UsageError(f"{prog}unexpected argument {word!r}")
        positionals.append(word)
    if command is None:
        raise UsageError("no command given (isola-oci --help lists them)")
    for i, name in enumerate(command.positionals):
        if i < len(positionals):
            setattr(args, name.rstrip("?"), positionals[i])
        elif name.endswith("?"):
            setattr(args, name.rstrip("?"), None)
        else:
            raise UsageError(f"{prog}missing the {name.upper()} argument")
    return command, args


def _usage(command: str) -> str:
    """The help text for `isola-oci --help` or `isola-oci COMMAND --help`."""

    def options(opts: tuple[Opt, ...]) -> list[str]:
        lines = []
        for opt in opts:
            spelling = ", ".join(opt.names) + ("" if opt.kind == "flag" else f" {opt.dest.upper()}")
            extra = f" (one of {', '.join(opt.choices)})" if opt.choices else ""
            default = f" (default {opt.default})" if opt.default not in (None, False, "") else ""
            lines.append(f"  {spelling:<28} {opt.help}{extra}{default}".rstrip())
        return lines

    if command:
        c = COMMANDS[command]
        words = [p.upper().rstrip("?") + ("?" if p.endswith("?") else "") for p in c.positionals]
        tail = f" {c.rest.upper()}..." if c.rest else ""
        return "\n".join(
            [f"usage: isola-oci {c.name} [options] {' '.join(words)}{tail}".rstrip(), c.help, "", *options(c.options)]
        )
    lines = ["usage: isola-oci [global options] COMMAND [options] [ID ...]", "", "commands:"]
    lines += [f"  {c.name:<10} {c.help}" for c in COMMANDS.values()]
    return "\n".join([*lines, "", "global options:", *options(GLOBAL)])


def _report(exc: IsolaError, log: str | None, log_format: str) -> None:
    """One line on stderr, and a record in --log: runc's logrus format, or JSON for containerd and conmon."""
    import time

    line = exc.message if not exc.hint else f"{exc.message} ({exc.hint})"
    sys.stderr.write(f"isola-oci: {line}\n")
    if log:
        import json

        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if log_format == "json":
            record = json.dumps({"level": "error", "msg": line, "time": now})
        else:
            record = f'time="{now}" level=error msg={json.dumps(line)}'
        try:
            with open(log, "a") as f:
                f.write(record + "\n")
        except OSError:
            pass


def _exit(code: int) -> NoReturn:
    """Flush and leave at once, skipping the interpreter's teardown of every module."""
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 - contextlib is not otherwise imported on this path
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    """The console-script entry point."""
    log = None
    log_format = "text"
    debug = bool(os.environ.get("ISOLA_DEBUG"))
    try:
        command, args = parse(sys.argv[1:] if argv is None else argv)
        log, log_format, debug = args.log, args.log_format, debug or args.debug
        if command is None:
            if args.version:
                from isola.container.oci.spec import OCI_VERSION

                sys.stdout.write(f"isola-oci version {VERSION}\nspec: {OCI_VERSION}\n")
            else:
                sys.stdout.write(_usage(args.help) + "\n")
            _exit(0)
        if args.systemd_cgroup:
            raise UnsupportedError(
                "--systemd-cgroup: isola-oci manages cgroups directly (cgroupfs), not through systemd"
            )
        code = command.handler(args)
    except IsolaError as exc:
        _report(exc, log, log_format)
        _exit(exit_code(exc))
    except KeyboardInterrupt:
        _exit(130)
    except Exception as exc:
        if debug:
            raise
        _report(
            IsolaError(f"internal error: {type(exc).__name__}: {exc}", hint="ISOLA_DEBUG=1 shows the traceback"),
            log,
            log_format,
        )
        _exit(70)
    _exit(code)
