"""Hostile programs under isola-vmm process mode: each proves that the VMM survives and that isolation holds.

The programs are C files in tests/fixtures/process, built once per session with `gcc -static -O1`. Where
Linux defines the answer (the signal, si_code and si_addr of a fault, the errno of a call given a bad
pointer), the program also runs natively and the two outputs are compared line by line. The rest checks the
promises of process mode: a fault is 128 + signal and one `isola-vmm:` line; nothing above the program's
memory, in the kernel half or at the top of the address space can be read, written or run; no system call
argument crashes the VMM; a fork bomb stops at a limit and leaves nothing behind; `--root` cannot be left;
a malformed ELF is one line of error, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from io import BufferedReader
from pathlib import Path

import pytest

from tests.integration.test_process_vm import (
    busybox,
    deterministic_bytes,
    no_traceback,
    run_session,
    run_vm,
    session_members,
    stop_session,
    vm_command,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "process"
MEMORY = ["--memory", "256"]  # the program's memory is [0, 256 MiB); the system area is at 1 GiB
SYSTEM_AREA = 1 << 30
MODES = {"fastpath": [], "no-fastpath": ["--no-fastpath"]}
SIGSEGV, SIGTRAP, SIGILL, SIGFPE, SIGBUS = 11, 5, 4, 8, 7
SI_KERNEL, SEGV_MAPERR, SEGV_ACCERR, ILL_ILLOPN, FPE_INTDIV = 128, 1, 2, 2, 1


@pytest.fixture(scope="session")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tests/fixtures/process/*.c, built static; skips with the reason when gcc or a static libc is
    missing."""
    gcc = shutil.which("gcc")
    if gcc is None or os.uname().machine != "x86_64":
        pytest.skip("needs an x86-64 host with gcc (Debian: gcc, libc6-dev)")
    out = tmp_path_factory.mktemp("process-programs")
    built = {}
    for source in sorted(FIXTURES.glob("*.c")):
        target = out / source.stem
        result = subprocess.run(
            [gcc, "-static", "-O1", "-Wall", "-Werror", "-o", str(target), str(source)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if "cannot find -lc" in result.stderr:
            pytest.skip("gcc cannot link static programs: install libc6-dev")
        assert result.returncode == 0, result.stderr
        built[source.stem] = target
    return built


def lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stdout.decode(errors="replace").splitlines()


def one_vmm_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """The single `isola-vmm:` line the VMM prints when the program ends by a signal or cannot start."""
    no_traceback(result)
    text = result.stderr.decode(errors="replace")
    assert len(text.splitlines()) == 1 and text.startswith("isola-vmm:") and text.endswith("\n"), text[-3000:]
    return text.strip()


def run_native(program: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return run_session([str(program), *args], cwd=cwd, env={})


# -- faults end the program, not the VMM


@pytest.mark.parametrize(
    "address",
    [0x0, 0x8, 0xDEADBEEF000, 0x10000000, SYSTEM_AREA, SYSTEM_AREA + 0x1000, 1 << 32, 0x7FFFFFFFF000,
     0xFFFF800000000000, 0xFFFFFFFF81000000, 0xFFFFFFFFFFFFF000],
)  # fmt: skip
def test_a_store_to_memory_the_program_does_not_own_is_sigsegv(programs: dict[str, Path], address: int) -> None:
    result = run_vm(programs["die"], ["store", hex(address)], options=MEMORY)
    assert result.returncode == 128 + SIGSEGV, result.stderr[-2000:]
    assert result.stdout == b"before\n"
    line = one_vmm_line(result)
    assert "SIGSEGV" in line and "pc=0x" in line, line
    fault = re.search(r"addr=(0x[0-9a-fA-F]+)", line)
    assert fault is not None and int(fault.group(1), 16) == address, line


@pytest.mark.parametrize("address", [0x8000000000000000, 0x800000000000, 0x1234567890ABC])
def test_a_store_to_a_non_canonical_address_is_what_linux_gives(
    programs: dict[str, Path], tmp_path: Path, address: int
) -> None:
    """#GP, or #SS when the address is formed from %rbp (as gcc does here): SIGSEGV or SIGBUS, as natively."""
    result = run_vm(programs["die"], ["store", hex(address)], options=MEMORY)
    theirs = run_native(programs["die"], ["store", hex(address)], tmp_path)
    assert theirs.returncode in (-SIGSEGV, -SIGBUS)
    assert result.returncode == 128 - theirs.returncode, result.stderr[-2000:]
    assert result.stdout == b"before\n"
    assert {-SIGSEGV: "SIGSEGV", -SIGBUS: "SIGBUS"}[theirs.returncode] in one_vmm_line(result)


@pytest.mark.parametrize(
    "address",
    [0x0, 0x10000000, SYSTEM_AREA, SYSTEM_AREA + 0x5000, 1 << 32, 0x7FFFFFFFF000, 0x800000000000,
     0xFFFF800000000000, 0xFFFFFFFFFFE00000, 0xFFFFFFFFFFFFF000, 0xD1CE5EED5EED],
)  # fmt: skip
def test_a_jump_anywhere_else_is_sigsegv(programs: dict[str, Path], address: int) -> None:
    result = run_vm(programs["die"], ["jump", hex(address)], options=MEMORY)
    assert result.returncode == 128 + SIGSEGV, result.stderr[-2000:]
    assert result.stdout == b"before\n"
    assert "SIGSEGV" in one_vmm_line(result)


@pytest.mark.parametrize(
    ("args", "status", "signame"),
    [
        (["exit", "42"], 42, None),
        (["exit", "263"], 7, None),
        (["abort"], 128 + 6, "SIGABRT"),
        (["kill", "9"], 128 + 9, "SIGKILL"),
        (["kill", "15"], 128 + 15, "SIGTERM"),
        (["recurse"], 128 + SIGSEGV, "SIGSEGV"),
        (["refault"], 128 + 14, "SIGALRM"),
        (["badstack"], 128 + SIGSEGV, "SIGSEGV"),
    ],
    ids=lambda v: str(v),
)
def test_ways_to_end(programs: dict[str, Path], args: list[str], status: int, signame: str | None) -> None:
    result = run_vm(programs["die"], args, options=MEMORY, timeout=60)
    assert result.returncode == status, result.stderr[-2000:]
    assert result.stdout == b"before\n"
    if signame is None:
        assert result.stderr == b""
    else:
        line = one_vmm_line(result)
        assert signame in line, line


# -- the address space: nothing but the program's own memory


def probe_results(result: subprocess.CompletedProcess[bytes]) -> dict[str, str]:
    """`probe` output as {address or control name: "r=... w=... x=..."} (an address probed twice: its first,
    fuller line); the last line must be "done"."""
    out = lines(result)
    assert out and out[-1] == "done", (out[-5:], result.stderr[-2000:])
    found: dict[str, str] = {}
    for line in out[:-1]:
        name, rest = line.split(" ", 1)
        found.setdefault(name, rest)
    return found


@pytest.fixture(scope="module")
def probed(
    programs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, str], dict[str, str]]:
    """`probe --scan` in the VM and natively: reads, writes and calls around the end of guest memory, the
    system area and beyond (its supervisor pages: GDT, TSS, IDT, exception stubs and stack; the page tables
    after it; the file windows), the kernel half, the non-canonical hole, the top of the address space, powers
    of two and pseudo-random addresses."""
    system_pages = [SYSTEM_AREA + off for off in range(0, 0x8000, 0x1000)]
    beyond = [SYSTEM_AREA + 0x1A000, SYSTEM_AREA + (2 << 20), SYSTEM_AREA + (2 << 20) + 0x1000,
              SYSTEM_AREA + (3 << 20), 2 << 30, (2 << 30) + (1 << 21), 3 << 30, (33 << 30) - 4096]  # fmt: skip
    extra = [hex(a) for a in system_pages + beyond]
    ours = run_vm(programs["probe"], ["--scan", *extra], options=MEMORY, timeout=600)
    theirs = run_native(programs["probe"], ["--scan", *extra], tmp_path_factory.mktemp("probe"))
    no_traceback(ours)
    assert ours.returncode == 0, ours.stderr[-2000:]
    got, want = probe_results(ours), probe_results(theirs)
    assert got.keys() == want.keys()
    return got, want


def unowned(got: dict[str, str], want: dict[str, str]) -> list[str]:
    """The addresses neither the native program nor the VM's owns (the VM's may own the top of its memory)."""
    picked = []
    for address, result in got.items():
        if address.startswith("control") or "mapped" in want[address]:
            continue
        if "mapped" in result:  # the program's own (its stack or heap where the VMM places them)
            assert int(address, 16) < SYSTEM_AREA, f"{address}: the VMM says the program owns it"
            continue
        picked.append(address)
    assert len(picked) > 200, f"only {len(picked)} addresses compared"
    return picked


@pytest.mark.slow
def test_nothing_outside_the_programs_memory_can_be_touched(probed: tuple[dict[str, str], dict[str, str]]) -> None:
    """Every read, write and call at an address the program does not own faults (SIGSEGV, as natively): the
    system area's supervisor pages, the page tables and the windows included. The controls (the program's own
    pages, read-write, read-only, read-execute, none) behave as natively, so the probe can tell."""
    got, want = probed
    for name in [k for k in got if k.startswith("control")]:
        assert got[name] == want[name], name
    assert want["control-rw"] == "r=ok w=ok x=SIG11/2/=", "the native controls are not what Linux gives"
    for address in unowned(got, want):
        assert "ok" not in got[address], f"{address}: reachable ({got[address]})"
        signals = re.findall(r"SIG(\d+)/", got[address])
        assert signals == re.findall(r"SIG(\d+)/", want[address]), (
            f"{address}: VM {got[address]}, Linux {want[address]}"
        )
    for page in range(SYSTEM_AREA, SYSTEM_AREA + 0x8000, 0x1000):
        assert got[f"0x{page:016x}"].startswith("r=SIG11/1/= w=SIG11/1/= x=SIG11/1/="), page


@pytest.mark.slow
def test_faults_outside_memory_have_linuxs_siginfo(probed: tuple[dict[str, str], dict[str, str]]) -> None:
    """si_code and si_addr as Linux gives them: SEGV_MAPERR and the address for a page no mapping covers,
    SI_KERNEL and 0 for a non-canonical address (a #GP)."""
    got, want = probed
    different = {a: (got[a], want[a]) for a in unowned(got, want) if got[a] != want[a]}
    assert not different, (len(different), dict(list(different.items())[:8]))


def test_memory_calls_cannot_reach_above_the_programs_memory(programs: dict[str, Path]) -> None:
    """mmap (MAP_FIXED, MAP_FIXED_NOREPLACE, a hint), mremap (to a fixed address, or grown) and brk aimed at
    the end of the program's memory, the system area and the windows: refused, or placed inside."""
    top = 256 << 20
    result = run_vm(programs["mapfixed"], [f"{top:x}", f"{SYSTEM_AREA:x}"], options=MEMORY, timeout=120)
    no_traceback(result)
    out = lines(result)
    assert result.returncode == 0 and out[-1] == "done", (out[-5:], result.stderr[-2000:])
    assert len(out) == 1 + 9 * 5 + 2
    outside = [line for line in out if "OUTSIDE" in line]
    assert not outside, outside
    assert all(line.endswith(("refused", "inside")) for line in out[:-1]), out


def test_the_fast_path_pages_are_the_programs_to_break(programs: dict[str, Path]) -> None:
    """The pages of the in-guest fast paths are user-accessible (by design: the entry stub runs at CPL 3
    there). Filling them with garbage may only break the program's own reads and writes: the VMM goes on and
    the program ends as it chooses."""
    result = run_vm(programs["window"], ["scribble", hex(SYSTEM_AREA)], options=MEMORY, timeout=120)
    no_traceback(result)
    assert result.returncode == 0, result.stderr[-2000:]
    out = lines(result)
    assert out[0] == "read before 65536" and out[-1] == "done", out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("change", ["shrink", "grow"])
def test_a_file_changing_under_a_reader(programs: dict[str, Path], tmp_path: Path, mode: str, change: str) -> None:
    """A file of 1 MiB (big enough for a window) shrinks, or grows and changes, through another descriptor
    while it is read: read() sees what Linux's does."""
    ours = run_vm(programs["window"], [change], options=[*MEMORY, *MODES[mode]], timeout=120)
    theirs = run_native(programs["window"], [change], tmp_path)
    no_traceback(ours)
    assert lines(theirs)[-1] == "done"
    assert lines(ours) == lines(theirs), ours.stderr[-2000:]
    assert ours.returncode == 0


# -- instructions a program may not run


def trap_results(result: subprocess.CompletedProcess[bytes]) -> dict[str, str]:
    out = lines(result)
    assert out and out[-1] == "done", (out[-5:], result.stderr[-2000:])
    return dict(line.replace("=", " ", 1).split(" ", 1) if line.startswith("enosys") else line.split(" ", 1)
                for line in out[:-1])  # fmt: skip


LINUX_TRAPS = {
    "int3": f"sig={SIGTRAP} code={SI_KERNEL} addr=0 pc=insn+1",
    "int_3": f"sig={SIGTRAP} code={SI_KERNEL} addr=0 pc=insn+1",
    "ud2": f"sig={SIGILL} code={ILL_ILLOPN} addr=insn pc=insn",
    "lock_nop": f"sig={SIGILL} code={ILL_ILLOPN} addr=insn pc=insn",
    "into": f"sig={SIGILL} code={ILL_ILLOPN} addr=insn pc=insn",
    "hlt": f"sig={SIGSEGV} code={SI_KERNEL} addr=0 pc=insn",
    "cli": f"sig={SIGSEGV} code={SI_KERNEL} addr=0 pc=insn",
    "in_0x80": f"sig={SIGSEGV} code={SI_KERNEL} addr=0 pc=insn",
    "out_0x80": f"sig={SIGSEGV} code={SI_KERNEL} addr=0 pc=insn",
    "lgdt": f"sig={SIGSEGV} code={SI_KERNEL} addr=0 pc=insn",
    "mov_from_cr3": f"sig={SIGSEGV} code={SI_KERNEL} addr=0 pc=insn",
    "int_0x41": f"sig={SIGSEGV} code={SI_KERNEL} addr=0 pc=insn",
    "div_zero": f"sig={SIGFPE} code={FPE_INTDIV} addr=insn+9 pc=insn+9",
    "cpuid": "ok",
    "rdtsc": "ok",
}


@pytest.fixture(scope="module")
def trapped(
    programs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """`traps` natively, and in the VM with and without the fast paths."""
    theirs = trap_results(run_native(programs["traps"], [], tmp_path_factory.mktemp("traps")))
    for name, expected in LINUX_TRAPS.items():
        assert theirs[name] == expected, f"native {name}: {theirs[name]}"
    runs = {}
    for mode, options in MODES.items():
        ours = run_vm(programs["traps"], [], options=[*MEMORY, *options], timeout=120)
        no_traceback(ours)
        assert ours.returncode == 0, ours.stderr[-2000:]
        runs[mode] = (trap_results(ours), theirs)
    return runs


LOOSE_TRAPS = {"int1", "out_0xd0_vmm_syscall"}


def signal_and_pc(line: str) -> str:
    return " ".join(word for word in line.split() if not word.startswith(("code=", "addr=")))


@pytest.mark.parametrize("mode", MODES)
def test_privileged_and_trapping_instructions_signal_as_on_linux(
    trapped: dict[str, tuple[dict[str, str], dict[str, str]]], mode: str
) -> None:
    """int3, ud2, hlt, cli/sti, in/out to the ports of a PC's reset, power-off, serial and debug-exit
    devices and to the VMM's own syscall and exception ports, lgdt/lidt/ltr, cr and dr moves, rdmsr/wrmsr,
    invlpg, swapgs, sysret, iret and far jumps to ring 0, `int $n` through gates the program may not use,
    #DE, #GP on a misaligned SSE load, a non-canonical load: each gives the program the signal Linux gives,
    resuming where Linux resumes, and the VMM runs on. `int1` (icebp) is left out of the comparison: its pc
    depends on the host's hypervisor."""
    got, want = trapped[mode]
    assert got.keys() == want.keys()
    assert got["int1"].startswith(f"sig={SIGTRAP} "), got["int1"]
    # the VMM's own ports: the exception ports are for its CPL 0 stubs (an `out` from the program is a #GP, not
    # a forged exception); the syscall port is open to CPL 3 (kvm_pvm's entry stub), so there an `out` may at
    # most be a system call made with the program's registers
    for port in ("out_0xe0_vmm_exception", "out_0xee_vmm_page_fault", "out_0xff_vmm_exception"):
        assert signal_and_pc(got[port]) == signal_and_pc(want[port]), port
    assert got["out_0xd0_vmm_syscall"] in ("ok", want["out_0xd0_vmm_syscall"])
    different = {
        k: (got[k], want[k]) for k in got if k not in LOOSE_TRAPS and signal_and_pc(got[k]) != signal_and_pc(want[k])
    }
    assert not different, different
    assert got["enosys"] == want["enosys"] == "-38"


@pytest.mark.parametrize("mode", MODES)
def test_trap_siginfo_is_linuxs(trapped: dict[str, tuple[dict[str, str], dict[str, str]]], mode: str) -> None:
    """si_code and si_addr as Linux fills them: SI_KERNEL and 0 for a #GP and for int3, ILL_ILLOPN and the
    instruction for a #UD, FPE_INTDIV and the instruction for a #DE."""
    got, want = trapped[mode]
    different = {k: (got[k], want[k]) for k in got if k not in LOOSE_TRAPS and got[k] != want[k]}
    assert not different, different


# -- system calls with bad pointers


@pytest.mark.parametrize("mode", MODES)
def test_bad_pointers_get_linuxs_errors(programs: dict[str, Path], tmp_path: Path, mode: str) -> None:
    """NULL, 1, -1, the kernel half, an unmapped page and a read-only page as the buffers of ~20 calls, and
    buffers that run into an unmapped page: the same results as the host kernel's, line by line."""
    ours = run_vm(programs["badptr"], [], options=[*MEMORY, *MODES[mode]], timeout=120)
    theirs = run_native(programs["badptr"], [], tmp_path)
    no_traceback(ours)
    want = lines(theirs)
    assert want[-1] == "done" and "read-null                    -14" in want
    got = lines(ours)
    different = [(g, w) for g, w in zip(got, want, strict=False) if g != w]
    assert not different and len(got) == len(want), (different[:20], got[-3:], ours.stderr[-2000:])
    assert ours.returncode == 0


@pytest.mark.slow
def test_every_system_call_with_hostile_arguments(programs: dict[str, Path]) -> None:
    """Calls 0..334 (those that would end or block the run, or act on other processes, skipped) with bad
    pointers and small integers in every position, in forked children: the VMM survives them all and the
    program's parent finishes."""
    result = run_vm(programs["fuzz"], [], options=MEMORY, timeout=900)
    no_traceback(result)
    out = lines(result)
    assert result.returncode == 0, (out[-5:], result.stderr[-3000:])
    assert out[-1] == "survived", out[-5:]
    summary = re.fullmatch(r"children (\d+) deaths (\d+) hangs (\d+) parent-ok 1", out[-3])
    assert summary is not None, out[-3:]
    assert int(summary.group(1)) >= 1


# -- a fork bomb


def pids_cgroup(tmp_name: str, limit: int) -> Path | None:
    """A cgroup v1 or v2 `pids` group allowing `limit` tasks, when this host lets us make one."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if not (base / "cgroup.procs").exists():
            continue
        if base == Path("/sys/fs/cgroup") and "pids" not in (base / "cgroup.controllers").read_text().split():
            continue
        group = base / tmp_name
        try:
            group.mkdir()
            (group / "pids.max").write_text(str(limit))
        except OSError:
            with_group_removed(group)
            continue
        return group
    return None


def with_group_removed(group: Path) -> None:
    for _ in range(100):
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            time.sleep(0.1)


class Reader(threading.Thread):
    """Collects a pipe's bytes in the background."""

    def __init__(self, pipe: BufferedReader) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.data = bytearray()

    def run(self) -> None:
        while chunk := self.pipe.read1(65536):
            self.data += chunk


@pytest.fixture
def fork_bomb_cgroup() -> Iterator[Path | None]:
    group = pids_cgroup(f"isola-test-forkbomb-{os.getpid()}", 400)
    yield group
    if group is not None:
        with_group_removed(group)


@pytest.mark.slow
def test_a_fork_bomb_stops_at_a_limit_and_leaves_nothing(
    programs: dict[str, Path], fork_bomb_cgroup: Path | None
) -> None:
    """`for (;;) fork();`: the VMM's own process limit (--max-processes) makes fork fail with EAGAIN; the host
    stays responsive; killing the VMM's session ends every process of it. The test also puts the VMM in a
    pids cgroup (400 tasks, above the VMM's limit of 32) when it can, so that a VMM without a limit cannot
    exhaust the host; and it watches the process count itself."""
    cmd = vm_command(programs["forkbomb"], options=[*MEMORY, "--max-processes", "32"])
    if fork_bomb_cgroup is not None:
        cmd = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(fork_bomb_cgroup / "cgroup.procs"), *cmd]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    assert isinstance(proc.stdout, BufferedReader) and isinstance(proc.stderr, BufferedReader)
    out, err = Reader(proc.stdout), Reader(proc.stderr)
    out.start()
    err.start()
    most, slowest = 0, 0.0
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            most = max(most, len(session_members(proc.pid)))
            started = time.monotonic()
            subprocess.run(["true"], check=True, timeout=30)
            slowest = max(slowest, time.monotonic() - started)
            if most > 300 or (b"errno 11" in out.data and time.monotonic() > deadline - 25):
                break
            time.sleep(0.2)
    finally:
        left = stop_session(proc)
    out.join(10)
    err.join(10)
    proc.stdout.close()
    proc.stderr.close()
    assert not left, f"{len(left)} processes outlived the kill"
    assert not session_members(proc.pid), "processes of the bomb are still alive"
    assert b"Traceback" not in err.data, err.data[-3000:].decode(errors="replace")
    assert out.data.startswith(b"bomb\n"), out.data[:200]
    assert slowest < 10, f"`true` took {slowest:.1f} s during the bomb"
    assert b"fork failed: errno 11\n" in out.data, (most, out.data[:300], err.data[-2000:])
    assert most <= 32 + 4, f"{most} processes in the session: the limit of 32 did not hold"


# -- the root cannot be left


DECOY = "decoy:x:0:0:decoy in the root:/:/bin/sh"
SECRET = "HOST SECRET outside the root"


def escape_root(tmp_path: Path, program: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "sub").mkdir()
    shutil.copy2(program, root / "bin" / program.name)
    (root / "etc" / "passwd").write_text(DECOY + "\n")
    (root / "ROOT_MARKER").write_text("")
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    (root / "abs_link").symlink_to("/etc/passwd")
    (root / "up_link").symlink_to("../../..")
    (root / "sub" / "deep_link").symlink_to("../../../../../../etc/passwd")
    (root / "host_link").symlink_to(secret)
    return root, secret


def host_passwd_first_line() -> str:
    return Path("/etc/passwd").read_text().splitlines()[0]


@pytest.mark.parametrize("mode", MODES)
def test_the_root_cannot_be_left(programs: dict[str, Path], tmp_path: Path, mode: str) -> None:
    root, secret = escape_root(tmp_path, programs["escape"])
    passwd_before = Path("/etc/passwd").read_bytes()
    result = run_vm("/bin/escape", [str(secret)], root=root, options=[*MEMORY, *MODES[mode]], timeout=120)
    no_traceback(result)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout.decode(errors="replace")
    assert host_passwd_first_line() not in text and SECRET not in text, text
    got = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    assert text.splitlines()[-1] == "done", text[-500:]
    for label in ["absolute", "dotdot", "root-dotdot", "dot-slashes", "long-dotdot", "symlink-absolute",
                  "symlink-up", "symlink-deep", "openat-dotdot", "openat-absolute", "openat-opath-dotdot",
                  "openat-slash-dotdot", "made-file-link", "made-dir-link", "made-hardlink", "chdir-up",
                  "fchdir-up", "chdir-link", "rename-cwd-up"]:  # fmt: skip
        assert got[label] == DECOY, (label, got[label])
    for label in ["symlink-hostpath", "hostpath", "sibling", "chdir-link-sibling"]:
        assert got[label] == "errno 2", (label, got[label])
    assert got["list-slash-dotdot"] == got["list-up-link"] == "root"
    assert got["stat-slash-dotdot"] == "same"
    assert got["chdir-up-cwd"] == got["chdir-link-cwd"] == "/"
    assert got["loop"] == "errno 40"
    assert got["rename-cwd"] == "0" and (root / "sub" / "a" / "b").is_dir()
    # what the program made is inside the root, and the host's files are as they were
    assert (root / "made_file_link").is_symlink() and (root / "made_dir_link").is_symlink()
    assert (root / "made_hardlink").stat().st_ino == (root / "etc" / "passwd").stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root", "secret.txt"]
    assert Path("/etc/passwd").read_bytes() == passwd_before


def test_a_shell_cannot_leave_the_root(tmp_path: Path) -> None:
    root, secret = escape_root(tmp_path, busybox())
    (root / "bin" / "sh").symlink_to("busybox")
    script = (
        "cat ../secret.txt; cd ../../..; pwd; cat etc/passwd; cat secret.txt; ln -s ../../../.. up; cd up; pwd;"
        " cat ../secret.txt; cat etc/passwd; readlink -f /up_link; cat /host_link; ls /up_link/.. | grep -c MARKER;"
        f" cat {secret}; echo end"
    )
    result = run_vm("/bin/busybox", ["sh", "-c", script], root=root, env={"PATH": "/bin"}, options=MEMORY)
    no_traceback(result)
    text = result.stdout.decode(errors="replace")
    assert host_passwd_first_line() not in text and SECRET not in text, text
    assert text.splitlines() == ["/", DECOY, "/up", DECOY, "/", "1", "end"], (text, result.stderr[-2000:])


def test_the_vmms_descriptors_are_invisible(programs: dict[str, Path]) -> None:
    """The VMM's own descriptors (KVM, the host's /proc it keeps, its files) cannot be used by the program:
    only 0, 1 and 2 answer, and no KVM ioctl or path through them works."""
    result = run_vm(programs["fds"], [], options=MEMORY, timeout=300)
    no_traceback(result)
    out = lines(result)
    assert out[-1] == "done" and out[0].startswith("soft limit"), (out[-5:], result.stderr[-2000:])
    visible = [line for line in out[1:-1] if line.startswith("fd ")]
    assert [line.split()[1] for line in visible] == ["0", "1", "2"], visible
    assert all("kvm -1" in line and "passwd ''" in line for line in visible), visible


# -- programs that are not programs


def tiny_elf(
    *,
    vaddr: int = 0x400000,
    entry: int | None = None,
    memsz: int | None = None,
    filesz: int | None = None,
    offset: int = 0,
    machine: int = 62,
    phnum: int = 1,
    interp: bytes | None = None,
) -> bytes:
    """A static x86-64 ELF of one PT_LOAD whose code exits with 42 (the control), with fields to break."""
    code = bytes.fromhex("b83c000000bf2a0000000f05")  # mov $60, %eax; mov $42, %edi; syscall
    headers = 64 + 56 * (2 if interp else 1)
    size = headers + len(code) + (len(interp) if interp else 0)
    phdrs = struct.pack(
        "<IIQQQQQQ", 1, 5, offset, vaddr, vaddr, size if filesz is None else filesz,
        size if memsz is None else memsz, 0x1000,
    )  # fmt: skip
    if interp:
        at = headers + len(code)
        phdrs = struct.pack("<IIQQQQQQ", 3, 4, at, vaddr + at, vaddr + at, len(interp), len(interp), 1) + phdrs
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    ehdr = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, machine, 1, vaddr + headers if entry is None else entry, 64, 0, 0, 64, 56,
        phnum if not interp else 2, 64, 0, 0,
    )  # fmt: skip
    return ehdr + phdrs + code + (interp or b"")


def patched(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value) :]


