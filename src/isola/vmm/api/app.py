"""The FastAPI application: Firecracker's endpoints over a `Controller`, with Firecracker's answers.

Success is `204 No Content` (or a JSON body for the GETs); every failure is `400 {"fault_message": "..."}` —
a body that does not fit its model, a configuration `config.parse` rejects, a call the VM's state forbids, a
VM that cannot start here, an unknown path. FastAPI's own 422 answer for invalid bodies is replaced, and left
out of the OpenAPI document, so clients written for Firecracker's API see the status codes they expect. Only a
bug in isola-vmm answers 500, still with a fault_message.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from isola import __version__
from isola.errors import IsolaError, UsageError
from isola.vmm.api import models
from isola.vmm.api.controller import Controller

DESCRIPTION = """\
The REST API of `isola-vmm --api-sock PATH`, modelled on Firecracker's: HTTP/1.1 on a unix socket, JSON bodies.
Configure with PUT (and PATCH) before `PUT /actions {"action_type": "InstanceStart"}`; configuration calls after
it are refused. Success is 204 with no body; every error is 400 with `{"fault_message": "..."}`.
The configuration is validated like `isola-vmm --config vm.json`; unknown fields are rejected.
`PUT /process` (instead of a boot source) makes a process VM: one static x86-64 program, as
`isola-vmm run --process`; isola-vmm keeps serving after it ends, and `GET /vm` tells its exit status.
"""

NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}
"""FastAPI can export OpenTelemetry data when the environment configures it; a VMM should not do that behind
its operator's back, whatever the environment says."""

_MESSAGES = {"missing": "is required", "extra_forbidden": "unknown field"}
"""Pydantic's words for the two commonest mistakes, replaced by the ones `isola.vmm.config` uses."""


class VmmApp(FastAPI):
    def openapi(self) -> dict[str, Any]:
        """FastAPI's document without its 422 answers and their schemas: this API answers 400 instead."""
        schema = super().openapi()
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                operation.get("responses", {}).pop("422", None)
        schemas = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        return schema


def fault(message: str) -> JSONResponse:
    return JSONResponse({"fault_message": message}, status_code=400)


def describe_validation_error(error: dict[str, Any], section: str) -> str:
    """One pydantic error as `field: problem`, the field under its document section (`machine-config.smt`)
    as `config.parse` names fields."""
    loc = tuple(error.get("loc", ()))
    kind = error.get("type", "")
    if kind == "json_invalid":
        return f"the request body is not valid JSON: {error.get('ctx', {}).get('error', error['msg'])}"
    problem = _MESSAGES.get(kind, error["msg"])
    if loc[:1] == ("body",):
        if len(loc) == 1:
            return f"the request body {problem}" if kind == "missing" else f"the request body: {problem}"
        return f"{'.'.join([section, *map(str, loc[1:])])}: {problem}"
    return f"{'.'.join(map(str, loc[1:] or loc))}: {problem}"


class _CountRequests:
    """Counts requests and error answers for the metrics, whatever route (or none) handled them."""

    def __init__(self, app: ASGIApp, controller: Controller) -> None:
        self.app = app
        self.controller = controller

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.controller.requests += 1

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self.controller.faults += 1
            await send(message)

        await self.app(scope, receive, counting_send)


def _same_id(kind: str, in_path: str, in_body: str) -> None:
    if in_path != in_body:
        raise UsageError(f"{kind}: {in_body!r} differs from the id in the path, {in_path!r}")


