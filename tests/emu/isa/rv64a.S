# RV64A: LR/SC success and failure, every AMO in both widths (old value returned, sign-extended for .W;
# the new memory value; the neighbouring word untouched), signed and unsigned min/max, aq/rl variants.
        .include "check.inc"
        .option norvc

# \op with memory doubleword \mem and register \val: rd gets \old, the doubleword becomes \new
        .macro TAMO op, mem, val, old, new, off=0
        la      a1, area
        li      a2, \mem
        sd      a2, 0(a1)
        li      a3, \val
        addi    a5, a1, \off
        \op     a0, a3, (a5)
        CHECK   a0, \old
        ld      a4, 0(a1)
        CHECK   a4, \new
        CHECK   a3, \val                # the source register is not written
        .endm

        START
# ---- .W: only the low word of the doubleword changes (the high word, 0x5a5a5a5a, is a witness) ----
        TAMO amoswap.w, 0x5a5a5a5a80000000, 0x123456789, 0xffffffff80000000, 0x5a5a5a5a23456789
        TAMO amoswap.w, 0x5a5a5a5a7fffffff, 0, 0x000000007fffffff, 0x5a5a5a5a00000000
        TAMO amoadd.w, 0x5a5a5a5a7fffffff, 1, 0x000000007fffffff, 0x5a5a5a5a80000000
        TAMO amoadd.w, 0x5a5a5a5affffffff, 1, 0xffffffffffffffff, 0x5a5a5a5a00000000
        TAMO amoadd.w, 0x5a5a5a5a00000010, 0xffffffff00000020, 0x0000000000000010, 0x5a5a5a5a00000030
        TAMO amoxor.w, 0x5a5a5a5a0f0f0f0f, 0xffffffffffffffff, 0x000000000f0f0f0f, 0x5a5a5a5af0f0f0f0
        TAMO amoand.w, 0x5a5a5a5af0f0f0f0, 0x00000000ff00ff00, 0xfffffffff0f0f0f0, 0x5a5a5a5af000f000
        TAMO amoor.w, 0x5a5a5a5a0000f0f0, 0xffffffff0f000000, 0x000000000000f0f0, 0x5a5a5a5a0f00f0f0
        TAMO amomin.w, 0x5a5a5a5a80000000, 1, 0xffffffff80000000, 0x5a5a5a5a80000000
        TAMO amomin.w, 0x5a5a5a5a00000001, 0x80000000, 0x0000000000000001, 0x5a5a5a5a80000000
        TAMO amomin.w, 0x5a5a5a5a00000003, 0xffffffff00000005, 0x0000000000000003, 0x5a5a5a5a00000003
        TAMO amomin.w, 0x5a5a5a5affffffff, 0, 0xffffffffffffffff, 0x5a5a5a5affffffff
        TAMO amomin.w, 0x5a5a5a5a00000007, 0x00000000fffffff9, 0x0000000000000007, 0x5a5a5a5afffffff9
        TAMO amomax.w, 0x5a5a5a5a80000000, 1, 0xffffffff80000000, 0x5a5a5a5a00000001
        TAMO amomax.w, 0x5a5a5a5affffffff, 0x7fffffff, 0xffffffffffffffff, 0x5a5a5a5a7fffffff
        TAMO amomax.w, 0x5a5a5a5a00000005, 0x7fffffff80000000, 0x0000000000000005, 0x5a5a5a5a00000005
        TAMO amominu.w, 0x5a5a5a5a80000000, 1, 0xffffffff80000000, 0x5a5a5a5a00000001
        TAMO amominu.w, 0x5a5a5a5affffffff, 0x7fffffff, 0xffffffffffffffff, 0x5a5a5a5a7fffffff
        TAMO amominu.w, 0x5a5a5a5a00000005, 0x0000000100000000, 0x0000000000000005, 0x5a5a5a5a00000000
        TAMO amomaxu.w, 0x5a5a5a5a80000000, 1, 0xffffffff80000000, 0x5a5a5a5a80000000
        TAMO amomaxu.w, 0x5a5a5a5a00000001, 0xfffffffe, 0x0000000000000001, 0x5a5a5a5afffffffe
        TAMO amomaxu.w, 0x5a5a5a5a00000005, 0xffffffff00000003, 0x0000000000000005, 0x5a5a5a5a00000005
# ---- .W on the high word of the doubleword ----
        TAMO amoadd.w, 0x7fffffff5a5a5a5a, 1, 0x000000007fffffff, 0x800000005a5a5a5a, 4
        TAMO amoswap.w, 0x800000005a5a5a5a, 0x11, 0xffffffff80000000, 0x000000115a5a5a5a, 4
        TAMO amomin.w, 0x000000015a5a5a5a, 0xffffffff, 0x0000000000000001, 0xffffffff5a5a5a5a, 4
