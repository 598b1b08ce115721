"""Device models that know nothing about the engine running the guest.

A device sees guest-physical memory (`bus.PhysicalMemory`) and an interrupt line (`bus.IrqLine`), and answers
reads and writes of its register window (`bus.Device`). The KVM VMM and the RISC-V system emulator both attach
the same models to their own `bus.Bus` instances.
"""
