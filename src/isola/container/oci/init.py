"""The container's side of `create`: the processes the runtime forks, which end in the container's program.

    runtime ──fork──▶ stage 1: joins the cgroups and existing namespaces, makes the user namespace (the
                      runtime writes its maps), unshares the rest
            ──fork──▶ init (pid 1 of a new PID namespace): mounts, devices, pivot_root, sysctls ... then waits
                      on the start socket
          ──`start`──▶ credentials, capabilities, seccomp, execve

Two forks because unshare(CLONE_NEWPID) only moves the *children* of the caller into the new PID namespace.
The init tells the runtime it is ready and blocks in open(2) of the FIFO in the container's state directory
(reached through a descriptor of that directory, which outlives pivot_root) until `start` opens it for
reading; then it executes the program. Its end is close-on-exec, so `start` reads end-of-file when the exec
succeeded and the reason when anything failed.

This code runs in forked children of the runtime: it never returns into the runtime's code (os._exit), and it
imports nothing the runtime has not imported already, except hooks and the pty module when config.json asks.
"""

from __future__ import annotations

import contextlib
import marshal
import os

from isola.container.oci import rootfs, sync
from isola.container.oci.state import EXEC_FIFO
from isola.errors import InvalidSpecError, NotFoundError
from isola.host import caps, libc, namespaces

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import NoReturn

    from isola.cgroups.group import Group
    from isola.container.oci.spec import Process, Spec
    from isola.host.seccomp_filter import Filter

_CLOSE_RANGE_CLOEXEC = 1 << 2


class Context:
    """What the runtime hands its children: the validated spec and the descriptors and paths they use."""

    def __init__(
        self,
        spec: Spec,
        channel: sync.Channel,
        state_dir: int,
        console: socket.socket | None,
        group: Group,
        no_pivot: bool,
        preserve_fds: int,
        seccomp: Filter | None,
    ) -> None:
        self.spec = spec
        self.seccomp = seccomp
        self.channel = channel
        self.state_dir = state_dir  # an O_PATH descriptor of the container's state directory
        self.console = console
        self.group = group
        self.no_pivot = no_pivot
        self.preserve_fds = preserve_fds


def preload(spec: Spec) -> None:
    """Import now what the init may need after pivot_root, where the container's root has no isola to import:
    the terminal's modules, the hooks runner, the traceback module of ISOLA_DEBUG's error reports."""
    if spec.process is not None and spec.process.terminal:
        from isola.container.oci import console  # noqa: F401
    if spec.hooks:
        from isola.container.oci import hooks  # noqa: F401
    if os.environ.get("ISOLA_DEBUG"):
        import traceback  # noqa: F401


def stage1(ctx: Context) -> NoReturn:
    """First child: namespaces. Sends the init's pid (as the runtime sees it) and exits."""
    code = 1
    try:
        sync.receive(ctx.channel, "go")
        preload(ctx.spec)
        # Into the cgroups first: while still host root (a new user namespace's root may not write them), and
        # before the cgroup namespace takes its root from here.
        ctx.group.join_self()
        spec = ctx.spec
        joins = {ns.type: os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC) for ns in spec.namespaces if ns.path}
        if "user" in joins:
            libc.setns(joins["user"], namespaces.flag("user"))
        elif spec.namespace("user") is not None:
            libc.unshare(namespaces.flag("user"))
            sync.send(ctx.channel, "userns")
            sync.receive(ctx.channel, "mapped")
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        for kind in namespaces.JOIN_ORDER:
            if kind in joins and kind != "user":
                libc.setns(joins[kind], namespaces.flag(kind))
        flags = 0
        for ns in spec.namespaces:
            if ns.path is None and ns.type != "user":
                flags |= namespaces.flag(ns.type)
        if flags:
            libc.unshare(flags)
        pid = os.fork()
        if pid == 0:
            init(ctx)
        sync.send(ctx.channel, "pid", pid=pid)
        code = 0
    except BaseException as exc:
        sync.send_error(ctx.channel, exc)
    os._exit(code)


