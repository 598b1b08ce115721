"""`isola-emu`: run a riscv64 Linux program on this host, with qemu-riscv64's command line.

    isola-emu [-L SYSROOT] [-E VAR=VALUE]... [-U VAR]... [-0 ARGV0] [--strace] [--stats] PROGRAM [ARGS...]

The exit status is the guest's. A guest killed by a signal ends the way a shell reports it, 128 + the signal
(with one line saying where, for a fault). A program isola cannot load is one line and 127 (not found) or
126 (not executable). argparse rather than click: start-up time is part of what this command is measured on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from isola import errors
from isola.emu.memory import DEFAULT_SIZE


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        if text[-1:].upper() in units:
            return int(text[:-1]) * units[text[-1].upper()]
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512M, 4G)") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="isola-emu",
        description="Run a riscv64 (RV64GC) Linux program, like qemu-riscv64, in pure Python.",
    )
    p.add_argument("-L", dest="sysroot", metavar="SYSROOT", help="prefix for the ELF interpreter and libraries "
                   "(default: the riscv64 libc6 of `isola assets`, if fetched)")  # fmt: skip
    p.add_argument("-E", dest="set_env", action="append", default=[], metavar="VAR=VALUE",
                   help="set a variable in the guest's environment")  # fmt: skip
    p.add_argument("-U", dest="unset_env", action="append", default=[], metavar="VAR",
                   help="remove a variable from the guest's environment")  # fmt: skip
    p.add_argument("-0", dest="argv0", metavar="ARGV0", help="argv[0] for the program")
    p.add_argument("--strace", action="store_true", help="print each system call, like strace")
    p.add_argument("--stats", action="store_true", help="print instructions, blocks, translation time, MIPS")
    p.add_argument("-R", "--memory", type=_size, default=DEFAULT_SIZE, metavar="SIZE",
                   help="guest address space size (default 4G)")  # fmt: skip
    p.add_argument("--version", action="version", version="isola-emu (isola) riscv64 user mode")
    p.add_argument("program")
    p.add_argument("args", nargs=argparse.REMAINDER)
    return p


def default_sysroot(program: str) -> Path | None:
    """The riscv64 libc6 of `isola assets`, for a dynamically linked program; none for a static one (reading
    the asset manifest costs start-up time a static program need not pay)."""
    from isola import paths
    from isola.assets import manifest
    from isola.linux import elf

    try:
        with open(program, "rb") as f:
            head = f.read(65536)
        if elf.parse(head, machine=elf.EM_RISCV).interp is None:
            return None
    except (OSError, errors.FormatError):
        return None  # the loader will report it properly
    try:
        return manifest.load(paths.assets_dir()).artifact(paths.assets_dir(), "riscv64", "sysroot")
    except errors.NotFoundError:
        return None


def guest_environment(set_env: list[str], unset_env: list[str]) -> list[str]:
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
    args = parser().parse_args(argv)
    top = os.getpid()
    from isola.emu.program import Program, print_stats
    from isola.linux.kernel import GuestKilled
    from isola.linux.signals import die_by_signal

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
        sys.stdout.flush()
        if killed.addr is not None:
            sys.stderr.write(f"isola-emu: {killed}\n")
        if os.getpid() != top:
            die_by_signal(killed.sig)  # a forked guest child: its guest parent must see a death by signal
        sys.exit(128 + killed.sig)
    if args.stats and os.getpid() == top:
        print_stats(stats)
    sys.exit(status)
