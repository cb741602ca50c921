// Decode + Detectron resize per image, the two ways the loader can do it, over a folder of
// JPEGs: libjpeg-turbo to BGR then sd_resize_planar, or (4:2:0 files) libjpeg's raw-data planes
// then sd_resize_planar converting them. Medians of 5 passes, ms per image for each step; with
// `generic` the baseline build of the kernel runs (what CPUs without AVX-512 get). A tool, not a
// test. Build and run (release flags):
//
//   clang -O3 -I Sources/CKernels/include tools/bench_decode.c Sources/CKernels/sd_resize.c -ljpeg -lm -o /tmp/bench_decode
//   /tmp/bench_decode DIR [generic]        # DIR: the JPEGs tools/bench_dataloader.py makes
#include "sd_kernels.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>  // before jpeglib.h, which uses FILE
#include <jpeglib.h>
#include <stdlib.h>
#include <string.h>
#include "bench_timing.h"

typedef struct {
    unsigned char *bytes;
    long size;
} file;

// Decodes to BGR (planar == 0) or to 4:2:0 planes; returns 0 when the file is not 4:2:0.
static int decode(const file *f, int planar, unsigned char *bgr, unsigned char *y, unsigned char *cb, unsigned char *cr,
                  sd_pixels *out) {
    struct jpeg_decompress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_decompress(&c);
    jpeg_mem_src(&c, f->bytes, (unsigned long)f->size);
    jpeg_read_header(&c, TRUE);
    long w = c.image_width, h = c.image_height, cw = (w + 1) / 2;
    long ys = (w + 15) / 16 * 16, cs = (cw + 15) / 16 * 16;
    if (w > 4096 || h > 4096 || c.num_components != 3) {  // the buffers below, and colour only
        jpeg_destroy_decompress(&c);
        return 0;
    }
    if (planar && !(c.num_components == 3 && c.comp_info[0].h_samp_factor == 2 && c.comp_info[0].v_samp_factor == 2 &&
                    c.comp_info[1].h_samp_factor == 1 && c.comp_info[1].v_samp_factor == 1 && cw > 2)) {
        jpeg_destroy_decompress(&c);
        return 0;
    }
    if (planar) {
        c.raw_data_out = TRUE;
        c.out_color_space = JCS_YCbCr;
    } else {
        c.out_color_space = JCS_EXT_BGR;
    }
    jpeg_start_decompress(&c);
    while (c.output_scanline < c.output_height) {
        long r = c.output_scanline;
        if (!planar) {
            JSAMPROW row[1] = {bgr + r * w * 3};
            jpeg_read_scanlines(&c, row, 1);
            continue;
        }
        JSAMPROW yr[16], br[8], rr[8];
        for (int k = 0; k < 16; k++) yr[k] = y + (r + k) * ys;
        for (int k = 0; k < 8; k++) {
            br[k] = cb + (r / 2 + k) * cs;
            rr[k] = cr + (r / 2 + k) * cs;
        }
        JSAMPARRAY planes[3] = {yr, br, rr};
        jpeg_read_raw_data(&c, planes, 16);
    }
    jpeg_finish_decompress(&c);
    jpeg_destroy_decompress(&c);
    sd_pixels p = {planar, w, h, planar ? NULL : bgr, y, cb, cr, ys, cs};
    *out = p;
    return 1;
}

// Resize.taps of ImagingTests / Transforms.swift: OpenCV INTER_LINEAR's source columns and weights.
static void taps(long src, long dst, double s, int *i0, int *i1, float *w0, float *w1) {
    for (long d = 0; d < dst; d++) {
        float f = (float)((d + 0.5) / s - 0.5);
        long i = (long)floorf(f);
        f -= (float)i;
        if (i < 0) { i = 0; f = 0; }
        if (i >= src - 1) { i = src - 1; f = 0; }
        i0[d] = (int)i;
        i1[d] = (int)(i + 1 < src ? i + 1 : src - 1);
        w0[d] = 1 - f;
        w1[d] = f;
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [generic]\n", argv[0]);
        return 2;
    }
    int generic = argc > 2 && strcmp(argv[2], "generic") == 0;
    file files[1024];
    int n = 0;
    DIR *d = opendir(argv[1]);
    if (!d) { perror(argv[1]); return 1; }
    for (struct dirent *e; (e = readdir(d)) && n < 1024;) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 4, ".jpg")) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        files[n].size = ftell(f);
        fseek(f, 0, SEEK_SET);
        files[n].bytes = malloc((size_t)files[n].size);
        if (fread(files[n].bytes, 1, (size_t)files[n].size, f) == (size_t)files[n].size) n++;
        fclose(f);
    }
    closedir(d);
    if (n == 0) { fprintf(stderr, "%s holds no .jpg files\n", argv[1]); return 1; }

    const long maxw = 4096, maxh = 4096;
    unsigned char *bgr = malloc(maxw * maxh * 3), *y = malloc(maxw * maxh), *cb = malloc(maxw * maxh / 2), *cr = malloc(maxw * maxh / 2);
    float mean[3] = {102.9801f, 115.9465f, 122.7717f};
    float *dst = aligned_alloc(64, (size_t)3 * 1024 * 1024 * sizeof(float) * 4);
    int *xi0 = malloc(8192 * 4), *xi1 = malloc(8192 * 4), *yi0 = malloc(8192 * 4), *yi1 = malloc(8192 * 4);
    float *xw0 = malloc(8192 * 4), *xw1 = malloc(8192 * 4), *yw0 = malloc(8192 * 4), *yw1 = malloc(8192 * 4);
    printf("%d files, %s kernel\n", n, generic ? "baseline" : "dispatched (AVX-512 where present)");
    for (int planar = 0; planar < 2; planar++) {
        double dec[5], res[5];
        int used = 0;
        for (int pass = 0; pass < 5; pass++) {
            double td = 0, tr = 0;
            used = 0;
            for (int i = 0; i < n; i++) {
                sd_pixels p;
                double t0 = now();
                if (!decode(&files[i], planar, bgr, y, cb, cr, &p)) continue;
                double t1 = now();
                // Detectron's scale: shorter side 500, longer at most 833.
                double s = 500.0 / (p.width < p.height ? p.width : p.height);
                long longer = p.width > p.height ? p.width : p.height;
                if (nearbyint(s * longer) > 833) s = 833.0 / longer;
                long ow = (long)nearbyint(p.width * s), oh = (long)nearbyint(p.height * s);
                long wp = (ow + 31) / 32 * 32, hp = (oh + 31) / 32 * 32;
                taps(p.width, ow, s, xi0, xi1, xw0, xw1);
                taps(p.height, oh, s, yi0, yi1, yw0, yw1);
                (generic ? sd_resize_planar_generic : sd_resize_planar)(&p, xi0, xi1, xw0, xw1, ow, yi0, yi1, yw0, yw1, oh, wp, hp, mean, dst,
                                                                          hp * wp, wp);
                tr += now() - t1;
                td += t1 - t0;
                used++;
            }
            dec[pass] = td / (used ? used : 1);
            res[pass] = tr / (used ? used : 1);
        }
        qsort(dec, 5, sizeof dec[0], by_value);
        qsort(res, 5, sizeof res[0], by_value);
        printf("%-6s %d images: decode %.3f ms + resize %.3f ms = %.3f ms per image\n", planar ? "planes" : "BGR", used,
               dec[2] * 1e3, res[2] * 1e3, (dec[2] + res[2]) * 1e3);
    }
    return 0;
}
