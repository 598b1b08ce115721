"""A process VM run as a child of this process: what it runs (`ProcessConfig`) and the running child
(`ProcessChild`), with its stdio either this process's or a console's.

The child is the launcher itself, `isola-vmm run --process` (`python -m isola.vmm.launch run --process ...`),
started with posix_spawn. So the confinement (chroot, a PID namespace, no capabilities) stays in the one place
that does it, and the callers — the REST API server and the engine's monitor, both multi-threaded — never fork
themselves. The launcher runs in a process group of its own: a terminal's Ctrl-C reaches the caller, not the
guest, and a launcher that is killed before it could kill its VM leaves the VM in that group, where `wait()`
finds and kills it.

With an `output` sink the child's stdout and stderr are one pipe (their order kept, as on a terminal) whose
bytes go to the sink, and `feed()` writes to its stdin; the stdin pipe is non-blocking, so a guest that does not
read its input loses what exceeds the pipe's 64 KiB instead of stalling the console that feeds it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isola.errors import EngineError, InvalidSpecError, UsageError
from isola.host import procfs
from isola.vmm.process.layout import Layout

DEFAULT_MEMORY_MIB = 1024
DEFAULT_MAX_PROCESSES = 256
OUTPUT_DRAIN_SECONDS = 5.0
"""How long the output of a VM that ended may take to arrive (guest processes still holding the pipe)."""

FIELDS_OF_THE_API = {
    "program": "process.program",
    "args": "process.args",
    "env": "process.env",
    "root": "process.root",
    "memory_mib": "process.mem_size_mib",
    "max_processes": "process.max_processes",
}
"""How a validation error names each field; the engine passes its spec's names instead."""


