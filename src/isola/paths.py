"""Where isola keeps its state on a host.

Everything lives under one directory, `$ISOLA_HOME` (default `/var/lib/isola`), so a test can point a whole
isola at a temporary directory and a host can be cleaned by removing one tree.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = Path("/var/lib/isola")


def home() -> Path:
    """The state directory: `$ISOLA_HOME` if set, else `/var/lib/isola`."""
    return Path(os.environ.get("ISOLA_HOME") or DEFAULT_HOME)


def assets_dir() -> Path:
    """The guest-asset cache (unpacked Debian packages and their manifest)."""
    return home() / "assets"


def apt_dir() -> Path:
    """Private apt state (lists, config) for the archives the assets come from; never the host's own."""
    return home() / "apt"


def store_path() -> Path:
    """The SQLite state store."""
    return home() / "isola.db"


DEFAULT_ISOLAD_SOCKET = Path("/run/isola/isolad.sock")
ISOLAD_SOCKET_VARIABLE = "ISOLA_SOCKET"


def isolad_socket() -> Path:
    """The daemon's unix socket: `$ISOLA_SOCKET`, else /run/isola/isolad.sock."""
    return Path(os.environ.get(ISOLAD_SOCKET_VARIABLE) or DEFAULT_ISOLAD_SOCKET)
