"""Debian's kernel finds the VMM's i8042 and PS/2 keyboard, binds atkbd, and reboots on Ctrl+Alt+Del.

Two ways a guest handles the keys, both ending the VMM with ExitKind.REBOOT:
* a shell as /init leaves Ctrl+Alt+Del to the kernel, which restarts at once (through `reboot=k`, i.e. the
  i8042's reset line);
* busybox init takes the key over (it turns the kernel's handling off and gets SIGINT instead) and runs its
  inittab `ctrlaltdel` action.
The second boots without `i8042.dumbkbd`, so atkbd really probes the keyboard (GET ID, LEDs, typematic rate,
enable) before it binds.

Needs a KVM that runs guest kernel code natively; `make test-nested` runs it inside the nested lane's L1.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from isola.assets import initramfs
from isola.assets.initramfs import File
from isola.vmm import config, launch
from isola.vmm.machine import ExitKind, ExitStatus
from tests.conftest import amd64_asset

pytestmark = [pytest.mark.slow, pytest.mark.real_kvm, pytest.mark.timeout(900)]

BOOT_TIMEOUT = 300.0
READY = "ISOLA-KEYBOARD-READY"
INIT_CAD = "ISOLA-CTRL-ALT-DEL-BY-INIT"
KEYBOARD_LINE = "input: AT Translated Set 2 keyboard"

# Mounts, waits (up to 30 s) for atkbd to bind the keyboard port, shows what the kernel said about it.
WAIT_FOR_KEYBOARD = f"""mount -t proc proc /proc
mount -t sysfs sysfs /sys
i=0
while [ ! -e /sys/bus/serio/drivers/atkbd/serio0 ] && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done
dmesg | grep -E 'i8042|atkbd|serio|input:'
echo "{READY} uptime=$(cut -d' ' -f1 /proc/uptime)"
"""


@pytest.fixture(scope="module")
def kernel() -> Path:
    return amd64_asset("kernel")


@pytest.fixture(scope="module")
def shell_initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("initrd") / "shell.cpio.gz"
    init = f"#!/bin/sh\n{WAIT_FOR_KEYBOARD}sleep 600\n"
    initramfs.build(initramfs.busybox_image(amd64_asset("busybox"), init), out)
    return out


@pytest.fixture(scope="module")
def busybox_init_initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("initrd") / "busybox-init.cpio.gz"
    extra = (
        File("/etc/inittab", b"::sysinit:/etc/rcS\n::ctrlaltdel:/etc/ctrlaltdel\n"),
        File("/etc/rcS", f"#!/bin/sh\n{WAIT_FOR_KEYBOARD}".encode(), mode=0o755),
        File("/etc/ctrlaltdel", f"#!/bin/sh\necho {INIT_CAD}\nreboot -f\n".encode(), mode=0o755),
    )
    image = initramfs.busybox_image(amd64_asset("busybox"), "#!/bin/sh\nexec /bin/busybox init\n", extra=extra)
    initramfs.build(image, out)
    return out


class Console:
    """Collects the console and tells, line by line, when the guest said it is ready."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ready = threading.Event()
        self._line = bytearray()

    def feed(self, data: bytes) -> None:
        self.data += data
        for byte in data:
            if byte == 0x0A:
                if READY.encode() in self._line:
                    self.ready.set()
                self._line.clear()
            else:
                self._line.append(byte)

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def boot_and_press(kernel: Path, initrd: Path, append: str) -> tuple[ExitStatus, str]:
    console = Console()
    pressed: list[bool] = []

    def press_when_ready(vm: launch.RunningVm) -> None:
        if console.ready.wait(BOOT_TIMEOUT):
            vm.send_ctrl_alt_del()
            pressed.append(True)

    def on_started(vm: launch.RunningVm) -> None:
        threading.Thread(target=press_when_ready, args=(vm,), daemon=True).start()

    document = {
        "boot-source": {"kernel_image_path": str(kernel), "initrd_path": str(initrd), "boot_args": append},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 256},
    }
    status = launch.boot(config.parse(document), console=console.feed, timeout=BOOT_TIMEOUT, on_started=on_started)
    text = console.text()
    assert pressed, f"the guest never got ready ({status}):\n{text[-3000:]}"
    return status, text


def _keyboard_lines(console: str) -> list[str]:
    return [line for line in console.splitlines() if any(w in line for w in ("i8042", "atkbd", "serio", "input:"))]


def test_the_kernel_reboots_on_ctrl_alt_del(kernel: Path, shell_initrd: Path) -> None:
    status, console = boot_and_press(kernel, shell_initrd, f"{launch.DEFAULT_APPEND} quiet")
    assert status.kind is ExitKind.REBOOT, (status, console[-3000:])
    assert KEYBOARD_LINE in console, console[-3000:]
    assert "No controller found" not in console


def test_busybox_init_handles_ctrl_alt_del_from_a_probed_keyboard(kernel: Path, busybox_init_initrd: Path) -> None:
    append = launch.DEFAULT_APPEND.replace(" i8042.dumbkbd", "") + " quiet"
    status, console = boot_and_press(kernel, busybox_init_initrd, append)
    assert status.kind is ExitKind.REBOOT, (status, console[-3000:])
    assert INIT_CAD in console, console[-3000:]
    lines = _keyboard_lines(console)
    assert any(KEYBOARD_LINE in line for line in lines), lines
    trouble = [line for line in lines if any(w in line.lower() for w in ("fail", "timeout", "can't", "spurious"))]
    assert trouble == [], trouble
