"""The metal engine for real: programs in their own cgroup on this host, limits written live, console, exec,
stats, the instance ending with its program, and delete/clean leaving no process, cgroup or file behind."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from isola.engine import InstanceSpec, Kind, Resources, State, engine_for
from isola.errors import ConflictError, InvalidSpecError, NotFoundError, UsageError
from isola.metal.cgroup import InstanceGroup
from isola.metal.engine import MetalEngine
from tests.platform.conftest import short_root, wait_for
from tests.platform.metal_fixtures import alive, processes_in, sweep

if os.geteuid() != 0:
    pytest.skip("the metal engine needs root (cgroups)", allow_module_level=True)


@pytest.fixture
def engine() -> Iterator[MetalEngine]:
    root = short_root()
    try:
        yield MetalEngine(root)
    finally:
        sweep(root)


def _id() -> str:
    return "t" + uuid.uuid4().hex[:12]


def _spec(*command: str, vcpus: int = 1, memory_mib: int = 64, **fields: object) -> InstanceSpec:
    return InstanceSpec("m", Kind.METAL, resources=Resources(vcpus, memory_mib), command=command, **fields)  # type: ignore[arg-type]


def _cgroup_file(instance_id: str, controller: str, name: str) -> str:
    return Path(f"/sys/fs/cgroup/{controller}/isola-metal/{instance_id}/{name}").read_text().strip()


def test_a_program_runs_on_the_host_in_its_cgroup_with_live_limits(engine: MetalEngine) -> None:
    assert isinstance(engine_for(Kind.METAL), MetalEngine)
    iid = _id()
    engine.create(iid, _spec("sh", "-c", "echo started; ls /dev/kvm; cat /proc/self/cgroup; exec sleep 60"))
    assert engine.state(iid).state is State.CREATED
    assert engine.start(iid).state is State.RUNNING
    wait_for(lambda: b"0::/" in engine.log(iid).read_bytes())  # the last line of /proc/self/cgroup
    log = engine.log(iid).read_text()
    assert f"memory:/isola-metal/{iid}" in log and f"pids:/isola-metal/{iid}" in log
    assert "/dev/kvm" in log or not os.path.exists("/dev/kvm")  # every device of the host is there
    assert _cgroup_file(iid, "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert _cgroup_file(iid, "cpu", "cpu.cfs_quota_us") == "100000"
    done = engine.exec(iid, ["sh", "-c", "pwd; cat /proc/self/cgroup; echo oops >&2; exit 3"], {"X": "1"})
    assert done.exit_code == 3 and done.stderr == b"oops\n"
    assert done.stdout.decode().splitlines()[0] == str(engine.state_root / iid / "files")
    assert f"cpu:/isola-metal/{iid}" in done.stdout.decode()
    assert engine.resize(iid, Resources(2, 96)) == Resources(2, 96)  # at once, while it runs
    assert _cgroup_file(iid, "memory", "memory.limit_in_bytes") == str(96 << 20)
    assert _cgroup_file(iid, "cpu", "cpu.cfs_quota_us") == "200000"
    stats = engine.stats(iid)
    assert stats.cpu_ns > 0 and stats.memory_bytes > 0 and stats.engine["processes"] == 1.0
    fresh = MetalEngine(engine.state_root)  # another process, knowing only the id
    status = fresh.stop(iid, timeout_s=5)
    assert status.state is State.STOPPED and status.exit_code == 128 + signal.SIGTERM
    assert "SIGTERM" in status.detail and fresh.stats(iid).cpu_ns > 0
    engine.delete(iid)
    assert not (engine.state_root / iid).exists() and not InstanceGroup(iid).exists()


def test_the_instance_ends_with_its_program_and_kill_ends_the_whole_tree(engine: MetalEngine) -> None:
    first = _id()
    engine.create(first, _spec("sh", "-c", "sleep 60 & exit 7"))
    engine.start(first)
    wait_for(lambda: engine.state(first).state is State.STOPPED)
    assert engine.state(first).exit_code == 7
    assert processes_in(first) == []  # the background sleep went with the program
    second = _id()
    engine.create(second, _spec("sh", "-c", "sleep 60 & sleep 60 & wait"))
    engine.start(second)
    wait_for(lambda: len(processes_in(second)) == 3)
    members = processes_in(second)
    engine.kill(second, signal.SIGKILL)
    wait_for(lambda: engine.state(second).state is State.STOPPED)
    assert engine.state(second).exit_code == 128 + signal.SIGKILL
    assert not any(alive(pid) for pid in members)
    with pytest.raises(ConflictError, match="not running"):
        engine.kill(second, signal.SIGTERM)
    assert engine.start(second).state is State.RUNNING  # a stopped instance starts again


def test_the_console_carries_the_programs_stdio(engine: MetalEngine) -> None:
    iid = _id()
    engine.create(iid, _spec("sh", "-c", "echo ready; read line; echo got:$line; sleep 60"))
    engine.start(iid)
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(engine.console(iid))
        client.settimeout(5)
        seen = b""
        while b"ready" not in seen:
            seen += client.recv(4096)  # said before anyone attached: the backlog keeps it
        client.sendall(b"hello\n")
        while b"got:hello" not in seen:
            seen += client.recv(4096)
    engine.delete(iid, force=True)


def test_delete_and_clean_remove_everything_even_cgroups_the_tenant_made(engine: MetalEngine) -> None:
    iid = _id()
    # The tenant is root on its host: it makes a cgroup below its own, moves a process there, writes files.
    script = "mkdir -p $C/mine && sh -c 'echo $$ > $C/mine/cgroup.procs; exec sleep 60' & echo data > f; sleep 60"
    cgroup = f"/sys/fs/cgroup/pids/isola-metal/{iid}"
    engine.create(iid, _spec("sh", "-c", script, env={"C": cgroup}))
    engine.start(iid)
    wait_for(lambda: os.path.isdir(f"{cgroup}/mine") and bool(Path(f"{cgroup}/mine/cgroup.procs").read_text()))
    assert (engine.state_root / iid / "files" / "f").exists()
    hidden = processes_in(iid)
    assert len(hidden) == 3
    with pytest.raises(ConflictError, match="running"):
        engine.delete(iid)
    engine.delete(iid, force=True)
    assert not any(alive(pid) for pid in hidden)
    assert not InstanceGroup(iid).exists() and not (engine.state_root / iid).exists()
    assert engine.clean([iid]) == {}  # nothing left to clean, and clean says so


def test_bad_input_is_refused_with_the_field_named(engine: MetalEngine) -> None:
    with pytest.raises(InvalidSpecError, match=r"command\[0\]: no-such-program: no such program"):
        engine.create(_id(), _spec("no-such-program"))
    with pytest.raises(InvalidSpecError, match="command: is required"):
        engine.create(_id(), _spec())
    with pytest.raises(InvalidSpecError, match="image: a metal instance runs on the host"):
        engine.create(_id(), _spec("true", image="/"))
    with pytest.raises(InvalidSpecError, match="networks"):
        engine.create(_id(), _spec("true", networks=("blue",)))
    with pytest.raises(InvalidSpecError, match="kind"):
        engine.create(_id(), InstanceSpec("c", Kind.CONTAINER, command=("true",)))
    with pytest.raises(UsageError, match="instance id"):
        engine.create("../escape", _spec("true"))
    with pytest.raises(NotFoundError):
        engine.state(_id())
    iid = _id()
    engine.create(iid, _spec("true"))
    with pytest.raises(ConflictError, match="exists already"):
        engine.create(iid, _spec("true"))
    with pytest.raises(ConflictError, match="not been started"):
        engine.stop(iid)
    with pytest.raises(UsageError, match="signal 99"):
        engine.kill(iid, 99)
    assert [p.name for p in engine.state_root.iterdir()] == [iid]  # failed creates left nothing


def test_start_up_is_quick(engine: MetalEngine) -> None:
    iid = _id()
    engine.create(iid, _spec("true"))
    t0 = time.perf_counter()
    engine.start(iid)
    assert time.perf_counter() - t0 < 2.0
