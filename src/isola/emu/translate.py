"""Block translation: guest RV64GC code becomes Python source, `compile()`d once and cached by guest pc.

A *block* runs from its start to the first control transfer (branch, jump, ecall, ebreak, fence.i), a page
end, or `MAX_BLOCK` instructions. Each instruction becomes a few lines of straight-line Python with its
immediates folded into literals; registers stay unsigned 64-bit ints in the lists `x` and `f`. The function
returns the next pc; the run loop counts `block.n` instructions per return.

A block whose last instruction branches back to its own start is folded into a Python `while` loop (with an
iteration budget so signals still get through), which is where most guest time is spent.

Exceptions are for traps only: a load from an unreadable page, a store the fast path declines, an illegal
instruction. The run loop maps the traceback's line number back to the guest pc of the instruction that
trapped (`Block.index_of_line`), so the fast path carries no pc bookkeeping at all.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from isola.emu.codecache import CodeCache, Record
from isola.emu.codegen import MASK, SIGN, M, S, addr, load_expr, s32, setx, signed, store_lines, sx32, xr
from isola.emu.cpu import IllegalInstruction
from isola.emu.facts import FOLDABLE, IMM_FORMS, Facts
from isola.emu.fpfast import FloatSource
from isola.emu.fpgen import FP_EMITTERS
from isola.emu.memory import FlatMemory
from isola.emu.ops import amo_ops
from isola.linux.guest import PAGE_SHIFT, PROT_EXEC, GuestFault

if TYPE_CHECKING:
    from isola.emu.isa import Insn

MAX_BLOCK = 96
RETIRED = "@retired"  # in a CSR call: replaced by the instructions of the block that ran before it
MAX_DETOUR = 24  # instructions of a loop's other arm that may be folded into the loop
HOT_AFTER = 32  # executions of a cold (basic) block before it is retranslated as an optimised superblock
LOOP_BUDGET = 50_000  # iterations of a folded loop between returns to the run loop
MAX_ZEXT_GAP = 3  # instructions that may stand between the two shifts of a zero extension

INT_REG = re.compile(r"\bx\[(\d+)\]")
FP_REG = re.compile(r"\bf\[(\d+)\]")
FLOAT_REG = re.compile(r"\bd\[(\d+)\]")  # an f register a hot block keeps as a host float (see fpfast)
LOCAL_REG = re.compile(r"\b[rfd]\d+\b")
ASSIGNED_REG = re.compile(r"^\s*([rfd]\d+)(?:, \w+)? = ", re.MULTILINE)
DYNAMIC_RM = re.compile(r"\brm\b")
FLAGS_LOCAL = re.compile(r"\bff\b")


def _reg_order(name: str) -> tuple[str, int]:
    return name[0], int(name[1:])


def _reg_list(name: str) -> str:
    """`r5` -> `x[5]`, `f3` and `d3` -> `f[3]`: the list slot a local stands for."""
    return f"{'x' if name[0] == 'r' else 'f'}[{name[1:]}]"


def _load_local(name: str, indent: str) -> list[str]:
    """A register's local from its list slot; a float-kept one is converted from its pattern."""
    if name[0] == "d":
        return [f"{indent}SQ[0] = {_reg_list(name)}", f"{indent}{name} = SD[0]"]
    return [f"{indent}{name} = {_reg_list(name)}"]


def _store_local(name: str, indent: str) -> list[str]:
    """Write a register's local back to its list slot; a float-kept one as its pattern."""
    if name[0] == "d":
        return [f"{indent}SD[0] = {name}", f"{indent}{_reg_list(name)} = SQ[0]"]
    return [f"{indent}{_reg_list(name)} = {name}"]


ENDS_BLOCK = frozenset({"jalr", "ecall", "ebreak", "fence.i"})
BACK_EDGES = frozenset({"beq", "bne", "blt", "bge", "bltu", "bgeu", "jal"})
NO_LOOP = frozenset({"csrrw", "csrrs", "csrrc", "csrrwi", "csrrsi", "csrrci"})
BRANCH_COND = {
    "beq": "{a} == {b}",
    "bne": "{a} != {b}",
    "blt": "{sa} < {sb}",
    "bge": "{sa} >= {sb}",
    "bltu": "{a} < {b}",
    "bgeu": "{a} >= {b}",
}
# (struct format, signed) per load mnemonic; stores by width
LOADS = {"lb": ("<b", True), "lh": ("<h", True), "lw": ("<i", True), "ld": ("<Q", False),
         "lbu": ("<B", False), "lhu": ("<H", False), "lwu": ("<I", False)}  # fmt: skip
