"""podman, from Debian, driving isola-oci as its OCI runtime (`podman --runtime $(command -v isola-oci)`): the
issue's definition of "a drop-in replacement for runc". conmon sits between podman and the runtime and calls
`create --bundle --pid-file [--console-socket]`, `start`, `state`, `kill`, `delete --force`, `exec`.

podman runs with a private --root/--runroot/--tmpdir under tmp_path and its own containers.conf, so the host's
podman state is never touched: cgroupfs (no systemd here), the file events logger (no journald), the vfs storage
driver, and the nofile/nproc limits pinned (podman asks for more than this host's root may set; see
measurements.md section 3). Every container is removed afterwards, even when a test fails.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from isola.cgroups import hierarchies
from tests.conftest import amd64_asset, require_root
from tests.container.conftest import ISOLA_OCI

IMAGE = "localhost/isola-busybox:latest"
CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
APPLETS = ("sh", "echo", "cat", "sleep", "tty", "ls", "true")


class Podman:
    """`podman --runtime isola-oci` with private state. Output goes through files: a detached container's
    conmon keeps the descriptors it inherited, so a pipe would only close when the container ends."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.env = {**os.environ, "CONTAINERS_CONF": str(base / "containers.conf")}
        self.argv = [
            "podman",
            "--root",
            str(base / "root"),
            "--runroot",
            str(base / "runroot"),
            "--tmpdir",
            str(base / "tmp"),
            "--storage-driver",
            "vfs",
            "--runtime",
            ISOLA_OCI,
        ]

    def __call__(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            argv = [*self.argv, *args]
            done = subprocess.run(argv, stdout=out, stderr=err, env=self.env, timeout=timeout, check=False)
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(argv, done.returncode, out.read(), err.read())
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """A private podman with the busybox image imported from a rootfs tarball (`podman import`)."""
    require_root()
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (the Makefile's APT_PACKAGES lists it: make setup)")
    busybox = amd64_asset("busybox")
    base = tmp_path_factory.mktemp("podman")
    (base / "containers.conf").write_text(CONF)
    rootfs = base / "rootfs"
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        (rootfs / d).mkdir(parents=True)
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    (rootfs / "bin" / "busybox").chmod(0o755)
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(base / "rootfs.tar"), "."], check=True)
    runner = Podman(base)
    try:
        runner("import", str(base / "rootfs.tar"), IMAGE)
        yield runner
    finally:
        runner("rm", "--all", "--force", "--time", "0", check=False)
        runner("rmi", "--all", "--force", check=False)
        with open("/proc/self/mountinfo") as f:  # podman's shm mounts must be gone with its containers
            left = [line.split()[4] for line in f if line.split()[4].startswith(str(base))]
        for mountpoint in reversed(left):
            subprocess.run(["umount", "-l", mountpoint], check=False)
        assert not left, f"podman left mounts behind: {left}"


def _container_ids(podman: Podman) -> list[str]:
    return podman("ps", "--all", "--quiet", "--no-trunc").stdout.split()


def _runtime_ids() -> list[str]:
    """The containers isola-oci knows under its default --root (where podman's calls land)."""
    out = subprocess.run([ISOLA_OCI, "list", "-q"], capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.split()


def test_run_rm_echo(podman: Podman) -> None:
    result = podman("run", "--rm", "--pull", "never", "--network", "none", IMAGE, "echo", "hi")
    assert result.stdout == "hi\n"
    assert _container_ids(podman) == []


def test_run_exit_status_and_no_leftovers(podman: Podman) -> None:
    result = podman(
        "run", "--name", "status", "--pull", "never", "--network", "none", IMAGE, "sh", "-c", "exit 7", check=False
    )
    assert result.returncode == 7, result.stderr
    (full_id,) = _container_ids(podman)
    podman("rm", "status")
    assert full_id not in _runtime_ids()  # podman's delete reached isola-oci: no state, so no cgroup either


def test_run_interactive_terminal(podman: Podman) -> None:
    """`podman run -it`: the terminal comes from isola-oci's init through conmon's console socket."""
    argv = [*podman.argv, "run", "--rm", "-it", "--pull", "never", "--network", "none", IMAGE, "sh"]
    pid, fd = os.forkpty()
    if pid == 0:  # pragma: no cover - the child execs at once
        try:
            os.environ.update(podman.env)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    output = b""

    def read_until(token: bytes, timeout: float = 20) -> bool:
        nonlocal output
        deadline = time.monotonic() + timeout
        while token not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    output += os.read(fd, 4096)
                except OSError:  # EIO: podman closed the terminal
                    break
        return token in output

    try:
        assert read_until(b"# "), output
        os.write(fd, b"tty; echo answer=$((6*7)); exit 3\r")
        assert read_until(b"answer=42"), output
        assert b"/dev/pts/0" in output or b"/dev/console" in output, output
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done or time.monotonic() > deadline:
                break
            read_until(b"\0", 0.2)  # keep draining the terminal so podman never blocks on it
        assert done == pid, "podman run -it did not end after exit"
        assert os.waitstatus_to_exitcode(status) == 3
    finally:
        os.close(fd)
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_detach_exec_then_stop(podman: Podman) -> None:
    script = 'trap "exit 0" TERM; while :; do sleep 0.1; done'
    podman("run", "-d", "--name", "stopme", "--pull", "never", "--network", "none", IMAGE, "sh", "-c", script)
    assert podman("inspect", "--format", "{{.State.Status}}", "stopme").stdout.strip() == "running"
    assert podman("exec", "stopme", "echo", "from-exec").stdout == "from-exec\n"
    started = time.monotonic()
    podman("stop", "--time", "10", "stopme")
    assert time.monotonic() - started < 8, "SIGTERM did not reach the container's init"
    state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "stopme").stdout.split()
    assert state == ["exited", "0"]
    podman("rm", "stopme")


def test_resource_flags(podman: Podman) -> None:
    """--memory, --pids-limit and --cpus arrive in config.json's linux.resources and in the cgroup files the
    container sees (the v1 names on v1 and hybrid hosts, the v2 ones on a pure v2 host)."""
    if hierarchies.probe().mode == "v2":
        files = "/sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max"
    else:
        files = (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max "
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us"
        )
    result = podman(
        "run", "--rm", "--pull", "never", "--network", "none",
        "--memory", "64m", "--pids-limit", "50", "--cpus", "0.5",
        IMAGE, "sh", "-c", f"cat {files}",
    )  # fmt: skip
    assert result.stdout.split() == ["67108864", "50", "50000", "100000"]  # 64 MiB, 50, half of each period
