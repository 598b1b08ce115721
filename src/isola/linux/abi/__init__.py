"""What the personality needs to know about one Linux ABI: the part that differs between architectures.

Both ABIs isola serves (riscv64 under `isola-emu`, x86-64 under `isola-vmm` process mode) are LP64 and share
with the x86-64 host the generic numbering of errno values, signals, open/mmap/AT_* flags and terminal
ioctls, and the layouts of timespec, iovec, rusage, statx, statfs, dirent64, termios, siginfo, stack_t and
struct flock. The personality therefore uses those directly (and passes host structs through as bytes when the
host fills them). What does differ lives behind `Abi`:

- syscall numbers (the personality dispatches by *name*; an ABI maps its numbers to those names);
- `struct stat` and `struct sigaction` (x86-64 has `sa_restorer`, riscv64 has none);
- the order of clone()'s arguments;
- registers: the stack pointer, the thread pointer, how a syscall is rewound for a restart;
- the signal frame and its return trampoline;
- identification: uname's machine, the ELF machine, AT_HWCAP;
- arch-only system calls (`riscv_flush_icache`...), as methods named `sys_<name>` taking the kernel first.

The register file type `CpuT` is the ABI's own (a Protocol in its module); the kernel treats it as opaque.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Generic, NamedTuple, TypeVar

from isola.linux.guest import GuestMemory

CpuT = TypeVar("CpuT")


class SigAction(NamedTuple):
    """A `struct sigaction` as the guest gave it (`restorer` is 0 where the ABI has none)."""

    handler: int
    flags: int
    mask: int
    restorer: int = 0


class FrameRestored(NamedTuple):
    """What rt_sigreturn found in a signal frame besides the registers (which the ABI restored itself)."""

    mask: int
    stack: bytes  # the saved `stack_t` (uc_stack), for sigaltstack to re-apply
    result: int  # the restored return-value register: rt_sigreturn "returns" it so the engine's write is a no-op


def syscall_table(text: str) -> dict[int, str]:
    """`NR name NR name ...` (an ABI's unistd.h, copied as words) as {number: name}."""
    words = text.split()
    return {int(n): name for n, name in zip(words[::2], words[1::2], strict=True)}


class Abi(ABC, Generic[CpuT]):
    name: str  # "riscv64"
    uname_machine: str  # what uname(2) reports in `machine`
    elf_machine: int  # e_machine of the programs execve accepts
    hwcap: int  # AT_HWCAP
    hwcap2: int | None = None  # AT_HWCAP2, for ABIs whose kernel defines it
    platform: str | None = None  # AT_PLATFORM (Linux riscv sets none; x86-64 says "x86_64")
    stack_size: int = 8 << 20  # the stack exec maps for a program (RLIMIT_STACK's default)
    syscalls: Mapping[int, str]  # number -> generic name
    clone_args: tuple[str, ...]  # the names of clone()'s arguments in register order
    minsigstksz: int  # sigaltstack refuses smaller stacks (ENOMEM)
    sigaction_size: int
    sigreturn_code: bytes  # machine code of the trampoline a handler returns to: it calls rt_sigreturn

    @abstractmethod
    def pack_stat(self, st: os.stat_result) -> bytes:
        """The ABI's `struct stat` for fstat/newfstatat."""

    @abstractmethod
    def unpack_sigaction(self, data: bytes) -> SigAction: ...

    @abstractmethod
    def pack_sigaction(self, act: SigAction) -> bytes: ...

    @abstractmethod
    def stack_pointer(self, cpu: CpuT) -> int: ...

    @abstractmethod
    def program_counter(self, cpu: CpuT) -> int: ...

    @abstractmethod
    def set_program_counter(self, cpu: CpuT, pc: int) -> None: ...

    @abstractmethod
    def fork_child(self, cpu: CpuT, *, stack: int, tls: int | None) -> None:
        """Make `cpu` the child side of clone(): it returns 0, runs on `stack` when not 0, with `tls` if set."""

    @abstractmethod
    def rewind_syscall(self, cpu: CpuT, arg0: int) -> None:
        """Make the interrupted system call run again when the guest resumes (SA_RESTART): back over the
        trap instruction and put back the first argument, which the return value overwrote."""

    @abstractmethod
    def setup_signal_frame(
        self,
        mem: GuestMemory,
        cpu: CpuT,
        *,
        stack_top: int,
        sig: int,
        siginfo: bytes,
        uc_stack: bytes,
        mask: int,
        handler: int,
        restorer: int,
    ) -> None:
        """Push a signal frame below `stack_top` (the guest's sp or the top of its alternate stack) exactly as
        Linux lays it out, and point `cpu` at `handler` with the arguments and return address Linux gives.
        Raises GuestFault if the frame cannot be written."""

    @abstractmethod
    def restore_signal_frame(self, mem: GuestMemory, cpu: CpuT) -> FrameRestored:
        """rt_sigreturn: reload every register from the frame at the guest's sp. Raises GuestFault on a frame
        that cannot be read, SyscallError on one Linux would reject (both kill the guest with SIGSEGV)."""
