/* test_autocast — FM_PRECISION_BF16 (fm_graph.h): the cast's rounding, the
 * casts a bf16 graph puts around linear and convolution layers, the
 * linear layer's products on the bfloat16 kernels, the convolution's products against a naive one on the rounded operands, and
 * the gradients of bf16 layers against float32 ones within what bfloat16's
 * 8-bit significand allows.  Everything that computes runs once per kernel
 * set this processor runs. */
#include "fm_internal.h"
#include "fm_test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The bfloat16 value of x as fm_bf16_from_f32 rounds it, in float32. */
static float bf16(float x) { return fm_f32_from_bf16(fm_bf16_from_f32(x)); }

static fm_tensor *leaf(int ndim, const int *shape, uint64_t seed)
{
    return fm_test_leaf(ndim, shape, -1.0f, 1.0f, seed, true);
}

/* A heap copy of t (no grad) with every value rounded to bfloat16. */
static fm_tensor *rounded_copy(const fm_tensor *t)
{
    fm_tensor *r = fm_test_leaf(t->ndim, t->shape, 0.0f, 0.0f, 0, false);
    for (int64_t i = 0; i < t->numel; i++) r->data[i] = bf16(t->data[i]);
    return r;
}

static void zero_grad(fm_tensor *t)
{
    if (t && t->grad) memset(t->grad, 0, (size_t)t->numel * sizeof(float));
}

/* A copy of n floats, which the caller frees. */
static float *floats_copy(const float *src, int64_t n)
{
    float *p = malloc((size_t)n * sizeof(float));
    memcpy(p, src, (size_t)n * sizeof(float));
    return p;
}

/* ---- the cast ------------------------------------------------------------- */

/* fm_to_bf16 rounds as fm_bf16_from_f32 (tested exhaustively in test_io),
 * specials and ties included, and its backward adds the rounded gradient. */
START_TEST(test_cast_rounds_like_the_conversion)
{
    fm_test_each_set(_i, 1);
    enum { n = 70001 };
    fm_tensor *x = leaf(1, (int[]){n}, 11);
    const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1.0f + 0x1p-8f,
                              1.0f + 0x1p-8f + 0x1p-23f, 1.0f + 3 * 0x1p-8f, 3.3895314e38f,
                              0x1p-149f, -0x1p-130f, 0x1.fffffep127f};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) x->data[i] = specials[i];
    for (int i = 100; i < 1100; i++) x->data[i] *= 1e30f;  /* large and tiny magnitudes */
    for (int i = 1100; i < 2100; i++) x->data[i] *= 1e-39f;
    fm_graph *g = fm_graph_new();
    fm_tensor *y = fm_to_bf16(g, x);
    for (int64_t i = 0; i < n; i++) {
        uint16_t want = fm_bf16_from_f32(x->data[i]);
        uint32_t got;
        memcpy(&got, &y->data[i], sizeof got);
        ck_assert_msg(got == (uint32_t)want << 16, "%s: element %lld (%a): got 0x%08x, want 0x%04x0000",
                      fm_test_kernels_name(), (long long)i, (double)x->data[i], got, want);
    }
    /* The backward: x.grad (set to g0) += round(dy). */
    float *dy = malloc(n * sizeof *dy);
    fm_test_fill(dy, n, -3.0f, 3.0f, 12);
    for (int64_t i = 0; i < n; i++) x->grad[i] = 0.25f;
    y->grad = dy;
    fm_op_table[FM_OP_TO_BF16].backward(g, y->node);
    y->grad = NULL;
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(x->grad[i] == 0.25f + bf16(dy[i]), "%s: gradient %lld",
                      fm_test_kernels_name(), (long long)i);
    free(dy);
    fm_graph_free(g);
    fm_tensor_free(x);
    fm_test_restore_kernels();
}
END_TEST

/* ---- what a bf16 graph builds ------------------------------------------------ */

/* C = op(A) op(B) + beta C on the bfloat16 kernels, on one thread. */
static void gemm_bf16(bool ta, bool tb, int m, int n, int k, const float *a, int lda,
                      const float *b, int ldb, float beta, float *c, int ldc)
{
    size_t floats = (fm_gemm_bf16_pack_floats() + 15) / 16 * 16;
    float *pack = aligned_alloc(64, floats * sizeof(float));
    ck_assert_ptr_nonnull(pack);
    fm_gemm_serial_bf16(ta, tb, m, n, k, 1.0f, a, lda, NULL, b, ldb, beta, c, ldc, pack);
    free(pack);
}

