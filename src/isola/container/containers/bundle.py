"""An OCI bundle for one container: config.json made from the image's config (image-spec `conversion.md`:
Entrypoint + Cmd → args, Env, WorkingDir, User) and `run`'s flags, with the default confinement of `profile`.

The flags are parsed here, into `RunOptions`, so that every bad value is one UsageError naming the flag.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isola.container.containers import profile
from isola.errors import NotFoundError, UsageError
from isola.host.mount import resolve_in

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD = 100_000
MIN_MEMORY = 6 * 1024 * 1024  # docker's floor: below it the container cannot even start its program
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgt]?)b?$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass
class RunOptions:
    command: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    cpus: float | None = None
    memory: int | None = None
    pids_limit: int | None = None
    network: str = "none"
    tty: bool = False
    interactive: bool = False
    seccomp: bool = True

    def summary(self) -> dict[str, Any]:
        """What `inspect` shows as the container's host configuration."""
        return {
            "Env": self.env,
            "Binds": self.volumes,
            "WorkingDir": self.workdir,
            "User": self.user,
            "NanoCpus": int(self.cpus * 1e9) if self.cpus else 0,
            "Memory": self.memory or 0,
            "PidsLimit": self.pids_limit or 0,
            "NetworkMode": self.network,
            "Tty": self.tty,
            "OpenStdin": self.interactive,
            "SecurityOpt": [] if self.seccomp else ["seccomp=unconfined"],
        }


def parse_memory(text: str) -> int:
    """`--memory 64m` → bytes (b, k, m, g, t; docker's units are binary)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise UsageError(f"--memory {text!r}: give a size such as 64m or 1g")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < MIN_MEMORY:
        raise UsageError(f"--memory {text}: the minimum memory limit is 6m")
    return value


def parse_cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--cpus {text!r}: give a number of CPUs such as 0.5 or 2") from None
    count = os.cpu_count() or 1
    if not math.isfinite(value) or not 0.01 <= value <= count:
        raise UsageError(f"--cpus {text}: the range of CPUs is from 0.01 to {count}")
    return value


def parse_security_opt(values: tuple[str, ...]) -> bool:
    """`--security-opt seccomp=unconfined` turns the default seccomp profile off; whether it stays on."""
    seccomp = True
    for value in values:
        if value in ("seccomp=unconfined", "seccomp:unconfined"):
            seccomp = False
        else:
            raise UsageError(f"--security-opt {value!r}: only seccomp=unconfined is supported")
    return seccomp


def _env(image_env: list[str], flags: list[str], tty: bool, hostname: str) -> list[str]:
    env: dict[str, str] = {}
    for item in [DEFAULT_PATH, *image_env, f"HOSTNAME={hostname}", *(["TERM=xterm"] if tty else [])]:
        key, _, value = item.partition("=")
        env[key] = value
    for item in flags:
        key, eq, value = item.partition("=")
        if not key or " " in key:
            raise UsageError(f"-e {item!r}: give KEY=VALUE")
        if eq:
            env[key] = value
        elif key in os.environ:  # docker: `-e KEY` passes the caller's value on
            env[key] = os.environ[key]
    return [f"{k}={v}" for k, v in env.items()]


def _volume(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise UsageError(f"-v {text!r}: give HOST:CONTAINER[:ro]")
    host, target = parts[0], parts[1]
    if not os.path.isabs(host) or not os.path.isabs(target):
        raise UsageError(f"-v {text!r}: both paths must be absolute")
    if not os.path.exists(host):
        raise NotFoundError(f"-v {text}: bind source path {host} does not exist")
    options = ["rbind", "rprivate"] + (["ro"] if len(parts) == 3 and parts[2] == "ro" else [])
    return {"destination": target, "type": "bind", "source": os.path.realpath(host), "options": options}


def _lookup(rootfs: Path, file: str, name: str, field_index: int) -> tuple[int, int] | None:
    """(id, gid) of user or group `name` from the container's /etc/passwd or /etc/group, read through
    resolve_in so that a symlink in the image cannot make isola read a file of the host."""
    try:
        with open(resolve_in(str(rootfs), file)) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) > field_index and fields[0] == name:
                    return int(fields[2]), int(fields[3]) if field_index == 3 else int(fields[2])
    except (OSError, ValueError):
        return None
    return None


def user_ids(spec: str, rootfs: Path) -> dict[str, int]:
    user, _, group = spec.partition(":")
    if user.isdigit():
        uid, gid = int(user), 0
        found = None
    else:
        found = _lookup(rootfs, "/etc/passwd", user, 3)
        if found is None:
            raise NotFoundError(f"--user {spec}: no user {user!r} in the image's /etc/passwd")
        uid, gid = found
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = _lookup(rootfs, "/etc/group", group, 2)
            if g is None:
                raise NotFoundError(f"--user {spec}: no group {group!r} in the image's /etc/group")
            gid = g[0]
    return {"uid": uid, "gid": gid}


def _mounts(network: str, volumes: list[str]) -> list[dict[str, Any]]:
    nosuid = ["nosuid", "noexec", "nodev"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": nosuid},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755"]},
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": [*nosuid, "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": nosuid},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*nosuid, "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": [*nosuid, "relatime", "ro"]},
        *(_volume(v) for v in volumes),
    ]


def limits(memory: int | None, cpus: float | None) -> dict[str, Any]:
    """The memory and CPU part of `linux.resources`, at create and for `isola-oci update` of a running container
    alike: memory + swap equal to the limit (no swap beyond it), CPUs as a CFS quota per 100 ms."""
    found: dict[str, Any] = {}
    if memory:
        found["memory"] = {"limit": memory, "swap": memory}
    if cpus:
        found["cpu"] = {"quota": int(cpus * CPU_PERIOD), "period": CPU_PERIOD}
    return found


def config(image_config: dict[str, Any], opts: RunOptions, rootfs: Path, container_id: str) -> dict[str, Any]:
    """config.json for a container of this image with these options."""
    cfg = image_config.get("config") or {}
    entrypoint = list(cfg.get("Entrypoint") or [])
    args = entrypoint + (opts.command or list(cfg.get("Cmd") or []))
    if not args:
        raise UsageError("no command given, and the image has no Cmd or Entrypoint")
    hostname = container_id[:12]
    user_spec = opts.user or cfg.get("User") or "0"
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if opts.network == "none":
        namespaces.append({"type": "network"})
    elif opts.network != "host":
        raise UsageError(f"--network {opts.network!r}: only none and host are supported")
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}], **limits(opts.memory, opts.cpus)}
    if opts.pids_limit:
        resources["pids"] = {"limit": opts.pids_limit}
    caps = list(profile.CAPABILITIES)
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": f"/isola/{container_id}",
        "maskedPaths": list(profile.MASKED_PATHS),
        "readonlyPaths": list(profile.READONLY_PATHS),
    }
    if opts.seccomp:
        linux["seccomp"] = profile.seccomp()
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": opts.tty,
            "user": user_ids(user_spec, rootfs),
            "args": args,
            "env": _env(list(cfg.get("Env") or []), opts.env, opts.tty, hostname),
            "cwd": opts.workdir or cfg.get("WorkingDir") or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": False,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": _mounts(opts.network, opts.volumes),
        "linux": linux,
        "annotations": {"io.isola.container.id": container_id},
    }
