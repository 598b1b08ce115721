# RVC: every compressed instruction of RV64GC (but c.ebreak, which traps: see test_isa.py), written with
# explicit c. mnemonics: immediates at the ends of their ranges, sign extension, the x8-x15 register
# subset, sp-relative forms, and the compressed jumps and branches (c.jalr links pc + 2).
        .include "check.inc"
        START
        la      sp, frame               # sp-relative forms work on this frame
# ---- constants and immediates ----
        c.li    a0, 31
        CHECK   a0, 31
        c.li    a0, -32
        CHECK   a0, -32
        c.li    s1, 0
        CHECK   s1, 0
        c.lui   a0, 1
        CHECK   a0, 0x1000
        c.lui   a0, 31
        CHECK   a0, 0x1f000
        c.lui   a0, 0xfffe0
        CHECK   a0, 0xfffffffffffe0000
        c.lui   t1, 0xfffff
        CHECK   t1, 0xfffffffffffff000
        li      a0, 10
        c.addi  a0, 31
        CHECK   a0, 41
        c.addi  a0, -32
        CHECK   a0, 9
        li      a0, -1
        c.addi  a0, 1
        CHECK   a0, 0
        li      a0, 0x7fffffff
        c.addiw a0, 1
        CHECK   a0, 0xffffffff80000000
        li      a0, 0x123456789
        c.addiw a0, 0                   # sext.w
        CHECK   a0, 0x23456789
        li      a0, 0xffffffff
        c.addiw a0, -32
        CHECK   a0, 0xffffffffffffffdf
        c.nop
        mv      a5, sp
        c.addi16sp sp, 496
        sub     a0, sp, a5
        CHECK   a0, 496
        c.addi16sp sp, -512
        sub     a0, sp, a5
        CHECK   a0, -16
        c.addi16sp sp, 16
        CHECKR  sp, a5
        c.addi4spn a0, sp, 4
        sub     a0, a0, sp
        CHECK   a0, 4
        c.addi4spn s0, sp, 1020
        sub     a0, s0, sp
        CHECK   a0, 1020
# ---- shifts and logic ----
        li      a0, 0x8000000000000001
        c.slli  a0, 1
        CHECK   a0, 2
        li      a0, 1
        c.slli  a0, 63
        CHECK   a0, 0x8000000000000000
        li      t2, 0x12345
        c.slli  t2, 32
        CHECK   t2, 0x0001234500000000
        li      a0, 0x8000000000000000
        c.srli  a0, 63
        CHECK   a0, 1
        li      a1, 0x8000000000000000
        c.srli  a1, 32
        CHECK   a1, 0x80000000
        li      a0, 0x8000000000000000
        c.srai  a0, 63
        CHECK   a0, -1
        li      a2, 0x8000000000000000
        c.srai  a2, 1
        CHECK   a2, 0xc000000000000000
        li      a3, 0x7000000000000000
        c.srai  a3, 32
        CHECK   a3, 0x70000000
        li      a4, 0x123456789abcdef0
        c.andi  a4, -1
        CHECK   a4, 0x123456789abcdef0
        c.andi  a4, 31
        CHECK   a4, 0x10
        li      a4, 0x123456789abcdeff
        c.andi  a4, -32
        CHECK   a4, 0x123456789abcdee0
        li      a0, 0x00ff00ff00ff00ff
        li      a1, 0x0f0f0f0f0f0f0f0f
        mv      a2, a0
        c.and   a2, a1
        CHECK   a2, 0x000f000f000f000f
        mv      a2, a0
        c.or    a2, a1
        CHECK   a2, 0x0fff0fff0fff0fff
        mv      a2, a0
        c.xor   a2, a1
        CHECK   a2, 0x0ff00ff00ff00ff0
        mv      a2, a0
        c.sub   a2, a1
        CHECK   a2, 0xf1eff1eff1eff1f0
        li      s0, 0x7fffffff
        li      s1, 1
        c.addw  s0, s1
        CHECK   s0, 0xffffffff80000000
        li      s0, 0x180000000
        li      s1, 1
        c.subw  s0, s1
        CHECK   s0, 0x7fffffff
        li      a5, 0x0000000100000000
        c.subw  a5, a5
        CHECK   a5, 0
        li      a0, 5
        li      t3, 0xfffffffffffffffe
        c.add   a0, t3
        CHECK   a0, 3
        c.add   t3, t3
        CHECK   t3, 0xfffffffffffffffc
        li      t4, 0x1234
        c.mv    a0, t4
        CHECK   a0, 0x1234
        c.mv    s2, a0
        CHECK   s2, 0x1234