STORES = {"sb": (1, "0xff"), "sh": (2, "0xffff"), "sw": (4, "0xffffffff"), "sd": (8, M)}


class Block:
    """One translated block. Its instructions are numbered: the main path 0..n-1 in execution order, then the
    instructions of loop detours. For instruction i, `pcs[i]` is its address, `ends[i]` the byte after it,
    `nexts[i]` the pc that follows it in this block, and `offsets[i]` how many instructions of the current
    loop iteration (or of the block, without a loop) have run once it completes. `lines[l]` is the instruction
    that line l+1 of the source belongs to, for mapping a trap back to its pc.

    A plain class rather than a dataclass, like the others on the start-up path: each @dataclass costs a few
    hundred microseconds at import, and a warm static program starts in a few tens of milliseconds."""

    __slots__ = ("code", "ends", "fn", "lines", "n", "nexts", "offsets", "pages", "pcs", "source", "start")

    def __init__(
        self,
        start: int,
        n: int,
        pcs: list[int],
        ends: list[int],
        nexts: list[int],
        offsets: list[int],
        fn: Callable[[list[int], list[int], Any], int],
        lines: list[int],
        pages: tuple[int, ...],
        source: str = "",
    ) -> None:
        self.start, self.n, self.pcs, self.ends, self.nexts, self.offsets = start, n, pcs, ends, nexts, offsets
        self.fn, self.code, self.lines, self.pages, self.source = fn, fn.__code__, lines, pages, source

    def index_of_line(self, lineno: int) -> int:
        i = lineno - 1
        return self.lines[i] if 0 <= i < len(self.lines) else 0


class Stats:
    __slots__ = ("blocks", "cached", "invalidations", "translate_s")

    def __init__(self) -> None:
        self.blocks = 0  # translated
        self.cached = 0  # taken from the persistent code cache
        self.translate_s = 0.0
        self.invalidations = 0


