# RV64I OP and OP-IMM, including the *W forms: results, sign extension, shift amounts, x0 and aliasing.
        .include "check.inc"
        .option norvc
        START

# ---- add / sub ----
        TRR add, 0, 0, 0
        TRR add, 2, 1, 1
        TRR add, 0, -1, 1
        TRR add, 0x8000000000000000, 0x7fffffffffffffff, 1
        TRR add, 0x0000000080000000, 0x7fffffff, 1
        TRR add, 0x0000000100000000, 0xffffffff, 1
        TRR add, 0xfffffffffffffffe, 0x7fffffffffffffff, 0x7fffffffffffffff
        TRR add, 0, 0x8000000000000000, 0x8000000000000000
        TRR_D1 add, 0x123456789abcdef0 + 0x1111111111111111, 0x123456789abcdef0, 0x1111111111111111
        TRR_D2 add, 7, 3, 4
        TRR_SAME add, 0xfffffffffffffffe, -1
        TRR sub, 0, 0, 0
        TRR sub, 0xffffffffffffffff, 0, 1
        TRR sub, 0x7fffffffffffffff, 0x8000000000000000, 1
        TRR sub, 0x8000000000000001, 0, 0x7fffffffffffffff
        TRR sub, 0x00000000ffffffff, 0x100000000, 1
        TRR_D1 sub, 0xfffffffffffffffd, 1, 4
        TRR_D2 sub, 3, 4, 1
        TRR_SAME sub, 0, 0x5555aaaa5555aaaa
# ---- addw / subw: 32-bit result sign-extended, upper input bits ignored ----
        TRR addw, 0, 0, 0
        TRR addw, 0xffffffff80000000, 0x7fffffff, 1
        TRR addw, 0, 0xffffffff, 1
        TRR addw, 0x000000007fffffff, 0x80000000, 0xffffffff
        TRR addw, 3, 0x1234567800000001, 0xabcdef0100000002
        TRR addw, 0xffffffffffffffff, 0x00000000ffffffff, 0
        TRR_D1 addw, 0xfffffffffffffffe, 0xffffffff, 0xffffffff
        TRR_SAME addw, 0xfffffffffffffffe, 0x7fffffffffffffff
        TRR subw, 0xffffffffffffffff, 0, 1
        TRR subw, 0x000000007fffffff, 0x80000000, 1
        TRR subw, 0xffffffff80000000, 0x7fffffff, 0xffffffff
        TRR subw, 0, 0xaaaaaaaa00000005, 0x5555555500000005
        TRR_D2 subw, 0xffffffff80000001, 0, 0x7fffffff
# ---- addi / addiw ----
        TRI addi, 0, 0, 0
        TRI addi, 2047, 0, 2047
        TRI addi, 0xfffffffffffff800, 0, -2048
        TRI addi, 0x8000000000000000, 0x7fffffffffffffff, 1
        TRI addi, 0x7fffffffffffffff, 0x8000000000000000, -1
        TRI addi, 0x00000000800007fe, 0x7fffffff, 2047
        TRI_D1 addi, 0xffffffffffffffff, 0, -1
        TRI addiw, 0xffffffff80000000, 0x7fffffff, 1
        TRI addiw, 0x000000007fffffff, 0x80000000, -1
        TRI addiw, 0xffffffffffffffff, 0x12345678ffffffff, 0
        TRI addiw, 0x00000000000007ff, 0xffffffff00000000, 2047
        TRI addiw, 0xfffffffffffff800, 0, -2048
        TRI_D1 addiw, 0x0000000012345678, 0xabcdef0012345678, 0
# ---- slt / sltu / slti / sltiu ----
        TRR slt, 0, 0, 0
        TRR slt, 1, -1, 0
        TRR slt, 0, 0, -1
        TRR slt, 1, 0x8000000000000000, 0x7fffffffffffffff
        TRR slt, 0, 0x7fffffffffffffff, 0x8000000000000000
        TRR slt, 1, 0x8000000000000000, 0x8000000000000001
        TRR slt, 0, 5, 5
        TRR_SAME slt, 0, -7
        TRR sltu, 0, -1, 0
        TRR sltu, 1, 0, -1
        TRR sltu, 0, 0x8000000000000000, 0x7fffffffffffffff
        TRR sltu, 1, 0x7fffffffffffffff, 0x8000000000000000
        TRR sltu, 0, 5, 5
        TRR sltu, 1, 0xfffffffffffffffe, 0xffffffffffffffff
        TRR_D2 sltu, 1, 0x00000000ffffffff, 0x0000000100000000
        TRI slti, 1, -1, 0
        TRI slti, 0, 0, -1
        TRI slti, 1, 0x8000000000000000, -2048
        TRI slti, 0, 0x7fffffffffffffff, 2047
        TRI slti, 1, 2046, 2047
        TRI slti, 0, -2048, -2048
        TRI sltiu, 1, 0, 1
        TRI sltiu, 0, 1, 1
        TRI sltiu, 1, 0x8000000000000000, -1
        TRI sltiu, 0, 0xffffffffffffffff, -1
        TRI sltiu, 1, 0xfffffffffffff7ff, -2048
        TRI sltiu, 0, 0xfffffffffffff800, -2048
        TRI sltiu, 0, 0x800, 2047
        TRI_D1 sltiu, 1, 0x7fe, 2047
