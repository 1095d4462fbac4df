/* lenet — LeNet-5 (LeCun et al., 1998) for 28x28 FashionMNIST, as an fmhost
 * model plugin.  This is the example of docs/writing-plugins.md: copy it,
 * rename it, change the network.
 *
 *     cc -shared -fPIC lenet.c $(pkg-config --cflags --libs fmcore) -o lenet.so
 *     fmhost train --plugin ./lenet.so
 *
 * conv1 Conv(1->c1, 5x5, pad 2) -> ReLU -> MaxPool 2 -> conv2 Conv(c1->c2, 5x5)
 * -> ReLU -> MaxPool 2 -> flatten (c2*5*5) -> fc1 Linear(c2*5*5, 120) -> ReLU
 * -> fc2 Linear(120, 84) -> ReLU -> Dropout -> fc3 Linear(84, 10).
 * The original's 32x32 input becomes 28x28 with padding 2 on conv1; its tanh
 * and average pooling become ReLU and max pooling.  With batchnorm=true a
 * BatchNorm follows each conv (and the convs lose their now useless bias).
 * Defaults: 61,706 parameters, named as in PyTorch's state_dict of the same
 * nn.Module, so checkpoints load in PyTorch as they are.
 */
#include <stdio.h>
#include <stdlib.h>

#include <fm/fm_plugin.h>

/* The instance create() returns and forward() receives as `self`.  The layer
 * structs hold tensor pointers owned by the model; the plugin owns only this
 * struct. */
typedef struct lenet {
    fm_conv_layer conv1, conv2;
    fm_bn_layer bn1, bn2;  /* registered only when batchnorm is on */
    fm_linear_layer fc1, fc2, fc3;
    int c1, c2;
    bool batchnorm;
    float dropout;
    char summary[128];
} lenet;

/* Registers the parameters (in PyTorch's order: it decides the state_dict
 * order and which random numbers initialise what) and checks the
 * hyper-parameters the host could not: their ranges. */
static void *lenet_create(fm_model *m, const fm_hparams *hp)
{
    int64_t c1 = fm_hparams_int(hp, "c1"), c2 = fm_hparams_int(hp, "c2");
    double dropout = fm_hparams_float(hp, "dropout");
    bool bn = fm_hparams_bool(hp, "batchnorm");
    if (c1 < 1 || c1 > 1024 || c2 < 1 || c2 > 1024) {
        fm_error_set(FM_ERR_ARG, "c1=%lld c2=%lld: channel counts must be in 1..1024",
                     (long long)c1, (long long)c2);
        return NULL;
    }
    if (!(dropout >= 0.0 && dropout < 1.0)) {
        fm_error_set(FM_ERR_ARG, "dropout=%g: must be in [0, 1)", dropout);
        return NULL;
    }

    lenet *net = fm_xcalloc(1, sizeof *net);
    net->c1 = (int)c1;
    net->c2 = (int)c2;
    net->batchnorm = bn;
    net->dropout = (float)dropout;
    net->conv1 = fm_nn_conv_new(m, "conv1", 1, net->c1, 5, 1, 2, !bn);
    if (bn) net->bn1 = fm_nn_bn_new(m, "bn1", net->c1);
    net->conv2 = fm_nn_conv_new(m, "conv2", net->c1, net->c2, 5, 1, 0, !bn);
    if (bn) net->bn2 = fm_nn_bn_new(m, "bn2", net->c2);
    net->fc1 = fm_nn_linear_new(m, "fc1", net->c2 * 5 * 5, 120, true);
    net->fc2 = fm_nn_linear_new(m, "fc2", 120, 84, true);
    net->fc3 = fm_nn_linear_new(m, "fc3", 84, 10, true);
    snprintf(net->summary, sizeof net->summary,
             "lenet: conv5x5(%d)-pool-conv5x5(%d)-pool-fc(120)-fc(84)-fc(10)%s, dropout %g",
             net->c1, net->c2, bn ? ", batch norm" : "", dropout);
    return net;
}

/* Only the forward pass: every op records itself, and the core's autograd
 * differentiates whatever was built here. */
static fm_tensor *lenet_forward(void *self, fm_graph *g, fm_tensor *x /* [N, 1, 28, 28] */)
{
    const lenet *net = self;
    fm_tensor *h = fm_nn_conv(g, &net->conv1, x);  // [N, c1, 28, 28]
    if (net->batchnorm) h = fm_nn_bn(g, &net->bn1, h);
    h = fm_maxpool2d(g, fm_relu(g, h), 2);         // [N, c1, 14, 14]
    h = fm_nn_conv(g, &net->conv2, h);             // [N, c2, 10, 10]
    if (net->batchnorm) h = fm_nn_bn(g, &net->bn2, h);
    h = fm_maxpool2d(g, fm_relu(g, h), 2);         // [N, c2, 5, 5]
    h = fm_relu(g, fm_nn_linear(g, &net->fc1, fm_flatten(g, h)));  // [N, 120]
    h = fm_relu(g, fm_nn_linear(g, &net->fc2, h));                 // [N, 84]
    return fm_nn_linear(g, &net->fc3, fm_dropout(g, h, net->dropout));  // [N, 10]
}

static void lenet_destroy(void *self) { free(self); }

/* ---- extra functions, callable from Lua through libffi ---------------------- */

/* Forward FLOPs (2 per multiply-add) for a batch: signature "d(mi)". */
static double lenet_flops(void *self, int batch)
{
    const lenet *net = self;
    double macs = 28.0 * 28 * net->c1 * (1 * 25)      // conv1
                + 10.0 * 10 * net->c2 * (net->c1 * 25)  // conv2
                + net->c2 * 25.0 * 120 + 120.0 * 84 + 84.0 * 10;
    return 2.0 * macs * batch;
}

/* One line describing the instance: signature "s(m)".  The string stays the
 * plugin's. */
static const char *lenet_describe(void *self) { return ((const lenet *)self)->summary; }

/* ---- the descriptor: what the host reads first ------------------------------ */

static const fm_hparam_decl lenet_hparams[] = {
    {"c1", FM_HP_INT, "6", "channels of conv1"},
    {"c2", FM_HP_INT, "16", "channels of conv2"},
    {"dropout", FM_HP_FLOAT, "0", "dropout probability before fc3"},
    {"batchnorm", FM_HP_BOOL, "false", "batch norm after each conv"},
};

static const fm_export_decl lenet_exports[] = {
    {"flops", "d(mi)", (void (*)(void))lenet_flops, "forward FLOPs for a batch of the given size"},
    {"describe", "s(m)", (void (*)(void))lenet_describe, "one-line architecture summary"},
};

static const fm_plugin_desc lenet_desc = {
    .abi_version = FM_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(fm_plugin_desc),
    .name = "lenet",
    .description = "LeNet-5 for 28x28 inputs: two 5x5 conv/pool stages, three linear layers",
    .hparams = lenet_hparams,
    .n_hparams = sizeof lenet_hparams / sizeof lenet_hparams[0],
    .create = lenet_create,
    .forward = lenet_forward,
    .destroy = lenet_destroy,
    .exports = lenet_exports,
    .n_exports = sizeof lenet_exports / sizeof lenet_exports[0],
};

FM_PLUGIN_EXPORT const fm_plugin_desc *fm_plugin_descriptor(void) { return &lenet_desc; }