class Translator:
    """Translates and caches blocks; drops them when their code pages are written."""

    def __init__(self, mem: FlatMemory, runtime: dict[str, Any], codecache: CodeCache | None = None) -> None:
        self.mem = mem
        self.codecache = codecache if codecache is not None else CodeCache(None)
        self.cache: dict[int, Block] = {}
        self.by_page: dict[int, list[int]] = {}
        self.stats = Stats()
        self.namespace: dict[str, Any] = {
            "MEM": mem.buf,
            "R": mem.readable,
            "W": mem.fast_write,
            **self._views(mem),
            **FloatSource.namespace(),
            "PROMOTE": self.promote,
            **runtime,
        }
        mem.on_code_write = self.invalidate_page

    @staticmethod
    def _views(mem: FlatMemory) -> dict[str, memoryview[int] | memoryview[float]]:
        """Guest memory cast to each access width that aligned loads and stores index (see codegen)."""
        view = memoryview(mem.buf)
        return {"MV_h": view.cast("h"), "MV_H": view.cast("H"), "MV_i": view.cast("i"), "MV_I": view.cast("I"),
                "MV_Q": view.cast("Q"), "MV_d": view.cast("d")}  # fmt: skip

    # -- cache ---------------------------------------------------------------------------------------------

    def invalidate_page(self, page: int) -> None:
        for pc in self.by_page.pop(page, ()):
            blk = self.cache.pop(pc, None)
            if blk is not None:
                self.stats.invalidations += 1
                for p in blk.pages:  # a block spanning two pages is listed under both
                    if p != page and pc in self.by_page.get(p, ()):
                        self.by_page[p].remove(pc)
        self.mem.unmark_code(page)
        self.codecache.forget(page)

    def flush(self) -> None:
        """fence.i / riscv_flush_icache / execve: forget every translation."""
        self.codecache.save()
        for page in list(self.by_page):
            self.invalidate_page(page)
        self.cache.clear()

    # -- translation ---------------------------------------------------------------------------------------

    def _fetch16(self, pc: int) -> int:
        self.mem.fetch_check(pc, 2)
        return int.from_bytes(self.mem.buf[pc : pc + 2], "little")

    def _decode(self, pc: int) -> Insn:
        """The instruction at pc. The decoder and its tables load on the first translation: a warm start
        takes every block from the code cache and never needs them."""
        from isola.emu.isa import decode_at

        return decode_at(self._fetch16, pc)

    def _decode_block(self, start: int, hot: bool) -> list[tuple[int, Insn]]:
        """The instructions of the block at `start`, in execution order.

        A cold block is a basic block: it ends at the first control transfer. A hot block runs on past
        conditional branches (side exits) and follows direct jumps and calls; it ends at an indirect jump, a
        system instruction or a jump back into itself. Both end before an undecodable or unfetchable
        instruction (which traps when reached) and at MAX_BLOCK."""
        insns: list[tuple[int, Insn]] = []
        seen: set[int] = set()
        pc = start
        page_end = ((start >> PAGE_SHIFT) + 1) << PAGE_SHIFT
        while len(insns) < MAX_BLOCK and pc not in seen and (hot or pc < page_end):
            try:
                insn = self._decode(pc)
            except (IllegalInstruction, GuestFault):
                if not insns:
                    raise
                break
            insns.append((pc, insn))
            seen.add(pc)
            mn = insn.mnemonic
            if mn in ENDS_BLOCK or (not hot and mn in BACK_EDGES):
                break
            if mn == "jal":
                target = (pc + insn.imm) & MASK
                if target in seen:
                    break  # a loop back-edge, or a jump into the block: it leaves the block
                pc = target
            else:
                pc += insn.length
        return insns

    def promote(self, start: int) -> None:
        """A cold block ran HOT_AFTER times: replace it with its optimised translation."""
        self.translate(start, hot=True)

    def translate(self, start: int, hot: bool = False) -> Block:
        t0 = time.perf_counter()
        page = start >> PAGE_SHIFT
        cache = self.codecache
        if cache.enabled:
            self.mem.fetch_check(start, 2)  # what decoding would have checked (the other pages: see below)
            for tier in (True,) if hot else (True, False):  # a block that grew hot in an earlier run starts hot
                hit = cache.lookup(page, start, tier, self._page_bytes)
                if hit is not None and all((self.mem.prot_at(p << PAGE_SHIFT) or 0) & PROT_EXEC for p in hit[7]):
                    blk = self._install(start, hit)
                    self.stats.cached += 1
                    self.stats.translate_s += time.perf_counter() - t0
                    return blk
        insns = self._decode_block(start, hot)
        back_edge = next(
            (j for j, (pc, i) in enumerate(insns) if i.mnemonic in BACK_EDGES and (pc + i.imm) & MASK == start), None
        )
        if back_edge is not None and any(i.mnemonic in NO_LOOP for _, i in insns[: back_edge + 1]):
            back_edge = None  # the loop reads counters: run it one pass at a time
        detours: dict[int, list[tuple[int, Insn]]] = {}
        if hot and back_edge is not None:
            for i, (pc, insn) in enumerate(insns[:back_edge]):
                if insn.mnemonic in BRANCH_COND:
                    path = self._detour((pc + insn.imm) & MASK, start)
                    if path:
                        detours[i] = path
        layout = _Layout(insns, back_edge, detours, start)
        src, lines = _BlockSource(layout, hot).source(start)
        code = compile(src, f"<guest {start:#x}>", "exec")
        pages = tuple(sorted(self._pages_of(layout.pcs, layout.ends)))
        record: Record = (code, len(insns), layout.pcs, layout.ends, layout.nexts, layout.offsets, lines, pages)
        blk = self._install(start, record, src)
        if cache.enabled:
            cache.add(page, start, hot, record, self._page_bytes)
        self.stats.blocks += 1
        self.stats.translate_s += time.perf_counter() - t0
        return blk

    def _detour(self, target: int, head: int) -> list[tuple[int, Insn]] | None:
        """The straight path from a side exit's `target` back to the loop `head`, if it is short and plain
        (no system instruction, no indirect jump): the loop can then take that arm without leaving the block."""
        path: list[tuple[int, Insn]] = []
        pc = target
        while len(path) < MAX_DETOUR:
            if pc == head:
                return path or None
            if any(pc == p for p, _ in path):
                return None
            try:
                insn = self._decode(pc)
            except (IllegalInstruction, GuestFault):
                return None
            mn = insn.mnemonic
            if mn in ENDS_BLOCK or mn in NO_LOOP or not (mn in _EMITTERS or mn in FP_EMITTERS or mn in BACK_EDGES):
                return None
            path.append((pc, insn))
            pc = (pc + insn.imm) & MASK if mn == "jal" else pc + insn.length
        return None

    def _page_bytes(self, page: int) -> bytes:
        return self.mem.buf[page << PAGE_SHIFT : (page + 1) << PAGE_SHIFT]

    @staticmethod
    def _pages_of(pcs: list[int], ends: list[int]) -> set[int]:
        return {pc >> PAGE_SHIFT for pc in pcs} | {(end - 1) >> PAGE_SHIFT for end in ends}

    def _install(self, start: int, record: Record, src: str = "") -> Block:
        """Make the block's function from its compiled module code and enter it in the cache."""
        code, n, pcs, ends, nexts, offsets, lines, pages = record
        ns: dict[str, Any] = {}
        exec(code, self.namespace, ns)
        blk = Block(start, n, pcs, ends, nexts, offsets, ns["block"], lines, pages, src)
        old = self.cache.get(start)
        if old is not None:  # a promotion: the cold block's pages no longer need to know it
            for p in old.pages:
                if start in self.by_page.get(p, ()):
                    self.by_page[p].remove(start)
        for p in blk.pages:
            self.by_page.setdefault(p, []).append(start)
            self.mem.mark_code(p)
        self.cache[start] = blk
        return blk


