# RV64F: arithmetic in all five rounding modes, each both static and dynamic (through frm), with fflags
# after every operation; exact fused multiply-add; NaN boxing of inputs and results; canonical NaNs;
# fcvt rounding and saturation; fmin/fmax with NaNs and signed zeros; fclass; fmv; fsgnj*; compares.
#
# binary32 patterns: 1.0 3f800000  2.0 40000000  3.0 40400000  0.5 3f000000  1.5 3fc00000  2.5 40200000
# inf 7f800000  qNaN 7fc00000  sNaN 7f800001  max 7f7fffff  min normal 00800000  2^-24 33800000
        .include "check.inc"
        .option norvc
        START
        fscsr   zero
# ---- fadd ----
        F2R  s, fadd, 0x00, 0x3f800000, 0x40000000, 0x40400000
        F2R5 s, fadd, 0x01, 0x3f800000, 0x33800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800001, 0x3f800001
        F2R5 s, fadd, 0x01, 0xbf800000, 0xb3800000, 0xbf800000, 0xbf800000, 0xbf800001, 0xbf800000, 0xbf800001
        F2R5 s, fadd, 0x01, 0x3f800000, 0x33c00000, 0x3f800001, 0x3f800000, 0x3f800000, 0x3f800001, 0x3f800001
        F2R5 s, fadd, 0x01, 0x3f800001, 0x33800000, 0x3f800002, 0x3f800001, 0x3f800001, 0x3f800002, 0x3f800002
        F2R5 s, fadd, 0x05, 0x7f7fffff, 0x7f7fffff, 0x7f800000, 0x7f7fffff, 0x7f7fffff, 0x7f800000, 0x7f800000
        F2R5 s, fadd, 0x05, 0xff7fffff, 0xff7fffff, 0xff800000, 0xff7fffff, 0xff800000, 0xff7fffff, 0xff800000
        F2R5 s, fadd, 0x00, 0x3f800000, 0xbf800000, 0x00000000, 0x00000000, 0x80000000, 0x00000000, 0x00000000
        F2R5 s, fadd, 0x00, 0x00000000, 0x80000000, 0x00000000, 0x00000000, 0x80000000, 0x00000000, 0x00000000
        F2R  s, fadd, 0x00, 0x80000000, 0x80000000, 0x80000000
        F2R  s, fadd, 0x10, 0x7f800000, 0xff800000, 0x7fc00000
        F2R  s, fadd, 0x00, 0x7f800000, 0x3f800000, 0x7f800000
        F2R  s, fadd, 0x10, 0x7f800001, 0x3f800000, 0x7fc00000
        F2R  s, fadd, 0x00, 0x7fc12345, 0x3f800000, 0x7fc00000
        F2R  s, fadd, 0x00, 0xffc00000, 0x3f800000, 0x7fc00000
        F2R  s, fadd, 0x10, 0x7fc00000, 0xff800001, 0x7fc00000
        F2R  s, fadd, 0x00, 0x00000001, 0x00000001, 0x00000002
        F2R  s, fadd, 0x00, 0x00400000, 0x00400000, 0x00800000
# ---- fsub ----
        F2R  s, fsub, 0x00, 0x40400000, 0x3f800000, 0x40000000
        F2R5 s, fsub, 0x00, 0x3f800000, 0x3f800000, 0x00000000, 0x00000000, 0x80000000, 0x00000000, 0x00000000
        F2R5 s, fsub, 0x01, 0x3f800000, 0x33000000, 0x3f800000, 0x3f7fffff, 0x3f7fffff, 0x3f800000, 0x3f800000
        F2R  s, fsub, 0x10, 0x7f800000, 0x7f800000, 0x7fc00000
        F2R5 s, fsub, 0x00, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x80000000, 0x00000000, 0x00000000
        F2R  s, fsub, 0x00, 0x80000000, 0x00000000, 0x80000000
