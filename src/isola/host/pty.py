"""Pseudo-terminals opened through a given /dev/ptmx, so that a container's terminal belongs to the devpts
instance mounted inside the container (the one its /dev/pts shows), not to the host's.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios

TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430
TIOCGPTPEER = 0x5441


def open_pty(ptmx: str = "/dev/ptmx") -> tuple[int, int, str]:
    """(master fd, slave fd, slave path). The slave is opened through the master (TIOCGPTPEER), which cannot be
    fooled by a different file at the slave's path."""
    master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        os.close(master)
        raise
    return master, slave, f"/dev/pts/{number}"


def set_size(fd: int, rows: int, cols: int) -> None:
    """TIOCSWINSZ: the terminal's size in characters."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def get_size(fd: int) -> tuple[int, int]:
    """TIOCGWINSZ: (rows, cols) of the terminal at `fd`."""
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def make_controlling(fd: int) -> None:
    """Start a new session and make the terminal at `fd` its controlling terminal and the process's stdio."""
    os.setsid()
    fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(fd, target)
