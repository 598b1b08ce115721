"""The process VM's hand-written machine code and tables: the bytes in `system.py` are what their source says."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from isola.vmm.process import layout, system

ENTRY_SOURCE = """
# isola process VM: the user page of the system area (syscall entry + in-guest fast paths)
# assembled at offset 0 of the page; data page follows at +0x1000
        .set NFAST, 64
        .set BATCH_MAX_WRITE, 4096
        .text
        .code64
entry:                          # LSTAR when the fast paths are on (syscall stays at CPL3: kvm_pvm)
        cmpq $0, %rax
        je fast_read
        cmpq $1, %rax
        je fast_write
slow:                           # LSTAR otherwise
        outb %al, $0xd0
        sysretq
fast_read:
        cmpq $NFAST, %rdi
        jae slow
        movq %rcx, SAVE_RCX(%rip)
        movq %rsi, SAVE_RSI(%rip)
        movq %rdi, SAVE_RDI(%rip)
        movq %rdi, %rax
        shlq $5, %rax
        leaq TABLE(%rip), %rcx
        addq %rax, %rcx
        testq $1, 24(%rcx)
        jz restore_slow_read
        movq 16(%rcx), %rax
        movq 8(%rcx), %rsi
        subq %rax, %rsi
        jbe restore_slow_read
        cmpq %rdx, %rsi
        cmovaq %rdx, %rsi
        addq %rsi, 16(%rcx)
        addq (%rcx), %rax
        movq %rsi, %rcx
        movq SAVE_RSI(%rip), %rdi
        movq %rax, %rsi
        movq %rcx, %rax
read_copy:
        rep movsb
read_done:
        movq SAVE_RSI(%rip), %rsi
        movq SAVE_RDI(%rip), %rdi
        movq SAVE_RCX(%rip), %rcx
to_user:
        movq %rsp, SAVE_RSP(%rip)
        leaq FLAGS_SLOT(%rip), %rsp
        movq %r11, (%rsp)
        popfq
        movq SAVE_RSP(%rip), %rsp
        jmp *%rcx
restore_slow_read:
        movq SAVE_RSI(%rip), %rsi
        movq SAVE_RDI(%rip), %rdi
        movq SAVE_RCX(%rip), %rcx
        xorl %eax, %eax
        jmp slow
fast_write:
        cmpq $NFAST, %rdi
        jae slow
        movq %rcx, SAVE_RCX(%rip)
        movq %rsi, SAVE_RSI(%rip)
        movq %rdi, SAVE_RDI(%rip)
        movq %rdi, %rax
        shlq $5, %rax
        leaq TABLE(%rip), %rcx
        addq %rax, %rcx
        testq $2, 24(%rcx)
        jz restore_slow_write
        cmpq $BATCH_MAX_WRITE, %rdx
        ja restore_slow_write
        leaq BATCH(%rip), %rcx          # rcx = batch header {used, capacity}
        leaq 15(%rdx), %rax
        andq $-8, %rax                  # record size: 8-byte header + data, 8-byte aligned
        addq (%rcx), %rax               # new used
        cmpq 8(%rcx), %rax
        ja restore_slow_write
        movq (%rcx), %rdi               # old used
        leaq 16+8(%rcx,%rdi), %rdi      # destination: the record's data
        movq %rdx, %rcx
write_copy:
        rep movsb
write_done:
        leaq BATCH(%rip), %rcx
        movq (%rcx), %rdi
        movl %edx, 16+4(%rcx,%rdi)      # record header: length
        movq SAVE_RDI(%rip), %rsi
        movl %esi, 16(%rcx,%rdi)        # record header: fd
        leaq 15(%rdx), %rax
        andq $-8, %rax
        addq %rax, (%rcx)               # commit the record
        movq %rdx, %rax                 # result: every byte written
        movq SAVE_RSI(%rip), %rsi
        movq SAVE_RDI(%rip), %rdi
        movq SAVE_RCX(%rip), %rcx
        jmp to_user
restore_slow_write:
        movq SAVE_RSI(%rip), %rsi
        movq SAVE_RDI(%rip), %rdi
        movq SAVE_RCX(%rip), %rcx
        movl $1, %eax
        jmp slow

        .org 0x1000             # the data page (user read-write): saved registers, the fd table