class _Layout:
    """The numbering of a block's instructions (see `Block`) and what follows from it."""

    def __init__(
        self,
        insns: list[tuple[int, Insn]],
        back_edge: int | None,
        detours: dict[int, list[tuple[int, Insn]]],
        start: int,
    ) -> None:
        self.insns = insns
        self.n = len(insns)
        self.back_edge = back_edge
        self.detours = detours
        self.order: list[tuple[int, Insn]] = list(insns)  # every instruction, by number
        self.offsets = [i + 1 for i in range(self.n)]
        self.nexts = [insns[i + 1][0] for i in range(self.n - 1)] + [insns[-1][0] + insns[-1][1].length]
        self.first: dict[int, int] = {}  # branch number -> number of its detour's first instruction
        for branch, path in detours.items():
            self.first[branch] = len(self.order)
            for p, (pc, insn) in enumerate(path):
                self.order.append((pc, insn))
                self.offsets.append(branch + 1 + p + 1)
                self.nexts.append(path[p + 1][0] if p + 1 < len(path) else start)
        self.pcs = [pc for pc, _ in self.order]
        self.ends = [pc + insn.length for pc, insn in self.order]


class _BlockSource:
    """The Python source of one block.

    A cold block is plain: registers are read and written in the lists `x` and `f`, and a countdown in a
    default argument promotes it after HOT_AFTER runs. A hot block keeps guest registers in Python locals
    (`r5` for x5, `f3` for f3, or `d3` holding f3 as a host float when only double arithmetic, loads and stores
    touch it: see fpfast): a prologue loads every register the block mentions, each exit writes back the
    ones it assigns. A trap skips the write-back; the run loop copies the trapping frame's locals back
    instead, so the fast path pays nothing for precision. Both tiers simplify integer code with what they
    know of register values (see facts).

    Instruction counting: the run loop adds `n` whenever a block returns, so every exit that ran a different
    number of instructions corrects `cpu.instret` itself. In a folded loop, `c` counts the instructions of
    the iterations completed so far (iterations through a detour are longer), and an exit after instruction
    i adds `c + offsets[i] - n`.
    """

    WRITEBACK = "@writeback"
    SYSCALL = "@syscall"  # stays `x[10] = SYSCALL()` in every tier: the kernel works on the lists

    def __init__(self, layout: _Layout, hot: bool) -> None:
        self.layout = layout
        self.n = layout.n
        self.back_edge = layout.back_edge
        self.hot = hot
        self.facts = Facts()
        self.floats = FloatSource.for_block(i for _, i in layout.order) if hot else FloatSource(frozenset())

    def count(self, idx: int) -> list[str]:
        """The correction of `cpu.instret` for leaving the block after instruction `idx` (-1: before any)."""
        const = (self.layout.offsets[idx] if idx >= 0 else 0) - self.n
        terms = (["c"] if self.back_edge is not None else []) + ([str(const)] if const else [])
        return [f"cpu.instret += {' + '.join(terms)}"] if terms else []

    def exit(self, idx: int, target: str) -> list[str]:
        return [*self.count(idx), self.WRITEBACK, f"return {target}"]

    def source(self, start: int) -> tuple[str, list[int]]:
        owners: list[int] = []  # the instruction number of each body line
        body: list[str] = []

        def emit(idx: int, indent: str, lines: list[str]) -> None:
            body.extend(indent + line for line in lines)
            owners.extend([idx] * len(lines))

        for idx, (pc, insn) in enumerate(self.layout.insns):
            indent = "        " if self.back_edge is not None and idx <= self.back_edge else "    "
            if idx in self.layout.detours:
                self.detour(idx, pc, insn, indent, emit)
            else:
                emit(idx, indent, self.instruction(idx, pc, insn))
            if idx == self.back_edge:
                emit(idx, "    ", self.budget_exit(start))
            if idx == self.back_edge == self.n - 1:  # the loop's exit is also the block's: after the loop
                emit(idx, "    ", self.exit(idx, str(pc + insn.length)))
        text = "\n".join(body)
        if self.hot:
            text = FLOAT_REG.sub(r"d\1", FP_REG.sub(r"f\1", INT_REG.sub(r"r\1", text)))
        used = sorted(set(LOCAL_REG.findall(text)), key=_reg_order)
        written = sorted(set(ASSIGNED_REG.findall(text)), key=_reg_order)
        prologue = [line for reg in used for line in _load_local(reg, "    ")]
        prologue += ["    " + line for line in self.floats.prologue()]
        if not self.hot:
            prologue = ["    _c[0] -= 1", f"    if not _c[0]: PROMOTE({start})"]
        if DYNAMIC_RM.search(text):
            prologue.append("    rm = cpu.frm")
        uses_ff = FLAGS_LOCAL.search(text) is not None
        if uses_ff:
            prologue.append("    ff = cpu.fflags")
        if self.back_edge is not None:  # c: the instructions of the iterations completed so far
            prologue += ["    c = 0", f"    for _ in range({LOOP_BUDGET}):"]
        signature = "x, f, cpu" if self.hot else f"x, f, cpu, _c=[{HOT_AFTER}]"
        out = [f"def block({signature}):  # {start:#x}", *prologue]
        lines = [0] * len(out)
        for idx, line in zip(owners, text.split("\n"), strict=True):
            stripped = line.strip()
            indent = line[: len(line) - len(line.lstrip())]
            if stripped == self.WRITEBACK:
                expanded = [line for reg in written for line in _store_local(reg, indent)] if self.hot else []
                if uses_ff:
                    expanded.append(f"{indent}cpu.fflags = ff")
            elif stripped == self.SYSCALL:
                expanded = [f"{indent}x[10] = SYSCALL()"]
            else:
                expanded = [line]
            out += expanded
            lines += [idx] * len(expanded)
        return "\n".join(out) + "\n", lines

    def detour(self, idx: int, pc: int, insn: Insn, indent: str, emit: Callable[[int, str, list[str]], None]) -> None:
        """A branch whose taken arm comes back to the loop head: run that arm here and go round again."""
        emit(idx, indent, [f"if {self.condition(insn)}:"])
        first = self.layout.first[idx]
        path = self.layout.detours[idx]
        main_path = self.facts
        self.facts = main_path.copy()  # the detour knows what held at its branch, and the main path goes on
        for k, (dpc, dinsn) in enumerate(path):
            emit(first + k, indent + "    ", self.instruction(first + k, dpc, dinsn))
        self.facts = main_path
        last = first + len(path) - 1
        emit(last, indent + "    ", [f"c += {self.layout.offsets[last]}", "continue"])

    @staticmethod
    def condition(insn: Insn) -> str:
        return BRANCH_COND[insn.mnemonic].format(
            a=xr(insn.rs1), b=xr(insn.rs2), sa=signed(insn.rs1), sb=signed(insn.rs2)
        )

    def instruction(self, idx: int, pc: int, insn: Insn) -> list[str]:
        mn = insn.mnemonic
        nxt = pc + insn.length
        last = idx == self.n - 1
        if mn in ("jal", "jalr"):
            self.facts.learn(pc, insn)  # the link register holds a constant
        if idx == self.back_edge:
            return self.loop_back(idx, insn)
        if mn in BRANCH_COND:
            side = [f"if {self.condition(insn)}:", *("    " + s for s in self.exit(idx, str((pc + insn.imm) & MASK)))]
            return side + (self.exit(idx, str(nxt)) if last else [])
        if mn == "jal":
            link = setx(insn.rd, str(nxt))
            return link + (self.exit(idx, str((pc + insn.imm) & MASK)) if last else [])
        if mn == "jalr":
            base = xr(insn.rs1)
            target = f"({base} + {insn.imm}) & 0xfffffffffffffffe" if insn.imm else f"{base} & 0xfffffffffffffffe"
            return [f"t = {target}", *setx(insn.rd, str(nxt)), *self.exit(idx, "t")]
        if mn == "ecall":  # the kernel reads and writes the register lists: write back first, not after
            return [self.WRITEBACK, f"cpu.pc = {pc}", self.SYSCALL, *self.count(idx), f"return {nxt}"]
        if mn == "fence.i":
            return ["FENCE_I()", *self.exit(idx, str(nxt))]
        if mn == "ebreak":
            return ["BREAKPOINT()"]
        emitter = _EMITTERS.get(mn) or FP_EMITTERS.get(mn)
        if emitter is None:
            raise IllegalInstruction(pc, insn.raw, insn.length)  # decodable, but not in user mode (mret, wfi…)
        fused = self.zero_extension(idx, pc, insn)
        if fused is not None:
            lines = fused
        else:
            lines = self.facts.rewrite(pc, insn, self.floats.emit(insn) or emitter(pc, insn, nxt))
        if mn.startswith("csr"):  # counters read exactly: how many instructions of this block ran before
            lines = [line.replace(RETIRED, str(self.layout.offsets[idx] - 1)) for line in lines]
        return lines + (self.exit(idx, str(nxt)) if last else [])

    def _zero_extension_end(self, idx: int) -> int | None:
        """If main-path instruction idx is `slli rd, rs, k` and `srli rd, rd, k` follows it, with only integer
        ALU instructions between that neither touch rd nor write rs (no trap, no exit, nothing can observe rd
        in between), the number of that srli: together they leave rs zero-extended from 64 - k bits in rd
        (zext.w for k = 32, often with an unrelated instruction scheduled between the two)."""
        first = self.layout.insns[idx][1] if 0 <= idx < self.n else None
        if first is None or first.mnemonic != "slli" or first.rd == 0:
            return None
        for j in range(idx + 1, min(idx + 1 + MAX_ZEXT_GAP, self.n)):
            insn = self.layout.insns[j][1]
            if insn.mnemonic == "srli" and insn.rd == insn.rs1 == first.rd and insn.imm == first.imm:
                return j
            sources = (insn.rs1,) if insn.mnemonic in IMM_FORMS else (insn.rs1, insn.rs2)
            if insn.mnemonic not in FOLDABLE or first.rd in (insn.rd, *sources) or insn.rd == first.rs1:
                return None
        return None

    def zero_extension(self, idx: int, pc: int, insn: Insn) -> list[str] | None:
        """The source of either half of a zero-extending shift pair (one AND instead of shift, mask, shift), or
        None if `insn` is not one."""
        if insn.mnemonic == "slli" and self._zero_extension_end(idx) is not None:
            self.facts.learn(pc, insn)
            return []  # the srli computes rd from rs, which nothing between them changes
        if insn.mnemonic != "srli" or not 0 < idx < self.n:
            return None
        first = next((k for k in range(idx - 1, max(idx - 1 - MAX_ZEXT_GAP, -1), -1)
                      if self._zero_extension_end(k) == idx), None)  # fmt: skip
        if first is None:
            return None
        self.facts.learn(pc, insn)
        rs = self.layout.insns[first][1].rs1
        return [f"x[{insn.rd}] = {f'x[{rs}]' if rs else '0'} & {(1 << (64 - insn.imm)) - 1:#x}"]

    def loop_back(self, idx: int, insn: Insn) -> list[str]:
        """The first jump back to the block's start: go round again, within the budget."""
        pc = self.layout.insns[idx][0]
        again = [f"c += {idx + 1}", "continue"]
        if insn.mnemonic == "jal":
            return [*setx(insn.rd, str(pc + insn.length)), *again]
        return [f"if {self.condition(insn)}:", *("    " + line for line in again), "break"]

    def budget_exit(self, start: int) -> list[str]:
        """The folded loop ran LOOP_BUDGET whole iterations: return to the run loop (signals get a look in)."""
        lines = [*self.count(-1), self.WRITEBACK, f"return {start}"]
        return ["else:", *("    " + line for line in lines)]