def malformed(programs: dict[str, Path], name: str, where: Path) -> Path:
    static = programs["die"].read_bytes()
    contents = {
        "empty": b"",
        "truncated-header": static[:40],
        "truncated-segments": static[:2000],
        "garbage": deterministic_bytes(8192, 99),
        "garbage-after-magic": b"\x7fELF" + deterministic_bytes(8192, 98),
        "wrong-machine": patched(static, 18, struct.pack("<H", 183)),
        "elf32": patched(static, 4, b"\x01"),
        "big-endian": patched(static, 5, b"\x02"),
        "relocatable": patched(static, 16, struct.pack("<H", 1)),
        "script": b"#!/bin/sh\necho from a script\n",
        "no-segments": tiny_elf(phnum=0),
        "too-many-segments": patched(tiny_elf(), 56, struct.pack("<H", 0xFFFF)),
        "kernel-half-segment": tiny_elf(vaddr=0xFFFF800000000000),
        "top-of-memory-segment": tiny_elf(vaddr=0xFFFFFFFFFFFFF000),
        "system-area-segment": tiny_elf(vaddr=SYSTEM_AREA),
        "huge-segment": tiny_elf(memsz=1 << 45),
        "filesz-beyond-memsz": tiny_elf(filesz=1 << 20, memsz=4096),
        "offset-beyond-file": tiny_elf(offset=1 << 30),
        "entry-non-canonical": tiny_elf(entry=0x800000000000),
        "entry-unmapped": tiny_elf(entry=0x10000000),
        "interp-outside-root": tiny_elf(interp=b"/../../../../lib64/ld-linux-x86-64.so.2\0"),
    }
    path = where / name
    path.write_bytes(contents[name])
    path.chmod(0o755)
    return path