# ---- fmul ----
        F2R  s, fmul, 0x00, 0x40000000, 0x40400000, 0x40c00000
        F2R5 s, fmul, 0x05, 0x7f7fffff, 0x40000000, 0x7f800000, 0x7f7fffff, 0x7f7fffff, 0x7f800000, 0x7f800000
        F2R5 s, fmul, 0x05, 0x7f7fffff, 0xc0000000, 0xff800000, 0xff7fffff, 0xff800000, 0xff7fffff, 0xff800000
        F2R  s, fmul, 0x00, 0x00800000, 0x3f000000, 0x00400000
        F2R5 s, fmul, 0x03, 0x00800001, 0x3f000000, 0x00400000, 0x00400000, 0x00400000, 0x00400001, 0x00400001
        F2R5 s, fmul, 0x03, 0x00000001, 0x3f000000, 0x00000000, 0x00000000, 0x00000000, 0x00000001, 0x00000001
        F2R5 s, fmul, 0x03, 0x80000001, 0x3f000000, 0x80000000, 0x80000000, 0x80000001, 0x80000000, 0x80000001
        F2R  s, fmul, 0x10, 0x7f800000, 0x00000000, 0x7fc00000
        F2R  s, fmul, 0x00, 0x00000000, 0xbf800000, 0x80000000
        F2R  s, fmul, 0x00, 0xff800000, 0xff800000, 0x7f800000
# ---- fdiv ----
        F2R  s, fdiv, 0x00, 0x40c00000, 0x40000000, 0x40400000
        F2R  s, fdiv, 0x08, 0x3f800000, 0x00000000, 0x7f800000
        F2R  s, fdiv, 0x08, 0xbf800000, 0x00000000, 0xff800000
        F2R  s, fdiv, 0x08, 0x3f800000, 0x80000000, 0xff800000
        F2R  s, fdiv, 0x10, 0x00000000, 0x00000000, 0x7fc00000
        F2R  s, fdiv, 0x10, 0x7f800000, 0xff800000, 0x7fc00000
        F2R  s, fdiv, 0x00, 0x7f800000, 0x00000000, 0x7f800000
        F2R  s, fdiv, 0x00, 0x3f800000, 0x7f800000, 0x00000000
        F2R5 s, fdiv, 0x01, 0x3f800000, 0x40400000, 0x3eaaaaab, 0x3eaaaaaa, 0x3eaaaaaa, 0x3eaaaaab, 0x3eaaaaab
        F2R5 s, fdiv, 0x01, 0xbf800000, 0x40400000, 0xbeaaaaab, 0xbeaaaaaa, 0xbeaaaaab, 0xbeaaaaaa, 0xbeaaaaab
        F2R5 s, fdiv, 0x01, 0x40000000, 0x40400000, 0x3f2aaaab, 0x3f2aaaaa, 0x3f2aaaaa, 0x3f2aaaab, 0x3f2aaaab
        F2R5 s, fdiv, 0x05, 0x7f7fffff, 0x3f000000, 0x7f800000, 0x7f7fffff, 0x7f7fffff, 0x7f800000, 0x7f800000
# ---- fsqrt ----
        F1R  s, fsqrt, 0x00, 0x40800000, 0x40000000
        F1R5 s, fsqrt, 0x01, 0x40000000, 0x3fb504f3, 0x3fb504f3, 0x3fb504f3, 0x3fb504f4, 0x3fb504f3
        F1R  s, fsqrt, 0x10, 0xbf800000, 0x7fc00000
        F1R  s, fsqrt, 0x00, 0x80000000, 0x80000000
        F1R  s, fsqrt, 0x00, 0x7f800000, 0x7f800000
        F1R  s, fsqrt, 0x10, 0xff800000, 0x7fc00000
        F1R  s, fsqrt, 0x00, 0x7fc00000, 0x7fc00000
        F1R  s, fsqrt, 0x10, 0x7f800001, 0x7fc00000
