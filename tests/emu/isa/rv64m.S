# RV64M: the low and high halves of products (signed, unsigned, mixed), division and remainder with
# their defined corner cases (division by zero, the most negative number divided by -1) and the *W forms.
        .include "check.inc"
        .option norvc
        START
# ---- mul / mulw ----
        TRR mul, 0, 0, 0
        TRR mul, 6, 2, 3
        TRR mul, 0xfffffffffffffffa, -2, 3
        TRR mul, 1, -1, -1
        TRR mul, 0x8000000000000000, 0x8000000000000000, 1
        TRR mul, 0, 0x8000000000000000, 2
        TRR mul, 0x8000000000000000, 0x8000000000000000, -1
        TRR mul, 0xfffffffe00000001, 0xffffffff, 0xffffffff
        TRR mul, 0x2236d88fe5618cf0, 0x123456789abcdef0, 0x0fedcba987654321
        TRR_D1 mul, 0x0000000100000000, 0x10000, 0x10000
        TRR_SAME mul, 1, 0x7fffffffffffffff
        TRR mulw, 6, 2, 3
        TRR mulw, 0xfffffffffffffffa, 0xfffffffe, 3
        TRR mulw, 0xffffffff80000000, 0x40000000, 2
        TRR mulw, 0, 0x80000000, 2
        TRR mulw, 1, 0xffffffff, 0xffffffff
        TRR mulw, 0xffffffffe5618cf0, 0x123456789abcdef0, 0x0fedcba987654321
        TRR mulw, 6, 0xaaaaaaaa00000002, 0x5555555500000003
# ---- mulh (signed x signed) ----
        TRR mulh, 0, 2, 3
        TRR mulh, 0xffffffffffffffff, -2, 3
        TRR mulh, 0, -1, -1
        TRR mulh, 0x4000000000000000, 0x8000000000000000, 0x8000000000000000
        TRR mulh, 0, 0x8000000000000000, -1
        TRR mulh, 0xffffffffffffffff, 0x8000000000000000, 1
        TRR mulh, 0x3fffffffffffffff, 0x7fffffffffffffff, 0x7fffffffffffffff
        TRR mulh, 0xc000000000000000, 0x7fffffffffffffff, 0x8000000000000000
        TRR mulh, 0x0121fa00ad77d742, 0x123456789abcdef0, 0x0fedcba987654321
        TRR mulh, 0xfffffffffffffffe, 0x8000000000000000, 4
        TRR_SAME mulh, 0x3fffffffffffffff, 0x8000000000000001
# ---- mulhu (unsigned x unsigned) ----
        TRR mulhu, 0, 2, 3
        TRR mulhu, 0xfffffffffffffffe, -1, -1
        TRR mulhu, 0x4000000000000000, 0x8000000000000000, 0x8000000000000000
        TRR mulhu, 1, 0x100000000, 0x100000000
        TRR mulhu, 1, -1, 2
        TRR mulhu, 2, -2, 3
        TRR mulhu, 0x0121fa00ad77d742, 0x123456789abcdef0, 0x0fedcba987654321
        TRR_D2 mulhu, 0x7ffffffffffffffe, 0xffffffffffffffff, 0x7fffffffffffffff
# ---- mulhsu (signed rs1 x unsigned rs2) ----
        TRR mulhsu, 0, 2, 3
        TRR mulhsu, 0xffffffffffffffff, -2, 3
        TRR mulhsu, 0xffffffffffffffff, -1, -1
        TRR mulhsu, 1, 2, -1
        TRR mulhsu, 0xc000000000000000, 0x8000000000000000, 0x8000000000000000
        TRR mulhsu, 0x8000000000000000, 0x8000000000000000, 0xffffffffffffffff
        TRR mulhsu, 0x3fffffffffffffff, 0x7fffffffffffffff, 0x8000000000000000
        TRR mulhsu, 0x0121fa00ad77d742, 0x123456789abcdef0, 0x0fedcba987654321
        TRR_SAME mulhsu, 0xffffffffffffffff, 0xffffffffffffffff
# ---- div / divu ----
        TRR div, 3, 7, 2
        TRR div, 0xfffffffffffffffd, -7, 2
        TRR div, 0xfffffffffffffffd, 7, -2
        TRR div, 3, -7, -2
        TRR div, 0, 1, 2
        TRR div, 0, -1, 2
        TRR div, 0xffffffffffffffff, 5, 0
        TRR div, 0xffffffffffffffff, -5, 0
        TRR div, 0xffffffffffffffff, 0, 0
        TRR div, 0x8000000000000000, 0x8000000000000000, -1
        TRR div, 0x8000000000000000, 0x8000000000000000, 1
        TRR div, 0xc000000000000000, 0x8000000000000000, 2
        TRR div, 0x0000000000000001, 0x8000000000000000, 0x8000000000000000
        TRR div, 0xffffffffffffffff, 0x7fffffffffffffff, 0x8000000000000001
        TRR div, 0x0000000000000012, 0x123456789abcdef0, 0x00fedcba98765432
        TRR_D1 div, 0xfffffffffffffff9, 49, -7
        TRR_SAME div, 1, -3
        TRR divu, 3, 7, 2
        TRR divu, 0x7ffffffffffffffc, -7, 2
        TRR divu, 0, 7, -2
        TRR divu, 0xffffffffffffffff, 5, 0
        TRR divu, 0xffffffffffffffff, 0, 0
        TRR divu, 0, 0x8000000000000000, -1
        TRR divu, 1, -1, -1
        TRR divu, 0x8000000000000000, 0x8000000000000000, 1
        TRR divu, 0x0000000000000001, 0x123456789abcdef0, 0x0fedcba987654321
