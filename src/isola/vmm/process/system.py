"""The system area's contents: GDT, TSS with its I/O bitmap, IDT, the exception stubs and the syscall entry.

A process VM has no guest kernel. The VMM writes the few tables the CPU insists on and two kinds of stubs:

- **Exception stubs** (CPL 0, one per vector 0-31): push a zero where the CPU pushes no error code, then
  `out %al, $(0xe0 + vector)`. The exit tells the VMM the vector; the CPU's exception frame (error code, RIP,
  CS, RFLAGS, RSP, SS) is on the exception stack, and the user registers are untouched. The VMM never resumes a
  stub: it loads the user state (or a signal handler's) itself. The `hlt` after the `out` is there so that a
  stub resumed by mistake stops the VM instead of running on.

- **The syscall entry** (`USER_CODE`, the code below). `syscall` jumps to LSTAR. Under VMX/SVM it enters
  CPL 0, under kvm_pvm it stays at CPL 3 (measurements.md §7): `slow` serves both, `out` to the VMM then
  `sysretq`, which the VMM skips on kvm_pvm by setting RIP itself. Where `syscall` stays at CPL 3, LSTAR can
  point at `entry` instead, which serves two calls without leaving the guest:

  * `read` of an fd whose table entry (`FdEntry`) has a window: copy from the file's pages, mapped read-only
    into the guest, and advance the offset kept in the entry;
  * `write` of at most 4 KiB to an fd marked for batching: append a record to the batch, which the VMM
    writes out at the next exit.

  Everything else, or a miss, falls through to `slow` with the registers as the program left them. The stub
  runs at CPL 3 in the program's own address space, so the program could corrupt the table; that can only
  make its own reads wrong (all it can reach is its own memory), and the VMM treats what it reads back from
  the table as untrusted. It never touches the program's stack (the red zone is the program's): it restores
  RFLAGS from R11 with a `popfq` on a stack slot of its own.

`ENTRY_CODE` in outline (offsets from the start of the user code page; the data labels at +0x1000 and
+0x2000 are the `USER_DATA` and `BATCH` pages). Its full GNU as source is in
`tests/unit/test_process_system.py`, which assembles it and compares the bytes and labels::

    entry:      cmpq $0, %rax ; je fast_read                       # read
                cmpq $1, %rax ; je fast_write                      # write
    slow:       outb %al, $0xd0 ; sysretq
    fast_read:  cmpq $64, %rdi ; jae slow
                movq %rcx, SAVE_RCX(%rip) ; movq %rsi, SAVE_RSI(%rip) ; movq %rdi, SAVE_RDI(%rip)
                movq %rdi, %rax ; shlq $5, %rax ; leaq TABLE(%rip), %rcx ; addq %rax, %rcx   # rcx = &table[fd]
                testq $1, 24(%rcx) ; jz restore_slow_read                                   # no window
                movq 16(%rcx), %rax ; movq 8(%rcx), %rsi ; subq %rax, %rsi                  # size - offset
                jbe restore_slow_read                                                        # at or past the end
                cmpq %rdx, %rsi ; cmovaq %rdx, %rsi                                          # n = min(count, left)
                addq %rsi, 16(%rcx) ; addq (%rcx), %rax                                      # offset += n; src
                movq %rsi, %rcx ; movq SAVE_RSI(%rip), %rdi ; movq %rax, %rsi ; movq %rcx, %rax
    read_copy:  rep movsb                                           # may fault on the program's buffer
    read_done:  movq SAVE_RSI(%rip), %rsi ; movq SAVE_RDI(%rip), %rdi ; movq SAVE_RCX(%rip), %rcx
    to_user:    movq %rsp, SAVE_RSP(%rip) ; leaq FLAGS_SLOT(%rip), %rsp ; movq %r11, (%rsp) ; popfq
                movq SAVE_RSP(%rip), %rsp ; jmp *%rcx
    restore_slow_read:
                movq SAVE_RSI(%rip), %rsi ; movq SAVE_RDI(%rip), %rdi ; movq SAVE_RCX(%rip), %rcx
                xorl %eax, %eax ; jmp slow
    fast_write: cmpq $64, %rdi ; jae slow
                (save rcx, rsi, rdi; rcx = &table[fd] as above)
                testq $2, 24(%rcx) ; jz restore_slow_write                                  # not batched
                cmpq $4096, %rdx ; ja restore_slow_write
                leaq BATCH(%rip), %rcx ; leaq 15(%rdx), %rax ; andq $-8, %rax ; addq (%rcx), %rax
                cmpq 8(%rcx), %rax ; ja restore_slow_write                                  # batch full
                movq (%rcx), %rdi ; leaq 16+8(%rcx,%rdi), %rdi ; movq %rdx, %rcx
    write_copy: rep movsb                                           # may fault on the program's buffer
    write_done: leaq BATCH(%rip), %rcx ; movq (%rcx), %rdi ; movl %edx, 16+4(%rcx,%rdi)
                movq SAVE_RDI(%rip), %rsi ; movl %esi, 16(%rcx,%rdi)                        # record header
                leaq 15(%rdx), %rax ; andq $-8, %rax ; addq %rax, (%rcx)                    # commit
                movq %rdx, %rax ; (restore rsi, rdi, rcx) ; jmp to_user
    restore_slow_write:
                (restore rsi, rdi, rcx) ; movl $1, %eax ; jmp slow
"""

