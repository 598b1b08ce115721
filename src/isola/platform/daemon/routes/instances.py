"""Instances: create, list, show, start, stop, kill, resize, delete; logs, stats, exec.

Endpoints are plain functions: FastAPI runs them in worker threads, so a start that waits seconds for a VM
holds up no other request. Every `{ref}` is an id or a name; another tenant's is not found.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Query, Response

from isola.engine import InstanceSpec, Resources
from isola.platform.daemon import models
from isola.platform.daemon.routes.deps import CallerDep, PlatformDep
from isola.platform.instances import CreateRequest
from isola.platform.records import Instance
from isola.platform.scheduler.model import Selector

router = APIRouter(tags=["instances"])


def instance_out(instance: Instance) -> models.InstanceOut:
    spec = instance.spec
    return models.InstanceOut(
        id=instance.id,
        name=instance.name,
        tenant_id=instance.tenant_id,
        kind=instance.kind,
        mode=instance.mode,
        state=instance.state,
        resources=models.ResourcesOut(vcpus=instance.vcpus, memory_mib=instance.memory_mib, disk_gib=instance.disk_gib),
        host_id=instance.host_id,
        engine_id=instance.engine_id,
        labels=dict(instance.labels),
        image=spec.get("image"),
        command=list(spec.get("command", [])),
        created_at=instance.created_at,
        updated_at=instance.updated_at,
    )


def create_request(body: models.InstanceCreate) -> CreateRequest:
    """The body as the platform's request; `InstanceSpec.from_dict` checks what pydantic cannot."""
    doc = body.model_dump(include={"name", "kind", "mode", "image", "command", "env", "networks"})
    doc["resources"] = body.resources.model_dump()
    return CreateRequest(
        spec=InstanceSpec.from_dict(doc),
        labels=body.labels,
        affinity=tuple(Selector.parse(s, f"affinity[{i}]") for i, s in enumerate(body.affinity)),
        anti_affinity=tuple(Selector.parse(s, f"anti_affinity[{i}]") for i, s in enumerate(body.anti_affinity)),
        tenant=body.tenant,
    )


@router.post("/v1/instances", operation_id="createInstance", summary="Create (and optionally start) an instance",
             status_code=201)  # fmt: skip
def create_instance(body: models.InstanceCreate, platform: PlatformDep, caller: CallerDep) -> models.InstanceOut:
    instance = platform.instances.create(caller, create_request(body))
    if body.start:
        instance = platform.instances.start(caller, instance.id)
    return instance_out(instance)


@router.get("/v1/instances", operation_id="listInstances", summary="The caller's instances (an admin: all)")
def list_instances(
    platform: PlatformDep, caller: CallerDep, tenant: str | None = Query(default=None, description="admin only")
) -> list[models.InstanceOut]:
    return [instance_out(i) for i in platform.instances.list(caller, tenant)]


@router.get("/v1/instances/{ref}", operation_id="getInstance", summary="One instance, its state asked of its engine")
def get_instance(ref: str, platform: PlatformDep, caller: CallerDep) -> models.InstanceOut:
    return instance_out(platform.instances.state(caller, ref))


@router.post("/v1/instances/{ref}/start", operation_id="startInstance", summary="Start; returns once it runs")
def start_instance(ref: str, platform: PlatformDep, caller: CallerDep) -> models.InstanceOut:
    return instance_out(platform.instances.start(caller, ref))


@router.post("/v1/instances/{ref}/stop", operation_id="stopInstance", summary="SIGTERM, then SIGKILL after timeout_s")
def stop_instance(
    ref: str, platform: PlatformDep, caller: CallerDep, body: models.Stop | None = None
) -> models.InstanceOut:
    return instance_out(platform.instances.stop(caller, ref, (body or models.Stop()).timeout_s))


@router.post("/v1/instances/{ref}/kill", operation_id="killInstance", summary="Send a signal (default SIGKILL)")
def kill_instance(
    ref: str, platform: PlatformDep, caller: CallerDep, body: models.Kill | None = None
) -> models.InstanceOut:
    return instance_out(platform.instances.kill(caller, ref, (body or models.Kill()).signal))


@router.post("/v1/instances/{ref}/resize", operation_id="resizeInstance", summary="Change vCPUs, memory or disk")
def resize_instance(ref: str, body: models.Resize, platform: PlatformDep, caller: CallerDep) -> models.InstanceOut:
    current = platform.instances.get(caller, ref)
    wanted = Resources(
        vcpus=current.vcpus if body.vcpus is None else body.vcpus,
        memory_mib=current.memory_mib if body.memory_mib is None else body.memory_mib,
        disk_gib=current.disk_gib if body.disk_gib is None else body.disk_gib,
    )
    return instance_out(platform.instances.resize(caller, current.id, wanted))


@router.delete("/v1/instances/{ref}", operation_id="deleteInstance", summary="Delete (a running one with force)",
               status_code=204, response_class=Response)  # fmt: skip
def delete_instance(ref: str, platform: PlatformDep, caller: CallerDep, force: bool = False) -> None:
    platform.instances.delete(caller, ref, force)


@router.get("/v1/instances/{ref}/logs", operation_id="getInstanceLogs", summary="The end of the console log")
def get_logs(
    ref: str, platform: PlatformDep, caller: CallerDep, tail_bytes: int = Query(default=65536, ge=1, le=1 << 24)
) -> models.Logs:
    data = platform.instances.logs(caller, ref, tail_bytes)
    return models.Logs(data_base64=base64.b64encode(data).decode())


@router.get("/v1/instances/{ref}/stats", operation_id="getInstanceStats", summary="CPU, memory, I/O, engine counters")
def get_stats(ref: str, platform: PlatformDep, caller: CallerDep) -> models.StatsOut:
    stats = platform.instances.stats(caller, ref)
    return models.StatsOut(
        cpu_ns=stats.cpu_ns,
        memory_bytes=stats.memory_bytes,
        io_read_bytes=stats.io_read_bytes,
        io_write_bytes=stats.io_write_bytes,
        engine=dict(stats.engine),
    )


@router.post("/v1/instances/{ref}/exec", operation_id="execInInstance", summary="Run a program in the instance")
def exec_in(ref: str, body: models.Exec, platform: PlatformDep, caller: CallerDep) -> models.ExecOut:
    result = platform.instances.exec(caller, ref, body.argv, body.env)
    return models.ExecOut(
        exit_code=result.exit_code,
        stdout_base64=base64.b64encode(result.stdout).decode(),
        stderr_base64=base64.b64encode(result.stderr).decode(),
    )
