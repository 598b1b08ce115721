"""The platform as one object: the store, the tenants, the instances, the leases, the events, and this host — what
isolad serves.

Opening it registers this host (capacity and offers from `isola doctor`'s checks), reconciles the store with what
the engines run and releases the leases whose end has passed, so by the time the daemon accepts a request its
records are true.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from isola.platform.events import Events
from isola.platform.hosts import register_self
from isola.platform.instances import Engines, Instances
from isola.platform.leases import Cleaning, Leases
from isola.platform.reconcile import Report, reconcile
from isola.platform.records import Host, Lease
from isola.platform.repos import Repos
from isola.platform.scheduler.model import Policy
from isola.platform.store import Store
from isola.platform.tenants import Tenants


@dataclass
class Platform:
    store: Store
    repos: Repos
    tenants: Tenants
    instances: Instances
    leases: Leases
    events: Events
    host: Host
    reconciled: Report
    expired: list[tuple[Lease, Cleaning]]
    """The leases released at start because their end had passed."""
    socket: str
    """The unix socket the daemon serves on (for `GET /v1/system`)."""

    @classmethod
    def open(cls, store_path: Path, *, socket: Path, policy: Policy | None = None) -> Platform:
        store = Store.open(store_path)
        try:
            repos = Repos(store)
            host = register_self(repos, f"unix:{socket}")
            instances = Instances(repos, Engines(), policy or Policy())
            report = reconcile(instances)
            leases = Leases(repos, instances)
            expired = leases.expire()
        except BaseException:
            store.close()
            raise
        return cls(store, repos, Tenants(repos), instances, leases, Events(store), host, report, expired, str(socket))

    def close(self) -> None:
        self.store.close()
