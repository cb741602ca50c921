// Detectron's input preparation in one pass: 8-bit BGR pixels (interleaved, or the Y/Cb/Cr planes
// of a 4:2:0 JPEG, converted here exactly as libjpeg-turbo converts them), bilinear resize with
// given taps, minus a per-channel mean, written as float planes (CHW) with any row and plane
// stride — straight into a padded batch blob.
//
// Per channel c, output column x and row y (taps i0/i1/w0/w1 for columns, j0/j1/v0/v1 for rows):
//   h_j[x]   = f(src[j][i0[x]][c]) * w0[x] + f(src[j][i1[x]][c]) * w1[x]
//   out[y][x] = (h_j0[x] * v0[y] + h_j1[x] * v1[y]) - mean[c]
// in float, in this order, never fused (FP_CONTRACT OFF): the AVX-512 and baseline builds give
// bitwise the results of the scalar reference in ImagingTests.

#include "sd_kernels.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#pragma STDC FP_CONTRACT OFF

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define SD_HAVE_AVX512 1
#include <immintrin.h>
#endif

// Source rows are converted to three float planes of `src_w` floats plus this much zero slack, so
// a 32-float window that starts inside a row can always be loaded.
#define SLACK 32

typedef struct {
    const int32_t *i0, *i1;
    const float *w0, *w1;
    long n;
} taps;

// One source row → three float planes (B, G, R for BGR input).
static void split_row_generic(const uint8_t *row, long w, float *p0, float *p1, float *p2) {
    for (long x = 0; x < w; x++) {
        p0[x] = (float)row[3 * x];
        p1[x] = (float)row[3 * x + 1];
        p2[x] = (float)row[3 * x + 2];
    }
}

// libjpeg-turbo's YCbCr → RGB (jdcolor.c): Cr_r_tab, Cb_b_tab, Cr_g_tab + Cb_g_tab in 16-bit
// fixed point, FIX(1.40200) = 91881, FIX(1.77200) = 116130, FIX(0.71414) = 46802,
// FIX(0.34414) = 22554, results clamped to 0…255.
static inline int clamp255(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

// Column sums of libjpeg's h2v2 fancy upsampling for one output row: 3 × the nearer chroma row +
// the farther one (the row itself at the top and bottom edges), with the edge columns repeated
// at t[-1] and t[cw].
static void colsums_generic(const uint8_t *near, const uint8_t *far, long cw, int32_t *t) {
    for (long i = 0; i < cw; i++) t[i] = near[i] * 3 + far[i];
    t[-1] = t[0];
    t[cw] = t[cw - 1];
}

// The nearer and farther chroma rows of output row y.
static void chroma_rows(const sd_pixels *s, long y, long *near, long *far) {
    long ch = (s->height + 1) / 2;
    *near = y / 2;
    *far = (y & 1) ? *near + 1 : *near - 1;
    if (*far < 0) *far = 0;
    if (*far >= ch) *far = ch - 1;
}

// One BGR row from the planes: each chroma sample 3/4 from its own column sum and 1/4 from the
// neighbour's, rounded with +8 for even and +7 for odd columns (jdsample.c).
static void ycc_row_generic(const sd_pixels *s, long y, int32_t *tb, int32_t *tr, float *p0, float *p1, float *p2) {
    long cw = (s->width + 1) / 2, near, far;
    chroma_rows(s, y, &near, &far);
    colsums_generic(s->cb + near * s->c_stride, s->cb + far * s->c_stride, cw, tb);
    colsums_generic(s->cr + near * s->c_stride, s->cr + far * s->c_stride, cw, tr);
    const uint8_t *yr = s->y + y * s->y_stride;
    for (long x = 0; x < s->width; x++) {
        long i = x >> 1;
        int odd = (int)(x & 1);
        int cb = odd ? (tb[i] * 3 + tb[i + 1] + 7) >> 4 : (tb[i] * 3 + tb[i - 1] + 8) >> 4;
        int cr = odd ? (tr[i] * 3 + tr[i + 1] + 7) >> 4 : (tr[i] * 3 + tr[i - 1] + 8) >> 4;
        int lum = yr[x], xb = cb - 128, xr = cr - 128;
        p0[x] = (float)clamp255(lum + ((116130 * xb + 32768) >> 16));
        p1[x] = (float)clamp255(lum + ((-22554 * xb - 46802 * xr + 32768) >> 16));
        p2[x] = (float)clamp255(lum + ((91881 * xr + 32768) >> 16));
    }
}

static void horizontal_generic(const float *p, const taps *t, float *h) {
    for (long x = 0; x < t->n; x++) h[x] = p[t->i0[x]] * t->w0[x] + p[t->i1[x]] * t->w1[x];
}

// One output row: n values, then zeros up to pad (n = 0: a row of zeros).
static void vertical_generic(const float *h0, const float *h1, float v0, float v1, float mean, long n, long pad, float *out) {
    for (long x = 0; x < n; x++) out[x] = (h0[x] * v0 + h1[x] * v1) - mean;
    if (pad > n) memset(out + n, 0, (size_t)(pad - n) * sizeof(float));
}

#ifdef SD_HAVE_AVX512
#define SD_TARGET __attribute__((target("avx512f")))

// Element e = 3j + c of a 48-float interleaved run, gathered in two two-register permutes:
// first from (f0, f1) for e < 32, then (kept, f2) for e ≥ 32.
typedef struct { __m512i first[3], second[3]; } split_index;

SD_TARGET static split_index make_split_index(void) {
    split_index s;
    for (int c = 0; c < 3; c++) {
        int32_t first[16], second[16];
        for (int j = 0; j < 16; j++) {
            int e = 3 * j + c;
            first[j] = e < 32 ? e : 0;
            second[j] = e < 32 ? j : 16 + (e - 32);
        }
        s.first[c] = _mm512_loadu_si512(first);
        s.second[c] = _mm512_loadu_si512(second);
    }
    return s;
}

SD_TARGET static void split_row_avx512(const uint8_t *row, long w, const split_index *ix, float *p0, float *p1, float *p2) {
    float *planes[3] = {p0, p1, p2};
    long x = 0;
    for (; x + 16 <= w; x += 16) {
        const uint8_t *s = row + 3 * x;
        __m512 f0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)s)));
        __m512 f1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(s + 16))));
        __m512 f2 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(s + 32))));
        for (int c = 0; c < 3; c++) {
            __m512 t = _mm512_permutex2var_ps(f0, ix->first[c], f1);
            _mm512_storeu_ps(planes[c] + x, _mm512_permutex2var_ps(t, ix->second[c], f2));
        }
    }
    split_row_generic(row + 3 * x, w - x, p0 + x, p1 + x, p2 + x);
}

