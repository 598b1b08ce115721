"""The KVM API through ctypes and fcntl.ioctl: ioctl numbers, structs, and the system/VM/vCPU file descriptors."""

from pathlib import Path

DEV_KVM = Path("/dev/kvm")
