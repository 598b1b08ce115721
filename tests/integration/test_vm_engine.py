"""The vm engine through the `Engine` interface, for real: process VMs on this host's KVM, each owned by a
detached monitor, driven from this process, from a fresh engine object and from fresh Python processes.

Every instance lives in a temporary state root (short: the console socket's path must fit a unix socket); the
fixture deletes each with force at the end, which kills its monitor and VM even when the test failed, and
checks that no process of any instance survived.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from isola.engine import ENGINES, Engine, InstanceSpec, Kind, Resources, State, engine_for
from isola.errors import ConflictError, InvalidSpecError, NotFoundError, UnsupportedError, UsageError
from isola.host import procfs
from isola.vmm.engine import STATE_ROOT_VARIABLE, VmEngine
from isola.vmm.kvm import system
from tests.conftest import amd64_asset


@pytest.fixture(scope="module", autouse=True)
def _kvm_available() -> None:
    info = system.probe()
    if not info.usable:
        pytest.skip(f"no usable KVM: {info.problem}")


@pytest.fixture
def busybox() -> Path:
    return amd64_asset("busybox")


@pytest.fixture
def state_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="ive-", dir="/tmp"))
    yield root
    left = []
    try:
        for directory in root.iterdir():
            if directory.name.startswith("."):
                continue
            identities = _identities(directory)
            try:
                VmEngine(root).delete(directory.name, force=True)
            finally:
                for who in identities:  # whatever delete could not end
                    if procfs.running(who):
                        left.append(who.pid)
                        os.kill(who.pid, signal.SIGKILL)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert not left, f"processes {left} outlived delete(force=True)"


@pytest.fixture
def engine(state_root: Path) -> VmEngine:
    return VmEngine(state_root)


def _identities(directory: Path) -> list[procfs.Identity]:
    try:
        running = json.loads((directory / "monitor.json").read_text())
    except FileNotFoundError:
        return []
    return [procfs.Identity(**who) for who in running.values() if isinstance(who, dict)]


def spec(*command: str | Path, image: Path | None = None, **fields: object) -> InstanceSpec:
    doc: dict[str, object] = {
        "name": "guest",
        "kind": "vm",
        "mode": "process",
        "command": [str(c) for c in command],
        "resources": {"memory_mib": 64},
        **fields,
    }
    if image is not None:
        doc["image"] = str(image)
    return InstanceSpec.from_dict(doc)


def receive_until(sock: socket.socket, marker: bytes, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def wait_state(engine: VmEngine, instance_id: str, state: State, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while engine.state(instance_id).state is not state:
        assert time.monotonic() < deadline, engine.state(instance_id)
        time.sleep(0.02)


# -- the life of an instance -------------------------------------------------------------------------------------


def test_the_vm_engine_is_registered_for_kind_vm() -> None:
    assert ENGINES[Kind.VM] == "isola.vmm.engine:VmEngine"
    assert isinstance(engine_for(Kind.VM), Engine)


def test_a_program_talks_over_the_console_and_ends_with_its_status(engine: VmEngine, busybox: Path) -> None:
    script = 'echo hello; read line; echo "got $line"; exit 7'
    assert engine.create("talk", spec(busybox, "sh", "-c", script)).state is State.CREATED
    assert engine.state("talk").state is State.CREATED
    status = engine.start("talk")
    assert status.state is State.RUNNING and status.monitor_pid not in (None, os.getpid())
    time.sleep(0.3)  # the guest speaks before anyone attaches: the console keeps it
    with socket.socket(socket.AF_UNIX) as console:
        console.connect(engine.console("talk"))
        assert receive_until(console, b"hello\n") == b"hello\n"
        console.sendall(b"world\n")
        assert receive_until(console, b"\n") == b"got world\n"
        assert receive_until(console, b"never") == b""  # the console closes with the VM
    wait_state(engine, "talk", State.STOPPED)
    ended = engine.state("talk")
    assert ended.exit_code == 7 and "status 7" in ended.detail
    assert engine.log("talk").read_bytes() == b"hello\ngot world\n"
    assert engine.stats("talk").cpu_ns > 0
    with pytest.raises(ConflictError, match="stopped"):
        engine.console("talk")


def test_a_stopped_instance_starts_again(engine: VmEngine, busybox: Path) -> None:
    engine.create("again", spec(busybox, "echo", "once more"))
    for _ in range(2):
        engine.start("again")
        wait_state(engine, "again", State.STOPPED)
        assert engine.state("again").exit_code == 0
    assert engine.log("again").read_bytes() == b"once more\n" * 2


def test_stop_ends_a_sleeping_guest_and_all_its_processes(engine: VmEngine, busybox: Path) -> None:
    engine.create("nap", spec(busybox, "sleep", "600"))
    with pytest.raises(ConflictError, match="not been started"):
        engine.stop("nap")
    engine.start("nap")
    members = _identities(engine.state_root / "nap")
    assert len(members) == 3  # monitor, launcher, the VM
    started = time.monotonic()
    status = engine.stop("nap", timeout_s=5)
    assert time.monotonic() - started < 3
    # SIGKILL from the launcher, or SIGTERM when the program caught it meanwhile (the VM does, in a blocking call)
    assert status.state is State.STOPPED and status.exit_code in (128 + signal.SIGKILL, 128 + signal.SIGTERM)
    assert not any(procfs.running(who) for who in members)
    assert engine.stop("nap") == status  # stopping a stopped instance changes nothing


def test_stop_lets_a_program_that_handles_sigterm_end_itself(engine: VmEngine, busybox: Path) -> None:
    script = "trap 'echo bye; exit 3' TERM; echo ready; while :; do sleep 0.1; done"
    engine.create("polite", spec(busybox, "sh", "-c", script))
    engine.start("polite")
    with socket.socket(socket.AF_UNIX) as console:
        console.connect(engine.console("polite"))
        assert receive_until(console, b"ready\n") == b"ready\n"  # the trap is set
    status = engine.stop("polite", timeout_s=10)
    assert (status.state, status.exit_code) == (State.STOPPED, 3)
    assert engine.log("polite").read_bytes() == b"ready\nbye\n"


def test_kill_sends_a_signal_to_the_program_and_sigkill_ends_the_vm(engine: VmEngine, busybox: Path) -> None:
    script = "trap 'echo usr1' USR1; echo ready; while :; do sleep 0.1; done"
    engine.create("sig", spec(busybox, "sh", "-c", script))
    with pytest.raises(ConflictError, match="not running"):
        engine.kill("sig", signal.SIGKILL)
    engine.start("sig")
    with socket.socket(socket.AF_UNIX) as console:
        console.connect(engine.console("sig"))
        assert receive_until(console, b"ready\n") == b"ready\n"
        engine.kill("sig", signal.SIGUSR1)
        assert receive_until(console, b"usr1\n") == b"usr1\n"
    with pytest.raises(UsageError, match="signal 99"):
        engine.kill("sig", 99)
    engine.kill("sig", signal.SIGKILL)
    wait_state(engine, "sig", State.STOPPED)
    assert engine.state("sig").exit_code == 128 + signal.SIGKILL


def test_delete_refuses_a_running_instance_unless_forced(engine: VmEngine, busybox: Path) -> None:
    engine.create("busy", spec(busybox, "sleep", "600"))
    engine.start("busy")
    members = _identities(engine.state_root / "busy")
    with pytest.raises(ConflictError, match="running"):
        engine.delete("busy")
    assert engine.state("busy").state is State.RUNNING
    engine.delete("busy", force=True)
    assert not any(procfs.running(who) for who in members)
    assert not (engine.state_root / "busy").exists()
    with pytest.raises(NotFoundError):
        engine.state("busy")
    engine.create("idle", spec(busybox, "true"))
    engine.delete("idle")  # never started: nothing to force
    with pytest.raises(NotFoundError):
        engine.delete("idle")


# -- a daemon restart: fresh engines, fresh processes ---------------------------------------------------------------


def run_python(state_root: Path, code: str) -> str:
    """`code` in a fresh Python process whose engine state root is `state_root`; what it printed."""
    env = {**os.environ, STATE_ROOT_VARIABLE: str(state_root)}
    result = subprocess.run(
        [sys.executable, "-c", "from isola.vmm.engine import VmEngine\nengine = VmEngine()\n" + code],
        capture_output=True, text=True, timeout=30, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_an_instance_started_by_a_process_that_exited_is_known_to_every_other(
    engine: VmEngine, state_root: Path, busybox: Path
) -> None:
    engine.create("kept", spec(busybox, "sleep", "600"))
    pid = int(run_python(state_root, "print(engine.start('kept').monitor_pid)"))  # the starter exits
    assert procfs.stat(pid) is not None and procfs.stat(pid).ppid != os.getpid()  # type: ignore[union-attr]
    assert VmEngine(state_root).state("kept").monitor_pid == pid  # a fresh engine object
    assert run_python(state_root, "print(engine.state('kept').state.value)") == "running"
    assert float(run_python(state_root, "print(engine.stats('kept').memory_bytes)")) > 0
    status = run_python(state_root, "s = engine.stop('kept', 5); print(s.state.value, s.exit_code)")
    assert status in ("stopped 137", "stopped 143")
    assert engine.state("kept").exit_code in (137, 143)


def test_a_monitor_that_died_leaves_a_failed_instance_that_delete_cleans(engine: VmEngine, busybox: Path) -> None:
    engine.create("orphan", spec(busybox, "sleep", "600"))
    monitor_pid = engine.start("orphan").monitor_pid
    assert monitor_pid is not None
    launcher = next(who for who in _identities(engine.state_root / "orphan") if who.pid != monitor_pid)
    os.kill(monitor_pid, signal.SIGKILL)
    wait_state(engine, "orphan", State.FAILED)
    assert "still runs" in engine.state("orphan").detail and procfs.running(launcher)
    with pytest.raises(ConflictError):
        engine.delete("orphan")
    engine.delete("orphan", force=True)
    assert not procfs.running(launcher)


# -- exec, stats, resize -----------------------------------------------------------------------------------------


def test_exec_runs_another_program_in_the_same_root(engine: VmEngine, busybox: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    (root / "motd").write_text("inside\n")
    engine.create("box", spec("/bin/busybox", "sleep", "600", image=root, env={"WHO": "box"}))
    with pytest.raises(ConflictError, match="not running"):
        engine.exec("box", ["/bin/busybox", "true"])
    engine.start("box")
    done = engine.exec("box", ["/bin/busybox", "sh", "-c", 'cat /motd; echo "$WHO $EXTRA" >&2; exit 4'], {"EXTRA": "x"})
    assert (done.exit_code, done.stdout, done.stderr) == (4, b"inside\n", b"box x\n")
    assert engine.exec("box", ["/bin/busybox", "ls", "/"]).stdout.split() == [b"bin", b"motd"]
    with pytest.raises(InvalidSpecError) as info:
        engine.exec("box", ["/bin/missing"])
    assert info.value.field == "argv[0]"
    assert engine.state("box").state is State.RUNNING  # exec is a VM of its own


def test_without_an_image_the_program_is_alone_in_its_root(engine: VmEngine, busybox: Path) -> None:
    engine.create("alone", spec(busybox, "sleep", "600"))
    engine.start("alone")
    assert engine.exec("alone", ["/busybox", "ls", "/"]).stdout == b"busybox\n"


def test_stats_and_resize(engine: VmEngine, busybox: Path) -> None:
    engine.create("sized", spec(busybox, "sleep", "600"))
    with pytest.raises(InvalidSpecError) as info:
        engine.resize("sized", Resources(vcpus=2, memory_mib=64))
    assert info.value.field == "resources.vcpus"
    assert engine.resize("sized", Resources(memory_mib=32)) == Resources(memory_mib=32)
    engine.start("sized")
    stats = engine.stats("sized")
    assert stats.cpu_ns > 0 and stats.memory_bytes > 1 << 20 and stats.engine["processes"] == 2
    assert engine.resize("sized", Resources(memory_mib=32)) == Resources(memory_mib=32)
    with pytest.raises(UnsupportedError, match="running"):
        engine.resize("sized", Resources(memory_mib=64))


# -- refusals ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"resources": {"vcpus": 2, "memory_mib": 64}}, "resources.vcpus"),
        ({"resources": {"memory_mib": 7}}, "resources.memory_mib"),
        ({"resources": {"memory_mib": 64, "disk_gib": 1}}, "resources.disk_gib"),
        ({"command": []}, "command"),
        ({"command": ["/nonexistent/program"]}, "command[0]"),
        ({"image": "/nonexistent"}, "image"),
        ({"command": ["/bin/missing"], "image": "/"}, "command[0]"),
        ({"env": {"A=B": "c"}}, "env"),
        ({"networks": ["n1"]}, "networks"),
        ({"kind": "container", "mode": None}, "kind"),
    ],
)
def test_bad_specs_name_the_field(engine: VmEngine, busybox: Path, change: dict[str, object], field: str) -> None:
    doc: dict[str, object] = {"name": "bad", "kind": "vm", "mode": "process", "command": [str(busybox), "true"]}
    with pytest.raises(InvalidSpecError) as info:
        engine.create("bad", InstanceSpec.from_dict({**doc, **change}))
    assert info.value.field == field
    assert list(engine.state_root.iterdir()) == []  # a failed create leaves nothing


def test_ids_are_checked_and_unique(engine: VmEngine, busybox: Path) -> None:
    with pytest.raises(UsageError, match="instance id"):
        engine.create("../escape", spec(busybox, "true"))
    engine.create("once", spec(busybox, "true"))
    with pytest.raises(ConflictError, match="exists"):
        engine.create("once", spec(busybox, "true"))
    with pytest.raises(NotFoundError):
        engine.start("never-made")


def test_kernel_mode_is_refused_at_start_on_a_kvm_pvm_host(engine: VmEngine, tmp_path: Path) -> None:
    if system.probe().provider != "kvm_pvm":
        pytest.skip("this host's KVM can boot kernels")
    amd64_asset("kernel")
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(b"\0" * 512)
    kernel_vm = {"name": "k", "kind": "vm", "mode": "kernel", "resources": {"vcpus": 2, "memory_mib": 128}}
    with pytest.raises(InvalidSpecError) as info:
        engine.create("k", InstanceSpec.from_dict(kernel_vm))
    assert info.value.field == "image"
    with pytest.raises(InvalidSpecError) as info:
        engine.create("k", InstanceSpec.from_dict({**kernel_vm, "image": str(initrd), "resources": {"vcpus": 64}}))
    assert info.value.field == "resources.vcpus"
    engine.create("k", InstanceSpec.from_dict({**kernel_vm, "image": str(initrd)}))
    with pytest.raises(UnsupportedError, match="kvm_pvm") as refused:
        engine.start("k")
    assert refused.value.hint and "process" in refused.value.hint
    assert engine.state("k").state is State.CREATED
    with pytest.raises(UnsupportedError, match="exec agent"):
        engine.exec("k", ["/bin/sh"])


def test_an_ended_guest_can_be_deleted_at_once(engine: VmEngine, busybox: Path) -> None:
    """As soon as `state` says STOPPED, `delete` without force succeeds, even while the monitor is still
    closing down (it waits for it instead of calling the guest running)."""
    for n in range(4):
        name = f"brief{n}"
        engine.create(name, spec(busybox, "sleep", "600"))
        engine.start(name)
        engine.kill(name, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while engine.state(name).state is not State.STOPPED:
            assert time.monotonic() < deadline, engine.state(name)
            time.sleep(0.01)
        engine.delete(name)
        assert not (engine.state_root / name).exists()


def test_a_create_killed_half_way_leaves_nothing_for_long(engine: VmEngine, busybox: Path) -> None:
    abandoned = engine.state_root / ".ghost.k1b2c3"
    abandoned.mkdir(parents=True)
    (abandoned / "instance.json").write_text("{}")
    recent = engine.state_root / ".other.x9y8z7"
    recent.mkdir()
    old = time.time() - 3600
    os.utime(abandoned, (old, old))
    engine.create("next", spec(busybox, "true"))
    assert not abandoned.exists(), "an abandoned half-made directory survived the next create"
    assert recent.exists(), "a create in progress elsewhere lost its directory"