# ---- logic, with sign-extended immediates ----
        TRR xor, 0xffffffffffffffff, 0x5555555555555555, 0xaaaaaaaaaaaaaaaa
        TRR xor, 0x0f0f0f0f0f0f0f0f, 0xff00ff00ff00ff00, 0xf00ff00ff00ff00f
        TRR_SAME xor, 0, 0x123456789
        TRR or, 0xff0fff0fff0fff0f, 0xff00ff00ff00ff00, 0xf00ff00ff00ff00f
        TRR or, 0x8000000000000001, 0x8000000000000000, 1
        TRR and, 0xf000f000f000f000, 0xff00ff00ff00ff00, 0xf00ff00ff00ff00f
        TRR_D1 and, 0, 0x5555555555555555, 0xaaaaaaaaaaaaaaaa
        TRI xori, 0xedcba98765432100, 0x123456789abcdeff, -1
        TRI xori, 0x00000000000007ff, 0, 2047
        TRI xori, 0xfffffffffffff800, 0, -2048
        TRI xori, 0xf0f0f0f0f0f0f00f, 0x0f0f0f0f0f0f0f0f, -256
        TRI ori, 0xffffffffffffffff, 0x1234, -1
        TRI ori, 0xfffffffffffff801, 1, -2048
        TRI ori, 0x80000000000007ff, 0x8000000000000000, 2047
        TRI andi, 0x123456789abcdef0, 0x123456789abcdef0, -1
        TRI andi, 0x00000000000006f0, 0x123456789abcdef0, 2047
        TRI andi, 0x123456789abcd800, 0x123456789abcdef0, -2048
        TRI_D1 andi, 0, 0xfffffffffffff800, 0x7ff
# ---- shifts by register: only the low 6 bits (5 for *W) of rs2 count ----
        TRR sll, 0x0000000000000001, 1, 0
        TRR sll, 0x0000000080000000, 1, 31
        TRR sll, 0x0000000100000000, 1, 32
        TRR sll, 0x8000000000000000, 1, 63
        TRR sll, 0x0000000000000003, 3, 64
        TRR sll, 0x8000000000000000, 0xffffffffffffffff, 0xffffffffffffffff
        TRR sll, 0x23456789abcdef00, 0x123456789abcdef0, 4 + 0x1000
        TRR srl, 0x8000000000000000, 0x8000000000000000, 0
        TRR srl, 0x0000000100000000, 0x8000000000000000, 31
        TRR srl, 0x0000000080000000, 0x8000000000000000, 32
        TRR srl, 0x0000000000000001, 0x8000000000000000, 63
        TRR srl, 0x8000000000000000, 0x8000000000000000, 64
        TRR srl, 0x0000000000000001, 0xffffffffffffffff, -1
        TRR sra, 0x8000000000000000, 0x8000000000000000, 0
        TRR sra, 0xffffffff00000000, 0x8000000000000000, 31
        TRR sra, 0xffffffff80000000, 0x8000000000000000, 32
        TRR sra, 0xffffffffffffffff, 0x8000000000000000, 63
        TRR sra, 0x0000000000000000, 0x7fffffffffffffff, 63
        TRR sra, 0x000000003fffffff, 0x7fffffffffffffff, 33
        TRR sra, 0xfffffffffffffff8, 0xffffffffffffff80, 4 + 128
        TRR_D1 sra, 0xffffffffffffffff, -1, 17
        TRR_D2 sll, 0x40, 2, 5
        TRR_SAME sll, 24, 3
        TRR sllw, 0x0000000000000001, 1, 0
        TRR sllw, 0xffffffff80000000, 1, 31
        TRR sllw, 0x0000000000000001, 1, 32
        TRR sllw, 0xffffffff80000000, 1, 63
        TRR sllw, 0x0000000012345678, 0xffffffff12345678, 0
        TRR sllw, 0xffffffffabcdef00, 0xff1234567abcdef0, 4
        TRR srlw, 0xffffffff80000000, 0x80000000, 0
        TRR srlw, 0x0000000000000001, 0x80000000, 31
        TRR srlw, 0xffffffff80000000, 0x80000000, 32
        TRR srlw, 0x0000000040000000, 0xffffffff80000000, 1
        TRR srlw, 0x000000000fffffff, 0x12345678ffffffff, 4
        TRR srlw, 0x0000000000000001, 0xffffffffffffffff, 63
        TRR sraw, 0xffffffff80000000, 0x80000000, 0
        TRR sraw, 0xffffffffffffffff, 0x80000000, 31
        TRR sraw, 0xffffffff80000000, 0x80000000, 32
        TRR sraw, 0xffffffffc0000000, 0x80000000, 1
        TRR sraw, 0x0000000000ffffff, 0xffffffff7fffffff, 7
        TRR sraw, 0xfffffffffffffffe, 0x00000000fffffffc, 1
