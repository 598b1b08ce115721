"""The request and response bodies of isola-vmm's REST API, named and shaped like Firecracker's.

A model checks a body's *shape*: which fields exist, which are required, their JSON types (strictly: `"2"` is
not a number, `1` is not a boolean). Whether the values make a bootable VM — files that exist, vCPU and memory
ranges, unique ids, MAC addresses — is `isola.vmm.config`'s job, so `--config vm.json` and the API reject the
same documents with the same messages. Only the fields isola-vmm implements are accepted; Firecracker's others
(`smt`, `rate_limiter`, `cache_type`, ...) are unknown fields, not silently ignored settings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

InstanceState = Literal["Not started", "Running", "Ended"]
"""Firecracker also has "Paused"; isola-vmm cannot pause a VM, so it never reports it. "Ended" is isola's: a
process VM whose program has ended (isola-vmm keeps serving then, so that its exit status can be read); a kernel
VM's end ends isola-vmm, as in Firecracker."""

ActionType = Literal["InstanceStart", "SendCtrlAltDel", "FlushMetrics"]


class Body(BaseModel):
    """Strict JSON types, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Error(Body):
    fault_message: str = Field(description="What was wrong with the request, naming the field when one was.")


class InstanceInfo(Body):
    id: str = Field(description="The instance id (Firecracker's --id); isola-vmm's is always the default.")
    state: InstanceState
    vmm_version: str
    app_name: str = Field(description='Always "isola-vmm".')


class VmmVersion(Body):
    vmm_version: str


class BootSource(Body):
    kernel_image_path: str = Field(description="A bzImage on the host.")
    initrd_path: str | None = Field(default=None, description="An initramfs (cpio, optionally compressed).")
    boot_args: str | None = Field(default=None, description="The kernel command line.")


class MachineConfiguration(Body):
    vcpu_count: int = Field(description="Number of vCPUs.")
    mem_size_mib: int = Field(description="Guest memory in MiB.")


class MachineConfigurationUpdate(Body):
    """PATCH /machine-config: only the fields given change."""

    vcpu_count: int | None = None
    mem_size_mib: int | None = None


class Drive(Body):
    drive_id: str = Field(description="Must equal the id in the path.")
    path_on_host: str = Field(description="A raw disk image.")
    is_read_only: bool | None = None
    is_root_device: bool | None = Field(default=None, description="Must be false: isola-vmm boots an initrd.")


class PartialDrive(Body):
    """PATCH /drives/{drive_id}: only the fields given change."""

    drive_id: str = Field(description="Must equal the id in the path.")
    path_on_host: str | None = None
    is_read_only: bool | None = None


class NetworkInterface(Body):
    iface_id: str = Field(description="Must equal the id in the path.")
    host_dev_name: str = Field(description="The tap device on the host.")
    guest_mac: str | None = Field(default=None, description="A unicast MAC; one is made up when absent.")


class PartialNetworkInterface(Body):
    """PATCH /network-interfaces/{iface_id}: only the fields given change."""

    iface_id: str = Field(description="Must equal the id in the path.")
    host_dev_name: str | None = None
    guest_mac: str | None = None


class EntropyDevice(Body):
    """PUT /entropy: a virtio-rng device fed from the host's getrandom(). Firecracker's `rate_limiter` is not
    supported, so the body is an empty object."""


class ProcessConfiguration(Body):
    """PUT /process: a process VM (one static x86-64 program, its system calls served by isola), instead of a
    boot source. The fields are `isola-vmm run --process`'s options."""

    program: str = Field(description="A path inside `root`; without `root`, a host file copied alone into a fresh /.")
    args: list[str] | None = Field(default=None, description="The program's arguments (after argv[0]).")
    env: dict[str, str] | None = Field(default=None, description="Its whole environment.")
    root: str | None = Field(default=None, description="A host directory: the program's /.")
    mem_size_mib: int | None = Field(
        default=None, description="Guest memory: a multiple of 2 from 16 (default: machine-config's, else 1024)."
    )
    max_processes: int | None = Field(default=None, description="Guest processes alive at once (default 256).")


class VmState(Body):
    """GET /vm: the VM's state and, once it has ended, how."""

    state: InstanceState
    exit_code: int | None = Field(
        default=None, description="Once ended: the program's status (128 + N after signal N), or isola-vmm's."
    )
    detail: str | None = Field(default=None, description="Once ended: how, in words.")


class InstanceActionInfo(Body):
    action_type: ActionType


class Metrics(Body):
    metrics_path: str = Field(
        description="A file (created when missing, appended to) or a FIFO with a reader; one JSON object per line."
    )


class FullVmConfiguration(Body):
    """GET /vm/config: the configuration as a document `isola-vmm --config` accepts."""

    model_config = ConfigDict(populate_by_name=True)

    boot_source: BootSource | None = Field(default=None, alias="boot-source")
    machine_config: MachineConfiguration = Field(alias="machine-config")
    drives: list[Drive]
    network_interfaces: list[NetworkInterface] = Field(alias="network-interfaces")
    entropy: EntropyDevice | None = None
    process: ProcessConfiguration | None = None
