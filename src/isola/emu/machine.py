"""The emulated hart's run loop: look up (or translate) the block at pc, call it, repeat.

The loop does nothing per instruction and little per block: a dict lookup, a call, an add, and a poll of
the "something is pending" flag that the Linux personality raises for signals. Everything exceptional
arrives as a Python exception out of a block and is turned into a precise trap here: the traceback gives
the line of the generated source, the block's line table gives the guest instruction, so the pc, the
faulting address (the block's local `a`) and the exact instruction count are all recovered after the fact.
"""

from __future__ import annotations

import signal
import struct
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, NamedTuple

from isola.emu import fpgen, ops
from isola.emu.codecache import CodeCache
from isola.emu.cpu import Cpu, IllegalInstruction
from isola.emu.memory import FlatMemory
from isola.emu.softfloat import unbox32
from isola.emu.translate import Block, Translator
from isola.linux.guest import PROT_READ, GuestFault

# CSR numbers of the user-level registers (Zicsr, F/D, Zicntr)
CSR_FFLAGS, CSR_FRM, CSR_FCSR = 0x001, 0x002, 0x003
CSR_CYCLE, CSR_TIME, CSR_INSTRET = 0xC00, 0xC01, 0xC02
TIMEBASE_HZ = 10_000_000  # what Linux on QEMU's virt board reports; rdtime counts at this rate


class CodeChanged(Exception):
    """A store landed on a page holding translated code; the current block may be stale."""


class Misaligned(Exception):
    def __init__(self, addr: int) -> None:
        super().__init__(f"misaligned atomic access at {addr:#x}")
        self.addr = addr


class Breakpoint(Exception):
    pass


# Exceptions that mean "this instruction did not complete" (everything else raised in a block comes from a
# syscall, after the ecall completed).
TRAPS = (GuestFault, IndexError, struct.error, IllegalInstruction, Misaligned, Breakpoint, ValueError)


class Trap(NamedTuple):
    """A synchronous trap, located: what kind, at which guest pc, touching which address."""

    signo: int
    pc: int
    addr: int
    reason: str


