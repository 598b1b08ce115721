"""isola-vmm's REST API in-process: every endpoint, the 400 answers, the state machine, the metrics file and the
exported OpenAPI document.

Requests go through the real FastAPI application (httpx's ASGITransport, one event loop per request, no pytest
plugin). A VM cannot boot on this host's kvm_pvm, so the state machine runs on `GuestStandIn`, a boot function
that behaves as `launch.boot` does from the API's side: it reports the started VM, then runs until stopped. The
real `launch.boot` is used where it can answer here (its kvm_pvm refusal) and in the socket tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from isola.errors import EngineError, UnsupportedError
from isola.vmm import config, launch
from isola.vmm.api import Controller, create_app
from isola.vmm.api.__main__ import openapi_document
from isola.vmm.api.controller import Guest
from isola.vmm.kvm import system
from isola.vmm.machine import ExitKind, ExitStatus

ROOT = Path(__file__).resolve().parents[2]
OPENAPI_FILE = ROOT / "docs" / "openapi" / "isola-vmm.json"
JSON = {"content-type": "application/json"}


class GuestStandIn:
    """A VM from the API's point of view: it runs until `stop()` or `end()`."""

    def __init__(self) -> None:
        self.ctrl_alt_del = 0
        self.ended = threading.Event()
        self.status = ExitStatus(ExitKind.POWEROFF, "guest powered off")
        self.booted: config.VmConfig | None = None

    def send_ctrl_alt_del(self) -> None:
        self.ctrl_alt_del += 1

    def metrics(self) -> dict[str, object]:
        return {"uptime_seconds": 1.5, "vcpu_exits": [{"io": 3}]}

    def stop(self, reason: str = "stopped by the VMM") -> None:
        self.end(ExitStatus(ExitKind.STOPPED, reason))

    def end(self, status: ExitStatus) -> None:
        self.status = status
        self.ended.set()

    def boot(self, vm: config.VmConfig, *, on_started: Callable[[Guest], None]) -> ExitStatus:
        self.booted = vm
        on_started(self)
        self.ended.wait(30)
        return self.status


class Api:
    """The application over one controller, called like a client would."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.app = create_app(controller)

    def call(self, method: str, path: str, body: object = None, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://isola-vmm") as client:
                if body is not None:
                    kwargs["json"] = body
                return await client.request(method, path, **kwargs)

        return asyncio.run(send())

    def ok(self, method: str, path: str, body: object = None) -> httpx.Response:
        response = self.call(method, path, body)
        assert response.status_code in (200, 204), response.text
        if response.status_code == 204:
            assert response.content == b""
        return response

    def fault(self, method: str, path: str, body: object = None, **kwargs: Any) -> str:
        response = self.call(method, path, body, **kwargs)
        assert response.status_code == 400, response.text
        message = response.json()["fault_message"]
        assert isinstance(message, str)
        return message


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Stand-ins for a kernel, an initrd and a disk: config.parse checks that they are files, not their bytes."""
    paths = {name: tmp_path / name for name in ("bzImage", "initrd.cpio", "disk.img")}
    for path in paths.values():
        path.write_bytes(b"\0" * 512)
    return {name: str(path) for name, path in paths.items()}


@pytest.fixture
def guest() -> GuestStandIn:
    return GuestStandIn()


@pytest.fixture
def api(guest: GuestStandIn) -> Api:
    return Api(Controller(guest.boot, metrics_interval=3600))


def configure(api: Api, files: dict[str, str]) -> None:
    api.ok("PUT", "/boot-source", {"kernel_image_path": files["bzImage"], "initrd_path": files["initrd.cpio"]})


# --- reading ---------------------------------------------------------------------------------------------------


def test_instance_info_and_version(api: Api) -> None:
    info = api.ok("GET", "/").json()
    assert info == {"id": "anonymous-instance", "state": "Not started", "vmm_version": "0.1.0", "app_name": "isola-vmm"}
    assert api.ok("GET", "/version").json() == {"vmm_version": "0.1.0"}