def init(ctx: Context) -> NoReturn:
    """Second child, the container's init: everything config.json asks for, then wait for `start`."""
    fifo = -1
    try:
        sync.receive(ctx.channel, "continue")  # stage 1 has told the runtime our pid: the channel is ours now
        spec = ctx.spec
        process = spec.process
        assert process is not None  # the runtime refuses a config without one
        # Only the caller's stdio (and --preserve-fds) may reach the container: mark the rest close-on-exec.
        libc.call("close_range", 3 + ctx.preserve_fds, 0xFFFF_FFFF, _CLOSE_RANGE_CLOEXEC)
        for fd in range(3, 3 + ctx.preserve_fds):
            os.set_inheritable(fd, True)
        rootfs.prepare(spec, ctx.group.dirs)
        if spec.hooks.get("prestart") or spec.hooks.get("createRuntime") or spec.hooks.get("createContainer"):
            sync.send(ctx.channel, "hooks")
            state = sync.receive(ctx.channel, "hooks-done")["state"]
            from isola.container.oci import hooks

            hooks.run_all(spec.hooks.get("createContainer", ()), state, "createContainer")
        rootfs.enter(spec, ctx.no_pivot)
        rootfs.finish(spec)
        if not os.path.isdir(process.cwd):
            with contextlib.suppress(OSError):  # a read-only root: the chdir before exec will say so
                os.makedirs(process.cwd)
        if spec.hostname is not None:
            namespaces.sethostname(spec.hostname)
        if spec.domainname is not None:
            namespaces.setdomainname(spec.domainname)
        import resource

        for limit in process.rlimits:
            resource.setrlimit(limit.resource, (limit.soft, limit.hard))
        if process.oom_score_adj is not None:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(process.oom_score_adj))
        if process.terminal:
            if ctx.console is None:
                raise InvalidSpecError("a terminal needs --console-socket", field="process.terminal")
            terminal(ctx.console, process, console_device=True)
        env = environment(process)
        program = lookup(process.args[0], env)
        sync.send(ctx.channel, "ready")
        ctx.channel.close()
        fifo = os.open(EXEC_FIFO, os.O_WRONLY | os.O_CLOEXEC, dir_fd=ctx.state_dir)  # until `start` opens it
        if spec.hooks.get("startContainer"):
            import json

            from isola.container.oci import hooks
            from isola.container.oci.state import Record, oci_state

            with open(os.open("state.json", os.O_RDONLY | os.O_CLOEXEC, dir_fd=ctx.state_dir), "rb") as f:
                record = Record.from_json(json.loads(f.read()))
            state = oci_state(record, "created", spec.raw["ociVersion"])
            hooks.run_all(spec.hooks["startContainer"], state, "startContainer")
        os.close(ctx.state_dir)
        become(process, ctx.seccomp)
        os.execve(program, list(process.args), env)
    except BaseException as exc:
        if fifo >= 0:
            with contextlib.suppress(OSError):
                os.write(fifo, marshal.dumps(sync.error_message(exc)))
        else:
            sync.send_error(ctx.channel, exc)
    os._exit(1)


def terminal(console_socket: socket.socket, process: Process, *, console_device: bool) -> None:
    """A pty from the container's own devpts: the master goes to the console socket, the slave becomes the
    controlling terminal and stdio (and, for the container's first process, /dev/console)."""
    from isola.host import pty  # loaded by `preload`, with the console module

    master, slave, name = pty.open_pty("/dev/ptmx")
    if process.console_size is not None:
        pty.set_size(slave, *process.console_size)
    if console_device:
        from isola.host import mount

        if not os.path.lexists("/dev/console"):
            os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        mount.bind(name, "/dev/console", mount.MS_BIND)
    from isola.container.oci import console

    console.send_master(console_socket, master, name)
    console_socket.close()
    os.close(master)
    pty.make_controlling(slave)
    if slave > 2:
        os.close(slave)


def environment(process: Process) -> dict[str, str]:
    env = {}
    for item in process.env:
        key, _, value = item.partition("=")
        env[key] = value
    if "HOME" not in env:
        env["HOME"] = _home(process.user.uid)
    return env


def _home(uid: int) -> str:
    """The user's home directory from the container's /etc/passwd, else / (as runc does)."""
    try:
        with open("/etc/passwd") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"


def lookup(name: str, env: dict[str, str]) -> str:
    """Find the program in the container's PATH now, so that `create` (not a later `start`) reports it."""
    if "/" in name:
        if not os.path.exists(name):
            raise NotFoundError(f'exec: "{name}": no such file or directory')
        return name
    for directory in env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise NotFoundError(f'exec: "{name}": executable file not found in $PATH')


def become(process: Process, seccomp: Filter | None) -> None:
    """Take on the process's credentials: groups and ids, the five capability sets, no_new_privs, the seccomp
    filter. Without no_new_privs the filter is loaded while still privileged (loading needs CAP_SYS_ADMIN then),
    so it must allow what follows (setuid, capset, execve), as with runc."""
    if seccomp is not None and not process.no_new_privileges:
        seccomp.load()
    wanted = process.capabilities
    if wanted is not None:
        caps.drop_bounding(wanted["bounding"])
        caps.keep_caps(True)
    user = process.user
    os.setgroups(list(user.additional_gids))
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    if wanted is not None:
        caps.capset(wanted["effective"], wanted["permitted"], wanted["inheritable"])
        # the kernel raises only what is permitted and inheritable; runc skips the rest with a warning
        caps.set_ambient(wanted["ambient"] & wanted["permitted"] & wanted["inheritable"])
        caps.keep_caps(False)
    os.umask(user.umask if user.umask is not None else 0o022)
    os.chdir(process.cwd)
    if process.no_new_privileges:
        caps.no_new_privs()
        if seccomp is not None:
            seccomp.load()