class Machine:
    """One RV64GC hart over a FlatMemory. `syscall` serves ecall (it reads a7/a0-a5 from the CPU and
    returns the value for a0); `pending` is polled between blocks (a list so the personality can set it)."""

    def __init__(
        self,
        mem: FlatMemory,
        syscall: Callable[[Cpu], int],
        pending: list[bool] | None = None,
        codecache: CodeCache | None = None,
    ) -> None:
        self.mem = mem
        self.cpu = Cpu()
        self.syscall = syscall
        self.pending = pending if pending is not None else [False]
        self.start_ns = time.monotonic_ns()
        self.translator = Translator(mem, self._runtime(), codecache)

    # -- helpers the generated code calls -------------------------------------------------------------------

    def _runtime(self) -> dict[str, Any]:
        def syscall() -> int:
            return self.syscall(self.cpu)

        def rslow(a: int, fmt: str) -> int:
            """A load the fast path declined: fault, or (crossing into another readable page) read it."""
            self.mem.check(a, struct.calcsize(fmt), PROT_READ, "r")
            value: int = struct.unpack_from(fmt, self.mem.buf, a)[0]
            return value & 0xFFFF_FFFF_FFFF_FFFF

        def wslow(a: int, width: int, value: int) -> None:
            code_before = self.mem.code[a >> 12] or self.mem.code[(a + width - 1) >> 12]
            self.mem.store_slow(a, value.to_bytes(width, "little"))
            if code_before:
                raise CodeChanged()

        def fload(a: int) -> float:
            """An fld into a register kept as a float (see fpfast) that the fast path declined."""
            value: float = struct.unpack("<d", rslow(a, "<Q").to_bytes(8, "little"))[0]
            return value

        def fstore(a: int, value: float) -> None:
            wslow(a, 8, int.from_bytes(struct.pack("<d", value), "little"))

        def misaligned(a: int) -> None:
            raise Misaligned(a)

        def breakpoint_() -> None:
            raise Breakpoint()  # the run loop finds the pc from the traceback, like every trap

        def fence_i() -> None:
            self.translator.flush()

        return {
            "SYSCALL": syscall,
            "RSLOW": rslow,
            "WSLOW": wslow,
            "FLOAD": fload,
            "FSTORE": fstore,
            "MISALIGNED": misaligned,
            "BREAKPOINT": breakpoint_,
            "FENCE_I": fence_i,
            "CSR": self.csr,
            "UNBOX": unbox32,
            **{f"OPS_{name}": getattr(ops, name) for name in (
                "mulh", "mulhsu", "mulhu", "div", "divu", "rem", "remu", "divw", "divuw", "remw", "remuw")},
            **fpgen.namespace(),
        }  # fmt: skip

    def csr(self, number: int, op: str, value: int, writes: bool, retired: int) -> int:
        """csrrw/csrrs/csrrc on the user-level CSRs; anything else is an illegal instruction. `retired` is the
        number of instructions of the current block that ran before this one."""
        cpu = self.cpu
        if number == CSR_FFLAGS:
            old = cpu.fflags
        elif number == CSR_FRM:
            old = cpu.frm
        elif number == CSR_FCSR:
            old = cpu.fcsr
        elif number in (CSR_CYCLE, CSR_INSTRET):
            old = cpu.instret + retired
        elif number == CSR_TIME:
            old = (time.monotonic_ns() - self.start_ns) * TIMEBASE_HZ // 1_000_000_000
        else:
            raise IllegalInstruction(0, 0, 4)
        if writes:
            if number in (CSR_CYCLE, CSR_TIME, CSR_INSTRET):
                raise IllegalInstruction(0, 0, 4)  # read-only counters
            new = value if op == "w" else (old | value) if op == "s" else (old & ~value)
            if number == CSR_FFLAGS:
                cpu.fflags = new & 0x1F
            elif number == CSR_FRM:
                cpu.frm = new & 7
            else:
                cpu.fcsr = new & 0xFF
        return old

    # -- running ---------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Run until a trap (returned as an exception for the caller to handle: Trap objects come from
        `trap_of`) or until `pending` is raised. Returns normally only when `pending` is set."""
        cache = self.translator.cache
        translate = self.translator.translate
        cpu = self.cpu
        x, f = cpu.x, cpu.f
        pending = self.pending
        pc = cpu.pc
        blk: Block | None = None
        try:
            # cpu.instret is kept current at every block boundary, so a counter CSR read inside a block is
            # exact: the count at the block's entry plus the instructions before it in the block.
            while not pending[0]:
                blk = cache.get(pc)
                if blk is None:
                    blk = translate(pc)
                pc = blk.fn(x, f, cpu)
                cpu.instret += blk.n
        except BaseException as exc:
            self._locate(exc, blk, pc)
            pc = cpu.pc  # the precise pc _locate found; the `finally` below must not undo it
            raise
        finally:
            cpu.pc = pc

    def _locate(self, exc: BaseException, blk: Block | None, pc: int) -> None:
        """Point cpu.pc at the instruction that raised `exc` and count what ran of its block."""
        tb: TracebackType | None = exc.__traceback__
        frame_tb = None
        while tb is not None:
            if blk is not None and tb.tb_frame.f_code is blk.code:
                frame_tb = tb
            tb = tb.tb_next
        if blk is None or frame_tb is None:
            self.cpu.pc = pc  # raised outside a block: translating the block at pc
            return
        frame_locals = frame_tb.tb_frame.f_locals
        for name, value in frame_locals.items():  # registers the block held in locals (see translate.py)
            if name[0] in "rfd" and name[1:].isdigit():
                if name[0] == "d":  # an f register kept as a host float (see fpfast)
                    value = int.from_bytes(struct.pack("<d", value), "little")
                (self.cpu.x if name[0] == "r" else self.cpu.f)[int(name[1:])] = value
        if "ff" in frame_locals:
            self.cpu.fflags = frame_locals["ff"]
        index = blk.index_of_line(frame_tb.tb_lineno)
        done = frame_locals.get("c", 0) + blk.offsets[index] - 1  # c: instructions of completed loop iterations
        if isinstance(exc, CodeChanged) or not isinstance(exc, TRAPS):
            done += 1  # the instruction completed: a store that hit code, or an ecall whose syscall ended the run
            self.cpu.pc = blk.nexts[index]
        else:
            self.cpu.pc = blk.pcs[index]
        self.cpu.instret += done
        exc.guest_addr = frame_locals.get("a")  # type: ignore[attr-defined]

    def trap_of(self, exc: BaseException) -> Trap | None:
        """The guest-visible trap an exception from `run()` stands for, or None if it is not one."""
        pc = self.cpu.pc
        addr = getattr(exc, "guest_addr", None)
        if isinstance(exc, GuestFault):
            return Trap(signal.SIGSEGV, pc, exc.addr, f"{exc.access} fault")
        if isinstance(exc, (IndexError, struct.error)):
            return Trap(signal.SIGSEGV, pc, addr if addr is not None else 0, "address outside guest memory")
        if isinstance(exc, IllegalInstruction):
            return Trap(signal.SIGILL, pc, pc, "illegal instruction")
        if isinstance(exc, ValueError):  # softfloat refusing a dynamic rounding mode of 5-7 from frm
            return Trap(signal.SIGILL, pc, pc, f"illegal instruction ({exc})")
        if isinstance(exc, Misaligned):
            return Trap(signal.SIGBUS, pc, exc.addr, "misaligned atomic")
        if isinstance(exc, Breakpoint):
            return Trap(signal.SIGTRAP, pc, pc, "ebreak")
        return None
