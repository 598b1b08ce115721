"""The VMM's device thread: one epoll loop that runs device work the vCPUs should not wait for.

Firecracker's design, for the same reason: a virtio queue notification is a guest MMIO write, and an exit to
the VMM for it costs far more than the write (~30 µs per exit in the nested lane). With an ioeventfd KVM turns
that write into an eventfd signal and lets the vCPU run on; this loop wakes up and processes the queue. Taps
become readable here too. Callbacks run in this one thread, so a slow disk read delays other devices but
never a vCPU.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

EDGE = select.EPOLLET


class EventLoop:
    """`add(fd, callback)` before or after `start()`; `stop()` ends the thread, `close()` frees the fds."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wakeup, select.EPOLLIN)
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._owned: list[int] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        """What ended the loop, if a callback failed; the owner decides what that means for the machine."""
        self.on_error: Callable[[BaseException], None] | None = None

    def add(self, fd: int, callback: Callable[[], None], *, edge: bool = False, owned: bool = False) -> None:
        """Call `callback` when `fd` is readable (level-triggered, or on each new arrival with `edge`). With
        `owned`, the loop closes `fd` when it stops."""
        self._callbacks[fd] = callback
        self._epoll.register(fd, select.EPOLLIN | (EDGE if edge else 0))
        if owned:
            self._owned.append(fd)

    def eventfd(self, callback: Callable[[], None]) -> int:
        """A new eventfd whose signals run `callback` (the count is consumed first); the loop owns it."""
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

        def consume() -> None:
            try:
                os.eventfd_read(fd)
            except BlockingIOError:
                return
            callback()

        self.add(fd, consume, owned=True)
        return fd

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="devices", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread (if it runs) and wait for it; callbacks no longer run after this returns."""
        self._stopping = True
        if self._thread is not None:
            os.eventfd_write(self._wakeup, 1)
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        """Stop, then close the epoll fd and every fd the loop owns. Idempotent."""
        self.stop()
        if self._epoll.closed:
            return
        for fd in self._owned:
            os.close(fd)
        self._owned.clear()
        self._epoll.close()
        os.close(self._wakeup)

    def _run(self) -> None:
        try:
            while not self._stopping:
                for fd, _ in self._epoll.poll():
                    if fd != self._wakeup and not self._stopping:
                        self._callbacks[fd]()
        except Exception as exc:  # a device model bug must end the machine, not leave a dead thread behind
            log.exception("device thread failed")
            self.error = exc
            if self.on_error is not None:
                self.on_error(exc)
