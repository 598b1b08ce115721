"""The lane's logic without QEMU: the console watch (against fake QEMUs), the L1 script, the command line,
module dependencies from synthetic ELF files. Fast, so the failure modes are covered on every run."""

from __future__ import annotations

import base64
import gzip
import json
import random
import shlex
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isola.assets import kmod
from isola.errors import FormatError, NotFoundError, UnsupportedError, UsageError
from isola.vmm.nested import image, lane

NONCE = "0123456789abcdef"


def fake_qemu(body: str) -> list[str]:
    """A command that behaves like QEMU's console: `body` is Python with `say(text)` printing a line."""
    prelude = "import sys, time\ndef say(t): sys.stdout.write(t + '\\r\\n'); sys.stdout.flush()\n"
    return [sys.executable, "-c", prelude + body]


def watch(body: str, *, timeout: float = 30, boot_timeout: float = 30, stop_on=lane.STOP_ON, on_line=None):
    return lane._Run(NONCE, timeout, boot_timeout, tuple(stop_on), on_line).run(fake_qemu(body))


# --- the console watch ------------------------------------------------------------------------------------


def test_markers_give_stages_status_and_output():
    seen: list[str] = []
    result = watch(
        f"say('[ 0.4] early kernel line')\n"
        f"say('ISOLA-L1 {NONCE} stage=init uptime=1.50')\n"
        f"say('ISOLA-L1 {NONCE} stage=mounted uptime=2.25')\n"
        f"say('hello'); say('ISOLA-L1 ffffffffffffffff exit=0')\n"
        f"say('ISOLA-L1 {NONCE} stage=done uptime=3.00')\n"
        f"say('ISOLA-L1 {NONCE} exit=3')\n"
        f"sys.stdout.write('[ 3.1] reboot: Power down')",
        on_line=seen.append,
    )
    assert result.status == 3
    assert list(result.stages) == ["init", "mounted", "done"]
    assert result.uptimes == {"init": 1.5, "mounted": 2.25, "done": 3.0}
    # A marker with another run's nonce is the command's output, not a marker.
    assert result.output == "hello\nISOLA-L1 ffffffffffffffff exit=0\n"
    assert seen[-1] == "[ 3.1] reboot: Power down"  # the unterminated last line is not lost
    assert result.console.endswith("Power down\n") and "\r" not in result.console
    assert "launch→L1 /init" in result.summary() and "command" in result.summary()


def test_no_exit_marker_is_an_error_naming_the_panic():
    with pytest.raises(lane.LaneError, match=r"without reporting an exit status \(Kernel panic - not syncing: x\)"):
        watch(f"say('ISOLA-L1 {NONCE} stage=init uptime=1'); say('Kernel panic - not syncing: x')")


def test_forged_exit_marker_is_not_a_status():
    with pytest.raises(lane.LaneError, match="without reporting an exit status"):
        watch(f"say('ISOLA-L1 {NONCE[::-1]} exit=0')")


def test_set_up_error_marker_wins_over_the_status():
    with pytest.raises(lane.LaneError, match=r"L1 set-up failed: insmod kvm-amd\.ko") as err:
        watch(f"say('ISOLA-L1 {NONCE} error=insmod kvm-amd.ko'); say('ISOLA-L1 {NONCE} exit=1')")
    assert "error=insmod" in err.value.console
    assert err.value.hint is not None and "error=insmod" in err.value.hint


def test_stop_line_kills_qemu_at_once():
    started = time.monotonic()
    with pytest.raises(lane.LaneError, match=r"QEMU killed at console line 'KVM internal error\. Suberror: 1'"):
        watch(f"say('ISOLA-L1 {NONCE} stage=init uptime=1'); say('KVM internal error. Suberror: 1'); time.sleep(60)")
    assert time.monotonic() - started < 10


