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

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from isola.emu.codegen import MASK, SIGN, M, S, addr, load_expr, s32, setx, signed, store_lines, sx32, xr
from isola.emu.fpgen import FP_EMITTERS
from isola.emu.isa import IllegalInstruction, Insn, decode_at
from isola.emu.memory import FlatMemory
from isola.emu.ops import amo_ops
from isola.linux.guest import PAGE_SHIFT

MAX_BLOCK = 96
LOOP_BUDGET = 50_000  # iterations of a folded loop between returns to the run loop

TERMINAL = frozenset({"beq", "bne", "blt", "bge", "bltu", "bgeu", "jal", "jalr", "ecall", "ebreak", "fence.i"})
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
STORE_FMT = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


@dataclass
class Block:
    """One translated block. `lines[i]` is the index of the guest instruction that line i of the source
    belongs to (0 for the prologue), for mapping a trap back to its pc."""

    start: int
    end: int  # the pc after the last instruction
    n: int
    pcs: list[int]
    fn: Callable[[list[int], list[int], Any], int]
    code: Any
    lines: list[int]
    first_line: int
    loop: bool
    pages: tuple[int, ...]
    source: str = field(repr=False, default="")

    def index_of_line(self, lineno: int) -> int:
        i = lineno - self.first_line
        return self.lines[i] if 0 <= i < len(self.lines) else 0


@dataclass
class Stats:
    blocks: int = 0
    translate_s: float = 0.0
    invalidations: int = 0


class Translator:
    """Translates and caches blocks; drops them when their code pages are written."""

    def __init__(self, mem: FlatMemory, runtime: dict[str, Any]) -> None:
        self.mem = mem
        self.cache: dict[int, Block] = {}
        self.by_page: dict[int, list[int]] = {}
        self.stats = Stats()
        self.namespace: dict[str, Any] = {
            "MEM": mem.buf,
            "R": mem.readable,
            "W": mem.fast_write,
            "LD": {fmt: struct.Struct(fmt).unpack_from for fmt in ("<b", "<h", "<i", "<Q", "<B", "<H", "<I")},
            **{f"ST{w}": struct.Struct(fmt).pack_into for w, fmt in STORE_FMT.items()},
            **runtime,
        }
        mem.on_code_write = self.invalidate_page

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

    def flush(self) -> None:
        """fence.i / riscv_flush_icache / execve: forget every translation."""
        for page in list(self.by_page):
            self.invalidate_page(page)
        self.cache.clear()

    # -- translation ---------------------------------------------------------------------------------------

    def _fetch16(self, pc: int) -> int:
        self.mem.fetch_check(pc, 2)
        return int.from_bytes(self.mem.buf[pc : pc + 2], "little")

    def _decode_block(self, start: int) -> list[tuple[int, Insn]]:
        insns: list[tuple[int, Insn]] = []
        pc = start
        page_end = ((start >> PAGE_SHIFT) + 1) << PAGE_SHIFT
        while len(insns) < MAX_BLOCK:
            try:
                insn = decode_at(self._fetch16, pc)
            except IllegalInstruction:
                if not insns:
                    raise
                break  # let the block end before it; it traps when reached
            if (insn.rm == 7 and insn.mnemonic[0] == "f") or insn.mnemonic.startswith("csr"):
                pass
            insns.append((pc, insn))
            pc += insn.length
            if insn.mnemonic in TERMINAL or pc >= page_end:
                break
        return insns

    def translate(self, start: int) -> Block:
        t0 = time.perf_counter()
        insns = self._decode_block(start)
        last_pc, last = insns[-1]
        loops = (
            last.mnemonic in BRANCH_COND
            and (last_pc + last.imm) & MASK == start
            and not any(i.mnemonic.startswith("csr") for _, i in insns)
        )
        body: list[tuple[int, str]] = []  # (instruction index, line)
        for idx, (pc, insn) in enumerate(insns):
            body += [(idx, line) for line in self._emit(pc, insn, loop_start=start if loops else None)]
        if insns[-1][1].mnemonic not in TERMINAL:
            body.append((len(insns) - 1, f"return {insns[-1][0] + insns[-1][1].length}"))
        if loops:  # the loop exit counts whole iterations: the block's length is known only now
            body = [(idx, line.replace("{N}", str(len(insns)))) for idx, line in body]
        src, lines = self._assemble(start, body, loops, len(insns), last_pc + last.length)
        code = compile(src, f"<guest {start:#x}>", "exec")
        ns: dict[str, Any] = {}
        exec(code, self.namespace, ns)
        fn = ns["block"]
        pages = tuple(sorted({pc >> PAGE_SHIFT for pc, _ in insns} | {(last_pc + last.length - 1) >> PAGE_SHIFT}))
        blk = Block(
            start,
            last_pc + last.length,
            len(insns),
            [pc for pc, _ in insns],
            fn,
            fn.__code__,
            lines,
            2,
            loops,
            pages,
            src,
        )
        for p in pages:
            self.by_page.setdefault(p, []).append(start)
            self.mem.mark_code(p)
        self.cache[start] = blk
        self.stats.blocks += 1
        self.stats.translate_s += time.perf_counter() - t0
        return blk

    @staticmethod
    def _assemble(
        start: int, body: list[tuple[int, str]], loop: bool, n: int, fallthrough: int
    ) -> tuple[str, list[int]]:
        out = [f"def block(x, f, cpu):  # {start:#x}"]
        lines = [0]
        indent = "    "
        if loop:
            out += [f"{indent}k = 0", f"{indent}while True:"]
            lines += [0, 0]
            indent += "    "
        for idx, line in body:
            out.append(indent + line)
            lines.append(idx)
        if loop:
            out += [f"    cpu.instret += k * {n}", f"    return {fallthrough}"]
            lines += [n - 1, n - 1]
        return "\n".join(out) + "\n", lines

    # -- emitters ------------------------------------------------------------------------------------------

    def _emit(self, pc: int, insn: Insn, loop_start: int | None) -> list[str]:
        mn = insn.mnemonic
        nxt = pc + insn.length
        if mn in BRANCH_COND:
            return self._branch(pc, insn, nxt, loop_start)
        emitter = _EMITTERS.get(mn) or FP_EMITTERS.get(mn)
        if emitter is None:
            raise IllegalInstruction(pc, insn.raw, insn.length)
        return emitter(pc, insn, nxt)

    @staticmethod
    def _branch(pc: int, insn: Insn, nxt: int, loop_start: int | None) -> list[str]:
        cond = BRANCH_COND[insn.mnemonic].format(
            a=xr(insn.rs1), b=xr(insn.rs2), sa=signed(insn.rs1), sb=signed(insn.rs2)
        )
        target = (pc + insn.imm) & MASK
        if loop_start is None:
            return [f"if {cond}: return {target}", f"return {nxt}"]
        # Folded self-loop: a taken branch goes round again, within the budget.
        return [
            f"if {cond}:",
            "    k += 1",
            f"    if k < {LOOP_BUDGET}: continue",
            "    cpu.instret += k * {N}",
            f"    return {target}",
            "break",
        ]


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
        "addiw": sx32(f"{a} + {imm}"),
        "slliw": sx32(f"{a} << {imm}"),
        "srliw": sx32(f"({a} & 0xffffffff) >> {imm}"),
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


