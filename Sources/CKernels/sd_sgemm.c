// A packed single-precision GEMM with an AVX-512 register kernel, in the loop structure of
// Goto & van de Geijn ("Anatomy of high-performance matrix multiplication", 2008) and BLIS.
//
// Row-major C (m×n) = op(A) (m×k) · op(B) (k×n). Per block of KC along k, all of op(A) is packed
// into micro-panels of MR rows (kc × MR, k-major); per block of NC columns, op(B) into
// micro-panels of NR columns (kc × NR, k-major). The register kernel holds an MR × NR block of
// C in 24 zmm accumulators: each k step loads NR = 32 floats of B (two vectors), broadcasts
// MR = 12 floats of A and issues 24 FMAs. One A micro-panel (12 KB) stays in L1 while the
// kernel walks the B block (512 KB) in L2. Edges use AVX-512 masks; panels are zero-padded.
//
// Each element of C is summed in the same order whatever m and n are (k in blocks of KC, each
// block from zero, then added to C), so splitting C across threads changes no result.
#include "sd_kernels.h"

#include <stdlib.h>
#include <string.h>

// The epilogue's multiply and add stay two roundings, as in Swift.
#pragma STDC FP_CONTRACT OFF

#if defined(__x86_64__)
#include <immintrin.h>

#define SD_AVX512 __attribute__((target("avx512f")))

enum { MR = 12, NR = 32, KC = 256, NC = 512 };

int sd_sgemm_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
}

static inline long min_l(long a, long b) { return a < b ? a : b; }

// op(A) rows i0 ..< i0+m, k range k0 ..< k0+kc, into ceil(m/MR) panels of kc × MR (rows past m zero).
SD_AVX512 static void pack_a(int trans, const float *a, long lda, long m, long k0, long kc, float *dst) {
    for (long i0 = 0; i0 < m; i0 += MR, dst += kc * MR) {
        long mr = min_l(MR, m - i0);
        if (trans) {
            // Stored k × m: each k row holds the panel's MR values contiguously.
            for (long p = 0; p < kc; p++) {
                const float *src = a + (k0 + p) * lda + i0;
                float *d = dst + p * MR;
                long i = 0;
                for (; i < mr; i++) d[i] = src[i];
                for (; i < MR; i++) d[i] = 0;
            }
        } else {
            for (long i = 0; i < mr; i++) {
                const float *src = a + (i0 + i) * lda + k0;
                for (long p = 0; p < kc; p++) dst[p * MR + i] = src[p];
            }
            for (long i = mr; i < MR; i++)
                for (long p = 0; p < kc; p++) dst[p * MR + i] = 0;
        }
    }
}

static inline __mmask16 mask_upto(long count) {
    return count >= 16 ? (__mmask16)0xFFFF : count <= 0 ? (__mmask16)0 : (__mmask16)((1u << count) - 1);
}

