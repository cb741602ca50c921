// Included by sd_winograd.c once per instruction set, with SD_TARGET (the target attribute) and
// SD_FN(name) (the name for this build) defined. See sd_kernels.h for the contracts.

static inline long SD_FN(min_l)(long a, long b) { return a < b ? a : b; }

// Stores x at p, or its first `count` lanes.
SD_TARGET static inline void SD_FN(put)(float *p, const v16 *x, long count) {
    if (count == 16) {
        *(v16u *)p = *x;
    } else {
        for (long l = 0; l < count; l++) p[l] = (*x)[l];
    }
}

// G (6 × 3) applied to (a, b, d).
SD_TARGET static inline void SD_FN(g6)(const v16 *pa, const v16 *pb, const v16 *pd, v16 *o) {
    v16 a = *pa, b = *pb, d = *pd;
    v16 a24 = a * (1.0f / 24), b12 = b * (1.0f / 12), d6 = d * (1.0f / 6);
    o[0] = a * 0.25f;
    o[1] = (a + b + d) * (-1.0f / 6);
    o[2] = (a - b + d) * (-1.0f / 6);
    o[3] = a24 + b12 + d6;
    o[4] = a24 - b12 + d6;
    o[5] = d;
}

// Bᵀ (6 × 6) applied to d[0 ..< 6].
SD_TARGET static inline void SD_FN(bt)(const v16 *d, v16 *o) {
    o[0] = 4 * d[0] - 5 * d[2] + d[4];
    o[1] = (d[3] + d[4]) - 4 * (d[1] + d[2]);
    o[2] = (d[4] - d[3]) + 4 * (d[1] - d[2]);
    o[3] = (d[4] - d[2]) + 2 * (d[3] - d[1]);
    o[4] = (d[4] - d[2]) - 2 * (d[3] - d[1]);
    o[5] = 4 * d[1] - 5 * d[3] + d[5];
}

// Aᵀ (4 × 6) applied to m[0 ..< 6].
SD_TARGET static inline void SD_FN(at)(const v16 *m, v16 *o) {
    v16 p12 = m[1] + m[2], d12 = m[1] - m[2], p34 = m[3] + m[4], d34 = m[3] - m[4];
    o[0] = m[0] + p12 + p34;
    o[1] = d12 + 2 * d34;
    o[2] = p12 + 4 * p34;
    o[3] = d12 + 8 * d34 + m[5];
}

SD_TARGET static void SD_FN(f4_filters)(const float *w, long kc, long begin, long end, float *u) {
    float gathered[9 * 16];
    for (long i0 = begin; i0 < end; i0 += 16) {
        long count = SD_FN(min_l)(16, end - i0);
        // gathered[e·16 + l] = element e of filter i0 + l.
        for (long l = 0; l < 16; l++)
            for (long e = 0; e < 9; e++) gathered[e * 16 + l] = l < count ? w[9 * (i0 + l) + e] : 0;
        v16 g[9];
        for (long e = 0; e < 9; e++) g[e] = *(const v16u *)(gathered + e * 16);
        // t = G g (column j of t is G applied to column j of g); row r of U is G applied to row r of t.
        v16 c[3][6];
        for (long j = 0; j < 3; j++) SD_FN(g6)(&g[j], &g[3 + j], &g[6 + j], c[j]);
        for (long r = 0; r < 6; r++) {
            v16 row[6];
            SD_FN(g6)(&c[0][r], &c[1][r], &c[2][r], row);
            for (long q = 0; q < 6; q++) SD_FN(put)(u + (6 * r + q) * kc + i0, &row[q], count);
        }
    }
}

