"""The CPUID a vCPU shows its guest: what KVM supports, with the per-vCPU and hypervisor bits a VMM must fill.

KVM_GET_SUPPORTED_CPUID is the upper bound of what this KVM can virtualize, not a finished guest CPUID. It
leaves CPUID.1:ECX[31] ("running under a hypervisor") clear, and Linux only looks at the KVM leaves
(0x40000000: kvm-clock, PV EOI, ...) when that bit is set; without kvm-clock, TSC calibration against the PIT
fails under nested virtualization and the boot falls back to jiffies (research/measurements.md §6d). The APIC
ids must also be made per-vCPU, or every CPU claims to be CPU 0.
"""

from __future__ import annotations

from collections.abc import Iterable

from isola.vmm.kvm.vcpu import CpuidEntry

HYPERVISOR = 1 << 31  # leaf 1 ECX
HTT = 1 << 28  # leaf 1 EDX: EBX[23:16] holds the logical processor count

# Features that need XSAVE-managed state, hidden together with XSAVE itself (`hide_xsave`): under nested SVM in
# TCG the guest's XCR0 changes are not seen by L1 KVM and Linux warns "XSAVE consistency problem" (§6d).
_LEAF1_ECX_XSAVE = (1 << 12) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 29)  # FMA XSAVE OSXSAVE AVX F16C
_LEAF7_EBX_XSAVE = (  # AVX2, AVX-512 F/DQ/IFMA/PF/ER/CD/BW/VL
    (1 << 5) | (1 << 16) | (1 << 17) | (1 << 21) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 30) | (1 << 31)
)
_LEAF7_ECX_XSAVE = (1 << 1) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 14)  # VBMI.. VPOPCNTDQ
_LEAF7_EDX_XSAVE = (1 << 2) | (1 << 3) | (1 << 8) | (1 << 22) | (1 << 23) | (1 << 24) | (1 << 25)  # 4VNNIW.. AMX
_LEAF7_1_EAX_XSAVE = (1 << 4) | (1 << 5)  # AVX-VNNI, AVX512_BF16
_EXT1_ECX_XSAVE = (1 << 11) | (1 << 16)  # AMD XOP, FMA4
XSAVE_LEAF = 0xD


def guest_cpuid(
    supported: Iterable[CpuidEntry], *, vcpu_index: int, vcpu_count: int, hide_xsave: bool = False
) -> list[CpuidEntry]:
    """The CPUID table for vCPU `vcpu_index` (whose APIC id is its index) of `vcpu_count`."""
    out: list[CpuidEntry] = []
    for e in supported:
        if e.function == 0x1:
            ebx = (e.ebx & 0x0000_FFFF) | (vcpu_count & 0xFF) << 16 | (vcpu_index & 0xFF) << 24
            ecx = e.ecx | HYPERVISOR
            edx = e.edx | HTT if vcpu_count > 1 else e.edx & ~HTT
            if hide_xsave:
                ecx &= ~_LEAF1_ECX_XSAVE
            e = e._replace(ebx=ebx, ecx=ecx, edx=edx)
        elif e.function in (0xB, 0x1F):
            e = e._replace(edx=vcpu_index)  # x2APIC id, reported at every topology level
        elif e.function == 0x8000_001E:
            e = e._replace(eax=vcpu_index)  # AMD extended APIC id
        elif hide_xsave and e.function == XSAVE_LEAF:
            continue
        elif hide_xsave and e.function == 0x7 and e.subleaf == 0:
            e = e._replace(ebx=e.ebx & ~_LEAF7_EBX_XSAVE, ecx=e.ecx & ~_LEAF7_ECX_XSAVE, edx=e.edx & ~_LEAF7_EDX_XSAVE)
        elif hide_xsave and e.function == 0x7 and e.subleaf == 1:
            e = e._replace(eax=e.eax & ~_LEAF7_1_EAX_XSAVE)
        elif hide_xsave and e.function == 0x8000_0001:
            e = e._replace(ecx=e.ecx & ~_EXT1_ECX_XSAVE)
        out.append(e)
    return out
