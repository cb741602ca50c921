#include "sd_jpeg.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

typedef struct {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    sd_jpeg_result *result;
    int truncated;
} sd_error_mgr;

static void sd_error_exit(j_common_ptr cinfo) {
    sd_error_mgr *err = (sd_error_mgr *)cinfo->err;
    err->base.format_message(cinfo, err->result->message);
    longjmp(err->jump, 1);
}

static void sd_emit_message(j_common_ptr cinfo, int level) {
    sd_error_mgr *err = (sd_error_mgr *)cinfo->err;
    if (level >= 0) return;  // trace messages: ignore
    // A corrupt-data warning. Premature end of data means truncation, which we refuse: libjpeg
    // would otherwise fill the rest of the image with grey and call it a success.
    if (err->base.msg_code == JWRN_JPEG_EOF) {
        err->truncated = 1;
        err->base.format_message(cinfo, err->result->message);
        longjmp(err->jump, 1);
    }
    err->result->warnings++;
    if (err->result->message[0] == 0) err->base.format_message(cinfo, err->result->message);
}

static void sd_output_message(j_common_ptr cinfo) { (void)cinfo; }

static void sd_init_error(struct jpeg_decompress_struct *cinfo, sd_error_mgr *err, sd_jpeg_result *r) {
    cinfo->err = jpeg_std_error(&err->base);
    err->base.error_exit = sd_error_exit;
    err->base.emit_message = sd_emit_message;
    err->base.output_message = sd_output_message;
    err->result = r;
    err->truncated = 0;
}

static int valid_scale(int d) { return d == 1 || d == 2 || d == 4 || d == 8; }

static void fail(sd_jpeg_result *r, int status, const char *msg) {
    r->status = status;
    snprintf(r->message, SD_JPEG_MSG_LEN, "%s", msg);
}

// Shared by probe and decode: header, scaling, output dimensions. Returns 0 when the caller
// should stop (r->status set).
static int start(struct jpeg_decompress_struct *cinfo, const unsigned char *data, size_t size,
                 int scale_denom, sd_jpeg_result *r) {
    if (!valid_scale(scale_denom)) { fail(r, SD_JPEG_BAD_ARGUMENT, "scale must be 1, 2, 4 or 8"); return 0; }
    if (size < 2 || data[0] != 0xFF || data[1] != 0xD8) {
        fail(r, SD_JPEG_NOT_JPEG, "missing the JPEG start-of-image marker (FF D8)");
        return 0;
    }
    jpeg_mem_src(cinfo, data, (unsigned long)size);
    jpeg_read_header(cinfo, TRUE);
    cinfo->scale_num = 1;
    cinfo->scale_denom = (unsigned int)scale_denom;
    cinfo->out_color_space = JCS_RGB;
    jpeg_calc_output_dimensions(cinfo);
    r->width = (int)cinfo->output_width;
    r->height = (int)cinfo->output_height;
    r->source_width = (int)cinfo->image_width;
    r->source_height = (int)cinfo->image_height;
    r->components = cinfo->num_components;
    // What the planar path handles: 2×2-subsampled chroma that libjpeg would upsample with its
    // "fancy" filter (it falls back to plain replication when the chroma is 2 samples wide or less).
    const jpeg_component_info *c = cinfo->comp_info;
    r->ycc420 = scale_denom == 1 && cinfo->num_components == 3 && cinfo->jpeg_color_space == JCS_YCbCr &&
                c[0].h_samp_factor == 2 && c[0].v_samp_factor == 2 && c[1].h_samp_factor == 1 && c[1].v_samp_factor == 1 &&
                c[2].h_samp_factor == 1 && c[2].v_samp_factor == 1 && (cinfo->image_width + 1) / 2 > 2 &&
                cinfo->do_fancy_upsampling && !cinfo->CCIR601_sampling;
    return 1;
}

static void classify_jump(sd_error_mgr *err, sd_jpeg_result *r) {
    if (err->truncated) r->status = SD_JPEG_TRUNCATED;
    else if (err->base.msg_code == JERR_OUT_OF_MEMORY) r->status = SD_JPEG_NO_MEMORY;
    else r->status = SD_JPEG_CORRUPT;
}