// dst[q·ldd + i] = src[i·lds + q] for a 16 × 16 block: rows become columns in three rounds of
// in-register interleaves (32-bit, 64-bit, then 128-bit lanes twice).
SD_AVX512 static inline void transpose16(const float *src, long lds, float *dst, long ldd) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * lds);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
#define SD_PD(x) _mm512_castps_pd(x)
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(SD_PD(t[i]), SD_PD(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(SD_PD(t[i]), SD_PD(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(SD_PD(t[i + 1]), SD_PD(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(SD_PD(t[i + 1]), SD_PD(t[i + 3])));
    }
#undef SD_PD
    // Now r[4g + c] holds columns c, c + 4, c + 8, c + 12 of rows 4g ..< 4g + 4, one per 128-bit lane.
    for (int h = 0; h < 16; h += 8)
        for (int c = 0; c < 4; c++) {
            t[h + c] = _mm512_shuffle_f32x4(r[h + c], r[h + c + 4], 0x88);
            t[h + c + 4] = _mm512_shuffle_f32x4(r[h + c], r[h + c + 4], 0xdd);
        }
    for (int c = 0; c < 8; c++) {
        _mm512_storeu_ps(dst + c * ldd, _mm512_shuffle_f32x4(t[c], t[c + 8], 0x88));
        _mm512_storeu_ps(dst + (c + 8) * ldd, _mm512_shuffle_f32x4(t[c], t[c + 8], 0xdd));
    }
}

// op(B) columns j0 ..< j0+n, k range k0 ..< k0+kc, into ceil(n/NR) panels of kc × NR (columns past n zero).
SD_AVX512 static void pack_b(int trans, const float *b, long ldb, long k0, long kc, long j0, long n, float *dst) {
    for (long jp = 0; jp < n; jp += NR, dst += kc * NR) {
        long nr = min_l(NR, n - jp);
        if (trans) {
            // Stored n × k: column j of op(B) is row j of the stored matrix. Whole panels go 16 × 16
            // blocks at a time through a register transpose; the rest element by element.
            long p0 = 0;
            if (nr == NR) {
                const float *src = b + (j0 + jp) * ldb + k0;
                for (; p0 + 16 <= kc; p0 += 16) {
                    transpose16(src + p0, ldb, dst + p0 * NR, NR);
                    transpose16(src + 16 * ldb + p0, ldb, dst + p0 * NR + 16, NR);
                }
            }
            for (long j = 0; j < nr; j++) {
                const float *src = b + (j0 + jp + j) * ldb + k0;
                for (long p = p0; p < kc; p++) dst[p * NR + j] = src[p];
            }
            for (long j = nr; j < NR; j++)
                for (long p = 0; p < kc; p++) dst[p * NR + j] = 0;
        } else {
            __mmask16 m0 = mask_upto(nr), m1 = mask_upto(nr - 16);
            for (long p = 0; p < kc; p++) {
                const float *src = b + (k0 + p) * ldb + j0 + jp;
                _mm512_store_ps(dst + p * NR, _mm512_maskz_loadu_ps(m0, src));
                _mm512_store_ps(dst + p * NR + 16, _mm512_maskz_loadu_ps(m1, src + 16));
            }
        }
    }
}

// C[0..<mr][0..<nr] (row stride ldc) = alpha·(a · b) + (first ? beta·C : C), then, when ep is
// set (the last block along k), the epilogue; this block is C's rows row0…, columns col0….
SD_AVX512 static void kernel(long kc, const float *restrict a, const float *restrict b, float *restrict c, long ldc,
                             long mr, long nr, float alpha, float beta, int first, const sd_epilogue *ep, long row0, long col0) {
    __m512 acc[2 * MR];
#define SD_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define SD_DECL(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps();
#define SD_FMA(i)                                     \
    {                                                 \
        __m512 ai = _mm512_set1_ps(a[i]);             \
        c##i##0 = _mm512_fmadd_ps(ai, b0, c##i##0);   \
        c##i##1 = _mm512_fmadd_ps(ai, b1, c##i##1);   \
    }
#define SD_SAVE(i) acc[2 * i] = c##i##0; acc[2 * i + 1] = c##i##1;
    SD_ROWS(SD_DECL)
    for (long p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        _mm_prefetch((const char *)(b + 8 * NR), _MM_HINT_T0);
        SD_ROWS(SD_FMA)
        a += MR;
        b += NR;
    }
    SD_ROWS(SD_SAVE)
#undef SD_ROWS
#undef SD_DECL
#undef SD_FMA
#undef SD_SAVE
    __mmask16 m0 = mask_upto(nr), m1 = mask_upto(nr - 16);
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (long i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        __m512 r0 = _mm512_mul_ps(va, acc[2 * i]), r1 = _mm512_mul_ps(va, acc[2 * i + 1]);
        if (!first) {
            r0 = _mm512_add_ps(r0, _mm512_maskz_loadu_ps(m0, ci));
            r1 = _mm512_add_ps(r1, _mm512_maskz_loadu_ps(m1, ci + 16));
        } else if (beta != 0) {
            r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), r0);
            r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), r1);
        }
        if (ep) {
            long row = row0 + i;
            __m512 zero = _mm512_setzero_ps();
            if (ep->bias) {
                __m512 v = _mm512_set1_ps(ep->bias[row]);
                r0 = _mm512_add_ps(r0, v);
                r1 = _mm512_add_ps(r1, v);
            }
            if (ep->scale) {
                __m512 s = _mm512_set1_ps(ep->scale[row]), t = _mm512_set1_ps(ep->shift[row]);
                r0 = _mm512_add_ps(_mm512_mul_ps(r0, s), t);
                r1 = _mm512_add_ps(_mm512_mul_ps(r1, s), t);
            }
            if (ep->residual) {
                const float *q = ep->residual + row * ep->ldr + col0;
                r0 = _mm512_add_ps(_mm512_add_ps(zero, r0), _mm512_maskz_loadu_ps(m0, q));
                r1 = _mm512_add_ps(_mm512_add_ps(zero, r1), _mm512_maskz_loadu_ps(m1, q + 16));
            }
            if (ep->relu) {
                r0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r0, zero, _CMP_GT_OQ), r0);
                r1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r1, zero, _CMP_GT_OQ), r1);
            }
        }
        _mm512_mask_storeu_ps(ci, m0, r0);
        _mm512_mask_storeu_ps(ci + 16, m1, r1);
    }
}