SD_TARGET static void SD_FN(f4_input)(const float *plane, long h, long w, long row0, long rows, long tw, long pad_t, long pad_l,
                                      float *v, long stride) {
    // The rows of a tile row split by column phase: phases[(r·4 + p)·len + j] = input (y0 + r, 4j + p − pad_l),
    // zero outside the plane, so column q of 16 neighbouring tiles is one contiguous vector.
    long groups = (tw + 15) / 16, len = 16 * groups + 1;
    float phases[24 * len];
    float t[36 * 16];
    for (long ty = row0; ty < row0 + rows; ty++) {
        long y0 = 4 * ty - pad_t, base = (ty - row0) * tw;
        for (long r = 0; r < 6; r++) {
            long iy = y0 + r;
            for (long p = 0; p < 4; p++) {
                float *dst = phases + (r * 4 + p) * len;
                memset(dst, 0, sizeof(float) * (size_t)len);
                if (iy < 0 || iy >= h) continue;
                long last = w - 1 + pad_l - p, first = (pad_l - p + 3) / 4;
                long stop = last < 0 ? 0 : SD_FN(min_l)(len, last / 4 + 1);
                const float *row = plane + iy * w + p - pad_l;
                for (long j = first; j < stop; j++) dst[j] = row[4 * j];
            }
        }
        for (long g = 0; g < groups; g++) {
            long j = 16 * g, count = SD_FN(min_l)(16, tw - j);
            // Bᵀ d, column by column: t[(6r + q)·16].
            for (long q = 0; q < 6; q++) {
                v16 d[6], o[6];
                for (long r = 0; r < 6; r++) d[r] = *(const v16u *)(phases + (r * 4 + (q & 3)) * len + j + (q >> 2));
                SD_FN(bt)(d, o);
                for (long r = 0; r < 6; r++) *(v16u *)(t + (6 * r + q) * 16) = o[r];
            }
            // (Bᵀ d) B, row by row, into v.
            for (long r = 0; r < 6; r++) {
                v16 d[6], o[6];
                for (long q = 0; q < 6; q++) d[q] = *(const v16u *)(t + (6 * r + q) * 16);
                SD_FN(bt)(d, o);
                for (long q = 0; q < 6; q++) SD_FN(put)(v + (6 * r + q) * stride + base + j, &o[q], count);
            }
        }
    }
}

SD_TARGET static void SD_FN(f4_output)(const float *m, long stride, long row0, long rows, long tw, float *y, long ho, long wo) {
    long groups = (tw + 15) / 16;
    float s[24 * 16], out[16 * 16];
    for (long ty = row0; ty < row0 + rows; ty++) {
        long base = (ty - row0) * tw;
        for (long g = 0; g < groups; g++) {
            long j = 16 * g, count = SD_FN(min_l)(16, tw - j);
            // Aᵀ on the rows of m, column by column: s[(6r + q)·16].
            for (long q = 0; q < 6; q++) {
                v16 x[6], o[4];
                for (long r = 0; r < 6; r++) {
                    const float *p = m + (6 * r + q) * stride + base + j;
                    if (count == 16) {
                        x[r] = *(const v16u *)p;
                    } else {
                        v16 partial = {0};
                        for (long l = 0; l < count; l++) partial[l] = p[l];
                        x[r] = partial;
                    }
                }
                SD_FN(at)(x, o);
                for (long r = 0; r < 4; r++) *(v16u *)(s + (6 * r + q) * 16) = o[r];
            }
            // Then on the columns: out[(4r + c)·16 + lane].
            for (long r = 0; r < 4; r++) {
                v16 x[6], o[4];
                for (long q = 0; q < 6; q++) x[q] = *(const v16u *)(s + (6 * r + q) * 16);
                SD_FN(at)(x, o);
                for (long c = 0; c < 4; c++) *(v16u *)(out + (4 * r + c) * 16) = o[c];
            }
            for (long r = 0; r < 4; r++) {
                long oy = 4 * ty + r;
                if (oy >= ho) break;
                float *row = y + oy * wo;
                if (count == 16 && 4 * (j + 16) <= wo) {
                    // 16 whole tiles: the row's 64 values are the four column vectors interleaved.
                    v16 c0 = *(const v16u *)(out + (4 * r) * 16), c1 = *(const v16u *)(out + (4 * r + 1) * 16);
                    v16 c2 = *(const v16u *)(out + (4 * r + 2) * 16), c3 = *(const v16u *)(out + (4 * r + 3) * 16);
#define SD_LO 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#define SD_HI 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
                    v16 a0 = __builtin_shufflevector(c0, c2, SD_LO), a1 = __builtin_shufflevector(c0, c2, SD_HI);
                    v16 b0 = __builtin_shufflevector(c1, c3, SD_LO), b1 = __builtin_shufflevector(c1, c3, SD_HI);
                    float *o = row + 4 * j;
                    *(v16u *)o = __builtin_shufflevector(a0, b0, SD_LO);
                    *(v16u *)(o + 16) = __builtin_shufflevector(a0, b0, SD_HI);
                    *(v16u *)(o + 32) = __builtin_shufflevector(a1, b1, SD_LO);
                    *(v16u *)(o + 48) = __builtin_shufflevector(a1, b1, SD_HI);
#undef SD_LO
#undef SD_HI
                    continue;
                }
                for (long l = 0; l < count; l++) {
                    long ox = 4 * (j + l);
                    for (long c = 0; c < 4 && ox + c < wo; c++) row[ox + c] = out[(4 * r + c) * 16 + l];
                }
            }
        }
    }
}