def test_machine_config_defaults_put_and_patch(api: Api) -> None:
    assert api.ok("GET", "/machine-config").json() == {"vcpu_count": 1, "mem_size_mib": 256}
    api.ok("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 512})
    api.ok("PATCH", "/machine-config", {"mem_size_mib": 128})
    assert api.ok("GET", "/machine-config").json() == {"vcpu_count": 2, "mem_size_mib": 128}


def test_vm_config_is_a_document_config_parse_accepts(api: Api, files: dict[str, str]) -> None:
    assert api.ok("GET", "/vm/config").json() == {
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 256},
        "drives": [],
        "network-interfaces": [],
    }
    configure(api, files)
    api.ok("PUT", "/drives/data", {"drive_id": "data", "path_on_host": files["disk.img"], "is_read_only": True})
    api.ok("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0"})
    api.ok("PUT", "/entropy", {})
    document = api.ok("GET", "/vm/config").json()
    assert document["entropy"] == {}
    assert document["drives"] == [{"drive_id": "data", "path_on_host": files["disk.img"], "is_read_only": True}]
    vm = config.parse(document)
    assert vm.boot.initrd == Path(files["initrd.cpio"]) and vm.drives[0].read_only and vm.nics[0].tap == "tap0"
    assert vm.entropy
    # ... and it configures another isola-vmm the same way (--config together with --api-sock)
    other = Api(Controller(GuestStandIn().boot))
    other.controller.load(document)
    assert other.ok("GET", "/vm/config").json() == document


# --- 400s ------------------------------------------------------------------------------------------------------


def test_invalid_bodies_are_400_naming_the_field(api: Api) -> None:
    assert api.fault("PUT", "/machine-config", {"vcpu_count": "2", "mem_size_mib": 128}) == (
        "machine-config.vcpu_count: Input should be a valid integer"
    )
    assert api.fault("PUT", "/machine-config", {"vcpu_count": 2}) == "machine-config.mem_size_mib: is required"
    assert api.fault("PATCH", "/machine-config", {"smt": True}) == "machine-config.smt: unknown field"
    assert api.fault("PUT", "/entropy", {"rate_limiter": {}}) == "entropy.rate_limiter: unknown field"
    assert api.fault("PUT", "/boot-source", {"kernel_image_path": 7}).startswith("boot-source.kernel_image_path:")
    assert "drives.is_read_only" in api.fault("PUT", "/drives/d", {"drive_id": "d", "path_on_host": "x",
                                                                    "is_read_only": 1})  # fmt: skip
    message = api.fault("PUT", "/actions", {"action_type": "Pause"})
    assert message.startswith("actions.action_type:") and "InstanceStart" in message
    assert api.fault("PUT", "/actions") == "the request body is required"
    assert api.fault("PUT", "/actions", [1]).startswith("the request body:")
    assert api.fault("PUT", "/actions", content=b"{oops", headers=JSON).startswith("the request body is not valid JSON")
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert "Content-Type: application/json" in api.fault("PUT", "/actions", content=b"{}", headers=form)
    # no Content-Type at all is taken as JSON, as Firecracker does
    no_type = api.fault("PUT", "/actions", content=b'{"action_type": "FlushMetrics"}')
    assert no_type == "there is no metrics file: PUT /metrics first"


def test_config_parse_judges_values_as_for_a_vm_document(api: Api, files: dict[str, str]) -> None:
    assert api.fault("PUT", "/boot-source", {"kernel_image_path": "/nonexistent"}) == (
        "boot-source.kernel_image_path: /nonexistent is not a file"
    )
    configure(api, files)
    assert api.fault("PATCH", "/machine-config", {"vcpu_count": 99}) == (
        "machine-config.vcpu_count: must be an integer from 1 to 32"
    )
    assert api.fault("PUT", "/drives/a.b", {"drive_id": "a.b", "path_on_host": files["disk.img"]}).startswith(
        "drives[0].drive_id:"
    )
    bad_mac = {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "01:00:00:00:00:01"}
    assert api.fault("PUT", "/network-interfaces/eth0", bad_mac).startswith("network-interfaces[0].guest_mac:")
    # a refused change leaves the configuration as it was
    assert api.ok("GET", "/vm/config").json()["drives"] == []
    assert api.ok("GET", "/machine-config").json()["vcpu_count"] == 1


