// Winograd F(4×4, 3×3) transforms, written once with vector extensions (16 floats a vector) in
// sd_winograd_impl.h and compiled twice: for AVX-512F and for the baseline instruction set. The
// exported functions pick one at run time.
#include "sd_kernels.h"

#include <string.h>

// No fused multiply-adds from contraction: both builds compute bitwise the same values.
#pragma STDC FP_CONTRACT OFF

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));

#if defined(__x86_64__)
#define SD_TARGET __attribute__((target("avx512f")))
#define SD_FN(name) name##_avx512
#include "sd_winograd_impl.h"
#undef SD_TARGET
#undef SD_FN
#endif

#define SD_TARGET
#define SD_FN(name) name##_generic
#include "sd_winograd_impl.h"
#undef SD_TARGET
#undef SD_FN

static int has_avx512(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

#if defined(__x86_64__)
#define SD_DISPATCH(name, ...) (has_avx512() ? name##_avx512(__VA_ARGS__) : name##_generic(__VA_ARGS__))
#else
#define SD_DISPATCH(name, ...) name##_generic(__VA_ARGS__)
#endif

void sd_winograd_f4_filters(const float *w, long kc, long begin, long end, float *u) {
    SD_DISPATCH(f4_filters, w, kc, begin, end, u);
}

void sd_winograd_f4_input(const float *plane, long h, long w, long row0, long rows, long tw, long pad_t, long pad_l,
                          float *v, long stride) {
    SD_DISPATCH(f4_input, plane, h, w, row0, rows, tw, pad_t, pad_l, v, stride);
}

void sd_winograd_f4_output(const float *m, long stride, long row0, long rows, long tw, float *y, long ho, long wo) {
    SD_DISPATCH(f4_output, m, stride, row0, rows, tw, y, ho, wo);
}

void sd_winograd_f4_filters_generic(const float *w, long kc, long begin, long end, float *u) {
    f4_filters_generic(w, kc, begin, end, u);
}

void sd_winograd_f4_input_generic(const float *plane, long h, long w, long row0, long rows, long tw, long pad_t, long pad_l,
                                  float *v, long stride) {
    f4_input_generic(plane, h, w, row0, rows, tw, pad_t, pad_l, v, stride);
}

void sd_winograd_f4_output_generic(const float *m, long stride, long row0, long rows, long tw, float *y, long ho, long wo) {
    f4_output_generic(m, stride, row0, rows, tw, y, ho, wo);
}
