/* CPU kernels for the emulator benchmark: the same source runs under isola-emu and qemu-riscv64.
 *
 * Freestanding (no libc), so start-up cost is not mixed into the kernels' speed: _start calls one kernel
 * chosen at compile time (-DKERNEL=n), prints its checksum in hex with write(2) and exits with exit(2).
 * Instruction counts are exact and the same under every emulator, so MIPS = count / time.
 */
typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned char u8;

static long sys3(long n, long a, long b, long c) {
    register long a0 asm("a0") = a, a1 asm("a1") = b, a2 asm("a2") = c, a7 asm("a7") = n;
    asm volatile("ecall" : "+r"(a0) : "r"(a1), "r"(a2), "r"(a7) : "memory");
    return a0;
}

/* Integer mix: xorshift, data-dependent branches, a table walk (CoreMark-flavoured). */
static u64 intloop(u64 iters) {
    static u32 table[256];
    u64 s = 88172645463325252ull, acc = 0;
    for (int i = 0; i < 256; i++) table[i] = (u32)(i * 2654435761u);
    for (u64 i = 0; i < iters; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        u32 t = table[s & 255];
        if (t & 1) acc += t ^ (u32)s; else acc -= t >> 3;
        table[(s >> 8) & 255] = t + (u32)i;
    }
    return acc;
}

/* Sieve of Eratosthenes over a byte array. */
static u8 sieve_buf[1 << 20];
static u64 sieve(u64 passes) {
    u64 count = 0;
    for (u64 p = 0; p < passes; p++) {
        for (u64 i = 0; i < sizeof sieve_buf; i++) sieve_buf[i] = 1;
        for (u64 i = 2; i * i < sizeof sieve_buf; i++)
            if (sieve_buf[i]) for (u64 j = i * i; j < sizeof sieve_buf; j += i) sieve_buf[j] = 0;
        for (u64 i = 2; i < sizeof sieve_buf; i++) count += sieve_buf[i];
    }
    return count;
}

/* Table-driven CRC-32 over a generated buffer. */
static u8 crc_buf[1 << 18];
static u64 crc32(u64 passes) {
    u32 tab[256];
    for (u32 i = 0; i < 256; i++) {
        u32 c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        tab[i] = c;
    }
    for (u64 i = 0; i < sizeof crc_buf; i++) crc_buf[i] = (u8)(i * 131 + 7);
    u32 crc = 0xffffffffu;
    for (u64 p = 0; p < passes; p++)
        for (u64 i = 0; i < sizeof crc_buf; i++) crc = tab[(crc ^ crc_buf[i]) & 255] ^ (crc >> 8);
    return crc ^ 0xffffffffu;
}

/* Double-precision matrix multiply, i-k-j order. */
#define N 48
static double A[N][N], B[N][N], C[N][N];
static u64 matmul(u64 reps) {
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) { A[i][j] = (i * 3 + j) % 7 * 0.5; B[i][j] = (i + 2 * j) % 5 * 0.25; }
    double sum = 0;
    for (u64 r = 0; r < reps; r++) {
        for (int i = 0; i < N; i++) for (int j = 0; j < N; j++) C[i][j] = 0;
        for (int i = 0; i < N; i++)
            for (int k = 0; k < N; k++) { double a = A[i][k]; for (int j = 0; j < N; j++) C[i][j] += a * B[k][j]; }
        sum += C[r % N][(r * 7) % N];
    }
    return (u64)(sum * 1000.0);
}

#ifndef KERNEL
#define KERNEL 0
#endif
#ifndef SCALE
#define SCALE 1
#endif

void _start(void) {
    u64 v;
    switch (KERNEL) {
    case 0: v = intloop(200000 * SCALE); break;
    case 1: v = sieve(1 * SCALE); break;
    case 2: v = crc32(2 * SCALE); break;
    default: v = matmul(4 * SCALE); break;
    }
    char out[17];
    for (int i = 15; i >= 0; i--) { out[i] = "0123456789abcdef"[v & 15]; v >>= 4; }
    out[16] = '\n';
    sys3(64, 1, (long)out, 17);
    sys3(93, 0, 0, 0);
    for (;;) {}
}
