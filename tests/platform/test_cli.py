"""The `isola` CLI against isolad, as a user runs it: the first command starts the daemon, a tenant's token
in $ISOLA_TOKEN, process VMs with busybox, `--json` for scripts, one-line errors with their exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from isola.cli.metal import _left
from isola.host import unix_socket
from isola.platform.client import Client
from tests.platform.conftest import cleanup, short_root, wait_for


class Cli:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "d.sock"
        self.env = {
            **os.environ,
            "ISOLA_SOCKET": str(self.socket),
            "ISOLA_HOME": str(root / "home"),
            "ISOLA_VM_STATE": str(root / "vm"),
        }
        self.env.pop("ISOLA_TOKEN", None)

    def __call__(
        self, *args: str, token: str | None = None, stdin: bytes = b"", code: int = 0
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "ISOLA_TOKEN": token} if token else self.env
        done = subprocess.run(
            [sys.executable, "-m", "isola.cli", *args], env=env, input=stdin.decode(), capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        return done


@pytest.fixture
def cli() -> Iterator[Cli]:
    root = short_root()
    try:
        yield Cli(root)
    finally:
        try:
            if unix_socket.serving(root / "d.sock"):
                with Client(root / "d.sock") as c:
                    os.kill(int(c.system()["pid"]), signal.SIGTERM)
                wait_for(lambda: not unix_socket.serving(root / "d.sock"))
        finally:
            cleanup(root, [])


def test_the_cli_starts_isolad_and_runs_a_process_vm(cli: Cli, busybox: Path) -> None:
    assert json.loads(cli("daemon", "status", "--json", code=3).stdout)["running"] is False
    created = json.loads(cli("tenant", "create", "acme", "--instances", "2", "--json").stdout)
    token = created["token"]
    assert json.loads(cli("daemon", "status", "--json").stdout)["running"] is True
    box = json.loads(
        cli("instance", "create", "box", "--kind", "vm", "--mode", "process", "--start", "--label", "app=web",
            "--json", "--", str(busybox), "sh", "-c", "echo hi from box; exec sleep 60", token=token).stdout
    )  # fmt: skip
    assert box["state"] == "running" and box["labels"] == {"app": "web"}
    listed = json.loads(cli("instance", "ls", "--json", token=token).stdout)
    assert [i["name"] for i in listed] == ["box"]
    assert "box" in cli("instance", "ls", token=token).stdout
    assert cli("instance", "exec", "box", "--", "/busybox", "echo", "yo", token=token).stdout == "yo\n"
    cli("instance", "exec", "box", "--", "/busybox", "sh", "-c", "exit 4", token=token, code=4)
    wait_for(lambda: "hi from box" in cli("instance", "logs", "box", token=token).stdout)
    cli("instance", "create", "cat", "--kind", "vm", "--mode", "process", "--start", "--", str(busybox), "cat",
        token=token)  # fmt: skip
    assert (
        "ping through the cli" in cli("instance", "console", "cat", token=token, stdin=b"ping through the cli\n").stdout
    )
    over = cli("instance", "create", "three", "--kind", "vm", "--mode", "process", "--", str(busybox), "true",
               token=token, code=os.EX_NOPERM)  # fmt: skip
    assert "quota instances: holds 2" in over.stderr and len(over.stderr.strip().splitlines()) <= 2
    missing = cli("instance", "show", "nope", token=token, code=os.EX_NOINPUT)
    assert "instance 'nope' does not exist" in missing.stderr
    cli("instance", "stop", "cat", "--timeout", "2", token=token)
    cli("instance", "kill", "box", "--signal", "TERM", token=token)
    cli("instance", "rm", "-f", "box", "cat", token=token)
    assert json.loads(cli("instance", "ls", "--json").stdout) == []
    cli("tenant", "rm", "acme")
    assert "isolad (pid" in cli("daemon", "stop").stdout
    cli("daemon", "status", code=3)


def test_schedule_dry_run_shows_the_choice_and_the_reasons(cli: Cli, tmp_path: Path) -> None:
    cli("tenant", "create", "acme")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "k", "kind": "vm", "mode": "kernel", "image": "/x", "tenant": "acme"}))
    decision = json.loads(cli("schedule", "--dry-run", str(spec), "--json").stdout)
    hosts = json.loads(cli("host", "ls", "--json").stdout)
    host = hosts[0]["name"]
    if "vm/kernel" in hosts[0]["offers"]:  # a host with a hardware-assisted KVM
        assert decision["chosen"] == host
    else:  # kvm_pvm: process mode only
        assert decision["chosen"] is None
        assert decision["rejected"][host].startswith("does not run vm/kernel")
    spec.write_text(json.dumps({"name": "p", "kind": "vm", "mode": "process", "command": ["/x"], "tenant": "acme"}))
    decision = json.loads(cli("schedule", "--dry-run", str(spec), "--json").stdout)
    assert decision["chosen"] == host and decision["rejected"] == {}
    assert host in cli("schedule", "--dry-run", str(spec)).stdout
    cli("schedule", str(spec), code=os.EX_USAGE)
    assert "vm/process" in hosts[0]["offers"]


def test_metal_lease_and_release_from_the_cli(cli: Cli) -> None:
    cli("tenant", "create", "acme")
    host = json.loads(cli("host", "ls", "--json").stdout)[0]["name"]
    lease = json.loads(
        cli("metal", "lease", host, "--tenant", "acme", "--until", "2099-01-01T00:00:00", "--json").stdout
    )
    assert lease["state"] == "active" and lease["ends_at"].startswith("2099-01-01T00:00:00")
    assert json.loads(cli("host", "ls", "--json").stdout)[0]["leased_to"] == lease["tenant_id"]
    assert "is not free" in cli("metal", "lease", host, "--tenant", "acme", code=os.EX_CANTCREAT).stderr
    released = json.loads(cli("metal", "release", host, "--json").stdout)
    assert released["lease"]["state"] == "released" and released["failures"] == {}
    assert [x["state"] for x in json.loads(cli("metal", "ls", "--json").stdout)] == ["released"]
    events = json.loads(cli("events", "--json").stdout)
    assert [e["kind"] for e in events] == ["lease.active", "lease.cleaning", "lease.released"]
    assert json.loads(cli("events", "--json", "--since", str(events[1]["id"])).stdout) == events[2:]
    assert "lease.released" in cli("events").stdout


def test_metal_ls_shows_the_time_a_lease_has_left() -> None:
    soon = (datetime.now(UTC) + timedelta(hours=2, seconds=30)).isoformat()
    assert _left({"state": "active", "ends_at": soon}) in ("2:00:30", "2:00:29")
    assert _left({"state": "active", "ends_at": "2001-01-01T00:00:00Z"}) == "0s"
    assert _left({"state": "released", "ends_at": soon}) == _left({"state": "active", "ends_at": None}) == ""
