// Our sgemm kernel (Sources/CKernels/sd_sgemm.c) against OpenBLAS's cblas_sgemm, one thread each,
// side by side on the same operands: median of 7 runs after a warm-up, GFLOP/s, and the largest
// difference between the two results. A tool, not a test. Build and run (release flags):
//
//   clang -O3 -I Sources/CKernels/include tools/bench_sgemm.c Sources/CKernels/sd_sgemm.c -lopenblas -lm -o /tmp/bench_sgemm
//   /tmp/bench_sgemm M N K [TRANS_A TRANS_B]          # e.g. /tmp/bench_sgemm 64 576 27648 0 1
//   OPENBLAS_CORETYPE=SkylakeX /tmp/bench_sgemm 1024 1024 1024
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "bench_timing.h"

#include "sd_kernels.h"

enum { RUNS = 7 };

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s M N K [TRANS_A TRANS_B]\n", argv[0]);
        return 2;
    }
    long m = atol(argv[1]), n = atol(argv[2]), k = atol(argv[3]);
    int ta = argc > 4 ? atoi(argv[4]) : 0, tb = argc > 5 ? atoi(argv[5]) : 0;
    if (m <= 0 || n <= 0 || k <= 0) {
        fprintf(stderr, "M, N and K must be positive\n");
        return 2;
    }
    if (!sd_sgemm_available()) {
        fprintf(stderr, "this CPU has no AVX-512F: the engine uses OpenBLAS here\n");
        return 1;
    }
    float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
    float *c = malloc(sizeof(float) * m * n), *d = malloc(sizeof(float) * m * n);
    srand(1);
    for (long i = 0; i < m * k; i++) a[i] = (rand() % 1000) / 1000.0f - 0.5f;
    for (long i = 0; i < k * n; i++) b[i] = (rand() % 1000) / 1000.0f - 0.5f;
    long lda = ta ? m : k, ldb = tb ? k : n;
    openblas_set_num_threads(1);
    double theirs[RUNS], ours[RUNS];
    for (int r = -1; r < RUNS; r++) {  // r = -1: warm-up
        double t = now();
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1, a, lda, b, ldb,
                    0, c, n);
        double t1 = now();
        sd_sgemm(ta, tb, m, n, k, 1, a, lda, b, ldb, 0, d, n);
        double t2 = now();
        if (r >= 0) {
            theirs[r] = t1 - t;
            ours[r] = t2 - t1;
        }
    }
    qsort(theirs, RUNS, sizeof(double), by_value);
    qsort(ours, RUNS, sizeof(double), by_value);
    double diff = 0;
    for (long i = 0; i < m * n; i++) diff = fmax(diff, fabs(c[i] - d[i]));
    double gflop = 2.0 * m * n * k / 1e9;
    printf("%ld×%ld×%ld %s%s: OpenBLAS (%s) %.1f GFLOP/s, ours %.1f GFLOP/s, ratio %.2f, max |Δ| %.2e\n", m, n, k, ta ? "T" : "N",
           tb ? "T" : "N", openblas_get_corename(), gflop / theirs[RUNS / 2], gflop / ours[RUNS / 2], theirs[RUNS / 2] / ours[RUNS / 2],
           diff);
    free(a);
    free(b);
    free(c);
    free(d);
    return 0;
}