/* A bf16 graph's linear layer: casts of its input, weight, bias and output
 * around three products on the bfloat16 kernels (fm_gemm_serial_bf16,
 * tested against a naive reference in test_gemm_bf16), forward and every
 * gradient bit-identical to that spelled out here on rounded copies: the
 * output gradient rounded before the products, the input, weight and bias
 * gradients after them.  The loss behind it (cross entropy) is float32. */
START_TEST(test_linear_is_casts_around_bf16_products)
{
    fm_test_each_set(_i, 1);
    enum { batch = 13, in = 37, out = 10 };
    fm_tensor *x = leaf(2, (int[]){batch, in}, 21), *w = leaf(2, (int[]){out, in}, 22);
    fm_tensor *b = leaf(1, (int[]){out}, 23);
    int32_t labels[batch];
    for (int i = 0; i < batch; i++) labels[i] = (i * 7) % out;
    fm_graph *g = fm_graph_new();
    fm_graph_set_precision(g, FM_PRECISION_BF16);
    fm_tensor *y = fm_linear(g, x, w, b);
    fm_graph_set_precision(g, FM_PRECISION_FP32);
    fm_tensor *loss = fm_cross_entropy(g, y, labels);
    zero_grad(x), zero_grad(w), zero_grad(b);
    fm_backward(g, loss);

    fm_tensor *xr = rounded_copy(x), *wr = rounded_copy(w), *br = rounded_copy(b);
    float want_y[batch * out], dy[batch * out];
    gemm_bf16(false, true, batch, out, in, xr->data, in, wr->data, in, 0.0f, want_y, out);
    for (int i = 0; i < batch * out; i++) want_y[i] = bf16(want_y[i] + br->data[i % out]);
    fm_test_assert_same_bits(y->data, want_y, batch * out, "linear bf16: output");
    for (int i = 0; i < batch * out; i++) dy[i] = bf16(y->grad[i]);

    float want_dx[batch * in] = {0}, want_dw[out * in] = {0}, want_db[out];
    gemm_bf16(false, false, batch, in, out, dy, out, wr->data, in, 1.0f, want_dx, in);
    gemm_bf16(true, false, out, in, batch, dy, out, xr->data, in, 1.0f, want_dw, in);
    for (int j = 0; j < out; j++) {
        double sum = 0.0;
        for (int i = 0; i < batch; i++) sum += dy[i * out + j];
        want_db[j] = (float)sum;
    }
    float *wants[3] = {want_dx, want_dw, want_db};
    const fm_tensor *leaves[3] = {x, w, b};
    const char *names[3] = {"linear bf16: input gradient", "linear bf16: weight gradient",
                            "linear bf16: bias gradient"};
    for (int k = 0; k < 3; k++) {
        for (int64_t i = 0; i < leaves[k]->numel; i++) wants[k][i] = 0.0f + bf16(wants[k][i]);
        fm_test_assert_same_bits(leaves[k]->grad, wants[k], leaves[k]->numel, names[k]);
    }
    fm_graph_free(g);
    /* And the casts change something: the float32 layer gives other logits. */
    g = fm_graph_new();
    y = fm_linear(g, x, w, b);
    ck_assert(fm_test_first_diff(y->data, want_y, batch * out) >= 0);
    fm_graph_free(g);
    fm_tensor_free(xr), fm_tensor_free(wr), fm_tensor_free(br);
    fm_tensor_free(x), fm_tensor_free(w), fm_tensor_free(b);
    fm_test_restore_kernels();
}
END_TEST

/* ---- convolution products --------------------------------------------------- */

typedef struct conv_shape {
    int n, c, h, w, o, k, stride, pad;
} conv_shape;

/* Shapes of every path: 3x3 stride 1 with 16+ channels (where float32 runs
 * Winograd), strided, 1x1, odd maps, one input channel. */
static const conv_shape conv_shapes[] = {
    {4, 16, 14, 14, 16, 3, 1, 1}, {3, 32, 7, 7, 32, 3, 1, 1}, {2, 8, 9, 9, 16, 3, 2, 1},
    {2, 16, 8, 8, 32, 1, 2, 0},   {5, 1, 28, 28, 8, 3, 1, 1}, {2, 4, 6, 5, 3, 2, 1, 0},
};
#define N_CONV ((int)(sizeof conv_shapes / sizeof conv_shapes[0]))

