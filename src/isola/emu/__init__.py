"""isola-emu: riscv64 (RV64GC) Linux programs on an x86-64 host, in pure Python."""