// ycc_row_generic in 16-bit lanes (AVX-512BW), 32 chroma columns (64 pixels) at a time, with the
// same integer results: B = Y + 2·xb + mulhrs(xb, −7471) is Y + ⌊(116130·xb + 2¹⁵) / 2¹⁶⌋,
// R = Y + xr + mulhi(xr, 26345) + (mullo(xr, 26345) >> 15) is Y + ⌊(91881·xr + 2¹⁵) / 2¹⁶⌋, and G
// takes (xb, 2·xr)·(−22554, −23401) in 32 bits (all three agree with the formulas for every xb,
// xr in −128…127: ImagingTests' everyChromaPair runs all 65,536 pairs through both builds). The column
// sums are padded (t[-1], t[cw] repeated, zeros after) so every load is in bounds; planes get
// whole blocks of 32 (they have slack).
#define SD_TARGET_BW __attribute__((target("avx512f,avx512bw")))

SD_TARGET_BW static void colsums_avx512bw(const uint8_t *near, const uint8_t *far, long cw, int16_t *t) {
    long i = 0;
    for (; i + 32 <= cw; i += 32) {
        __m512i a = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(near + i)));
        __m512i b = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(far + i)));
        _mm512_storeu_si512(t + i, _mm512_add_epi16(_mm512_add_epi16(_mm512_add_epi16(a, a), a), b));
    }
    for (; i < cw; i++) t[i] = (int16_t)(near[i] * 3 + far[i]);
    t[-1] = t[0];
    t[cw] = t[cw - 1];
}

// Fancy-upsampled chroma for 32 column sums, interleaved into pixels 0–31 (lo) and 32–63 (hi).
SD_TARGET_BW static void upsample32(const int16_t *t, __m512i lo_index, __m512i hi_index, __m512i *lo, __m512i *hi) {
    __m512i c = _mm512_loadu_si512(t), l = _mm512_loadu_si512(t - 1), r = _mm512_loadu_si512(t + 1);
    __m512i c3 = _mm512_add_epi16(_mm512_add_epi16(c, c), c);
    __m512i even = _mm512_srai_epi16(_mm512_add_epi16(_mm512_add_epi16(c3, l), _mm512_set1_epi16(8)), 4);
    __m512i odd = _mm512_srai_epi16(_mm512_add_epi16(_mm512_add_epi16(c3, r), _mm512_set1_epi16(7)), 4);
    *lo = _mm512_permutex2var_epi16(even, lo_index, odd);
    *hi = _mm512_permutex2var_epi16(even, hi_index, odd);
}