# ---- fused multiply-add: one rounding ----
        F3R  s, fmadd,  0x00, 0x40000000, 0x40400000, 0x3f800000, 0x40e00000
        F3R  s, fmsub,  0x00, 0x40000000, 0x40400000, 0x3f800000, 0x40a00000
        F3R  s, fnmsub, 0x00, 0x40000000, 0x40400000, 0x3f800000, 0xc0a00000
        F3R  s, fnmadd, 0x00, 0x40000000, 0x40400000, 0x3f800000, 0xc0e00000
        F3R  s, fmadd,  0x00, 0x3f800800, 0x3f800800, 0xbf801000, 0x33800000
        F3R  s, fmsub,  0x00, 0x3f800800, 0x3f800800, 0x3f801000, 0x33800000
        F3R  s, fnmadd, 0x00, 0x3f800800, 0x3f800800, 0xbf801000, 0xb3800000
        F3R  s, fnmsub, 0x00, 0x3f800800, 0x3f800800, 0x3f801000, 0xb3800000
        F3R5 s, fmadd,  0x00, 0x3f800000, 0x3f800000, 0xbf800000, 0x00000000, 0x00000000, 0x80000000, 0x00000000, 0x00000000
        F3R5 s, fmadd,  0x01, 0x3f800000, 0x3f800000, 0x33800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800001, 0x3f800001
        F3R5 s, fnmadd, 0x01, 0x3f800000, 0x3f800000, 0x33800000, 0xbf800000, 0xbf800000, 0xbf800001, 0xbf800000, 0xbf800001
        F3R5 s, fmadd,  0x05, 0x7f7fffff, 0x40000000, 0x00000000, 0x7f800000, 0x7f7fffff, 0x7f7fffff, 0x7f800000, 0x7f800000
        F3R  s, fmadd,  0x10, 0x7f800000, 0x00000000, 0x7fc00000, 0x7fc00000
        F3R  s, fmadd,  0x10, 0x7f800000, 0x00000000, 0x3f800000, 0x7fc00000
        F3R  s, fmadd,  0x10, 0x7f800000, 0x3f800000, 0xff800000, 0x7fc00000
        F3R  s, fmadd,  0x10, 0x3f800000, 0x3f800000, 0x7f800001, 0x7fc00000
        F3R  s, fmadd,  0x00, 0x7fc00000, 0x3f800000, 0x3f800000, 0x7fc00000
# ---- fmin / fmax (IEEE 754-2019 minimumNumber / maximumNumber) ----
        F2 s, fmin, 0x00, 0x3f800000, 0x40000000, 0x3f800000
        F2 s, fmax, 0x00, 0x3f800000, 0x40000000, 0x40000000
        F2 s, fmin, 0x00, 0xbf800000, 0x3f800000, 0xbf800000
        F2 s, fmax, 0x00, 0xbf800000, 0xc0000000, 0xbf800000
        F2 s, fmin, 0x00, 0x80000000, 0x00000000, 0x80000000
        F2 s, fmin, 0x00, 0x00000000, 0x80000000, 0x80000000
        F2 s, fmax, 0x00, 0x80000000, 0x00000000, 0x00000000
        F2 s, fmax, 0x00, 0x00000000, 0x80000000, 0x00000000
        F2 s, fmin, 0x00, 0x7fc00000, 0x3f800000, 0x3f800000
        F2 s, fmin, 0x00, 0x3f800000, 0x7fc00000, 0x3f800000
        F2 s, fmax, 0x00, 0xff800000, 0x7fc00000, 0xff800000
        F2 s, fmin, 0x10, 0x7f800001, 0x3f800000, 0x3f800000
        F2 s, fmax, 0x10, 0x3f800000, 0x7f800001, 0x3f800000
        F2 s, fmin, 0x00, 0x7fc00000, 0x7fc00000, 0x7fc00000
        F2 s, fmax, 0x00, 0xffc12345, 0x7fc54321, 0x7fc00000
        F2 s, fmin, 0x10, 0x7f800001, 0x7fc00000, 0x7fc00000
        F2 s, fmin, 0x00, 0xff800000, 0x7f800000, 0xff800000
        F2 s, fmax, 0x00, 0xff800000, 0x7f800000, 0x7f800000
        F2 s, fmin, 0x00, 0x00000001, 0x80000001, 0x80000001
