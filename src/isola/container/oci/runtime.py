"""The runtime's side of each OCI operation: what `isola-oci create/start/run/kill/delete/...` do between reading
their arguments and printing their result.

The runtime process never outlives a command. `create` forks the container's first processes (isola.container.
oci.init), answers their requests, records the result in the state directory and exits, leaving the container's
init blocked on the start FIFO; every later command finds the container again through that record.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import time

from isola.cgroups import hierarchies
from isola.cgroups.group import Group
from isola.container.oci import init, spec, sync
from isola.container.oci.state import EXEC_FIFO, Record, Store, check_id, oci_state, process_start, rfc3339
from isola.errors import ConflictError, EngineError, InvalidSpecError, UsageError
from isola.host import libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any

PR_SET_CHILD_SUBREAPER = 36

# runc's allow-list for the default device nodes, added after config.json's own device rules on cgroup v1
_DEFAULT_DEVICE_RULES = (
    ("c", 1, 3),  # null
    ("c", 1, 5),  # zero
    ("c", 1, 7),  # full
    ("c", 1, 8),  # random
    ("c", 1, 9),  # urandom
    ("c", 5, 0),  # tty
    ("c", 5, 1),  # console
    ("c", 5, 2),  # ptmx
    ("c", 136, -1),  # pts
)


def subreaper() -> None:
    """Orphans below this process (the container's init, once stage 1 exits) become its children."""
    libc.call("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def write_pid_file(path: str, pid: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _device_rules(s: spec.Spec) -> list[dict[str, Any]]:
    rules = list(s.resources.get("devices") or ())
    if not rules:
        return []
    for kind, major, minor in _DEFAULT_DEVICE_RULES:
        rules.append({"allow": True, "type": kind, "major": major, "minor": minor, "access": "rwm"})
    for dev in s.devices:
        if dev.type != "p":
            kind = "c" if dev.type == "u" else dev.type
            rules.append({"allow": True, "type": kind, "major": dev.major, "minor": dev.minor, "access": "rwm"})
    return rules


class Created:
    """What `create` made: the record it stored and the container's cgroup."""

    __slots__ = ("group", "record")

    def __init__(self, record: Record, group: Group) -> None:
        self.record = record
        self.group = group


class Runtime:
    def __init__(self, root: str) -> None:
        self.store = Store(root)
        self._layout: hierarchies.Hierarchies | None = None

    @property
    def layout(self) -> hierarchies.Hierarchies:
        if self._layout is None:
            os.makedirs(self.store.root, mode=0o711, exist_ok=True)
            self._layout = hierarchies.cached(os.path.join(self.store.root, "cgroup-layout.json"))
        return self._layout

    def group(self, record: Record) -> Group:
        return Group(self.layout, record.cgroups)

    def load(self, bundle: str) -> spec.Spec:
        """The bundle's config.json, validated; the schema check is remembered under --root."""
        return spec.load(bundle, os.path.join(self.store.root, "validated"))

    # --- create -------------------------------------------------------------------------------------

    def create(
        self,
        container_id: str,
        bundle: str,
        *,
        pid_file: str | None = None,
        console_socket: str | None = None,
        console_end: socket.socket | None = None,
        no_pivot: bool = False,
        preserve_fds: int = 0,
        loaded: spec.Spec | None = None,
    ) -> Created:
        """Set the container up and leave its init waiting for `start` (`loaded` is the bundle's spec, if the
        caller has read it already). On any failure nothing is left: no process, no cgroup, no state
        directory."""
        check_id(container_id)
        s = loaded or self.load(bundle)
        process = s.process
        if process is None:
            raise InvalidSpecError("is required to create a container", field="process")
        if process.terminal and console_socket is None and console_end is None:
            raise UsageError("process.terminal is true: give --console-socket to receive the terminal")
        if console_socket is not None and not process.terminal:
            raise UsageError("--console-socket was given but process.terminal is false")
        group = Group.for_path(self.layout, s.cgroups_path or f"/isola-oci/{container_id}", s.resources)
        state_dir = self.store.reserve(container_id)
        children: list[int] = []
        made_group = False
        channel = child_end = None
        console = None
        dir_fd = -1
        try:
            console = console_end or (connect_console(console_socket) if console_socket else None)
            fifo = os.path.join(state_dir, EXEC_FIFO)
            os.mkfifo(fifo, 0o622)
            os.chmod(fifo, 0o622)  # writable by the init even as another user (the umask would clear it)
            dir_fd = os.open(state_dir, os.O_PATH | os.O_CLOEXEC)
            group.create()
            made_group = True
            resources = dict(s.resources)
            if "devices" in resources and self.layout.where("devices") == "v1":
                resources["devices"] = _device_rules(s)
            group.apply(resources)
            seccomp_filter = None
            if s.seccomp is not None:
                from isola.container.oci import seccomp

                seccomp_filter = seccomp.build(s.seccomp)  # compiled here, loaded by the init before execve
            channel, child_end = sync.pair()
            ctx = init.Context(s, child_end, dir_fd, console, group, no_pivot, preserve_fds, seccomp_filter)
            stage1 = os.fork()
            if stage1 == 0:
                channel.close()
                init.stage1(ctx)
            children.append(stage1)
            child_end.close()
            sync.send(channel, "go")
            message = sync.receive(channel, "userns", "pid")
            if message["type"] == "userns":
                self._write_maps(stage1, s)
                sync.send(channel, "mapped")
                message = sync.receive(channel, "pid")
            pid = int(message["pid"])
            children.append(pid)
            os.waitpid(stage1, 0)
            children.remove(stage1)
            sync.send(channel, "continue")
            record = Record(
                id=container_id,
                pid=pid,
                pid_start=process_start(pid) or 0,
                bundle=s.bundle,
                rootfs=s.rootfs,
                created=rfc3339(time.time_ns()),
                owner="",
                annotations=s.annotations,
                config=s.raw,
                cgroups=group.dirs,
            )
            message = sync.receive(channel, "hooks", "ready")
            if message["type"] == "hooks":
                from isola.container.oci import hooks

                state = oci_state(record, "creating", s.raw["ociVersion"])
                hooks.run_all(s.hooks.get("prestart", ()), state, "prestart")
                hooks.run_all(s.hooks.get("createRuntime", ()), state, "createRuntime")
                sync.send(channel, "hooks-done", state=state)
                sync.receive(channel, "ready")
            self.store.write(record)
            if pid_file:
                write_pid_file(os.path.abspath(pid_file), pid)
            return Created(record, group)
        except BaseException:
            for pid in children:
                _kill_quietly(pid)
            if made_group:
                for pid in group.pids():
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    group.destroy()
            _remove_dir(state_dir)
            raise
        finally:
            for end in (channel, child_end, console):
                if end is not None:
                    end.close()
            if dir_fd >= 0:
                os.close(dir_fd)

    @staticmethod
    def _write_maps(pid: int, s: spec.Spec) -> None:
        for name, mappings in (("uid_map", s.uid_mappings), ("gid_map", s.gid_mappings)):
            text = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(text)
            except OSError as exc:
                field = "linux.uidMappings" if name == "uid_map" else "linux.gidMappings"
                raise InvalidSpecError(f"the kernel refused the mapping: {exc.strerror}", field=field) from None

    # --- the life after create ---------------------------------------------------------------------

    def status(self, record: Record) -> str:
        if not record.alive():
            return "stopped"
        if record.cgroups and self.group(record).frozen():
            return "paused"
        return "running" if record.started else "created"

    def state(self, container_id: str) -> dict[str, Any]:
        record = self.store.read(container_id)
        return oci_state(record, self.status(record), record.config.get("ociVersion", spec.OCI_VERSION))

    def start(self, container_id: str) -> Record:
        """Let a created container's init execute the program; reports why if it could not."""
        with self.store.lock(container_id):
            record = self.store.read(container_id)
            status = self.status(record)
            if status != "created":
                raise ConflictError(f"cannot start a container that is {status}")
            _release(self.store.dir(container_id), record.pid)
            record.started = True
            self.store.write(record)
        poststart = spec.parse_hooks(record.config).get("poststart")
        if poststart:
            from isola.container.oci import hooks

            state = oci_state(record, "running", record.config.get("ociVersion", spec.OCI_VERSION))
            hooks.run_all_warn(poststart, state, "poststart")
        return record

    def kill(self, container_id: str, sig: int, all_processes: bool = False) -> None:
        record = self.store.read(container_id)
        status = self.status(record)
        if status == "stopped":
            raise ConflictError(f"container {container_id!r} is not running")
        pids = self.group(record).pids() if all_processes else [record.pid]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def delete(self, container_id: str, force: bool = False) -> None:
        """Undo create: stop what is left (a created container, or with --force a running one), remove the
        cgroup and the state, then run the poststop hooks."""
        with self.store.lock(container_id):
            record = self.store.read(container_id)
            status = self.status(record)
            if status in ("running", "paused") and not force:
                raise ConflictError(f"cannot delete a {status} container; stop it first or use --force")
            group = self.group(record)
            if status != "stopped":
                self._kill_all(record, group, status == "paused")
            group.destroy()
            state = oci_state(record, "stopped", record.config.get("ociVersion", spec.OCI_VERSION))
            _remove_dir(self.store.dir(container_id))
        poststop = spec.parse_hooks(record.config).get("poststop")
        if poststop:
            from isola.container.oci import hooks

            hooks.run_all_warn(poststop, state, "poststop")

    @staticmethod
    def _kill_all(record: Record, group: Group, paused: bool) -> None:
        for pid in [record.pid, *group.pids()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if paused:
            group.freeze(False)
        deadline = time.monotonic() + 10
        while (record.alive() or group.pids()) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(-1, os.WNOHANG)
            time.sleep(0.002)

    def pause(self, container_id: str, frozen: bool) -> None:
        with self.store.lock(container_id):
            record = self.store.read(container_id)
            status = self.status(record)
            want = "running" if frozen else "paused"
            if status != want:
                raise ConflictError(f"cannot {'pause' if frozen else 'resume'} a container that is {status}")
            self.group(record).freeze(frozen)

    def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """Apply new `linux.resources` to a live container and remember them."""
        from isola.container.oci import schema

        schema.validate(resources, "config-linux.json#/linux/properties/resources", prefix="linux.resources")
        with self.store.lock(container_id):
            record = self.store.read(container_id)
            if self.status(record) == "stopped":
                raise ConflictError(f"container {container_id!r} is stopped")
            self.group(record).apply(resources)
            linux = record.config.setdefault("linux", {})
            merged = dict(linux.get("resources", {}))
            for key, value in resources.items():
                merged[key] = (
                    {**merged[key], **value} if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
                )
            linux["resources"] = merged
            self.store.write(record)

    def stats(self, container_id: str) -> dict[str, Any]:
        record = self.store.read(container_id)
        if self.status(record) == "stopped":
            raise ConflictError(f"container {container_id!r} is stopped")
        return {"type": "stats", "id": container_id, "data": self.group(record).stats()}

    def pids(self, container_id: str) -> list[int]:
        record = self.store.read(container_id)
        return self.group(record).pids()


def _release(state_dir: str, pid: int) -> None:
    """Let the created init run its program, and report why if it could not. The init waits in open(2) of
    the state directory's FIFO for a reader; it writes the reason it failed there, and the FIFO closes without
    a word when its execve succeeds (close-on-exec). A pidfd of the init is watched beside the FIFO, so an
    init that dies without a word cannot leave `start` waiting."""
    import select

    path = os.path.join(state_dir, EXEC_FIFO)
    try:
        fifo = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise EngineError("the container's init is not waiting to start (its start FIFO is gone)") from None
    try:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            pidfd = -1
        poller = select.poll()
        poller.register(fifo, select.POLLIN)
        if pidfd >= 0:
            poller.register(pidfd, select.POLLIN)
        while True:
            events = dict(poller.poll())
            if fifo in events or pidfd in events:
                break
        if pidfd >= 0:
            os.close(pidfd)
        os.unlink(path)  # only now: the init may not have opened it yet when `start` comes
        os.set_blocking(fifo, True)
        data = b""
        while chunk := os.read(fifo, 65536):
            data += chunk
        if data:
            sync.raise_error(marshal.loads(data))
        if fifo not in events:
            raise EngineError("the container's init died before it could run the program")
    finally:
        os.close(fifo)


def connect_console(path: str) -> socket.socket:
    from isola.container.oci import console

    return console.connect(path)


def _remove_dir(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))
        os.rmdir(path)


_FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def run(
    runtime: Runtime,
    container_id: str,
    bundle: str,
    *,
    detach: bool,
    pid_file: str | None,
    console_socket: str | None,
    no_pivot: bool,
    preserve_fds: int,
) -> int:
    """create + start; in the foreground, also wait for the container, forwarding signals to it (and its
    terminal to ours), then delete it, and return its exit status as a shell would (128+N for signal N)."""
    console_end = ours = None
    s = runtime.load(bundle)
    if s.process is not None and s.process.terminal and console_socket is None:
        if detach:
            raise UsageError("process.terminal is true and --detach was given: give --console-socket")
        import socket

        ours, console_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    if not detach:
        subreaper()
    created = runtime.create(
        container_id,
        bundle,
        pid_file=pid_file,
        console_socket=console_socket,
        console_end=console_end,
        no_pivot=no_pivot,
        preserve_fds=preserve_fds,
        loaded=s,
    )
    pid = created.record.pid
    try:
        master = None
        if ours is not None:
            from isola.container.oci import console

            master = console.receive_master(ours)
            ours.close()
        if not detach:
            forward_signals(pid)
        runtime.start(container_id)
        if detach:
            return 0
        if master is not None:
            with console.raw_mode(0):
                console.proxy(master)
        status = wait(pid)
    except BaseException:
        with contextlib.suppress(Exception):
            runtime.delete(container_id, force=True)
        raise
    runtime.delete(container_id, force=True)
    return status


def forward_signals(pid: int) -> None:
    """Pass the signals a foreground runtime receives (^C, kill) on to the container's process."""

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for sig in _FORWARDED:
        signal.signal(sig, forward)


def wait(pid: int) -> int:
    """Reap children until the container's init exits (orphans may be reparented to us, the subreaper)."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if reaped == pid:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code
