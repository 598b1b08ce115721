"""`GET /v1/system`: which daemon this is (the CLI's `isola daemon status`, and its pid for `stop`)."""

from __future__ import annotations

import os

from fastapi import APIRouter

from isola import __version__
from isola.engine import ENGINES
from isola.platform.daemon import models
from isola.platform.daemon.routes.deps import CallerDep, PlatformDep

router = APIRouter(tags=["system"])


@router.get("/v1/system", operation_id="getSystem", summary="The daemon: version, pid, host, socket, store")
def get_system(platform: PlatformDep, caller: CallerDep) -> models.System:
    return models.System(
        version=__version__,
        pid=os.getpid(),
        host=platform.host.name,
        host_id=platform.host.id,
        socket=platform.socket,
        store=str(platform.store.path),
        engines=sorted(kind.value for kind in ENGINES),
    )
