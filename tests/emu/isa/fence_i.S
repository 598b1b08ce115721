# Self-modifying code and FENCE.I: an instruction that has run is overwritten, FENCE.I makes the new one
# visible, and running it again shows the new behaviour; also code patching itself on the page (and in the
# block) that is running, compressed instructions, a hot loop, and code written into a data buffer.
        .include "check.inc"
        .option norvc

        .equ    ADDI_A0_ZERO, 0x00000513        # addi a0, zero, imm: imm goes in bits 31:20
        .equ    ADDI_A0_A0, 0x00050513          # addi a0, a0, imm
        .equ    RET, 0x00008067                 # jalr zero, 0(ra)
        .equ    C_LI_A0, 0x4501                 # c.li a0, imm: imm[4:0] in bits 6:2

        START
# ---- patch a function, call it again ----
        call    patchme
        CHECK   a0, 1
        la      t0, patchme
        li      t1, ADDI_A0_ZERO | (2 << 20)
        sw      t1, 0(t0)
        fence.i
        call    patchme
        CHECK   a0, 2
        li      s2, 0                   # ten versions of it in a row
        li      s3, 0
1:      la      t0, patchme
        slli    t1, s3, 20
        li      t2, ADDI_A0_ZERO
        or      t1, t1, t2
        sw      t1, 0(t0)
        fence.i
        call    patchme
        add     s2, s2, a0
        addi    s3, s3, 1
        li      t0, 10
        blt     s3, t0, 1b
        CHECK   s2, 45
# ---- code that patches itself, later in the same block and page ----
        call    selfpatch
        CHECK   a0, 7
        call    selfpatch               # the patched version runs from the start: same result
        CHECK   a0, 7
# ---- a compressed instruction patched with a halfword store ----
        call    cpatch
        CHECK   a0, 1
        la      t0, cpatch
        li      t1, C_LI_A0 | (5 << 2)
        sh      t1, 0(t0)
        fence.i
        call    cpatch
        CHECK   a0, 5
# ---- a hot loop (translated, maybe folded), then patched ----
        li      a1, 1000
        call    hotloop
        CHECK   a0, 1000
        la      t0, hotloop_step
        li      t1, ADDI_A0_A0 | (3 << 20)
        sw      t1, 0(t0)
        fence.i
        li      a1, 1000
        call    hotloop
        CHECK   a0, 3000
# ---- code generated into a buffer, run, regenerated, run again ----
        la      t0, jitbuf
        li      t1, ADDI_A0_A0 | (1 << 20)
        sw      t1, 0(t0)
        li      t1, RET
        sw      t1, 4(t0)
        fence.i
        li      a0, 10
        jalr    ra, 0(t0)
        CHECK   a0, 11
        la      t0, jitbuf
        li      t1, ADDI_A0_A0 | (100 << 20)
        sw      t1, 0(t0)
        fence.i
        li      a0, 10
        jalr    ra, 0(t0)
        CHECK   a0, 110
        la      t0, jitbuf              # a longer body, written over the old one
        li      t1, ADDI_A0_A0 | (-7 & 0xfff) << 20
        sw      t1, 0(t0)
        sw      t1, 4(t0)
        li      t1, RET
        sw      t1, 8(t0)
        fence.i
        li      a0, 10
        jalr    ra, 0(t0)
        CHECK   a0, -4
        DONE

# Writable code: a segment with RWX permissions (ld is told not to warn)
        .section .smc, "awx"
        .balign 4
patchme:
        li      a0, 1
        ret

selfpatch:
        la      t0, 1f
        li      t1, ADDI_A0_ZERO | (7 << 20)
        sw      t1, 0(t0)
        fence.i
1:      li      a0, 3
        ret

        .option push
        .option rvc
cpatch: c.li    a0, 1
        c.jr    ra
        .option pop

        .balign 4
hotloop:
        li      a0, 0
1:
hotloop_step:
        addi    a0, a0, 1
        addi    a1, a1, -1
        bnez    a1, 1b
        ret

        .balign 64
jitbuf: .fill   16, 4, 0
