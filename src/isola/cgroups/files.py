"""Reading and writing cgroup control files, with errors that say which file refused which value.

A cgroup file rejects a bad value with EINVAL, a missing controller with ENOENT and a limit below current use
with EBUSY; the bare OSError would not tell a user that `memory.limit_in_bytes` refused `4096`.
"""

from __future__ import annotations

import errno
import os
import time

from isola.errors import ConflictError, EngineError, UnsupportedError


def write(directory: str, name: str, value: str | int) -> None:
    """Write `value` to the control file `name` of the cgroup at `directory`."""
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UnsupportedError(f"{path}: this host's cgroup has no such control file") from None
    try:
        os.write(fd, str(value).encode())
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise ConflictError(f"{path}: cannot set {value}: the cgroup is busy (current use above it?)") from None
        raise EngineError(f"{path}: cannot set {value}: {exc.strerror}") from None
    finally:
        os.close(fd)


def read(directory: str, name: str) -> str:
    with open(os.path.join(directory, name)) as f:
        return f.read().strip()


def exists(directory: str, name: str) -> bool:
    return os.path.exists(os.path.join(directory, name))


def pids(directory: str) -> list[int]:
    """The processes in the cgroup at `directory` (not in its children)."""
    try:
        return [int(line) for line in read(directory, "cgroup.procs").split()]
    except FileNotFoundError:
        return []


def keyed(text: str) -> dict[str, int]:
    """A flat keyed file (memory.stat, cpu.stat): 'name value' per line."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def remove(directory: str, attempts: int = 50) -> None:
    """rmdir a cgroup, waiting briefly while the kernel finishes releasing its last processes (EBUSY)."""
    for _ in range(attempts):
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise EngineError(f"cannot remove the cgroup {directory}: {exc.strerror}") from None
            time.sleep(0.01)
    raise ConflictError(f"cannot remove the cgroup {directory}: processes are still in it")
