"""`isola container` as a user runs it: the real command line, real overlayfs roots, isola-oci, cgroups and
namespaces, in a private $ISOLA_HOME. Every test's containers are removed afterwards, even when it fails, and the
module checks at the end that no mount, container directory or runtime state was left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from isola import paths
from tests.conftest import amd64_asset, require_root

ISOLA = str(Path(sys.executable).parent / "isola")


class Isola:
    """`isola ...` as a subprocess with its own $ISOLA_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "ISOLA_HOME": str(home)}

    def __call__(self, *args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        done: subprocess.CompletedProcess[str] = subprocess.run(
            [ISOLA, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
        return done

    def ok(self, *args: str, **kwargs: Any) -> str:
        done = self(*args, **kwargs)
        assert done.returncode == 0, f"isola {' '.join(args)} exited {done.returncode}: {done.stderr}"
        return done.stdout

    def container_ids(self) -> list[str]:
        return [d.name for d in (self.home / "containers").glob("*") if d.is_dir()]

    def cleanup(self) -> None:
        for container_id in self.container_ids():
            self("container", "rm", "-f", container_id)


def overlay_mounts(under: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(under))]


@pytest.fixture(scope="module")
def isola_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isola]:
    """A home with the busybox image built from the cached asset; checked clean at the end of the module."""
    require_root()
    busybox = amd64_asset("busybox")
    home = tmp_path_factory.mktemp("home")
    (home / "assets").symlink_to(paths.assets_dir())
    runner = Isola(home)
    runner.ok("image", "build", "--busybox", str(busybox))
    yield runner
    runner.cleanup()
    assert overlay_mounts(home) == []
    assert runner.container_ids() == []
    assert not list((home / "run" / "oci").glob("*/state.json"))


@pytest.fixture
def isola(isola_env: Isola) -> Iterator[Isola]:
    yield isola_env
    isola_env.cleanup()


def test_run_prints_output_and_exits_with_the_containers_status(isola: Isola) -> None:
    done = isola("container", "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert isola.container_ids() == []  # --rm


def test_missing_and_unexecutable_programs_exit_127_and_126(isola: Isola) -> None:
    missing = isola("container", "run", "--rm", "busybox", "no-such-program")
    assert missing.returncode == 127 and "not found" in missing.stderr
    not_exec = isola("container", "run", "--rm", "busybox", "/etc/passwd")
    assert not_exec.returncode == 126, not_exec.stderr
    assert "Traceback" not in missing.stderr + not_exec.stderr
    assert isola.container_ids() == []


def test_isola_errors_exit_125_and_leave_nothing(isola: Isola) -> None:
    for args in (
        ["no-such-image"],
        ["--memory", "lots", "busybox"],
        ["-v", "/no/such/dir:/x", "busybox", "true"],
        ["--cpus", "999", "busybox"],
    ):
        done = isola("container", "run", "--rm", *args)
        assert done.returncode == 125, (args, done.stderr)
        assert done.stderr.startswith("isola: error:") and "Traceback" not in done.stderr
    assert isola.container_ids() == []
    assert overlay_mounts(isola.home) == []


def test_environment_workdir_user_and_volumes(isola: Isola, tmp_path: Path) -> None:
    (tmp_path / "data").write_text("from the host\n")
    tmp_path.chmod(0o755)  # readable by the container's user nobody
    out = isola.ok(
        "container", "run", "--rm", "-e", "GREETING=hi", "-w", "/tmp", "--user", "nobody",
        "-v", f"{tmp_path}:/mnt:ro", "busybox",
        "sh", "-c", 'echo "$GREETING $(pwd) $(id -u):$(id -g)"; cat /mnt/data; touch /mnt/x 2>/dev/null || echo ro',
    )  # fmt: skip
    assert out == "hi /tmp 65534:65534\nfrom the host\nro\n"


def test_detached_ps_logs_exec_stop_and_rm(isola: Isola) -> None:
    cid = isola.ok("container", "run", "-d", "--name", "web", "busybox", "sh", "-c", "echo out; echo err >&2; sleep 60")
    cid = cid.strip()
    assert len(cid) == 64
    ps = json.loads(isola.ok("container", "ps", "--json"))
    assert [(c["name"], c["status"]) for c in ps] == [("web", "running")]
    clash = isola("container", "run", "-d", "--name", "web", "busybox", "true")
    assert clash.returncode == 125 and "already in use" in clash.stderr
    deadline = time.monotonic() + 10
    while "out" not in isola.ok("container", "logs", "web") and time.monotonic() < deadline:
        time.sleep(0.1)
    logs = isola("container", "logs", "web")
    assert (logs.stdout, logs.stderr) == ("out\n", "err\n")
    done = isola("container", "exec", "web", "sh", "-c", "echo $HOSTNAME; exit 4")
    assert (done.returncode, done.stdout.strip()) == (4, cid[:12])
    assert isola("container", "rm", "web").returncode != 0  # running: needs -f
    started = time.monotonic()
    isola.ok("container", "stop", "-t", "1", "web")
    assert time.monotonic() - started < 10
    inspect = json.loads(isola.ok("container", "inspect", "web"))[0]
    assert (inspect["status"], inspect["exit_code"]) == ("exited", 137)  # sh as pid 1 ignores SIGTERM
    assert isola.ok("container", "ps", "-q") == ""
    assert "web" in isola.ok("container", "ps", "-a")
    isola.ok("container", "rm", "web")
    assert isola.container_ids() == []


def test_kill_with_a_signal_and_logs_follow(isola: Isola) -> None:
    isola.ok("container", "run", "-d", "--name", "k", "busybox", "sh", "-c", "echo start; sleep 60")
    follower = subprocess.Popen(
        [ISOLA, "container", "logs", "-f", "k"], env=isola.env, stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(1)
        isola.ok("container", "kill", "-s", "KILL", "k")
        out, _ = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert out == "start\n"
    assert json.loads(isola.ok("container", "inspect", "k"))[0]["exit_code"] == 137


def test_tty_gives_the_container_a_terminal(isola: Isola) -> None:
    master, slave = os.openpty()
    try:
        done = isola("container", "run", "--rm", "-t", "busybox", "sh", "-c", "tty; echo $TERM", stdin=slave)
    finally:
        os.close(master)
        os.close(slave)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.replace("\r", "").split("\n")
    assert lines[0].startswith("/dev/") and lines[1] == "xterm"


def test_cpus_and_memory_reach_the_cgroup(isola: Isola) -> None:
    out = isola.ok(
        "container", "run", "--rm", "--cpus", "0.5", "--memory", "64m", "--pids-limit", "50", "busybox",
        "sh", "-c", "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/memory/memory.limit_in_bytes "
        "/sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/memory.max "
        "/sys/fs/cgroup/pids.max",
    )  # fmt: skip
    assert out.split() in (["50000", str(64 << 20), "50"], ["50000", "100000", str(64 << 20), "50"])
