/* Fuzz target: the safetensors reader.  The input is the file: it is loaded
 * into a small model (a linear layer and a batch norm, so F32 and I64
 * tensors, a 0-d one among them) with fm_safetensors_load, and its header
 * read alone with fm_safetensors_read_meta. */
#include <stdlib.h>
#include <string.h>

#include "fm/fm_io.h"
#include "fm/fm_model.h"
#include "fuzz_util.h"

static fuzz_file input;
static fm_model *model;

/* Every key and value of the metadata, read as a caller would. */
static void walk_meta(const fm_meta *meta)
{
    size_t total = 0;
    for (int i = 0; i < fm_meta_count(meta); i++)
        total += strlen(fm_meta_key(meta, i)) + strlen(fm_meta_value(meta, i));
    const char *format = fm_meta_get(meta, "format");
    if (format) total += strlen(format);
    if (total == (size_t)-1) abort();  /* keeps the reads */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!model) {
        fuzz_file_init(&input, "safetensors-input");
        model = fm_model_new();
        fm_nn_linear_new(model, "fc", 3, 2, true);
        fm_nn_bn_new(model, "bn", 2);
        fm_model_finalize(model, 1);
    }
    fuzz_file_put(&input, data, size);

    fm_meta *meta = NULL;
    if (fm_safetensors_load(input.path, model, &meta) == FM_OK) walk_meta(meta);
    fm_meta_free(meta);

    meta = NULL;
    if (fm_safetensors_read_meta(input.path, &meta) == FM_OK) walk_meta(meta);
    fm_meta_free(meta);
    return 0;
}
