"""The Linux personality: system calls, memory maps, signals and processes for a guest program.

Written once and shared by two engines: `isola-emu` (riscv64 programs, interpreted) and `isola-vmm` process
mode (x86-64 programs in a KVM VM). Each supplies guest memory and registers (`guest.py`) and an ABI
(syscall numbers, struct layouts, signal frames); everything else is common.
"""
