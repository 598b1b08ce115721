"""Events: what happened to instances and leases, in order, as the store's `events` table records it.

The rows are written by triggers (migration V3) in the same statement as the state change, so the log cannot
miss one or record one that was rolled back. Kinds are `instance.<state>` (`instance.creating`,
`instance.running`, …, and `instance.deleted` when the row goes) and `lease.<state>` (`lease.active`,
`lease.cleaning`, `lease.released`, `lease.clean-failed`). A tenant reads only its own; an admin all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from isola.platform.access import Caller
from isola.platform.store import Store


@dataclass(frozen=True)
class Event:
    id: int
    at: datetime
    tenant_id: str
    kind: str
    object_id: str


class Events:
    def __init__(self, store: Store) -> None:
        self.store = store

    def list(self, caller: Caller, since: int = 0, limit: int = 1000) -> list[Event]:
        """The caller's events with an id above `since`, oldest first, at most `limit`."""
        sql = "SELECT id, at, tenant_id, kind, object_id FROM events WHERE id > ?"
        params: list[object] = [since]
        if caller.tenant_id is not None:
            sql += " AND tenant_id = ?"
            params.append(caller.tenant_id)
        with self.store.snapshot() as conn:
            rows = conn.execute(sql + " ORDER BY id LIMIT ?", (*params, limit)).fetchall()
        return [Event(id, datetime.fromisoformat(at), tenant, kind, obj) for id, at, tenant, kind, obj in rows]
