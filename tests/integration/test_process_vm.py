"""isola-vmm process mode runs Debian's amd64 busybox-static with output byte-identical to the same busybox run
natively, both through the in-guest fast paths and without them.

Each case runs twice on the same layout: in the VM with `--root` a directory holding /bin/busybox (applet
symlinks beside it) and the data, and natively with that directory as the cwd and the same environment. Paths
in the commands are relative to it, so both read the same files. The shell finds applets through
/proc/self/exe, so every stage of every pipeline is this busybox on both sides.

Every VM runs in a session of its own; whatever is left of it when the test ends (the VM, guest processes) is
killed with the session, also when the test fails.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import random
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from isola.vmm.kvm import system
from tests.conftest import amd64_asset

VMM = [sys.executable, "-m", "isola.vmm.launch", "run", "--process"]
MODES = {"fastpath": [], "no-fastpath": ["--no-fastpath"]}
ENV = {"PATH": "/bin", "LC_ALL": "C", "TZ": "UTC", "HOME": "/"}
MTIME = 1_700_000_000
BIG = 64 << 20


@pytest.fixture(scope="module", autouse=True)
def _kvm_available() -> None:
    info = system.probe()
    if not info.usable:
        pytest.skip(f"no usable KVM: {info.problem}")


# -- running things in a session of their own


def session_members(sid: int, *, zombies: bool = False) -> list[int]:
    """Processes of session (or process group) `sid`, from /proc; zombies only when asked."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]
        if sid in (int(pgrp), int(session)) and (zombies or state != "Z"):
            found.append(int(entry.name))
    return found


def kill_session(sid: int, timeout: float = 20) -> list[int]:
    """SIGKILL everything in session `sid` until nothing is left (a fork bomb refills it while it is killed);
    the processes still alive after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        members = session_members(sid)
        if not members or time.monotonic() > deadline:
            return members
        for pid in [sid, *members]:
            try:
                if pid == sid:
                    os.killpg(sid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)


def stop_session(proc: subprocess.Popen[bytes]) -> list[int]:
    """End what is left of `proc`'s session: SIGTERM to isola-vmm first (it then kills its VM and removes its
    temporary directory), SIGKILL to everything after; the processes that survived it all."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    left = kill_session(proc.pid)
    proc.kill()
    proc.wait()
    return left


