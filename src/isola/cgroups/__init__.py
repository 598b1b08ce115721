"""cgroups: what the host offers (v1, v2 or the hybrid of both) and, later, per-version backends."""