# ---- .D ----
        TAMO amoswap.d, 0x8000000000000000, 0x0123456789abcdef, 0x8000000000000000, 0x0123456789abcdef
        TAMO amoadd.d, 0xffffffffffffffff, 2, 0xffffffffffffffff, 0x0000000000000001
        TAMO amoadd.d, 0x00000000ffffffff, 1, 0x00000000ffffffff, 0x0000000100000000
        TAMO amoxor.d, 0xff00ff00ff00ff00, 0x0ff00ff00ff00ff0, 0xff00ff00ff00ff00, 0xf0f0f0f0f0f0f0f0
        TAMO amoand.d, 0xff00ff00ff00ff00, 0x0ff00ff00ff00ff0, 0xff00ff00ff00ff00, 0x0f000f000f000f00
        TAMO amoor.d, 0xff00ff00ff00ff00, 0x0ff00ff00ff00ff0, 0xff00ff00ff00ff00, 0xfff0fff0fff0fff0
        TAMO amomin.d, 0x8000000000000000, 1, 0x8000000000000000, 0x8000000000000000
        TAMO amomin.d, 0x0000000000000001, 0x8000000000000000, 0x0000000000000001, 0x8000000000000000
        TAMO amomin.d, 0x00000000ffffffff, 0xffffffffffffffff, 0x00000000ffffffff, 0xffffffffffffffff
        TAMO amomax.d, 0x8000000000000000, 1, 0x8000000000000000, 0x0000000000000001
        TAMO amomax.d, 0x7fffffffffffffff, 0x8000000000000000, 0x7fffffffffffffff, 0x7fffffffffffffff
        TAMO amomax.d, 0xfffffffffffffffe, 0xffffffffffffffff, 0xfffffffffffffffe, 0xffffffffffffffff
        TAMO amominu.d, 0x8000000000000000, 1, 0x8000000000000000, 0x0000000000000001
        TAMO amominu.d, 0x7fffffffffffffff, 0x8000000000000000, 0x7fffffffffffffff, 0x7fffffffffffffff
        TAMO amomaxu.d, 0x8000000000000000, 1, 0x8000000000000000, 0x8000000000000000
        TAMO amomaxu.d, 0x00000000ffffffff, 0x0000000100000000, 0x00000000ffffffff, 0x0000000100000000
# ---- ordering bits change nothing on one hart ----
        TAMO amoadd.w.aq, 0x5a5a5a5a00000001, 2, 1, 0x5a5a5a5a00000003
        TAMO amoadd.w.rl, 0x5a5a5a5a00000001, 2, 1, 0x5a5a5a5a00000003
        TAMO amoadd.d.aqrl, 1, 2, 1, 3
        TAMO amomaxu.d.aq, 1, 2, 1, 2
# ---- rd == x0, rd == rs2 ----
        la      a1, area
        li      a2, 40
        sd      a2, 0(a1)
        li      a3, 2
        amoadd.d zero, a3, (a1)
        ld      a0, 0(a1)
        CHECK   a0, 42
        amoswap.d a3, a3, (a1)
        CHECK   a3, 42
        ld      a0, 0(a1)
        CHECK   a0, 2
        li      a3, -1
        amoadd.w a3, a3, (a1)
        CHECK   a3, 2
        ld      a0, 0(a1)
        CHECK   a0, 1
# ---- LR/SC ----
        la      a1, area
        li      a2, 0x5a5a5a5a80000000
        sd      a2, 0(a1)
        lr.w    a0, (a1)
        CHECK   a0, 0xffffffff80000000
        li      a3, 0x1234567876543210
        sc.w    a4, a3, (a1)
        CHECK   a4, 0                   # success
        ld      a0, 0(a1)
        CHECK   a0, 0x5a5a5a5a76543210  # only the low word is written
        li      a3, 0x11
        sc.w    a4, a3, (a1)            # the reservation is gone: fails, stores nothing
        CHECKB  bne, a4, zero
        ld      a0, 0(a1)
        CHECK   a0, 0x5a5a5a5a76543210
        lr.d    a0, (a1)
        CHECK   a0, 0x5a5a5a5a76543210
        li      a3, 0x8000000000000001
        sc.d    a4, a3, (a1)
        CHECK   a4, 0
        ld      a0, 0(a1)
        CHECK   a0, 0x8000000000000001
        sc.d    a4, a3, (a1)
        CHECKB  bne, a4, zero
        lr.d    a0, (a1)                # SC to another address than the reservation's: fails
        li      a3, 0x77
        sd      zero, 8(a1)
        addi    a5, a1, 8
        sc.d    a4, a3, (a5)
        CHECKB  bne, a4, zero
        ld      a0, 8(a1)
        CHECK   a0, 0
        lr.w.aqrl a0, (a1)              # aq/rl forms
        sc.w.rl a4, zero, (a1)
        CHECK   a4, 0
        lr.d.aq a0, (a1)
        CHECK   a0, 0x8000000000000000
        lr.d    a0, (a1)                # rd == rs2 on SC: rd gets the status, the old value is stored
        li      a3, 0x33
        sc.d    a3, a3, (a1)
        CHECK   a3, 0
        ld      a0, 0(a1)
        CHECK   a0, 0x33
        sd      zero, 0(a1)             # the usual atomic increment loop
        li      t1, 100
1:      lr.w    t0, (a1)
        addi    t0, t0, 3
        sc.w    t2, t0, (a1)
        bnez    t2, 1b
        addi    t1, t1, -1
        bnez    t1, 1b
        lw      a0, 0(a1)
        CHECK   a0, 300
        DONE

        .data
        .balign 16
area:   .dword  0, 0