def run_session(
    cmd: Sequence[str],
    *,
    stdin: bytes = b"",
    timeout: float = 300,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run `cmd` in a new session, feed it `stdin`, collect its output; kill the session afterwards."""
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        cwd=cwd,
        env=env,
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_session(proc)
        out, err = proc.communicate()
        pytest.fail(f"{cmd[-3:]} still ran after {timeout} s; stdout {out[-1000:]!r} stderr {err[-2000:]!r}")
    finally:
        left = stop_session(proc)
    assert not left, f"processes {left} of the session outlived every kill"
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def vm_command(
    program: str | Path,
    args: Sequence[str] = (),
    *,
    root: Path | None = None,
    env: dict[str, str] | None = None,
    options: Sequence[str] = (),
) -> list[str]:
    cmd = [*VMM, *options]
    if root is not None:
        cmd += ["--root", str(root)]
    for name, value in (env or {}).items():
        cmd += ["-e", f"{name}={value}"]
    return [*cmd, "--", str(program), *args]


def run_vm(
    program: str | Path,
    args: Sequence[str] = (),
    *,
    root: Path | None = None,
    env: dict[str, str] | None = None,
    options: Sequence[str] = (),
    stdin: bytes = b"",
    timeout: float = 300,
) -> subprocess.CompletedProcess[bytes]:
    return run_session(vm_command(program, args, root=root, env=env, options=options), stdin=stdin, timeout=timeout)


def no_traceback(result: subprocess.CompletedProcess[bytes]) -> None:
    assert b"Traceback" not in result.stderr, result.stderr[-3000:].decode(errors="replace")


# -- the busybox layout


def busybox() -> Path:
    return amd64_asset("busybox")


def applets(bb: Path) -> list[str]:
    listed = subprocess.run([str(bb), "--list"], capture_output=True, text=True, check=True, timeout=60).stdout
    return sorted(set(listed.split()) - {"busybox"})


def deterministic_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 MiB of pseudo-random bytes, made once and hard-linked into every root."""
    path = tmp_path_factory.mktemp("big") / "random.bin"
    path.write_bytes(deterministic_bytes(BIG, 2024))
    return path


def make_root(where: Path, big: Path) -> Path:
    """A root: /bin/busybox with a symlink per applet, /etc/passwd and /etc/group (the host's, so that `ls -l`
    prints the same owner names both ways), data files and an empty /out."""
    bb = busybox()
    (where / "bin").mkdir(parents=True)
    shutil.copy2(bb, where / "bin" / "busybox")
    for name in applets(bb):
        (where / "bin" / name).symlink_to("busybox")
    (where / "etc").mkdir()
    for name in ("passwd", "group"):
        shutil.copy2(Path("/etc", name), where / "etc" / name)
    data = where / "data"
    data.mkdir()
    words = ["delta", "alpha", "echo", "bravo", "charlie", "alpha", "beta", "zulu", "yankee", "Alpha", "x y"]
    rng = random.Random(7)
    (data / "words.txt").write_text("".join(f"{rng.choice(words)}{rng.randrange(10000)}\n" for _ in range(4000)))
    (data / "lines.txt").write_text("".join(f"line {i} {'x' * (i % 17)}\n" for i in range(3000)))
    (data / "numbers.txt").write_text("".join(f"{(i * 7919) % 10007 - 5000}\n" for i in range(3000)))
    (data / "fields.txt").write_text("".join(f"k{i}:{i * 3}:v\n" for i in range(500)))
    (data / "blob.bin").write_bytes(deterministic_bytes(1 << 20, 11))
    (data / "sub").mkdir()
    (data / "sub" / "nested.txt").write_text("nested\n")
    (where / "big").mkdir()
    os.link(big, where / "big" / "random.bin")
    (where / "out").mkdir()
    (where / "dev").mkdir()  # a shell's background job reads /dev/null
    os.mknod(where / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    for p in [*data.rglob("*"), data, where]:  # `where` is data/.. in `ls -a data`
        os.utime(p, (MTIME, MTIME), follow_symlinks=False)
    return where


def native(
    root: Path, args: Sequence[str], *, env: dict[str, str], stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return run_session([str(root / "bin" / "busybox"), *args], stdin=stdin, cwd=root, env=env)


# -- output identity

WORDS_STDIN = "".join(f"{(i * 7) % 1000:04d} w{i % 37}\n" for i in range(3000)).encode()
CASES: dict[str, tuple[list[str], bytes]] = {
    "echo": (["echo", "hello", "from", "a", "process", "VM"], b""),
    "sha256sum-64MiB": (["sha256sum", "big/random.bin", "data/lines.txt"], b""),
    "md5sum-head-tail": (
        ["sh", "-c", "head -c 3000000 big/random.bin | md5sum; tail -c 12345 big/random.bin | sha1sum"],
        b"",
    ),
    "dd-skip": (["sh", "-c", "dd if=big/random.bin bs=1M skip=3 count=8 status=none | sha256sum"], b""),
    "awk-loops": (
        [
            "awk",
            'BEGIN { for (i = 1; i <= 20000; i++) s += 1 / (i * i); printf "%.12f %g\\n", s, s * s / 3;'
            ' for (i = 0; i < 300; i++) printf "%d %x %o %7.3f %s\\n", i * i, i * 7919, i, i / 7,'
            ' substr("abcdefghij", i % 10 + 1, 3) }',
        ],
        b"",
    ),
    "awk-fields": (["awk", "-F", ":", "{ n += $2 } END { print n, NR }", "data/fields.txt"], b""),
    "sort-file": (["sort", "data/words.txt"], b""),
    "sort-numeric-reverse": (["sort", "-n", "-r", "data/numbers.txt"], b""),
    "sort-stdin": (["sort", "-u", "-k2"], WORDS_STDIN),
    "gzip-bytes": (["gzip", "-c", "data/lines.txt"], b""),
    "gzip-9-blob": (["gzip", "-9", "-c", "data/blob.bin"], b""),
    "gzip-roundtrip": (
        ["sh", "-c", "gzip -c data/blob.bin > out/blob.gz && gzip -dc out/blob.gz | sha256sum && ls -ln out/blob.gz"],
        b"",
    ),
    "gunzip-stdin": (["gzip", "-dc"], gzip.compress(b"compressed by python\n" * 5000, mtime=0)),
    "pipeline": (["sh", "-c", "seq 1 5000 | grep 7 | wc -l"], b""),
    "pipeline-long": (["sh", "-c", "cat data/words.txt | tr a-z A-Z | sort | uniq -c | sort -rn | head -n 5"], b""),
    "subshells": (
        ["sh", "-c", "(cd data && ls | wc -l); echo $(echo outer $(echo inner)); x=$( (exit 4); echo $?); echo x=$x"],
        b"",
    ),
    "and-or": (
        ["sh", "-c", "true && echo and; false || echo or; false && echo no; true || echo no; ! false && echo not"],
        b"",
    ),
    "exit-3": (["sh", "-c", "exit 3"], b""),
    "exit-status-of-pipeline": (["sh", "-c", "echo x | (read v; exit 7)"], b""),
    "ls-l": (["ls", "-l", "data"], b""),
    "ls-ln-full-time": (["ls", "-lna", "--full-time", "data", "data/sub"], b""),
    "find-sorted": (["sh", "-c", "find data -type f | sort"], b""),
    "cat-missing": (["cat", "data/missing.txt"], b""),
    "cat-missing-and-present": (["cat", "data/missing.txt", "data/sub/nested.txt"], b""),
    "fd-7-in-subshell": (["sh", "-c", "exec 7>out/seven; echo parent >&7; (echo child >&7); cat out/seven"], b""),
    "fds-3-to-9-in-subshells": (
        ["sh", "-c", 'for fd in 3 4 5 6 7 8 9; do eval "exec $fd>out/f$fd"; (eval "echo $fd >&$fd"); done; cat out/f*'],
        b"",
    ),
    "env": (["env"], b""),
    "stdin-wc": (["wc", "-c"], deterministic_bytes(100_000, 3)),
    "stdin-sha256-1MiB": (["sh", "-c", "cat | sha256sum"], deterministic_bytes(1 << 20, 4)),
    "sed-grep": (["sh", "-c", "sed -e 's/[aeiou]/_/g' data/words.txt | grep -c '_'"], b""),
    "trap-signal": (["sh", "-c", "trap 'echo got TERM' TERM; kill -TERM $$; echo after"], b""),
    "sigpipe": (["sh", "-c", "seq 1 100000 | head -n 1; echo done"], b""),
    "killed-child-status": (["sh", "-c", "sleep 5 & sleep 1; kill $!; wait $!; echo status $?"], b""),
}
CASE_ENV = {"env": {**ENV, "FOO": "bar baz", "EMPTY": "", "EQUALS": "a=b=c"}}


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", CASES)
def test_busybox_matches_native(name: str, mode: str, tmp_path: Path, big_file: Path) -> None:
    args, stdin = CASES[name]
    env = CASE_ENV.get(name, ENV)
    ours_root, theirs_root = make_root(tmp_path / "vm", big_file), make_root(tmp_path / "native", big_file)
    ours = run_vm("/bin/busybox", args, root=ours_root, env=env, options=MODES[mode], stdin=stdin)
    theirs = native(theirs_root, args, env=env, stdin=stdin)
    no_traceback(ours)
    assert ours.stdout == theirs.stdout, (ours.stdout[-2000:], ours.stderr[-2000:], theirs.stdout[-2000:])
    assert ours.stderr == theirs.stderr
    assert ours.returncode == theirs.returncode, ours.stderr[-2000:]
    assert ours.stdout or ours.stderr or ours.returncode, "no output and status 0: the comparison would prove nothing"
    if name.startswith("gzip-roundtrip"):
        assert (ours_root / "out" / "blob.gz").read_bytes() == (theirs_root / "out" / "blob.gz").read_bytes()


def test_expected_statuses_and_messages(tmp_path: Path, big_file: Path) -> None:
    """What the identity test compares, spelled out once, so that a native busybox gone wrong is noticed too."""
    root = make_root(tmp_path / "vm", big_file)
    exit3 = run_vm("/bin/busybox", ["sh", "-c", "exit 3"], root=root, env=ENV)
    assert exit3.returncode == 3 and exit3.stdout == b"" and exit3.stderr == b"", exit3.stderr[-2000:]
    missing = run_vm("/bin/busybox", ["cat", "data/missing.txt"], root=root, env=ENV)
    assert missing.returncode == 1
    assert missing.stderr == b"cat: can't open 'data/missing.txt': No such file or directory\n", missing.stderr
    pipeline = run_vm("/bin/busybox", ["sh", "-c", "seq 1 5000 | grep 7 | wc -l"], root=root, env=ENV)
    assert pipeline.stdout == b"1355\n", pipeline.stderr[-2000:]
    digest = hashlib.sha256(big_file.read_bytes()).hexdigest()
    sha = run_vm("/bin/busybox", ["sha256sum", "big/random.bin"], root=root, env=ENV)
    assert sha.stdout == f"{digest}  big/random.bin\n".encode(), sha.stderr[-2000:]


def test_the_environment_is_exactly_the_given_values(tmp_path: Path, big_file: Path) -> None:
    root = make_root(tmp_path / "vm", big_file)
    result = run_vm("/bin/busybox", ["env"], root=root, env={"A": "1", "B": "two words", "C": "x=y"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(result.stdout.decode().splitlines()) == ["A=1", "B=two words", "C=x=y"]
    empty = run_vm("/bin/busybox", ["env"], root=root)
    assert empty.returncode == 0 and empty.stdout == b"", empty.stderr[-2000:]


def test_cwd_is_the_root_and_stdio_are_the_vmms(tmp_path: Path, big_file: Path) -> None:
    root = make_root(tmp_path / "vm", big_file)
    result = run_vm(
        "/bin/busybox",
        ["sh", "-c", "pwd; ls /; read line; echo got $line; echo to stderr >&2; exit 5"],
        root=root,
        env=ENV,
        stdin=b"a line\nanother\n",
    )
    assert result.returncode == 5, result.stderr[-2000:]
    assert result.stdout == b"/\nbig\nbin\ndata\ndev\netc\nout\ngot a line\n"
    assert result.stderr == b"to stderr\n"


@pytest.mark.parametrize("mode", MODES)
def test_stdin_pipes_through(mode: str, tmp_path: Path) -> None:
    data = deterministic_bytes(300_000, 5)
    result = run_vm(busybox(), ["wc", "-c"], stdin=data, options=MODES[mode])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [str(len(data)).encode()]
    digest = run_vm(busybox(), ["sha256sum"], stdin=data, options=MODES[mode])
    assert digest.stdout == f"{hashlib.sha256(data).hexdigest()}  -\n".encode(), digest.stderr[-2000:]


def test_without_root_the_program_is_alone(tmp_path: Path) -> None:
    """Without --root, PROGRAM is a host path and the program sees a fresh directory holding only itself."""
    bb = busybox()
    listing = run_vm(bb, ["ls", "-a", "/"])
    assert listing.returncode == 0, listing.stderr[-2000:]
    names = set(listing.stdout.decode().split()) - {".", ".."}
    assert len(names) == 1, listing.stdout
    passwd = run_vm(bb, ["cat", "/etc/passwd"])
    assert passwd.returncode == 1 and passwd.stdout == b"", passwd.stdout[:200]
    pipeline = run_vm(bb, ["sh", "-c", "seq 1 5000 | grep 7 | wc -l"], env={"PATH": "/"})
    assert pipeline.stdout == b"1355\n", pipeline.stderr[-2000:]


def test_strace_and_stats_leave_stdout_alone(tmp_path: Path, big_file: Path) -> None:
    root = make_root(tmp_path / "vm", big_file)
    args = ["sh", "-c", "seq 1 200 | wc -l; cat data/sub/nested.txt"]
    plain = run_vm("/bin/busybox", args, root=root, env=ENV)
    traced = run_vm("/bin/busybox", args, root=root, env=ENV, options=["--strace"])
    stats = run_vm("/bin/busybox", args, root=root, env=ENV, options=["--stats"])
    assert plain.stdout == b"200\nnested\n", plain.stderr[-2000:]
    for result in (traced, stats):
        no_traceback(result)
        assert result.stdout == plain.stdout and result.returncode == 0, result.stderr[-2000:]
        assert result.stderr, "nothing was printed to stderr"
    assert b"open" in traced.stderr and b"exit_group" in traced.stderr


def test_a_terminal_sees_output_before_a_long_computation() -> None:
    """Writes to a pipe may wait in the batch until the next exit; a terminal's never do: a line printed
    before a CPU-bound loop (no system calls, so no exit) must reach the terminal while the loop runs."""
    bb = busybox()
    controller, terminal = os.openpty()
    proc = subprocess.Popen(
        vm_command(bb, ["sh", "-c", "echo ready; while :; do :; done"]),
        stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True,
    )  # fmt: skip
    os.close(terminal)
    try:
        seen = b""
        deadline = time.monotonic() + 30
        while b"ready" not in seen and time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                seen += os.read(controller, 4096)
        assert b"ready" in seen, seen
        assert proc.poll() is None, "the loop ended: the line proves nothing"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        os.close(controller)


def test_a_pipe_sees_batched_output_while_the_program_computes() -> None:
    """Small writes to a pipe are batched in the guest, and a CPU-bound loop makes no exit: the flusher
    writes the batch out meanwhile, so the reader sees the line long before the program ends."""
    proc = subprocess.Popen(
        vm_command(busybox(), ["sh", "-c", "echo ready; while :; do :; done"], options=["--stats"]),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "nothing reached the pipe within 30 s"
        assert os.read(proc.stdout.fileno(), 4096) == b"ready\n"
        assert proc.poll() is None, "the loop ended: the line proves nothing"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()


def test_the_vm_process_holds_no_capability_and_cannot_regain_one(tmp_path: Path) -> None:
    """Seen from the host: the VM's own process (PID 1 of its namespace, a child of the launcher) has empty
    effective, permitted, inheritable, ambient and bounding sets and no_new_privs; and from inside, root's
    mknod is refused while plain file writes (uid 0 keeps its files) work."""
    bb = busybox()
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(bb, root / "bin" / "busybox")
    proc = subprocess.Popen(
        vm_command("/bin/busybox", ["sh", "-c", "mknod /dev-null c 1 3; echo mknod $?; echo x > /made; echo "
                                    "write $?; sleep 30"], root=root),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        said = b""
        while b"write" not in said and proc.poll() is None:
            said += os.read(proc.stdout.fileno(), 4096)
        assert said.startswith(b"mknod 1\nwrite 0"), said
        statuses: dict[int, str] = {}
        deadline = time.monotonic() + 30
        while not statuses and time.monotonic() < deadline:
            for pid in session_members(proc.pid):
                with contextlib.suppress(OSError):
                    status = Path(f"/proc/{pid}/status").read_text()
                    if "\nNSpid:\t" in status and len(status.split("\nNSpid:\t")[1].split("\n")[0].split()) > 1:
                        statuses[pid] = status  # a process inside the VM's PID namespace
        assert statuses, "no process of the VM found"
        for status in statuses.values():
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                assert int(fields[name], 16) == 0, (name, fields[name])
            assert fields["NoNewPrivs"].strip() == "1"
        assert (root / "made").read_text() == "x\n" and not (root / "dev-null").exists()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        assert proc.stderr is not None
        proc.stderr.close()