/* The bf16 convolution's output against a naive one in double on the rounded
 * operands, rounded to bfloat16 at the end.  Products of bfloat16 values are
 * exact in float32; only the order of the float32 sums differs, by at most
 * k * 2^-24 of the sum of |terms| — which moves the final rounding only for
 * outputs at a rounding boundary.  So every output is within one bfloat16
 * step (2^-8 relative) plus that, and nearly all equal the reference. */
START_TEST(test_conv_products_are_bf16)
{
    const conv_shape *cs = &conv_shapes[fm_test_each_set(_i, N_CONV)];
    fm_tensor *x = leaf(4, (int[]){cs->n, cs->c, cs->h, cs->w}, 31);
    fm_tensor *w = leaf(4, (int[]){cs->o, cs->c, cs->k, cs->k}, 32);
    fm_tensor *b = leaf(1, (int[]){cs->o}, 33);
    fm_graph *g = fm_graph_new();
    fm_graph_set_grad(g, false);
    fm_graph_set_precision(g, FM_PRECISION_BF16);
    fm_tensor *y = fm_conv2d(g, x, w, b, cs->stride, cs->pad);
    fm_tensor *xr = rounded_copy(x), *wr = rounded_copy(w), *br = rounded_copy(b);
    int oh = y->shape[2], ow = y->shape[3], k = cs->c * cs->k * cs->k;
    int64_t exact = 0;
    for (int n = 0; n < cs->n; n++)
        for (int o = 0; o < cs->o; o++)
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++) {
                    double s = br->data[o], abs_sum = fabs(br->data[o]);
                    for (int c = 0; c < cs->c; c++)
                        for (int ki = 0; ki < cs->k; ki++)
                            for (int kj = 0; kj < cs->k; kj++) {
                                int yi = i * cs->stride - cs->pad + ki, xj = j * cs->stride - cs->pad + kj;
                                if (yi < 0 || yi >= cs->h || xj < 0 || xj >= cs->w) continue;
                                double t = (double)xr->data[((size_t)(n * cs->c + c) * cs->h + yi) * cs->w + xj] *
                                           wr->data[((size_t)(o * cs->c + c) * cs->k + ki) * cs->k + kj];
                                s += t;
                                abs_sum += fabs(t);
                            }
                    float want = bf16((float)s);
                    float got = y->data[((size_t)(n * cs->o + o) * oh + i) * ow + j];
                    double bound = 0x1p-8 * fabs(s) + (k + 1) * 0x1p-24 * abs_sum;
                    ck_assert_msg(fabs((double)got - s) <= bound,
                                  "%s, conv %dx%d stride %d, %d channels: output (%d,%d,%d,%d) "
                                  "%a, exact %a (bound %g)", fm_test_kernels_name(), cs->k, cs->k,
                                  cs->stride, cs->c, n, o, i, j, (double)got, s, bound);
                    exact += got == want;
                }
    /* Operands left unrounded would make about half the outputs differ. */
    ck_assert_msg(exact >= y->numel * 98 / 100, "%s: only %lld of %lld outputs equal the "
                  "reference", fm_test_kernels_name(), (long long)exact, (long long)y->numel);
    fm_graph_free(g);
    fm_tensor_free(xr), fm_tensor_free(wr), fm_tensor_free(br);
    fm_tensor_free(x), fm_tensor_free(w), fm_tensor_free(b);
    fm_test_restore_kernels();
}
END_TEST

/* ---- gradients ----------------------------------------------------------------- */

/* ||a - b|| / ||b||. */
static double rel_l2(const float *a, const float *b, int64_t n)
{
    double d2 = 0.0, b2 = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        d2 += d * d;
        b2 += (double)b[i] * b[i];
    }
    return sqrt(d2 / b2);
}

/* Gradients of a bf16 convolution and linear layer (conv -> linear -> cross
 * entropy, the layers in bf16, the loss float32) against the same network
 * in float32.  Each rounding moves a value by at most 2^-9 relative; a
 * product sees its two operands rounded (2^-8), its output gradient rounded
 * (2^-9) and its result rounded (2^-9), and the input gradient goes through
 * both layers: within about 2^-6 of the float32 gradient in relative norm
 * (sums of random signs usually stay well below), and not equal to it.  No
 * ReLU between the layers: a unit whose sign bfloat16 flips would switch its
 * whole gradient on or off, an error no precision argument bounds. */
