"""Hooks (all six stages, in order, each with the state JSON on stdin) and seccomp filters (default action,
errno values, argument conditions) in real containers."""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from typing import Any

import pytest

from isola.host import libc
from isola.host import seccomp as host_seccomp
from tests.container.conftest import Oci, container_id


def _recorder(log: Path, stage: str, path: str = "/bin/sh") -> dict[str, Any]:
    script = f"cat > {log}/{stage}.json; echo {stage} >> {log}/order"
    return {"path": path, "args": ["sh", "-c", script], "env": ["X=1"], "timeout": 10}


def test_hooks_run_in_order_with_the_state(oci: Oci, bundle, request, tmp_path: Path) -> None:
    log = tmp_path / "hooks"
    log.mkdir()
    cid = container_id(request)

    def edit(c: dict[str, Any]) -> None:
        c["mounts"].append({"destination": str(log), "type": "bind", "source": str(log), "options": ["rbind"]})
        c["hooks"] = {
            stage: [_recorder(log, stage)]
            for stage in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
        }

    oci("run", "-b", str(bundle(["/bin/true"], edit)), cid)
    assert (log / "order").read_text().split() == [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ]
    states = {stage: json.loads((log / f"{stage}.json").read_text()) for stage in (log / "order").read_text().split()}
    assert {s["id"] for s in states.values()} == {cid}
    assert states["createRuntime"]["status"] == "creating" and states["createRuntime"]["pid"] > 0
    assert states["startContainer"]["status"] == "created"
    assert states["poststart"]["status"] == "running"
    assert states["poststop"]["status"] == "stopped"


def test_failing_poststop_hook_only_warns(oci: Oci, bundle, request) -> None:
    edit = lambda c: c.update(hooks={"poststop": [{"path": "/bin/false"}]})  # noqa: E731
    result = oci("run", "-b", str(bundle(["/bin/true"], edit)), container_id(request))
    assert "warning: poststop hook /bin/false failed" in result.stderr
    assert oci.ids() == []


def test_hook_timeout(oci: Oci, bundle, request) -> None:
    edit = lambda c: c.update(hooks={"prestart": [{"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}]})  # noqa: E731
    result = oci("create", "-b", str(bundle(["/bin/true"], edit)), container_id(request), check=False)
    assert result.returncode != 0 and "did not finish within 1 s" in result.stderr
    assert oci.ids() == []


def _seccomp(profile: dict[str, Any]):
    if host_seccomp.version() is None:
        pytest.skip("libseccomp is not installed")

    def edit(c: dict[str, Any]) -> None:
        c["linux"]["seccomp"] = profile
        c["root"]["readonly"] = False

    return edit


def test_seccomp_rules_and_argument_filters(oci: Oci, bundle, request) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat", "no_such_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            # kill(pid, SIGUSR1) only: sig is argument 1
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]},
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},  # the default action: skipped
        ],
    }
    script = (
        "mkdir /tmp/d 2>&1; kill -0 $$ && echo kill0-ok; trap 'echo got-usr1' USR1; kill -USR1 $$ 2>&1; "
        "grep Seccomp: /proc/self/status"
    )
    out = oci("run", "-b", str(bundle(["/bin/sh", "-c", script], _seccomp(profile))), container_id(request)).stdout
    lines = out.splitlines()
    assert "Permission denied" in lines[0]  # errno 13 = EACCES, as asked
    assert lines[1] == "kill0-ok"
    assert "Operation not permitted" in lines[2] and "got-usr1" not in out
    assert lines[-1].split() == ["Seccomp:", "2"]


def _all_syscalls() -> list[str]:
    """Every system call name libseccomp knows on this architecture."""
    lib = host_seccomp.load()
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
    names = []
    for number in range(512):
        raw = lib.seccomp_syscall_resolve_num_arch(0, number)  # 0: the native architecture
        if raw:
            names.append(ctypes.string_at(raw).decode())
            libc.call("free", ctypes.c_void_p(raw), restype=None)
    return names


def test_seccomp_default_errno(oci: Oci, bundle, request) -> None:
    """An allow-list of every call but mkdir: mkdir fails with defaultErrnoRet (ENOSYS), the rest works."""
    edit = _seccomp({})  # skips without libseccomp
    allowed = [name for name in _all_syscalls() if name not in ("mkdir", "mkdirat")]
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}],
    }

    def both(c: dict[str, Any]) -> None:
        edit(c)
        c["linux"]["seccomp"] = profile

    out = oci(
        "run",
        "-b",
        str(bundle(["/bin/sh", "-c", "echo before; mkdir /tmp/d; echo after"], both)),
        container_id(request),
        check=False,
    )
    assert out.stdout.split() == ["before", "after"]
    assert "Function not implemented" in out.stderr  # ENOSYS


def test_seccomp_notify_is_unsupported(oci: Oci, bundle, request) -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
    result = oci("create", "-b", str(bundle(["/bin/true"], _seccomp(profile))), container_id(request), check=False)
    assert result.returncode == os.EX_UNAVAILABLE and "SCMP_ACT_NOTIFY" in result.stderr
    assert oci.ids() == []
