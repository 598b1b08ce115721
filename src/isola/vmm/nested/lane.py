"""Run a command in L1: a TCG virtual machine whose emulated AMD CPU has SVM, so L1 has a real KVM (kvm_amd).

Why this exists: the /dev/kvm of the machines isola is developed on is `kvm_pvm`, which cannot boot a stock
kernel, so the VMM's real tests need a hardware-style KVM from somewhere. QEMU's TCG emulates SVM with nested
paging, and Debian's own `kvm_amd` runs on it (measurements §6). The lane boots Debian's kernel in QEMU
(`-M microvm -accel tcg -cpu max`), shares the host's ``/`` read-only over virtio-9p, and runs a command in
``chroot /host`` with the project's virtualenv, so the tests inside L1 are the host's tests, unchanged.

Inside L1 the host's files are read-only; /tmp, /run and /dev/shm are fresh tmpfs; `writable` directories
(by default the project) are overlays whose writes land in L1's memory and vanish with it. L1 has no NIC.
The command's stdin is /dev/null and its stdout/stderr are L1's serial console, streamed back to the caller.
"""

from __future__ import annotations

import base64
import gzip
import logging
import os
import secrets
import selectors
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import isola
from isola import paths
from isola.errors import EngineError, UnsupportedError, UsageError
from isola.vmm.nested import image

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
_COMMAND_LINE_SIZE = 2048  # x86 COMMAND_LINE_SIZE, NUL included
_MARKER = "ISOLA-L1"
_HIDDEN_BY_TMPFS = (Path("/tmp"), Path("/run"), Path("/proc"), Path("/sys"), Path("/dev"))
# After the deadline QEMU gets this long to die after SIGKILL before the lane gives up waiting.
_REAP_TIMEOUT = 10.0
# QEMU (run inside L1 by a test) prints this and then stays paused forever, so by default the lane stops at the
# first one rather than wait for the deadline (measurements §2d).
STOP_ON = ("KVM internal error. Suberror:",)
_TAIL_LINES = 15
HEARTBEAT = "l1: alive, load"
HEARTBEAT_S = 60
SILENCE_LIMIT_S = 5 * HEARTBEAT_S
"""L1 prints a heartbeat every minute while its command runs; five minutes without a line means L1 itself is
wedged (seen once in CI under TCG), and waiting for the overall deadline would only burn the time."""


class LaneError(EngineError):
    """L1 did not run the command to completion. `console` holds everything L1 printed."""

    def __init__(self, message: str, *, console: str, hint: str | None = None) -> None:
        tail = "\n".join(console.splitlines()[-_TAIL_LINES:])
        super().__init__(message, hint=hint or (f"last console lines:\n{tail}" if tail else None))
        self.console = console


class LaneTimeoutError(LaneError):
    """The lane's deadline passed (or L1 never reached /init); QEMU was killed."""


@dataclass(frozen=True)
class L1Result:
    """The command's exit status and what L1 printed.

    `stages` maps each stage L1's /init reported (``init``, ``modules``, ``mounted``, ``done``) to the host
    seconds since QEMU was launched when its line arrived; `uptimes` holds L1's own clock at the same points.
    """

    status: int
    console: str
    stages: dict[str, float] = field(default_factory=dict)
    uptimes: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    @property
    def output(self) -> str:
        """What the command printed: the console between the ``mounted`` and ``done`` markers."""
        lines = self.console.splitlines()
        start = next((i for i, line in enumerate(lines) if " stage=mounted " in line), len(lines))
        end = next((i for i, line in enumerate(lines) if " stage=done " in line), len(lines))
        return "".join(f"{line}\n" for line in lines[start + 1 : end])

    def summary(self) -> str:
        """One line of where the time went, for logs and test reports."""
        s = self.stages
        parts = []
        if "init" in s:
            parts.append(f"launch→L1 /init {s['init']:.2f}s")
        for name, start, end in (("modules", "init", "modules"), ("mounts", "modules", "mounted")):
            if start in s and end in s:
                parts.append(f"{name} {s[end] - s[start]:.2f}s")
        if "mounted" in s and "done" in s:
            parts.append(f"command {s['done'] - s['mounted']:.2f}s")
        parts.append(f"total {self.wall:.2f}s")
        return ", ".join(parts)


