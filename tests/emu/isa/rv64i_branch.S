# RV64I control transfer: every branch taken and not taken (signed and unsigned edge values, rs1 == rs2),
# forward and backward; jal and jalr links and targets, including jalr clearing bit 0 and rd == rs1.
        .include "check.inc"
        .option norvc

# a0 = 2 if `op a1, a2` branches (forward), 1 if it falls through
        .macro TBR op, taken, a, b
        li      a1, \a
        li      a2, \b
        li      a0, 0
        \op     a1, a2, .Lt\@
        li      a0, 1
        j       .Le\@
.Lt\@:  li      a0, 2
.Le\@:  CHECK   a0, 1 + \taken
        .endm

# the same for a backward branch: the target sits before the branch
        .macro TBRB op, taken, a, b
        li      a1, \a
        li      a2, \b
        li      a0, 0
        j       .Lb\@
.Lt\@:  li      a0, 2
        j       .Le\@
.Lb\@:  \op     a1, a2, .Lt\@
        li      a0, 1
.Le\@:  CHECK   a0, 1 + \taken
        .endm

        START
# ---- beq / bne ----
        TBR beq, 1, 0, 0
        TBR beq, 0, 0, 1
        TBR beq, 1, -1, -1
        TBR beq, 0, 0x100000000, 0
        TBR beq, 0, 0x8000000000000000, 0
        TBR beq, 1, 0x8000000000000000, 0x8000000000000000
        TBR bne, 0, 0, 0
        TBR bne, 1, 0, 1
        TBR bne, 1, 0x100000000, 0
        TBR bne, 0, -1, -1
        TBR bne, 1, 0x7fffffffffffffff, 0xffffffffffffffff
        TBRB beq, 1, 5, 5
        TBRB beq, 0, 5, 6
        TBRB bne, 1, 5, 6
        TBRB bne, 0, 5, 5
# ---- blt / bge: signed ----
        TBR blt, 0, 0, 0
        TBR blt, 1, 0, 1
        TBR blt, 0, 1, 0
        TBR blt, 1, -1, 0
        TBR blt, 0, 0, -1
        TBR blt, 1, 0x8000000000000000, 0x7fffffffffffffff
        TBR blt, 0, 0x7fffffffffffffff, 0x8000000000000000
        TBR blt, 1, 0x8000000000000000, 0x8000000000000001
        TBR blt, 1, -2, -1
        TBR blt, 0, 0x80000000, 0x7fffffff
        TBR bge, 1, 0, 0
        TBR bge, 0, 0, 1
        TBR bge, 1, 1, 0
        TBR bge, 0, -1, 0
        TBR bge, 1, 0, -1
        TBR bge, 0, 0x8000000000000000, 0x7fffffffffffffff
        TBR bge, 1, 0x7fffffffffffffff, 0x8000000000000000
        TBR bge, 1, -1, -1
        TBR bge, 1, 0x8000000000000000, 0x8000000000000000
        TBRB blt, 1, -5, 3
        TBRB blt, 0, 3, -5
        TBRB bge, 1, 3, -5
        TBRB bge, 0, -5, 3
# ---- bltu / bgeu: unsigned ----
        TBR bltu, 0, 0, 0
        TBR bltu, 1, 0, 1
        TBR bltu, 0, -1, 0
        TBR bltu, 1, 0, -1
        TBR bltu, 0, 0x8000000000000000, 0x7fffffffffffffff
        TBR bltu, 1, 0x7fffffffffffffff, 0x8000000000000000
        TBR bltu, 1, 0xfffffffffffffffe, 0xffffffffffffffff
        TBR bltu, 1, 0xffffffff, 0x100000000
        TBR bgeu, 1, 0, 0
        TBR bgeu, 0, 0, 1
        TBR bgeu, 1, -1, 0
        TBR bgeu, 0, 0, -1
        TBR bgeu, 1, 0x8000000000000000, 0x7fffffffffffffff
        TBR bgeu, 0, 0x7fffffffffffffff, 0x8000000000000000
        TBR bgeu, 1, -1, -1
        TBRB bltu, 1, 3, -5
        TBRB bltu, 0, -5, 3
        TBRB bgeu, 1, -5, 3
        TBRB bgeu, 0, 3, -5
# ---- rs1 == rs2 and x0 operands ----
        li      a1, -3
        li      a0, 0
        blt     a1, a1, 1f
        bltu    a1, a1, 1f
        bne     a1, a1, 1f
        li      a0, 1