def test_deadline_kills_a_running_command():
    started = time.monotonic()
    with pytest.raises(lane.LaneTimeoutError, match=r"still running after 1.5s; QEMU killed") as err:
        watch(f"say('ISOLA-L1 {NONCE} stage=init uptime=1'); say('working'); time.sleep(60)", timeout=1.5)
    assert 1.5 <= time.monotonic() - started < 10
    assert err.value.console.endswith("working\n")


def test_boot_deadline_applies_until_init():
    with pytest.raises(lane.LaneTimeoutError, match=r"did not reach /init within 1s"):
        watch("say('booting'); time.sleep(60)", timeout=30, boot_timeout=1)


def test_qemu_that_fails_to_start_is_an_error_with_its_message():
    with pytest.raises(lane.LaneError, match=r"without reporting an exit status; QEMU exited 1") as err:
        watch("sys.stderr.write('qemu: could not load kernel\\n'); sys.exit(1)")
    assert "could not load kernel" in err.value.console


def test_boot_deadline_is_lifted_at_init():
    result = watch(f"say('ISOLA-L1 {NONCE} stage=init uptime=1'); time.sleep(1.5); say('ISOLA-L1 {NONCE} exit=0')",
                   boot_timeout=0.5)  # fmt: skip
    assert result.status == 0


def test_a_boot_that_hangs_before_init_is_retried(monkeypatch, tmp_path):
    """run_in_l1 with a fake QEMU whose first boot hangs: the second boot's status is the answer."""
    boots = tmp_path / "boots"

    def fake_command(qemu, assets, *, append, memory_mib, cpus):
        nonce = next(w for w in append.split() if w.startswith("l1.nonce=")).removeprefix("l1.nonce=")
        return fake_qemu(
            f"import pathlib\np = pathlib.Path({str(boots)!r})\nif not p.exists(): p.touch(); time.sleep(60)\n"
            f"say('ISOLA-L1 {nonce} stage=init uptime=1'); say('ISOLA-L1 {nonce} exit=4')"
        )

    monkeypatch.setattr(lane, "find_qemu", lambda: Path("/fake/qemu"))
    monkeypatch.setattr(image, "prepare", lambda: image.L1Assets(Path("/k"), Path("/i")))
    monkeypatch.setattr(lane, "qemu_command", fake_command)
    assert lane.run_in_l1(["true"], timeout=30, boot_timeout=1).status == 4
    boots.unlink()
    with pytest.raises(lane.LaneTimeoutError, match="did not reach /init"):
        lane.run_in_l1(["true"], timeout=30, boot_timeout=1, boot_retries=0)


# --- what is sent to L1 -----------------------------------------------------------------------------------


def inner_command(script: str) -> str:
    """The ``sh -c`` text of the script's last line (the chroot), as L1's shell will receive it."""
    last = shlex.split(script.splitlines()[-1])
    assert last[:7] == ["exec", "/bin/env", "-i", "/bin/chroot", "/host", "/bin/sh", "-c"]
    return last[7]