def project_dir() -> Path | None:
    """The source checkout isola runs from (where pyproject.toml is), or None for an installed package."""
    root = Path(isola.__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def find_qemu() -> Path:
    """The QEMU binary the lane launches; UnsupportedError, naming the package, when it is missing."""
    found = shutil.which(QEMU)
    if found is None:
        raise UnsupportedError(
            f"{QEMU} is not installed; the nested KVM lane needs it", hint="apt-get install qemu-system-x86"
        )
    return Path(found)


def host_tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int | None:
    """The host TSC rate in kHz, from the first ``cpu MHz`` line (TCG's rdtsc returns the host TSC).

    L1 is told this with ``tsc_early_khz=``: without it about 1 boot in 20 hung when the kernel's quick PIT
    calibration failed, since microvm has no HPET or PM timer to fall back on (measurements §6a).
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            try:
                return round(float(value) * 1000)
            except ValueError:
                return None
    return None


def _check_host_dir(path: Path, what: str, overlaid: Sequence[Path] = ()) -> str:
    """`path` as L1 will see it under /host: an existing absolute directory that L1 does not cover (a
    directory under /tmp or /run is visible only inside one of the `overlaid` ones)."""
    if not path.is_absolute():
        raise UsageError(f"{what} {path} must be an absolute path")
    hidden = next((h for h in _HIDDEN_BY_TMPFS if path == h or h in path.parents), None)
    if hidden is not None and not any(path == o or o in path.parents for o in overlaid):
        raise UsageError(f"{what} {path} is under {hidden}, which L1 replaces with its own file system")
    if not path.is_dir():
        raise UsageError(f"{what} {path} is not an existing directory")
    return str(path)


def l1_script(
    argv: Sequence[str],
    *,
    nonce: str,
    cwd: Path,
    env: Mapping[str, str],
    writable: Sequence[Path] = (),
) -> str:
    """The shell script L1's /init runs: overlays for `writable`, then `argv` in ``chroot /host`` in `cwd`.

    The command starts from an empty environment plus `env`, so nothing of the L1 init's environment leaks in.
    A failed overlay is reported with the run's `nonce` as a set-up error, not as the command's status.
    """
    if not argv:
        raise UsageError("the command to run in L1 is empty")
    cwd_text = _check_host_dir(cwd, "working directory", writable)
    lines = []
    for i, directory in enumerate(writable):
        host = _check_host_dir(directory, "writable directory", [directory])
        if any(c in host for c in ",:\\\n"):
            raise UsageError(f"writable directory {host}: overlayfs options cannot name a path with , : \\ or newline")
        upper, work = f"/scratch/{i}/upper", f"/scratch/{i}/work"
        options = f"lowerdir=/hostview{host},upperdir={upper},workdir={work}"
        report = shlex.quote(f"{_MARKER} {nonce} error=overlay on {host}")
        lines.append(f"mkdir -p {upper} {work} {shlex.quote('/host' + host)} 2>/dev/null")
        lines.append(
            f"mount -t overlay overlay -o {shlex.quote(options)} {shlex.quote('/host' + host)}"
            f" || {{ echo {report}; exit 125; }}"
        )
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    inner = f"export {exports}; cd {shlex.quote(cwd_text)} || exit 126; exec {shlex.join(argv)}"
    lines.append(f"(while sleep {HEARTBEAT_S}; do echo \"{HEARTBEAT} $(cut -d' ' -f1-3 /proc/loadavg)\"; done) &")
    lines.append(f"exec /bin/env -i /bin/chroot /host /bin/sh -c {shlex.quote(inner)}")
    return "\n".join(lines) + "\n"


def l1_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The command's environment: the venv's bin first on PATH, no bytecode writes, unbuffered Python.

    Bytecode is not written because the host's sources are read-only in L1 (and the project's overlay is
    thrown away). ``ISOLA_NESTED_L1=1`` lets tests know they run inside the lane, and the caller's other
    ``ISOLA_NESTED_*`` variables (``ISOLA_NESTED_SMP=1``) pass through, so a switch given to `make test-nested`
    reaches the tests in L1.
    """
    passed = {k: v for k, v in os.environ.items() if k.startswith("ISOLA_NESTED_")}
    env = {
        **passed,
        "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "ISOLA_NESTED_L1": "1",
        "ISOLA_HOME": str(paths.home()),
    }
    env.update(extra or {})
    return env


def qemu_command(qemu: Path, assets: image.L1Assets, *, append: str, memory_mib: int, cpus: int) -> list[str]:
    """The L0 command line: microvm, TCG with `-cpu max` (AMD, svm + npt), the host's / over 9p, no NIC.

    ``multidevs=remap`` because the host's / spans several file systems, whose inode numbers would otherwise
    collide inside one 9p export.
    """
    return [
        str(qemu),
        "-M", "microvm",
        "-accel", "tcg",
        "-cpu", "max",
        "-m", str(memory_mib),
        "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", str(assets.kernel),
        "-initrd", str(assets.initrd),
        "-append", append,
        "-fsdev", "local,id=hostfs,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-device,fsdev=hostfs,mount_tag=host",
    ]  # fmt: skip


def kernel_command_line(script: str, *, nonce: str, tsc_khz: int | None) -> str:
    """L1's command line, with `script` gzip+base64-encoded in ``l1.cmd=`` (a single word, any bytes)."""
    encoded = base64.b64encode(gzip.compress(script.encode(), mtime=0)).decode()
    words = ["console=ttyS0", "panic=-1", "quiet"]
    if tsc_khz:
        words.append(f"tsc_early_khz={tsc_khz}")
    words += [f"l1.nonce={nonce}", f"l1.cmd={encoded}"]
    line = " ".join(words)
    if len(line) >= _COMMAND_LINE_SIZE:
        raise UsageError(
            f"the command is too long for L1's kernel command line ({len(line)} of {_COMMAND_LINE_SIZE} bytes)",
            hint="put the work in a script under the project and run that",
        )
    return line


def run_in_l1(
    argv: Sequence[str],
    *,
    timeout: float,
    memory_mib: int = 2048,
    cpus: int = 2,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    writable: Sequence[Path] | None = None,
    boot_timeout: float = 60.0,
    boot_retries: int = 1,
    stop_on: Sequence[str] = STOP_ON,
    on_line: Callable[[str], None] | None = None,
) -> L1Result:
    """Boot L1, run `argv` in ``chroot /host`` there, and return its exit status and the console.

    `cwd` defaults to the project checkout (else /), `writable` to that checkout. `timeout` bounds the whole
    run from launch; `boot_timeout` bounds launch → L1 /init, which takes about 2-4 s, so a boot that hangs is
    caught early and L1 is booted again, up to `boot_retries` times (nothing has run yet, so that is safe; one
    boot in about 35 hung here before /init). Either deadline raises `LaneTimeoutError` after killing QEMU. A
    console line containing one of
    `stop_on` also kills QEMU and raises `LaneError`. `on_line` sees every console line as it arrives. Raises
    `LaneError` too if L1 fails to set up or ends without an exit status (a panic, for example).
    """
    project = project_dir()
    cwd = cwd or project or Path("/")
    if writable is None:
        writable = [project] if project is not None else []
    qemu = find_qemu()
    assets = image.prepare()
    nonce = secrets.token_hex(8)
    script = l1_script(argv, nonce=nonce, cwd=cwd, env=l1_environment(env), writable=writable)
    append = kernel_command_line(script, nonce=nonce, tsc_khz=host_tsc_khz())
    command = qemu_command(qemu, assets, append=append, memory_mib=memory_mib, cpus=cpus)
    log.debug("L0: %s", shlex.join(command))
    deadline = time.monotonic() + timeout
    boots = 1
    while True:
        run = _Run(nonce, deadline - time.monotonic(), boot_timeout, tuple(stop_on), on_line)
        try:
            return run.run(command)
        except LaneTimeoutError as exc:
            if "init" in run.stages or boots > boot_retries:
                raise
            log.warning("L1 boot %d hung before /init; booting again. %s", boots, exc.hint)
            boots += 1


class _Run:
    """One QEMU process: its console read line by line, with the deadlines and markers watched."""

    def __init__(
        self,
        nonce: str,
        timeout: float,
        boot_timeout: float,
        stop_on: tuple[str, ...],
        on_line: Callable[[str], None] | None,
    ) -> None:
        self.prefix = f"{_MARKER} {nonce} "
        self.timeout = timeout
        self.boot_timeout = boot_timeout
        self.stop_on = stop_on
        self.on_line = on_line
        self.lines: list[str] = []
        self.stages: dict[str, float] = {}
        self.uptimes: dict[str, float] = {}
        self.status: int | None = None
        self.error: str | None = None
        self.stopped_at: str | None = None
        self.last_line_at = 0.0  # seconds from launch

    def run(self, command: list[str]) -> L1Result:
        start = time.monotonic()
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        try:
            self._pump(proc, start)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(_REAP_TIMEOUT)
            proc.stdout.close()
        wall = time.monotonic() - start
        console = "".join(f"{line}\n" for line in self.lines)
        if self.stopped_at is not None:
            raise LaneError(f"QEMU killed at console line {self.stopped_at!r}", console=console)
        if self.error is not None:
            raise LaneError(f"L1 set-up failed: {self.error}", console=console)
        if self.status is None:
            panic = next((line for line in self.lines if "Kernel panic" in line), None)
            why = f" ({panic.strip()})" if panic else ""
            raise LaneError(
                f"L1 ended without reporting an exit status{why}; QEMU exited {proc.returncode}", console=console
            )
        result = L1Result(self.status, console, self.stages, self.uptimes, wall)
        log.info("nested lane: %s", result.summary())
        return result

    def _pump(self, proc: subprocess.Popen[bytes], start: float) -> None:
        """Read the console until QEMU exits; kill it at a deadline or a KVM internal error."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        pending = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                now = time.monotonic() - start
                deadline = self.timeout if "init" in self.stages else min(self.timeout, self.boot_timeout)
                if "init" in self.stages and now - self.last_line_at >= SILENCE_LIMIT_S:
                    proc.kill()
                    self._flush(pending, start)
                    console = "".join(f"{line}\n" for line in self.lines)
                    raise LaneTimeoutError(
                        f"L1 printed nothing for {SILENCE_LIMIT_S}s (no heartbeat): L1 hung; QEMU killed",
                        console=console,
                    )
                if now >= deadline:
                    proc.kill()
                    self._flush(pending, start)
                    console = "".join(f"{line}\n" for line in self.lines)
                    if "init" not in self.stages:
                        raise LaneTimeoutError(
                            f"L1 did not reach /init within {deadline:g}s; QEMU killed", console=console
                        )
                    raise LaneTimeoutError(
                        f"L1 command still running after {deadline:g}s; QEMU killed", console=console
                    )
                wait = deadline - now
                if "init" in self.stages:
                    wait = min(wait, SILENCE_LIMIT_S - (now - self.last_line_at))
                if not sel.select(max(wait, 0.0)):
                    continue
                chunk = os.read(fd, 65536)  # the pipe is readable, so this does not block
                if not chunk:  # EOF: QEMU exited
                    self._flush(pending, start)
                    return
                *complete, pending = (pending + chunk).split(b"\n")
                for raw in complete:
                    if self._line(raw, start):
                        proc.kill()
                        return

    def _flush(self, pending: bytes, start: float) -> None:
        if pending:
            self._line(pending, start)

    def _line(self, raw: bytes, start: float) -> bool:
        """Record one console line; True when the run must stop now (QEMU is stuck)."""
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self.last_line_at = time.monotonic() - start
        self.lines.append(line)
        if self.on_line is not None:
            self.on_line(line)
        if line.startswith(self.prefix):
            self._marker(line.removeprefix(self.prefix), time.monotonic() - start)
        if any(stop in line for stop in self.stop_on):
            self.stopped_at = line.strip()
            return True
        return False

    def _marker(self, text: str, at: float) -> None:
        key, _, value = text.partition("=")
        if key == "exit" and value.isdigit():
            self.status = int(value)
        elif key == "error":
            self.error = value
        elif key == "stage":
            name, _, uptime = value.partition(" uptime=")
            self.stages[name] = at
            self.uptimes[name] = float(uptime)
