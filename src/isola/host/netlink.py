"""Network namespaces, bridges and veth pairs through netlink (pyroute2), behind the few calls isola makes.

Everything happens inside named network namespaces (`ip netns` conventions: a bind mount under
/var/run/netns/NAME), never in the host's own: a veth pair is created inside one namespace with its peer placed
directly in the other, so not even a transient interface appears on the host. Errors come back as isola errors
naming the namespace and interface.

Each operation runs in a short-lived thread of its own that enters the namespace (a network namespace belongs
to a thread, not to the process), never through pyroute2's `netns.create` or `NetNS`: those fork the caller
and SIGTERM the child, and a forked child of an asyncio daemon inherits the loop's signal wake-up socket, so
the daemon itself would hear the SIGTERM and shut down. The threads leave the daemon's own threads untouched.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute, NetlinkError, netns

from isola.errors import ConflictError, EngineError, NotFoundError
from isola.host import libc

NETNS_DIR = "/var/run/netns"
MAX_IFNAME = 15


def path(name: str) -> str:
    """The file that holds namespace `name` (what setns opens)."""
    return f"{NETNS_DIR}/{name}"


def namespaces() -> list[str]:
    return sorted(netns.listnetns())


def create(name: str) -> None:
    """A new network namespace `name` with its loopback up."""
    if name in netns.listnetns():
        raise ConflictError(f"network namespace {name} exists already")

    def make(ip: Any) -> None:
        os.makedirs(NETNS_DIR, exist_ok=True)
        try:
            os.close(os.open(path(name), os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
        except FileExistsError:
            raise ConflictError(f"network namespace {name} exists already") from None
        try:
            libc.mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", path(name), None, libc.MS_BIND)
        except OSError as exc:
            os.unlink(path(name))
            raise EngineError(f"cannot create the network namespace {name}: {exc.strerror}") from None
        ip.link("set", index=_index(ip, name, "lo"), state="up")

    _run(None, make)


def remove(name: str) -> None:
    """Remove namespace `name` (its interfaces go with it, and so does the peer of each of its veths)."""
    if name not in netns.listnetns():
        return
    try:
        netns.remove(name)
    except OSError as exc:
        raise EngineError(f"cannot remove the network namespace {name}: {exc.strerror or exc}") from None


def add_bridge(name: str, bridge: str, address: str | None = None) -> None:
    """A bridge `bridge` in namespace `name`, up, with `address` ("10.0.0.1/24") if given."""

    def make(ip: Any) -> None:
        _call(name, bridge, ip.link, "add", ifname=bridge, kind="bridge")
        index = _index(ip, name, bridge)
        if address is not None:
            host, prefix = address.split("/")
            _call(name, bridge, ip.addr, "add", index=index, address=host, prefixlen=int(prefix))
        ip.link("set", index=index, state="up")

    _run(name, make)


def add_veth(name: str, ifname: str, address: str, peer_ns: str, peer: str, bridge: str) -> None:
    """A veth pair: `ifname` with `address` in namespace `name`, `peer` in `peer_ns` enslaved to `bridge`;
    both up."""
    peer_fd = _open(peer_ns)
    try:

        def inside(ip: Any) -> None:
            _call(name, ifname, ip.link, "add", ifname=ifname, kind="veth", peer={"ifname": peer, "net_ns_fd": peer_fd})
            index = _index(ip, name, ifname)
            host, prefix = address.split("/")
            _call(name, ifname, ip.addr, "add", index=index, address=host, prefixlen=int(prefix))
            ip.link("set", index=index, state="up")

        _run(name, inside)
    finally:
        os.close(peer_fd)

    def port(ip: Any) -> None:
        index = _index(ip, peer_ns, peer)
        _call(peer_ns, peer, ip.link, "set", index=index, master=_index(ip, peer_ns, bridge))
        ip.link("set", index=index, state="up")

    _run(peer_ns, port)


def links(name: str) -> list[str]:
    """The interfaces of namespace `name`."""
    found: list[str] = []
    _run(name, lambda ip: found.extend(sorted(str(link.get_attr("IFLA_IFNAME")) for link in ip.get_links())))
    return found


def _open(name: str) -> int:
    if name not in netns.listnetns():
        raise NotFoundError(f"there is no network namespace {name}")
    return os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)


def _run(name: str | None, work: Callable[[Any], None]) -> None:
    """`work(ipr)` in a new thread inside namespace `name` (None: a new namespace, for `create` to name), with
    a netlink socket of that namespace; its exception, if any, raised here."""
    fd = None if name is None else _open(name)
    failed: list[BaseException] = []

    def thread() -> None:
        try:
            if fd is None:
                libc.unshare(libc.CLONE_NEWNET)
            else:
                libc.setns(fd, libc.CLONE_NEWNET)
            with IPRoute() as ip:
                work(ip)
        except BaseException as exc:  # handed to the caller
            failed.append(exc)

    try:
        runner = threading.Thread(target=thread, name=f"netns {name or 'new'}")
        runner.start()
        runner.join()
    finally:
        if fd is not None:
            os.close(fd)
    if failed:
        raise failed[0]


def _index(ip: Any, name: str, ifname: str) -> int:
    found = ip.link_lookup(ifname=ifname)
    if not found:
        raise NotFoundError(f"there is no interface {ifname} in the network namespace {name}")
    index: int = found[0]
    return index


def _call(name: str, what: str, method: Any, *args: Any, **kwargs: Any) -> None:
    try:
        method(*args, **kwargs)
    except NetlinkError as err:
        raise EngineError(f"network namespace {name}, interface {what}: {err.args[-1]}") from None
