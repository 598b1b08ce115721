"""Calling `isola-oci`, the runc-compatible runtime, as podman calls runc: a command line, a private `--root`
(`$ISOLA_HOME/run/oci`) and `--log FILE --log-format json`, which tells the runtime's own failure (a record in the
log) from the container's exit status (which it passes on) without guessing from numbers.

Its command line is the stable contract; its Python modules are being changed by others, so nothing here
imports them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from isola import paths
from isola.errors import EngineError, IsolaError, NotFoundError


class CommandError(EngineError):
    """The container's program could not be run: docker's 126 (not executable) or 127 (not found)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def binary() -> str:
    """`isola-oci` of this isola's installation (the venv's bin/), else the one on PATH."""
    beside = Path(sys.executable).parent / "isola-oci"
    if beside.is_file():
        return str(beside)
    found = shutil.which("isola-oci")
    if found is None:
        raise NotFoundError("isola-oci is not installed", hint="pip install -e . in isola's checkout")
    return found


def root() -> Path:
    return paths.home() / "run" / "oci"


def argv(*args: str, log: Path | None = None) -> list[str]:
    words = [binary(), "--root", str(root())]
    if log is not None:
        words += ["--log", str(log), "--log-format", "json"]
    return [*words, *args]


def logged_error(log: Path) -> str | None:
    """The last error isola-oci recorded in `log`, if any."""
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("level") == "error":
            return str(record.get("msg", "error"))
    return None


def failure(message: str) -> IsolaError:
    """isola-oci's message as the error docker would give: the program missing (127), not executable (126), or
    the runtime's own failure."""
    lowered = message.lower()
    if "exec:" in lowered and ("not found" in lowered or "no such file" in lowered):
        return CommandError(f"failed to run the container's program: {message}", 127)
    if "permission denied" in lowered or "exec format error" in lowered:
        return CommandError(f"failed to run the container's program: {message}", 126)
    return EngineError(f"isola-oci: {message}")


def call(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run one isola-oci command to completion; an error from it becomes an IsolaError."""
    try:
        done = subprocess.run(
            argv(*args), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise EngineError(f"isola-oci {args[0]} did not finish in {timeout:g} s") from None
    if done.returncode != 0:
        raise failure(done.stderr.strip().removeprefix("isola-oci: ") or f"exit status {done.returncode}")
    return done


def delete(container_id: str) -> None:
    """Remove the runtime's container (and its cgroups), killing it first; nothing if it is already gone."""
    subprocess.run(
        argv("delete", "--force", container_id),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )


def tmp_log(directory: Path) -> Path:
    path = directory / f"oci-{os.getpid()}.log"
    path.unlink(missing_ok=True)
    return path
