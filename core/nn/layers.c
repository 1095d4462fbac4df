/* Layer helpers: register one PyTorch module's parameters under its name. */
#include "fm/fm_model.h"

#include <stdio.h>

static fm_tensor *param(fm_model *m, const char *prefix, const char *suffix, int ndim,
                        const int *shape, fm_init init, int fan_in)
{
    char name[256];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    return fm_model_param(m, name, ndim, shape, init, fan_in);
}

static fm_tensor *buffer(fm_model *m, const char *prefix, const char *suffix, fm_dtype dtype,
                         const int *shape, fm_init init)
{
    char name[256];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    return fm_model_buffer(m, name, dtype, 1, shape, init);
}

fm_linear_layer fm_nn_linear_new(fm_model *m, const char *prefix, int in, int out, bool bias)
{
    fm_linear_layer l = {0};
    l.weight = param(m, prefix, "weight", 2, (int[]){out, in}, FM_INIT_FAN_IN, in);
    if (bias) l.bias = param(m, prefix, "bias", 1, (int[]){out}, FM_INIT_FAN_IN, in);
    return l;
}

fm_conv_layer fm_nn_conv_new(fm_model *m, const char *prefix, int in, int out, int k, int stride,
                             int pad, bool bias)
{
    fm_conv_layer l = {.stride = stride, .pad = pad};
    int fan_in = in * k * k;
    l.weight = param(m, prefix, "weight", 4, (int[]){out, in, k, k}, FM_INIT_FAN_IN, fan_in);
    if (bias) l.bias = param(m, prefix, "bias", 1, (int[]){out}, FM_INIT_FAN_IN, fan_in);
    return l;
}

fm_bn_layer fm_nn_bn_new(fm_model *m, const char *prefix, int channels)
{
    fm_bn_layer l = {.momentum = 0.1f, .eps = 1e-5f};
    l.weight = param(m, prefix, "weight", 1, (int[]){channels}, FM_INIT_ONES, 0);
    l.bias = param(m, prefix, "bias", 1, (int[]){channels}, FM_INIT_ZEROS, 0);
    l.running_mean = buffer(m, prefix, "running_mean", FM_F32, (int[]){channels}, FM_INIT_ZEROS);
    l.running_var = buffer(m, prefix, "running_var", FM_F32, (int[]){channels}, FM_INIT_ONES);
    l.num_batches_tracked = buffer(m, prefix, "num_batches_tracked", FM_I64, (int[]){1}, FM_INIT_ZEROS);
    return l;
}

fm_tensor *fm_nn_linear(fm_graph *g, const fm_linear_layer *l, fm_tensor *x)
{
    return fm_linear(g, x, l->weight, l->bias);
}

fm_tensor *fm_nn_conv(fm_graph *g, const fm_conv_layer *l, fm_tensor *x)
{
    return fm_conv2d(g, x, l->weight, l->bias, l->stride, l->pad);
}

fm_tensor *fm_nn_bn(fm_graph *g, const fm_bn_layer *l, fm_tensor *x)
{
    return fm_batchnorm(g, x, l->weight, l->bias, l->running_mean, l->running_var,
                        l->num_batches_tracked, l->momentum, l->eps);
}

fm_tensor *fm_nn_bn_relu(fm_graph *g, const fm_bn_layer *l, fm_tensor *x, fm_tensor *residual)
{
    return fm_batchnorm_relu(g, x, l->weight, l->bias, l->running_mean, l->running_var,
                             l->num_batches_tracked, l->momentum, l->eps, residual);
}