def test_values_given_before_the_boot_source_are_judged_with_it(api: Api, files: dict[str, str]) -> None:
    """config.parse needs a boot source; until there is one, only the shape of a change is checked."""
    api.ok("PUT", "/machine-config", {"vcpu_count": 64, "mem_size_mib": 256})
    message = api.fault("PUT", "/boot-source", {"kernel_image_path": files["bzImage"]})
    assert message.startswith("machine-config.vcpu_count:")
    api.ok("PATCH", "/machine-config", {"vcpu_count": 2})
    configure(api, files)


def test_ids_in_path_and_body_must_agree(api: Api, files: dict[str, str]) -> None:
    drive = {"drive_id": "b", "path_on_host": files["disk.img"]}
    assert api.fault("PUT", "/drives/a", drive) == "drive_id: 'b' differs from the id in the path, 'a'"
    assert api.fault("PATCH", "/network-interfaces/a", {"iface_id": "b"}).startswith("iface_id: 'b' differs")


def test_patching_needs_an_existing_drive_or_interface(api: Api, files: dict[str, str]) -> None:
    assert "PUT /drives/d first" in api.fault("PATCH", "/drives/d", {"drive_id": "d", "is_read_only": True})
    assert "PUT /network-interfaces/n first" in api.fault("PATCH", "/network-interfaces/n", {"iface_id": "n"})
    configure(api, files)
    api.ok("PUT", "/drives/d", {"drive_id": "d", "path_on_host": files["disk.img"]})
    api.ok("PATCH", "/drives/d", {"drive_id": "d", "is_read_only": True})
    api.ok("PUT", "/network-interfaces/n", {"iface_id": "n", "host_dev_name": "tap0"})
    api.ok("PATCH", "/network-interfaces/n", {"iface_id": "n", "guest_mac": "06:00:AC:10:00:02"})
    api.ok("PUT", "/drives/e", {"drive_id": "e", "path_on_host": files["disk.img"]})
    api.ok("PUT", "/drives/d", {"drive_id": "d", "path_on_host": files["initrd.cpio"]})  # replaced in place
    document = api.ok("GET", "/vm/config").json()
    assert [(d["drive_id"], Path(d["path_on_host"]).name) for d in document["drives"]] == [
        ("d", "initrd.cpio"),
        ("e", "disk.img"),
    ]
    assert document["network-interfaces"] == [
        {"iface_id": "n", "host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00:02"}
    ]


def test_unknown_paths_and_methods_are_400(api: Api) -> None:
    assert api.fault("GET", "/snapshot/create") == "invalid request method and/or path: GET /snapshot/create"
    assert api.fault("DELETE", "/machine-config") == "invalid request method and/or path: DELETE /machine-config"
    assert api.fault("PATCH", "/vm", {"state": "Paused"}).startswith("invalid request method and/or path")


# --- the VM ----------------------------------------------------------------------------------------------------


def test_instance_start_needs_a_boot_source(api: Api) -> None:
    assert api.fault("PUT", "/actions", {"action_type": "InstanceStart"}) == "boot-source: is required"
    assert api.ok("GET", "/").json()["state"] == "Not started"


