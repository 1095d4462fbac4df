/* Fuzz target: what fmhost predict reads.  The input is given both as a
 * PNG picture (fm_cli_png_load: libpng's reader, the size limit, the area
 * resize; --invert when its length is odd) and as an IDX image file read
 * alone (fm_idx_load_images, plain or gzip). */
#include <stdlib.h>

#include "cli.h"
#include "fuzz_util.h"

static fuzz_file input;
static bool ready;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready) {
        fuzz_file_init(&input, "image-input");
        ready = true;
    }
    fuzz_file_put(&input, data, size);

    uint8_t pixels[FM_IMAGE_PIXELS];
    if (fm_cli_png_load(input.path, size & 1, pixels) == FM_OK) {
        unsigned sum = 0;  /* keeps the reads */
        for (int i = 0; i < FM_IMAGE_PIXELS; i++) sum += pixels[i];
        if (sum > 255u * FM_IMAGE_PIXELS) abort();
    }
    uint8_t *images = NULL;
    int n = -1;
    if (fm_idx_load_images(input.path, &images, &n) == FM_OK) {
        /* What predict relies on for a file that passed. */
        if (n <= 0 || !images) abort();
        volatile uint8_t last = images[(size_t)n * FM_IMAGE_PIXELS - 1];  /* all of it is there */
        (void)last;
    } else if (images) {
        abort();
    }
    free(images);
    return 0;
}
