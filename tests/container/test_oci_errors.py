"""Malformed bundles: one clear line naming the problem (the field, for config.json), a non-zero exit status,
and nothing left behind — no state directory, no cgroup, no process."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.container.conftest import Oci, container_id


def _leftovers(oci: Oci, cid: str) -> list[str]:
    found = [p for p in Path("/sys/fs/cgroup").glob(f"*/isola-oci/{cid}")]
    if (oci.root / cid).exists():
        found.append(oci.root / cid)
    return [str(p) for p in found]


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


CASES = [
    ("process-args-type", _set(["process", "args"], "sh"), "process.args: must be of type array"),
    (
        "unknown-namespace",
        _set(["linux", "namespaces"], [{"type": "mount"}, {"type": "bogus"}]),
        "linux.namespaces[1].type",
    ),
    (
        "duplicate-namespace",
        _set(["linux", "namespaces"], [{"type": "mount"}, {"type": "pid"}, {"type": "pid"}]),
        "linux.namespaces[2]: namespace 'pid' is listed twice",
    ),
    (
        "missing-rootfs",
        _set(["root", "path"], "/nonexistent/rootfs"),
        "root.path: /nonexistent/rootfs is not a directory",
    ),
    ("uid-out-of-range", _set(["process", "user", "uid"], -1), "process.user.uid: -1 is less than the minimum 0"),
    ("cwd-missing", lambda c: c["process"].pop("cwd"), "process.cwd: is required"),
    ("relative-mount", _set(["mounts", 0, "destination"], "proc"), "mounts[0].destination"),
    (
        "unknown-capability",
        _set(["process", "capabilities", "bounding"], ["CAP_NOPE"]),
        "process.capabilities.bounding[0]: unknown capability",
    ),
    (
        "unknown-rlimit",
        _set(["process", "rlimits"], [{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}]),
        "process.rlimits[0].type",
    ),
    (
        "mappings-without-userns",
        _set(["linux", "uidMappings"], [{"containerID": 0, "hostID": 1000, "size": 1}]),
        "linux.uidMappings: mappings need a new user namespace",
    ),
    ("hostname-without-uts", lambda c: c["linux"].update(namespaces=[{"type": "mount"}]), "hostname: needs a uts"),
    (
        "no-mount-namespace",
        _set(["linux", "namespaces"], [{"type": "pid"}]),
        "linux.namespaces: isola-oci needs a mount",
    ),
    ("missing-program", _set(["process", "args"], ["/bin/nope"]), 'exec: "/bin/nope": no such file'),
    ("program-not-in-path", _set(["process", "args"], ["nope"]), 'exec: "nope": executable file not found in $PATH'),
    (
        "bind-source-missing",
        lambda c: c["mounts"].append(
            {"destination": "/x", "type": "bind", "source": "/nonexistent", "options": ["bind"]}
        ),
        "mounts[7].source",
    ),
    ("bad-sysctl", _set(["linux", "sysctl"], {"kernel.nope": "1"}), "linux.sysctl: cannot set kernel.nope"),
    (
        "failing-hook",
        _set(["hooks"], {"createRuntime": [{"path": "/bin/false"}]}),
        "createRuntime hook /bin/false failed",
    ),
]


@pytest.mark.parametrize(("name", "edit", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_one_clear_error_and_leaves_nothing(oci: Oci, bundle, request, name, edit, message) -> None:
    cid = container_id(request)
    result = oci("create", "-b", str(bundle(["/bin/true"], edit)), cid, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert oci.ids() == []
    assert _leftovers(oci, cid) == []


def test_bad_json_and_missing_bundle(oci: Oci, tmp_path: Path, request) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"ociVersion": "1.0.2",')
    result = oci("create", "-b", str(broken), container_id(request), check=False)
    assert result.returncode == os.EX_DATAERR and "not JSON" in result.stderr
    missing = oci("create", "-b", str(tmp_path / "nothing"), container_id(request), check=False)
    assert missing.returncode == os.EX_NOINPUT and "config.json: no such file" in missing.stderr
    assert oci.ids() == []


def test_duplicate_id_is_a_conflict(oci: Oci, bundle, request) -> None:
    cid = container_id(request)
    path = bundle(["/bin/sleep", "10"])
    oci("create", "-b", str(path), cid)
    again = oci("create", "-b", str(path), cid, check=False)
    assert again.returncode == os.EX_CANTCREAT and "already exists" in again.stderr
    assert oci.state(cid)["status"] == "created"  # the first one is untouched


def test_config_json_from_runc_spec_is_valid(tmp_path: Path) -> None:
    from isola.container.oci import schema, spec

    schema.validate(spec.default())
    with pytest.raises(Exception, match="ociVersion: is required"):
        schema.validate({k: v for k, v in spec.default().items() if k != "ociVersion"})
    json.dumps(spec.default())
