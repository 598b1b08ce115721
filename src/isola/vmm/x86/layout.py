"""Where the VMM puts things in guest-physical memory below 1 MiB, and the fixed x86 platform addresses.

The low-memory map follows Firecracker's and crosvm's (research/vmm.md §4.3), so anyone who knows those
VMMs can read a guest memory dump of ours. Everything below 0x9fc00 is usable RAM in the e820 map, so the
boot-time tables here (GDT, page tables, zero page) are simply reused by Linux once it no longer needs them.
"""

from __future__ import annotations

GDT_ADDR = 0x500
ZERO_PAGE_ADDR = 0x7000
BOOT_STACK_ADDR = 0x8FF0
PAGE_TABLES_ADDR = 0x9000
"""PML4, then the PDPT, then four page directories: 0x9000-0xefff."""
CMDLINE_ADDR = 0x20000
EBDA_START = 0x9FC00
"""Start of the last KiB of base memory: reserved in e820, where Linux looks for the MP floating pointer."""
MPTABLE_ADDR = EBDA_START
ACPI_TABLES_ADDR = 0xE0000
"""The RSDP and the tables after it, in the reserved BIOS area where Linux also scans for the RSDP."""
HIMEM_START = 0x100000
KERNEL_LOAD_ADDR = HIMEM_START
"""Where the bzImage's protected-mode code goes (its `code32_start`); it relocates itself from there."""

IOAPIC_ADDR = 0xFEC0_0000
LAPIC_ADDR = 0xFEE0_0000
VIRTIO_MMIO_BASE = 0xD000_0000
"""The first virtio-mmio window (one page per device), in the MMIO hole below 4 GiB, as in Firecracker."""

ACPI_PM_PORT = 0x600
"""The sleep control, sleep status and reset registers of the hardware-reduced ACPI platform (3 ports)."""
