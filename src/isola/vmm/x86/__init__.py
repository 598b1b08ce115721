"""x86-64 machine set-up: the Linux boot protocol (bzImage, zero page, e820), descriptor and page tables, CPUID,
MSRs, the MP table, and the vCPU state each boot entry expects."""