START_TEST(test_bf16_gradients_within_bf16_resolution)
{
    const conv_shape *cs = &conv_shapes[fm_test_each_set(_i, N_CONV)];
    fm_tensor *x = leaf(4, (int[]){cs->n, cs->c, cs->h, cs->w}, 41);
    fm_tensor *w = leaf(4, (int[]){cs->o, cs->c, cs->k, cs->k}, 42);
    fm_tensor *b = leaf(1, (int[]){cs->o}, 43);
    int oh = (cs->h + 2 * cs->pad - cs->k) / cs->stride + 1, ow = (cs->w + 2 * cs->pad - cs->k) / cs->stride + 1;
    fm_tensor *w2 = leaf(2, (int[]){10, cs->o * oh * ow}, 44);
    int32_t labels[8];
    for (int i = 0; i < cs->n; i++) labels[i] = (3 * i + 1) % 10;
    fm_tensor *leaves[4] = {x, w, b, w2};
    float *grads[2][4];
    for (int run = 0; run < 2; run++) {
        fm_graph *g = fm_graph_new();
        fm_graph_set_precision(g, run == 0 ? FM_PRECISION_BF16 : FM_PRECISION_FP32);
        fm_tensor *h = fm_conv2d(g, x, w, b, cs->stride, cs->pad);
        fm_tensor *logits = fm_linear(g, fm_flatten(g, h), w2, NULL);
        fm_tensor *loss = fm_cross_entropy(g, logits, labels);
        for (int k = 0; k < 4; k++) zero_grad(leaves[k]);
        fm_backward(g, loss);
        for (int k = 0; k < 4; k++) grads[run][k] = floats_copy(leaves[k]->grad, leaves[k]->numel);
        fm_graph_free(g);
    }
    const char *names[4] = {"input", "conv weight", "conv bias", "linear weight"};
    for (int k = 0; k < 4; k++) {
        double e = rel_l2(grads[0][k], grads[1][k], leaves[k]->numel);
        ck_assert_msg(e > 0.0 && e <= 0x1p-6, "%s, conv %dx%d stride %d: %s gradient %.3g from "
                      "float32's (relative norm; want (0, 2^-6])", fm_test_kernels_name(),
                      cs->k, cs->k, cs->stride, names[k], e);
        free(grads[0][k]);
        free(grads[1][k]);
    }
    for (int k = 0; k < 4; k++) fm_tensor_free(leaves[k]);
    fm_test_restore_kernels();
}
END_TEST

/* A bf16 convolution on the direct path does its own casts (its products
 * round x and w as they pack them; it rounds its bias and gradients), with
 * no fm_to_bf16 nodes and no rounded copy of x: forward and every gradient
 * bit-identical to the same convolution between casts
 * (fm_conv2d_bf16_fuse(false)).  Case: shape, then x read by the
 * convolution alone (its gradient stored) or also by a float32 branch (one
 * of the two adds to the other's). */
