"""`isola-vmm run --process`: run one static x86-64 Linux program in a process VM.

    isola-vmm run --process [--root DIR] [--memory MIB] [-e VAR=VAL]... [--strace] [--stats] [--no-fastpath]
                  [--max-processes N] -- PROGRAM [ARGS...]

The program's memory is the VM's; what it can reach besides is what the personality serves, confined thus:

- **File system**: `--root DIR` is its `/` (the VM's monitor process `chroot`s there, so `..` and symlinks
  resolve inside, by the host kernel's rules). Without `--root`, PROGRAM (a host path) is copied into a fresh
  directory that holds nothing else, removed afterwards.
- **Processes**: a new PID namespace. The program is its PID 1 and every process it forks is inside, so a
  `kill` (isola serves it with the host's kill) can reach nothing else; the namespace ends with PID 1.
- **Privileges**: all capabilities are dropped before the program's first instruction: uid 0 inside, but no
  device nodes, no clock, no mounts.
- **Environment**: exactly the `-e` values, like `env -i`.

The exit status is the program's, or 128 + N when signal N ended it (one `isola-vmm:` line says where a fault
happened). Interrupting isola-vmm (SIGINT, SIGTERM, SIGHUP) kills the whole VM.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from isola.errors import IsolaError, NotFoundError, UsageError, exit_code
from isola.host import confine, libc

CLONE_NEWPID = 0x2000_0000
_IMPORTED_BEFORE_CHROOT = (
    "isola.vmm.process.vm",
    "isola.linux.files",
    "isola.linux.process",
    "isola.linux.signals",
    "isola.linux.timeident",
    "encodings.idna",
)


USAGE = (
    "usage: isola-vmm run --process [--root DIR] [--memory MIB] [-e VAR=VAL]... [--strace] [--stats]\n"
    "                     [--no-fastpath] [--max-processes N] [--] PROGRAM [ARGS...]"
)
OPTIONS = """
  --process            a process VM (the only kind `run` starts)
  --root DIR           the program's / (default: a fresh directory with the program)
  --memory MIB         guest memory in MiB (1024)
  -e, --env VAR=VAL    set a variable (the environment is exactly these)
  --strace             print each system call, like strace (no fast paths)
  --stats              print exit counts and the syscall entry when the program ends
  --no-fastpath        every system call exits (no in-guest reads, no batched writes)
  --max-processes N    processes alive at once (256)
  PROGRAM [ARGS...]    a path inside --root, else a host path; everything after it is the program's
