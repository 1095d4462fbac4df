/* mlp — a multi-layer perceptron: flatten, fc1, ReLU, dropout, fc2, ReLU,
 * dropout, fc3.  The smallest complete fmhost plugin: copy it to start one. */
#include <stdio.h>
#include <stdlib.h>

#include <fm/fm_plugin.h>

typedef struct mlp {
    fm_linear_layer fc1, fc2, fc3;
    int hidden1, hidden2;
    float dropout;
    char summary[128];
} mlp;

static void *mlp_create(fm_model *m, const fm_hparams *hp)
{
    int64_t h1 = fm_hparams_int(hp, "hidden1"), h2 = fm_hparams_int(hp, "hidden2");
    double p = fm_hparams_float(hp, "dropout");
    if (h1 < 1 || h1 > 65536 || h2 < 1 || h2 > 65536) {
        fm_error_set(FM_ERR_ARG, "hidden1=%lld hidden2=%lld: widths must be in [1, 65536]",
                     (long long)h1, (long long)h2);
        return NULL;
    }
    if (!(p >= 0.0 && p < 1.0)) {
        fm_error_set(FM_ERR_ARG, "dropout=%g: must be in [0, 1)", p);
        return NULL;
    }
    mlp *net = fm_xcalloc(1, sizeof *net);
    net->hidden1 = (int)h1;
    net->hidden2 = (int)h2;
    net->dropout = (float)p;
    /* Registration order is PyTorch's state_dict order. */
    net->fc1 = fm_nn_linear_new(m, "fc1", 28 * 28, net->hidden1, true);
    net->fc2 = fm_nn_linear_new(m, "fc2", net->hidden1, net->hidden2, true);
    net->fc3 = fm_nn_linear_new(m, "fc3", net->hidden2, 10, true);
    snprintf(net->summary, sizeof net->summary, "mlp: 784-%d-%d-10, ReLU, dropout %g",
             net->hidden1, net->hidden2, p);
    return net;
}

static fm_tensor *mlp_forward(void *self, fm_graph *g, fm_tensor *x /* [N, 1, 28, 28] */)
{
    mlp *net = self;
    fm_tensor *h = fm_flatten(g, x);  // [N, 784]
    h = fm_dropout(g, fm_relu(g, fm_nn_linear(g, &net->fc1, h)), net->dropout);
    h = fm_dropout(g, fm_relu(g, fm_nn_linear(g, &net->fc2, h)), net->dropout);
    return fm_nn_linear(g, &net->fc3, h);  // [N, 10]
}

static void mlp_destroy(void *self) { free(self); }

/* Forward FLOPs (2 per multiply-add) for a batch. */
static double mlp_flops(void *self, int batch)
{
    const mlp *net = self;
    double macs = 784.0 * net->hidden1 + (double)net->hidden1 * net->hidden2 + net->hidden2 * 10.0;
    return 2.0 * macs * batch;
}

static const char *mlp_describe(void *self) { return ((const mlp *)self)->summary; }

static const fm_hparam_decl mlp_hparams[] = {
    {"hidden1", FM_HP_INT, "256", "width of the first hidden layer"},
    {"hidden2", FM_HP_INT, "128", "width of the second hidden layer"},
    {"dropout", FM_HP_FLOAT, "0.2", "dropout probability after each hidden layer"},
};

static const fm_export_decl mlp_exports[] = {
    {"flops", "d(mi)", (void (*)(void))mlp_flops, "forward FLOPs for a batch of the given size"},
    {"describe", "s(m)", (void (*)(void))mlp_describe, "one-line architecture summary"},
};

static const fm_plugin_desc mlp_desc = {
    .abi_version = FM_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(fm_plugin_desc),
    .name = "mlp",
    .description = "multi-layer perceptron 784-256-128-10 with ReLU and dropout",
    .hparams = mlp_hparams,
    .n_hparams = sizeof mlp_hparams / sizeof mlp_hparams[0],
    .create = mlp_create,
    .forward = mlp_forward,
    .destroy = mlp_destroy,
    .exports = mlp_exports,
    .n_exports = sizeof mlp_exports / sizeof mlp_exports[0],
};

FM_PLUGIN_EXPORT const fm_plugin_desc *fm_plugin_descriptor(void) { return &mlp_desc; }
