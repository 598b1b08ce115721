/*
 * Syscall round trip: N x syscall(SYS_getppid), timed with clock_gettime(CLOCK_MONOTONIC).
 * Built by bench/process_bench.py with `gcc -static -O2`; run natively and in a process VM.
 * Prints "getppid <N> calls <ns per call> ns/call".
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 20000;
    struct timespec t0, t1;
    long sink = 0;
    if (n <= 0) {
        fprintf(stderr, "usage: %s [N > 0]\n", argv[0]);
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++)
        sink += syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    printf("getppid %ld calls %.1f ns/call\n", n, ns / (double)n);
    return sink < 0;
}