from __future__ import annotations

import struct

from isola.vmm.kvm import structs
from isola.vmm.process import layout
from isola.vmm.x86 import gdt

ENTRY_CODE = bytes.fromhex(
    "4883f800740f4883f8010f84b5000000e6d0480f074883ff4073f548890dde0f0000488935df0f000048893de00f0000"
    "4889f848c1e005488d0d021000004801c148f7411801000000745e488b4110488b71084829c676514839d6480f47f248"
    "0171104803014889f1488b3d980f00004889c64889c8f3a4488b35890f0000488b3d8a0f0000488b0d730f0000488925"
    "840f0000488d25850f00004c891c249d488b25710f0000ffe1488b35580f0000488b3d590f0000488b0d420f000031c0"
    "e94bffffff4883ff400f8341ffffff48890d2a0f00004889352b0f000048893d2c0f00004889f848c1e005488d0d4e0f"
    "00004801c148f7411802000000746f4881fa001000007766488d0df11e0000488d420f4883e0f8480301483b4108774e"
    "488b39488d7c39184889d1f3a4488d0dcc1e0000488b3989543914488b35ce0e000089743910488d420f4883e0f84801"
    "014889d0488b35ad0e0000488b3dae0e0000488b0d970e0000e91fffffff488b35930e0000488b3d940e0000488b0d7d"
    "0e0000b801000000e983feffff"
)
# Offsets of labels in ENTRY_CODE.
ENTRY = 0x00
SLOW = 0x10
SLOW_OUT_LENGTH = 2  # `outb %al, $0xd0` at SLOW; its `sysretq` follows
READ_COPY = 0x76
READ_DONE = 0x78
WRITE_COPY = 0x12B
WRITE_DONE = 0x12D

# The fast-path data page (`USER_DATA`): saved registers, then the fd table at +0x40.
SAVE_RCX = 0x00
SAVE_RSI = 0x08
SAVE_RDI = 0x10
FD_TABLE = 0x40
FD_ENTRY = struct.Struct("<QQQQ")  # window address, size, offset, flags
FAST_FDS = 64
FD_WINDOW = 1  # flags: reads are served from the window
FD_BATCH = 2  # flags: small writes go to the batch
BATCH_HEADER = struct.Struct("<QQ")  # used, capacity
BATCH_RECORD = struct.Struct("<II")  # fd, length; then the data, padded to 8 bytes
BATCH_MAX_WRITE = 4096

ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
EXCEPTION_STUB_SIZE = 8
VECTORS = 32

