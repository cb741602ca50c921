// The only code that calls libjpeg. libjpeg reports errors by longjmp, which Swift cannot
// survive, so each entry point sets its own jump target and turns errors into return codes with
// the library's message. Nothing is printed and nothing exits.
#ifndef SD_JPEG_H
#define SD_JPEG_H

#include <stddef.h>

#define SD_JPEG_MSG_LEN 200

enum sd_jpeg_status {
    SD_JPEG_OK = 0,
    SD_JPEG_NOT_JPEG = 1,      // does not start with the SOI marker
    SD_JPEG_TRUNCATED = 2,     // data ended before the image did
    SD_JPEG_CORRUPT = 3,       // libjpeg refused the data
    SD_JPEG_BAD_ARGUMENT = 4,  // caller error (buffer too small, bad scale, bad channels)
    SD_JPEG_NO_MEMORY = 5
};

typedef struct sd_jpeg_result {
    int status;
    int width;        // output width (after DCT scaling)
    int height;       // output height (after DCT scaling)
    int source_width;
    int source_height;
    int components;   // components in the file (1 grey, 3 colour, 4 CMYK)
    int warnings;     // recoverable corrupt-data warnings libjpeg emitted
    int ycc420;       // 1 when sd_jpeg_decode_ycc420 can decode it (full scale only)
    char message[SD_JPEG_MSG_LEN];
} sd_jpeg_result;

/// Reads the header and computes the output size for a DCT downscale of 1/scale_denom
/// (1, 2, 4 or 8).
sd_jpeg_result sd_jpeg_probe(const unsigned char *data, size_t size, int scale_denom);

/// Decodes to interleaved 8-bit pixels, 3 channels (RGB, or BGR when bgr != 0), scaled by
/// 1/scale_denom. `out` must hold width*height*3 bytes as given by sd_jpeg_probe.
sd_jpeg_result sd_jpeg_decode(const unsigned char *data, size_t size, int scale_denom, int bgr,
                              unsigned char *out, size_t out_size);

/// Decodes a YCbCr 4:2:0 file (sd_jpeg_probe said ycc420) to its planes as libjpeg's raw-data
/// mode gives them: Y at y (rows of y_stride bytes, ceil(height / 16)·16 rows), Cb and Cr at cb /
/// cr (rows of c_stride bytes, ceil(height / 16)·8 rows). Strides: multiples of 16, at least
/// the width and (width + 1) / 2; bytes right of and below the image are set to zero, whatever the
/// buffers held. Converting them with libjpeg-turbo's upsampling and colour
/// conversion gives exactly sd_jpeg_decode's pixels; decoding this way skips those two passes.
sd_jpeg_result sd_jpeg_decode_ycc420(const unsigned char *data, size_t size, unsigned char *y, size_t y_stride,
                                     unsigned char *cb, unsigned char *cr, size_t c_stride);

/// Encodes interleaved 8-bit pixels (1 channel grey, or 3 channels RGB / BGR when bgr != 0).
/// On success *out points to a malloc'd buffer of *out_size bytes; release it with sd_jpeg_free.
sd_jpeg_result sd_jpeg_encode(const unsigned char *pixels, int width, int height, int channels,
                              int bgr, int quality, unsigned char **out, unsigned long *out_size);

void sd_jpeg_free(unsigned char *buffer);

/// The libjpeg-turbo version the shim was compiled against, e.g. "2.1.5" (62 ABI).
const char *sd_jpeg_version(void);

#endif