# ---- sign injection: never a flag, NaN payloads kept ----
        F2 s, fsgnj,  0x00, 0x3f800000, 0xc0000000, 0xbf800000
        F2 s, fsgnj,  0x00, 0xbf800000, 0x40000000, 0x3f800000
        F2 s, fsgnjn, 0x00, 0x3f800000, 0xc0000000, 0x3f800000
        F2 s, fsgnjn, 0x00, 0x3f800000, 0x40000000, 0xbf800000
        F2 s, fsgnjx, 0x00, 0xbf800000, 0xc0000000, 0x3f800000
        F2 s, fsgnjx, 0x00, 0xbf800000, 0x40000000, 0xbf800000
        F2 s, fsgnjx, 0x00, 0x3f800000, 0xc0000000, 0xbf800000
        F2 s, fsgnj,  0x00, 0x7fc12345, 0xbf800000, 0xffc12345
        F2 s, fsgnj,  0x00, 0x7f800001, 0x3f800000, 0x7f800001
        F2 s, fsgnjn, 0x00, 0xff800001, 0xff800000, 0x7f800001
        FSET s, fa1, 0xc0400000
        fneg.s  fa0, fa1
        CHECKS  fa0, 0x40400000
        fabs.s  fa0, fa1
        CHECKS  fa0, 0x40400000
        fmv.s   fa0, fa1
        CHECKS  fa0, 0xc0400000
        CHECKFLAGS 0
# ---- compares: feq is quiet, flt/fle signal on any NaN ----
        FCMP s, feq, 0x00, 0x3f800000, 0x3f800000, 1
        FCMP s, feq, 0x00, 0x3f800000, 0x40000000, 0
        FCMP s, feq, 0x00, 0x80000000, 0x00000000, 1
        FCMP s, feq, 0x00, 0x7fc00000, 0x3f800000, 0
        FCMP s, feq, 0x00, 0x7fc00000, 0x7fc00000, 0
        FCMP s, feq, 0x10, 0x7f800001, 0x3f800000, 0
        FCMP s, feq, 0x10, 0x3f800000, 0x7f800001, 0
        FCMP s, flt, 0x00, 0x3f800000, 0x40000000, 1
        FCMP s, flt, 0x00, 0x40000000, 0x3f800000, 0
        FCMP s, flt, 0x00, 0x3f800000, 0x3f800000, 0
        FCMP s, flt, 0x00, 0x80000000, 0x00000000, 0
        FCMP s, flt, 0x00, 0xff800000, 0x7f800000, 1
        FCMP s, flt, 0x00, 0xc0000000, 0xbf800000, 1
        FCMP s, flt, 0x00, 0x80000001, 0x00000001, 1
        FCMP s, flt, 0x10, 0x7fc00000, 0x3f800000, 0
        FCMP s, flt, 0x10, 0x3f800000, 0x7f800001, 0
        FCMP s, fle, 0x00, 0x3f800000, 0x3f800000, 1
        FCMP s, fle, 0x00, 0x00000000, 0x80000000, 1
        FCMP s, fle, 0x00, 0x80000000, 0x00000000, 1
        FCMP s, fle, 0x00, 0x40000000, 0x3f800000, 0
        FCMP s, fle, 0x00, 0xbf800000, 0xc0000000, 0
        FCMP s, fle, 0x10, 0x7fc00000, 0x7fc00000, 0
