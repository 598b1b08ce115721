"""The model-specific registers a vCPU starts with.

KVM's reset values are those of a CPU fresh out of reset, and firmware normally sets a few of them before
Linux runs; with no firmware, the VMM does. The SYSCALL/SYSENTER MSRs are zeroed so no stale value leaks in
(Linux sets them up itself), caching is made write-back through MTRRdefType (otherwise the default memory type
is uncacheable, which is slow where the hardware honours it), and fast-string operations are enabled.
"""

from __future__ import annotations

IA32_TSC = 0x10
IA32_SYSENTER_CS = 0x174
IA32_SYSENTER_ESP = 0x175
IA32_SYSENTER_EIP = 0x176
IA32_MISC_ENABLE = 0x1A0
IA32_MTRR_DEF_TYPE = 0x2FF
STAR = 0xC000_0081
LSTAR = 0xC000_0082
CSTAR = 0xC000_0083
SYSCALL_MASK = 0xC000_0084
KERNEL_GS_BASE = 0xC000_0102

MISC_ENABLE_FAST_STRING = 1 << 0
MTRR_ENABLE = 1 << 11
MTRR_TYPE_WRBACK = 6


def boot_msrs() -> dict[int, int]:
    """MSR index -> value for every vCPU before its first run (the same on each, TSC included, so KVM keeps
    the vCPUs' TSCs synchronized)."""
    return {
        IA32_SYSENTER_CS: 0,
        IA32_SYSENTER_ESP: 0,
        IA32_SYSENTER_EIP: 0,
        STAR: 0,
        LSTAR: 0,
        CSTAR: 0,
        SYSCALL_MASK: 0,
        KERNEL_GS_BASE: 0,
        IA32_TSC: 0,
        IA32_MISC_ENABLE: MISC_ENABLE_FAST_STRING,
        IA32_MTRR_DEF_TYPE: MTRR_ENABLE | MTRR_TYPE_WRBACK,
    }
