"""The thin layer that touches the host kernel: small typed functions around syscalls and /proc, /sys files.

Code above this layer is plain Python and testable without root; this layer is tested for real.
"""