# ---- fclass ----
        FCLASS s, 0xff800000, 0x001
        FCLASS s, 0xbf800000, 0x002
        FCLASS s, 0x807fffff, 0x004
        FCLASS s, 0x80000000, 0x008
        FCLASS s, 0x00000000, 0x010
        FCLASS s, 0x00000001, 0x020
        FCLASS s, 0x7f7fffff, 0x040
        FCLASS s, 0x7f800000, 0x080
        FCLASS s, 0x7f800001, 0x100
        FCLASS s, 0x7fbfffff, 0x100
        FCLASS s, 0x7fc00000, 0x200
        FCLASS s, 0xffffffff, 0x200
# ---- fcvt to integers: rounding, and saturation with NV ----
        FTOI5 s, fcvt.w.s, 0x01, 0x3fc00000, 2, 1, 1, 2, 2
        FTOI5 s, fcvt.w.s, 0x01, 0x40200000, 2, 2, 2, 3, 3
        FTOI5 s, fcvt.w.s, 0x01, 0xbfc00000, -2, -1, -2, -1, -2
        FTOI5 s, fcvt.w.s, 0x01, 0xc0200000, -2, -2, -3, -2, -3
        FTOI5 s, fcvt.w.s, 0x01, 0x3f000000, 0, 0, 0, 1, 1
        FTOI5 s, fcvt.w.s, 0x01, 0xbf000000, 0, 0, -1, 0, -1
        FTOI  s, fcvt.w.s, 0x00, 0x4effffff, 0x7fffff80
        FTOI  s, fcvt.w.s, 0x00, 0xcf000000, 0xffffffff80000000
        FTOI  s, fcvt.w.s, 0x10, 0x4f000000, 0x7fffffff
        FTOI  s, fcvt.w.s, 0x10, 0x4f32d05e, 0x7fffffff
        FTOI  s, fcvt.w.s, 0x10, 0xcf32d05e, 0xffffffff80000000
        FTOI  s, fcvt.w.s, 0x10, 0x7f800000, 0x7fffffff
        FTOI  s, fcvt.w.s, 0x10, 0xff800000, 0xffffffff80000000
        FTOI  s, fcvt.w.s, 0x10, 0x7fc00000, 0x7fffffff
        FTOI  s, fcvt.w.s, 0x10, 0xffc00000, 0x7fffffff
        FTOI  s, fcvt.w.s, 0x10, 0x7f800001, 0x7fffffff
        FTOI  s, fcvt.w.s, 0x00, 0x80000000, 0
        FTOI5 s, fcvt.wu.s, 0x01, 0x3fc00000, 2, 1, 1, 2, 2
        FTOI  s, fcvt.wu.s, 0x00, 0x4f32d05e, 0xffffffffb2d05e00
        FTOI  s, fcvt.wu.s, 0x00, 0x4f7fffff, 0xffffffffffffff00
        FTOI  s, fcvt.wu.s, 0x10, 0x4f800000, 0xffffffffffffffff
        FTOI  s, fcvt.wu.s, 0x10, 0xbf800000, 0
        FTOI1 s, fcvt.wu.s, rne, 0x01, 0xbf000000, 0
        FTOI1 s, fcvt.wu.s, rtz, 0x01, 0xbf000000, 0
        FTOI1 s, fcvt.wu.s, rdn, 0x10, 0xbf000000, 0
        FTOI1 s, fcvt.wu.s, rup, 0x01, 0xbf000000, 0
        FTOI1 s, fcvt.wu.s, rmm, 0x10, 0xbf000000, 0
        FTOI1 s, fcvt.wu.s, rne, 0x01, 0xbe800000, 0
        FTOI1 s, fcvt.wu.s, rdn, 0x10, 0xbe800000, 0
        FTOI1 s, fcvt.wu.s, rmm, 0x01, 0xbe800000, 0
        FTOI  s, fcvt.wu.s, 0x10, 0x7fc00000, 0xffffffffffffffff
        FTOI  s, fcvt.wu.s, 0x10, 0x7f800000, 0xffffffffffffffff
        FTOI  s, fcvt.wu.s, 0x10, 0xff800000, 0
        FTOI5 s, fcvt.l.s, 0x01, 0xbfc00000, -2, -1, -2, -1, -2
        FTOI  s, fcvt.l.s, 0x00, 0x4f32d05e, 3000000000
        FTOI  s, fcvt.l.s, 0x00, 0xdf000000, 0x8000000000000000
        FTOI  s, fcvt.l.s, 0x00, 0x5effffff, 0x7fffff8000000000
        FTOI  s, fcvt.l.s, 0x10, 0x5f000000, 0x7fffffffffffffff
        FTOI  s, fcvt.l.s, 0x10, 0xff800000, 0x8000000000000000
        FTOI  s, fcvt.l.s, 0x10, 0x7fc00000, 0x7fffffffffffffff
        FTOI  s, fcvt.l.s, 0x10, 0xff800001, 0x7fffffffffffffff
        FTOI5 s, fcvt.lu.s, 0x01, 0x40200000, 2, 2, 2, 3, 3
        FTOI  s, fcvt.lu.s, 0x00, 0x5f000000, 0x8000000000000000
        FTOI  s, fcvt.lu.s, 0x00, 0x5f7fffff, 0xffffff0000000000
        FTOI  s, fcvt.lu.s, 0x10, 0x5f800000, 0xffffffffffffffff
        FTOI  s, fcvt.lu.s, 0x10, 0xbf800000, 0
        FTOI  s, fcvt.lu.s, 0x10, 0x7fc00000, 0xffffffffffffffff
        FTOI1 s, fcvt.lu.s, rne, 0x10, 0xbf666666, 0
        FTOI1 s, fcvt.lu.s, rtz, 0x01, 0xbf666666, 0
        FTOI1 s, fcvt.lu.s, rdn, 0x10, 0xbf666666, 0
        FTOI1 s, fcvt.lu.s, rup, 0x01, 0xbf666666, 0
        FTOI1 s, fcvt.lu.s, rmm, 0x10, 0xbf666666, 0
