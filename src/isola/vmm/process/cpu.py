"""The program's registers as the personality sees them (the x86-64 ABI's `X86Cpu`), kept in the VMM.

At each exit KVM has already copied the general and segment registers into `kvm_run` (KVM_CAP_SYNC_REGS); they
are copied once more into this object, so that what the personality changes is plain attribute writes and
what goes back to KVM is one copy plus the dirty bits. Owning a copy also matters for fork: a child VM must not
read the parent's `kvm_run`, which stays shared with the parent after `os.fork()`.

The x87/SSE/AVX state is fetched only when a signal frame needs it (KVM_GET_XSAVE is an extra ioctl).
"""

from __future__ import annotations

import ctypes
import struct

from isola.vmm.kvm import ioctls, structs
from isola.vmm.kvm.vcpu import Vcpu

FXSAVE_SIZE = 512
_XSTATE_BV = struct.Struct("<Q")
_XSTATE_BV_AT = 512  # the XSAVE header follows the legacy (FXSAVE) region
_X87_SSE = 0b11


class X86State(structs.Regs):
    """`structs.Regs` (rax..r15, rip, rflags as attributes) plus what the ABI needs beyond them."""

    def __init__(self, vcpu: Vcpu) -> None:
        super().__init__()
        self.vcpu = vcpu
        self.sregs = structs.Sregs()
        self.sregs_dirty = False
        self.orig_rax = 0
        self.trapno = 0
        self.err = 0
        self.cr2 = 0
        self._xsave: bytes | None = None
        self._xsave_dirty = False

    # -- moving state between KVM and here

    def load(self) -> None:
        """Take the registers KVM mirrored into kvm_run at this exit."""
        sync = self.vcpu.kvm_run.s.regs
        ctypes.memmove(ctypes.addressof(self), ctypes.addressof(sync.regs), ctypes.sizeof(structs.Regs))
        ctypes.memmove(ctypes.addressof(self.sregs), ctypes.addressof(sync.sregs), ctypes.sizeof(structs.Sregs))
        self._xsave = None

    def fetch(self) -> None:
        """Read the registers with ioctls: before the first run, kvm_run holds nothing yet."""
        ctypes.memmove(ctypes.addressof(self), ctypes.addressof(self.vcpu.get_regs()), ctypes.sizeof(structs.Regs))
        self.sregs = self.vcpu.get_sregs()
        self._xsave = None

    def store(self) -> None:
        """Hand the registers back for the next KVM_RUN (segment registers only if they changed)."""
        run = self.vcpu.kvm_run
        sync = run.s.regs
        ctypes.memmove(ctypes.addressof(sync.regs), ctypes.addressof(self), ctypes.sizeof(structs.Regs))
        dirty = ioctls.KVM_SYNC_X86_REGS
        if self.sregs_dirty:
            ctypes.memmove(ctypes.addressof(sync.sregs), ctypes.addressof(self.sregs), ctypes.sizeof(structs.Sregs))
            dirty |= ioctls.KVM_SYNC_X86_SREGS
            self.sregs_dirty = False
        run.kvm_dirty_regs = dirty
        if self._xsave_dirty and self._xsave is not None:
            self.vcpu.set_xsave(self._xsave)
            self._xsave_dirty = False

    def rebind(self, vcpu: Vcpu) -> None:
        """Continue on another vCPU (a fork child's new VM): the next store writes everything."""
        self.vcpu = vcpu
        self.sregs_dirty = True

    # -- what the ABI reads and writes beyond the general registers

    @property
    def fs_base(self) -> int:
        return int(self.sregs.fs.base)

    @fs_base.setter
    def fs_base(self, value: int) -> None:
        self.sregs.fs.base = value
        self.sregs_dirty = True

    @property
    def gs_base(self) -> int:
        return int(self.sregs.gs.base)

    @gs_base.setter
    def gs_base(self, value: int) -> None:
        self.sregs.gs.base = value
        self.sregs_dirty = True

    @property
    def cpl(self) -> int:
        return int(self.sregs.cs.selector) & 3

    def xsave(self) -> bytes:
        if self._xsave is None:
            self._xsave = self.vcpu.get_xsave()
        return self._xsave

    def set_xsave(self, area: bytes) -> None:
        self._xsave = area
        self._xsave_dirty = True

    def fxsave(self) -> bytes:
        return self.xsave()[:FXSAVE_SIZE]

    def fxrstor(self, image: bytes) -> None:
        area = bytearray(self.xsave())
        area[:FXSAVE_SIZE] = image[:FXSAVE_SIZE]
        (bv,) = _XSTATE_BV.unpack_from(area, _XSTATE_BV_AT)
        _XSTATE_BV.pack_into(area, _XSTATE_BV_AT, bv | _X87_SSE)  # the image is live state, not init state
        self.set_xsave(bytes(area))