// 32 values of one channel, clamped to 0…255, as floats.
SD_TARGET_BW static void store_channel(__m512i v, float *p) {
    v = _mm512_min_epi16(_mm512_max_epi16(v, _mm512_setzero_si512()), _mm512_set1_epi16(255));
    _mm512_storeu_ps(p, _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(v))));
    _mm512_storeu_ps(p + 16, _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(v, 1))));
}

SD_TARGET_BW static void ycc_row_avx512bw(const sd_pixels *s, long y, int16_t *tb, int16_t *tr, float *p0, float *p1, float *p2) {
    long cw = (s->width + 1) / 2, near, far;
    chroma_rows(s, y, &near, &far);
    colsums_avx512bw(s->cb + near * s->c_stride, s->cb + far * s->c_stride, cw, tb);
    colsums_avx512bw(s->cr + near * s->c_stride, s->cr + far * s->c_stride, cw, tr);
    int16_t lo_idx[32], hi_idx[32];
    for (int k = 0; k < 32; k++) {
        lo_idx[k] = (int16_t)((k & 1 ? 32 : 0) + k / 2);
        hi_idx[k] = (int16_t)((k & 1 ? 32 : 0) + 16 + k / 2);
    }
    __m512i lo_index = _mm512_loadu_si512(lo_idx), hi_index = _mm512_loadu_si512(hi_idx);
    const __m512i c128 = _mm512_set1_epi16(128), half = _mm512_set1_epi32(32768), kg = _mm512_set1_epi32((int)(((uint32_t)(uint16_t)-23401 << 16) | (uint16_t)-22554));
    const uint8_t *yr = s->y + y * s->y_stride;
    for (long i = 0; 2 * i < s->width; i += 32) {
        __m512i cb[2], cr[2];
        upsample32(tb + i, lo_index, hi_index, &cb[0], &cb[1]);
        upsample32(tr + i, lo_index, hi_index, &cr[0], &cr[1]);
        for (int h = 0; h < 2; h++) {
            long x = 2 * i + 32 * h;
            if (x >= s->width) break;
            // The last run of a row may end past the plane's last row: load only the pixels.
            long n = s->width - x < 32 ? s->width - x : 32;
            __mmask64 m = ((__mmask64)1 << n) - 1;
            __m512i lum = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(_mm512_maskz_loadu_epi8(m, yr + x)));
            __m512i xb = _mm512_sub_epi16(cb[h], c128), xr = _mm512_sub_epi16(cr[h], c128);
            __m512i b = _mm512_add_epi16(_mm512_add_epi16(xb, xb), _mm512_mulhrs_epi16(xb, _mm512_set1_epi16(-7471)));
            __m512i r = _mm512_add_epi16(_mm512_add_epi16(xr, _mm512_mulhi_epi16(xr, _mm512_set1_epi16(26345))),
                                         _mm512_srli_epi16(_mm512_mullo_epi16(xr, _mm512_set1_epi16(26345)), 15));
            __m512i xr2 = _mm512_add_epi16(xr, xr);
            __m512i glo = _mm512_srai_epi32(_mm512_add_epi32(_mm512_madd_epi16(_mm512_unpacklo_epi16(xb, xr2), kg), half), 16);
            __m512i ghi = _mm512_srai_epi32(_mm512_add_epi32(_mm512_madd_epi16(_mm512_unpackhi_epi16(xb, xr2), kg), half), 16);
            __m512i g = _mm512_packs_epi32(glo, ghi);
            store_channel(_mm512_add_epi16(lum, b), p0 + x);
            store_channel(_mm512_add_epi16(lum, g), p1 + x);
            store_channel(_mm512_add_epi16(lum, r), p2 + x);
        }
    }
}

// Output columns in blocks of 16: when a block's taps lie within 32 source columns (any scale
// above about 0.55), both taps come from one two-register window by permutes; else by gathers.
typedef struct {
    long blocks;
    int32_t *base;   // first source column of each block's window, or -1: gather
    int32_t *rel0, *rel1;  // taps relative to the base (or absolute, for gathered blocks)
    float *w0, *w1;  // weights, zero past the last column
} blocked_taps;

