"""A bundle's config.json: read, checked against the runtime-spec's schema, then against the rules a schema
cannot say (one namespace of each type, mappings only with a user namespace, known capability and rlimit
names), and turned into typed values the container's init works from.

Every rejection is an InvalidSpecError naming the field, and happens in the runtime before anything is created,
so a bad bundle leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import resource

from isola.errors import InvalidSpecError, NotFoundError
from isola.host import caps

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Any

OCI_VERSION = "1.0.2-dev"
"""The runtime-spec version of the schemas Debian ships, which is what isola-oci validates against."""
SCHEMA_DIR = os.environ.get(
    "ISOLA_OCI_SCHEMA_DIR", "/usr/share/gocode/src/github.com/opencontainers/runtime-spec/schema"
)
"""Where the runtime-spec's JSON Schema files are (container/oci/schema.py interprets them)."""
SCHEMA_PACKAGE = "golang-github-opencontainers-specs-dev"
VALIDATED_KEEP = 256
"""How many schema-validated config.json digests a runtime remembers (see `load`)."""

CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")

# The typed records below are plain classes with __slots__: dataclasses cost ~9 ms to import, typing.NamedTuple
# pulls in typing (~2 ms) and compiles a constructor per class, and this module is on the path of every
# `isola-oci create`.


class User:
    __slots__ = ("additional_gids", "gid", "uid", "umask")

    def __init__(
        self, uid: int = 0, gid: int = 0, umask: int | None = None, additional_gids: tuple[int, ...] = ()
    ) -> None:
        self.uid = uid
        self.gid = gid
        self.umask = umask
        self.additional_gids = additional_gids


class Rlimit:
    __slots__ = ("hard", "resource", "soft")

    def __init__(self, resource: int, soft: int, hard: int) -> None:
        self.resource = resource
        self.soft = soft
        self.hard = hard


class Process:
    __slots__ = (
        "args",
        "capabilities",
        "console_size",
        "cwd",
        "env",
        "no_new_privileges",
        "oom_score_adj",
        "rlimits",
        "terminal",
        "user",
    )

    def __init__(
        self,
        args: tuple[str, ...],
        env: tuple[str, ...],
        cwd: str,
        user: User,
        terminal: bool = False,
        console_size: tuple[int, int] | None = None,  # (height, width)
        capabilities: dict[str, int] | None = None,  # set name -> mask; None leaves the runtime's own
        rlimits: tuple[Rlimit, ...] = (),
        no_new_privileges: bool = False,
        oom_score_adj: int | None = None,
    ) -> None:
        self.args = args
        self.env = env
        self.cwd = cwd
        self.user = user
        self.terminal = terminal
        self.console_size = console_size
        self.capabilities = capabilities
        self.rlimits = rlimits
        self.no_new_privileges = no_new_privileges
        self.oom_score_adj = oom_score_adj


class Mount:
    __slots__ = ("destination", "options", "source", "type")

    def __init__(self, destination: str, type: str | None, source: str | None, options: tuple[str, ...]) -> None:
        self.destination = destination
        self.type = type
        self.source = source
        self.options = options


class Namespace:
    __slots__ = ("path", "type")

    def __init__(self, type: str, path: str | None) -> None:
        self.type = type
        self.path = path


class IDMapping:
    __slots__ = ("container_id", "host_id", "size")

    def __init__(self, container_id: int, host_id: int, size: int) -> None:
        self.container_id = container_id
        self.host_id = host_id
        self.size = size


class Hook:
    __slots__ = ("args", "env", "path", "timeout")

    def __init__(self, path: str, args: tuple[str, ...], env: tuple[str, ...], timeout: int | None) -> None:
        self.path = path
        self.args = args
        self.env = env
        self.timeout = timeout


class Device:
    __slots__ = ("file_mode", "gid", "major", "minor", "path", "type", "uid")

    def __init__(
        self,
        path: str,
        type: str,
        major: int,
        minor: int,
        file_mode: int | None,
        uid: int | None,
        gid: int | None,
    ) -> None:
        self.path = path
        self.type = type
        self.major = major
        self.minor = minor
        self.file_mode = file_mode
        self.uid = uid
        self.gid = gid


