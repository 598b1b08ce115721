"""A process VM under the REST API: after `PUT /process`, InstanceStart runs it instead of booting a kernel.

The VM is `isola-vmm run --process` run as a child of the API process (`process_child`): the launcher confines
the program (chroot, a PID namespace, no capabilities) exactly as on the command line, and the API server,
which has threads, never forks itself. The program's stdin, stdout and stderr are isola-vmm's console socket when
`--console-sock` was given, else isola-vmm's own stdio — where a kernel VM's serial console goes too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from isola.errors import UnsupportedError
from isola.vmm.console_socket import ConsoleServer
from isola.vmm.machine import ExitKind, ExitStatus
from isola.vmm.process_child import ProcessChild, ProcessConfig


@dataclass(frozen=True)
class ProcessExit(ExitStatus):
    """How a process VM ended: isola-vmm's status is then the program's."""

    code: int = 0

    @property
    def exit_code(self) -> int:
        return self.code


class ProcessGuest:
    """The running process VM as the controller sees it (`controller.Guest`)."""

    def __init__(self, child: ProcessChild) -> None:
        self.child = child

    def send_ctrl_alt_del(self) -> None:
        raise UnsupportedError("a process VM has no keyboard to press Ctrl+Alt+Del on")

    def metrics(self) -> dict[str, object]:
        return {"uptime_seconds": round(time.monotonic() - self.child.started, 3), "pid": self.child.pid}

    def stop(self, reason: str = "stopped by the VMM") -> None:
        """SIGTERM to the launcher, which kills the whole VM."""
        self.child.stop()


def config_from_body(body: Mapping[str, Any], memory_mib: int | None) -> ProcessConfig:
    """The ProcessConfig of a `PUT /process` body; `memory_mib` from machine-config when the body has none."""
    defaults = ProcessConfig("")
    return ProcessConfig(
        program=body["program"],
        args=tuple(body.get("args") or ()),
        env=dict(body.get("env") or {}),
        root=body.get("root"),
        memory_mib=body.get("mem_size_mib") or memory_mib or defaults.memory_mib,
        max_processes=body.get("max_processes", defaults.max_processes),
    )


class ProcessRunner:
    """Runs a process VM to its end, its stdio on `console` (None: isola-vmm's own)."""

    def __init__(self, console: ConsoleServer | None = None) -> None:
        self.console = console

    def __call__(self, process: ProcessConfig, *, on_started: Callable[[ProcessGuest], None]) -> ExitStatus:
        console = self.console
        child = ProcessChild(process.launcher_argv(), output=None if console is None else console.output)
        if console is not None:
            console.connect_input(child.feed)
        try:
            child.wait_started()
            on_started(ProcessGuest(child))
        except BaseException:
            child.kill()
            raise
        finally:
            ended = child.wait()  # the program's end, or the reaping of a VM killed above
            if console is not None:
                console.connect_input(None)
        return ProcessExit(ExitKind.POWEROFF if ended.exit_code == 0 else ExitKind.ERROR, ended.detail, ended.exit_code)