static void block_taps(const taps *t, blocked_taps *b, void *storage) {
    long blocks = (t->n + 15) / 16, padded = blocks * 16;
    b->blocks = blocks;
    b->rel0 = (int32_t *)storage;
    b->rel1 = b->rel0 + padded;
    b->w0 = (float *)(b->rel1 + padded);
    b->w1 = b->w0 + padded;
    b->base = (int32_t *)(b->w1 + padded);
    for (long k = 0; k < blocks; k++) {
        long x0 = 16 * k, n = t->n - x0 < 16 ? t->n - x0 : 16;
        int32_t base = t->i0[x0];
        int32_t hi = t->i1[x0];
        for (long j = 0; j < n; j++) {
            if (t->i0[x0 + j] < base) base = t->i0[x0 + j];
            if (t->i1[x0 + j] > hi) hi = t->i1[x0 + j];
        }
        int windowed = hi - base < 32;
        b->base[k] = windowed ? base : -1;
        for (long j = 0; j < 16; j++) {
            int in = j < n;
            b->rel0[x0 + j] = in ? t->i0[x0 + j] - (windowed ? base : 0) : 0;
            b->rel1[x0 + j] = in ? t->i1[x0 + j] - (windowed ? base : 0) : 0;
            b->w0[x0 + j] = in ? t->w0[x0 + j] : 0;
            b->w1[x0 + j] = in ? t->w1[x0 + j] : 0;
        }
    }
}

static size_t blocked_taps_bytes(long n) { return (size_t)((n + 15) / 16) * (16 * 4 * 4 + 4); }

// Output block k of one plane: both taps from the block's window by permutes, or gathered.
SD_TARGET static inline __m512 horizontal_block(const float *p, int32_t base, __m512i r0, __m512i r1, __m512 w0, __m512 w1) {
    __m512 a, d;
    if (base >= 0) {
        __m512 lo = _mm512_loadu_ps(p + base), hi = _mm512_loadu_ps(p + base + 16);
        a = _mm512_permutex2var_ps(lo, r0, hi);
        d = _mm512_permutex2var_ps(lo, r1, hi);
    } else {
        a = _mm512_i32gather_ps(r0, p, 4);
        d = _mm512_i32gather_ps(r1, p, 4);
    }
    return _mm512_add_ps(_mm512_mul_ps(a, w0), _mm512_mul_ps(d, w1));
}

// The three planes of one source row, interpolated horizontally: the taps of each block are
// loaded once for all three. h[c] gets whole blocks of 16 (its buffer is padded to them). The
// pointers are copied to restrict locals so the compiler need not reload them after each store.
SD_TARGET static void horizontal3_avx512(float *const p[3], const blocked_taps *b, float *const h[3]) {
    const int32_t *restrict rel0 = b->rel0, *restrict rel1 = b->rel1, *restrict base = b->base;
    const float *restrict w0 = b->w0, *restrict w1 = b->w1;
    const float *restrict p0 = p[0], *restrict p1 = p[1], *restrict p2 = p[2];
    float *restrict h0 = h[0], *restrict h1 = h[1], *restrict h2 = h[2];
    for (long k = 0, blocks = b->blocks; k < blocks; k++) {
        long x0 = 16 * k;
        __m512i r0 = _mm512_loadu_si512(rel0 + x0), r1 = _mm512_loadu_si512(rel1 + x0);
        __m512 a = _mm512_loadu_ps(w0 + x0), d = _mm512_loadu_ps(w1 + x0);
        int32_t at = base[k];
        _mm512_storeu_ps(h0 + x0, horizontal_block(p0, at, r0, r1, a, d));
        _mm512_storeu_ps(h1 + x0, horizontal_block(p1, at, r0, r1, a, d));
        _mm512_storeu_ps(h2 + x0, horizontal_block(p2, at, r0, r1, a, d));
    }
}

// 16 output values of a row, and the first n < 16 of them (zeros in the other lanes).
SD_TARGET static inline __m512 vertical16(const float *h0, const float *h1, __m512 a, __m512 b, __m512 m) {
    return _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(h0), a), _mm512_mul_ps(_mm512_loadu_ps(h1), b)), m);
}

SD_TARGET static inline __m512 vertical_tail(const float *h0, const float *h1, __m512 a, __m512 b, __m512 m, __mmask16 k) {
    __m512 s = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, h0), a), _mm512_mul_ps(_mm512_maskz_loadu_ps(k, h1), b));
    return _mm512_maskz_mov_ps(k, _mm512_sub_ps(s, m));
}