# ---- loads and stores on x8-x15 (base register and data) ----
        la      a1, data
        c.lw    a0, 0(a1)
        CHECK   a0, 0xffffffff89abcdef
        c.lw    a0, 124(a1)
        CHECK   a0, 0x7eadbeef
        c.ld    a0, 0(a1)
        CHECK   a0, 0x0123456789abcdef
        c.ld    a0, 248(a1)
        CHECK   a0, 0xfedcba9876543210
        li      a2, 0x1111222233334444
        c.sd    a2, 8(a1)
        ld      a0, 8(a1)
        CHECKR  a0, a2
        c.sw    a2, 16(a1)
        ld      a0, 16(a1)
        CHECK   a0, 0x5555555533334444
        c.sw    a2, 124(a1)
        lwu     a0, 124(a1)
        CHECK   a0, 0x33334444
        c.sd    a2, 248(a1)
        ld      a0, 248(a1)
        CHECKR  a0, a2
        c.fld   fa0, 0(a1)
        CHECKF  fa0, 0x0123456789abcdef
        c.fsd   fa0, 240(a1)
        ld      a0, 240(a1)
        CHECK   a0, 0x0123456789abcdef
        c.fld   fs1, 8(a1)
        CHECKF  fs1, 0x1111222233334444
        c.lw    a1, 0(a1)               # rd == rs1
        CHECK   a1, 0xffffffff89abcdef
# ---- sp-relative loads and stores ----
        li      a0, 0x0102030405060708
        c.sdsp  a0, 0(sp)
        ld      a3, 0(sp)
        CHECKR  a3, a0
        c.sdsp  a0, 504(sp)
        ld      a3, 504(sp)
        CHECKR  a3, a0
        li      t0, 0x80000000
        c.swsp  t0, 252(sp)
        c.lwsp  a3, 252(sp)
        CHECK   a3, 0xffffffff80000000
        c.swsp  t0, 4(sp)
        c.ldsp  ra, 0(sp)
        CHECK   ra, 0x8000000005060708
        c.ldsp  a3, 504(sp)
        CHECKR  a3, a0
        c.lwsp  t6, 0(sp)
        CHECK   t6, 0x05060708
        fmv.d.x ft0, a0
        c.fsdsp ft0, 496(sp)
        ld      a3, 496(sp)
        CHECKR  a3, a0
        c.fldsp ft11, 496(sp)
        CHECKF  ft11, 0x0102030405060708
        c.fldsp fa7, 0(sp)
        CHECKF  fa7, 0x8000000005060708
# ---- jumps and branches ----
        li      a0, 0
        c.j     1f
        li      a0, 1
1:      CHECK   a0, 0
        li      s0, 0
        li      a0, 0
        c.beqz  s0, 1f
        li      a0, 1
1:      CHECK   a0, 0
        li      s0, 0x100000000         # only the whole register counts
        li      a0, 0
        c.beqz  s0, 1f
        li      a0, 1
1:      CHECK   a0, 1
        li      a0, 0
        c.bnez  s0, 1f
        li      a0, 1
1:      CHECK   a0, 0
        li      s0, 0
        li      a0, 0
        c.bnez  s0, 1f
        li      a0, 1
1:      CHECK   a0, 1
        li      a5, 5                   # backward c.bnez / c.j: a loop
        li      a0, 0
1:      c.addi  a0, 3
        c.addi  a5, -1
        c.bnez  a5, 1b
        CHECK   a0, 15
        li      a5, 3
        li      a0, 0
1:      c.beqz  a5, 2f
        c.addi  a0, 1
        c.addi  a5, -1
        c.j     1b
2:      CHECK   a0, 3
        la      t0, 1f
        li      a0, 0
        c.jr    t0
        li      a0, 1
1:      CHECK   a0, 0
        la      t0, cfunc
        li      a0, 0
        c.jalr  t0
2:      CHECK   a0, 0x66
        la      t1, 2b
        CHECKR  ra, t1                  # the link is the address of the next instruction: pc + 2
        la      ra, 1f                  # c.jalr with rs1 == ra: the target is the old ra
        c.jalr  ra
2:      j       1f
        .balign 4
1:      la      t1, 2b
        CHECKR  ra, t1
        DONE

cfunc:  c.li    a0, 0
        addi    a0, a0, 0x66
        c.jr    ra

        .data
        .balign 8
data:   .dword  0x0123456789abcdef
        .rept   14
        .dword  0x5555555555555555
        .endr
        .dword  0x7eadbeef55555555      # offset 120
        .rept   15
        .dword  0x5555555555555555
        .endr
        .dword  0xfedcba9876543210
        .balign 8
        .word   0
frame:  .zero   1024