# ---- fcvt from integers ----
        ITOF  s, fcvt.s.w, 0x00, 1, 0x3f800000
        ITOF  s, fcvt.s.w, 0x00, -1, 0xbf800000
        ITOF  s, fcvt.s.w, 0x00, 0, 0x00000000
        ITOF  s, fcvt.s.w, 0x00, 0x1234567880000000, 0xcf000000
        ITOF  s, fcvt.s.w, 0x00, 0xffffffff00000003, 0x40400000
        ITOF5 s, fcvt.s.w, 0x01, 0x7fffffff, 0x4f000000, 0x4effffff, 0x4effffff, 0x4f000000, 0x4f000000
        ITOF5 s, fcvt.s.w, 0x01, 0x1000001, 0x4b800000, 0x4b800000, 0x4b800000, 0x4b800001, 0x4b800001
        ITOF5 s, fcvt.s.w, 0x01, -0x1000001, 0xcb800000, 0xcb800000, 0xcb800001, 0xcb800000, 0xcb800001
        ITOF5 s, fcvt.s.wu, 0x01, 0x12345678ffffffff, 0x4f800000, 0x4f7fffff, 0x4f7fffff, 0x4f800000, 0x4f800000
        ITOF  s, fcvt.s.wu, 0x00, 0x80000000, 0x4f000000
        ITOF5 s, fcvt.s.l, 0x01, 0x7fffffffffffffff, 0x5f000000, 0x5effffff, 0x5effffff, 0x5f000000, 0x5f000000
        ITOF  s, fcvt.s.l, 0x00, 0x8000000000000000, 0xdf000000
        ITOF  s, fcvt.s.l, 0x00, 0x100000000, 0x4f800000
        ITOF5 s, fcvt.s.lu, 0x01, 0xffffffffffffffff, 0x5f800000, 0x5f7fffff, 0x5f7fffff, 0x5f800000, 0x5f800000
        ITOF  s, fcvt.s.lu, 0x00, 0x8000000000000000, 0x5f000000
