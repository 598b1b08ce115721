"""`isola vm run`: boot a Linux VM on this host's KVM, for people (`isola-vmm` is the Firecracker-style command).

With no options it boots the Debian kernel and a busybox initramfs that `isola assets` fetched, prints what
the guest says, and ends when the guest powers off.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Literal

import click

from isola import paths
from isola.assets import initramfs, manifest
from isola.errors import EngineError, NotFoundError, UsageError
from isola.vmm import config, guest, launch
from isola.vmm.console_socket import ConsoleServer, attach

GREETER = """devices=$(cd /sys/class && ls block net 2>/dev/null | grep -E '^(vd|eth)' | tr '\\n' ' ')
echo "isola: hello from a VM: Linux $(uname -r), $(grep -c ^processor /proc/cpuinfo) vCPU(s); devices: ${devices:-none}"
sleep 1  # poweroff -f does not wait for the serial port to send what the tty still holds
poweroff -f
"""


def greeter_spec(busybox: Path, kernel: Path) -> initramfs.ImageSpec:
    """A busybox initramfs that loads the virtio modules of `kernel`'s package, greets, lists the virtio disks and
    interfaces it sees, and powers off. A kernel from elsewhere gets no modules (its own are unknown)."""
    try:
        return guest.image_spec(busybox, kernel, GREETER)
    except NotFoundError:
        return guest.image_spec(busybox, kernel, GREETER, modules=())


def default_initrd(kernel: Path) -> Path:
    """The greeter for `kernel`, built once per busybox, kernel package and greeter."""
    cache = paths.assets_dir()
    found = manifest.load(cache)
    busybox = found.artifact(cache, "amd64", "busybox")
    digests = {cache / a.path: a.sha256 for p in found.packages for a in p.artifacts}
    key = hashlib.sha256(f"{digests.get(busybox)} {digests.get(kernel, kernel)} {GREETER}".encode()).hexdigest()
    name = f"hello-initrd-{key[:16]}.cpio.gz"
    for directory in (paths.home() / "vmm", Path(tempfile.gettempdir())):  # $ISOLA_HOME may be read-only
        target = directory / name
        if target.exists():
            return target
        try:
            directory.mkdir(parents=True, exist_ok=True)
            initramfs.build(greeter_spec(busybox, kernel), target)
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
@click.option(
    "--console-sock",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="serve the serial console on this unix socket instead of the terminal (`isola vm console PATH`)",
)
@click.option(
    "--on-reboot",
    type=click.Choice(["restart", "exit"]),
    default="restart",
    show_default=True,
    help="when the guest reboots: boot it again, or end",
)
@click.option("--entropy/--no-entropy", default=True, show_default=True, help="a virtio-rng device (/dev/hwrng)")
def run_cmd(
    kernel: Path | None,
    initrd: Path | None,
    append: str,
    cpus: int,
    memory: int,
    disks: tuple[str, ...],
    taps: tuple[str, ...],
    timeout: float | None,
    console_sock: Path | None,
    on_reboot: Literal["restart", "exit"],
    entropy: bool,
) -> None:
    """Boot a VM and stay attached to its serial console until it ends (or serve the console on a socket)."""
    launch.check_host()  # before building anything: this host may not boot kernels at all
    cache = paths.assets_dir()
    kernel = kernel or manifest.load(cache).artifact(cache, "amd64", "kernel")
    initrd = initrd or default_initrd(kernel)
    document = {
        "boot-source": {"kernel_image_path": str(kernel), "initrd_path": str(initrd), "boot_args": append},
        "machine-config": {"vcpu_count": cpus, "mem_size_mib": memory},
        "drives": [_disk(i, d) for i, d in enumerate(disks)],
        "network-interfaces": [{"iface_id": f"eth{i}", "host_dev_name": t} for i, t in enumerate(taps)],
        **({"entropy": {}} if entropy else {}),
    }
    vm_config = config.parse(document)
    if console_sock is None:
        status = launch.boot(vm_config, timeout=timeout, on_reboot=on_reboot)
    else:
        with ConsoleServer(console_sock) as server:
            click.echo(
                f"isola: serial console on {console_sock}; attach with: isola vm console {console_sock}", err=True
            )
            status = launch.boot(
                vm_config, console=server.output, timeout=timeout, on_started=server.on_started(), on_reboot=on_reboot
            )
    click.echo(f"isola: {status.kind}: {status.message}", err=True)
    raise click.exceptions.Exit(status.exit_code)


@vm.command("console")
@click.argument("path", type=click.Path(path_type=Path))
def console_cmd(path: Path) -> None:
    """Attach this terminal to the serial console a VM serves on PATH (`--console-sock`); Ctrl-] detaches.

    The terminal is raw while attached, so Ctrl-C and Ctrl-D go to the guest; it is restored on the way out.
    """
    attach(path, notice=lambda line: click.echo(line, err=True))