"""
_FLAGS = {"--process": "process", "--strace": "strace", "--stats": "stats", "--no-fastpath": "no_fastpath"}
_VALUED = {"--root": "root", "--memory": "memory", "-e": "env", "--env": "env", "--max-processes": "max_processes"}
_INTEGERS = ("memory", "max_processes")


class Arguments(NamedTuple):
    root: str | None
    memory: int
    env: list[str]
    strace: bool
    stats: bool
    no_fastpath: bool
    max_processes: int
    program: str
    args: list[str]


def parse(argv: Sequence[str]) -> Arguments:
    """Options as argparse would take them (a value as the next word or after `=`), then PROGRAM, after which
    every word is the program's. Hand-written because argparse and the `re` it needs are ~6 ms of a ~50 ms
    launch; UsageError names what is wrong."""
    values: dict[str, Any] = {"root": None, "memory": 1024, "env": [], "max_processes": 256}
    values.update(dict.fromkeys(_FLAGS.values(), False))
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        word = argv[i]
        i += 1
        if word == "--":
            break
        if word in ("-h", "--help"):
            sys.stdout.write(f"{USAGE}\n\n{__doc__.splitlines()[0]}\n{OPTIONS}")
            sys.exit(0)
        name, eq, value = word.partition("=") if word.startswith("--") else (word[:2], word[2:] and "=", word[2:])
        if name in _FLAGS and not eq:
            values[_FLAGS[name]] = True
            continue
        if name not in _VALUED:
            raise UsageError(f"unrecognized option {word}")
        if not eq:
            if i == len(argv):
                raise UsageError(f"{name} expects a value")
            value, i = argv[i], i + 1
        key = _VALUED[name]
        if key in _INTEGERS:
            try:
                values[key] = int(value)
            except ValueError:
                raise UsageError(f"{name}: {value!r} is not a whole number") from None
        elif key == "env":
            values["env"].append(value)
        else:
            values[key] = value
    if not values.pop("process"):
        raise UsageError("--process is required: a process VM is the only kind `run` starts")
    if i == len(argv):
        raise UsageError("PROGRAM is required")
    return Arguments(program=argv[i], args=list(argv[i + 1 :]), **values)


def main(argv: Sequence[str]) -> int:
    try:
        args = parse(argv)
    except UsageError as exc:
        print(f"{USAGE}\nisola-vmm run: error: {exc.message}", file=sys.stderr)
        return 2
    try:
        for item in args.env:
            if "=" not in item:
                raise UsageError(f"-e {item}: expected VAR=VAL")
        if args.max_processes < 1:
            raise UsageError("--max-processes must be at least 1")
        root, program, temporary = _root_and_program(args.root, args.program)
    except IsolaError as exc:
        return _report(exc)
    try:
        return _monitor(args, root, program)
    finally:
        if temporary:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


def _root_and_program(root_arg: str | None, program: str) -> tuple[Path, str, bool]:
    if root_arg is not None:
        root = Path(root_arg).resolve()
        if not root.is_dir():
            raise NotFoundError(f"--root {root_arg}: not a directory")
        return root, program if program.startswith("/") else "/" + program, False
    source = Path(program)
    if not source.is_file():
        raise NotFoundError(f"{program}: no such file")
    import shutil  # here, not at the top: a run with --root (the usual case) needs neither
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="isola-process-"))
    shutil.copy2(source, root / source.name)
    return root, "/" + source.name, True


def _monitor(args: Arguments, root: Path, program: str) -> int:
    """Fork the VM into a new PID namespace and wait for it, relaying an interruption as SIGKILL: the
    program is its namespace's init, which the kernel shields from signals it has no handler for."""
    from isola.vmm.kvm.vm import Kvm

    for module in _IMPORTED_BEFORE_CHROOT:  # after chroot the host's files, Python's own included, are gone
        importlib.import_module(module)
    if args.strace:
        importlib.import_module("isola.linux.strace")

    try:
        kvm = Kvm()
        libc.unshare(CLONE_NEWPID)
    except (IsolaError, OSError) as exc:
        return _report(exc if isinstance(exc, IsolaError) else UsageError(f"cannot make a PID namespace: {exc}"))
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _run_vm(args, kvm, root, program)
    kvm.close()

    def relay(signum: int, frame: object) -> None:
        os.kill(pid, signal.SIGKILL)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, relay)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def _run_vm(args: Arguments, kvm: object, root: Path, program: str) -> NoReturn:
    """PID 1 of the new namespace: confine, load, run, and end with the program's status."""
    from isola.linux.kernel import GuestKilled
    from isola.linux.signals import end_by_signal
    from isola.vmm.kvm.vm import Kvm
    from isola.vmm.process.vm import Options, ProcessVm

    assert isinstance(kvm, Kvm)
    top = os.getpid()
    try:
        proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        os.chroot(root)
        os.chdir("/")
        confine.drop_capabilities()
        fastpath = not (args.no_fastpath or args.strace)  # strace shows every call: none may stay in the guest
        options = Options(memory_mib=args.memory, fastpath=fastpath, max_processes=args.max_processes)
        strace = sys.stderr if args.strace else None
        vm = ProcessVm(kvm, program, [args.program, *args.args], args.env, options, strace, proc_fd)
    except (IsolaError, OSError) as exc:
        _exit(_report(exc if isinstance(exc, IsolaError) else UsageError(f"cannot confine the program: {exc}")))
    try:
        status = vm.run()
    except GuestKilled as killed:
        end_by_signal(killed, "isola-vmm", top=os.getpid() == top)
    except IsolaError as exc:
        _exit(_report(exc))
    if args.stats and os.getpid() == top:
        exits = ", ".join(f"{name} {count}" for name, count in sorted(vm.exits.items()))
        sys.stderr.write(f"isola-vmm: exits: {exits or 'none'}\n")
        entry = {True: "CPL 3 (kvm_pvm: the VMM sets RIP)", False: "CPL 0 (VMX/SVM: sysretq)", None: "no call"}
        sys.stderr.write(f"isola-vmm: syscall entry: {entry[vm.syscall_at_cpl3]}\n")
    _exit(status)


def _report(exc: IsolaError) -> int:
    print(f"isola-vmm: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"  hint: {exc.hint}", file=sys.stderr)
    return exit_code(exc)


def _exit(status: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
