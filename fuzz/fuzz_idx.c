/* Fuzz target: the IDX reader (fm_dataset_load).
 *
 * FUZZ_IDX_GZIP 0 (fuzz_idx_raw): the input is the file as stored, plain or
 * gzip.  FUZZ_IDX_GZIP 1 (fuzz_idx_gzip): the input is gzip-compressed
 * first, so that every mutation reaches the IDX parsing behind inflation.
 *
 * fm_dataset_load reads an image file and a label file together.  The
 * input plays the image file, the label file or (when its magic is
 * neither) each in turn; the other file is a valid one holding as many
 * items as the input claims, so that the payload checks of the input's
 * role are reached rather than the count comparison. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fm/fm_data.h"
#include "fuzz_util.h"

#ifndef FUZZ_IDX_GZIP
#error "define FUZZ_IDX_GZIP to 0 (raw) or 1 (gzip)"
#endif

#define IMAGE_MAGIC 0x00000803u
#define LABEL_MAGIC 0x00000801u
/* The companion file stays small: larger claims get a companion of one item
 * (the count comparison then refuses the pair, also a path worth taking). */
#define MAX_COMPANION_IMAGES 64u
#define MAX_COMPANION_LABELS 65536u

static fuzz_file input, companion;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

/* The first 8 bytes of the IDX content (inflated when the file's bytes are
 * gzip): the magic and the count.  false when there are fewer. */
static bool idx_head(const uint8_t *data, size_t size, uint8_t head[8])
{
    if (!FUZZ_IDX_GZIP && size >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
        z_stream z;
        memset(&z, 0, sizeof z);
        if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return false;
        z.next_in = (Bytef *)data;
        z.avail_in = (uInt)size;
        z.next_out = head;
        z.avail_out = 8;
        int r;
        do r = inflate(&z, Z_NO_FLUSH);
        while (r == Z_OK && z.avail_out > 0);
        bool whole = z.avail_out == 0;
        inflateEnd(&z);
        return whole;
    }
    if (size < 8) return false;
    memcpy(head, data, 8);
    return true;
}

static void load(const char *images, const char *labels)
{
    fm_dataset d;
    if (fm_dataset_load(&d, images, labels) == FM_OK) {
        /* What a caller relies on for a file that passed. */
        if (d.n <= 0 || !d.images || !d.labels) abort();
        for (int i = 0; i < d.n; i++)
            if (d.labels[i] >= FM_NUM_CLASSES) abort();
    }
    fm_dataset_free(&d);
}

/* The input as the image file, with labels for as many images as it claims. */
static void as_images(uint32_t claim)
{
    uint32_t n = claim >= 1 && claim <= MAX_COMPANION_LABELS ? claim : 1;
    uint8_t head[8];
    put_be32(head, LABEL_MAGIC);
    put_be32(head + 4, n);
    fuzz_file_zeros(&companion, 8 + (size_t)n, head, sizeof head);
    load(input.path, companion.path);
}

/* The input as the label file, with images for as many labels as it claims. */
static void as_labels(uint32_t claim)
{
    uint32_t n = claim >= 1 && claim <= MAX_COMPANION_IMAGES ? claim : 1;
    uint8_t head[16];
    put_be32(head, IMAGE_MAGIC);
    put_be32(head + 4, n);
    put_be32(head + 8, FM_IMAGE_H);
    put_be32(head + 12, FM_IMAGE_W);
    fuzz_file_zeros(&companion, 16 + (size_t)n * FM_IMAGE_PIXELS, head, sizeof head);
    load(companion.path, input.path);
}

#if FUZZ_IDX_GZIP
/* data as a gzip stream (level 6, as gzip(1) writes by default). */
static uint8_t *gzip(const uint8_t *data, size_t size, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
    size_t cap = deflateBound(&z, (uLong)size);
    uint8_t *out = malloc(cap);
    if (!out) abort();
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)size;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) abort();
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!input.path[0]) {
        fuzz_file_init(&input, "idx-input");
        fuzz_file_init(&companion, "idx-companion");
    }
    uint8_t head[8];
    bool has_head = idx_head(data, size, head);
#if FUZZ_IDX_GZIP
    size_t len;
    uint8_t *file = gzip(data, size, &len);
    fuzz_file_put(&input, file, len);
    free(file);
#else
    fuzz_file_put(&input, data, size);
#endif
    uint32_t magic = has_head ? be32(head) : 0, claim = has_head ? be32(head + 4) : 1;
    if (magic != LABEL_MAGIC) as_images(claim);
    if (magic != IMAGE_MAGIC) as_labels(claim);
    return 0;
}
