"""The VMM's device thread: eventfd signals and readable fds run their callbacks there, a failing callback is
reported instead of dying silently, and stopping is prompt and idempotent."""

from __future__ import annotations

import os
import threading

from isola.vmm.event_loop import EventLoop


def test_signals_run_callbacks_on_the_device_thread_once_per_batch():
    loop = EventLoop()
    seen: list[str] = []
    ran = threading.Event()

    def callback() -> None:
        seen.append(threading.current_thread().name)
        ran.set()

    fd = loop.eventfd(callback)
    os.eventfd_write(fd, 1)
    os.eventfd_write(fd, 1)  # two signals before the loop runs: one callback, the count is consumed
    loop.start()
    assert ran.wait(5)
    loop.stop()
    assert seen == ["devices"]
    loop.close()
    loop.close()


def test_a_readable_fd_runs_its_callback_edge_triggered():
    loop = EventLoop()
    read_end, write_end = os.pipe()
    calls = threading.Semaphore(0)
    loop.add(read_end, calls.release, edge=True, owned=True)
    loop.start()
    os.write(write_end, b"x")
    assert calls.acquire(timeout=5)
    assert not calls.acquire(timeout=0.2)  # edge-triggered: the unread byte does not call again
    os.write(write_end, b"y")
    assert calls.acquire(timeout=5)
    loop.close()
    os.close(write_end)


def test_a_failing_callback_is_reported_to_the_owner():
    loop = EventLoop()
    failures: list[BaseException] = []
    reported = threading.Event()

    def fail() -> None:
        raise RuntimeError("device model bug")

    def report(exc: BaseException) -> None:
        failures.append(exc)
        reported.set()

    loop.on_error = report
    os.eventfd_write(loop.eventfd(fail), 1)
    loop.start()
    assert reported.wait(5)
    assert isinstance(loop.error, RuntimeError) and failures == [loop.error]
    loop.close()
