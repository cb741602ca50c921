// The only code that calls libpng. libpng reports errors by longjmp, which Swift cannot survive,
// so each entry point sets its own jump target and turns errors into return codes with the
// library's message. Nothing is printed (warnings are counted) and nothing exits.
#ifndef SD_PNG_H
#define SD_PNG_H

#include <stddef.h>

#define SD_PNG_MSG_LEN 200

enum sd_png_status {
    SD_PNG_OK = 0,
    SD_PNG_NOT_PNG = 1,       // does not start with the 8-byte PNG signature
    SD_PNG_TRUNCATED = 2,     // data ended before the image did
    SD_PNG_CORRUPT = 3,       // libpng refused the data (bad chunk, CRC, zlib stream, header)
    SD_PNG_BAD_ARGUMENT = 4,  // caller error (buffer too small, bad channels)
    SD_PNG_NO_MEMORY = 5
};

typedef struct sd_png_result {
    int status;
    int width;
    int height;
    int bit_depth;    // 1, 2, 4, 8 or 16
    int color_type;   // PNG's: 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGB + alpha
    int interlaced;   // 1 for Adam7
    int warnings;     // recoverable problems libpng reported (e.g. a bad ancillary chunk's CRC)
    char message[SD_PNG_MSG_LEN];
} sd_png_result;

/// Reads the header (signature and IHDR).
sd_png_result sd_png_probe(const unsigned char *data, size_t size);

/// Decodes to interleaved 8-bit pixels, 3 channels (RGB, or BGR when bgr != 0), the way OpenCV's
/// imread(IMREAD_COLOR) reads a PNG: 16-bit samples keep their high byte, alpha is dropped
/// without compositing (tRNS too), palettes expand to their colours, grey (1, 2, 4, 8 or 16
/// bits) expands to three equal channels, Adam7 is de-interlaced. `out` must hold
/// width*height*3 bytes.
sd_png_result sd_png_decode(const unsigned char *data, size_t size, int bgr, unsigned char *out, size_t out_size);

/// Encodes interleaved 8-bit pixels (1 channel grey, or 3 channels RGB / BGR when bgr != 0) with
/// zlib compression. On success *out points to a malloc'd buffer of *out_size bytes; release
/// it with sd_png_free.
sd_png_result sd_png_encode(const unsigned char *pixels, int width, int height, int channels, int bgr,
                            unsigned char **out, size_t *out_size);

void sd_png_free(unsigned char *buffer);

/// The libpng version the shim runs with, e.g. "1.6.39".
const char *sd_png_version(void);

#endif
