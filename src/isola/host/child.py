"""Run a probe in a forked child, so that what it changes (namespaces, mounts) dies with the child.

`isola doctor` asks "can this host really unshare a PID namespace / mount overlayfs?" by doing it, not by
guessing from files in /proc. The child reports failure as one line on a pipe.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable


def run_in_child(probe: Callable[[], None]) -> str | None:
    """Run `probe` in a child process. None if it returned normally, else the reason it failed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into the caller's code
        os.close(r)
        code = 0
        try:
            probe()
        except BaseException as exc:  # report anything, then exit without running the parent's cleanups
            msg = str(exc) or type(exc).__name__
            if not isinstance(exc, OSError):
                msg = "".join(traceback.format_exception_only(exc)).strip()
            os.write(w, msg.encode()[:4096])
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return message or f"probe exited with status {os.waitstatus_to_exitcode(status)}"