def _jal(pc: int, i: Insn, nxt: int) -> list[str]:
    return [*setx(i.rd, str(nxt)), f"return {(pc + i.imm) & MASK}"]


def _jalr(pc: int, i: Insn, nxt: int) -> list[str]:
    target = f"({xr(i.rs1)} + {i.imm}) & 0xfffffffffffffffe" if i.imm else f"{xr(i.rs1)} & 0xfffffffffffffffe"
    return [f"t = {target}", *setx(i.rd, str(nxt)), "return t"]


def _ecall(pc: int, i: Insn, nxt: int) -> list[str]:
    return [f"cpu.pc = {pc}", "x[10] = SYSCALL()", f"return {nxt}"]


def _ebreak(pc: int, i: Insn, nxt: int) -> list[str]:
    return [f"BREAKPOINT({pc})"]


def _fence(pc: int, i: Insn, nxt: int) -> list[str]:
    return []  # one hart, and memory is sequentially consistent in Python


def _fence_i(pc: int, i: Insn, nxt: int) -> list[str]:
    return ["FENCE_I()", f"return {nxt}"]


def _csr(pc: int, i: Insn, nxt: int) -> list[str]:
    op = i.mnemonic[4]  # csrr[w|s|c][i]
    value = str(i.rs1) if i.mnemonic.endswith("i") else xr(i.rs1)
    # csrrs/csrrc with x0 (or uimm 0) only read, and must not trap on a read-only CSR
    writes = op == "w" or i.rs1 != 0
    return setx(i.rd, f"CSR({i.csr}, '{op}', {value}, {writes})") or [f"CSR({i.csr}, '{op}', {value}, {writes})"]


def _amo(pc: int, i: Insn, nxt: int) -> list[str]:
    name, width = i.mnemonic.split(".")
    bits = 32 if width == "w" else 64
    size, fmt = bits // 8, ("<I" if bits == 32 else "<Q")
    mask = "0xffffffff" if bits == 32 else M
    old = f"LD['{fmt}'](MEM, a)[0] if R[a >> 12] else RFAULT(a)"
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
    "jal": _jal,
    "jalr": _jalr,
    "ecall": _ecall,
    "ebreak": _ebreak,
    "fence": _fence,
    "fence.tso": _fence,
    "pause": _fence,
    "fence.i": _fence_i,
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
