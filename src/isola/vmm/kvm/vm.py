"""The /dev/kvm system fd (`Kvm`) and a VM fd (`Vm`): memory slots, the in-kernel irqchip and PIT, IRQ lines,
irqfd and ioeventfd.

Every ioctl failure becomes an `EngineError` naming the ioctl and the errno, because "OSError: [Errno 22]" out of
a VMM tells nobody which of thirty calls the kernel refused.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from pathlib import Path
from typing import Self

from isola.errors import EngineError, UnsupportedError
from isola.vmm.kvm import DEV_KVM, ioctls, structs
from isola.vmm.kvm.vcpu import CpuidEntry, Vcpu

TSS_ADDRESS = 0xFFFB_D000
"""Three pages KVM uses for the real-mode TSS on Intel (VMX cannot run real mode without one). Below the 4 GiB
boundary, in the MMIO hole, clear of the IOAPIC/LAPIC windows and of any RAM."""
IDENTITY_MAP_ADDRESS = 0xFFFB_C000
"""The page just below the TSS: the identity page table VMX uses for unpaged protected mode."""


class Kvm:
    """An open /dev/kvm: capability checks, the vCPU mmap size, supported CPUID, and VM creation."""

    def __init__(self, path: Path = DEV_KVM) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise UnsupportedError(f"cannot open {path}: {exc.strerror}", hint="isola doctor explains why") from exc
        version = ioctls.call(self.fd, "KVM_GET_API_VERSION", ioctls.KVM_GET_API_VERSION)
        if version != ioctls.KVM_API_VERSION:
            os.close(self.fd)
            raise UnsupportedError(f"KVM API version {version}, isola needs {ioctls.KVM_API_VERSION}")
        self.vcpu_mmap_size = ioctls.call(self.fd, "KVM_GET_VCPU_MMAP_SIZE", ioctls.KVM_GET_VCPU_MMAP_SIZE)

    def check_extension(self, cap: int) -> int:
        return ioctls.call(self.fd, "KVM_CHECK_EXTENSION", ioctls.KVM_CHECK_EXTENSION, cap)

    def supported_cpuid(self) -> list[CpuidEntry]:
        """KVM_GET_SUPPORTED_CPUID: every leaf this KVM can present to a guest. Grows the buffer on E2BIG."""
        count = 64
        while True:
            buf = structs.cpuid2_type(count)()
            buf.nent = count
            try:
                fcntl.ioctl(self.fd, ioctls.KVM_GET_SUPPORTED_CPUID, buf, True)
            except OSError as exc:
                if exc.errno == errno.E2BIG and count < 4096:
                    count *= 2
                    continue
                raise EngineError(f"KVM_GET_SUPPORTED_CPUID failed: {exc.strerror}") from exc
            return [
                CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx) for e in buf.entries[: buf.nent]
            ]

    def create_vm(self) -> Vm:
        return Vm(self, ioctls.call(self.fd, "KVM_CREATE_VM", ioctls.KVM_CREATE_VM, 0))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class IrqLine:
    """A GSI of the in-kernel irqchip driven by KVM_IRQ_LINE: the devices' `IrqLine`.

    ISA interrupts are edge-triggered at the PIC and IOAPIC, so a device that raises its line while it is already
    high produces no new interrupt; that is the 8250's real behaviour, and why the line's level is what devices
    set rather than a "pulse".
    """

    def __init__(self, vm: Vm, gsi: int) -> None:
        self._vm = vm
        self.gsi = gsi

    def set_level(self, high: bool) -> None:
        self._vm.set_irq_line(self.gsi, high)


class Vm:
    """A KVM VM fd. Create the irqchip and PIT before any vCPU: KVM refuses them afterwards."""

    def __init__(self, kvm: Kvm, fd: int) -> None:
        self.kvm = kvm
        self.fd = fd
        self._vcpus: list[Vcpu] = []

    def check_extension(self, cap: int) -> int:
        """Per-VM capability check (some answers, like the vCPU limit, depend on the VM)."""
        return ioctls.call(self.fd, "KVM_CHECK_EXTENSION", ioctls.KVM_CHECK_EXTENSION, cap)

    def set_user_memory_region(
        self, slot: int, gpa: int, size: int, host_address: int, *, read_only: bool = False
    ) -> None:
        """Back [gpa, gpa+size) with host memory at `host_address` (size 0 deletes the slot). A `read_only`
        slot turns guest writes into MMIO exits, so it can map a file the VMM opened read-only."""
        region = structs.UserspaceMemoryRegion(
            slot=slot,
            flags=ioctls.KVM_MEM_READONLY if read_only else 0,
            guest_phys_addr=gpa,
            memory_size=size,
            userspace_addr=host_address,
        )
        ioctls.call(self.fd, "KVM_SET_USER_MEMORY_REGION", ioctls.KVM_SET_USER_MEMORY_REGION, region)

    def set_x86_system_pages(self) -> None:
        """Place KVM's TSS and identity-map pages (needed by VMX for real mode) where no RAM is.

        Only where the capability exists: AMD and PVM do not need them, and the identity map must be set before
        the first vCPU.
        """
        if self.check_extension(ioctls.KVM_CAP_SET_IDENTITY_MAP_ADDR):
            addr = ctypes.c_uint64(IDENTITY_MAP_ADDRESS)
            ioctls.call(self.fd, "KVM_SET_IDENTITY_MAP_ADDR", ioctls.KVM_SET_IDENTITY_MAP_ADDR, addr)
        if self.check_extension(ioctls.KVM_CAP_SET_TSS_ADDR):
            ioctls.call(self.fd, "KVM_SET_TSS_ADDR", ioctls.KVM_SET_TSS_ADDR, TSS_ADDRESS)

    def create_irqchip(self) -> None:
        """The in-kernel 8259 pair, IOAPIC and per-vCPU local APICs; HLT is then handled inside KVM."""
        if not self.check_extension(ioctls.KVM_CAP_IRQCHIP):
            raise UnsupportedError("this KVM has no in-kernel irqchip (KVM_CAP_IRQCHIP)")
        ioctls.call(self.fd, "KVM_CREATE_IRQCHIP", ioctls.KVM_CREATE_IRQCHIP, 0)

    def create_pit2(self) -> None:
        """The in-kernel 8254 timer on ports 0x40-0x43; the dummy speaker answers port 0x61 inside KVM too."""
        if not self.check_extension(ioctls.KVM_CAP_PIT2):
            raise UnsupportedError("this KVM has no in-kernel PIT (KVM_CAP_PIT2)")
        ioctls.call(
            self.fd, "KVM_CREATE_PIT2", ioctls.KVM_CREATE_PIT2, structs.PitConfig(flags=ioctls.KVM_PIT_SPEAKER_DUMMY)
        )

    def set_irq_line(self, gsi: int, high: bool) -> None:
        ioctls.call(self.fd, "KVM_IRQ_LINE", ioctls.KVM_IRQ_LINE, structs.IrqLevel(irq=gsi, level=int(high)))

    def irq_line(self, gsi: int) -> IrqLine:
        return IrqLine(self, gsi)

    def assign_irqfd(self, eventfd: int, gsi: int, *, deassign: bool = False) -> None:
        """Route `eventfd` to `gsi`: a write to the eventfd (from any thread or process) injects an edge."""
        flags = ioctls.KVM_IRQFD_FLAG_DEASSIGN if deassign else 0
        ioctls.call(self.fd, "KVM_IRQFD", ioctls.KVM_IRQFD, structs.Irqfd(fd=eventfd, gsi=gsi, flags=flags))

    def assign_ioeventfd(
        self,
        eventfd: int,
        address: int,
        length: int,
        *,
        datamatch: int | None = None,
        pio: bool = False,
        deassign: bool = False,
    ) -> None:
        """Make a guest write of `length` bytes at `address` (a port if `pio`) signal `eventfd` inside KVM.

        With `datamatch`, only writes of that value do (virtio-mmio's QueueNotify carries the queue index). The
        write then never reaches the vCPU thread: a virtio kick costs no exit to user space.
        """
        flags = 0
        if datamatch is not None:
            flags |= ioctls.KVM_IOEVENTFD_FLAG_DATAMATCH
        if pio:
            flags |= ioctls.KVM_IOEVENTFD_FLAG_PIO
        if deassign:
            flags |= ioctls.KVM_IOEVENTFD_FLAG_DEASSIGN
        arg = structs.Ioeventfd(datamatch=datamatch or 0, addr=address, len=length, fd=eventfd, flags=flags)
        ioctls.call(self.fd, "KVM_IOEVENTFD", ioctls.KVM_IOEVENTFD, arg)

    def create_vcpu(self, index: int) -> Vcpu:
        """vCPU `index`; its local APIC id is `index` too (KVM's default), which the MP table relies on."""
        fd = ioctls.call(self.fd, "KVM_CREATE_VCPU", ioctls.KVM_CREATE_VCPU, index)
        vcpu = Vcpu(fd, index, self.kvm.vcpu_mmap_size)
        self._vcpus.append(vcpu)
        return vcpu

    def close(self) -> None:
        """Close the vCPUs and the VM fd. KVM frees the VM (and stops using guest RAM) when the last fd closes."""
        for vcpu in self._vcpus:
            vcpu.close()
        self._vcpus.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
