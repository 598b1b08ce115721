# RV64I loads and stores: every width, sign and zero extension, immediate offsets at both ends of their
# range, misaligned accesses (within a doubleword, across doublewords and across a page boundary), x0 and
# aliasing of the base register.
        .include "check.inc"
        .option norvc

# a0 = load \op at \label + \off, addressed as \label + \off - \disp + \disp
        .macro TLD op, res, label, off, disp=0
        la      a1, \label + \off - \disp
        \op     a0, \disp(a1)
        CHECK   a0, \res
        .endm

# fill the two doublewords at \label with all ones
        .macro ONES label
        la      a1, \label
        li      a2, -1
        sd      a2, 0(a1)
        sd      a2, 8(a1)
        .endm

# store \val with \op at \label + \off, then check both doublewords at \label
        .macro TST op, val, label, off, res0, res1, disp=0
        ONES    \label
        la      a1, \label + \off - \disp
        li      a2, \val
        \op     a2, \disp(a1)
        la      a1, \label
        ld      a0, 0(a1)
        CHECK   a0, \res0
        ld      a0, 8(a1)
        CHECK   a0, \res1
        .endm

        START
# ---- aligned loads ----
        TLD lb,  0x0000000000000012, src, 0
        TLD lb,  0xfffffffffffffff0, src, 7
        TLD lbu, 0x00000000000000f0, src, 7
        TLD lb,  0xffffffffffffff80, src, 16
        TLD lbu, 0x0000000000000080, src, 16
        TLD lb,  0x000000000000007f, src, 24
        TLD lh,  0x0000000000003412, src, 0
        TLD lh,  0xfffffffffffff0de, src, 6
        TLD lhu, 0x000000000000f0de, src, 6
        TLD lh,  0xffffffffffff8080, src, 16
        TLD lh,  0xffffffffffff8000, src, 18
        TLD lhu, 0x0000000000008000, src, 18
        TLD lh,  0x0000000000007f7f, src, 24
        TLD lh,  0x0000000000007fff, src, 26
        TLD lw,  0x0000000078563412, src, 0
        TLD lw,  0xfffffffff0debc9a, src, 4
        TLD lwu, 0x00000000f0debc9a, src, 4
        TLD lw,  0xffffffff80008080, src, 16
        TLD lw,  0xffffffff80000000, src, 20
        TLD lwu, 0x0000000080000000, src, 20
        TLD lw,  0x000000007fffffff, src, 28
        TLD lwu, 0x000000007fffffff, src, 28
        TLD ld,  0xf0debc9a78563412, src, 0
        TLD ld,  0x0123456789abcdef, src, 8
        TLD ld,  0x8000000080008080, src, 16
# ---- offsets: the extremes of the 12-bit immediate ----
        TLD ld,  0xf0debc9a78563412, src, 0, -2048
        TLD ld,  0x0123456789abcdef, src, 8, 2047
        TLD lw,  0xfffffffff0debc9a, src, 4, -1
        TLD lbu, 0x00000000000000ef, src, 8, 2047
        TLD lh,  0xffffffffffff8080, src, 16, -2048
# ---- misaligned loads ----
        TLD lh,  0x0000000000005634, src, 1
        TLD lh,  0xffffffffffffeff0, src, 7
        TLD lhu, 0x000000000000eff0, src, 7
        TLD lw,  0xffffffff9a785634, src, 1
        TLD lw,  0xffffffffdebc9a78, src, 3
        TLD lwu, 0x00000000eff0debc, src, 5
        TLD lw,  0xffffffffcdeff0de, src, 6
        TLD ld,  0xeff0debc9a785634, src, 1
        TLD ld,  0xabcdeff0debc9a78, src, 3
        TLD ld,  0x23456789abcdeff0, src, 7
        TLD ld,  0x80800123456789ab, src, 10, 2047
        TLD ld,  0xddeeff0011223344, cross, 4
        TLD lw,  0x0000000000112233, cross, 5
        TLD lwu, 0x00000000eeff0011, cross, 7
        TLD lh,  0x0000000000000011, cross, 7
        TLD lhu, 0x000000000000ff00, cross, 8
