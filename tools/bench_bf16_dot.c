// The register throughput of AVX-512 BF16 dot products (vdpbf16ps) beside fp32 FMAs
// (vfmadd231ps) on one core: 12 independent accumulators each, no memory traffic. Whether a
// bf16 inference mode can pay on a CPU depends on this ratio: vdpbf16ps does twice the
// multiply-adds of an FMA, so it pays only where it issues at more than half the FMA's rate.
//
//     clang -O2 -o /tmp/bench_bf16_dot tools/bench_bf16_dot.c && /tmp/bench_bf16_dot
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

enum { ACC = 12 };

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// GFLOP/s counting a multiply and an add per pair of bf16 values (64 per instruction).
__attribute__((target("avx512f,avx512bf16"))) static double bf16_dot(long steps) {
    __m512 acc[ACC];
    for (int i = 0; i < ACC; i++) acc[i] = _mm512_setzero_ps();
    __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = a;
    double t = seconds();
    for (long k = 0; k < steps; k++) {
        for (int i = 0; i < ACC; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
        __asm__ volatile("" : "+v"(a));
    }
    t = seconds() - t;
    float sum = 0;
    for (int i = 0; i < ACC; i++) sum += _mm512_reduce_add_ps(acc[i]);
    if (sum == 1) puts("");
    return steps * ACC * 64.0 / t / 1e9;
}

// GFLOP/s of fp32 FMAs (32 per instruction).
__attribute__((target("avx512f"))) static double fp32_fma(long steps) {
    __m512 acc[ACC];
    for (int i = 0; i < ACC; i++) acc[i] = _mm512_setzero_ps();
    __m512 a = _mm512_set1_ps(1.0001f), b = _mm512_set1_ps(0.9999f);
    double t = seconds();
    for (long k = 0; k < steps; k++) {
        for (int i = 0; i < ACC; i++) acc[i] = _mm512_fmadd_ps(a, b, acc[i]);
        __asm__ volatile("" : "+v"(a));
    }
    t = seconds() - t;
    float sum = 0;
    for (int i = 0; i < ACC; i++) sum += _mm512_reduce_add_ps(acc[i]);
    if (sum == 1) puts("");
    return steps * ACC * 32.0 / t / 1e9;
}

int main(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512bf16")) {
        puts("this CPU has no AVX512_BF16");
        return 1;
    }
    for (int r = 0; r < 5; r++) {
        double bf = bf16_dot(50000000), fp = fp32_fma(50000000);
        printf("vdpbf16ps %6.1f GFLOP/s   vfmadd231ps %6.1f GFLOP/s   bf16 / fp32 %.2f\n", bf, fp, bf / fp);
    }
    return 0;
}
