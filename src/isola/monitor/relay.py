"""A guest's output to both its console socket (for whoever is attached) and its log file (kept after it ends)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import BinaryIO

from isola.vmm.console_socket import ConsoleServer


def tee(log: BinaryIO, console: ConsoleServer) -> Callable[[bytes], None]:
    """A sink that sends output to the console and appends it to `log`; a full disk loses log lines, not the
    guest."""

    def output(data: bytes) -> None:
        console.output(data)
        with contextlib.suppress(OSError):
            log.write(data)

    return output
