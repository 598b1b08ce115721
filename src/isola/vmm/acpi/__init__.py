"""ACPI tables for the microVM: an AML encoder and the RSDP/XSDT/FADT/MADT/DSDT builder."""
