"""A container's log: what its program wrote, one JSON line per chunk — `{"time", "stream", "log"}` as docker's
json-file driver — so that `isola container logs` gives stdout back on stdout and stderr on stderr, in order,
and `logs -f` can follow a file that only grows. Bytes that are not UTF-8 survive as surrogate escapes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


class LogWriter:
    def __init__(self, path: Path) -> None:
        self._f: BinaryIO = open(path, "ab", buffering=0)  # noqa: SIM115 - open while the container runs

    def write(self, stream: str, data: bytes) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
        line = json.dumps({"time": stamp, "stream": stream, "log": data.decode("utf-8", "surrogateescape")})
        self._f.write(line.encode() + b"\n")

    def close(self) -> None:
        self._f.close()


def entries(path: Path, offset: int = 0) -> tuple[list[tuple[str, bytes]], int]:
    """The complete lines of the log from byte `offset`: [(stream, data)], and the offset after them."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    found = []
    for line in chunk[:end].splitlines():
        try:
            record = json.loads(line)
            found.append((str(record["stream"]), str(record["log"]).encode("utf-8", "surrogateescape")))
        except (ValueError, KeyError, TypeError):
            continue
    return found, offset + end


def follow(path: Path, running: Callable[[], bool], interval: float = 0.1) -> Iterator[tuple[str, bytes]]:
    """Every entry, then new ones as they come, until the container is no longer `running` and all is read."""
    offset = 0
    while True:
        alive = running()
        found, offset = entries(path, offset)
        yield from found
        if not alive and not found:
            return
        if not found:
            time.sleep(interval)


def write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]
