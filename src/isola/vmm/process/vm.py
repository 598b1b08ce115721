"""One program in a process VM: a KVM VM with no guest kernel, a vCPU at CPL 3, and the Linux personality.

The VMM builds the machine the program needs (`system.py`, `paging.py`), loads the ELF with the personality's
`binfmt`, and then runs the vCPU in this thread. Three kinds of exit matter:

- an `out` to the syscall port: the program ran `syscall`. The personality serves it with the registers of
  the x86-64 convention (rax = number, rdi, rsi, rdx, r10, r8, r9) and the result goes to rax;
- an `out` to an exception port: the CPU took exception N through the IDT. The frame the CPU pushed on the
  exception stack says where the program was; the personality turns the fault into a signal;
- a kick or a host signal (KVM_RUN returns EINTR): pending signals are delivered.

Where the vCPU resumes: under kvm_pvm the syscall entry runs at CPL 3, so the VMM simply sets RIP to where the
program continues. Under VMX/SVM it runs at CPL 0, and a plain system call returns through the stub's
`sysretq`; anything else (a signal handler, rt_sigreturn, a new image, the end of an exception) is loaded
directly: user CS/SS with the registers, via KVM's sync regs.

fork is `os.fork()` of this process (the personality's design): the child keeps a copy-on-write copy of the
program's memory and of the page tables, but KVM ties a VM to the process that made it, so the child builds a
new VM over the same memory and continues there (`ForkObserver`). A limit on the processes one run may have
alive (a token pipe shared by all of them) makes a fork bomb meet EAGAIN instead of the host's process table.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import signal
import struct
from collections.abc import Sequence
from typing import NamedTuple, TextIO

from isola.errors import EngineError, UnsupportedError
from isola.host.mapping import Pin
from isola.linux import binfmt
from isola.linux.abi.x86_64 import X86_64Abi, X86Cpu
from isola.linux.guest import GuestFault, SyscallError
from isola.linux.kernel import GuestExit, GuestKilled, ImageReplaced, Kernel
from isola.vmm.kvm import ioctls, structs
from isola.vmm.kvm.vcpu import (
    FailEntryExit,
    HltExit,
    HostMemoryExit,
    InternalErrorExit,
    Interrupted,
    IoExit,
    MmioExit,
    ShutdownExit,
    UnexpectedExit,
    Vcpu,
    VcpuExit,
)
from isola.vmm.kvm.vm import Kvm, Vm
from isola.vmm.process import layout, system
from isola.vmm.process.cpu import X86State
from isola.vmm.process.fastpath import FastPaths
from isola.vmm.process.layout import Layout
from isola.vmm.process.memory import ProcessMemory
from isola.vmm.process.paging import PageTables

MSR_STAR = 0xC000_0081
MSR_LSTAR = 0xC000_0082
MSR_SFMASK = 0xC000_0084
CR0_PE_MP_ET_NE_WP_AM_PG = 0x8005_0033
CR4_PAE_PGE_OSFXSR_OSXMMEXCPT = 0x6A0
CR4_OSXSAVE = 1 << 18
EFER_SCE_LME_LMA_NXE = 0xD01
SYSCALL_FLAG_MASK = 0x4_0500  # AC, DF, TF: cleared on `syscall` (the stub's string copy needs DF clear)
USER_RFLAGS = 0x202  # IF and the reserved bit 1: what a new program starts with on Linux
XCR0_WANTED = 0b111  # x87, SSE, AVX: what the program may use through XSAVE-enabled code (glibc's ifuncs)
CPUID_XSAVE = 1 << 26  # leaf 1 ECX

RAM_SLOT = 0
SYSTEM_SLOT = 1

# Exception vector -> (signal, si_code, whether si_addr is the faulting instruction, else 0), as Linux's
# traps.c reports an exception in user mode. #PF is apart: SIGSEGV at CR2, SEGV_MAPERR or SEGV_ACCERR.
SI_KERNEL = 0x80
_VECTOR_SIGNALS = {
    0: (signal.SIGFPE, 1, True),  # #DE: FPE_INTDIV
    1: (signal.SIGTRAP, 1, True),  # #DB (icebp): TRAP_BRKPT
    3: (signal.SIGTRAP, SI_KERNEL, False),  # #BP: int3
    6: (signal.SIGILL, 2, True),  # #UD: ILL_ILLOPN
    11: (signal.SIGBUS, SI_KERNEL, False),  # #NP
    12: (signal.SIGBUS, SI_KERNEL, False),  # #SS
    13: (signal.SIGSEGV, SI_KERNEL, False),  # #GP: privileged instructions, ports, non-canonical addresses
    16: (signal.SIGFPE, 0, True),  # #MF: the code comes from the x87 status (see _math_error_code)
    17: (signal.SIGBUS, 1, False),  # #AC: BUS_ADRALN
    19: (signal.SIGFPE, 0, True),  # #XM: the code comes from MXCSR
}
_INVALID_OPCODE, _GENERAL_PROTECTION, _X87_ERROR, _SIMD_ERROR = 6, 13, 16, 19
_INT_N = 0xCD  # `int imm8`
_PAGE_FAULT = 14
_FRAME = struct.Struct("<QQQQQQ")  # error code (or the stub's 0), RIP, CS, RFLAGS, RSP, SS
DEFAULT_MAX_PROCESSES = 256


class Options(NamedTuple):
    memory_mib: int = 1024
    fastpath: bool = True
    max_processes: int = DEFAULT_MAX_PROCESSES


DEFAULT_OPTIONS = Options()


class ProcessLimit:
    """How many processes of this run may be alive at once: a pipe holding one byte per free slot. A fork takes
    a byte (EAGAIN when there is none, as Linux's RLIMIT_NPROC answers); a process gives its byte back when it
    ends. The fds are the VMM's, hidden from the program."""

    def __init__(self, kernel: Kernel[X86Cpu], slots: int) -> None:
        r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        os.write(w, b"\0" * (slots - 1))  # this process holds one
        self._r, self._w = kernel.reserve_fd(r), kernel.reserve_fd(w)

    def take(self) -> None:
        try:
            os.read(self._r, 1)
        except BlockingIOError:
            raise SyscallError(errno.EAGAIN, "too many processes in this process VM") from None

    def give_back(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._w, b"\0")


class ProcessVm:
    """`path` loaded with `argv` and `envp`, ready to `run()`. `kvm` is the open /dev/kvm (kept for forks);
    `proc_fd` an open descriptor of the host's /proc when the VMM runs chroot-ed (see `Kernel`)."""

    def __init__(
        self,
        kvm: Kvm,
        path: str,
        argv: Sequence[str],
        envp: Sequence[str],
        options: Options = DEFAULT_OPTIONS,
        strace: TextIO | None = None,
        proc_fd: int | None = None,
    ) -> None:
        self.kvm = kvm
        self.options = options
        self.layout = Layout(options.memory_mib << 20)
        self.cpuid = kvm.supported_cpuid()
        self._check_address_width()
        self.system = mmap.mmap(-1, self.layout.system_slot_size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._system_pin = Pin(self.system)
        self.tables = PageTables(self.layout, memoryview(self.system))
        self.memory = ProcessMemory(self.layout.ram, self.tables)
        self._write_system_area()
        leaf1 = next((e for e in self.cpuid if e.function == 1), None)
        self.abi = X86_64Abi(hwcap=leaf1.edx if leaf1 else 0)
        self.aspace = binfmt.new_address_space(self.memory, self.abi)
        loaded = binfmt.load(self.aspace, path, argv, envp, abi=self.abi)
        self.aspace.set_brk_start(loaded.brk)
        self.syscall_at_cpl3: bool | None = None  # known at the first system call
        self.vm, self.vcpu = self._create_vm()
        self.state = X86State(self.vcpu)
        self.state.fetch()
        self.initial_xsave = self.vcpu.get_xsave()
        self.kernel: Kernel[X86Cpu] = Kernel(
            self.abi,
            self.memory,
            self.aspace,
            self.state,
            exe=loaded.path,
            argv=[a.encode() for a in argv],
            strace=strace,
            loader=self._exec,
            fork_observer=self,
            proc_fd=proc_fd,
        )
        if proc_fd is not None:
            self.kernel.proc_fd = self.kernel.reserve_fd(proc_fd)
        self.kvm.fd = self.kernel.reserve_fd(self.kvm.fd)
        self._hide_vm_fds()
        self.limit = ProcessLimit(self.kernel, options.max_processes)
        self.fast = FastPaths(self, enabled=options.fastpath)
        self.exits: dict[str, int] = {}
        self._start_image(loaded.entry, loaded.sp)

    # -- building the machine

    def _check_address_width(self) -> None:
        leaf = next((e for e in self.cpuid if e.function == 0x8000_0008), None)
        width = leaf.eax & 0xFF if leaf else 36
        if self.layout.top > 1 << width:
            raise UnsupportedError(
                f"this CPU's {width}-bit guest-physical addresses cannot hold a process VM of "
                f"{self.options.memory_mib} MiB",
                hint="use less --memory",
            )

    def _write_system_area(self) -> None:
        sys_base, mem = self.layout.sys, self.system
        entries = system.gdt_entries(sys_base + layout.TSS)
        mem[layout.GDT : layout.GDT + 8 * len(entries)] = struct.pack(f"<{len(entries)}Q", *entries)
        tss = system.tss(sys_base + layout.EXCEPTION_STACK_TOP)
        mem[layout.TSS : layout.TSS + len(tss)] = tss
        idt = system.idt(sys_base + layout.EXCEPTION_STUBS)
        mem[layout.IDT : layout.IDT + len(idt)] = idt
        stubs = system.exception_stubs()
        mem[layout.EXCEPTION_STUBS : layout.EXCEPTION_STUBS + len(stubs)] = stubs
        mem[layout.USER_CODE : layout.USER_CODE + len(system.ENTRY_CODE)] = system.ENTRY_CODE
        system.BATCH_HEADER.pack_into(mem, layout.BATCH, 0, layout.BATCH_SIZE - system.BATCH_HEADER.size)
        self.tables.build()
        self._gdt = entries

    def _create_vm(self) -> tuple[Vm, Vcpu]:
        vm = self.kvm.create_vm()
        try:
            vm.set_user_memory_region(RAM_SLOT, 0, self.layout.ram, self.memory.host_address)
            vm.set_user_memory_region(
                SYSTEM_SLOT, self.layout.sys, self.layout.system_slot_size, self._system_pin.address
            )
            vcpu = vm.create_vcpu(0)
            self._setup_vcpu(vcpu)
        except BaseException:
            vm.close()
            raise
        return vm, vcpu

    def _hide_vm_fds(self) -> None:
        """Move the VM's and the vCPU's fds out of the program's way (it must neither see nor close them)."""
        self.vm.fd = self.kernel.reserve_fd(self.vm.fd)
        self.vcpu.fd = self.kernel.reserve_fd(self.vcpu.fd)

    def _setup_vcpu(self, vcpu: Vcpu) -> None:
        vcpu.set_cpuid(self.cpuid)
        sregs = vcpu.get_sregs()
        sys_base = self.layout.sys
        sregs.cs = system.segment(self._gdt, layout.USER_CS)
        for name in ("ds", "es", "fs", "gs", "ss"):
            setattr(sregs, name, system.segment(self._gdt, layout.USER_DS))
        sregs.tr = system.task_register(sys_base + layout.TSS)
        sregs.ldt = structs.Segment(selector=0, present=0, type=2, s=0, limit=0xFFFF, unusable=1)
        sregs.gdt = structs.Dtable(base=sys_base + layout.GDT, limit=8 * len(self._gdt) - 1)
        sregs.idt = structs.Dtable(base=sys_base + layout.IDT, limit=16 * system.VECTORS - 1)
        sregs.cr0 = CR0_PE_MP_ET_NE_WP_AM_PG
        sregs.cr3 = self.tables.root
        sregs.cr4 = CR4_PAE_PGE_OSFXSR_OSXMMEXCPT | (CR4_OSXSAVE if self._xsave_supported else 0)
        sregs.efer = EFER_SCE_LME_LMA_NXE
        vcpu.set_sregs(sregs)
        if self._xsave_supported:
            vcpu.set_xcr0(self._xcr0)
        vcpu.set_msrs(
            {
                MSR_STAR: (layout.USER32_CS << 48) | (layout.KERNEL_CS << 32),
                MSR_LSTAR: self._lstar(),
                MSR_SFMASK: SYSCALL_FLAG_MASK,
            }
        )
        vcpu.kvm_run.kvm_valid_regs = ioctls.KVM_SYNC_X86_REGS | ioctls.KVM_SYNC_X86_SREGS
        vcpu.sync_regs = True

    @property
    def _xsave_supported(self) -> bool:
        leaf1 = next((e for e in self.cpuid if e.function == 1), None)
        return bool(leaf1 and leaf1.ecx & CPUID_XSAVE and self.kvm.check_extension(ioctls.KVM_CAP_XCRS))

    @property
    def _xcr0(self) -> int:
        leaf = next((e for e in self.cpuid if e.function == 0xD and e.subleaf == 0), None)
        return (leaf.eax if leaf else 0b11) & XCR0_WANTED | 0b11

    def _lstar(self) -> int:
        """The fast-path entry once the syscall is known to stay at CPL 3 (and the fast paths are on), else the
        plain stub: the fast paths copy with the program's pointers and must never run at CPL 0."""
        use_entry = self.syscall_at_cpl3 and self.options.fastpath
        return self.layout.sys + layout.USER_CODE + (system.ENTRY if use_entry else system.SLOW)

    def _start_image(self, entry: int, sp: int) -> None:
        """The registers Linux gives a new image: all zero but RIP, RSP and RFLAGS; a fresh FPU."""
        st = self.state
        for name, *_ in structs.Regs._fields_:
            setattr(st, name, 0)
        st.rip, st.rsp, st.rflags = entry, sp, USER_RFLAGS
        st.fs_base = st.gs_base = 0
        st.sregs.cs = system.segment(self._gdt, layout.USER_CS)
        st.sregs.ss = system.segment(self._gdt, layout.USER_DS)
        st.set_xsave(self.initial_xsave)
        self._pending_full_context = True

    # -- running

    def run(self) -> int:
        """Run the program to its end; its exit status. GuestKilled if a signal ended it."""
        st = self.state
        self._resume()
        self.fast.start_flusher()
        try:
            while True:
                ex = self.vcpu.run()
                self._count(ex)
                if isinstance(ex, IoExit) and ex.port == layout.SYSCALL_PORT:
                    self._on_syscall()
                elif isinstance(ex, IoExit) and 0 <= ex.port - layout.EXCEPTION_PORT_BASE < system.VECTORS:
                    self._on_exception(ex.port - layout.EXCEPTION_PORT_BASE)
                elif isinstance(ex, Interrupted):
                    st.load()
                    self._deliver()
                    self._resume()
                elif isinstance(ex, MmioExit):
                    st.load()
                    self._fault(signal.SIGBUS, ex.address)
                    self._resume()
                elif isinstance(ex, HostMemoryExit):
                    st.fetch()  # no exit went through kvm_run: read the registers
                    if not self.fast.recover_truncated(st):
                        raise EngineError(ex.report)
                    self._pending_full_context = True
                    self._resume()
                else:
                    raise EngineError(_describe(ex))
        except GuestExit as done:
            self.fast.flush()
            return done.status
        except GuestKilled:
            self.fast.flush()
            raise
        finally:
            self.fast.stop_flusher()
            self.limit.give_back()

    def _count(self, ex: VcpuExit) -> None:
        kind = "syscall" if isinstance(ex, IoExit) and ex.port == layout.SYSCALL_PORT else type(ex).__name__
        self.exits[kind] = self.exits.get(kind, 0) + 1

    def _on_syscall(self) -> None:
        st = self.state
        st.load()
        if self.syscall_at_cpl3 is None:
            self._learn_syscall_mode()
        self._exit_rip = st.rip
        st.orig_rax, nr = st.rax, st.rax
        st.rip, st.rflags = st.rcx, st.r11  # where and how the program continues (what sysret would restore)
        self.fast.before_syscall()
        try:
            st.rax = self.kernel.syscall(nr, (st.rdi, st.rsi, st.rdx, st.r10, st.r8, st.r9))
        except ImageReplaced as new:
            self.fast.reset()
            self._start_image(new.entry, new.sp)
        else:
            self.fast.after_syscall(nr, st.rax)
        self._deliver()
        self._resume()

    def _learn_syscall_mode(self) -> None:
        """kvm_pvm keeps `syscall` at CPL 3, VMX/SVM enter CPL 0: look, once, and aim LSTAR accordingly."""
        self.syscall_at_cpl3 = self.state.cpl == 3
        self._set_lstar()

    def _set_lstar(self) -> None:
        self.vcpu.set_msrs({MSR_LSTAR: self._lstar()})

    def _on_exception(self, vector: int) -> None:
        st = self.state
        st.load()
        offset = st.rsp - self.layout.sys
        if not 0 <= offset <= layout.EXCEPTION_STACK_TOP - _FRAME.size:
            raise EngineError(f"exception {vector} with the exception stack at {st.rsp:#x}")
        err, rip, cs, rflags, rsp, _ss = _FRAME.unpack_from(self.system, offset)
        if cs & 3 != 3:
            raise EngineError(f"exception {vector} in the VMM's own guest code at {rip:#x} (error code {err:#x})")
        st.rip, st.rsp, st.rflags = rip, rsp, rflags
        st.trapno, st.err, st.cr2 = vector, err, st.sregs.cr2 if vector == _PAGE_FAULT else 0
        self._pending_full_context = True
        if not self.fast.fixup(vector, st):
            if vector == _PAGE_FAULT:
                self._fault(signal.SIGSEGV, st.cr2)
            else:
                if vector == _INVALID_OPCODE and self._instruction_byte(rip) == _INT_N:
                    vector = _GENERAL_PROTECTION  # kvm_pvm raises #UD for `int n` through a gate of DPL 0
                sig, code, at_instruction = _VECTOR_SIGNALS.get(vector, (signal.SIGSEGV, SI_KERNEL, False))
                if vector in (_X87_ERROR, _SIMD_ERROR):
                    code = _math_error_code(vector, st.fxsave())
                self._fault(sig, rip if at_instruction else 0, code)
        self._deliver()
        self._resume()

    def _instruction_byte(self, address: int) -> int | None:
        try:
            return self.memory.read(address, 1)[0]
        except GuestFault:
            return None

    def _fault(self, sig: int, addr: int, code: int | None = None) -> None:
        self.fast.flush()
        self.kernel.fault(sig, addr, self.state, code)

    def _deliver(self) -> None:
        pending = self.kernel.pending
        if pending[0]:
            pending[0] = False
            self.fast.flush()
            rip = self.state.rip
            self.kernel.deliver_signals(self.state)
            if self.state.rip != rip:
                self._pending_full_context = True

    def _resume(self) -> None:
        """Point the vCPU at where the program continues; see the module docstring for the two ways."""
        st = self.state
        if not _canonical(st.rip):
            self._fault(signal.SIGSEGV, 0)  # Linux's iret to a non-canonical RIP faults in user mode
        plain = not self._pending_full_context and st.rip == st.rcx and st.rflags == st.r11
        if st.cpl == 3:
            pass  # kvm_pvm's syscall, or already user mode: RIP and RFLAGS take effect as they are
        elif plain:
            st.rip = self._exit_rip  # the stub's sysretq loads RIP from RCX and RFLAGS from R11
        else:
            st.sregs.cs = system.segment(self._gdt, layout.USER_CS)
            st.sregs.ss = system.segment(self._gdt, layout.USER_DS)
            st.sregs_dirty = True
        if self._pending_full_context:
            st.sregs_dirty = True
            self._pending_full_context = False
        st.store()

    def _exec(self, path: str, argv: Sequence[bytes], envp: Sequence[bytes], execfn: bytes) -> tuple[int, int]:
        loaded = binfmt.load(self.aspace, path, argv, envp, abi=self.abi, execfn=execfn.decode())
        self.aspace.set_brk_start(loaded.brk)
        return loaded.entry, loaded.sp

    # -- fork (the personality's ForkObserver)

    def before_fork(self) -> None:
        self.limit.take()
        self.fast.stop_flusher()
        self.fast.reset()
        self.state.xsave()  # fetched now: the child's new vCPU starts from it

    def in_child(self) -> None:
        """A new VM for the child over its copy of the memory, with the parent's vCPU state."""
        self.kernel.private_fds -= {self.vm.fd, self.vcpu.fd}
        self.vm.close()  # the parent's fds; KVM keeps the parent's VM, which is the parent's
        self.vm, self.vcpu = self._create_vm()
        self._hide_vm_fds()
        self.vcpu.set_msrs({MSR_LSTAR: self._lstar()})
        self.state.rebind(self.vcpu)
        self.state.set_xsave(self.state.xsave())
        if self._exit_rip == self.layout.sys + layout.USER_CODE + system.SLOW:
            # Standard KVM reports an OUT exit with RIP at the `out` and steps over it when the vCPU that
            # exited runs again; this new vCPU never exited, so it would run the `out` (a second system call).
            self._exit_rip += system.SLOW_OUT_LENGTH
        self.fast.start_flusher()

    def in_parent(self) -> None:
        self.fast.start_flusher()

    def close(self) -> None:
        self.fast.reset()
        self.vm.close()
        self.memory.close()


def _math_error_code(vector: int, fxsave: bytes) -> int:
    """FPE_* for an unmasked x87 (#MF) or SSE (#XM) exception: the first of invalid, divide by zero,
    overflow, underflow or denormal, inexact that is flagged and not masked, as Linux's math_error() picks."""
    fcw, fsw = struct.unpack_from("<HH", fxsave, 0)
    (mxcsr,) = struct.unpack_from("<I", fxsave, 24)
    flagged = fsw & ~fcw if vector == _X87_ERROR else mxcsr & ~(mxcsr >> 7)
    for bits, code in ((0x01, 7), (0x04, 3), (0x08, 4), (0x12, 5), (0x20, 6)):  # FLTINV DIV OVF UND RES
        if flagged & bits:
            return code
    return 0


def _canonical(address: int) -> bool:
    return address < 1 << 47 or address >= (1 << 64) - (1 << 47)


def _describe(ex: VcpuExit) -> str:
    if isinstance(ex, ShutdownExit | InternalErrorExit | FailEntryExit | HostMemoryExit | UnexpectedExit):
        return ex.report
    if isinstance(ex, HltExit):
        return "the vCPU halted in the VMM's guest code"
    if isinstance(ex, IoExit):
        return f"unexpected port I/O to {ex.port:#x}"
    return f"unexpected exit {type(ex).__name__}"