def _alu_imm(pc: int, i: Insn, nxt: int) -> list[str]:
    mn, rd, rs1, imm = i.mnemonic, i.rd, i.rs1, i.imm
    u = imm & MASK
    a = xr(rs1)
    if mn == "addi":
        if rs1 == 0:
            return setx(rd, str(u))
        return setx(rd, a if imm == 0 else f"({a} + {imm}) & {M}")
    exprs = {
        "slti": f"1 if {signed(rs1)} < {u ^ SIGN} else 0",
        "sltiu": f"1 if {a} < {u} else 0",
        "xori": f"{a} ^ {u}",
        "ori": f"{a} | {u}",
        "andi": f"{a} & {u}",
        "slli": f"({a} << {imm}) & {M}",
        "srli": f"{a} >> {imm}",
        "srai": f"(({a} ^ {S}) - {S}) >> {imm} & {M}",
        "addiw": sx32(f"{a} + {imm}" if imm else a),
        "slliw": sx32(f"{a} << {imm}"),
        "srliw": f"({a} & 0xffffffff) >> {imm}" if imm else sx32(a),  # a shift of 1+ clears bit 31
        "sraiw": f"{s32(rs1)} >> {imm} & {M}",
    }
    return setx(rd, exprs[mn])


def _alu(pc: int, i: Insn, nxt: int) -> list[str]:
    a, b = xr(i.rs1), xr(i.rs2)
    exprs = {
        "add": f"({a} + {b}) & {M}",
        "sub": f"({a} - {b}) & {M}",
        "sll": f"({a} << ({b} & 63)) & {M}",
        "slt": f"1 if {signed(i.rs1)} < {signed(i.rs2)} else 0",
        "sltu": f"1 if {a} < {b} else 0",
        "xor": f"{a} ^ {b}",
        "srl": f"{a} >> ({b} & 63)",
        "sra": f"(({a} ^ {S}) - {S}) >> ({b} & 63) & {M}",
        "or": f"{a} | {b}",
        "and": f"{a} & {b}",
        "addw": sx32(f"{a} + {b}"),
        "subw": sx32(f"{a} - {b}"),
        "sllw": sx32(f"{a} << ({b} & 31)"),
        "srlw": sx32(f"({a} & 0xffffffff) >> ({b} & 31)"),
        "sraw": f"{s32(i.rs1)} >> ({b} & 31) & {M}",
        "mul": f"({a} * {b}) & {M}",
        "mulw": sx32(f"{a} * {b}"),
    }
    if a == "0" and i.mnemonic in ("add", "or", "xor"):  # mv and friends: c.mv expands to add rd, x0, rs
        return setx(i.rd, b)
    if b == "0" and i.mnemonic in ("add", "sub", "or", "xor"):
        return setx(i.rd, a)
    if i.mnemonic in exprs:
        return setx(i.rd, exprs[i.mnemonic])
    # mulh, mulhsu, mulhu, div, divu, rem, remu and their *w forms: helpers in ops.py
    return setx(i.rd, f"OPS_{i.mnemonic.replace('.', '_')}({a}, {b})")


