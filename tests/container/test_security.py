"""The security battery: what a container started by `isola container run` with the default profile can see and
do. Each check is made from inside the container and would fail if the protection were missing; where a flag
turns a protection off (`--network host`, `--security-opt seccomp=unconfined`), the same check is run without it
to show that the probe really can tell."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.test_container_cli import Isola, isola, isola_env  # noqa: F401  (fixtures)

PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

static int report(long r) { printf("%s\n", r < 0 ? strerror(errno) : "allowed"); return 0; }

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "keyctl")) return report(syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3, 0));
    if (!strcmp(what, "add_key")) return report(syscall(SYS_add_key, "user", "isola", "x", 1, -3));
    if (!strcmp(what, "bpf")) return report(syscall(SYS_bpf, 0 /* MAP_CREATE */, NULL, 0));
    if (!strcmp(what, "mount")) return report(mount("none", "/tmp", "tmpfs", 0, NULL));
    if (!strcmp(what, "userns")) return report(unshare(CLONE_NEWUSER));
    if (!strcmp(what, "hog")) {
        for (;;) { char *p = malloc(1 << 20); if (!p) return 3; memset(p, 1, 1 << 20); }
    }
    return 2;
}
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (Makefile APT_PACKAGES)")
    d = tmp_path_factory.mktemp("probe")
    (d / "probe.c").write_text(PROBE_C)
    subprocess.run(["gcc", "-static", "-O1", "-o", str(d / "probe"), str(d / "probe.c")], check=True)
    return d


def sh(isola: Isola, script: str, *flags: str) -> str:  # noqa: F811
    return isola.ok("container", "run", "--rm", *flags, "busybox", "sh", "-c", script)


def test_host_processes_mounts_and_interfaces_are_invisible(isola: Isola) -> None:  # noqa: F811
    out = sh(
        isola, "ls /proc | grep -c '^[0-9]'; cut -d' ' -f5 /proc/self/mountinfo; echo --; tail -n +3 /proc/net/dev"
    )
    count, rest = out.split("\n", 1)
    mounts, interfaces = rest.split("--\n")
    assert int(count) <= 3  # sh, ls, grep: not the host's hundreds
    assert str(isola.home) not in mounts and "/work" not in mounts.split()
    assert [line.split(":")[0].strip() for line in interfaces.splitlines()] == ["lo"]
    host = sh(isola, "tail -n +3 /proc/net/dev | wc -l", "--network", "host")
    assert int(host) > 1  # the probe sees the host's interfaces when asked to


def test_proc_sys_sysrq_and_sys_are_read_only_or_masked(isola: Isola) -> None:  # noqa: F811
    out = sh(
        isola,
        "for f in /proc/sys/kernel/hostname /proc/sysrq-trigger /sys/kernel/uevent_helper; do "
        "(echo h > $f) 2>/dev/null && echo $f writable; done; "
        "touch /sys/x 2>/dev/null && echo /sys writable; cat /proc/kcore 2>/dev/null | head -c 1 | wc -c; "
        "ls /sys/firmware | wc -l",
    )
    assert out.split() == ["0", "0"]


def test_no_cap_sys_admin(isola: Isola) -> None:  # noqa: F811
    cap_eff = int(sh(isola, "grep CapEff /proc/self/status | cut -f2"), 16)
    assert not cap_eff & (1 << 21)  # CAP_SYS_ADMIN
    assert not cap_eff & (1 << 19)  # CAP_SYS_PTRACE


@pytest.mark.parametrize("syscall", ["keyctl", "add_key", "bpf", "mount", "userns"])
def test_the_seccomp_profile_refuses(isola: Isola, probe: Path, syscall: str) -> None:  # noqa: F811
    volume = f"{probe}:/probe:ro"
    refused = isola.ok("container", "run", "--rm", "-v", volume, "busybox", "/probe/probe", syscall)
    assert refused.strip() == "Operation not permitted"
    if syscall in ("keyctl", "add_key", "userns"):  # allowed to an unprivileged process: only seccomp stops them
        unconfined = isola.ok(
            "container", "run", "--rm", "--security-opt", "seccomp=unconfined", "-v", volume, "busybox",
            "/probe/probe", syscall,
        )  # fmt: skip
        assert unconfined.strip() == "allowed"


def test_a_fork_bomb_stops_at_the_pids_limit(isola: Isola) -> None:  # noqa: F811
    """The bomb is a child shell (busybox sh gives up at its first failed fork); the parent then counts the
    processes with a glob and kills them with builtins, since it cannot fork either until they are gone."""
    done = isola(
        "container", "run", "--rm", "--pids-limit", "20", "busybox", "sh", "-c",
        "sh -c 'for i in $(seq 60); do sleep 30 & done'; set -- /proc/[0-9]*; echo $#; kill -9 -1; wait; "
        "cat /sys/fs/cgroup/pids/pids.events 2>/dev/null || cat /sys/fs/cgroup/pids.events",
    )  # fmt: skip
    count, _, refused = done.stdout.split()
    assert 10 < int(count) <= 20  # it did fork, up to the limit and no further
    assert int(refused) > 0, done.stdout  # pids.events: forks refused at pids.max
    assert "can't fork" in done.stderr, done.stderr


def test_a_memory_hog_is_oom_killed_in_its_cgroup(isola: Isola, probe: Path) -> None:  # noqa: F811
    done = isola(
        "container", "run", "--rm", "--memory", "32m", "-v", f"{probe}:/probe:ro", "busybox", "/probe/probe", "hog"
    )
    assert done.returncode == 137, done.stderr  # SIGKILL from the OOM killer
    assert os.getloadavg() is not None and sh(isola, "echo alive") == "alive\n"  # the host (and isola) carry on


@pytest.fixture
def open_host_file(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "secret", os.O_RDWR | os.O_CREAT)
    os.set_inheritable(fd, True)
    yield fd
    os.close(fd)


def test_no_host_file_descriptor_leaks_in(isola: Isola, open_host_file: int) -> None:  # noqa: F811
    out = isola.ok("container", "run", "--rm", "busybox", "ls", "/proc/self/fd", pass_fds=(open_host_file,))
    assert sorted(int(x) for x in out.split()) == [0, 1, 2, 3]  # stdio, and ls's own directory
