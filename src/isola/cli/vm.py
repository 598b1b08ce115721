"""`isola vm run`: boot a Linux VM on this host's KVM, for people (`isola-vmm` is the Firecracker-style command).

With no options it boots the Debian kernel and a busybox initramfs that `isola assets` fetched, prints what
the guest says, and ends when the guest powers off.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from isola import paths
from isola.assets import initramfs, manifest
from isola.errors import EngineError, UsageError
from isola.vmm import config, launch

DEFAULT_INIT = """#!/bin/sh
mount -t proc proc /proc
echo "isola: hello from a VM: Linux $(uname -r), $(grep -c ^processor /proc/cpuinfo) vCPU(s)"
poweroff -f
"""


def default_initrd() -> Path:
    """A busybox initramfs that greets and powers off, built once per busybox version."""
    cache = paths.assets_dir()
    busybox = manifest.load(cache).artifact(cache, "amd64", "busybox")
    digest = next(a.sha256 for p in manifest.load(cache).packages for a in p.artifacts if cache / a.path == busybox)
    name = f"hello-initrd-{digest[:16]}.cpio.gz"
    for directory in (paths.home() / "vmm", Path(tempfile.gettempdir())):  # $ISOLA_HOME may be read-only
        target = directory / name
        if target.exists():
            return target
        try:
            directory.mkdir(parents=True, exist_ok=True)
            initramfs.build(initramfs.busybox_image(busybox, DEFAULT_INIT), target)
            return target
        except OSError:
            continue
    raise EngineError(f"cannot write the default initramfs to {paths.home() / 'vmm'} or the temp directory")


def _disk(index: int, spec: str) -> dict[str, object]:
    path, _, flag = spec.partition(",")
    if flag not in ("", "ro"):
        raise UsageError(f"--disk {spec}: expected FILE or FILE,ro")
    return {"drive_id": f"disk{index}", "path_on_host": path, "is_read_only": flag == "ro"}


@click.group()
def vm() -> None:
    """Virtual machines on this host's KVM."""


@vm.command("run")
@click.option(
    "--kernel", type=click.Path(dir_okay=False, path_type=Path), help="bzImage (default: Debian's, from assets)"
)
@click.option(
    "--initrd", type=click.Path(dir_okay=False, path_type=Path), help="initramfs (default: a busybox greeter)"
)
@click.option("--append", default=launch.DEFAULT_APPEND + " quiet", show_default=True, help="kernel command line")
@click.option("--cpus", type=int, default=1, show_default=True)
@click.option("--memory", type=int, default=256, show_default=True, help="MiB")
@click.option("--disk", "disks", multiple=True, metavar="FILE[,ro]", help="a virtio-blk disk (repeatable)")
@click.option("--net", "taps", multiple=True, metavar="TAP", help="a virtio-net interface on a tap (repeatable)")
@click.option("--timeout", type=float, help="seconds before the guest counts as hung")
def run_cmd(
    kernel: Path | None,
    initrd: Path | None,
    append: str,
    cpus: int,
    memory: int,
    disks: tuple[str, ...],
    taps: tuple[str, ...],
    timeout: float | None,
) -> None:
    """Boot a VM and stay attached to its serial console until it ends."""
    launch.check_host()  # before building anything: this host may not boot kernels at all
    cache = paths.assets_dir()
    kernel = kernel or manifest.load(cache).artifact(cache, "amd64", "kernel")
    initrd = initrd or default_initrd()
    document = {
        "boot-source": {"kernel_image_path": str(kernel), "initrd_path": str(initrd), "boot_args": append},
        "machine-config": {"vcpu_count": cpus, "mem_size_mib": memory},
        "drives": [_disk(i, d) for i, d in enumerate(disks)],
        "network-interfaces": [{"iface_id": f"eth{i}", "host_dev_name": t} for i, t in enumerate(taps)],
    }
    status = launch.boot(config.parse(document), timeout=timeout)
    click.echo(f"isola: {status.kind}: {status.message}", err=True)
    raise click.exceptions.Exit(status.exit_code)