sd_jpeg_result sd_jpeg_probe(const unsigned char *data, size_t size, int scale_denom) {
    sd_jpeg_result r;
    memset(&r, 0, sizeof r);
    struct jpeg_decompress_struct cinfo;
    sd_error_mgr err;
    sd_init_error(&cinfo, &err, &r);
    jpeg_create_decompress(&cinfo);
    if (setjmp(err.jump)) {
        classify_jump(&err, &r);
        jpeg_destroy_decompress(&cinfo);
        return r;
    }
    start(&cinfo, data, size, scale_denom, &r);
    jpeg_destroy_decompress(&cinfo);
    return r;
}

// Where sd_jpeg_decode and sd_jpeg_decode_ycc420 put the pixels.
typedef struct {
    int planar;  // 0: interleaved rows at out; 1: 4:2:0 planes at y / cb / cr
    int bgr;
    unsigned char *out;
    size_t out_size;
    unsigned char *y, *cb, *cr;
    size_t y_stride, c_stride;
} destination;

// Sets the output colour space; 0 (r->status set) when the file or the buffers do not fit.
static int configure(struct jpeg_decompress_struct *cinfo, const destination *d, sd_jpeg_result *r) {
    if (d->planar) {
        size_t w = (size_t)r->width;
        if (!r->ycc420 || d->y_stride < w || d->c_stride < (w + 1) / 2 || d->y_stride % 16 || d->c_stride % 16) {
            fail(r, SD_JPEG_BAD_ARGUMENT, "not a YCbCr 4:2:0 JPEG, or plane strides too small");
            return 0;
        }
        cinfo->raw_data_out = TRUE;
        cinfo->out_color_space = JCS_YCbCr;
        return 1;
    }
    if (cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK) {
        fail(r, SD_JPEG_BAD_ARGUMENT, "CMYK JPEGs are not supported (convert the image to RGB)");
        return 0;
    }
    if (d->out == NULL || d->out_size < (size_t)r->width * 3 * (size_t)r->height) {
        fail(r, SD_JPEG_BAD_ARGUMENT, "output buffer too small");
        return 0;
    }
    cinfo->out_color_space = d->bgr ? JCS_EXT_BGR : JCS_EXT_RGB;
    return 1;
}

static void read_pixels(struct jpeg_decompress_struct *cinfo, const destination *d) {
    while (cinfo->output_scanline < cinfo->output_height) {
        size_t row = cinfo->output_scanline;
        if (!d->planar) {
            JSAMPROW rows[1] = { d->out + row * cinfo->output_width * 3 };
            jpeg_read_scanlines(cinfo, rows, 1);
            continue;
        }
        // Raw data comes in groups of 16 luma and 8 chroma rows.
        JSAMPROW yr[16], br[8], rr[8];
        for (int k = 0; k < 16; k++) yr[k] = d->y + (row + (size_t)k) * d->y_stride;
        for (int k = 0; k < 8; k++) {
            br[k] = d->cb + (row / 2 + (size_t)k) * d->c_stride;
            rr[k] = d->cr + (row / 2 + (size_t)k) * d->c_stride;
        }
        JSAMPARRAY planes[3] = {yr, br, rr};
        jpeg_read_raw_data(cinfo, planes, 16);
    }
}

// Zeroes what lies right of and below the image in the planes (libjpeg writes some of it, up to
// its block edges, and leaves the rest), so the planes do not depend on what the buffers held.
static void clear_margins(unsigned char *plane, size_t stride, size_t width, size_t height, size_t rows) {
    for (size_t y = 0; y < height && width < stride; y++) memset(plane + y * stride + width, 0, stride - width);
    if (rows > height) memset(plane + height * stride, 0, (rows - height) * stride);
}

static void clear_plane_margins(const sd_jpeg_result *r, const destination *d) {
    size_t w = (size_t)r->width, h = (size_t)r->height, rows = (h + 15) / 16 * 16;
    clear_margins(d->y, d->y_stride, w, h, rows);
    clear_margins(d->cb, d->c_stride, (w + 1) / 2, (h + 1) / 2, rows / 2);
    clear_margins(d->cr, d->c_stride, (w + 1) / 2, (h + 1) / 2, rows / 2);
}