def _lui(pc: int, i: Insn, nxt: int) -> list[str]:
    return setx(i.rd, str(i.imm & MASK))


def _auipc(pc: int, i: Insn, nxt: int) -> list[str]:
    return setx(i.rd, str((pc + i.imm) & MASK))


def _load(pc: int, i: Insn, nxt: int) -> list[str]:
    fmt, is_signed = LOADS[i.mnemonic]
    return [addr(i), f"{f'x[{i.rd}]' if i.rd else '_'} = {load_expr(fmt, is_signed)}"]


def _store(pc: int, i: Insn, nxt: int) -> list[str]:
    width, mask = STORES[i.mnemonic]
    value = xr(i.rs2) if width == 8 or i.rs2 == 0 else f"{xr(i.rs2)} & {mask}"
    return [addr(i), *store_lines(width, value)]


def _fence(pc: int, i: Insn, nxt: int) -> list[str]:
    return []  # one hart, and memory is sequentially consistent in Python


def _csr(pc: int, i: Insn, nxt: int) -> list[str]:
    op = i.mnemonic[4]  # csrr[w|s|c][i]
    imm_form = i.mnemonic.endswith("i")  # the decoder puts the 5-bit uimm in `imm` (rs1 is 0)
    value = str(i.imm) if imm_form else xr(i.rs1)
    # csrrs/csrrc with x0 (or uimm 0) only read, and must not trap on a read-only CSR
    writes = op == "w" or (i.imm if imm_form else i.rs1) != 0
    call = f"CSR({i.csr}, '{op}', {value}, {writes}, {RETIRED})"
    # The block's copies of fflags and frm are handed over to the CSR and taken back after it.
    return ["cpu.fflags = ff", *(setx(i.rd, call) or [call]), "ff = cpu.fflags", "rm = cpu.frm"]