SAVE_RCX: .quad 0
SAVE_RSI: .quad 0
SAVE_RDI: .quad 0
SAVE_RSP: .quad 0
FLAGS_SLOT: .quad 0
        .org 0x1040
TABLE:  .quad 0
        .org 0x2000             # the write batch: {used, capacity}, then records {fd:u32, len:u32, data, pad to 8}
BATCH:  .quad 0
"""


def test_entry_code_is_its_assembly_source(tmp_path: Path) -> None:
    if shutil.which("as") is None or shutil.which("objcopy") is None:
        pytest.skip("binutils (as, objcopy) is not installed")
    (tmp_path / "entry.S").write_text(ENTRY_SOURCE)
    subprocess.run(["as", "--64", "-o", str(tmp_path / "entry.o"), str(tmp_path / "entry.S")], check=True)
    subprocess.run(
        ["objcopy", "-O", "binary", "-j", ".text", str(tmp_path / "entry.o"), str(tmp_path / "bin")], check=True
    )
    assembled = (tmp_path / "bin").read_bytes()
    assert assembled[: len(system.ENTRY_CODE)] == system.ENTRY_CODE
    symbols = subprocess.run(["nm", str(tmp_path / "entry.o")], capture_output=True, text=True, check=True).stdout
    found = {name: int(value, 16) for value, _, name in (line.split() for line in symbols.splitlines())}
    assert found["slow"] == system.SLOW and found["read_copy"] == system.READ_COPY
    assert found["write_copy"] == system.WRITE_COPY and found["TABLE"] == 0x1000 + system.FD_TABLE
    assert found["BATCH"] == layout.BATCH - layout.USER_CODE


def test_exception_stubs_report_their_vector_on_their_port() -> None:
    stubs = system.exception_stubs()
    for vector in range(system.VECTORS):
        stub = stubs[vector * 8 : vector * 8 + 8]
        push = stub[:2]
        assert push == (b"\x90\x90" if vector in system.ERROR_CODE_VECTORS else b"\x6a\x00")
        assert stub[2:5] == bytes([0xE6, layout.EXCEPTION_PORT_BASE + vector, 0xF4])


def test_the_io_bitmap_opens_only_the_syscall_port() -> None:
    tss = system.tss(0x1234_5678_9000)
    assert struct.unpack_from("<Q", tss, 4)[0] == 0x1234_5678_9000  # RSP0
    base = struct.unpack_from("<H", tss, 0x66)[0]
    bitmap = tss[base : base + 8192]
    open_ports = [p for p in range(65536) if not bitmap[p // 8] >> (p % 8) & 1]
    assert open_ports == [layout.SYSCALL_PORT]
    assert len(tss) == system.TSS_LIMIT + 1 and tss[-1] == 0xFF


def test_idt_gates_point_at_the_stubs_and_only_int3_is_open_to_user_mode() -> None:
    idt = system.idt(0xFFFF_8000_0000_5000)
    for vector in range(system.VECTORS):
        lo, selector, _, kind, mid, hi, _ = struct.unpack_from("<HHBBHII", idt, vector * 16)
        assert lo | mid << 16 | hi << 32 == 0xFFFF_8000_0000_5000 + vector * 8
        assert selector == layout.KERNEL_CS
        assert kind >> 5 & 3 == (3 if vector in (3, 4) else 0)


def test_sysret_finds_the_user_segments_where_star_says() -> None:
    entries = system.gdt_entries(0x4000_1000)
    user_cs, user_ss = system.segment(entries, layout.USER_CS), system.segment(entries, layout.USER_DS)
    assert layout.USER32_CS + 16 == layout.USER_CS and layout.USER32_CS + 8 == layout.USER_DS
    assert (user_cs.l, user_cs.dpl, user_ss.dpl) == (1, 3, 3)
    tr = system.task_register(0x1_2345_6000)
    assert tr.base == 0x1_2345_6000 and tr.type == 0xB
    assert entries[layout.TSS_SELECTOR // 8 + 1] == 0  # the high half of a TSS base below 4 GiB


def test_layout_refuses_odd_memory_sizes() -> None:
    from isola.errors import UsageError

    with pytest.raises(UsageError):
        layout.Layout(3 << 20)
    lay = layout.Layout(1 << 30)
    assert lay.sys == 1 << 30 and lay.window(0) == 2 << 30 and lay.system_slot_size % (2 << 20) == 0
