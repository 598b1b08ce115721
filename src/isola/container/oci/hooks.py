"""OCI hooks: programs config.json names for points of a container's life, each given the container's state
JSON on stdin.

prestart, createRuntime and poststart/poststop run in the runtime's namespaces; createContainer and
startContainer run in the container's (from its init). A hook that fails or outlasts its `timeout` fails the
operation, except poststop, whose failures are only reported: the container is already gone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

from isola.container.oci.spec import Hook
from isola.errors import EngineError


def run(hook: Hook, state: dict[str, Any], stage: str) -> None:
    argv = list(hook.args) or [hook.path]
    env = dict(item.partition("=")[::2] for item in hook.env)
    try:
        result = subprocess.run(
            argv,
            executable=hook.path,
            input=json.dumps(state).encode(),
            env=env,
            capture_output=True,
            timeout=hook.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EngineError(f"{stage} hook {hook.path} did not finish within {hook.timeout} s") from None
    except OSError as exc:
        raise EngineError(f"{stage} hook {hook.path}: {exc.strerror}") from None
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        why = f": {detail[-1]}" if detail else ""
        raise EngineError(f"{stage} hook {hook.path} failed with status {result.returncode}{why}")


def run_all(hooks: Iterable[Hook], state: dict[str, Any], stage: str) -> None:
    for hook in hooks:
        run(hook, state, stage)


def run_all_warn(hooks: Iterable[Hook], state: dict[str, Any], stage: str) -> None:
    """poststop: every hook runs; failures are reported on stderr and do not stop the others."""
    for hook in hooks:
        try:
            run(hook, state, stage)
        except EngineError as exc:
            print(f"isola-oci: warning: {exc.message}", file=sys.stderr)
