"""The isolad FastAPI application over a `Platform`.

The OpenAPI document is not served (clients find it in docs/openapi/isolad.json, kept equal to this app's by a
test); every error answers with `daemon.errors`' body and `isola.errors.http_status`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.telemetry import TelemetryConfig

from isola import __version__
from isola.platform.daemon import errors, models
from isola.platform.daemon.routes import console, events, hosts, instances, leases, networks, system, tenants
from isola.platform.service import Platform

DESCRIPTION = """\
isolad: tenants, quotas, instances on every rung (emulated, vm, container, metal), hosts, the scheduler,
bare-metal leases, isolated tenant networks, and the events of instances and leases.
HTTP/1.1 + JSON on a unix socket (root is the admin; `Authorization: Bearer <token>` acts as a tenant) and,
optionally, TCP (a tenant token is required). A tenant sees only its own things: another tenant's are 404.
Every error is `{"error", "type", "field", "hint"}` with the status `isola.errors` maps its type to.
The console is a WebSocket at `/v1/instances/{ref}/console` (binary frames both ways).
"""

NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}
"""A daemon does not export telemetry behind its operator's back, whatever the environment says."""

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": models.Error, "description": what}
    for status, what in (
        (403, "Not allowed (not an admin, bad token) or over quota"),
        (404, "No such thing — or another tenant's"),
        (409, "A conflict with the current state"),
        (422, "The request is invalid; `field` names what is wrong"),
        (501, "This isola or host cannot do it (no engine for the kind, no host runs it)"),
    )
}


def create_app(platform: Platform | None) -> FastAPI:
    """The app; `platform` None builds it only for its OpenAPI document."""
    app = FastAPI(
        title="isolad",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        telemetry=NO_TELEMETRY,
        responses=ERRORS,
    )
    app.state.platform = platform
    errors.install(app)
    for module in (system, tenants, instances, console, hosts, leases, networks, events):
        app.include_router(module.router)
    return app


def openapi_document() -> dict[str, Any]:
    """The document as docs/openapi/isolad.json holds it; FastAPI's own 422 schema is replaced by `Error`, and
    JSON lines are described by their line's model."""
    app = create_app(None)
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for path_item in doc.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            for status, response in responses.items():
                # FastAPI files a JSON-lines route's every answer under its media type, typed a string: the
                # lines are the model; errors are JSON.
                content = response.get("content", {})
                if events.JsonLines.media_type in content:
                    schema = content.pop(events.JsonLines.media_type)["schema"]
                    schema.pop("type", None)
                    content[events.JsonLines.media_type if status == "200" else "application/json"] = {"schema": schema}
            if "422" in responses:
                responses["422"] = {
                    "description": ERRORS[422]["description"],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return doc