SD_AVX512 int sd_sgemm(int trans_a, int trans_b, long m, long n, long k, float alpha,
                       const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc) {
    return sd_sgemm_epilogue(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, NULL);
}

SD_AVX512 int sd_sgemm_epilogue(int trans_a, int trans_b, long m, long n, long k, float alpha,
                                const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc,
                                const sd_epilogue *epilogue) {
    if (m <= 0 || n <= 0) return 0;
    // Without a k to sum over there is no register pass: the caller applies its epilogue.
    if (k <= 0 || alpha == 0) {
        if (epilogue) return -1;
        for (long i = 0; i < m; i++)
            for (long j = 0; j < n; j++) c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];
        return 0;
    }
    long mp = (m + MR - 1) / MR * MR;
    long kcMax = min_l(KC, k), ncMax = (min_l(NC, n) + NR - 1) / NR * NR;
    size_t aBytes = (size_t)(mp * kcMax) * sizeof(float), bBytes = (size_t)(kcMax * ncMax) * sizeof(float);
    float *ap = aligned_alloc(64, (aBytes + 63) / 64 * 64), *bp = aligned_alloc(64, (bBytes + 63) / 64 * 64);
    if (!ap || !bp) {
        free(ap);
        free(bp);
        return -1;
    }
    for (long k0 = 0; k0 < k; k0 += KC) {
        long kc = min_l(KC, k - k0);
        pack_a(trans_a, a, lda, m, k0, kc, ap);
        for (long j0 = 0; j0 < n; j0 += NC) {
            long nc = min_l(NC, n - j0);
            pack_b(trans_b, b, ldb, k0, kc, j0, nc, bp);
            for (long i0 = 0; i0 < m; i0 += MR) {
                const float *panelA = ap + i0 * kc;
                for (long jp = 0; jp < nc; jp += NR)
                    kernel(kc, panelA, bp + jp * kc, c + i0 * ldc + j0 + jp, ldc, min_l(MR, m - i0), min_l(NR, nc - jp),
                           alpha, beta, k0 == 0, k0 + kc == k ? epilogue : NULL, i0, j0 + jp);
            }
        }
    }
    free(ap);
    free(bp);
    return 0;
}

#else

int sd_sgemm_available(void) { return 0; }

int sd_sgemm(int trans_a, int trans_b, long m, long n, long k, float alpha,
             const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc) {
    (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)alpha;
    (void)a; (void)lda; (void)b; (void)ldb; (void)beta; (void)c; (void)ldc;
    return -1;
}

int sd_sgemm_epilogue(int trans_a, int trans_b, long m, long n, long k, float alpha,
                      const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc,
                      const sd_epilogue *epilogue) {
    (void)epilogue;
    return sd_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

#endif
