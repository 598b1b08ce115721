"""Events of instances and leases (see `isola.platform.events`), as JSON lines: one `EventOut` per line."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from isola.platform.daemon import models
from isola.platform.daemon.routes.deps import CallerDep, PlatformDep

router = APIRouter(tags=["events"])


class JsonLines(Response):
    media_type = "application/x-ndjson"


@router.get(
    "/v1/events",
    operation_id="listEvents",
    summary="The caller's instance and lease events after `since`, oldest first, as JSON lines",
    response_class=JsonLines,
    responses={200: {"model": models.EventOut, "description": "One EventOut per line"}},
)
def list_events(
    platform: PlatformDep,
    caller: CallerDep,
    since: int = Query(default=0, ge=0, description="only events with a greater id"),
    limit: int = Query(default=1000, ge=1, le=10000),
) -> JsonLines:
    lines = (
        models.EventOut(id=e.id, at=e.at, tenant_id=e.tenant_id, kind=e.kind, object_id=e.object_id).model_dump_json()
        for e in platform.events.list(caller, since, limit)
    )
    return JsonLines("".join(line + "\n" for line in lines))
