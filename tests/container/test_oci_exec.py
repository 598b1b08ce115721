"""`isola-oci exec`: a second process inside a running container's namespaces and cgroups."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from tests.container.conftest import Oci, container_id


def _running(oci: Oci, bundle, request) -> str:
    cid = container_id(request)
    oci("run", "-d", "-b", str(bundle(["/bin/sleep", "30"])), cid)
    return cid


def test_exec_joins_the_containers_namespaces(oci: Oci, bundle, request) -> None:
    cid = _running(oci, bundle, request)
    init_pid = oci.state(cid)["pid"]
    out = oci(
        "exec", cid, "/bin/sh", "-c", "hostname; for n in pid net mnt uts ipc; do readlink /proc/self/ns/$n; done"
    )
    lines = out.stdout.split()
    assert lines[0] == "isola"
    for kind, seen in zip(("pid", "net", "mnt", "uts", "ipc"), lines[1:], strict=True):
        assert seen == os.readlink(f"/proc/{init_pid}/ns/{kind}")


def test_exec_options_and_exit_status(oci: Oci, bundle, request, tmp_path: Path) -> None:
    cid = _running(oci, bundle, request)
    result = oci(
        "exec",
        "--env",
        "FOO=bar",
        "--cwd",
        "/dev",
        "--user",
        "1000:1000",
        cid,
        "/bin/sh",
        "-c",
        "echo $FOO; pwd; id; exit 3",
        check=False,
    )
    assert result.returncode == 3
    assert result.stdout.split("\n")[:3] == ["bar", "/dev", "uid=1000(user) gid=1000"]
    missing = oci("exec", cid, "nope", check=False)
    assert missing.returncode != 0 and 'exec: "nope": executable file not found' in missing.stderr


def test_exec_process_json_detach_and_pid_file(oci: Oci, bundle, request, tmp_path: Path) -> None:
    cid = _running(oci, bundle, request)
    process = {"args": ["/bin/sleep", "20"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}
    (tmp_path / "process.json").write_text(json.dumps(process))
    oci("exec", "--process", str(tmp_path / "process.json"), "--detach", "--pid-file", str(tmp_path / "pid"), cid)
    pid = int((tmp_path / "pid").read_text())
    assert pid in json.loads(oci("ps", "--format", "json", cid).stdout)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"args": "sleep", "cwd": "/"}))
    result = oci("exec", "--process", str(bad), cid, check=False)
    assert result.returncode == os.EX_DATAERR and "process.args" in result.stderr


def test_exec_in_a_stopped_container_is_refused(oci: Oci, bundle, request) -> None:
    cid = container_id(request)
    oci("run", "-d", "-b", str(bundle(["/bin/true"])), cid)
    for _ in range(200):
        if oci.state(cid)["status"] == "stopped":
            break
    result = oci("exec", cid, "/bin/true", check=False)
    assert result.returncode == os.EX_CANTCREAT and "stopped" in result.stderr


def test_exec_tty_over_the_console_socket(oci: Oci, bundle, request, tmp_path: Path) -> None:
    cid = _running(oci, bundle, request)
    sock_path = tmp_path / "c.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock_path))
        listener.listen(1)
        oci("exec", "--tty", "--detach", "--console-socket", str(sock_path), cid, "/bin/sh", "-c", "tty; echo done")
        conn, _ = listener.accept()
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    output = b""
    try:
        while b"done" not in output:
            chunk = os.read(fds[0], 4096)
            if not chunk:
                break
            output += chunk
    except OSError:
        pass
    finally:
        os.close(fds[0])
    assert b"/dev/pts/" in output
