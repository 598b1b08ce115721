"""The process that owns a running container, from `create` to its exit status — `isola container run` itself
in the foreground, the monitor for `run -d` — in the way conmon owns a container for podman:

- it is a child subreaper, so the container's init, orphaned when `isola-oci create` exits, becomes its child
  and its exit status is known exactly (waitpid), not guessed from a vanished pid;
- it holds the read ends of the container's stdout and stderr (or the terminal's master, received over a
  console socket), writes everything to the container's log and, in the foreground, to its own terminal;
- in the foreground it passes the signals it receives on to the container, as `docker run` does;
- when the init exits it records the status, deletes the runtime's container (cgroups and all) and unmounts the
  root; with `--rm` it removes the container altogether.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import subprocess
import termios
import time
import tty
import uuid
from collections.abc import Callable

from isola.container.containers import runtime
from isola.container.containers.logs import LogWriter, write_all
from isola.container.containers.store import Container, ContainerStore, now, process_start
from isola.container.images import rootfs
from isola.errors import EngineError, IsolaError
from isola.host import libc, pty

PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
DRAIN_SECONDS = 2.0
"""How long output is still read after the init exits (the pid namespace's other processes die with it)."""


class Supervisor:
    def __init__(self, store: ContainerStore, container: Container, *, foreground: bool, interactive: bool) -> None:
        self.store = store
        self.c = container
        self.dir = store.dir(container.id)
        self.foreground = foreground
        self.interactive = interactive
        self.pid = 0
        self._fds: dict[int, str] = {}
        self._master = -1

    # --- starting ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """create + start; on failure the runtime's container is gone and the error raised."""
        libc.call("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        log = runtime.tmp_log(self.dir)
        pid_file = self.dir / "init.pid"
        extra: list[str] = []
        listener = None
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        stdin = stdout = stderr = devnull
        ours: list[int] = []
        if self.c.tty:
            sock = f"/tmp/isola-console-{uuid.uuid4().hex[:12]}.sock"  # short: unix socket paths stop at 108
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            listener.bind(sock)
            listener.listen(1)
            extra = ["--console-socket", sock]
        else:
            out_r, stdout = os.pipe()
            err_r, stderr = os.pipe()
            ours = [stdout, stderr]
            self._fds = {out_r: "stdout", err_r: "stderr"}
            if self.foreground and self.interactive:
                stdin = 0
        try:
            args = ["create", "--bundle", str(self.dir / "bundle"), "--pid-file", str(pid_file), *extra, self.c.id]
            proc = subprocess.Popen(runtime.argv(*args, log=log), stdin=stdin, stdout=stdout, stderr=stderr)
            if listener is not None:
                self._master = _receive_master(listener, proc)
            code = proc.wait()
            for fd in ours:
                os.close(fd)
            ours = []
            if code != 0:
                raise runtime.failure(runtime.logged_error(log) or f"create exited with status {code}")
            self.pid = int(pid_file.read_text())
            with self.store.update(self.c.id) as c:
                c.pid, c.pid_start, c.status = self.pid, process_start(self.pid) or 0, "created"
            runtime.call("start", self.c.id)
            with self.store.update(self.c.id) as c:
                c.status, c.started_at, c.monitor_pid = "running", now(), os.getpid()
            self.c = c
        except BaseException:
            runtime.delete(self.c.id)
            self._close_all()
            if self.pid:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, 0)
            raise
        finally:
            for fd in ours:
                os.close(fd)
            os.close(devnull)
            if listener is not None:
                with contextlib.suppress(OSError):
                    os.unlink(listener.getsockname())
                listener.close()
            log.unlink(missing_ok=True)

    # --- running ----------------------------------------------------------------------------------------

    def wait(self) -> int:
        """Pump output until the init exits; record how it ended, clean up, and return docker's status."""
        writer = LogWriter(self.store.log_path(self.c.id))
        if self.foreground:
            for signum in FORWARDED:
                signal.signal(signum, self._forward)
        raw = self.foreground and self.c.tty and self.interactive and os.isatty(0)
        saved = termios.tcgetattr(0) if raw else None
        try:
            if self._master >= 0:
                if self.foreground and os.isatty(1):
                    with contextlib.suppress(OSError):
                        pty.set_size(self._master, *pty.get_size(1))
                self._fds = {self._master: "stdout"}
                if raw:
                    tty.setraw(0)
            status = self._pump(writer, stdin_to_master=raw or (self.foreground and self.c.tty and self.interactive))
        finally:
            if saved is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
            writer.close()
            self._close_all()
        self.finish(status)
        return status

    def _forward(self, signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def _pump(self, writer: LogWriter, *, stdin_to_master: bool) -> int:
        status: int | None = None
        ended = 0.0
        watch_stdin = stdin_to_master and self._master >= 0
        while self._fds:
            wanted = list(self._fds) + ([0] if watch_stdin else [])
            try:
                ready, _, _ = select.select(wanted, [], [], 0.2)
            except InterruptedError:
                ready = []
            for fd in ready:
                if fd == 0:
                    data = os.read(0, 65536)
                    if data:
                        write_all(self._master, data)
                    else:
                        watch_stdin = False
                    continue
                try:
                    data = os.read(fd, 65536)
                except OSError as exc:  # a terminal's master reads EIO once the last slave is closed
                    if exc.errno != errno.EIO:
                        raise
                    data = b""
                if not data:
                    os.close(fd)
                    del self._fds[fd]
                    if fd == self._master:
                        self._master = -1
                    continue
                stream = self._fds[fd]
                writer.write(stream, data)
                if self.foreground:
                    write_all(2 if stream == "stderr" else 1, data)
            if status is None:
                status = self._reap(os.WNOHANG)
                ended = time.monotonic()
            elif time.monotonic() - ended > DRAIN_SECONDS:
                break
        while status is None:
            status = self._reap(0)
        return status

    def _reap(self, flags: int) -> int | None:
        try:
            pid, raw = os.waitpid(self.pid, flags)
        except ChildProcessError:  # not ours after all (we were not its subreaper): poll the pid instead
            if process_start(self.pid) == self.c.pid_start and flags & os.WNOHANG:
                return None
            while flags == 0 and process_start(self.pid) == self.c.pid_start:
                time.sleep(0.05)
            return 255
        if pid == 0:
            return None
        code = os.waitstatus_to_exitcode(raw)
        return 128 - code if code < 0 else code

    def finish(self, status: int) -> None:
        runtime.delete(self.c.id)
        rootfs.unmount(self.dir / "rootfs")
        with self.store.update(self.c.id) as c:
            c.status, c.exit_code, c.finished_at = "exited", status, now()
        if c.auto_remove:
            self.store.forget(self.c.id)

    def _close_all(self) -> None:
        for fd in list(self._fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = {}
        if self._master >= 0:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = -1


def _receive_master(listener: socket.socket, proc: subprocess.Popen[bytes]) -> int:
    """The terminal's master, sent by isola-oci over the console socket (SCM_RIGHTS) during create."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([listener], [], [], 0.05)
        if ready:
            conn, _ = listener.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
            if fds:
                return fds[0]
            raise EngineError("isola-oci sent no terminal over the console socket")
        if proc.poll() is not None:
            return -1  # create failed before the terminal existed; its exit status says why
    raise EngineError("isola-oci did not send the container's terminal within 30 s")


def run_supervised(
    store: ContainerStore,
    container: Container,
    *,
    foreground: bool,
    interactive: bool,
    on_started: Callable[[IsolaError | None], None],
) -> int:
    """Start the container, report (on_started(None), or the error, which is also raised), then wait for it."""
    sup = Supervisor(store, container, foreground=foreground, interactive=interactive)
    try:
        sup.start()
    except IsolaError as err:
        on_started(err)
        raise
    on_started(None)
    return sup.wait()
