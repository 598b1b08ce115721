"""`isola-oci exec`: another process in a running container, as runc does it — join the namespaces of the
container's init through /proc/PID/ns, join its cgroups, take on the process's credentials, execve.

    runtime ──fork──▶ joiner: added to the container's cgroups, setns into each namespace (user first, mount
                      last) ──fork──▶ the process (a fork is needed for the PID namespace to apply):
                      terminal, credentials, capabilities, seccomp, execve

The process is described by --process FILE (a config.json `process`) or by the arguments, with the rest
taken from the container's own config.json and changed by --env, --cwd, --user, --cap, --tty.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from types import SimpleNamespace
from typing import Any, NoReturn

from isola.cgroups.group import Group
from isola.container.oci import init, schema, spec, sync
from isola.container.oci import runtime as rt
from isola.errors import ConflictError, InvalidSpecError, UsageError
from isola.host import libc, namespaces


def _process(args: SimpleNamespace, config: dict[str, Any]) -> spec.Process:
    if args.process:
        try:
            with open(args.process) as f:
                raw = json.load(f)
        except OSError as exc:
            raise UsageError(f"--process {args.process}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise InvalidSpecError(f"--process {args.process}: not JSON: {exc.msg}") from None
    else:
        if not args.command:
            raise UsageError("exec needs a command, or --process FILE")
        raw = dict(config.get("process") or {"cwd": "/"})
        raw["args"] = args.command
        raw["terminal"] = args.tty
        raw.pop("consoleSize", None)
        if args.env:
            env = dict(item.partition("=")[::2] for item in raw.get("env", ()))
            env.update(item.partition("=")[::2] for item in args.env)
            raw["env"] = [f"{k}={v}" for k, v in env.items()]
        if args.cwd:
            raw["cwd"] = args.cwd
        if args.user:
            uid, _, gid = args.user.partition(":")
            if not uid.isdigit() or (gid and not gid.isdigit()):
                raise UsageError(f"--user {args.user}: give UID[:GID] as numbers")
            raw["user"] = {"uid": int(uid), "gid": int(gid or 0)}
        if args.cap:
            sets = dict(raw.get("capabilities") or {})
            for name in ("bounding", "effective", "permitted"):
                sets[name] = sorted({*sets.get(name, ()), *args.cap})
            raw["capabilities"] = sets
        if args.no_new_privs:
            raw["noNewPrivileges"] = True
    schema.validate(raw, "config-schema.json#/properties/process", prefix="process")
    return spec.parse_process(raw)


def main(runtime: rt.Runtime, args: SimpleNamespace) -> int:
    record = runtime.store.read(args.id)
    status = runtime.status(record)
    if status not in ("created", "running"):
        raise ConflictError(f"cannot exec in a container that is {status}")
    process = _process(args, record.config)
    if process.terminal and args.detach and not args.console_socket:
        raise UsageError("--tty with --detach needs --console-socket")
    seccomp_filter = None
    profile = record.config.get("linux", {}).get("seccomp")
    if profile is not None:
        from isola.container.oci import seccomp

        seccomp_filter = seccomp.build(profile)
    kinds = [ns["type"] for ns in record.config.get("linux", {}).get("namespaces", ())]
    ours = console_end = None
    if process.terminal:
        if args.console_socket:
            console_end = rt.connect_console(args.console_socket)
        else:
            ours, console_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    if not args.detach:
        rt.subreaper()
    channel, child_end = sync.pair()
    joiner = os.fork()
    if joiner == 0:
        channel.close()
        _join(
            record.pid, kinds, runtime.group(record), child_end, console_end, process, seccomp_filter, args.preserve_fds
        )
    child_end.close()
    if console_end is not None:
        console_end.close()
    try:
        sync.send(channel, "go")
        pid = int(sync.receive(channel, "pid")["pid"])
        os.waitpid(joiner, 0)
        try:
            sync.wait_exec(channel)
        except BaseException:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.kill(joiner, 9)
        raise
    finally:
        channel.close()
    if args.pid_file:
        rt.write_pid_file(os.path.abspath(args.pid_file), pid)
    if args.detach:
        return 0
    rt.forward_signals(pid)
    if ours is not None:
        from isola.container.oci import console

        master = console.receive_master(ours)
        with console.raw_mode(0):
            console.proxy(master)
    return rt.wait(pid)


def _join(
    init_pid: int,
    kinds: list[str],
    group: Group,
    channel: sync.Channel,
    console_end: socket.socket | None,
    process: spec.Process,
    seccomp_filter: Any,
    preserve_fds: int,
) -> NoReturn:
    """The joiner (first child): into the container's namespaces, then fork the process itself."""
    code = 1
    try:
        sync.receive(channel, "go")
        group.join_self()
        fds = {kind: os.open(namespaces.proc_path(init_pid, kind), os.O_RDONLY | os.O_CLOEXEC) for kind in kinds}
        for kind in namespaces.JOIN_ORDER:
            if kind in fds:
                libc.setns(fds[kind], namespaces.flag(kind))
        pid = os.fork()
        if pid == 0:
            _process_main(channel, console_end, process, seccomp_filter, preserve_fds)
        sync.send(channel, "pid", pid=pid)
        code = 0
    except BaseException as exc:
        sync.send_error(channel, exc)
    os._exit(code)


def _process_main(
    channel: sync.Channel,
    console_end: socket.socket | None,
    process: spec.Process,
    seccomp_filter: Any,
    preserve_fds: int,
) -> NoReturn:
    try:
        libc.call("close_range", 3 + preserve_fds, 0xFFFF_FFFF, 1 << 2)
        os.chdir("/")
        if process.terminal and console_end is not None:
            init.terminal(console_end, process, console_device=False)
        env = init.environment(process)
        program = init.lookup(process.args[0], env)
        import resource

        for limit in process.rlimits:
            resource.setrlimit(limit.resource, (limit.soft, limit.hard))
        init.become(process, seccomp_filter)
        os.execve(program, list(process.args), env)
    except BaseException as exc:
        sync.send_error(channel, exc)
    os._exit(127)
