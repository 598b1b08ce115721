"""Building the container's filesystem view inside its new mount namespace: the rootfs made a mount point,
config.json's mounts placed under it, the default device nodes and /dev links, then pivot_root (or, with
--no-pivot, MS_MOVE and chroot), and last the masked and read-only paths, sysctls and a read-only root.

Runs in the container's init, as root, before any of the container's own code: every destination is resolved
inside the rootfs (`mount.resolve_in`), so a rootfs whose /proc or /dev is a symlink to a host path cannot make
a mount land outside it.
"""

from __future__ import annotations

import contextlib
import os
import stat

from isola.container.oci.spec import Device, Mount, Spec
from isola.errors import InvalidSpecError
from isola.host import mount

# runtime-spec "Default Devices": path, major, minor
DEFAULT_DEVICES = (
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
)
DEV_LINKS = (
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
)


def _make_target(path: str, directory: bool) -> None:
    if directory:
        os.makedirs(path, exist_ok=True)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.lexists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def mount_one(spec: Spec, m: Mount, index: int, cgroup_dirs: dict[str, str]) -> None:
    """Place one entry of config.json's `mounts` under the rootfs."""
    target = mount.resolve_in(spec.rootfs, m.destination)
    options = mount.parse_options(list(m.options))
    if m.type == "bind" or options.is_bind:
        if not m.source:
            raise InvalidSpecError("a bind mount needs a source", field=f"mounts[{index}].source")
        source = os.path.join(spec.bundle, m.source)
        if not os.path.exists(source):
            raise InvalidSpecError(f"{source} does not exist", field=f"mounts[{index}].source")
        _make_target(target, os.path.isdir(source))
        mount.bind(source, target, options.flags | mount.MS_BIND)
    elif m.type == "cgroup":
        _mount_cgroups(target, options.flags, cgroup_dirs)
    else:
        if not m.type:
            raise InvalidSpecError("a mount that is not a bind mount needs a type", field=f"mounts[{index}].type")
        _make_target(target, True)
        mount.mount(m.source or m.type, target, m.type, options.flags & ~mount.MS_REMOUNT, options.data)
    for change in options.propagation:
        mount.set_propagation(target, change)


def _mount_cgroups(target: str, flags: int, cgroup_dirs: dict[str, str]) -> None:
    """The container's own cgroups at `target`: a tmpfs with one bind mount per hierarchy (each named after the
    host's mountpoint: cpu, memory, unified ...), or on a pure v2 host the one cgroup directory itself."""
    hierarchies = sorted(cgroup_dirs.items())
    rest = flags & ~(mount.MS_BIND | mount.MS_REC | mount.MS_REMOUNT)
    _make_target(target, True)
    if len(hierarchies) == 1:
        mount.bind(hierarchies[0][1], target, mount.MS_BIND | rest)
        return
    mount.mount("tmpfs", target, "tmpfs", rest & ~mount.MS_RDONLY, "mode=755")
    for mountpoint, directory in hierarchies:
        sub = os.path.join(target, os.path.basename(mountpoint))
        os.makedirs(sub, exist_ok=True)
        mount.bind(directory, sub, mount.MS_BIND | rest)
    if rest & mount.MS_RDONLY:
        mount.mount("", target, None, mount.MS_REMOUNT | rest, "mode=755")


def _mknod(path: str, host: str, kind: int, major: int, minor: int, mode: int) -> None:
    """A device node at `path`, or where mknod is refused (inside a user namespace) a bind mount of the host's
    node `host`, as runc does."""
    try:
        os.mknod(path, kind | mode, os.makedev(major, minor))
    except FileExistsError:
        return
    except PermissionError:
        _make_target(path, False)
        mount.bind(host, path, mount.MS_BIND)
        return
    os.chmod(path, mode)


_KINDS = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def make_devices(spec: Spec) -> None:
    """The default device nodes, config.json's `linux.devices`, and the /dev links. Skipped when /dev is the
    host's own, bind-mounted by the bundle."""
    if any(
        m.destination.rstrip("/") == "/dev" and (m.type == "bind" or "bind" in m.options or "rbind" in m.options)
        for m in spec.mounts
    ):
        return
    dev = mount.resolve_in(spec.rootfs, "/dev")
    os.makedirs(dev, exist_ok=True)
    old_umask = os.umask(0)
    try:
        for path, major, minor in DEFAULT_DEVICES:
            _mknod(mount.resolve_in(spec.rootfs, path), path, stat.S_IFCHR, major, minor, 0o666)
        for device in spec.devices:
            _config_device(spec, device)
    finally:
        os.umask(old_umask)
    for source, link in DEV_LINKS:
        with contextlib.suppress(FileExistsError):
            os.symlink(source, mount.resolve_in(spec.rootfs, link))


def _config_device(spec: Spec, device: Device) -> None:
    path = mount.resolve_in(spec.rootfs, device.path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    mode = device.file_mode if device.file_mode is not None else 0o666
    _mknod(path, device.path, _KINDS[device.type], device.major, device.minor, mode & 0o7777)
    if device.uid is not None or device.gid is not None:
        os.chown(path, device.uid if device.uid is not None else -1, device.gid if device.gid is not None else -1)


def enter(spec: Spec, no_pivot: bool) -> None:
    """Make the rootfs the process's root: pivot_root and detach the old root, or (--no-pivot, for a rootfs on
    a ramfs where pivot_root is refused) move it over / and chroot."""
    os.chdir(spec.rootfs)
    if no_pivot:
        mount.move(spec.rootfs, "/")
        os.chroot(".")
    else:
        mount.pivot_root(".", ".")
        mount.set_propagation(".", mount.MS_SLAVE | mount.MS_REC)
        mount.umount(".", mount.MNT_DETACH)
    os.chdir("/")


def prepare(spec: Spec, cgroup_dirs: dict[str, str]) -> None:
    """Everything that happens before the root changes: stop mount events flowing back to the host, make the
    rootfs a mount point (pivot_root needs one), then mounts and devices."""
    mount.set_propagation("/", mount.MS_SLAVE | mount.MS_REC)
    mount.bind(spec.rootfs, spec.rootfs, mount.MS_BIND | mount.MS_REC)
    for i, m in enumerate(spec.mounts):
        mount_one(spec, m, i, cgroup_dirs)
    make_devices(spec)


def finish(spec: Spec) -> None:
    """What happens inside the new root: sysctls, masked and read-only paths, a read-only root, the
    rootfs's propagation."""
    for key, value in spec.sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        if ".." in key.split("."):
            raise InvalidSpecError(f"{key!r} is not a sysctl name", field="linux.sysctl")
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as exc:
            raise InvalidSpecError(f"cannot set {key}: {exc.strerror}", field="linux.sysctl") from None
    for path in spec.masked_paths:
        _mask(path)
    for path in spec.readonly_paths:
        with contextlib.suppress(FileNotFoundError):
            mount.bind(path, path, mount.MS_BIND | mount.MS_REC | mount.MS_RDONLY)
    if spec.readonly_root:
        mount.remount_bind("/", mount.MS_RDONLY, preserve=True)
    if spec.rootfs_propagation:
        mount.set_propagation("/", mount.PROPAGATION[spec.rootfs_propagation])


def _mask(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        mount.mount("tmpfs", path, "tmpfs", mount.MS_RDONLY, None)
    else:
        mount.bind("/dev/null", path, mount.MS_BIND)
