"""How the CLI reaches isolad: its unix socket, the caller's token, and starting the daemon when it is down.

`$ISOLA_SOCKET` names the socket (default /run/isola/isolad.sock); `$ISOLA_TOKEN` makes the CLI act as that
token's tenant (without it, root on the socket is the admin). When nothing serves on the socket, the first
command starts isolad detached (its own session, its output in `$ISOLA_HOME/isolad.log`) and waits for it,
as Docker's socket activation would, so `isola instance ls` just works on a fresh host.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from isola import paths
from isola.errors import UnsupportedError
from isola.host import unix_socket

if TYPE_CHECKING:
    from isola.platform.client import Client

TOKEN_VARIABLE = "ISOLA_TOKEN"
START_SECONDS = 20.0


def log_path() -> Path:
    return paths.home() / "isolad.log"


def start_daemon(sock: Path) -> int:
    """Start isolad detached on `sock` and wait until it serves; its pid."""
    log = log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "isola.platform.daemon", "--socket", str(sock)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            cwd="/",
        )
    deadline = time.monotonic() + START_SECONDS
    while not unix_socket.serving(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = " / ".join(log.read_text(errors="replace").strip().splitlines()[-2:])
            raise UnsupportedError(f"isolad did not start on {sock}: {tail or 'no output'}", hint=f"see {log}")
        time.sleep(0.05)
    return proc.pid


def client(*, start: bool = True) -> Client:
    """A client of the running isolad, started first when `start` and nothing serves on the socket."""
    from isola.platform.client import Client  # httpx: only for the commands that talk to isolad

    sock = paths.isolad_socket()
    if start and not unix_socket.serving(sock):
        start_daemon(sock)
    return Client(sock, os.environ.get(TOKEN_VARIABLE) or None)