def create_app(controller: Controller) -> FastAPI:
    """The API over `controller`. Endpoints are plain functions: FastAPI runs them in worker threads, so
    InstanceStart can wait for the VM without holding up other requests."""
    app = VmmApp(
        title="isola-vmm",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=None,  # the document lives in docs/openapi/, not on the socket
        docs_url=None,
        redoc_url=None,
        telemetry=NO_TELEMETRY,
        strict_content_type=False,  # a body without Content-Type is JSON: only local processes reach a unix socket
        responses={400: {"model": models.Error, "description": "The request failed; `fault_message` says why."}},
    )
    app.add_middleware(_CountRequests, controller=controller)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "application/json")
        if not content_type.startswith("application/json"):
            return fault(f"the request body must be JSON, sent with Content-Type: application/json, not {content_type}")
        section = request.url.path.strip("/").split("/")[0]
        return fault("; ".join(describe_validation_error(dict(e), section) for e in exc.errors()))

    @app.exception_handler(IsolaError)
    async def refused(request: Request, exc: IsolaError) -> JSONResponse:
        return fault(f"{exc}; hint: {exc.hint}" if exc.hint else str(exc))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        """Anything else is a bug in isola-vmm: still a fault_message for the client (uvicorn logs the
        traceback)."""
        return JSONResponse({"fault_message": f"isola-vmm bug: {exc!r}"}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            return fault(f"invalid request method and/or path: {request.method} {request.url.path}")
        return fault(str(exc.detail))  # a body too large, or one that cannot be read

    no_content: dict[str, Any] = {"status_code": 204, "response_class": Response, "response_description": "Done"}

    @app.get("/", operation_id="describeInstance", summary="The instance's id, state and version")
    def describe_instance() -> models.InstanceInfo:
        return models.InstanceInfo.model_validate(controller.instance_info())

    @app.get("/version", operation_id="getVmmVersion", summary="isola-vmm's version")
    def get_version() -> models.VmmVersion:
        return models.VmmVersion(vmm_version=__version__)

    @app.put("/boot-source", operation_id="putGuestBootSource", summary="Set the kernel, initrd, command line",
             **no_content)  # fmt: skip
    def put_boot_source(body: models.BootSource) -> None:
        controller.put_boot_source(body.model_dump(exclude_none=True))

    @app.get("/machine-config", operation_id="getMachineConfiguration", summary="vCPUs and memory")
    def get_machine_config() -> models.MachineConfiguration:
        return models.MachineConfiguration.model_validate(controller.machine_config())

    @app.put("/machine-config", operation_id="putMachineConfiguration", summary="Set vCPUs and memory",
             **no_content)  # fmt: skip
    def put_machine_config(body: models.MachineConfiguration) -> None:
        controller.put_machine_config(body.model_dump(exclude_none=True))

    @app.patch("/machine-config", operation_id="patchMachineConfiguration", summary="Change vCPUs or memory",
               **no_content)  # fmt: skip
    def patch_machine_config(body: models.MachineConfigurationUpdate) -> None:
        controller.patch_machine_config(body.model_dump(exclude_none=True))

    @app.put("/drives/{drive_id}", operation_id="putGuestDriveByID", summary="Add or replace a drive", **no_content)
    def put_drive(drive_id: str, body: models.Drive) -> None:
        _same_id("drive_id", drive_id, body.drive_id)
        controller.put_drive(drive_id, body.model_dump(exclude_none=True))

    @app.patch("/drives/{drive_id}", operation_id="patchGuestDriveByID", summary="Change a drive", **no_content)
    def patch_drive(drive_id: str, body: models.PartialDrive) -> None:
        _same_id("drive_id", drive_id, body.drive_id)
        controller.patch_drive(drive_id, body.model_dump(exclude_none=True))

    @app.put("/network-interfaces/{iface_id}", operation_id="putGuestNetworkInterfaceByID",
             summary="Add or replace a network interface", **no_content)  # fmt: skip
    def put_network_interface(iface_id: str, body: models.NetworkInterface) -> None:
        _same_id("iface_id", iface_id, body.iface_id)
        controller.put_network_interface(iface_id, body.model_dump(exclude_none=True))

    @app.patch("/network-interfaces/{iface_id}", operation_id="patchGuestNetworkInterfaceByID",
               summary="Change a network interface", **no_content)  # fmt: skip
    def patch_network_interface(iface_id: str, body: models.PartialNetworkInterface) -> None:
        _same_id("iface_id", iface_id, body.iface_id)
        controller.patch_network_interface(iface_id, body.model_dump(exclude_none=True))

    @app.put("/entropy", operation_id="putEntropyDevice", summary="Add a virtio-rng device", **no_content)
    def put_entropy(body: models.EntropyDevice) -> None:
        controller.put_entropy(body.model_dump(exclude_none=True))

    @app.put("/process", operation_id="putProcess",
             summary="Make it a process VM: one program, no kernel, no boot source", **no_content)  # fmt: skip
    def put_process(body: models.ProcessConfiguration) -> None:
        controller.put_process(body.model_dump(exclude_none=True))

    @app.get("/vm", operation_id="getVmState", summary="The VM's state and, once it has ended, its exit status",
             response_model_exclude_none=True)  # fmt: skip
    def get_vm_state() -> models.VmState:
        return models.VmState.model_validate(controller.vm_state())

    @app.put("/actions", operation_id="createSyncAction", summary="Start the VM, press Ctrl+Alt+Del, flush metrics",
             **no_content)  # fmt: skip
    def create_sync_action(body: models.InstanceActionInfo) -> None:
        if body.action_type == "InstanceStart":
            controller.start()
        elif body.action_type == "SendCtrlAltDel":
            controller.send_ctrl_alt_del()
        else:
            controller.flush_metrics()

    @app.get("/vm/config", operation_id="getExportVmConfig", summary="The whole configuration, as a VM document",
             response_model_exclude_none=True, response_model_by_alias=True)  # fmt: skip
    def get_vm_config() -> models.FullVmConfiguration:
        return models.FullVmConfiguration.model_validate(controller.vm_config())

    @app.put("/metrics", operation_id="putMetrics", summary="Write metrics to a file, as JSON lines", **no_content)
    def put_metrics(body: models.Metrics) -> None:
        controller.set_metrics(body.metrics_path)

    return app