// vertical_generic with AVX-512 (n = 0: a row of zeros).
SD_TARGET static void vertical_avx512(const float *h0, const float *h1, float v0, float v1, float mean, long n, long pad, float *out) {
    __m512 a = _mm512_set1_ps(v0), b = _mm512_set1_ps(v1), m = _mm512_set1_ps(mean);
    long x = 0;
    __mmask16 k = (__mmask16)((1u << (n % 16)) - 1);
    // Rows of a blob are written once and read much later (they rarely fit in cache with the
    // rest): where a row is aligned and padded to whole vectors (a blob's rows, 32 floats), stream
    // it past the cache instead of reading its lines first, zeros included.
    if (((uintptr_t)out & 63) == 0 && pad % 16 == 0) {
        for (; x + 16 <= n; x += 16) _mm512_stream_ps(out + x, vertical16(h0 + x, h1 + x, a, b, m));
        if (x < n) {
            _mm512_stream_ps(out + x, vertical_tail(h0 + x, h1 + x, a, b, m, k));
            x += 16;
        }
        for (; x < pad; x += 16) _mm512_stream_ps(out + x, _mm512_setzero_ps());
        return;
    }
    for (; x + 16 <= n; x += 16) _mm512_storeu_ps(out + x, vertical16(h0 + x, h1 + x, a, b, m));
    if (x < n) _mm512_mask_storeu_ps(out + x, k, vertical_tail(h0 + x, h1 + x, a, b, m, k));
    if (pad > n) memset(out + n, 0, (size_t)(pad - n) * sizeof(float));
}

static void prefetch(const uint8_t *p, long bytes) {
    for (long q = 0; q < bytes; q += 64) _mm_prefetch((const char *)p + q, _MM_HINT_T0);
}

static int has_avx512(void) { return __builtin_cpu_supports("avx512f"); }
static int has_avx512bw(void) { return __builtin_cpu_supports("avx512bw"); }
#endif

// One output row with the build in use.
static void vertical(int use_avx512, const float *h0, const float *h1, float v0, float v1, float mean, long n, long pad, float *out) {
#ifdef SD_HAVE_AVX512
    if (use_avx512) {
        vertical_avx512(h0, h1, v0, v1, mean, n, pad, out);
        return;
    }
#else
    (void)use_avx512;
#endif
    vertical_generic(h0, h1, v0, v1, mean, n, pad, out);
}

