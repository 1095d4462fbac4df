/* Pictures for fmhost predict: a PNG file of any size, colour or grey, made
 * a 28x28 grey image as FashionMNIST's (light object on a dark ground). */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* A decoded picture larger than this is refused before allocating it. */
#define IMAGE_MAX_PIXELS (64u << 20)

/* out[28*28] from src [h, w] by area averaging: each output pixel is the
 * mean of the source area it covers, partly covered pixels weighted by the
 * part inside (an image already 28x28 comes out unchanged); rounded to the
 * nearest level. */
static void resize_area(uint8_t *out, const uint8_t *src, int w, int h)
{
    const int ow = FM_IMAGE_W, oh = FM_IMAGE_H;
    for (int oy = 0; oy < oh; oy++) {
        double y0 = (double)oy * h / oh, y1 = (double)(oy + 1) * h / oh;
        for (int ox = 0; ox < ow; ox++) {
            double x0 = (double)ox * w / ow, x1 = (double)(ox + 1) * w / ow;
            double sum = 0.0, area = 0.0;
            for (int y = (int)y0; y < h && y < y1; y++) {
                double wy = (y + 1 < y1 ? y + 1 : y1) - (y > y0 ? y : y0);
                for (int x = (int)x0; x < w && x < x1; x++) {
                    double wx = (x + 1 < x1 ? x + 1 : x1) - (x > x0 ? x : x0);
                    sum += wy * wx * src[(size_t)y * w + x];
                    area += wy * wx;
                }
            }
            double v = sum / area + 0.5;
            out[oy * ow + ox] = (uint8_t)(v > 255.0 ? 255.0 : v);
        }
    }
}

fm_status fm_cli_png_load(const char *path, bool invert, uint8_t *out)
{
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&image, path))
        return fm_error_set(FM_ERR_FORMAT, "%s: cannot read as PNG: %s", path, image.message);
    if ((uint64_t)image.width * image.height > IMAGE_MAX_PIXELS) {
        png_image_free(&image);
        return fm_error_set(FM_ERR_FORMAT, "%s: %ux%u pixels, more than the %u this reader "
                            "accepts: scale the picture down first", path, image.width,
                            image.height, IMAGE_MAX_PIXELS);
    }
    /* libpng makes colour grey (from linear light) and composites any
     * transparency onto a black ground, FashionMNIST's. */
    image.format = PNG_FORMAT_GRAY;
    size_t bytes = PNG_IMAGE_SIZE(image);
    uint8_t *pixels = malloc(bytes ? bytes : 1);
    if (!pixels) {
        png_image_free(&image);
        return fm_error_set(FM_ERR_NOMEM, "%s: out of memory for %zu bytes", path, bytes);
    }
    png_color black = {0, 0, 0};
    if (!png_image_finish_read(&image, &black, pixels, 0, NULL)) {
        free(pixels);
        return fm_error_set(FM_ERR_FORMAT, "%s: cannot decode the PNG: %s", path, image.message);
    }
    if (invert)
        for (size_t i = 0; i < bytes; i++) pixels[i] = (uint8_t)(255 - pixels[i]);
    resize_area(out, pixels, (int)image.width, (int)image.height);
    free(pixels);
    return FM_OK;
}