# ---- rd == rs1, rd == x0 ----
        la      a0, src
        ld      a0, 0(a0)
        CHECK   a0, 0xf0debc9a78563412
        la      a0, src + 8
        lw      a0, -4(a0)
        CHECK   a0, 0xfffffffff0debc9a
        la      a1, src
        lw      zero, 0(a1)
        ld      zero, 3(a1)
        CHECK   zero, 0
# ---- stores of every width ----
        TST sb, 0x123, dst, 3, 0xffffffff23ffffff, 0xffffffffffffffff
        TST sb, 0x80, dst, 0, 0xffffffffffffff80, 0xffffffffffffffff
        TST sb, 0, dst, 15, 0xffffffffffffffff, 0x00ffffffffffffff
        TST sh, 0x12345, dst, 0, 0xffffffffffff2345, 0xffffffffffffffff
        TST sh, 0, dst, 14, 0xffffffffffffffff, 0x0000ffffffffffff
        TST sw, 0x123456789, dst, 4, 0x23456789ffffffff, 0xffffffffffffffff
        TST sw, 0, dst, 8, 0xffffffffffffffff, 0xffffffff00000000
        TST sd, 0x0102030405060708, dst, 8, 0xffffffffffffffff, 0x0102030405060708
        TST sd, 0, dst, 0, 0, 0xffffffffffffffff
        TST sd, 0x1111222233334444, dst, 0, 0x1111222233334444, 0xffffffffffffffff, 2047
        TST sw, 0x55667788, dst, 12, 0xffffffffffffffff, 0x55667788ffffffff, -2048
        TST sb, 0x5a, dst, 9, 0xffffffffffffffff, 0xffffffffffff5aff, -1
# ---- misaligned stores ----
        TST sh, 0xabcd, dst, 7, 0xcdffffffffffffff, 0xffffffffffffffab
        TST sh, 0xabcd, dst, 1, 0xffffffffffabcdff, 0xffffffffffffffff
        TST sw, 0x11223344, dst, 5, 0x223344ffffffffff, 0xffffffffffffff11
        TST sw, 0x11223344, dst, 2, 0xffff11223344ffff, 0xffffffffffffffff
        TST sd, 0x0102030405060708, dst, 3, 0x0405060708ffffff, 0xffffffffff010203
        TST sd, 0x0102030405060708, dst, 7, 0x08ffffffffffffff, 0xff01020304050607
        TST sd, 0x0102030405060708, dst, 1, 0x02030405060708ff, 0xffffffffffffff01
# ---- a store that straddles a page boundary ----
        la      a1, cross
        li      a2, 0x0123456789abcdef
        sd      a2, 5(a1)
        ld      a0, 0(a1)
        CHECK   a0, 0xabcdef4455667788
        ld      a0, 8(a1)
        CHECK   a0, 0x99aabb0123456789
        lw      a0, 6(a1)
        CHECK   a0, 0x000000006789abcd
# ---- store and load back in other widths ----
        la      a1, dst
        li      a2, 0x80000000
        sw      a2, 0(a1)
        lw      a0, 0(a1)
        CHECK   a0, 0xffffffff80000000
        lwu     a0, 0(a1)
        CHECK   a0, 0x0000000080000000
        lh      a0, 2(a1)
        CHECK   a0, 0xffffffffffff8000
        lbu     a0, 3(a1)
        CHECK   a0, 0x80
        sd      a1, 0(a1)               # rs2 == rs1: the address itself is stored
        ld      a0, 0(a1)
        CHECKR  a0, a1
        sd      zero, 0(a1)             # x0 stores zero
        ld      a0, 0(a1)
        CHECK   a0, 0
        DONE

        .data
        .balign 8
        .skip   2048                    # room for the negative displacements
src:    .dword  0xf0debc9a78563412
        .dword  0x0123456789abcdef
        .dword  0x8000000080008080
        .dword  0x7fffffff7fff7f7f
        .skip   2048
dst:    .dword  0, 0
        .skip   2048
        .balign 4096
        .skip   4096 - 8
cross:  .dword  0x1122334455667788      # the last doubleword of a page
        .dword  0x99aabbccddeeff00      # the first of the next