MALFORMED = ["empty", "truncated-header", "truncated-segments", "garbage", "garbage-after-magic", "wrong-machine",
             "elf32", "big-endian", "relocatable", "script", "no-segments", "too-many-segments", "kernel-half-segment",
             "top-of-memory-segment", "system-area-segment", "huge-segment", "filesz-beyond-memsz",
             "offset-beyond-file", "entry-non-canonical", "entry-unmapped", "interp-outside-root"]  # fmt: skip


def test_the_tiny_elf_runs(tmp_path: Path) -> None:
    """The control for the malformed ones: unbroken, it exits with 42, natively and in the VM."""
    path = tmp_path / "tiny"
    path.write_bytes(tiny_elf())
    path.chmod(0o755)
    assert subprocess.run([str(path)], timeout=30).returncode == 42
    result = run_vm(path, options=MEMORY, timeout=60)
    assert result.returncode == 42 and result.stderr == b"", result.stderr[-2000:]


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_program_is_one_line_of_error(programs: dict[str, Path], tmp_path: Path, name: str) -> None:
    """Refused with one `isola-vmm:` line and a non-zero status (or, for an image Linux would start and then
    kill, a guest signal: also one line); never a traceback, never the code run from where it may not be."""
    path = malformed(programs, name, tmp_path)
    result = run_vm(path, options=MEMORY, timeout=60)
    assert result.returncode not in (0, 42), (result.returncode, result.stdout, result.stderr[-2000:])
    assert result.stdout == b""
    one_vmm_line(result)
    under_root = tmp_path / "root"
    under_root.mkdir()
    shutil.copy2(path, under_root / "program")
    in_root = run_vm("/program", root=under_root, options=MEMORY, timeout=60)
    assert in_root.returncode not in (0, 42), (in_root.returncode, in_root.stderr[-2000:])
    one_vmm_line(in_root)


@pytest.mark.parametrize(
    "args",
    [["/nonexistent/program"], ["--root", "/nonexistent/root", "/bin/sh"], ["--root", "{root}", "/missing"],
     ["--root", "{root}", "/"], ["--memory", "1", "{busybox}"], ["--memory", "banana", "{busybox}"],
     ["-e", "NOEQUALS", "{busybox}"]],
    ids=["missing", "missing-root", "missing-in-root", "directory", "tiny-memory", "bad-memory", "bad-env"],
)  # fmt: skip
def test_bad_invocations_are_one_line(tmp_path: Path, args: list[str]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    values = {"root": str(root), "busybox": str(busybox())}
    *options, program = [a.format(**values) for a in args]
    result = run_session(vm_command(program, ["true"], options=options), timeout=60)
    assert result.returncode != 0 and result.stdout == b""
    no_traceback(result)
    text = result.stderr.decode(errors="replace")
    assert text.startswith(("isola-vmm:", "usage:")), text
    assert "isola-vmm" in text.splitlines()[-1] or text.startswith("isola-vmm:"), text