def test_argv_env_and_cwd_survive_the_shell(tmp_path):
    show = "import os, sys, json; print(json.dumps([sys.argv[1:], os.getcwd(), os.environ['X']]))"
    argv = [sys.executable, "-c", show, "a b", "'q'", '"$HOME"', "$(false)", "\\", ""]
    script = lane.l1_script(argv, nonce=NONCE, cwd=Path("/usr/share"), env={"X": "x y 'z'", "PATH": "/usr/bin:/bin"})
    # Run the command part on this host: it is the same POSIX shell syntax busybox's sh reads in L1.
    done = subprocess.run(["sh", "-c", inner_command(script)], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [argv[3:], "/usr/share", "x y 'z'"]


def test_writable_dirs_become_overlays_reporting_failure_with_the_nonce():
    script = lane.l1_script(["true"], nonce=NONCE, cwd=Path("/"), env={}, writable=[Path("/usr/share"), Path("/etc")])
    mounts = [shlex.split(line) for line in script.splitlines() if line.startswith("mount ")]
    assert [m[:5] for m in mounts] == [["mount", "-t", "overlay", "overlay", "-o"]] * 2
    assert [m[5:7] for m in mounts] == [
        ["lowerdir=/hostview/usr/share,upperdir=/scratch/0/upper,workdir=/scratch/0/work", "/host/usr/share"],
        ["lowerdir=/hostview/etc,upperdir=/scratch/1/upper,workdir=/scratch/1/work", "/host/etc"],
    ]
    assert f"ISOLA-L1 {NONCE} error=overlay on /usr/share" in script


@pytest.mark.parametrize(
    ("cwd", "message"),
    [
        (Path("relative"), "must be an absolute path"),
        (Path("/tmp/x"), "is under /tmp, which L1 replaces"),
        (Path("/run"), "is under /run"),
        (Path("/no/such/dir"), "is not an existing directory"),
    ],
)
def test_bad_directories_are_refused(cwd, message):
    with pytest.raises(UsageError, match=message):
        lane.l1_script(["true"], nonce=NONCE, cwd=cwd, env={})
    if "is under" not in message:  # a covered directory is fine as an overlay: see the next test
        with pytest.raises(UsageError, match=message):
            lane.l1_script(["true"], nonce=NONCE, cwd=Path("/"), env={}, writable=[cwd])


def test_a_project_under_tmp_is_overlaid_from_the_uncovered_view(tmp_path):
    """CI may check the project out under /tmp, which L1 covers with a tmpfs: the overlay's lower layer comes
    from /hostview (bound before the tmpfs mounts) and its mount point is made inside the tmpfs."""
    project = tmp_path / "project"
    project.mkdir()
    script = lane.l1_script(["true"], nonce=NONCE, cwd=project, env={}, writable=[project])
    assert f"lowerdir=/hostview{project}," in script
    assert any(line.startswith("mkdir -p") and f"/host{project}" in line for line in script.splitlines())


def test_empty_command_is_refused():
    with pytest.raises(UsageError, match="empty"):
        lane.l1_script([], nonce=NONCE, cwd=Path("/"), env={})


def test_environment_puts_the_venv_first_and_writes_no_bytecode():
    env = lane.l1_environment({"EXTRA": "1", "HOME": "/root"})
    assert env["PATH"].startswith(f"{sys.prefix}/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["ISOLA_NESTED_L1"] == "1"
    assert env["EXTRA"] == "1" and env["HOME"] == "/root"


def test_kernel_command_line_carries_the_script():
    line = lane.kernel_command_line("echo hi\n", nonce=NONCE, tsc_khz=2596122)
    words = dict(w.split("=", 1) for w in line.split() if "=" in w)
    assert words["tsc_early_khz"] == "2596122" and words["l1.nonce"] == NONCE
    assert gzip.decompress(base64.b64decode(words["l1.cmd"])) == b"echo hi\n"
    assert "tsc_early_khz" not in lane.kernel_command_line("x", nonce=NONCE, tsc_khz=None)


def test_kernel_command_line_refuses_what_does_not_fit():
    script = "echo " + random.Random(0).randbytes(1500).hex()  # random: gzip cannot shrink it below 2 KiB
    with pytest.raises(UsageError, match="too long for L1's kernel command line"):
        lane.kernel_command_line(script, nonce=NONCE, tsc_khz=None)


def test_qemu_command_has_no_nic_and_a_read_only_share():
    assets = image.L1Assets(kernel=Path("/k"), initrd=Path("/i"))
    cmd = lane.qemu_command(Path("/q"), assets, append="x", memory_mib=512, cpus=1)
    text = " ".join(cmd)
    assert "-netdev" not in text and "-nic" not in text and "-nodefaults" in cmd
    assert "path=/,security_model=none,readonly=on" in text
    assert cmd[cmd.index("-cpu") + 1] == "max" and cmd[cmd.index("-accel") + 1] == "tcg"


def test_host_tsc_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2596.122\n")
    assert lane.host_tsc_khz(cpuinfo) == 2596122
    cpuinfo.write_text("processor\t: 0\n")
    assert lane.host_tsc_khz(cpuinfo) is None
    assert lane.host_tsc_khz(tmp_path / "missing") is None


def test_missing_qemu_says_which_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UnsupportedError, match="not installed") as err:
        lane.find_qemu()
    assert err.value.hint == "apt-get install qemu-system-x86"


# --- module dependencies ----------------------------------------------------------------------------------


def elf_with_modinfo(info: dict[str, str]) -> bytes:
    """A minimal little-endian ELF64 holding a .modinfo section, as `modinfo` reads it."""
    modinfo = b"".join(f"{k}={v}\0".encode() for k, v in info.items())
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    body_off = 64
    shoff = body_off + len(modinfo) + len(shstrtab)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)
    sections = [
        bytes(64),
        struct.pack("<IIQQQQIIQQ", 1, 1, 0, 0, body_off, len(modinfo), 0, 0, 1, 0),
        struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, body_off + len(modinfo), len(shstrtab), 0, 0, 1, 0),
    ]
    return bytes(header) + modinfo + shstrtab + b"".join(sections)