START_TEST(test_conv_own_casts_equal_cast_nodes)
{
    int c = fm_test_each_set(_i, 2 * N_CONV);
    const conv_shape *cs = &conv_shapes[c / 2];
    bool branch = c % 2;
    fm_tensor *x = leaf(4, (int[]){cs->n, cs->c, cs->h, cs->w}, 51);
    fm_tensor *w = leaf(4, (int[]){cs->o, cs->c, cs->k, cs->k}, 52);
    fm_tensor *b = leaf(1, (int[]){cs->o}, 53);
    int oh = (cs->h + 2 * cs->pad - cs->k) / cs->stride + 1, ow = (cs->w + 2 * cs->pad - cs->k) / cs->stride + 1;
    fm_tensor *w2 = leaf(2, (int[]){10, cs->o * oh * ow}, 54);
    fm_tensor *w3 = leaf(2, (int[]){10, cs->c * cs->h * cs->w}, 55);
    int32_t labels[8];
    for (int i = 0; i < cs->n; i++) labels[i] = (5 * i + 2) % 10;
    fm_tensor *leaves[5] = {x, w, b, w2, w3};
    float *out[2], *grads[2][5];
    bool fused[2];
    for (int run = 0; run < 2; run++) {
        fm_conv2d_bf16_fuse(run == 0);
        fm_graph *g = fm_graph_new();
        fm_graph_set_precision(g, FM_PRECISION_BF16);
        fm_tensor *h = fm_conv2d(g, x, w, b, cs->stride, cs->pad);
        fm_graph_set_precision(g, FM_PRECISION_FP32);
        /* h is the in-place cast of the convolution's output. */
        fused[run] = h->node->in[0]->node->in[0] == x;
        fm_tensor *logits = fm_linear(g, fm_flatten(g, h), w2, NULL);
        if (branch) logits = fm_add(g, logits, fm_linear(g, fm_flatten(g, fm_relu(g, x)), w3, NULL));
        fm_tensor *loss = fm_cross_entropy(g, logits, labels);
        for (int k = 0; k < 5; k++) zero_grad(leaves[k]);
        fm_backward(g, loss);
        out[run] = floats_copy(h->data, h->numel);
        for (int k = 0; k < 5; k++) grads[run][k] = floats_copy(leaves[k]->grad, leaves[k]->numel);
        fm_graph_free(g);
    }
    fm_conv2d_bf16_fuse(true);
    ck_assert_msg(!fused[1], "fm_conv2d_bf16_fuse(false) still fused");
    /* The portable set keeps the casts; on the vector sets shapes 0
     * (16 channels, 14x14) and 4 (one channel, 28x28, stride 1) take the
     * direct path, so they must be fused. */
    if (fm_kernels_active() == FM_KERNELS_PORTABLE)
        ck_assert_msg(!fused[0], "portable: a bf16 convolution without casts");
    else if (c / 2 == 0 || c / 2 == 4)
        ck_assert_msg(fused[0], "%s: shape %d is not fused", fm_test_kernels_name(), c / 2);
    char what[96];
    snprintf(what, sizeof what, "%s, conv %dx%d stride %d%s: output", fm_test_kernels_name(),
             cs->k, cs->k, cs->stride, branch ? " (x also read elsewhere)" : "");
    fm_test_assert_same_bits(out[0], out[1], (size_t)(cs->n * cs->o * oh * ow), what);
    const char *names[5] = {"input", "conv weight", "conv bias", "linear weight", "branch weight"};
    for (int k = 0; k < 5; k++) {
        snprintf(what, sizeof what, "%s, conv %dx%d stride %d%s: %s gradient",
                 fm_test_kernels_name(), cs->k, cs->k, cs->stride,
                 branch ? " (x also read elsewhere)" : "", names[k]);
        fm_test_assert_same_bits(grads[0][k], grads[1][k], (size_t)leaves[k]->numel, what);
        free(grads[0][k]);
        free(grads[1][k]);
    }
    free(out[0]);
    free(out[1]);
    for (int k = 0; k < 5; k++) fm_tensor_free(leaves[k]);
    fm_test_restore_kernels();
}
END_TEST

/* Names and parsing, as the CLI and Lua use them. */
START_TEST(test_precision_names)
{
    fm_precision p;
    ck_assert_int_eq(fm_precision_parse("bf16", &p), FM_OK);
    ck_assert_int_eq(p, FM_PRECISION_BF16);
    ck_assert_str_eq(fm_precision_name(p), "bf16");
    ck_assert_int_eq(fm_precision_parse("fp32", &p), FM_OK);
    ck_assert_int_eq(p, FM_PRECISION_FP32);
    ck_assert_int_eq(fm_precision_parse("fp16", &p), FM_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(fm_error_message(), "fp16"));
    /* New graphs take the process-wide precision. */
    fm_precision_use(FM_PRECISION_BF16);
    fm_graph *g = fm_graph_new();
    ck_assert_int_eq(fm_graph_precision(g), FM_PRECISION_BF16);
    fm_graph_free(g);
    fm_precision_use(FM_PRECISION_FP32);
    g = fm_graph_new();
    ck_assert_int_eq(fm_graph_precision(g), FM_PRECISION_FP32);
    fm_graph_free(g);
}
END_TEST

/* A bf16 linear layer does its own casts (its products round x and W as
 * they pack them; it rounds its bias and gradients): forward and every
 * gradient bit-identical to the same layer between cast nodes
 * (fm_linear_bf16_fuse(false)), on every set.  Shapes whose products are
 * one block and ones split by rows and by columns over the pool (MLP's
 * first layer evaluated 256 at a time among them); x read by the layer
 * alone or also by a float32 branch. */
static const int linear_shapes[][3] = {{13, 37, 10}, {200, 96, 40}, {64, 300, 200}, {256, 784, 256}};
#define N_LINEAR ((int)(sizeof linear_shapes / sizeof linear_shapes[0]))

