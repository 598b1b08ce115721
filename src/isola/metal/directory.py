"""The state directory of one metal instance: the shared layout (`isola.monitor.directory`) plus the tenant's
working directory.

    <state root>/<id>/        (default /run/isola/metal/<id>)
      instance.json, monitor.json, exit.json, console.sock, console.log, monitor.log, lock   (shared)
      files/          the program's working directory and $HOME: where the tenant's files go, removed by delete
"""

from __future__ import annotations

from pathlib import Path

from isola.monitor import directory


class MetalDir(directory.InstanceDir):
    @property
    def files(self) -> Path:
        return self.path / "files"