static int resize(int use_avx512, const sd_pixels *src, const taps *xt, const taps *yt, long pad_w, long pad_h,
                  const float mean[3], float *dst, long plane_stride, long row_stride) {
    long src_w = src->width, src_h = src->height, cw = (src_w + 1) / 2;
    long ow = xt->n, ow_pad = (ow + 15) / 16 * 16, pw = src_w + SLACK;
    // Column sums of the two chroma planes: t[-1] … t[cw + 32] (YCbCr sources only; the AVX-512BW
    // path keeps them in 16 bits).
    long sums = src->ycc ? cw + 2 + 32 : 0;
    size_t floats = (size_t)(3 * pw + 2 * 3 * ow_pad + 2 * sums);
    size_t bytes = floats * sizeof(float);
#ifdef SD_HAVE_AVX512
    size_t tap_bytes = blocked_taps_bytes(ow);
#else
    size_t tap_bytes = 0;
    (void)src_h;
#endif
    size_t total = (bytes + tap_bytes + 63) / 64 * 64;
    float *scratch = aligned_alloc(64, total);
    if (!scratch) return -1;
    memset(scratch, 0, 3 * pw * sizeof(float));
    float *plane[3] = {scratch, scratch + pw, scratch + 2 * pw};
    // rows[slot][c]: source row row_of[slot], interpolated horizontally.
    float *rows[2][3];
    for (int s = 0; s < 2; s++)
        for (int c = 0; c < 3; c++) rows[s][c] = scratch + 3 * pw + (s * 3 + c) * ow_pad;
    int32_t *tb = (int32_t *)(scratch + 3 * pw + 6 * ow_pad) + 1, *tr = tb + sums;
    if (sums) memset(tb - 1, 0, 2 * (size_t)sums * sizeof(int32_t));
    long row_of[2] = {-1, -1};
#ifdef SD_HAVE_AVX512
    blocked_taps bt;
    split_index ix;
    int use_bw = use_avx512 && has_avx512bw();
    if (use_avx512) {
        block_taps(xt, &bt, (char *)scratch + bytes);
        ix = make_split_index();
    }
#endif

    for (long y = 0; y < yt->n; y++) {
        long j[2] = {yt->i0[y], yt->i1[y]};
        int slot[2];
        // Reuse the slots that already hold rows j0 / j1; rows only move forward.
        for (int t = 0; t < 2; t++) {
            slot[t] = row_of[0] == j[t] ? 0 : (row_of[1] == j[t] ? 1 : -1);
            if (slot[t] >= 0) continue;
            slot[t] = t == 0 ? (row_of[0] == j[1] ? 1 : 0) : 1 - slot[0];
#ifdef SD_HAVE_AVX512
            if (use_avx512) {
                // Source rows are read once, in order; fetching two rows ahead hides most of the
                // wait for rows no longer in L1/L2 (the decoder wrote them a while ago).
                if (j[t] + 2 < src_h) {
                    if (src->ycc) {
                        prefetch(src->y + (j[t] + 2) * src->y_stride, src_w);
                        prefetch(src->cb + (j[t] + 2) / 2 * src->c_stride, cw);
                        prefetch(src->cr + (j[t] + 2) / 2 * src->c_stride, cw);
                    } else {
                        prefetch(src->bgr + (j[t] + 2) * src_w * 3, src_w * 3);
                    }
                }
                if (src->ycc && use_bw) {
                    ycc_row_avx512bw(src, j[t], (int16_t *)tb, (int16_t *)tr, plane[0], plane[1], plane[2]);
                } else if (src->ycc) {
                    ycc_row_generic(src, j[t], tb, tr, plane[0], plane[1], plane[2]);
                } else {
                    split_row_avx512(src->bgr + j[t] * src_w * 3, src_w, &ix, plane[0], plane[1], plane[2]);
                }
                horizontal3_avx512(plane, &bt, rows[slot[t]]);
            } else
#endif
            {
                if (src->ycc) {
                    ycc_row_generic(src, j[t], tb, tr, plane[0], plane[1], plane[2]);
                } else {
                    split_row_generic(src->bgr + j[t] * src_w * 3, src_w, plane[0], plane[1], plane[2]);
                }
                for (int c = 0; c < 3; c++) horizontal_generic(plane[c], xt, rows[slot[t]][c]);
            }
            row_of[slot[t]] = j[t];
        }
        for (int c = 0; c < 3; c++)
            vertical(use_avx512, rows[slot[0]][c], rows[slot[1]][c], yt->w0[y], yt->w1[y], mean[c], ow, pad_w,
                     dst + c * plane_stride + y * row_stride);
    }
    // Rows of zeros below the image.
    for (int c = 0; c < 3; c++)
        for (long y = yt->n; y < pad_h; y++) vertical(use_avx512, NULL, NULL, 0, 0, 0, 0, pad_w, dst + c * plane_stride + y * row_stride);
#ifdef SD_HAVE_AVX512
    if (use_avx512) _mm_sfence();
#endif
    free(scratch);
    return 0;
}

int sd_resize_planar_converts_fast(void) {
#ifdef SD_HAVE_AVX512
    return has_avx512() && has_avx512bw();
#else
    return 0;
#endif
}

int sd_resize_planar(const sd_pixels *src, const int *xi0, const int *xi1, const float *xw0, const float *xw1, long out_w,
                     const int *yi0, const int *yi1, const float *yw0, const float *yw1, long out_h, long pad_w, long pad_h,
                     const float mean[3], float *dst, long plane_stride, long row_stride) {
    taps xt = {xi0, xi1, xw0, xw1, out_w}, yt = {yi0, yi1, yw0, yw1, out_h};
#ifdef SD_HAVE_AVX512
    int fast = has_avx512();
#else
    int fast = 0;
#endif
    return resize(fast, src, &xt, &yt, pad_w, pad_h, mean, dst, plane_stride, row_stride);
}

int sd_resize_planar_generic(const sd_pixels *src, const int *xi0, const int *xi1, const float *xw0, const float *xw1, long out_w,
                             const int *yi0, const int *yi1, const float *yw0, const float *yw1, long out_h, long pad_w, long pad_h,
                             const float mean[3], float *dst, long plane_stride, long row_stride) {
    taps xt = {xi0, xi1, xw0, xw1, out_w}, yt = {yi0, yi1, yw0, yw1, out_h};
    return resize(0, src, &xt, &yt, pad_w, pad_h, mean, dst, plane_stride, row_stride);
}