# ---- rem / remu: the sign follows the dividend ----
        TRR rem, 1, 7, 2
        TRR rem, 0xffffffffffffffff, -7, 2
        TRR rem, 1, 7, -2
        TRR rem, 0xffffffffffffffff, -7, -2
        TRR rem, 5, 5, 0
        TRR rem, 0xfffffffffffffffb, -5, 0
        TRR rem, 0x8000000000000000, 0x8000000000000000, 0
        TRR rem, 0, 0x8000000000000000, -1
        TRR rem, 0, 0x8000000000000000, 1
        TRR rem, 0xffffffffffffffff, 0x8000000000000000, 0x7fffffffffffffff
        TRR rem, 0x7fffffffffffffff, 0x7fffffffffffffff, 0x8000000000000000
        TRR_D2 rem, 0xfffffffffffffffe, -12, 5
        TRR_SAME rem, 0, 0x1234
        TRR remu, 1, 7, 2
        TRR remu, 1, -7, 2
        TRR remu, 7, 7, -2
        TRR remu, 5, 5, 0
        TRR remu, 0xfffffffffffffffb, -5, 0
        TRR remu, 0x8000000000000000, 0x8000000000000000, -1
        TRR remu, 0, -1, -1
        TRR remu, 0x7fffffffffffffff, -1, 0x8000000000000000
# ---- divw / divuw / remw / remuw: 32-bit operands, sign-extended 32-bit results ----
        TRR divw, 3, 7, 2
        TRR divw, 0xfffffffffffffffd, 0xfffffff9, 2
        TRR divw, 3, 0x1234567800000007, 0xabcdef0000000002
        TRR divw, 0xffffffffffffffff, 5, 0
        TRR divw, 0xffffffffffffffff, 5, 0x100000000
        TRR divw, 0xffffffff80000000, 0x80000000, 0xffffffff
        TRR divw, 0xffffffff80000000, 0x80000000, -1
        TRR divw, 0xffffffffc0000000, 0x80000000, 2
        TRR divw, 0x0000000040000000, 0x80000000, 0xfffffffe
        TRR divuw, 3, 7, 2
        TRR divuw, 0x000000007ffffffc, 0xfffffff9, 2
        TRR divuw, 0xffffffff80000000, 0x80000000, 1
        TRR divuw, 0xffffffffffffffff, 0xffffffff, 1
        TRR divuw, 0xffffffffffffffff, 5, 0
        TRR divuw, 0xffffffffffffffff, 5, 0xffffffff00000000
        TRR divuw, 1, 0xffffffff, 0xffffffff
        TRR divuw, 0, 0x80000000, 0xffffffff
        TRR divuw, 2, 0x1234567800000007, 0xabcdef0000000003
        TRR remw, 1, 7, 2
        TRR remw, 0xffffffffffffffff, 0xfffffff9, 2
        TRR remw, 1, 7, 0xfffffffe
        TRR remw, 5, 5, 0
        TRR remw, 0xfffffffffffffffb, 0x12345678fffffffb, 0
        TRR remw, 0xffffffff80000000, 0x80000000, 0
        TRR remw, 0, 0x80000000, 0xffffffff
        TRR remw, 0, 0x80000000, -1
        TRR remw, 0xffffffffffffffff, 0x80000000, 0x7fffffff
        TRR remuw, 1, 7, 2
        TRR remuw, 1, 0xfffffff9, 2
        TRR remuw, 5, 5, 0
        TRR remuw, 0xfffffffffffffffb, 0x12345678fffffffb, 0
        TRR remuw, 0xffffffff80000000, 0x80000000, 0
        TRR remuw, 0x000000007fffffff, 0xffffffff, 0x80000000
        TRR remuw, 0xffffffff80000000, 0x80000000, 0xffffffff
        TRR remuw, 0, 0xffffffff, 0xffffffff
        TRR remuw, 1, 0x1234567800000007, 0xabcdef0000000003
# ---- x0 ----
        li      a1, 7
        li      a2, 3
        mul     zero, a1, a2
        div     zero, a1, zero
        CHECK   zero, 0
        div     a0, a1, zero
        CHECK   a0, -1
        rem     a0, a1, zero
        CHECK   a0, 7
        mulh    a0, zero, a1
        CHECK   a0, 0
        DONE