def _amo(pc: int, i: Insn, nxt: int) -> list[str]:
    name, width = i.mnemonic.split(".")
    bits = 32 if width == "w" else 64
    size, fmt = bits // 8, ("<I" if bits == 32 else "<Q")
    mask = "0xffffffff" if bits == 32 else M
    old = load_expr(fmt, False)
    result = sx32("o") if bits == 32 else "o"
    lines = [f"a = {xr(i.rs1)}", f"if a & {size - 1}: MISALIGNED(a)"]
    if name == "lr":
        return [*lines, f"o = {old}", "cpu.reservation = a", *setx(i.rd, result)]
    if name == "sc":
        value = xr(i.rs2) if bits == 64 else f"{xr(i.rs2)} & {mask}"
        return [
            *lines,
            "if cpu.reservation == a:",
            *("    " + s for s in store_lines(size, value)),
            *("    " + s for s in setx(i.rd, "0")),
            "else:",
            "    " + (f"x[{i.rd}] = 1" if i.rd else "pass"),
            "cpu.reservation = None",
        ]
    combine = amo_ops(bits)[name.removeprefix("amo")]
    return [
        *lines,
        f"o = {old}",
        f"v = {xr(i.rs2)} & {mask}",
        f"n = {combine}",
        *store_lines(size, "n"),
        *setx(i.rd, result),
    ]


