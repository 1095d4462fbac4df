/* rescnn — a small ResNet: a stem, three stages of residual blocks (widths
 * w, 2w, 4w; stages 2 and 3 start with stride 2), global average pooling and
 * one linear layer.  Names follow PyTorch's state_dict ("layers.1.short.0"). */
#include <stdio.h>
#include <stdlib.h>

#include <fm/fm_plugin.h>

typedef struct block {
    fm_conv_layer conv1, conv2, short0;
    fm_bn_layer bn1, bn2, short1;
    bool has_short;  /* a 1x1 conv shortcut where the shape changes, else identity */
    int cin, cout, stride;
} block;

typedef struct rescnn {
    fm_conv_layer stem0;
    fm_bn_layer stem1;
    block *blocks;
    int n_blocks, width;
    fm_linear_layer fc;
    char summary[128];
} rescnn;

static void block_init(block *b, fm_model *m, int index, int cin, int cout, int stride)
{
    char name[64];
    *b = (block){.cin = cin, .cout = cout, .stride = stride};
    /* PyTorch's module order: conv1, bn1, conv2, bn2, short. */
    snprintf(name, sizeof name, "layers.%d.conv1", index);
    b->conv1 = fm_nn_conv_new(m, name, cin, cout, 3, stride, 1, false);
    snprintf(name, sizeof name, "layers.%d.bn1", index);
    b->bn1 = fm_nn_bn_new(m, name, cout);
    snprintf(name, sizeof name, "layers.%d.conv2", index);
    b->conv2 = fm_nn_conv_new(m, name, cout, cout, 3, 1, 1, false);
    snprintf(name, sizeof name, "layers.%d.bn2", index);
    b->bn2 = fm_nn_bn_new(m, name, cout);
    b->has_short = stride != 1 || cin != cout;
    if (b->has_short) {
        snprintf(name, sizeof name, "layers.%d.short.0", index);
        b->short0 = fm_nn_conv_new(m, name, cin, cout, 1, stride, 0, false);
        snprintf(name, sizeof name, "layers.%d.short.1", index);
        b->short1 = fm_nn_bn_new(m, name, cout);
    }
}

static void *rescnn_create(fm_model *m, const fm_hparams *hp)
{
    int64_t w = fm_hparams_int(hp, "width"), blocks = fm_hparams_int(hp, "blocks");
    if (w < 1 || w > 1024) {
        fm_error_set(FM_ERR_ARG, "width=%lld: must be in [1, 1024]", (long long)w);
        return NULL;
    }
    if (blocks < 1 || blocks > 64) {
        fm_error_set(FM_ERR_ARG, "blocks=%lld: must be in [1, 64]", (long long)blocks);
        return NULL;
    }
    rescnn *net = fm_xcalloc(1, sizeof *net);
    net->width = (int)w;
    net->n_blocks = 3 * (int)blocks;
    net->blocks = fm_xcalloc((size_t)net->n_blocks, sizeof *net->blocks);
    net->stem0 = fm_nn_conv_new(m, "stem.0", 1, net->width, 3, 1, 1, false);
    net->stem1 = fm_nn_bn_new(m, "stem.1", net->width);
    int cin = net->width;
    for (int stage = 0, i = 0; stage < 3; stage++) {
        int cout = net->width << stage;
        for (int b = 0; b < blocks; b++, i++) {
            block_init(&net->blocks[i], m, i, cin, cout, stage > 0 && b == 0 ? 2 : 1);
            cin = cout;
        }
    }
    net->fc = fm_nn_linear_new(m, "fc", cin, 10, true);
    snprintf(net->summary, sizeof net->summary,
             "rescnn: width %d, %d block%s per stage (%d, %d, %d channels), global avg pool, fc",
             net->width, (int)blocks, blocks == 1 ? "" : "s", net->width, 2 * net->width,
             4 * net->width);
    return net;
}