1:      CHECK   a0, 1
        li      a0, 0
        bge     a1, a1, 1f
        li      a0, 1
1:      CHECK   a0, 0
        li      a0, 0
        bgeu    a1, a1, 1f
        li      a0, 1
1:      CHECK   a0, 0
        li      a0, 0
        blt     a1, zero, 1f
        li      a0, 1
1:      CHECK   a0, 0
        li      a0, 0
        bltu    zero, a1, 1f
        li      a0, 1
1:      CHECK   a0, 0
        li      a0, 0
        bgeu    zero, a1, 1f
        li      a0, 1
1:      CHECK   a0, 1
# ---- loops: a backward branch to the start of its own block, short and long ----
        li      t0, 10
        li      a0, 0
1:      addi    a0, a0, 3
        addi    t0, t0, -1
        bnez    t0, 1b
        CHECK   a0, 30
        CHECK   t0, 0
        li      t0, 120000              # more iterations than one uninterrupted run of a folded loop
        li      a0, 0
        li      a1, 0
1:      add     a1, a1, t0
        addi    a0, a0, 1
        blt     a0, t0, 1b
        CHECK   a0, 120000
        CHECK   a1, 120000 * 120000
        li      a0, 0                   # a loop whose branch does not go back to its first instruction
        li      t0, 5
        j       2f
1:      addi    a0, a0, 1
2:      addi    t0, t0, -1
        bgez    t0, 1b
        CHECK   a0, 5
        li      a0, 0                   # nested loops
        li      t1, 7
1:      li      t2, 9
2:      addi    a0, a0, 1
        addi    t2, t2, -1
        bnez    t2, 2b
        addi    t1, t1, -1
        bnez    t1, 1b
        CHECK   a0, 63
# ---- jal ----
        jal     ra, 1f
2:      j       fail_jal
1:      la      a0, 2b
        CHECKR  ra, a0
        jal     t0, 1f
2:      j       fail_jal
1:      la      a0, 2b
        CHECKR  t0, a0
        li      a0, 0
        jal     zero, 1f
        li      a0, 1
1:      CHECK   a0, 0
        CHECK   zero, 0
        jal     a1, far_forward         # more than 4 KiB (a branch could not) and more than 64 KiB away
back_from_far:
        CHECK   a0, 0x5a
        la      a2, back_from_far
        CHECKR  a1, a2
# ---- jalr ----
        la      a1, 1f
        jalr    ra, 0(a1)
2:      j       fail_jal
1:      la      a0, 2b
        CHECKR  ra, a0
        la      a1, 1f - 100            # positive immediate
        jalr    ra, 100(a1)
        j       fail_jal
1:      la      a1, 1f + 2047           # negative immediate, the most negative
        jalr    zero, -2047(a1)
        j       fail_jal
1:      la      a1, 1f + 2048
        jalr    zero, -2048(a1)
        j       fail_jal
1:      la      a1, 1f
        addi    a1, a1, 1               # bit 0 of the target is cleared
        jalr    zero, 0(a1)
        j       fail_jal
1:      la      a1, 1f - 1              # ... also when it comes from the immediate
        jalr    zero, 2(a1)
        j       fail_jal
1:      nop
        la      a1, 1f
        jalr    a1, 0(a1)               # rd == rs1: the target is computed from the old value
2:      j       fail_jal
1:      la      a0, 2b
        CHECKR  a1, a0
        la      a1, 1f
        jalr    a1, 1(a1)               # ... with bit 0 set as well
2:      j       fail_jal
1:      la      a0, 2b
        CHECKR  a1, a0
        la      a0, func                # a call and a return
        li      a1, 0
        jalr    ra, 0(a0)
        CHECK   a1, 0x77
        jal     ra, func
        CHECK   a1, 0xee
        la      a0, half_aligned        # a target that is 2- but not 4-byte aligned (C is present)
        jalr    ra, 0(a0)
        CHECK   a1, 0x99
        DONE

fail_jal:
        li      a0, 999
        li      a1, 0
        j       check_fail

func:   addi    a1, a1, 0x77
        jalr    zero, 0(ra)

        .balign 4
        .2byte  0                       # never executed: pads so half_aligned is at 2 mod 4
half_aligned:
        li      a1, 0x99
        ret

        .skip   0x12000
far_forward:
        li      a0, 0x5a
        jalr    zero, 0(a1)
