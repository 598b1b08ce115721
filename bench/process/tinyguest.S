/*
 * A firmware-less 64 KiB x86 guest for QEMU's `-bios`, the peer of a process VM's `busybox true`:
 * from the reset vector to 64-bit long mode at CPL 0, one line on COM1, then out through isa-debug-exit.
 * A reconstruction of the tiny guest of the research notes (measurements.md, 2b) without its work loops.
 *
 *   gcc -nostdlib -static -Wl,--oformat=binary -Wl,-Ttext=0xf0000 -o tiny.bin tinyguest.S
 *   qemu-system-x86_64 -M microvm -accel kvm -cpu host,-arch-capabilities -m 64 -display none -nodefaults \
 *       -no-user-config -serial stdio -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 -bios tiny.bin
 *
 * The image is linked at 0xf0000, its alias below 1 MiB, so that a 2 MiB identity page maps the 64-bit code.
 * QEMU exits with status (EXIT_VALUE << 1) | 1 = 1.
 */
#define COM1 0x3f8
#define DEBUG_EXIT 0xf4
#define EXIT_VALUE 0
#define PML4 0x1000
#define PDPT 0x2000
#define PD 0x3000

        .code16
        .text
        .globl _start
_start:
start16:
        cli
        lgdtl %cs:(gdt_ptr - 0xf0000)
        movl %cr0, %eax
        orl $1, %eax                    /* PE */
        movl %eax, %cr0
        ljmpl $0x08, $start32

        .code32
start32:
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        /* Identity-map the first 2 MiB (RAM starts zeroed, so only the low halves are written). */
        movl $(PDPT | 0x3), PML4
        movl $(PD | 0x3), PDPT
        movl $0xe3, PD                  /* present, writable, accessed, dirty, 2 MiB */
        movl $PML4, %eax
        movl %eax, %cr3
        movl %cr4, %eax
        orl $0x20, %eax                 /* PAE */
        movl %eax, %cr4
        movl $0xc0000080, %ecx          /* EFER.LME */
        rdmsr
        orl $0x100, %eax
        wrmsr
        movl %cr0, %eax
        orl $0x80000000, %eax           /* PG */
        movl %eax, %cr0
        ljmpl $0x18, $start64

        .code64
start64:
        leaq message(%rip), %rsi
        movw $COM1, %dx
1:      lodsb
        testb %al, %al
        jz 2f
        outb %al, %dx
        jmp 1b
2:      movb $EXIT_VALUE, %al
        outb %al, $DEBUG_EXIT
3:      hlt
        jmp 3b

message:
        .asciz "TINY-GUEST-OK\n"

        .balign 8
gdt:
        .quad 0
        .quad 0x00cf9b000000ffff        /* 0x08: 32-bit code, accessed */
        .quad 0x00cf93000000ffff        /* 0x10: data, accessed */
        .quad 0x00af9b000000ffff        /* 0x18: 64-bit code, accessed */
gdt_end:
gdt_ptr:
        .word gdt_end - gdt - 1
        .long gdt

        /* The reset vector: CS base 0xffff0000, IP 0xfff0. */
        .code16
        .org 0xfff0
        jmp start16
        .org 0x10000