static fm_tensor *block_forward(const block *b, fm_graph *g, fm_tensor *x /* [N, cin, H, W] */)
{
    /* The shortcut first: backward then runs conv1's, which writes all of
     * x's gradient, before the strided 1x1 conv's, which adds to a quarter
     * of it (the other way round, the 1x1 would zero-fill the whole buffer
     * first).  The values are the same either way. */
    fm_tensor *s = b->has_short ? fm_nn_bn(g, &b->short1, fm_nn_conv(g, &b->short0, x)) : x;
    fm_tensor *y = fm_nn_bn_relu(g, &b->bn1, fm_nn_conv(g, &b->conv1, x), NULL);
    return fm_nn_bn_relu(g, &b->bn2, fm_nn_conv(g, &b->conv2, y), s);  // [N, cout, H/s, W/s]
}

static fm_tensor *rescnn_forward(void *self, fm_graph *g, fm_tensor *x /* [N, 1, 28, 28] */)
{
    rescnn *net = self;
    fm_tensor *h = fm_nn_bn_relu(g, &net->stem1, fm_nn_conv(g, &net->stem0, x), NULL);
    for (int i = 0; i < net->n_blocks; i++)
        h = block_forward(&net->blocks[i], g, h);   // ends [N, 4w, 7, 7]
    return fm_nn_linear(g, &net->fc, fm_global_avgpool(g, h));  // [N, 10]
}

static void rescnn_destroy(void *self)
{
    rescnn *net = self;
    free(net->blocks);
    free(net);
}

/* Forward FLOPs (2 per multiply-add of the convolutions and fc) for a batch. */
static double rescnn_flops(void *self, int batch)
{
    const rescnn *net = self;
    int size = 28;
    double macs = (double)size * size * net->width * 9;  // stem
    for (int i = 0; i < net->n_blocks; i++) {
        const block *b = &net->blocks[i];
        size /= b->stride;
        double out = (double)size * size * b->cout;
        macs += out * b->cin * 9 + out * b->cout * 9 + (b->has_short ? out * b->cin : 0);
    }
    macs += 4.0 * net->width * 10;
    return 2.0 * macs * batch;
}

/* Input pixels (per side) seen by one unit of the last feature map, before
 * global pooling: each 3x3 conv adds 2 input strides. */
static int rescnn_receptive_field(void *self)
{
    const rescnn *net = self;
    int rf = 3, jump = 1;  // stem
    for (int i = 0; i < net->n_blocks; i++) {
        rf += 2 * jump;
        jump *= net->blocks[i].stride;
        rf += 2 * jump;
    }
    return rf;
}

static const char *rescnn_describe(void *self) { return ((const rescnn *)self)->summary; }

static const fm_hparam_decl rescnn_hparams[] = {
    {"width", FM_HP_INT, "32", "channels of the first stage (then 2x, 4x)"},
    {"blocks", FM_HP_INT, "1", "residual blocks per stage"},
};

static const fm_export_decl rescnn_exports[] = {
    {"flops", "d(mi)", (void (*)(void))rescnn_flops, "forward FLOPs for a batch of the given size"},
    {"receptive_field", "i(m)", (void (*)(void))rescnn_receptive_field,
     "input pixels (per side) seen by one unit of the last feature map"},
    {"describe", "s(m)", (void (*)(void))rescnn_describe, "one-line architecture summary"},
};

static const fm_plugin_desc rescnn_desc = {
    .abi_version = FM_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(fm_plugin_desc),
    .name = "rescnn",
    .description = "residual CNN: stem, 3 stages of basic blocks, global average pool, fc",
    .hparams = rescnn_hparams,
    .n_hparams = sizeof rescnn_hparams / sizeof rescnn_hparams[0],
    .create = rescnn_create,
    .forward = rescnn_forward,
    .destroy = rescnn_destroy,
    .exports = rescnn_exports,
    .n_exports = sizeof rescnn_exports / sizeof rescnn_exports[0],
};

FM_PLUGIN_EXPORT const fm_plugin_desc *fm_plugin_descriptor(void) { return &rescnn_desc; }