# ---- shifts by immediate ----
        TRI slli, 0x123456789abcdef0, 0x123456789abcdef0, 0
        TRI slli, 0x4d5e6f7800000000, 0x123456789abcdef0, 31
        TRI slli, 0x9abcdef000000000, 0x123456789abcdef0, 32
        TRI slli, 0x0000000000000000, 0x123456789abcdef0, 63
        TRI slli, 0x8000000000000000, 1, 63
        TRI srli, 0xfedcba9876543210, 0xfedcba9876543210, 0
        TRI srli, 0x00000001fdb97530, 0xfedcba9876543210, 31
        TRI srli, 0x00000000fedcba98, 0xfedcba9876543210, 32
        TRI srli, 0x0000000000000001, 0xfedcba9876543210, 63
        TRI srai, 0xfedcba9876543210, 0xfedcba9876543210, 0
        TRI srai, 0xfffffffffdb97530, 0xfedcba9876543210, 31
        TRI srai, 0xfffffffffedcba98, 0xfedcba9876543210, 32
        TRI srai, 0xffffffffffffffff, 0xfedcba9876543210, 63
        TRI srai, 0x0000000000000000, 0x7edcba9876543210, 63
        TRI srai, 0x000000007edcba98, 0x7edcba9876543210, 32
        TRI_D1 srai, 0xc000000000000000, 0x8000000000000000, 1
        TRI slliw, 0xffffffff9abcdef0, 0x123456789abcdef0, 0
        TRI slliw, 0x0000000000000000, 0x123456789abcdef0, 31
        TRI slliw, 0xffffffff80000000, 0x123456789abcdef1, 31
        TRI slliw, 0x000000003579bde0, 0x123456789abcdef0, 1
        TRI srliw, 0xffffffff9abcdef0, 0x123456789abcdef0, 0
        TRI srliw, 0x0000000000000001, 0x123456789abcdef0, 31
        TRI srliw, 0x000000004d5e6f78, 0x123456789abcdef0, 1
        TRI srliw, 0x0000000000000000, 0xffffffff00000000, 1
        TRI sraiw, 0xffffffff9abcdef0, 0x123456789abcdef0, 0
        TRI sraiw, 0xffffffffffffffff, 0x123456789abcdef0, 31
        TRI sraiw, 0xffffffffcd5e6f78, 0x123456789abcdef0, 1
        TRI sraiw, 0x0000000000000000, 0x7fffffff00000000, 31
        TRI sraiw, 0x000000003fffffff, 0x7fffffff, 1
        TRI_D1 sraiw, 0xfffffffffffffff0, 0x00000000ffffff00, 4
# ---- lui / auipc ----
        lui     a0, 0
        CHECK   a0, 0
        lui     a0, 1
        CHECK   a0, 0x1000
        lui     a0, 0x7ffff
        CHECK   a0, 0x000000007ffff000
        lui     a0, 0x80000
        CHECK   a0, 0xffffffff80000000
        lui     a0, 0xfffff
        CHECK   a0, 0xfffffffffffff000
        lui     a0, 0x12345
        addiw   a0, a0, 0x678
        CHECK   a0, 0x12345678
1:      auipc   a0, 0
        la      a1, 1b
        CHECKR  a0, a1
2:      auipc   a0, 1
        la      a1, 2b
        sub     a0, a0, a1
        CHECK   a0, 0x1000
3:      auipc   a0, 0x80000
        la      a1, 3b
        sub     a0, a0, a1
        CHECK   a0, 0xffffffff80000000
4:      auipc   a0, 0x7ffff
        la      a1, 4b
        sub     a0, a0, a1
        CHECK   a0, 0x7ffff000
# ---- x0: writes are discarded, reads are zero ----
        li      a1, 5
        add     zero, a1, a1
        CHECK   zero, 0
        addi    zero, zero, 1
        CHECK   zero, 0
        lui     zero, 0x12345
        CHECK   zero, 0
        add     a0, zero, a1
        CHECK   a0, 5
        sub     a0, zero, a1
        CHECK   a0, -5
        sltu    a0, zero, a1
        CHECK   a0, 1
        sll     a0, a1, zero
        CHECK   a0, 5
        sraiw   zero, a1, 3
        auipc   zero, 1
        CHECK   zero, 0
        DONE