# ---- fmv, flw, fsw: raw bits, only the low 32 ----
        li      a1, 0x123456789abcdef0
        fmv.w.x fa0, a1
        CHECKF  fa0, 0xffffffff9abcdef0
        fmv.x.w a0, fa0
        CHECK   a0, 0xffffffff9abcdef0
        li      a1, 0x7fffffff
        fmv.w.x fa0, a1
        fmv.x.w a0, fa0
        CHECK   a0, 0x7fffffff
        li      a1, 0x0123456789abcdef  # not NaN-boxed: fmv.x.w and fsw still take the low 32 bits
        fmv.d.x fa1, a1
        fmv.x.w a0, fa1
        CHECK   a0, 0xffffffff89abcdef
        la      a2, buf
        fsw     fa1, 0(a2)
        ld      a0, 0(a2)
        CHECK   a0, 0x5555555589abcdef
        flw     fa0, 0(a2)
        CHECKF  fa0, 0xffffffff89abcdef
        flw     fa0, 2(a2)              # misaligned
        CHECKF  fa0, 0xffffffff555589ab
        fsw     fa1, 5(a2)
        ld      a0, 0(a2)
        CHECK   a0, 0xabcdef5589abcdef
        lw      a0, 8(a2)
        CHECK   a0, 0x55555589
        CHECKFLAGS 0
# ---- NaN boxing: an improperly boxed operand reads as the canonical NaN ----
        li      t0, 0x000000003f800000  # 1.0f without the box
        fmv.d.x fa1, t0
        FSET    s, fa2, 0x3f800000
        fadd.s  fa0, fa1, fa2
        CHECKS  fa0, 0x7fc00000
        CHECKFLAGS 0
        fmul.s  fa0, fa2, fa1
        CHECKS  fa0, 0x7fc00000
        fsgnj.s fa0, fa1, fa2
        CHECKS  fa0, 0x7fc00000
        fsgnjn.s fa0, fa1, fa1
        CHECKS  fa0, 0xffc00000
        fsgnjx.s fa0, fa2, fa1
        CHECKS  fa0, 0x3f800000
        fmv.s   fa0, fa1
        CHECKS  fa0, 0x7fc00000
        fmin.s  fa0, fa1, fa2
        CHECKS  fa0, 0x3f800000
        feq.s   a0, fa1, fa1
        CHECK   a0, 0
        CHECKFLAGS 0
        flt.s   a0, fa1, fa2
        CHECK   a0, 0
        CHECKFLAGS 0x10
        fclass.s a0, fa1
        CHECK   a0, 0x200
        fcvt.w.s a0, fa1
        CHECK   a0, 0x7fffffff
        CHECKFLAGS 0x10
        fcvt.d.s fa0, fa1
        CHECKF  fa0, 0x7ff8000000000000
        li      t0, 0xfffffffe3f800000  # almost boxed is not boxed
        fmv.d.x fa1, t0
        fadd.s  fa0, fa1, fa2
        CHECKS  fa0, 0x7fc00000
        fmadd.s fa0, fa2, fa2, fa1
        CHECKS  fa0, 0x7fc00000
        CHECKFLAGS 0
# ---- fflags accumulate ----
        FSET    s, fa1, 0x3f800000
        FSET    s, fa2, 0x40400000
        fmv.w.x fa3, zero
        fdiv.s  fa0, fa1, fa2
        fdiv.s  fa0, fa1, fa3
        fadd.s  fa0, fa1, fa1
        CHECKFLAGS 0x09
        DONE

        .data
        .balign 8
buf:    .dword  0x5555555555555555, 0x5555555555555555