def test_the_vm_starts_runs_and_ends(api: Api, guest: GuestStandIn, files: dict[str, str]) -> None:
    ended: list[ExitStatus] = []
    api.controller.on_end = ended.append
    configure(api, files)
    api.ok("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 64})
    assert (
        api.fault("PUT", "/actions", {"action_type": "SendCtrlAltDel"}) == "the VM is not running: InstanceStart first"
    )
    api.ok("PUT", "/actions", {"action_type": "InstanceStart"})
    assert guest.booted is not None and (guest.booted.vcpus, guest.booted.memory_mib) == (2, 64)
    assert api.ok("GET", "/").json()["state"] == "Running"
    assert api.fault("PUT", "/actions", {"action_type": "InstanceStart"}) == "the VM is already running"
    for method, path, body in [
        ("PUT", "/boot-source", {"kernel_image_path": files["bzImage"]}),
        ("PATCH", "/machine-config", {"vcpu_count": 1}),
        ("PUT", "/drives/d", {"drive_id": "d", "path_on_host": files["disk.img"]}),
        ("PATCH", "/drives/d", {"drive_id": "d", "is_read_only": True}),
        ("PUT", "/network-interfaces/n", {"iface_id": "n", "host_dev_name": "tap0"}),
        ("PATCH", "/network-interfaces/n", {"iface_id": "n"}),
        ("PUT", "/entropy", {}),
        ("PUT", "/metrics", {"metrics_path": files["disk.img"] + ".metrics"}),
    ]:
        assert api.fault(method, path, body).startswith("the VM is already running:"), path
    api.ok("PUT", "/actions", {"action_type": "SendCtrlAltDel"})
    assert guest.ctrl_alt_del == 1
    assert api.ok("GET", "/vm/config").json()["machine-config"] == {"vcpu_count": 2, "mem_size_mib": 64}
    guest.end(ExitStatus(ExitKind.POWEROFF, "guest powered off"))
    status = api.controller.wait(10)
    assert status is not None and status.kind is ExitKind.POWEROFF and status.exit_code == 0
    assert ended == [status]


def test_a_vm_that_cannot_start_leaves_the_api_not_started(files: dict[str, str]) -> None:
    attempts: list[config.VmConfig] = []

    def refuse(vm: config.VmConfig, *, on_started: Callable[[Guest], None]) -> ExitStatus:
        attempts.append(vm)
        raise EngineError("KVM_CREATE_VM failed: ENOMEM", hint="free some memory")

    api = Api(Controller(refuse))
    configure(api, files)
    message = api.fault("PUT", "/actions", {"action_type": "InstanceStart"})
    assert message == "KVM_CREATE_VM failed: ENOMEM; hint: free some memory"
    assert api.ok("GET", "/").json()["state"] == "Not started"
    api.ok("PATCH", "/machine-config", {"mem_size_mib": 64})  # still configurable, and it can be tried again
    assert api.fault("PUT", "/actions", {"action_type": "InstanceStart"}).startswith("KVM_CREATE_VM failed")
    assert [vm.memory_mib for vm in attempts] == [256, 64]


def test_this_hosts_kvm_refusal_reaches_the_client(files: dict[str, str]) -> None:
    """The real `launch.boot`: on kvm_pvm it refuses before touching the kernel file."""
    if system.probe().provider != "kvm_pvm":
        pytest.skip("this host's KVM can boot kernels (the socket tests boot one)")
    api = Api(Controller(launch.boot))
    configure(api, files)
    assert "kvm_pvm" in api.fault("PUT", "/actions", {"action_type": "InstanceStart"})
    assert api.ok("GET", "/").json()["state"] == "Not started"


def test_send_ctrl_alt_del_refused_by_the_vm_is_a_400(api: Api, guest: GuestStandIn, files: dict[str, str]) -> None:
    def no_keyboard() -> None:
        raise UnsupportedError("this machine has no keyboard yet to press Ctrl+Alt+Del on")

    guest.send_ctrl_alt_del = no_keyboard  # type: ignore[method-assign]
    configure(api, files)
    api.ok("PUT", "/actions", {"action_type": "InstanceStart"})
    assert "no keyboard" in api.fault("PUT", "/actions", {"action_type": "SendCtrlAltDel"})
    assert api.controller.shutdown("test over") == ExitStatus(ExitKind.STOPPED, "test over")


def test_a_bug_in_boot_is_a_500_with_a_fault_message(files: dict[str, str]) -> None:
    def broken(vm: config.VmConfig, *, on_started: Callable[[Guest], None]) -> ExitStatus:
        raise RuntimeError("oops")

    api = Api(Controller(broken))
    configure(api, files)
    response = api.call("PUT", "/actions", {"action_type": "InstanceStart"})
    assert response.status_code == 500 and response.json() == {"fault_message": "isola-vmm bug: RuntimeError('oops')"}
    assert api.ok("GET", "/").json()["state"] == "Not started"


def test_shutdown_stops_a_running_vm(api: Api, guest: GuestStandIn, files: dict[str, str]) -> None:
    assert api.controller.shutdown("SIGTERM") is None  # nothing ran
    api2 = Api(Controller(guest.boot))
    configure(api2, files)
    api2.ok("PUT", "/actions", {"action_type": "InstanceStart"})
    status = api2.controller.shutdown("isola-vmm got SIGTERM")
    assert status == ExitStatus(ExitKind.STOPPED, "isola-vmm got SIGTERM") and status.exit_code == 0


def test_shutdown_during_instance_start_stops_the_vm_once_it_runs(guest: GuestStandIn, files: dict[str, str]) -> None:
    loading = threading.Event()

    def slow(vm: config.VmConfig, *, on_started: Callable[[Guest], None]) -> ExitStatus:
        loading.set()
        time.sleep(0.3)  # loading the kernel
        return guest.boot(vm, on_started=on_started)

    api = Api(Controller(slow))
    configure(api, files)
    starting = threading.Thread(target=api.ok, args=("PUT", "/actions", {"action_type": "InstanceStart"}))
    starting.start()
    assert loading.wait(10)
    status = api.controller.shutdown("isola-vmm got SIGTERM", timeout=10)
    assert status == ExitStatus(ExitKind.STOPPED, "isola-vmm got SIGTERM")
    starting.join(10)
    assert guest.booted is not None and not starting.is_alive()


# --- metrics ---------------------------------------------------------------------------------------------------


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_are_json_lines_on_flush_and_at_the_end(
    api: Api, guest: GuestStandIn, files: dict[str, str], tmp_path: Path
) -> None:
    metrics = tmp_path / "metrics.jsonl"
    assert (
        api.fault("PUT", "/actions", {"action_type": "FlushMetrics"}) == "there is no metrics file: PUT /metrics first"
    )
    api.ok("PUT", "/metrics", {"metrics_path": str(metrics)})
    assert api.fault("PUT", "/metrics", {"metrics_path": str(metrics)}).startswith("metrics already go to")
    api.ok("PUT", "/actions", {"action_type": "FlushMetrics"})
    configure(api, files)
    api.ok("PUT", "/actions", {"action_type": "InstanceStart"})
    api.ok("PUT", "/actions", {"action_type": "FlushMetrics"})
    api.controller.shutdown("done")
    first, running, last = read_lines(metrics)
    assert first["state"] == "Not started" and first["vm"] is None and first["api"]["faults"] == 2
    assert running["state"] == "Running" and running["vm"] == guest.metrics()
    assert running["api"]["requests"] > first["api"]["requests"]
    assert last["state"] == "Ended" and last["vm"] == guest.metrics()  # the VM's final counters
    assert first["utc_timestamp_ms"] <= last["utc_timestamp_ms"]


def test_metrics_are_written_periodically(tmp_path: Path, guest: GuestStandIn) -> None:
    metrics = tmp_path / "metrics.jsonl"
    api = Api(Controller(guest.boot, metrics_interval=0.05))
    api.ok("PUT", "/metrics", {"metrics_path": str(metrics)})
    deadline = time.monotonic() + 10
    while metrics.read_text().count("\n") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    api.controller.shutdown("done")
    assert len(read_lines(metrics)) >= 4  # three periodic lines, and the last one at shutdown


def test_metrics_paths_that_cannot_be_written_are_400(api: Api, tmp_path: Path) -> None:
    message = api.fault("PUT", "/metrics", {"metrics_path": str(tmp_path / "missing" / "m.jsonl")})
    assert message.endswith("No such file or directory") and message.startswith("metrics_path: cannot open")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert api.fault("PUT", "/metrics", {"metrics_path": str(fifo)}).endswith("a FIFO needs a reader first")


# --- OpenAPI and packaging -------------------------------------------------------------------------------------


def test_the_exported_openapi_document_is_the_apps() -> None:
    exported = json.loads(OPENAPI_FILE.read_text())
    assert exported == openapi_document(), (
        "docs/openapi/isola-vmm.json is stale: python -m isola.vmm.api --openapi docs/openapi/isola-vmm.json"
    )


def test_the_openapi_document_promises_firecrackers_answers() -> None:
    document = openapi_document()
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert len(operations) == 16
    for operation in operations:
        assert set(operation["responses"]) in ({"200", "400"}, {"204", "400"}), operation["operationId"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["components"]["schemas"]["Drive"]["additionalProperties"] is False


def test_a_config_boot_does_not_import_fastapi(tmp_path: Path) -> None:
    """The --config path stays quick to start: the api package is imported only for --api-sock."""
    code = (
        "import sys\nfrom isola.vmm import launch\n"
        f"assert launch.main(['--config', {str(tmp_path / 'none.json')!r}]) != 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'pydantic', 'starlette')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
