#ifndef SD_SGEMM_H
#define SD_SGEMM_H

/// 1 when this CPU runs the AVX-512 kernel of sd_sgemm (x86-64 with AVX-512F), else 0.
int sd_sgemm_available(void);

/// Single-threaded row-major C = alpha·op(A)·op(B) + beta·C (op(A) m×k, op(B) k×n), the same
/// contract as cblas_sgemm(CblasRowMajor, …). Only call it when sd_sgemm_available() is 1.
/// beta == 0 never reads C. Returns 0, or -1 when its packing buffers cannot be allocated
/// (C is then untouched).
int sd_sgemm(int trans_a, int trans_b, long m, long n, long k, float alpha,
             const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc);

#endif
