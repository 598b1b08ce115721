"""The state directory of one instance of the vm engine: the shared layout (`isola.monitor.directory`) plus
what only a VM has.

    <state root>/<id>/        (default /run/isola/vm/<id>: runtime state, gone with a reboot, as the guests are)
      instance.json, monitor.json, exit.json, console.sock, console.log, monitor.log, lock   (shared)
      root/           process mode without an image: the program alone, the VM's /
      vm.json         kernel mode: the VM document isola-vmm boots

In kernel mode console.sock is isola-vmm's own --console-sock and console.log holds isola-vmm's messages.
"""

from __future__ import annotations

from pathlib import Path

from isola.monitor import directory


class InstanceDir(directory.InstanceDir):
    @property
    def root(self) -> Path:
        return self.path / "root"

    @property
    def vm_document(self) -> Path:
        return self.path / "vm.json"