_EMITTERS: dict[str, Callable[[int, Insn, int], list[str]]] = {
    **dict.fromkeys(
        ("addi", "slti", "sltiu", "xori", "ori", "andi", "slli", "srli", "srai", "addiw", "slliw", "srliw", "sraiw"),
        _alu_imm,
    ),
    **dict.fromkeys(
        (
            "add",
            "sub",
            "sll",
            "slt",
            "sltu",
            "xor",
            "srl",
            "sra",
            "or",
            "and",
            "addw",
            "subw",
            "sllw",
            "srlw",
            "sraw",
            "mul",
            "mulh",
            "mulhsu",
            "mulhu",
            "div",
            "divu",
            "rem",
            "remu",
            "mulw",
            "divw",
            "divuw",
            "remw",
            "remuw",
        ),
        _alu,
    ),
    "lui": _lui,
    "auipc": _auipc,
    **dict.fromkeys(LOADS, _load),
    **dict.fromkeys(STORES, _store),
    "fence": _fence,
    "fence.tso": _fence,
    "pause": _fence,
    **dict.fromkeys(("csrrw", "csrrs", "csrrc", "csrrwi", "csrrsi", "csrrci"), _csr),
    **dict.fromkeys(
        [
            f"{op}.{w}"
            for w in ("w", "d")
            for op in (
                "lr",
                "sc",
                "amoswap",
                "amoadd",
                "amoxor",
                "amoand",
                "amoor",
                "amomin",
                "amomax",
                "amominu",
                "amomaxu",
            )
        ],
        _amo,
    ),
}