def fake_modules(tmp_path: Path, depends: dict[str, str]) -> dict[str, Path]:
    available = {}
    for name, deps in depends.items():
        path = tmp_path / f"{name.replace('_', '-')}.ko"
        path.write_bytes(elf_with_modinfo({"license": "GPL", "depends": deps, "name": name}))
        available[kmod.module_name(path)] = path
    return available


def test_modinfo_reads_the_section():
    assert kmod.modinfo(elf_with_modinfo({"depends": "a,b", "name": "c"})) == {"depends": "a,b", "name": "c"}


@pytest.mark.parametrize("data", [b"", b"\x7fELF" + bytes(60), b"\x1f\x8b" + bytes(100)])
def test_modinfo_refuses_what_is_not_a_module(data):
    with pytest.raises(FormatError):
        kmod.modinfo(data)


def test_load_order_puts_dependencies_first(tmp_path):
    available = fake_modules(
        tmp_path, {"kvm_amd": "kvm,ccp", "kvm": "irqbypass", "ccp": "", "irqbypass": "", "unused": ""}
    )
    order = [kmod.module_name(p) for p in kmod.load_order(["kvm-amd", "kvm"], available)]
    assert order == ["irqbypass", "kvm", "ccp", "kvm_amd"]


def test_load_order_reports_a_missing_module(tmp_path):
    with pytest.raises(NotFoundError, match=r"kernel module ccp \(needed by kvm_amd\) is not in the kernel package"):
        kmod.load_order(["kvm_amd"], fake_modules(tmp_path, {"kvm_amd": "ccp"}))


def test_load_order_reports_a_cycle(tmp_path):
    with pytest.raises(FormatError, match="cycle: a -> b -> a"):
        kmod.load_order(["a"], fake_modules(tmp_path, {"a": "b", "b": "a"}))


def test_pvh_kernel_refuses_a_file_that_is_not_a_bzimage(tmp_path):
    bogus = tmp_path / "vmlinuz"
    bogus.write_bytes(bytes(4096))
    with pytest.raises(FormatError, match="not an x86 bzImage"):
        image.pvh_kernel(bogus, tmp_path / "vmlinux")
    assert not (tmp_path / "vmlinux").exists()


def test_only_the_lane_switches_of_the_callers_environment_reach_l1(monkeypatch):
    monkeypatch.setenv("ISOLA_NESTED_SMP", "1")
    monkeypatch.setenv("SOME_HOST_SECRET", "x")
    env = lane.l1_environment()
    assert env["ISOLA_NESTED_SMP"] == "1" and env["ISOLA_NESTED_L1"] == "1"
    assert "SOME_HOST_SECRET" not in env
