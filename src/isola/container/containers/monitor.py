"""The monitor of a detached container (`isola container run -d`): the supervisor (isola.container.containers.
supervise) in a process of its own, so the container's output is logged and its exit status recorded after
`run -d` has returned.

    python -m isola.container.containers.monitor CONTAINER_ID READY_FD     (started by `run -d`, not by people)

It forks once more at once (the caller reaps the first child; the monitor, in a session of its own, is an
orphan on purpose and belongs to no terminal), then reports on READY_FD: `{"ok": true}` once the container
runs, or the error — its class, message and docker status — for `run -d` to raise in its own process.
"""

from __future__ import annotations

import json
import os
import sys

from isola import errors
from isola.container.containers import runtime
from isola.container.containers.store import ContainerStore
from isola.container.containers.supervise import run_supervised
from isola.errors import IsolaError


def encode(err: IsolaError | None) -> bytes:
    if err is None:
        return b'{"ok": true}'
    status = err.status if isinstance(err, runtime.CommandError) else None
    return json.dumps({"kind": type(err).__name__, "message": err.message, "status": status}).encode()


def decode(data: bytes) -> IsolaError | None:
    """The monitor's report as the error it stands for (None: the container runs)."""
    try:
        report = json.loads(data)
    except ValueError:
        return errors.EngineError("the container's monitor ended without reporting (see ISOLA_DEBUG=1)")
    if report.get("ok"):
        return None
    if report.get("status"):
        return runtime.CommandError(report["message"], int(report["status"]))
    cls = getattr(errors, str(report.get("kind")), errors.EngineError)
    if not (isinstance(cls, type) and issubclass(cls, IsolaError)):
        cls = errors.EngineError
    return cls(str(report.get("message")))


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: python -m isola.container.containers.monitor CONTAINER_ID READY_FD", file=sys.stderr)
        return 64
    container_id, ready = sys.argv[1], int(sys.argv[2])
    if os.fork():
        os._exit(0)
    os.chdir("/")
    store = ContainerStore()

    def report(err: IsolaError | None) -> None:
        nonlocal ready
        os.write(ready, encode(err))
        os.close(ready)
        ready = -1

    try:
        container = store.get(container_id)
        run_supervised(store, container, foreground=False, interactive=False, on_started=report)
    except IsolaError as err:
        if ready >= 0:
            report(err)
        return 1
    except BaseException as exc:
        if ready >= 0:
            report(errors.EngineError(f"monitor: {type(exc).__name__}: {exc}"))
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
