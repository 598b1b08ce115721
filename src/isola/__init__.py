"""isola: run a workload at the isolation it needs (emulated, vm, container, metal) and measure what it costs."""

__version__ = "0.1.0"