@dataclass(frozen=True)
class ProcessConfig:
    """One program to run in a process VM: `isola-vmm run --process [--root ROOT] ... -- PROGRAM ARGS`."""

    program: str
    """A path inside `root`; without a root, a host file the launcher copies alone into a fresh directory."""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    root: str | None = None
    memory_mib: int = DEFAULT_MEMORY_MIB
    max_processes: int = DEFAULT_MAX_PROCESSES

    def validate(self, names: Mapping[str, str] = FIELDS_OF_THE_API) -> None:
        """InvalidSpecError naming the field (in the caller's words, `names`) that the launcher would refuse."""
        if not self.program or "\0" in self.program:
            raise InvalidSpecError("must be a non-empty path", field=names["program"])
        if any("\0" in arg for arg in self.args):
            raise InvalidSpecError("must not contain NUL bytes", field=names["args"])
        for key, value in self.env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise InvalidSpecError(f"{key!r}: a variable needs a name without '=' or NUL", field=names["env"])
        if self.root is None:
            if not Path(self.program).is_file():
                raise InvalidSpecError(f"{self.program}: no such file on the host", field=names["program"])
        else:
            if not Path(self.root).is_dir():
                raise InvalidSpecError(f"{self.root}: not a directory", field=names["root"])
            if not os.path.lexists(Path(self.root, self.program.lstrip("/"))):
                raise InvalidSpecError(f"{self.program}: no such file in {self.root}", field=names["program"])
        try:
            Layout(ram=self.memory_mib << 20)
        except UsageError as err:
            raise InvalidSpecError(err.message, field=names["memory_mib"]) from None
        if self.max_processes < 1:
            raise InvalidSpecError("must be at least 1", field=names["max_processes"])

    def launcher_argv(self) -> list[str]:
        argv = [sys.executable, "-m", "isola.vmm.launch", "run", "--process"]
        if self.root is not None:
            argv += ["--root", self.root]
        argv += ["--memory", str(self.memory_mib), "--max-processes", str(self.max_processes)]
        for key, value in self.env.items():
            argv += ["-e", f"{key}={value}"]
        return [*argv, "--", self.program, *self.args]

    def to_json(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "args": list(self.args),
            "env": dict(self.env),
            "root": self.root,
            "memory_mib": self.memory_mib,
            "max_processes": self.max_processes,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ProcessConfig:
        return cls(
            doc["program"],
            tuple(doc["args"]),
            dict(doc["env"]),
            doc["root"],
            doc["memory_mib"],
            doc["max_processes"],
        )


@dataclass(frozen=True)
class Ended:
    """How a process VM ended."""

    exit_code: int
    """The program's status; 128 + N when signal N ended it (or ended the launcher)."""
    detail: str
    cpu_ns: int
    """CPU time of the launcher, the VM and every guest process it reaped."""


Sink = Callable[[bytes], object]


class ProcessChild:
    """The launcher running one `ProcessConfig`, as this process's child."""

    def __init__(
        self,
        argv: list[str],
        *,
        output: Sink | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        """Start `argv` (a launcher command line). `stop_signal` is what `stop()` sends the launcher: SIGTERM
        makes `isola-vmm run --process` kill its whole VM; a kernel-mode isola-vmm stops its VM on SIGINT."""
        self.argv = argv
        self.stop_signal = stop_signal
        self.started = time.monotonic()
        self._input: int | None = None
        self._input_lock = threading.Lock()
        self._pump: threading.Thread | None = None
        self._vm: procfs.Identity | None = None
        actions: list[tuple[int, int, int]] = []
        child_fds: list[int] = []
        if output is not None:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(in_w, False)
            actions = [(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, out_w, 2)]
            child_fds = [in_r, out_w]
        try:
            self.pid = _spawn(argv, actions)
        except OSError as exc:
            if output is not None:
                os.close(in_w)
                os.close(out_r)
            raise EngineError(f"cannot start {' '.join(argv[:4])}: {exc.strerror}") from None
        finally:
            for fd in child_fds:
                os.close(fd)
        identity = procfs.identity(self.pid)
        assert identity is not None  # unreaped until wait(), so /proc knows it
        self.identity = identity
        if output is not None:
            self._input = in_w
            self._pump = threading.Thread(target=_pump, args=(out_r, output), name="vm output", daemon=True)
            self._pump.start()

    # -- while it runs ----------------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Input for the program's stdin; dropped when the pipe is full or the program has ended."""
        with self._input_lock:
            if self._input is None:
                return
            with contextlib.suppress(OSError):  # full (EAGAIN), or nobody reads any more (EPIPE)
                os.write(self._input, data)

    def wait_started(self, timeout: float = 10.0) -> procfs.Identity | None:
        """Wait until the launcher has forked the VM (its only child) and return the VM's identity; None when
        the launcher ended (or did not fork) first."""
        deadline = time.monotonic() + timeout
        while self._vm is None and time.monotonic() < deadline:
            found = procfs.children(self.pid)
            if found:
                self._vm = procfs.identity(found[0])
                break
            if self.ended():
                break
            time.sleep(0.005)
        return self._vm

    def ended(self) -> bool:
        """Whether the launcher has ended (it stays unreaped, its pid and group id reserved, until `wait()`)."""
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return info is not None

    def stop(self) -> None:
        """Ask the launcher to end the VM."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, self.stop_signal)

    def kill(self) -> None:
        """SIGKILL to the launcher's process group and to the VM (the end of its PID namespace)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # the launcher is unreaped until wait(): the group id is ours
        if self._vm is not None and procfs.exists(self._vm):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._vm.pid, signal.SIGKILL)

    # -- its end ---------------------------------------------------------------------------------------------

    def wait(self) -> Ended:
        """Wait for the launcher to end, make sure its VM ended with it, and say how."""
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        if info is not None and info.si_code != os.CLD_EXITED:
            self.kill()  # killed before it could kill its VM
        _, status, usage = os.wait4(self.pid, 0)
        if self._pump is not None:
            self._pump.join(OUTPUT_DRAIN_SECONDS)
        with self._input_lock:
            if self._input is not None:
                os.close(self._input)
                self._input = None
        cpu_ns = round((usage.ru_utime + usage.ru_stime) * 1e9)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return Ended(128 + sig, f"isola-vmm was killed by {signal_name(sig)}", cpu_ns)
        code = os.waitstatus_to_exitcode(status)
        if 128 < code <= 128 + signal.SIGRTMAX:
            return Ended(code, f"the program was ended by {signal_name(code - 128)} (status {code})", cpu_ns)
        return Ended(code, f"the program exited with status {code}", cpu_ns)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _spawn(argv: list[str], actions: list[tuple[int, int, int]]) -> int:
    """Start `argv` in a process group of its own, with the signal dispositions of a fresh process: what a Python
    parent ignores (SIGPIPE) or handles must not reach the launcher as ignored (subprocess does the same)."""
    return os.posix_spawn(
        argv[0],
        argv,
        dict(os.environ),
        file_actions=actions,
        setpgroup=0,
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
    )


def _pump(fd: int, sink: Sink) -> None:
    """The child's output to `sink` until every writer has closed the pipe."""
    try:
        while data := os.read(fd, 65536):
            sink(data)
    finally:
        os.close(fd)
