# Zicsr on the user-level CSRs: fflags, frm and fcsr through csrrw/csrrs/csrrc and their immediate forms
# (and the assembler's aliases), field widths and the fcsr composition; the Zicntr counters cycle, time
# and instret move forward.
        .include "check.inc"
        .option norvc
        START
# ---- csrrw: returns the old value, writes the new one, masked to the field's width ----
        csrrw   zero, fcsr, zero
        li      a1, 0x1f
        csrrw   a0, fflags, a1
        CHECK   a0, 0
        csrrw   a0, fflags, zero
        CHECK   a0, 0x1f
        li      a1, 0x3f
        csrrw   zero, fflags, a1
        csrr    a0, fflags
        CHECK   a0, 0x1f
        csrr    a0, fcsr
        CHECK   a0, 0x1f
        li      a1, 3
        csrrw   a0, frm, a1
        CHECK   a0, 0
        csrr    a0, frm
        CHECK   a0, 3
        csrr    a0, fcsr
        CHECK   a0, 0x7f
        li      a1, 0xff
        csrrw   zero, frm, a1
        csrr    a0, frm
        CHECK   a0, 7
        li      a1, 0x1ab
        csrrw   a0, fcsr, a1
        CHECK   a0, 0xff
        csrr    a0, fcsr
        CHECK   a0, 0xab
        csrr    a0, frm
        CHECK   a0, 5
        csrr    a0, fflags
        CHECK   a0, 0x0b
        li      a0, 0x42                # rd == rs1: swaps
        csrrw   a0, fcsr, a0
        CHECK   a0, 0xab
        csrr    a0, fcsr
        CHECK   a0, 0x42
# ---- csrrs / csrrc ----
        li      a1, 0x05
        csrrs   a0, fflags, a1
        CHECK   a0, 0x02
        csrr    a0, fflags
        CHECK   a0, 0x07
        li      a1, 0x03
        csrrc   a0, fflags, a1
        CHECK   a0, 0x07
        csrr    a0, fflags
        CHECK   a0, 0x04
        csrr    a0, fcsr
        CHECK   a0, 0x44
        li      a1, 0x21
        csrrs   a0, fcsr, a1
        CHECK   a0, 0x44
        csrr    a0, fcsr
        CHECK   a0, 0x65
        li      a1, -1
        csrrc   a0, frm, a1
        CHECK   a0, 3
        csrr    a0, fcsr
        CHECK   a0, 0x05
        csrrs   a0, fflags, zero        # rs1 = x0: a pure read
        CHECK   a0, 0x05
        csrrc   a0, fflags, zero
        CHECK   a0, 0x05
        csrr    a0, fflags
        CHECK   a0, 0x05
# ---- immediate forms ----
        csrrwi  a0, fflags, 0x1a
        CHECK   a0, 0x05
        csrr    a0, fflags
        CHECK   a0, 0x1a
        csrrsi  a0, fflags, 0x05
        CHECK   a0, 0x1a
        csrr    a0, fflags
        CHECK   a0, 0x1f
        csrrci  a0, fflags, 0x11
        CHECK   a0, 0x1f
        csrr    a0, fflags
        CHECK   a0, 0x0e
        csrrsi  a0, fflags, 0           # uimm = 0: a pure read
        CHECK   a0, 0x0e
        csrrci  a0, fflags, 0
        CHECK   a0, 0x0e
        csrrwi  a0, frm, 4
        CHECK   a0, 0
        csrr    a0, fcsr
        CHECK   a0, 0x8e
        csrrsi  a0, frm, 3
        CHECK   a0, 4
        csrr    a0, frm
        CHECK   a0, 7
        csrrci  a0, frm, 6
        CHECK   a0, 7
        csrr    a0, frm
        CHECK   a0, 1
        csrrwi  a0, fcsr, 31
        CHECK   a0, 0x2e
        csrr    a0, fcsr
        CHECK   a0, 0x1f
        csrrci  zero, fcsr, 0x10
        csrr    a0, fcsr
        CHECK   a0, 0x0f
        csrrwi  zero, fcsr, 0
        csrr    a0, fcsr
        CHECK   a0, 0
# ---- the assembler's aliases ----
        li      a1, 0x13
        fsflags a0, a1
        CHECK   a0, 0
        frflags a0
        CHECK   a0, 0x13
        fsflagsi a0, 0x01
        CHECK   a0, 0x13
        frflags a0
        CHECK   a0, 0x01
        li      a1, 2
        fsrm    a0, a1
        CHECK   a0, 0
        frrm    a0
        CHECK   a0, 2
        fsrmi   a0, 3
        CHECK   a0, 2
        frrm    a0
        CHECK   a0, 3
        frcsr   a0
        CHECK   a0, 0x61
        li      a1, 0x9c
        fscsr   a0, a1
        CHECK   a0, 0x61
        frcsr   a0
        CHECK   a0, 0x9c
        fscsr   zero
        frcsr   a0
        CHECK   a0, 0
# ---- floating-point instructions set fflags, and only OR into them ----
        li      t0, 0x3f800000          # 1.0f
        fmv.w.x fa1, t0
        fmv.w.x fa2, zero
        fdiv.s  fa0, fa1, fa2           # divide by zero: DZ
        frflags a0
        CHECK   a0, 0x08
        fsqrt.s fa0, fa2                # exact: no flags, DZ stays
        frcsr   a0
        CHECK   a0, 0x08
        li      t0, 0x40400000          # 3.0f
        fmv.w.x fa2, t0
        fdiv.s  fa0, fa1, fa2           # inexact: NX joins DZ
        frflags a0
        CHECK   a0, 0x09
        fsrmi   1
        frcsr   a0
        CHECK   a0, 0x29
        csrw    fflags, zero
        frcsr   a0
        CHECK   a0, 0x20
        fsrmi   0
# ---- counters ----
        rdcycle a1
        rdtime  a2
        rdinstret a3
        li      t0, 2000
1:      addi    t0, t0, -1
        bnez    t0, 1b
        rdcycle a4
        rdtime  a5
        rdinstret a6
        CHECKB  bltu, a1, a4
        CHECKB  bltu, a2, a5
        CHECKB  bltu, a3, a6
        csrr    a1, cycle               # the same CSRs by number through csrrs
        csrr    a2, time
        csrr    a3, instret
        CHECKB  bgeu, a1, a4
        CHECKB  bgeu, a2, a5
        CHECKB  bgeu, a3, a6
        csrrs   a1, instret, zero
        rdinstret a2
        CHECKB  bltu, a1, a2
        DONE
