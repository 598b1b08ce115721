"""isola-oci's runc command line, driven as a subprocess: the lifecycle, state JSON, exit statuses, errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.container.conftest import ISOLA_OCI, Oci, container_id

RUNC = shutil.which("runc")


def test_spec_writes_runcs_default_config(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    subprocess.run([ISOLA_OCI, "spec", "--bundle", str(mine)], check=True)
    config = json.loads((mine / "config.json").read_text())
    again = subprocess.run([ISOLA_OCI, "spec", "-b", str(mine)], capture_output=True, text=True, check=False)
    assert again.returncode == os.EX_USAGE and "already exists" in again.stderr
    if RUNC is None:
        pytest.skip("runc is not installed: cannot compare with its spec")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    subprocess.run([RUNC, "spec"], cwd=theirs, check=True)
    expected = json.loads((theirs / "config.json").read_text())
    assert config.pop("hostname") == "isola"
    expected.pop("hostname")
    assert config == expected


def test_run_returns_the_containers_exit_status(oci: Oci, bundle, request) -> None:
    cid = container_id(request)
    assert oci("run", "-b", str(bundle(["/bin/true"])), cid).returncode == 0
    assert oci("run", "-b", str(bundle(["/bin/sh", "-c", "exit 7"])), cid, check=False).returncode == 7
    assert oci.ids() == []  # run deletes what it created
    # pid 1 of a PID namespace ignores its own SIGKILL; one from outside ends it with 128+9
    argv = [ISOLA_OCI, "--root", str(oci.root), "run", "-b", str(bundle(["/bin/sleep", "20"])), cid]
    with subprocess.Popen(argv) as run:
        try:
            _wait_status(oci, cid, "running")
            oci("kill", cid, "KILL")
            assert run.wait(timeout=10) == 128 + signal.SIGKILL
        finally:
            run.kill()
    assert oci.ids() == []


def test_run_output_and_isolation(oci: Oci, bundle, request) -> None:
    script = "echo pid=$$; hostname; cat /proc/net/dev | wc -l; ls /proc | grep -c '^[0-9]'; id"
    out = oci("run", "-b", str(bundle(["/bin/sh", "-c", script])), container_id(request)).stdout.split("\n")
    assert out[0] == "pid=1"  # its own PID namespace
    assert out[1] == "isola"  # its own UTS namespace
    assert out[2] == "3"  # network namespace: two header lines and lo
    assert out[3] == "3"  # of all the host's processes it sees only its own: sh, ls and grep
    assert out[4] == "uid=0(root) gid=0"


def test_create_start_state_kill_delete(oci: Oci, bundle, request, tmp_path: Path) -> None:
    cid = container_id(request)
    path = bundle(["/bin/sleep", "60"])
    pid_file = tmp_path / "pid"
    oci("create", "--bundle", str(path), "--pid-file", str(pid_file), cid)
    state = oci.state(cid)
    assert set(state) == {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}
    assert state["status"] == "created"
    assert state["id"] == cid and state["bundle"] == str(path)
    assert state["pid"] == int(pid_file.read_text())
    assert Path(f"/proc/{state['pid']}/cmdline").read_bytes().startswith(b"/work") or state["pid"] > 0
    listed = json.loads(oci("list", "--format", "json").stdout)
    assert [s["id"] for s in listed] == [cid]

    oci("start", cid)
    assert oci.state(cid)["status"] == "running"
    assert Path(f"/proc/{state['pid']}/cmdline").read_bytes() == b"/bin/sleep\x0060\x00"
    again = oci("start", cid, check=False)
    assert again.returncode == os.EX_CANTCREAT and "running" in again.stderr
    refused = oci("delete", cid, check=False)
    assert refused.returncode == os.EX_CANTCREAT

    oci("kill", cid, "KILL")
    _wait_status(oci, cid, "stopped")
    assert oci.state(cid)["pid"] == 0
    oci("delete", cid)
    gone = oci("state", cid, check=False)
    assert gone.returncode == os.EX_NOINPUT and "does not exist" in gone.stderr
    assert not os.path.exists(f"/sys/fs/cgroup/memory/isola-oci/{cid}")


def _wait_status(oci: Oci, cid: str, status: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        result = oci("state", cid, check=False)
        if result.returncode == 0 and json.loads(result.stdout)["status"] == status:
            return
        assert time.monotonic() < deadline, f"{cid} never became {status}"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", ["TERM", "SIGTERM", "15"])
def test_kill_takes_names_and_numbers(oci: Oci, bundle, request, sig: str) -> None:
    cid = container_id(request)
    oci(
        "run", "--detach", "-b", str(bundle(["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"])), cid
    )
    oci("kill", cid, sig)
    _wait_status(oci, cid, "stopped")


def test_kill_all_reaches_every_process(oci: Oci, bundle, request) -> None:
    cid = container_id(request)
    oci("run", "-d", "-b", str(bundle(["/bin/sh", "-c", "sleep 60 & sleep 60 & wait"])), cid)
    deadline = time.monotonic() + 5
    while len(json.loads(oci("ps", "--format", "json", cid).stdout)) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    oci("kill", "--all", cid, "9")
    _wait_status(oci, cid, "stopped")
    assert json.loads(oci("ps", "--format", "json", cid).stdout) == []


def test_create_hands_over_stdio_untouched(oci: Oci, bundle, request, tmp_path: Path) -> None:
    """create returns while the container still holds the caller's stdout (a caller waiting for EOF would
    hang); what the program writes after start lands there."""
    cid = container_id(request)
    out = tmp_path / "out"
    with out.open("w") as f:
        subprocess.run(
            [ISOLA_OCI, "--root", str(oci.root), "create", "-b", str(bundle(["/bin/echo", "hi"])), cid],
            stdout=f,
            check=True,
            timeout=10,
        )
    assert out.read_text() == ""
    oci("start", cid)
    _wait_status(oci, cid, "stopped")
    assert out.read_text() == "hi\n"


def test_no_host_descriptor_leaks_in(oci: Oci, bundle, request) -> None:
    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        result = oci("run", "-b", str(bundle(["/bin/ls", "/proc/self/fd"])), container_id(request), pass_fds=(w,))
    finally:
        os.close(r)
        os.close(w)
    assert result.stdout.split() == ["0", "1", "2", "3"]  # 3 is ls's own directory


def test_terminal_goes_to_the_console_socket(oci: Oci, bundle, request, tmp_path: Path) -> None:
    cid = container_id(request)
    path = bundle(
        ["/bin/sh", "-c", "tty; stty size 2>/dev/null; echo done"],
        lambda c: c["process"].update(terminal=True, consoleSize={"height": 30, "width": 100}),
    )
    sock_path = tmp_path / "console.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock_path))
        listener.listen(1)
        oci("create", "-b", str(path), "--console-socket", str(sock_path), cid)
        conn, _ = listener.accept()
        with conn:
            payload, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    assert payload.startswith(b"/dev/pts/") and len(fds) == 1
    master = fds[0]
    try:
        oci("start", cid)
        output = b""
        while b"done" not in output:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
    assert b"/dev/pts/0" in output


def test_terminal_without_console_socket_is_refused(oci: Oci, bundle, request) -> None:
    path = bundle(["/bin/true"], lambda c: c["process"].update(terminal=True))
    result = oci("create", "-b", str(path), container_id(request), check=False)
    assert result.returncode == os.EX_USAGE and "--console-socket" in result.stderr
    assert oci.ids() == []


def test_unknown_container_and_bad_id(oci: Oci) -> None:
    for command in (["state"], ["start"], ["kill"], ["delete"], ["ps"], ["pause"]):
        result = oci(*command, "nope", check=False)
        assert result.returncode == os.EX_NOINPUT, command
        assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    bad = oci("state", "../x", check=False)
    assert bad.returncode == os.EX_DATAERR and "invalid container id" in bad.stderr


def test_systemd_cgroup_is_refused_with_the_reason(oci: Oci) -> None:
    result = oci("--systemd-cgroup", "list", check=False)
    assert result.returncode == os.EX_UNAVAILABLE and "cgroupfs" in result.stderr


def test_errors_go_to_the_json_log(oci: Oci, tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    oci("--log", str(log), "--log-format", "json", "state", "nope", check=False)
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["level"] == "error" and "does not exist" in record["msg"]


def test_command_line_forms_and_usage_errors(oci: Oci, tmp_path: Path) -> None:
    """The hand-written parser: `--name=value` (conmon's --log-format=json), options after the id, `--help`,
    and one clear line with exit status 64 for every malformed command line."""
    log = tmp_path / "log.json"
    oci(f"--log={log}", "--log-format=json", "state", "nope", check=False)
    assert json.loads(log.read_text().splitlines()[-1])["level"] == "error"
    assert oci("list", "--format=json").stdout.strip() == "[]"
    assert "--console-socket" in oci("create", "--help").stdout
    for argv, message in (
        (["bogus"], "unknown command 'bogus'"),
        (["kill"], "kill: missing the ID argument"),
        (["delete", "--nope", "x"], "delete: unknown option --nope"),
        (["--log-format", "xml", "list"], "--log-format: 'xml' is not one of text, json"),
        (["update", "--memory", "lots", "x"], "update: --memory: not an integer: 'lots'"),
        (["state", "a", "b"], "state: unexpected argument 'b'"),
        (["--root"], "--root needs a value"),
        ([], "no command given"),
    ):
        result = oci(*argv, check=False)
        assert result.returncode == os.EX_USAGE, argv
        assert result.stderr.startswith(f"isola-oci: {message}"), result.stderr
        assert result.stderr.count("\n") == 1, result.stderr


def test_features_json(oci: Oci) -> None:
    features = json.loads(oci("features").stdout)
    assert "startContainer" in features["hooks"]
    assert "user" in features["linux"]["namespaces"]
    assert "CAP_SYS_ADMIN" in features["linux"]["capabilities"]


def test_preserve_fds_passes_extra_descriptors(oci: Oci, bundle, request) -> None:
    """--preserve-fds 1: the caller's fd 3 reaches the container's program (socket activation's LISTEN_FDS)."""
    r, w = os.pipe()
    argv = [
        ISOLA_OCI,
        "--root",
        str(oci.root),
        "run",
        "--preserve-fds",
        "1",
        "-b",
        str(bundle(["/bin/sh", "-c", "echo through-fd-3 >&3"])),
        container_id(request),
    ]
    try:
        subprocess.run(argv, preexec_fn=lambda: os.dup2(w, 3), pass_fds=(3,), check=True, timeout=30)
        os.close(w)
        w = -1
        assert os.read(r, 100) == b"through-fd-3\n"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