class Spec:
    """A validated config.json: `raw` is the document itself (kept in the container's state), the rest its
    typed parts. `rootfs` is absolute."""

    __slots__ = (
        "annotations",
        "bundle",
        "cgroups_path",
        "devices",
        "domainname",
        "gid_mappings",
        "hooks",
        "hostname",
        "masked_paths",
        "mounts",
        "namespaces",
        "process",
        "raw",
        "readonly_paths",
        "readonly_root",
        "resources",
        "rootfs",
        "rootfs_propagation",
        "seccomp",
        "sysctl",
        "uid_mappings",
    )

    def __init__(
        self,
        *,
        raw: dict[str, Any],
        bundle: str,
        rootfs: str,
        readonly_root: bool,
        process: Process | None,
        hostname: str | None,
        domainname: str | None,
        mounts: tuple[Mount, ...],
        hooks: dict[str, tuple[Hook, ...]],
        annotations: dict[str, str],
        namespaces: tuple[Namespace, ...],
        uid_mappings: tuple[IDMapping, ...],
        gid_mappings: tuple[IDMapping, ...],
        devices: tuple[Device, ...],
        cgroups_path: str | None,
        resources: dict[str, Any],
        seccomp: dict[str, Any] | None,
        sysctl: dict[str, str],
        masked_paths: tuple[str, ...],
        readonly_paths: tuple[str, ...],
        rootfs_propagation: str | None,
    ) -> None:
        self.raw = raw
        self.bundle = bundle
        self.rootfs = rootfs
        self.readonly_root = readonly_root
        self.process = process
        self.hostname = hostname
        self.domainname = domainname
        self.mounts = mounts
        self.hooks = hooks
        self.annotations = annotations
        self.namespaces = namespaces
        self.uid_mappings = uid_mappings
        self.gid_mappings = gid_mappings
        self.devices = devices
        self.cgroups_path = cgroups_path
        self.resources = resources
        self.seccomp = seccomp
        self.sysctl = sysctl
        self.masked_paths = masked_paths
        self.readonly_paths = readonly_paths
        self.rootfs_propagation = rootfs_propagation

    def namespace(self, kind: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == kind:
                return ns
        return None


def parse_process(raw: dict[str, Any]) -> Process:
    """config.json's `process` (or an exec's process.json), already checked against the schema."""
    args = raw.get("args") or []
    if not args:
        raise InvalidSpecError("needs at least one argument: the program to run", field="process.args")
    cwd = raw["cwd"]
    if not cwd.startswith("/"):
        raise InvalidSpecError(f"{cwd!r} is not an absolute path", field="process.cwd")
    user_raw = raw.get("user", {})
    user = User(
        uid=user_raw.get("uid", 0),
        gid=user_raw.get("gid", 0),
        umask=user_raw.get("umask"),
        additional_gids=tuple(user_raw.get("additionalGids", ())),
    )
    capabilities = None
    if "capabilities" in raw:
        capabilities = {}
        for set_name in CAPABILITY_SETS:
            names = raw["capabilities"].get(set_name, [])
            for i, name in enumerate(names):
                if name not in caps.NUMBERS:
                    raise InvalidSpecError(
                        f"unknown capability {name!r}", field=f"process.capabilities.{set_name}[{i}]"
                    )
            capabilities[set_name] = caps.mask(names)
    rlimits = []
    for i, item in enumerate(raw.get("rlimits", ())):
        number = getattr(resource, item["type"], None)
        if not item["type"].startswith("RLIMIT_") or not isinstance(number, int):
            raise InvalidSpecError(f"unknown rlimit {item['type']!r}", field=f"process.rlimits[{i}].type")
        if item["soft"] > item["hard"]:
            raise InvalidSpecError("soft limit above the hard limit", field=f"process.rlimits[{i}]")
        rlimits.append(Rlimit(number, item["soft"], item["hard"]))
    size = raw.get("consoleSize")
    return Process(
        args=tuple(args),
        env=tuple(raw.get("env", ())),
        cwd=cwd,
        user=user,
        terminal=raw.get("terminal", False),
        console_size=(size["height"], size["width"]) if size else None,
        capabilities=capabilities,
        rlimits=tuple(rlimits),
        no_new_privileges=raw.get("noNewPrivileges", False),
        oom_score_adj=raw.get("oomScoreAdj"),
    )


def _hooks(raw: dict[str, Any]) -> dict[str, tuple[Hook, ...]]:
    hooks = {}
    for stage, entries in raw.items():
        hooks[stage] = tuple(
            Hook(e["path"], tuple(e.get("args", ())), tuple(e.get("env", ())), e.get("timeout")) for e in entries
        )
    return hooks


def parse_hooks(config: dict[str, Any]) -> dict[str, tuple[Hook, ...]]:
    """The hooks of a config already validated (the copy kept in a container's state)."""
    return _hooks(config.get("hooks", {}))


def _namespaces(raw: list[dict[str, Any]]) -> tuple[Namespace, ...]:
    seen = set()
    out = []
    for i, item in enumerate(raw):
        if item["type"] in seen:
            raise InvalidSpecError(f"namespace {item['type']!r} is listed twice", field=f"linux.namespaces[{i}]")
        seen.add(item["type"])
        path = item.get("path") or None
        if path is not None and not os.path.exists(path):
            raise InvalidSpecError(f"{path} does not exist", field=f"linux.namespaces[{i}].path")
        out.append(Namespace(item["type"], path))
    return tuple(out)


def _mappings(raw: list[dict[str, Any]]) -> tuple[IDMapping, ...]:
    return tuple(IDMapping(m["containerID"], m["hostID"], m["size"]) for m in raw)


def parse(raw: Any, bundle: str, *, schema_checked: bool = False) -> Spec:
    """Validate a decoded config.json of the bundle at `bundle` and return its typed form. `schema_checked`
    skips the JSON Schema (the document's bytes are known to pass it), never the rules below it."""
    if not schema_checked:
        from isola.container.oci import schema

        schema.validate(raw)
    linux = raw.get("linux", {})
    root = raw.get("root")
    if root is None:
        raise InvalidSpecError("is required on Linux", field="root")
    rootfs = os.path.normpath(os.path.join(bundle, root["path"]))
    if not os.path.isdir(rootfs):
        raise InvalidSpecError(f"{rootfs} is not a directory", field="root.path")
    mounts = []
    for i, m in enumerate(raw.get("mounts", ())):
        if not m["destination"].startswith("/"):
            raise InvalidSpecError(f"{m['destination']!r} is not an absolute path", field=f"mounts[{i}].destination")
        mounts.append(Mount(m["destination"], m.get("type"), m.get("source"), tuple(m.get("options", ()))))
    namespaces = _namespaces(linux.get("namespaces", ()))
    kinds = {ns.type for ns in namespaces}
    if "mount" not in kinds:
        raise InvalidSpecError(
            "isola-oci needs a mount namespace to build the container's root", field="linux.namespaces"
        )
    new_user = any(ns.type == "user" and ns.path is None for ns in namespaces)
    for key in ("uidMappings", "gidMappings"):
        if linux.get(key) and not new_user:
            raise InvalidSpecError("mappings need a new user namespace in linux.namespaces", field=f"linux.{key}")
    if new_user and not (linux.get("uidMappings") and linux.get("gidMappings")):
        raise InvalidSpecError("a new user namespace needs uidMappings and gidMappings", field="linux")
    for key in ("hostname", "domainname"):
        if raw.get(key) and "uts" not in kinds:
            raise InvalidSpecError("needs a uts namespace in linux.namespaces", field=key)
    devices = tuple(
        Device(
            d["path"], d["type"], d.get("major", 0), d.get("minor", 0), d.get("fileMode"), d.get("uid"), d.get("gid")
        )
        for d in linux.get("devices", ())
    )
    for i, dev in enumerate(devices):
        if dev.type in ("c", "b", "u") and ("major" not in linux["devices"][i] or "minor" not in linux["devices"][i]):
            raise InvalidSpecError("a character or block device needs major and minor", field=f"linux.devices[{i}]")
    for i, path in enumerate(linux.get("maskedPaths", ())):
        if not path.startswith("/"):
            raise InvalidSpecError(f"{path!r} is not an absolute path", field=f"linux.maskedPaths[{i}]")
    return Spec(
        raw=raw,
        bundle=bundle,
        rootfs=rootfs,
        readonly_root=root.get("readonly", False),
        process=parse_process(raw["process"]) if "process" in raw else None,
        hostname=raw.get("hostname"),
        domainname=raw.get("domainname"),
        mounts=tuple(mounts),
        hooks=_hooks(raw.get("hooks", {})),
        annotations=dict(raw.get("annotations", {})),
        namespaces=namespaces,
        uid_mappings=_mappings(linux.get("uidMappings", ())),
        gid_mappings=_mappings(linux.get("gidMappings", ())),
        devices=devices,
        cgroups_path=linux.get("cgroupsPath") or None,
        resources=dict(linux.get("resources", {})),
        seccomp=linux.get("seccomp"),
        sysctl=dict(linux.get("sysctl", {})),
        masked_paths=tuple(linux.get("maskedPaths", ())),
        readonly_paths=tuple(linux.get("readonlyPaths", ())),
        rootfs_propagation=linux.get("rootfsPropagation"),
    )


def load(bundle: str, validated_dir: str | None = None) -> Spec:
    """Read and validate `bundle`/config.json.

    With `validated_dir` (a directory of the runtime's own), the JSON Schema check is remembered: a marker
    named by the sha256 of the document's bytes and of the schema files' identity says they passed, and an
    unchanged config.json is not checked again, nor is the schema interpreter imported or its files read
    (~5 ms of a `run`). The rules beyond the schema always run: they depend on the host (the rootfs,
    namespace paths) as much as on the document."""
    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
        raw = json.loads(data)
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file; is {bundle} a bundle?") from None
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise InvalidSpecError(f"{path}: not JSON: {getattr(exc, 'msg', exc)}{where}") from None
    except OSError as exc:
        raise InvalidSpecError(f"{path}: {exc.strerror}") from None
    marker = _marker(validated_dir, data) if validated_dir else None
    checked = marker is not None and os.path.exists(marker)
    spec = parse(raw, bundle, schema_checked=checked)
    if marker is not None and not checked:
        _remember(marker)
    return spec


def _marker(directory: str, data: bytes) -> str | None:
    """The marker path for `data` checked against the schema files as they are now (None without them)."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # CPython's own; hashlib loads OpenSSL
    except ImportError:  # +3.8 MB of RSS and 3 ms, a third of a `runc run`; _sha256 is _sha2 from 3.12
        from hashlib import sha256
    try:
        st = os.stat(os.path.join(SCHEMA_DIR, "config-schema.json"))
    except OSError:
        return None  # validation will say what is missing
    digest = sha256(f"{SCHEMA_DIR}\0{st.st_mtime_ns}\0{st.st_size}\0".encode() + data).hexdigest()
    return os.path.join(directory, digest)


def _remember(marker: str) -> None:
    """Leave the marker; keep the directory to the newest VALIDATED_KEEP of them. Best effort: a runtime that
    cannot write here validates every time."""
    directory = os.path.dirname(marker)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        names = os.listdir(directory)
        if len(names) > VALIDATED_KEEP:
            paths = sorted((os.path.join(directory, n) for n in names), key=os.path.getmtime)
            for old in paths[: len(paths) - VALIDATED_KEEP // 2]:
                os.unlink(old)
    except OSError:
        pass


_DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default() -> dict[str, Any]:
    """The config.json `isola-oci spec` writes: runc's defaults (a terminal running `sh`, a read-only rootfs,
    pid/network/ipc/uts/mount namespaces, the masked and read-only /proc and /sys paths)."""
    nosuid_noexec_nodev = ["nosuid", "noexec", "nodev"]
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {name: list(_DEFAULT_CAPS) for name in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "isola",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": [*nosuid_noexec_nodev, "mode=1777", "size=65536k"],
            },
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": nosuid_noexec_nodev},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*nosuid_noexec_nodev, "ro"]},
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": [*nosuid_noexec_nodev, "relatime", "ro"],
            },
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
