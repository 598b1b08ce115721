"""Giving up a process's privileges for good: every capability, in all sets, and the right to regain them.

What isola runs as root on behalf of an untrusted program (the process VM's monitor, after it has opened what
it needs) drops to this: it keeps its uid 0 and its open file descriptors, but can no longer create device
nodes, change the clock, mount, chroot again, trace, or override file permissions.
"""

from __future__ import annotations

from isola.host import caps


def drop_capabilities() -> None:
    """Empty the bounding and ambient sets, then the effective/permitted/inheritable ones; set no_new_privs
    (so that no setuid file or file capability can give anything back)."""
    caps.drop_bounding(0)
    caps.set_ambient(0)
    caps.capset(0, 0, 0)
    caps.no_new_privs()