START_TEST(test_linear_own_casts_equal_cast_nodes)
{
    int c = fm_test_each_set(_i, 2 * N_LINEAR);
    int batch = linear_shapes[c / 2][0], in = linear_shapes[c / 2][1], out = linear_shapes[c / 2][2];
    bool branch = c % 2;
    fm_tensor *x = leaf(2, (int[]){batch, in}, 61), *w = leaf(2, (int[]){out, in}, 62);
    fm_tensor *b = leaf(1, (int[]){out}, 63), *w2 = leaf(2, (int[]){10, out}, 64);
    fm_tensor *w3 = leaf(2, (int[]){10, in}, 65);
    int32_t *labels = malloc((size_t)batch * sizeof *labels);
    for (int i = 0; i < batch; i++) labels[i] = (3 * i + 1) % 10;
    fm_tensor *leaves[5] = {x, w, b, w2, w3};
    float *outs[2], *grads[2][5];
    bool fused[2];
    for (int run = 0; run < 2; run++) {
        fm_linear_bf16_fuse(run == 0);
        fm_graph *g = fm_graph_new();
        fm_graph_set_precision(g, FM_PRECISION_BF16);
        fm_tensor *h = fm_linear(g, x, w, b);
        fm_graph_set_precision(g, FM_PRECISION_FP32);
        /* h is the in-place cast of the layer's output. */
        fused[run] = h->node->in[0]->node->in[0] == x;
        fm_tensor *logits = fm_linear(g, fm_relu(g, h), w2, NULL);
        if (branch) logits = fm_add(g, logits, fm_linear(g, fm_relu(g, x), w3, NULL));
        fm_tensor *loss = fm_cross_entropy(g, logits, labels);
        for (int k = 0; k < 5; k++) zero_grad(leaves[k]);
        fm_backward(g, loss);
        outs[run] = floats_copy(h->data, h->numel);
        for (int k = 0; k < 5; k++) grads[run][k] = floats_copy(leaves[k]->grad, leaves[k]->numel);
        fm_graph_free(g);
    }
    fm_linear_bf16_fuse(true);
    ck_assert_msg(fused[0] && !fused[1], "fused: %d with fm_linear_bf16_fuse(true), %d without",
                  fused[0], fused[1]);
    char what[96];
    snprintf(what, sizeof what, "%s, linear %dx%d->%d%s: output", fm_test_kernels_name(), batch, in,
             out, branch ? " (x also read elsewhere)" : "");
    fm_test_assert_same_bits(outs[0], outs[1], (size_t)batch * out, what);
    const char *names[5] = {"input", "weight", "bias", "next weight", "branch weight"};
    for (int k = 0; k < 5; k++) {
        snprintf(what, sizeof what, "%s, linear %dx%d->%d%s: %s gradient", fm_test_kernels_name(),
                 batch, in, out, branch ? " (x also read elsewhere)" : "", names[k]);
        fm_test_assert_same_bits(grads[0][k], grads[1][k], (size_t)leaves[k]->numel, what);
        free(grads[0][k]);
        free(grads[1][k]);
    }
    free(outs[0]);
    free(outs[1]);
    free(labels);
    for (int k = 0; k < 5; k++) fm_tensor_free(leaves[k]);
    fm_test_restore_kernels();
}
END_TEST

static Suite *autocast_suite(void)
{
    Suite *s = suite_create("autocast");
    TCase *tc = tcase_create("bf16");
    tcase_set_timeout(tc, 120);
    int sets = fm_test_kernel_sets(NULL);
    tcase_add_loop_test(tc, test_cast_rounds_like_the_conversion, 0, sets);
    tcase_add_loop_test(tc, test_linear_is_casts_around_bf16_products, 0, sets);
    tcase_add_loop_test(tc, test_conv_products_are_bf16, 0, N_CONV * sets);
    tcase_add_loop_test(tc, test_bf16_gradients_within_bf16_resolution, 0, N_CONV * sets);
    tcase_add_loop_test(tc, test_conv_own_casts_equal_cast_nodes, 0, 2 * N_CONV * sets);
    tcase_add_loop_test(tc, test_linear_own_casts_equal_cast_nodes, 0, 2 * N_LINEAR * sets);
    tcase_add_test(tc, test_precision_names);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(autocast_suite()); }
