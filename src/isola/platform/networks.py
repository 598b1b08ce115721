"""Tenant networks: isolated L2 segments, each a Linux bridge inside a network namespace the platform owns.

Neutron's model, on one host: a network belongs to a tenant (names are unique per tenant, subnets may overlap
between tenants), counts against its `networks` quota, and is `isola-n<id>`: a namespace holding a bridge
that carries the subnet's first address. Nothing joins two namespaces, and the host's own namespace holds no
interface of any network, so two networks cannot reach each other and nothing reaches the outside (no NAT).

An instance attaches (`attach`) through a namespace of its own, `isola-i<id>`, whose `eth0` is one end of a
veth pair; the other end is a port of the network's bridge. Addresses come from the attachments table
(IPAM: the lowest free host address after the bridge's; the store's UNIQUE (network, ip) backs it). The
instance's engine starts the guest inside that namespace — for kind `metal` the program joins it (a process VM
has no NIC, and containers attach when their engine lands). `detach` removes the instance's namespace, which
takes the veth pair with it.

A network is created row first, then its namespace; a failure in between removes the row again. A network with
instances attached is not removed.
"""

from __future__ import annotations

import builtins
import ipaddress
import itertools
import secrets

from isola.errors import ConflictError, InvalidSpecError, NotFoundError
from isola.host import netlink
from isola.platform.access import Caller
from isola.platform.quotas import Delta, check
from isola.platform.records import Attachment, Network, Tenant, new_id
from isola.platform.repos import Repos

DEFAULT_SUBNET = "10.88.0.0/24"
NETWORK_NS = "isola-n"
INSTANCE_NS = "isola-i"
BRIDGE = "br0"
"""The bridge's name inside its network's namespace (the store's `bridge` column holds the namespace name)."""


class Networks:
    def __init__(self, repos: Repos) -> None:
        self.repos = repos

    # -- the tenant's networks -----------------------------------------------------------------------------

    def create(self, caller: Caller, name: str, subnet: str | None, tenant_ref: str | None = None) -> Network:
        _check_name(name)
        cidr = _subnet(subnet or DEFAULT_SUBNET)
        with self.repos.store.transaction():
            tenant = self._owner(caller, tenant_ref)
            check(tenant, self.repos.tenants.usage(tenant.id), Delta(networks=1))
            network_id = new_id()
            network = self.repos.networks.add(
                Network(id=network_id, name=name, tenant_id=tenant.id, cidr=str(cidr), bridge=_ns(network_id))
            )
        try:
            netlink.create(network.bridge)
            netlink.add_bridge(network.bridge, BRIDGE, f"{_gateway(cidr)}/{cidr.prefixlen}")
        except BaseException:
            netlink.remove(network.bridge)
            self.repos.networks.delete(network.id)
            raise
        return network

    def list(self, caller: Caller) -> builtins.list[Network]:
        if caller.tenant_id is not None:
            return self.repos.networks.list(tenant_id=caller.tenant_id)
        return self.repos.networks.list()

    def get(self, caller: Caller, ref: str, tenant_id: str | None = None) -> Network:
        """By id, or by name among the caller's (an admin's: among all, if unambiguous); another tenant's
        is not found."""
        owner = caller.tenant_id or tenant_id
        with self.repos.store.snapshot():
            found = self.repos.networks.list(id=ref)
            if not found or not caller.may_see(found[0].tenant_id):
                found = (
                    self.repos.networks.list(tenant_id=owner, name=ref) if owner else self.repos.networks.list(name=ref)
                )
        if not found:
            raise NotFoundError(f"network '{ref}' does not exist")
        if len(found) > 1:
            raise ConflictError(f"{len(found)} tenants have a network '{ref}'", hint="name it by its id")
        return found[0]

    def delete(self, caller: Caller, ref: str) -> None:
        network = self.get(caller, ref)
        attached = self.repos.attachments.list(network_id=network.id)
        if attached:
            raise ConflictError(
                f"network '{network.name}' has {len(attached)} instances attached", hint="delete them first"
            )
        netlink.remove(network.bridge)
        self.repos.networks.delete(network.id)

    def addresses(self, network: Network) -> dict[str, str]:
        """Instance id -> address, of what is attached to `network`."""
        return {a.instance_id: a.ip or "" for a in self.repos.attachments.list(network_id=network.id)}

    # -- instances on networks -----------------------------------------------------------------------------

    def attach(self, instance_id: str, network: Network) -> str:
        """Give the instance an address on `network` and a namespace wired to its bridge; the namespace's path,
        for the engine to start the guest in."""
        cidr = ipaddress.ip_network(network.cidr)
        with self.repos.store.transaction():
            taken = {a.ip for a in self.repos.attachments.list(network_id=network.id)}
            free = (str(ip) for ip in itertools.islice(cidr.hosts(), 1, None) if str(ip) not in taken)
            address = next(free, None)
            if address is None:
                raise ConflictError(f"network '{network.name}' ({network.cidr}) has no free address")
            self.repos.attachments.add(
                Attachment(instance_id=instance_id, network_id=network.id, mac=_mac(), ip=address)
            )
        name = _instance_ns(instance_id)
        try:
            netlink.create(name)
            netlink.add_veth(name, "eth0", f"{address}/{cidr.prefixlen}", network.bridge, _port(instance_id), BRIDGE)
        except BaseException:
            self.detach(instance_id)
            raise
        return netlink.path(name)

    def detach(self, instance_id: str) -> None:
        """Remove the instance's namespace (and so its port on the bridge) and its addresses."""
        netlink.remove(_instance_ns(instance_id))
        for attachment in self.repos.attachments.list(instance_id=instance_id):
            self.repos.attachments.delete(attachment.id)

    def _owner(self, caller: Caller, ref: str | None) -> Tenant:
        if caller.tenant_id is not None:
            own = self.repos.tenants.get(caller.tenant_id)
            if ref is not None and ref not in (own.id, own.name):
                raise NotFoundError(f"tenant '{ref}' does not exist")
            return own
        if ref is None:
            raise InvalidSpecError("is required when an admin creates a network: whose is it?", field="tenant")
        found = self.repos.tenants.list(id=ref) or self.repos.tenants.list(name=ref)
        if not found:
            raise NotFoundError(f"tenant '{ref}' does not exist")
        return found[0]


def _check_name(name: str) -> None:
    if not name or len(name) > 63 or not all(c.isalnum() or c in "-_." for c in name):
        raise InvalidSpecError("1-63 letters, digits, '-', '_' or '.'", field="name")


def _subnet(text: str) -> ipaddress.IPv4Network:
    try:
        cidr = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        raise InvalidSpecError(f"{text!r} is not a subnet in CIDR notation ({err})", field="subnet") from None
    if not isinstance(cidr, ipaddress.IPv4Network) or not 8 <= cidr.prefixlen <= 29:
        raise InvalidSpecError("an IPv4 subnet from /8 to /29", field="subnet")
    return cidr


def _gateway(cidr: ipaddress.IPv4Network) -> str:
    return str(next(cidr.hosts()))


def _ns(network_id: str) -> str:
    return NETWORK_NS + network_id[:8]  # the store's bridge column: at most 15 characters


def _instance_ns(instance_id: str) -> str:
    return INSTANCE_NS + instance_id


def _port(instance_id: str) -> str:
    return "p-" + instance_id[: netlink.MAX_IFNAME - 2]


def _mac() -> str:
    """A random locally administered unicast address."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)
