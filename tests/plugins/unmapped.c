/* A valid plugin whose forward pass uses an op that fmhost export has no
 * ONNX mapping for (a bfloat16 cast, which a plugin may apply itself), for
 * test_onnx's error message. */
#include <stdlib.h>

#include <fm/fm_plugin.h>

typedef struct unmapped {
    fm_linear_layer fc;
} unmapped;

static void *unmapped_create(fm_model *m, const fm_hparams *hp)
{
    (void)hp;
    unmapped *u = fm_xcalloc(1, sizeof *u);
    u->fc = fm_nn_linear_new(m, "fc", 28 * 28, 10, true);
    return u;
}

static fm_tensor *unmapped_forward(void *self, fm_graph *g, fm_tensor *x /* [N, 1, 28, 28] */)
{
    return fm_nn_linear(g, &((unmapped *)self)->fc, fm_to_bf16(g, fm_flatten(g, x)));  // [N, 10]
}

static void unmapped_destroy(void *self) { free(self); }

static const fm_plugin_desc unmapped_desc = {
    .abi_version = FM_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(fm_plugin_desc),
    .name = "unmapped",
    .description = "linear layer on bfloat16-rounded pixels",
    .create = unmapped_create,
    .forward = unmapped_forward,
    .destroy = unmapped_destroy,
};

FM_PLUGIN_EXPORT const fm_plugin_desc *fm_plugin_descriptor(void) { return &unmapped_desc; }
