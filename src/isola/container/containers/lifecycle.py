"""What each `isola container` verb does: run (foreground or detached), stop, kill, rm, exec. The CLI only
parses and prints; everything that must be undone on failure is undone here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from isola.container.containers import bundle, runtime
from isola.container.containers.bundle import RunOptions
from isola.container.containers.monitor import decode
from isola.container.containers.store import Container, ContainerStore, live_status, now
from isola.container.containers.supervise import run_supervised
from isola.container.images import rootfs
from isola.container.images.store import ImageStore
from isola.errors import ConflictError, NotFoundError, UsageError


def prepare(
    store: ContainerStore,
    image_ref: str,
    opts: RunOptions,
    name: str | None,
    auto_remove: bool,
    container_id: str | None = None,
) -> Container:
    """A created container: its record, its overlayfs root mounted, its bundle written. Undone on failure."""
    images = ImageStore()
    image = images.get(image_ref)
    image_config = images.config(image)
    if opts.workdir is not None and not opts.workdir.startswith("/"):
        raise UsageError(f"-w {opts.workdir}: the working directory must be an absolute path")
    c = store.create(
        name,
        container_id,
        image=image_ref,
        image_id=image.id,
        command=opts.command,
        auto_remove=auto_remove,
        tty=opts.tty,
        config=opts.summary(),
    )
    d = store.dir(c.id)
    try:
        root = mount_root(store, c)
        config = bundle.config(image_config, opts, root, c.id)
        (d / "bundle").mkdir()
        (d / "bundle" / "config.json").write_text(json.dumps(config, indent=1))
        with store.update(c.id) as c:
            c.command = config["process"]["args"]
    except BaseException:
        remove_files(store, c)
        raise
    return c


def mount_root(store: ContainerStore, c: Container) -> Path:
    """Mount the container's overlayfs root (its image's layers under its own upper directory), where its
    bundle expects it: at create, and again to run a container that has exited (its changes are kept)."""
    images = ImageStore()
    d = store.dir(c.id)
    rootfs.mount_overlay(images.layer_dirs(images.get(c.image_id)), d / "upper", d / "work", d / "rootfs")
    return d / "rootfs"


def remove_files(store: ContainerStore, c: Container) -> None:
    runtime.delete(c.id)
    rootfs.unmount(store.dir(c.id) / "rootfs")
    store.forget(c.id)


def run_foreground(store: ContainerStore, c: Container, interactive: bool) -> int:
    """Run in this process until the container exits; its status, as docker gives it."""
    try:
        return run_supervised(store, c, foreground=True, interactive=interactive, on_started=lambda err: None)
    except BaseException:
        remove_files(store, c)
        raise


def run_detached(store: ContainerStore, c: Container, *, keep_on_failure: bool = False) -> None:
    """Hand the container to a monitor of its own and return once it runs (or raise why it could not). A
    container that could not start is removed, as `run -d` does; with `keep_on_failure` it stays, exited,
    with why (the engine's instances outlive a failed start, so that their state can say what happened)."""
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "isola.container.containers.monitor", c.id, str(write_end)],
            pass_fds=[write_end],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(write_end)
        write_end = -1
        proc.wait()
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    err = decode(b"".join(chunks))
    if err is None:
        return
    if not keep_on_failure:
        remove_files(store, c)
        raise err
    runtime.delete(c.id)
    rootfs.unmount(store.dir(c.id) / "rootfs")
    with store.update(c.id) as record:
        record.status, record.finished_at, record.error = "exited", now(), err.message
        record.exit_code = err.status if isinstance(err, runtime.CommandError) else 125  # 125: isola's own failure
    raise err


def wait_exited(store: ContainerStore, c: Container, timeout: float) -> bool:
    """Whether the container has exited (its supervisor has recorded it, or its init is gone) within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            current = store.get(c.id)
        except NotFoundError:
            return True  # removed (--rm) meanwhile
        if live_status(current) != "running":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def kill(c: Container, signum: int) -> None:
    if live_status(c) != "running":
        raise ConflictError(f"container {c.name} is not running")
    runtime.call("kill", c.id, str(signum))


def stop(store: ContainerStore, c: Container, timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds, as `docker stop`."""
    if live_status(c) != "running":
        return
    runtime.call("kill", c.id, str(int(signal.SIGTERM)))
    if not wait_exited(store, c, timeout):
        runtime.call("kill", "--all", c.id, str(int(signal.SIGKILL)))
        wait_exited(store, c, 10)


def remove(store: ContainerStore, c: Container, force: bool) -> None:
    if live_status(c) == "running":
        if not force:
            raise ConflictError(
                f"cannot remove container {c.name}: it is running", hint="stop it first, or use --force"
            )
        runtime.call("kill", "--all", c.id, str(int(signal.SIGKILL)))
        wait_exited(store, c, 10)
    remove_files(store, c)


def update_limits(store: ContainerStore, c: Container, memory: int, cpus: float) -> None:
    """`docker update` of memory and CPUs: into a running container's cgroups through `isola-oci update`, and
    into its bundle and record, so that a later start has them too."""
    limits = bundle.limits(memory, cpus)
    d = store.dir(c.id)
    with store.update(c.id) as record:
        if live_status(record) == "running":
            request = d / "limits.json"
            request.write_text(json.dumps(limits))
            try:
                runtime.call("update", "--resources", str(request), c.id)
            finally:
                request.unlink(missing_ok=True)
        path = d / "bundle" / "config.json"
        config = json.loads(path.read_text())
        config["linux"]["resources"].update(limits)
        path.write_text(json.dumps(config, indent=1))
        record.config.update(Memory=memory, NanoCpus=int(cpus * 1e9))


def exec_in(
    c: Container,
    command: list[str],
    *,
    tty: bool,
    env: list[str],
    workdir: str | None,
    user: str | None,
    stdio: tuple[int | None, int | None, int | None] = (None, None, None),
) -> int:
    """Run `command` in the running container through `isola-oci exec`; its status, or the runtime's error.
    `stdio` (stdin, stdout, stderr file descriptors) is the caller's own by default, as `container exec`
    wants; the engine passes files to capture the output."""
    if live_status(c) != "running":
        raise ConflictError(f"container {c.name} is not running")
    store_dir = ContainerStore().dir(c.id)
    log = runtime.tmp_log(store_dir)
    args = ["exec", *(["--tty"] if tty else [])]
    for item in env:
        args += ["--env", item]
    if workdir:
        args += ["--cwd", workdir]
    if user:
        ids = bundle.user_ids(user, store_dir / "rootfs")  # names resolved in the container's own /etc/passwd
        args += ["--user", f"{ids['uid']}:{ids['gid']}"]
    try:
        stdin, stdout, stderr = stdio
        done = subprocess.run(
            runtime.argv(*args, c.id, *command, log=log), stdin=stdin, stdout=stdout, stderr=stderr, check=False
        )
        message = runtime.logged_error(log)
    finally:
        log.unlink(missing_ok=True)
    if message is not None:
        raise runtime.failure(message)
    return done.returncode
