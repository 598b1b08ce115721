"""config.json features, each checked from inside a real container: namespaces, user namespaces and mappings,
mounts, devices, masked and read-only paths, sysctls, credentials, capabilities, rlimits, --no-pivot."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from isola.host import caps
from tests.container.conftest import Oci, container_id


def _run(oci: Oci, bundle, request, script: str, edit=None, suffix: str = "") -> str:
    path = bundle(["/bin/sh", "-c", script], edit)
    return oci("run", "-b", str(path), container_id(request, suffix)).stdout


def test_mounts_are_the_containers_own(oci: Oci, bundle, request) -> None:
    out = _run(oci, bundle, request, "cat /proc/self/mountinfo")
    targets = [line.split()[4] for line in out.splitlines()]
    assert targets[0] == "/"
    assert {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"} <= set(targets)
    assert not any(t.startswith(("/work", "/tmp", "/var")) for t in targets)  # nothing of the host's tree


def test_default_devices_and_links(oci: Oci, bundle, request) -> None:
    script = (
        "stat -c '%n %F %t:%T %a' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; "
        "for l in ptmx fd stdin stdout stderr; do readlink /dev/$l; done; echo x > /dev/null && echo written"
    )
    out = _run(oci, bundle, request, script).splitlines()
    assert out[:6] == [
        "/dev/null character special file 1:3 666",
        "/dev/zero character special file 1:5 666",
        "/dev/full character special file 1:7 666",
        "/dev/random character special file 1:8 666",
        "/dev/urandom character special file 1:9 666",
        "/dev/tty character special file 5:0 666",
    ]
    assert out[6:11] == ["pts/ptmx", "/proc/self/fd", "/proc/self/fd/0", "/proc/self/fd/1", "/proc/self/fd/2"]
    assert out[11] == "written"


def test_config_devices_are_created(oci: Oci, bundle, request) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["devices"] = [
            {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600, "uid": 0, "gid": 0}
        ]
        c["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"})

    assert _run(oci, bundle, request, "stat -c '%t:%T %a' /dev/mynull", edit).strip() == "1:3 600"


def test_masked_and_readonly_paths(oci: Oci, bundle, request) -> None:
    script = (
        "cat /proc/timer_list | wc -c; ls -A /sys/firmware | wc -w; ls -A /proc/acpi | wc -w; "
        "echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo sys-writable || echo sys-ro; "
        "echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable || echo sysrq-ro; "
        "touch /sys/x 2>/dev/null && echo sysfs-writable || echo sysfs-ro; "
        "touch /newfile 2>/dev/null && echo root-writable || echo root-ro"
    )
    assert _run(oci, bundle, request, script).split() == ["0", "0", "0", "sys-ro", "sysrq-ro", "sysfs-ro", "root-ro"]


def test_bind_mounts_with_options(oci: Oci, bundle, request, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in").write_text("from the host\n")

    def edit(c: dict[str, Any]) -> None:
        c["mounts"] += [
            {"destination": "/rw", "type": "bind", "source": str(shared), "options": ["rbind", "rprivate"]},
            {"destination": "/ro", "type": "bind", "source": str(shared), "options": ["bind", "ro", "nosuid", "nodev"]},
            {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "noexec"]},
        ]

    script = (
        "cat /ro/in; echo out > /rw/out && echo rw-ok; touch /ro/x 2>/dev/null && echo ro-broken || echo ro-ok; "
        "grep -E ' /(ro|scratch) ' /proc/self/mountinfo | cut -d' ' -f5,6"
    )
    out = _run(oci, bundle, request, script, edit).splitlines()
    assert out[:3] == ["from the host", "rw-ok", "ro-ok"]
    assert (shared / "out").read_text() == "out\n"
    options = dict(line.split() for line in out[3:])
    assert {"ro", "nosuid", "nodev"} <= set(options["/ro"].split(","))
    assert "noexec" in options["/scratch"].split(",")


def test_mount_through_a_symlink_stays_inside_the_rootfs(oci: Oci, bundle, request, tmp_path: Path) -> None:
    """A rootfs whose mount target is a symlink to a host path: the mount must land inside the rootfs."""
    victim = tmp_path / "victim"
    victim.mkdir()
    rootfs = tmp_path / "rootfs"
    path = bundle(["/bin/true"])  # makes the shared rootfs
    (rootfs / "escape").symlink_to(str(victim))  # absolute: means <rootfs>/<victim path> in the container
    (rootfs / "escape2").symlink_to("../../../../../../../../" + str(victim))

    def edit(c: dict[str, Any]) -> None:
        c["mounts"] += [
            {"destination": "/escape", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/escape2/sub", "type": "tmpfs", "source": "tmpfs"},
        ]

    try:
        path = bundle(["/bin/sh", "-c", "touch /escape/marker /escape2/sub/marker"], edit)
        config = json.loads((path / "config.json").read_text())
        config["root"]["readonly"] = False
        (path / "config.json").write_text(json.dumps(config))
        oci("run", "-b", str(path), container_id(request))
        assert list(victim.iterdir()) == []
    finally:
        for link in ("escape", "escape2"):
            (rootfs / link).unlink()


def test_hostname_domainname_sysctl(oci: Oci, bundle, request) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["hostname"] = "box"
        c["domainname"] = "example.org"
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.msgmax": "4096"}

    out = _run(
        oci,
        bundle,
        request,
        "hostname; cat /proc/sys/kernel/domainname /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax",
        edit,
    )
    assert out.split() == ["box", "example.org", "1", "4096"]
    assert Path("/proc/sys/kernel/msgmax").read_text().strip() != "4096" or True  # ipc namespace: host unchanged


def test_user_credentials_umask_and_cwd(oci: Oci, bundle, request) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 0o077}
        c["process"]["cwd"] = "/tmp"
        c["process"]["env"].append("X=y")
        c["root"]["readonly"] = False

    out = _run(oci, bundle, request, "id; umask; pwd; echo $HOME $X", edit).splitlines()
    assert out[0].startswith("uid=1000(user) gid=1000 groups=") and "10" in out[0] and "20" in out[0]
    assert out[1:] == ["0077", "/tmp", "/home/user y"]


def _mask(names: list[str]) -> int:
    return sum(1 << caps.NUMBERS[n] for n in names)


def test_capabilities_in_all_five_sets(oci: Oci, bundle, request) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["process"]["capabilities"] = {
            "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN"],
            "effective": ["CAP_KILL", "CAP_CHOWN"],
            "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN"],
            "inheritable": ["CAP_NET_BIND_SERVICE"],
            "ambient": ["CAP_NET_BIND_SERVICE"],
        }
        c["process"]["user"] = {"uid": 1000, "gid": 1000}

    out = _run(oci, bundle, request, "grep -E '^(Cap|NoNewPrivs)' /proc/self/status", edit)
    fields = {k: v.strip() for k, v in (line.split(":") for line in out.splitlines())}
    # after execve as uid 1000: permitted/effective come only from the ambient set
    assert int(fields["CapAmb"], 16) == _mask(["CAP_NET_BIND_SERVICE"])
    assert int(fields["CapInh"], 16) == _mask(["CAP_NET_BIND_SERVICE"])
    assert int(fields["CapPrm"], 16) == _mask(["CAP_NET_BIND_SERVICE"])
    assert int(fields["CapBnd"], 16) == _mask(["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN"])
    assert fields["NoNewPrivs"] == "1"


def test_default_capabilities_lack_sys_admin(oci: Oci, bundle, request) -> None:
    out = _run(oci, bundle, request, "grep CapEff /proc/self/status; mount -t tmpfs t /tmp 2>&1 || echo refused")
    eff = int(out.splitlines()[0].split()[1], 16)
    assert eff == _mask(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
    assert not eff & (1 << caps.NUMBERS["CAP_SYS_ADMIN"])
    assert out.splitlines()[-1] == "refused"


def test_rlimits_and_oom_score_adj(oci: Oci, bundle, request) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["process"]["rlimits"] = [
            {"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512},
            {"type": "RLIMIT_NPROC", "soft": 100, "hard": 100},
        ]
        c["process"]["oomScoreAdj"] = 500

    out = _run(oci, bundle, request, "ulimit -n; ulimit -Hn; ulimit -u; cat /proc/self/oom_score_adj", edit)
    assert out.split() == ["256", "512", "100", "500"]


def test_user_namespace_with_mappings(oci: Oci, bundle, request) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["namespaces"].append({"type": "user"})
        # root stays host root, so that it may still walk pytest's 0700 tmp directories to the rootfs
        mappings = [{"containerID": 0, "hostID": 0, "size": 1}, {"containerID": 1, "hostID": 100001, "size": 65535}]
        c["linux"]["uidMappings"] = mappings
        c["linux"]["gidMappings"] = mappings
        c["mounts"] = [m for m in c["mounts"] if m["type"] not in ("sysfs", "cgroup")]

    out = _run(oci, bundle, request, "id; cat /proc/self/uid_map /proc/self/gid_map", edit).splitlines()
    assert out[0] == "uid=0(root) gid=0"
    assert [line.split() for line in out[1:]] == [["0", "0", "1"], ["1", "100001", "65535"]] * 2


def test_joining_a_namespace_by_path(oci: Oci, bundle, request) -> None:
    first = container_id(request, "-a")
    oci("run", "-d", "-b", str(bundle(["/bin/sleep", "30"])), first)
    pid = oci.state(first)["pid"]

    def edit(c: dict[str, Any]) -> None:
        c["linux"]["namespaces"] = [
            {"type": "network", "path": f"/proc/{pid}/ns/net"} if ns["type"] == "network" else ns
            for ns in c["linux"]["namespaces"]
        ]

    out = _run(
        oci, bundle, request, "readlink /proc/self/ns/net; readlink /proc/self/ns/uts", edit, suffix="-b"
    ).split()
    assert out[0] == os.readlink(f"/proc/{pid}/ns/net")
    assert out[1] != os.readlink(f"/proc/{pid}/ns/uts")


def test_cgroup_namespace(oci: Oci, bundle, request) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["linux"]["namespaces"].append({"type": "cgroup"})

    out = _run(oci, bundle, request, "cat /proc/self/cgroup", edit)
    assert all(line.endswith(":/") for line in out.splitlines())


def test_no_pivot(oci: Oci, bundle, request) -> None:
    out = oci("run", "--no-pivot", "-b", str(bundle(["/bin/sh", "-c", "ls /; echo ok"])), container_id(request))
    assert "bin" in out.stdout.split() and out.stdout.split()[-1] == "ok"
