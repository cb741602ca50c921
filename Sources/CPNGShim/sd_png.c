#include "sd_png.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Reading from memory, with the state the error handlers need.
typedef struct {
    const unsigned char *data;
    size_t size;
    size_t offset;
    int truncated;
    sd_png_result *result;
} sd_reader;

static void fail(sd_png_result *r, int status, const char *msg) {
    r->status = status;
    snprintf(r->message, SD_PNG_MSG_LEN, "%s", msg);
}

static void on_error(png_structp png, png_const_charp msg) {
    sd_reader *rd = (sd_reader *)png_get_error_ptr(png);
    if (rd->result->message[0] == 0) snprintf(rd->result->message, SD_PNG_MSG_LEN, "%s", msg);
    longjmp(png_jmpbuf(png), 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    sd_reader *rd = (sd_reader *)png_get_error_ptr(png);
    (void)msg;
    rd->result->warnings++;
}

static void read_bytes(png_structp png, png_bytep out, png_size_t n) {
    sd_reader *rd = (sd_reader *)png_get_io_ptr(png);
    if (n > rd->size - rd->offset) {
        rd->truncated = 1;
        png_error(png, "the data ends before the image does");
    }
    memcpy(out, rd->data + rd->offset, n);
    rd->offset += n;
}

static int check_signature(const unsigned char *data, size_t size, sd_png_result *r) {
    if (size < 8 || png_sig_cmp(data, 0, 8) != 0) {
        fail(r, SD_PNG_NOT_PNG, size < 8 ? "shorter than the 8-byte PNG signature" : "no PNG signature at the start");
        return 0;
    }
    return 1;
}

static void header(png_structp png, png_infop info, sd_png_result *r) {
    r->width = (int)png_get_image_width(png, info);
    r->height = (int)png_get_image_height(png, info);
    r->bit_depth = png_get_bit_depth(png, info);
    r->color_type = png_get_color_type(png, info);
    r->interlaced = png_get_interlace_type(png, info) == PNG_INTERLACE_ADAM7;
}

// The status of a longjmp'd failure: truncation, memory, or corrupt data.
static int failure_status(const sd_reader *rd) {
    if (rd->truncated) return SD_PNG_TRUNCATED;
    if (strstr(rd->result->message, "memory") != NULL) return SD_PNG_NO_MEMORY;
    return SD_PNG_CORRUPT;
}

sd_png_result sd_png_probe(const unsigned char *data, size_t size) {
    sd_png_result r;
    memset(&r, 0, sizeof r);
    if (!check_signature(data, size, &r)) return r;
    sd_reader rd = {data, size, 0, 0, &r};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &rd, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_read_struct(&png, &info, NULL);
        fail(&r, SD_PNG_NO_MEMORY, "out of memory");
        return r;
    }
    if (setjmp(png_jmpbuf(png))) {
        r.status = failure_status(&rd);
        png_destroy_read_struct(&png, &info, NULL);
        return r;
    }
    png_set_read_fn(png, &rd, read_bytes);
    png_read_info(png, info);
    header(png, info, &r);
    png_destroy_read_struct(&png, &info, NULL);
    return r;
}

sd_png_result sd_png_decode(const unsigned char *data, size_t size, int bgr, unsigned char *out, size_t out_size) {
    sd_png_result r;
    memset(&r, 0, sizeof r);
    if (!check_signature(data, size, &r)) return r;
    sd_reader rd = {data, size, 0, 0, &r};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &rd, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_read_struct(&png, &info, NULL);
        fail(&r, SD_PNG_NO_MEMORY, "out of memory");
        return r;
    }
    // Volatile: read after a longjmp.
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        r.status = failure_status(&rd);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return r;
    }
    png_set_read_fn(png, &rd, read_bytes);
    png_read_info(png, info);
    header(png, info, &r);
    if ((size_t)r.width * (size_t)r.height * 3 > out_size) {
        png_destroy_read_struct(&png, &info, NULL);
        fail(&r, SD_PNG_BAD_ARGUMENT, "output buffer too small");
        return r;
    }
    // OpenCV's transforms for IMREAD_COLOR (grfmt_png.cpp), in its order.
    if (r.bit_depth == 16) png_set_strip_16(png);
    png_set_strip_alpha(png);
    if (r.color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if ((r.color_type & PNG_COLOR_MASK_COLOR) == 0 && r.bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (r.color_type & PNG_COLOR_MASK_COLOR) {
        if (bgr) png_set_bgr(png);
    } else {
        png_set_gray_to_rgb(png);
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)r.width * 3) {
        png_destroy_read_struct(&png, &info, NULL);
        fail(&r, SD_PNG_CORRUPT, "unexpected row layout after conversion to 8-bit colour");
        return r;
    }
    rows = malloc(sizeof(png_bytep) * (size_t)(r.height > 0 ? r.height : 1));
    if (!rows) {
        png_destroy_read_struct(&png, &info, NULL);
        fail(&r, SD_PNG_NO_MEMORY, "out of memory");
        return r;
    }
    for (int y = 0; y < r.height; y++) rows[y] = out + (size_t)y * (size_t)r.width * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    return r;
}

// Growing a malloc'd buffer as libpng writes.
typedef struct {
    unsigned char *data;
    size_t size;
    size_t capacity;
    int no_memory;
} sd_writer;

static void write_bytes(png_structp png, png_bytep in, png_size_t n) {
    sd_writer *w = (sd_writer *)png_get_io_ptr(png);
    if (w->size + n > w->capacity) {
        size_t cap = w->capacity ? w->capacity * 2 : 4096;
        while (cap < w->size + n) cap *= 2;
        unsigned char *grown = realloc(w->data, cap);
        if (!grown) {
            w->no_memory = 1;
            png_error(png, "out of memory");
        }
        w->data = grown;
        w->capacity = cap;
    }
    memcpy(w->data + w->size, in, n);
    w->size += n;
}

static void flush_nothing(png_structp png) { (void)png; }

sd_png_result sd_png_encode(const unsigned char *pixels, int width, int height, int channels, int bgr,
                            unsigned char **out, size_t *out_size) {
    sd_png_result r;
    memset(&r, 0, sizeof r);
    *out = NULL;
    *out_size = 0;
    if ((channels != 1 && channels != 3) || width <= 0 || height <= 0) {
        fail(&r, SD_PNG_BAD_ARGUMENT, "need 1 or 3 channels and a positive size");
        return r;
    }
    sd_reader rd = {NULL, 0, 0, 0, &r};
    sd_writer w = {NULL, 0, 0, 0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &rd, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        fail(&r, SD_PNG_NO_MEMORY, "out of memory");
        return r;
    }
    if (setjmp(png_jmpbuf(png))) {
        r.status = w.no_memory ? SD_PNG_NO_MEMORY : SD_PNG_BAD_ARGUMENT;
        png_destroy_write_struct(&png, &info);
        free(w.data);
        return r;
    }
    png_set_write_fn(png, &w, write_bytes, flush_nothing);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
                 channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    if (channels == 3 && bgr) png_set_bgr(png);
    for (int y = 0; y < height; y++) png_write_row(png, (png_const_bytep)(pixels + (size_t)y * (size_t)width * (size_t)channels));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    r.width = width;
    r.height = height;
    r.bit_depth = 8;
    r.color_type = channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY;
    *out = w.data;
    *out_size = w.size;
    return r;
}

void sd_png_free(unsigned char *buffer) { free(buffer); }

const char *sd_png_version(void) { return png_get_libpng_ver(NULL); }