static sd_jpeg_result decode(const unsigned char *data, size_t size, int scale_denom, const destination *d) {
    sd_jpeg_result r;
    memset(&r, 0, sizeof r);
    struct jpeg_decompress_struct cinfo;
    sd_error_mgr err;
    sd_init_error(&cinfo, &err, &r);
    jpeg_create_decompress(&cinfo);
    if (setjmp(err.jump)) {
        classify_jump(&err, &r);
        jpeg_destroy_decompress(&cinfo);
        return r;
    }
    if (!start(&cinfo, data, size, scale_denom, &r) || !configure(&cinfo, d, &r)) {
        jpeg_destroy_decompress(&cinfo);
        return r;
    }
    jpeg_start_decompress(&cinfo);
    read_pixels(&cinfo, d);
    if (d->planar) clear_plane_margins(&r, d);
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    r.status = SD_JPEG_OK;
    return r;
}

sd_jpeg_result sd_jpeg_decode(const unsigned char *data, size_t size, int scale_denom, int bgr,
                              unsigned char *out, size_t out_size) {
    destination d = {0, bgr, out, out_size, NULL, NULL, NULL, 0, 0};
    return decode(data, size, scale_denom, &d);
}

sd_jpeg_result sd_jpeg_decode_ycc420(const unsigned char *data, size_t size, unsigned char *y, size_t y_stride,
                                     unsigned char *cb, unsigned char *cr, size_t c_stride) {
    destination d = {1, 0, NULL, 0, y, cb, cr, y_stride, c_stride};
    return decode(data, size, 1, &d);
}

sd_jpeg_result sd_jpeg_encode(const unsigned char *pixels, int width, int height, int channels,
                              int bgr, int quality, unsigned char **out, unsigned long *out_size) {
    sd_jpeg_result r;
    memset(&r, 0, sizeof r);
    *out = NULL;
    *out_size = 0;
    if (width <= 0 || height <= 0 || (channels != 1 && channels != 3) || quality < 1 || quality > 100) {
        fail(&r, SD_JPEG_BAD_ARGUMENT, "width and height must be positive, channels 1 or 3, quality 1-100");
        return r;
    }
    struct jpeg_compress_struct cinfo;
    sd_error_mgr err;
    cinfo.err = jpeg_std_error(&err.base);
    err.base.error_exit = sd_error_exit;
    err.base.emit_message = sd_emit_message;
    err.base.output_message = sd_output_message;
    err.result = &r;
    err.truncated = 0;
    jpeg_create_compress(&cinfo);
    // volatile: modified between setjmp and longjmp.
    unsigned char *volatile buffer = NULL;
    unsigned long volatile buffer_size = 0;
    if (setjmp(err.jump)) {
        r.status = err.base.msg_code == JERR_OUT_OF_MEMORY ? SD_JPEG_NO_MEMORY : SD_JPEG_CORRUPT;
        jpeg_destroy_compress(&cinfo);
        free(buffer);
        return r;
    }
    jpeg_mem_dest(&cinfo, (unsigned char **)&buffer, (unsigned long *)&buffer_size);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = channels;
    cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : (bgr ? JCS_EXT_BGR : JCS_EXT_RGB);
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    size_t row = (size_t)width * (size_t)channels;
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW rows[1] = { (JSAMPROW)(pixels + row * cinfo.next_scanline) };
        jpeg_write_scanlines(&cinfo, rows, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    *out = buffer;
    *out_size = buffer_size;
    r.status = SD_JPEG_OK;
    r.width = width;
    r.height = height;
    return r;
}

void sd_jpeg_free(unsigned char *buffer) { free(buffer); }

const char *sd_jpeg_version(void) {
#ifdef LIBJPEG_TURBO_VERSION
#define SD_STR2(x) #x
#define SD_STR(x) SD_STR2(x)
    return "libjpeg-turbo " SD_STR(LIBJPEG_TURBO_VERSION) " (libjpeg API " SD_STR(JPEG_LIB_VERSION) ")";
#else
    return "libjpeg (API " "unknown" ")";
#endif
}