# Descriptor flags for gdt.descriptor(): access byte in bits 0-7, G/D-B/L/AVL in bits 12-15.
_KERNEL_CODE64 = 0xA09B
_KERNEL_DATA = 0xC093
_USER_CODE32 = 0xC0FB
_USER_DATA = 0xC0F3
_USER_CODE64 = 0xA0FB
_TSS_BUSY64 = 0x8B  # present, system, type 11: a busy 64-bit TSS (what TR must hold)
_TSS_IOPB = 0x68  # the I/O bitmap follows the 104-byte TSS
_IO_BITMAP_BYTES = 65536 // 8
TSS_LIMIT = _TSS_IOPB + _IO_BITMAP_BYTES  # the bitmap and the 0xff byte the CPU may read past it
_INTERRUPT_GATE = 0x8E  # present, DPL 0, 64-bit interrupt gate
_USER_GATE = 0xEE  # the same with DPL 3: `int3` (and `into`) may be used from user mode, as on Linux
_USER_VECTORS = frozenset({3, 4})


def exception_stubs() -> bytes:
    """`[push $0] ; out %al, $(0xe0 + v) ; hlt` for each vector, 8 bytes apart."""
    code = bytearray()
    for vector in range(VECTORS):
        stub = (b"\x90\x90" if vector in ERROR_CODE_VECTORS else b"\x6a\x00") + bytes(
            [0xE6, layout.EXCEPTION_PORT_BASE + vector, 0xF4]
        )
        code += stub.ljust(EXCEPTION_STUB_SIZE, b"\xcc")
    return bytes(code)


def gdt_entries(tss_base: int) -> list[int]:
    """Null, unused, kernel code/data, user code32/data/code64 (Linux's order, so sysret finds the user
    segments at STAR[63:48] + 8 and + 16), then the 16-byte TSS descriptor."""
    return [
        0,
        0,
        gdt.descriptor(_KERNEL_CODE64, 0, gdt.FLAT_LIMIT),
        gdt.descriptor(_KERNEL_DATA, 0, gdt.FLAT_LIMIT),
        gdt.descriptor(_USER_CODE32, 0, gdt.FLAT_LIMIT),
        gdt.descriptor(_USER_DATA, 0, gdt.FLAT_LIMIT),
        gdt.descriptor(_USER_CODE64, 0, gdt.FLAT_LIMIT),
        gdt.descriptor(_TSS_BUSY64, tss_base & 0xFFFF_FFFF, TSS_LIMIT),
        tss_base >> 32,
    ]


def tss(rsp0: int) -> bytes:
    """A 64-bit TSS with RSP0 and an I/O bitmap that lets CPL 3 reach only the syscall port (kvm_pvm's entry
    stub runs at CPL 3 and needs it; no other port is the program's business)."""
    head = bytearray(_TSS_IOPB)
    struct.pack_into("<Q", head, 4, rsp0)
    struct.pack_into("<H", head, 0x66, _TSS_IOPB)
    bitmap = bytearray(b"\xff" * _IO_BITMAP_BYTES)
    bitmap[layout.SYSCALL_PORT // 8] &= ~(1 << (layout.SYSCALL_PORT % 8)) & 0xFF
    return bytes(head + bitmap + b"\xff")


def idt(stubs_address: int) -> bytes:
    """32 interrupt gates into the exception stubs; vectors above 31 are not present (an `int $n` from the
    program is then a #GP, a SIGSEGV, as Linux gives for a vector it does not offer)."""
    out = bytearray()
    for vector in range(VECTORS):
        target = stubs_address + vector * EXCEPTION_STUB_SIZE
        kind = _USER_GATE if vector in _USER_VECTORS else _INTERRUPT_GATE
        out += struct.pack(
            "<HHBBHII", target & 0xFFFF, layout.KERNEL_CS, 0, kind, (target >> 16) & 0xFFFF, target >> 32, 0
        )
    return bytes(out)


def segment(entries: list[int], selector: int) -> structs.Segment:
    """KVM's view of a code or data selector of `gdt_entries`, with the RPL in the selector."""
    seg = gdt.segment(entries, selector & ~3)
    seg.selector = selector
    return seg


def task_register(base: int) -> structs.Segment:
    """TR for the TSS at `base` (a 16-byte descriptor, so the base may be above 4 GiB)."""
    return structs.Segment(
        base=base, limit=TSS_LIMIT, selector=layout.TSS_SELECTOR, type=0xB, present=1, dpl=0, db=0, s=0, l=0, g=0
    )
