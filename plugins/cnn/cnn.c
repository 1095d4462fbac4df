/* cnn — two conv/ReLU/max-pool stages, then fc1, ReLU, dropout, fc2. */
#include <stdio.h>
#include <stdlib.h>

#include <fm/fm_plugin.h>

typedef struct cnn {
    fm_conv_layer conv1, conv2;
    fm_linear_layer fc1, fc2;
    float dropout;
    char summary[128];
} cnn;

static void *cnn_create(fm_model *m, const fm_hparams *hp)
{
    double p = fm_hparams_float(hp, "dropout");
    if (!(p >= 0.0 && p < 1.0)) {
        fm_error_set(FM_ERR_ARG, "dropout=%g: must be in [0, 1)", p);
        return NULL;
    }
    cnn *net = fm_xcalloc(1, sizeof *net);
    net->dropout = (float)p;
    net->conv1 = fm_nn_conv_new(m, "conv1", 1, 32, 3, 1, 1, true);
    net->conv2 = fm_nn_conv_new(m, "conv2", 32, 64, 3, 1, 1, true);
    net->fc1 = fm_nn_linear_new(m, "fc1", 64 * 7 * 7, 128, true);
    net->fc2 = fm_nn_linear_new(m, "fc2", 128, 10, true);
    snprintf(net->summary, sizeof net->summary,
             "cnn: conv3x3(32)-pool-conv3x3(64)-pool-fc(128)-fc(10), dropout %g", p);
    return net;
}

static fm_tensor *cnn_forward(void *self, fm_graph *g, fm_tensor *x /* [N, 1, 28, 28] */)
{
    cnn *net = self;
    /* ReLU after pooling: max and ReLU commute (both forward values and the
     * routed gradients are the same), and the ReLU then touches a quarter
     * of the elements -- in the pooling's own pass (fm_maxpool2d_relu). */
    fm_tensor *h = fm_maxpool2d_relu(g, fm_nn_conv(g, &net->conv1, x), 2);  // [N,32,14,14]
    h = fm_maxpool2d_relu(g, fm_nn_conv(g, &net->conv2, h), 2);             // [N,64,7,7]
    h = fm_dropout(g, fm_relu(g, fm_nn_linear(g, &net->fc1, fm_flatten(g, h))), net->dropout);
    return fm_nn_linear(g, &net->fc2, h);  // [N, 10]
}

static void cnn_destroy(void *self) { free(self); }

/* Forward FLOPs (2 per multiply-add) for a batch. */
static double cnn_flops(void *self, int batch)
{
    (void)self;
    double macs = 28.0 * 28 * 32 * (1 * 9)      // conv1
                + 14.0 * 14 * 64 * (32 * 9)     // conv2
                + 3136.0 * 128 + 128.0 * 10;    // fc1, fc2
    return 2.0 * macs * batch;
}

/* Input pixels seen by one unit of the last feature map: each 3x3 conv adds
 * 2 input strides, each 2x2 pool adds 1 and doubles the stride. */
static int cnn_receptive_field(void *self)
{
    (void)self;
    int rf = 1, jump = 1;
    rf += 2 * jump;            // conv1
    rf += jump, jump *= 2;     // pool
    rf += 2 * jump;            // conv2
    rf += jump, jump *= 2;     // pool
    return rf;
}

static const char *cnn_describe(void *self) { return ((const cnn *)self)->summary; }

static const fm_hparam_decl cnn_hparams[] = {
    {"dropout", FM_HP_FLOAT, "0.3", "dropout probability after fc1"},
};

static const fm_export_decl cnn_exports[] = {
    {"flops", "d(mi)", (void (*)(void))cnn_flops, "forward FLOPs for a batch of the given size"},
    {"receptive_field", "i(m)", (void (*)(void))cnn_receptive_field,
     "input pixels (per side) seen by one unit of the last feature map"},
    {"describe", "s(m)", (void (*)(void))cnn_describe, "one-line architecture summary"},
};

static const fm_plugin_desc cnn_desc = {
    .abi_version = FM_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(fm_plugin_desc),
    .name = "cnn",
    .description = "two-stage convolutional network (32, 64 channels) with max pooling",
    .hparams = cnn_hparams,
    .n_hparams = sizeof cnn_hparams / sizeof cnn_hparams[0],
    .create = cnn_create,
    .forward = cnn_forward,
    .destroy = cnn_destroy,
    .exports = cnn_exports,
    .n_exports = sizeof cnn_exports / sizeof cnn_exports[0],
};

FM_PLUGIN_EXPORT const fm_plugin_desc *fm_plugin_descriptor(void) { return &cnn_desc; }
