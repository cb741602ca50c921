#ifndef SD_KERNELS_H
#define SD_KERNELS_H

// C compute kernels: the packed AVX-512 sgemm (sd_sgemm.c), the Winograd F(4×4, 3×3)
// transforms (sd_winograd.c) and Detectron's input resize (sd_resize.c). Swift code runs at the baseline x86-64 instruction set; these pick
// AVX-512 at run time.

/// 1 when this CPU runs the AVX-512 kernel of sd_sgemm (x86-64 with AVX-512F), else 0.
int sd_sgemm_available(void);

/// Single-threaded row-major C = alpha·op(A)·op(B) + beta·C (op(A) m×k, op(B) k×n), the same
/// contract as cblas_sgemm(CblasRowMajor, …). Only call it when sd_sgemm_available() is 1.
/// beta == 0 never reads C. Returns 0, or -1 when its packing buffers cannot be allocated
/// (C is then untouched).
int sd_sgemm(int trans_a, int trans_b, long m, long n, long k, float alpha,
             const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc);

/// What sd_sgemm_epilogue does to each finished value v of C's row i, column j, in this order
/// (each step only where its pointer is set): v += bias[i]; v = v·scale[i] + shift[i] (scale
/// and shift together; a multiply, then an add); v = (0 + v) + residual[i·ldr + j]; with relu,
/// v = v > 0 ? v : 0. The same operations as applying them after the GEMM, so the same values.
typedef struct {
    const float *bias, *scale, *shift;
    const float *residual;
    long ldr;
    int relu;
} sd_epilogue;

/// sd_sgemm with `epilogue` (may be NULL) applied to each element of C as it is stored for the
/// last time, while it is still in a register.
int sd_sgemm_epilogue(int trans_a, int trans_b, long m, long n, long k, float alpha,
                      const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc,
                      const sd_epilogue *epilogue);

/// Winograd F(4×4, 3×3) transforms (points 0, ±1, ±2, ∞), 16 tiles or filters per vector; the
/// AVX-512 build of each runs where the CPU has AVX-512F, a generic one elsewhere.
///
/// U = G g Gᵀ for filters begin ..< end of the k·c 3×3 ones at w: position ξ of filter i at u[ξ·kc + i].
void sd_winograd_f4_filters(const float *w, long kc, long begin, long end, float *u);

/// V = Bᵀ d B for the 6×6 input tiles of one channel plane (h × w, padded by pad_t / pad_l with
/// zeros), tile rows row0 ..< row0 + rows of tw tiles each: element ξ of the band's tile i at v[ξ·stride + i].
void sd_winograd_f4_input(const float *plane, long h, long w, long row0, long rows, long tw, long pad_t, long pad_l,
                          float *v, long stride);

/// Y = Aᵀ M A for the band's tiles of one output channel (element ξ of tile i at m[ξ·stride + i]),
/// written into its plane (ho × wo) where the 4×4 tile lies inside it.
void sd_winograd_f4_output(const float *m, long stride, long row0, long rows, long tw, float *y, long ho, long wo);

/// The baseline-instruction-set builds of the three, for tests: bitwise the same results.
void sd_winograd_f4_filters_generic(const float *w, long kc, long begin, long end, float *u);
void sd_winograd_f4_input_generic(const float *plane, long h, long w, long row0, long rows, long tw, long pad_t, long pad_l,
                                  float *v, long stride);
void sd_winograd_f4_output_generic(const float *m, long stride, long row0, long rows, long tw, float *y, long ho, long wo);

/// The 8-bit pixels sd_resize_planar reads, width × height. Either BGR interleaved (ycc == 0;
/// rows of 3·width bytes at bgr), or the planes of a 4:2:0 JPEG as libjpeg's raw-data mode
/// gives them (ycc == 1): Y rows at y, Cb and Cr rows of (width + 1) / 2 samples at cb / cr,
/// strides multiples of 16 bytes; they become BGR exactly as libjpeg-turbo converts them (h2v2
/// fancy upsampling, its fixed-point YCbCr → RGB), which needs (width + 1) / 2 > 2.
typedef struct {
    int ycc;
    long width, height;
    const unsigned char *bgr;
    const unsigned char *y, *cb, *cr;
    long y_stride, c_stride;
} sd_pixels;

/// Detectron's image preparation: the pixels resized bilinearly with the given taps (output
/// column x reads source columns xi0[x], xi1[x] with weights xw0[x], xw1[x]; rows likewise),
/// mean[c] subtracted, written as float planes: channel c (B, G, R), row y, column x at
/// dst[c·plane_stride + y·row_stride + x]; the rest of a pad_w × pad_h region (pad_w ≥ out_w,
/// pad_h ≥ out_h: a padded blob's image) is written as zeros. Taps must not decrease. Returns 0,
/// or -1 when its scratch memory cannot be allocated (dst untouched).
int sd_resize_planar(const sd_pixels *src, const int *xi0, const int *xi1, const float *xw0, const float *xw1, long out_w,
                     const int *yi0, const int *yi1, const float *yw0, const float *yw1, long out_h, long pad_w, long pad_h,
                     const float mean[3], float *dst, long plane_stride, long row_stride);
/// 1 when sd_resize_planar converts YCbCr planes with SIMD (AVX-512BW), so that decoding to
/// planes and converting here beats libjpeg's own conversion; 0 when it would be slower.
int sd_resize_planar_converts_fast(void);
/// Its baseline-instruction-set build, for tests: bitwise the same results.
int sd_resize_planar_generic(const sd_pixels *src, const int *xi0, const int *xi1, const float *xw0, const float *xw1, long out_w,
                             const int *yi0, const int *yi1, const float *yw0, const float *yw1, long out_h, long pad_w, long pad_h,
                             const float mean[3], float *dst, long plane_stride, long row_stride);

#endif
