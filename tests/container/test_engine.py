"""The container engine for real: busybox containers from the image store driven through the `Engine` interface
(create, start, state from a fresh engine, logs, exec, stats, live resize, stop, restart, kill, delete), a failed
start kept as `failed`, and bad specs refused naming the field. Runs in a private $ISOLA_HOME; every container
is deleted afterwards, and the module checks that no mount or directory of one is left."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from isola.container.containers.runtime import CommandError
from isola.container.containers.store import ContainerStore
from isola.container.engine import ContainerEngine
from isola.container.images.build import busybox_image
from isola.container.images.store import ImageStore
from isola.engine import InstanceSpec, Kind, Resources, State, engine_for
from isola.errors import ConflictError, InvalidSpecError, NotFoundError, UnsupportedError, UsageError
from tests.conftest import amd64_asset, require_root


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home with the busybox image; afterwards, nothing of any container may be mounted or left."""
    require_root()
    busybox = amd64_asset("busybox")
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ISOLA_HOME", str(home))
        ImageStore().add(busybox_image(busybox), ["busybox:latest"])
        yield home
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if str(home) in line]
    assert [p.name for p in (home / "containers").iterdir()] == [".lock"]  # the store's own lock only


@pytest.fixture
def engine(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContainerEngine]:
    monkeypatch.setenv("ISOLA_HOME", str(home))
    made = ContainerEngine()
    try:
        yield made
    finally:
        for c in ContainerStore().containers():
            made.delete(c.id, force=True)


def _id() -> str:
    return "t" + uuid.uuid4().hex[:12]


def _spec(*command: str, image: str | None = "busybox", **fields: object) -> InstanceSpec:
    fields.setdefault("resources", Resources(1, 64))
    return InstanceSpec("c", Kind.CONTAINER, image=image, command=command, **fields)  # type: ignore[arg-type]


def _wait(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _cgroup(iid: str, name: str) -> str:
    return Path(f"/sys/fs/cgroup/memory/isola/{iid}/{name}").read_text().strip()


def test_a_container_through_the_engine(engine: ContainerEngine) -> None:
    assert isinstance(engine_for(Kind.CONTAINER), ContainerEngine)
    iid = _id()
    script = "echo hello $GREETING; echo oops >&2; exec sleep 60"
    engine.create(iid, _spec("sh", "-c", script, env={"GREETING": "world"}))
    assert engine.state(iid).state is State.CREATED
    assert engine.start(iid).state is State.RUNNING
    _wait(lambda: b"oops" in engine.log(iid).read_bytes())
    assert engine.log(iid).read_bytes().splitlines() == [b"hello world", b"oops"]
    status = ContainerEngine().state(iid)  # what a restarted daemon sees
    assert status.state is State.RUNNING and status.monitor_pid

    probe = "echo $GREETING $EXTRA; echo err >&2; cat /proc/1/cmdline; exit 3"
    done = engine.exec(iid, ["sh", "-c", probe], {"EXTRA": "x"})
    assert (done.exit_code, done.stderr) == (3, b"err\n")
    assert done.stdout == b"world x\nsleep\x0060\x00"
    assert engine.exec(iid, ["/no/such/program"]).exit_code == 127

    stats = engine.stats(iid)
    assert stats.cpu_ns > 0 and stats.memory_bytes > 0 and stats.engine["processes"] == 1
    if os.path.isdir("/sys/fs/cgroup/memory/isola"):  # the cgroup v1 layout of this host
        assert _cgroup(iid, "memory.limit_in_bytes") == str(64 << 20)
        assert engine.resize(iid, Resources(1, 96)) == Resources(1, 96)
        assert _cgroup(iid, "memory.limit_in_bytes") == str(96 << 20)
    with pytest.raises(UnsupportedError, match="no console socket"):
        engine.console(iid)
    with pytest.raises(ConflictError, match="running"):
        engine.delete(iid)

    stopped = engine.stop(iid, timeout_s=0.5)  # sleep as PID 1 ignores SIGTERM: SIGKILL after the timeout
    assert (stopped.state, stopped.exit_code) == (State.STOPPED, 137)
    assert engine.stats(iid).cpu_ns == 0
    assert engine.start(iid).state is State.RUNNING  # again, on its kept root; the log goes on
    _wait(lambda: engine.log(iid).read_bytes().count(b"hello") == 2)
    engine.kill(iid, 9)
    _wait(lambda: engine.state(iid).state is State.STOPPED)
    assert engine.state(iid).exit_code == 137
    with pytest.raises(ConflictError, match="not running"):
        engine.kill(iid, 15)
    engine.delete(iid)
    with pytest.raises(NotFoundError):
        ContainerEngine().state(iid)


def test_a_container_that_cannot_start_is_kept_failed_with_why(engine: ContainerEngine) -> None:
    iid = _id()
    engine.create(iid, _spec("/no/such/program"))
    with pytest.raises(CommandError):
        engine.start(iid)
    status = engine.state(iid)
    assert (status.state, status.exit_code) == (State.FAILED, 127) and "/no/such/program" in status.detail
    with pytest.raises(ConflictError, match="not running"):
        engine.exec(iid, ["true"])
    engine.delete(iid)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (_spec("true", image=None), "image"),
        (_spec("true", image="nothere:1"), "image"),
        (InstanceSpec("c", Kind.METAL, image="busybox"), "kind"),
        (_spec("true", networks=("/run/netns/x",)), "networks"),
        (_spec("true", resources=Resources(1, 64, 1)), "resources.disk_gib"),
        (_spec("true", resources=Resources(1, 2)), "resources.memory_mib"),
        (_spec("true", resources=Resources(0, 64)), "resources.vcpus"),
        (_spec("true", env={"A=B": "c"}), "env"),
        (_spec("echo", "a\0b"), "command[1]"),
    ],
)
def test_bad_specs_name_the_field_and_leave_nothing(engine: ContainerEngine, spec: InstanceSpec, field: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        engine.create(_id(), spec)
    assert caught.value.field == field
    assert ContainerStore().containers() == []


def test_unknown_ids_and_bad_requests(engine: ContainerEngine) -> None:
    with pytest.raises(NotFoundError):
        engine.state("t-missing")
    with pytest.raises(UsageError):
        engine.state("../etc")
    iid = _id()
    engine.create(iid, _spec("true"))
    with pytest.raises(ConflictError, match="in use"):
        engine.create(iid, _spec("true"))
    with pytest.raises(ConflictError, match="not been started"):
        engine.stop(iid)
    with pytest.raises(UsageError, match="signal"):
        engine.kill(iid, 99)
    with pytest.raises(InvalidSpecError) as caught:
        engine.exec(iid, [])
    assert caught.value.field == "argv"
    engine.delete(iid)
