"""Who is asking: an admin (root on the daemon's unix socket) or one tenant (its token).

A tenant sees and touches only its own things. What belongs to someone else is answered exactly as what does
not exist (NotFoundError, HTTP 404, never 403), so a tenant cannot learn that another tenant's instance id
or name exists by probing.
"""

from __future__ import annotations

from dataclasses import dataclass

from isola.errors import PermissionDeniedError


@dataclass(frozen=True)
class Caller:
    """`tenant_id` None is the admin."""

    tenant_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    def may_see(self, owner: str) -> bool:
        return self.tenant_id is None or self.tenant_id == owner

    def require_admin(self, what: str) -> None:
        if self.tenant_id is not None:
            raise PermissionDeniedError(f"only an admin may {what}", hint="use the daemon's unix socket as root")


ADMIN = Caller()
