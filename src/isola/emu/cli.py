"""`isola-emu`: run a riscv64 Linux program on this host, with qemu-riscv64's command line.

    isola-emu [-L SYSROOT] [-E VAR=VALUE]... [-U VAR]... [-0 ARGV0] [--strace] [--stats] PROGRAM [ARGS...]

The exit status is the guest's. A guest killed by a signal ends the way a shell reports it, 128 + the signal
(with one line saying where, for a fault). A program isola cannot load is one line and 127 (not found) or
126 (not executable). The options are parsed by hand, not by argparse or click: start-up time is part of
what this command is measured on, and argparse alone (with the gettext, locale and shutil it pulls in) costs
several milliseconds of it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, NoReturn

from isola import errors
from isola.emu.memory import DEFAULT_SIZE

USAGE = (
    "usage: isola-emu [-h] [-L SYSROOT] [-E VAR=VALUE] [-U VAR] [-0 ARGV0] [--strace] [--stats] [-R SIZE]\n"
    "                 [--version] PROGRAM [ARGS...]\n"
)
HELP = (
    USAGE
    + """
Run a riscv64 (RV64GC) Linux program, like qemu-riscv64, in pure Python.

options:
  -h, --help            show this help message and exit
  -L SYSROOT            prefix for the ELF interpreter and libraries (default: the riscv64 libc6 of
                        `isola assets`, if fetched)
  -E VAR=VALUE          set a variable in the guest's environment
  -U VAR                remove a variable from the guest's environment
  -0 ARGV0              argv[0] for the program
  --strace              print each system call, like strace
  --stats               print instructions, blocks, translation time, MIPS
  -R SIZE, --memory SIZE
                        guest address space size (default 4G)
  --version             show the version and exit
"""
)
VERSION = "isola-emu (isola) riscv64 user mode\n"
VALUED = ("-L", "-E", "-U", "-0", "-R", "--memory")  # options taking a value


class UsageError(Exception):
    """A command line that cannot be run: printed after the usage, exit status 2 (as argparse does)."""


class Options(NamedTuple):
    program: str
    args: list[str]
    sysroot: str | None = None
    set_env: tuple[str, ...] = ()
    unset_env: tuple[str, ...] = ()
    argv0: str | None = None
    memory: int = DEFAULT_SIZE
    strace: bool = False
    stats: bool = False


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        if text[-1:].upper() in units:
            return int(text[:-1]) * units[text[-1].upper()]
        return int(text)
    except ValueError:
        raise UsageError(f"argument -R/--memory: not a size: {text!r} (e.g. 512M, 4G)") from None


def parse(argv: list[str]) -> Options:
    """qemu-user's shape: options first, then PROGRAM; everything after PROGRAM belongs to the guest. A value
    follows its option as the next word, or attached (`-L/sysroot`, `--memory=4G`)."""
    values: dict[str, str | None] = {"-L": None, "-0": None}
    set_env: list[str] = []
    unset_env: list[str] = []
    memory, flags = DEFAULT_SIZE, {"--strace": False, "--stats": False}
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        word = argv[i]
        i += 1
        if word == "--":
            break
        if word in ("-h", "--help", "--version"):
            sys.stdout.write(VERSION if word == "--version" else HELP)
            sys.exit(0)
        if word in flags:
            flags[word] = True
            continue
        name, sep, value = word.partition("=") if word.startswith("--") else (word[:2], "", word[2:])
        if name not in VALUED:
            raise UsageError(f"unrecognized option: {word}")
        if not sep and not value:
            if i == len(argv):
                raise UsageError(f"option {name} expects a value")
            value, i = argv[i], i + 1
        if name == "-E":
            set_env.append(value)
        elif name == "-U":
            unset_env.append(value)
        elif name in ("-R", "--memory"):
            memory = _size(value)
        else:
            values[name] = value
    if i == len(argv):
        raise UsageError("the following arguments are required: PROGRAM")
    return Options(argv[i], argv[i + 1 :], values["-L"], tuple(set_env), tuple(unset_env), values["-0"], memory,
                   flags["--strace"], flags["--stats"])  # fmt: skip


def default_sysroot(program: str) -> Path | None:
    """The riscv64 libc6 of `isola assets`, for a dynamically linked program; none for a static one (reading
    the asset manifest costs start-up time a static program need not pay)."""
    from isola.linux import elf

    try:
        with open(program, "rb") as f:
            head = f.read(65536)
        if elf.parse(head, machine=elf.EM_RISCV).interp is None:
            return None
    except (OSError, errors.FormatError):
        return None  # the loader will report it properly
    from isola import paths
    from isola.assets import manifest

    try:
        return manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "riscv64", "sysroot")
    except errors.NotFoundError:
        return None


def guest_environment(set_env: Sequence[str], unset_env: Sequence[str]) -> list[str]:
    env = dict(os.environ)
    for item in set_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise errors.UsageError(f"-E expects VAR=VALUE, not {item!r}")
        env[name] = value
    for name in unset_env:
        env.pop(name, None)
    return [f"{k}={v}" for k, v in env.items()]


def main(argv: list[str] | None = None) -> None:
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as err:
        sys.stderr.write(f"{USAGE}isola-emu: error: {err}\n")
        sys.exit(2)
    top = os.getpid()
    from isola.emu.program import Program, print_stats
    from isola.linux.kernel import GuestKilled
    from isola.linux.signals import end_by_signal

    try:
        envp = guest_environment(args.set_env, args.unset_env)
        sysroot = Path(args.sysroot) if args.sysroot else default_sysroot(args.program)
        guest_argv = [args.argv0 or args.program, *args.args]
        program = Program(
            args.program,
            guest_argv,
            envp,
            sysroot=sysroot,
            strace=sys.stderr if args.strace else None,
            memory_size=args.memory,
        )
    except errors.IsolaError as err:
        sys.stderr.write(f"isola-emu: {args.program}: {err.message}\n")
        sys.exit(127 if isinstance(err, errors.NotFoundError) else 126)

    try:
        status, stats = program.run_timed()
    except GuestKilled as killed:
        end_by_signal(killed, "isola-emu", top=os.getpid() == top)
    if args.stats and os.getpid() == top:
        print_stats(stats)
    _exit(status)


def _exit(status: int) -> NoReturn:
    """End the process once the guest has: flush what Python buffered and leave without the interpreter's
    teardown, which would free every translated block and module one object at a time (about 10 ms, a
    sixth of a warm static program's whole run). Nothing else is pending by then: the guest wrote through
    host file descriptors and the code cache was saved when the run ended."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe has nothing left to lose
            stream.flush()
    os._exit(status)
