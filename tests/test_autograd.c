/* core/autograd/graph.c: what the tape records, the backward driver (order,
 * accumulation, branches), the arena over many steps, the profile; and a
 * small training run through model, graph and optimiser together. */
#include "fm_test_util.h"

#include "fm/fm_model.h"
#include "fm/fm_optim.h"
#include "fm_internal.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* A heap leaf that requires grad, with a zeroed heap grad. */
static fm_tensor *leaf(int ndim, const int *shape, float lo, float hi, uint64_t seed)
{
    return fm_test_leaf(ndim, shape, lo, hi, seed, true);
}

/* A heap tensor without grad (an input). */
static fm_tensor *input(int ndim, const int *shape, uint64_t seed)
{
    fm_tensor *t = fm_tensor_new(FM_F32, ndim, shape);
    fm_test_fill(t->data, (size_t)t->numel, -1.0f, 1.0f, seed);
    return t;
}

/* ---- the tape --------------------------------------------------------------- */

START_TEST(test_graph_defaults_and_tensors)
{
    fm_graph *g = fm_graph_new();
    ck_assert(fm_graph_training(g));
    ck_assert(fm_graph_grad_enabled(g));
    fm_graph_set_training(g, false);
    fm_graph_set_grad(g, false);
    ck_assert(!fm_graph_training(g));
    ck_assert(!fm_graph_grad_enabled(g));

    fm_tensor *t = fm_graph_tensor(g, 3, (int[]){2, 3, 5});
    ck_assert_int_eq(t->numel, 30);
    ck_assert_int_eq(t->dtype, FM_F32);
    ck_assert(!t->requires_grad);
    ck_assert_ptr_null(t->node);
    ck_assert_ptr_null(t->grad);
    ck_assert_uint_eq((uintptr_t)t->data % 64, 0);
    void *raw = fm_graph_alloc(g, 13);
    ck_assert_uint_eq((uintptr_t)raw % 64, 0);
    ck_assert_uint_gt(fm_arena_used(fm_graph_arena(g)), 0);
    fm_graph_reset(g);
    ck_assert_uint_eq(fm_arena_used(fm_graph_arena(g)), 0);
    /* Reset drops the step, not the settings. */
    ck_assert(!fm_graph_training(g));
    ck_assert(!fm_graph_grad_enabled(g));
    fm_graph_free(g);
    fm_graph_free(NULL);
}
END_TEST

START_TEST(test_tape_records_only_when_needed)
{
    fm_graph *g = fm_graph_new();
    fm_tensor *x = input(2, (int[]){3, 4}, 1);
    fm_tensor *w = leaf(2, (int[]){5, 4}, -1.0f, 1.0f, 2);
    fm_tensor *wn = input(2, (int[]){5, 4}, 3);

    fm_tensor *y = fm_linear(g, x, w, NULL);
    ck_assert(y->requires_grad);
    ck_assert_ptr_nonnull(y->node);
    ck_assert_int_eq(y->node->op, FM_OP_LINEAR);
    ck_assert_ptr_eq(y->node->out, y);
    ck_assert_ptr_eq(y->node->in[0], x);
    ck_assert_ptr_eq(y->node->in[1], w);
    ck_assert_ptr_null(y->node->in[2]);
    ck_assert(y->node->record);
    fm_tensor *r = fm_relu(g, y);  /* grad flows through ops from a recorded input */
    ck_assert(r->requires_grad);
    ck_assert_ptr_nonnull(r->node);

    /* No input requires grad: nothing recorded. */
    fm_tensor *y2 = fm_linear(g, x, wn, NULL);
    ck_assert(!y2->requires_grad);
    ck_assert_ptr_null(y2->node);
    fm_tensor *r2 = fm_relu(g, y2);
    ck_assert(!r2->requires_grad);
    ck_assert_ptr_null(r2->node);

    /* Grad off: nothing recorded even from a parameter; same values. */
    fm_graph_set_grad(g, false);
    fm_tensor *y3 = fm_linear(g, x, w, NULL);
    ck_assert(!y3->requires_grad);
    ck_assert_ptr_null(y3->node);
    ck_assert_mem_eq(y3->data, y->data, 15 * sizeof(float));

    fm_graph_free(g);
    fm_tensor_free(x);
    fm_tensor_free(w);
    fm_tensor_free(wn);
}
END_TEST

START_TEST(test_backward_without_grad_aborts)
{
    fm_graph *g = fm_graph_new();
    fm_graph_set_grad(g, false);
    fm_tensor *x = input(2, (int[]){2, 3}, 1);
    fm_tensor *w = leaf(2, (int[]){4, 3}, -1.0f, 1.0f, 2);
    fm_tensor *loss = fm_cross_entropy(g, fm_linear(g, x, w, NULL), (int32_t[]){0, 1});
    fm_backward(g, loss);
}
END_TEST

START_TEST(test_backward_non_scalar_aborts)
{
    fm_graph *g = fm_graph_new();
    fm_tensor *x = input(2, (int[]){2, 3}, 1);
    fm_tensor *w = leaf(2, (int[]){4, 3}, -1.0f, 1.0f, 2);
    fm_backward(g, fm_linear(g, x, w, NULL));
}
END_TEST

START_TEST(test_leaf_without_grad_buffer_aborts)
{
    /* A leaf marked requires_grad must bring its own grad buffer. */
    fm_graph *g = fm_graph_new();
    fm_tensor *x = input(2, (int[]){2, 3}, 1);
    fm_tensor *w = input(2, (int[]){4, 3}, 2);
    w->requires_grad = true;
    fm_backward(g, fm_cross_entropy(g, fm_linear(g, x, w, NULL), (int32_t[]){0, 1}));
}
END_TEST

/* ---- a small MLP used by several tests --------------------------------------- */

typedef struct mlp {
    fm_model *m;
    fm_linear_layer fc1, fc2;
} mlp;

static void mlp_init(mlp *net, int in, int hidden, int out, uint64_t seed)
{
    net->m = fm_model_new();
    net->fc1 = fm_nn_linear_new(net->m, "fc1", in, hidden, true);
    net->fc2 = fm_nn_linear_new(net->m, "fc2", hidden, out, true);
    fm_model_finalize(net->m, seed);
}

static fm_tensor *mlp_loss(mlp *net, fm_graph *g, fm_tensor *x, const int32_t *labels)
{
    fm_tensor *h = fm_relu(g, fm_nn_linear(g, &net->fc1, x));
    return fm_cross_entropy(g, fm_nn_linear(g, &net->fc2, h), labels);
}

/* Copies every parameter gradient of the model into one new array. */
static float *grads_copy(const fm_model *m, size_t *count)
{
    int n = 0;
    fm_tensor *const *p = fm_model_params(m, &n);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (size_t)p[i]->numel;
    float *out = malloc(total * sizeof *out), *o = out;
    for (int i = 0; i < n; i++) {
        memcpy(o, p[i]->grad, (size_t)p[i]->numel * sizeof *o);
        o += p[i]->numel;
    }
    *count = total;
    return out;
}

static void assert_doubled(const float *twice, const float *once, size_t n, const char *what)
{
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(twice[i] == once[i] + once[i], "%s: grad[%zu] = %.9g, expected 2 * %.9g",
                      what, i, (double)twice[i], (double)once[i]);
        nonzero += once[i] != 0.0f;
    }
    ck_assert_uint_gt(nonzero, n / 4);
}

enum { BATCH = 6, IN = 5, HID = 8, OUT = 3 };
static const int32_t labels6[BATCH] = {0, 2, 1, 1, 0, 2};

START_TEST(test_grads_accumulate_over_steps)
{
    mlp net;
    mlp_init(&net, IN, HID, OUT, 1);
    fm_tensor *x = input(2, (int[]){BATCH, IN}, 5);
    fm_graph *g = fm_graph_new();

    fm_backward(g, mlp_loss(&net, g, x, labels6));
    size_t n = 0;
    float *once = grads_copy(net.m, &n);

    /* A second step without zero_grad adds the same gradient again. */
    fm_graph_reset(g);
    fm_backward(g, mlp_loss(&net, g, x, labels6));
    float *twice = grads_copy(net.m, &n);
    assert_doubled(twice, once, n, "two steps");

    /* zero_grad, then one step: the single gradient again. */
    fm_model_zero_grad(net.m);
    fm_graph_reset(g);
    fm_backward(g, mlp_loss(&net, g, x, labels6));
    float *again = grads_copy(net.m, &n);
    ck_assert_mem_eq(again, once, n * sizeof(float));

    free(once);
    free(twice);
    free(again);
    fm_tensor_free(x);
    fm_graph_free(g);
    fm_model_free(net.m);
}
END_TEST

START_TEST(test_backward_twice_same_tape)
{
    /* Like PyTorch's backward(retain_graph=True) twice: twice the gradient,
     * not more (intermediate gradients start from zero each time). */
    mlp net;
    mlp_init(&net, IN, HID, OUT, 2);
    fm_tensor *x = leaf(2, (int[]){BATCH, IN}, -1.0f, 1.0f, 6);
    fm_graph *g = fm_graph_new();
    fm_tensor *loss = mlp_loss(&net, g, x, labels6);
    fm_backward(g, loss);
    size_t n = 0;
    float *once = grads_copy(net.m, &n);
    float xg[BATCH * IN];
    memcpy(xg, x->grad, sizeof xg);

    fm_backward(g, loss);
    float *twice = grads_copy(net.m, &n);
    assert_doubled(twice, once, n, "backward twice");
    float xg2[BATCH * IN];
    memcpy(xg2, x->grad, sizeof xg2);
    assert_doubled(xg2, xg, BATCH * IN, "input grad, backward twice");
    free(once);
    free(twice);
    fm_tensor_free(x);
    fm_graph_free(g);
    fm_model_free(net.m);
}
END_TEST

START_TEST(test_second_forward_without_reset)
{
    /* Two forwards on one tape, backward from each loss in turn: each
     * backward adds its own loss's gradient only. */
    mlp net;
    mlp_init(&net, IN, HID, OUT, 3);
    fm_tensor *x = input(2, (int[]){BATCH, IN}, 7);
    fm_graph *g = fm_graph_new();
    fm_backward(g, mlp_loss(&net, g, x, labels6));
    size_t n = 0;
    float *once = grads_copy(net.m, &n);
    fm_backward(g, mlp_loss(&net, g, x, labels6));
    float *twice = grads_copy(net.m, &n);
    assert_doubled(twice, once, n, "second forward without reset");
    free(once);
    free(twice);
    fm_tensor_free(x);
    fm_graph_free(g);
    fm_model_free(net.m);
}
END_TEST

START_TEST(test_unused_branch_gets_no_grad)
{
    fm_graph *g = fm_graph_new();
    fm_tensor *x = input(2, (int[]){4, 3}, 1);
    fm_tensor *w1 = leaf(2, (int[]){5, 3}, -1.0f, 1.0f, 2);
    fm_tensor *w2 = leaf(2, (int[]){5, 3}, -1.0f, 1.0f, 3);
    fm_tensor *unused = fm_relu(g, fm_linear(g, x, w2, NULL));
    ck_assert(unused->requires_grad);
    fm_tensor *loss = fm_cross_entropy(g, fm_linear(g, x, w1, NULL), (int32_t[]){0, 1, 2, 4});
    fm_backward(g, loss);
    float w1max = 0.0f;
    for (int i = 0; i < 15; i++) {
        ck_assert(w2->grad[i] == 0.0f);
        w1max = fmaxf(w1max, fabsf(w1->grad[i]));
    }
    ck_assert_float_gt(w1max, 1e-4f);
    fm_tensor_free(x);
    fm_tensor_free(w1);
    fm_tensor_free(w2);
    fm_graph_free(g);
}
END_TEST

/* ---- fresh gradient buffers ---------------------------------------------------- */

/* Convolutions (direct path, im2col with and without padding) and batch
 * norms, the ops that store into a fresh gradient instead of adding, in a
 * ResNet's two kinds of block and with extra consumers, so that each of them
 * is the first writer of some gradient and a later one of another. */
enum { FRESH_LEAVES = 22, FRESH_NODES = 17 };

typedef struct fresh_net {
    fm_graph *g;
    fm_tensor *p[FRESH_LEAVES], *nodes[FRESH_NODES];
    int np, nn;
} fresh_net;

/* t, recorded as the net's next node. */
static fm_tensor *fresh_node(fresh_net *f, fm_tensor *t)
{
    ck_assert_int_lt(f->nn, FRESH_NODES);
    return f->nodes[f->nn++] = t;
}

/* The next parameter, made on the first build. */
static fm_tensor *fresh_param(fresh_net *f, int ndim, const int *shape)
{
    ck_assert_int_lt(f->np, FRESH_LEAVES);
    if (!f->p[f->np]) f->p[f->np] = leaf(ndim, shape, 0.2f, 1.0f, 71 + (uint64_t)f->np);
    return f->p[f->np++];
}

/* 16 channels out: the 3x3 stride-1 convolutions on 16 channels run by
 * Winograd on the vector sets. */
static fm_tensor *fresh_conv(fresh_net *f, fm_tensor *x, int k, int stride, int pad)
{
    fm_tensor *w = fresh_param(f, 4, (int[]){16, x->shape[1], k, k});
    return fresh_node(f, fm_conv2d(f->g, x, w, NULL, stride, pad));
}

static fm_tensor *fresh_bn(fresh_net *f, fm_tensor *x, bool relu, fm_tensor *res)
{
    fm_tensor *w = fresh_param(f, 1, (int[]){16}), *b = fresh_param(f, 1, (int[]){16});
    return fresh_node(f, relu ? fm_batchnorm_relu(f->g, x, w, b, NULL, NULL, NULL, 0.1f, 1e-5f, res)
                              : fm_batchnorm(f->g, x, w, b, NULL, NULL, NULL, 0.1f, 1e-5f));
}

static fm_tensor *fresh_loss(fresh_net *f, fm_tensor *x)
{
    f->np = f->nn = 0;
    fm_tensor *b = fresh_bn(f, fresh_conv(f, x, 3, 1, 1), true, NULL);  /* 16x16: direct */
    /* Identity block: b's gradient is first stored by the batch norm's
     * residual branch, then added to by a Winograd conv; d's is stored by
     * one. */
    fm_tensor *d = fresh_bn(f, fresh_conv(f, b, 3, 1, 1), true, NULL);
    fm_tensor *d2 = fresh_bn(f, fresh_conv(f, d, 3, 1, 1), true, b);
    /* Downsampling block: d2's gradient is stored by the unpadded 1x1 conv,
     * then added to by the padded stride-2 one (im2col both). */
    fm_tensor *e2 = fresh_bn(f, fresh_conv(f, d2, 3, 2, 1), true, NULL);
    fm_tensor *e3 = fresh_conv(f, e2, 3, 1, 1);  /* 8x8: im2col */
    fm_tensor *s2 = fresh_bn(f, fresh_conv(f, d2, 1, 2, 0), false, NULL);
    fm_tensor *out = fresh_bn(f, e3, true, s2);
    /* Later consumers of s2 and out: the residual and the input gradient of
     * `out` are then added to an already written gradient. */
    fm_tensor *t = fresh_bn(f, out, true, s2);
    fm_tensor *u = fresh_bn(f, out, false, NULL);
    fm_tensor *pooled = fresh_node(f, fm_global_avgpool(f->g, fresh_node(f, fm_add(f->g, t, u))));
    fm_tensor *loss = fresh_node(f, fm_cross_entropy(f->g, pooled, (int32_t[]){1, 3}));
    ck_assert_int_eq(f->np, FRESH_LEAVES);
    ck_assert_int_eq(f->nn, FRESH_NODES);
    return loss;
}

/* On each kernel set this processor runs: each has its own fresh-gradient
 * stores (Winograd's only on the vector sets). */
START_TEST(test_fresh_grads_match_accumulation)
{
    fm_test_each_set(_i, 1);
    fm_tensor *x = input(4, (int[]){2, 3, 16, 16}, 70);
    fresh_net f = {.g = fm_graph_new()};
    float *want[FRESH_LEAVES];

    /* The reference: every node's backward called by hand, in reverse,
     * on zero-filled gradient buffers (no buffer is fresh). */
    fm_tensor *loss = fresh_loss(&f, x);
    for (int i = 0; i < FRESH_NODES; i++) {
        size_t bytes = (size_t)f.nodes[i]->numel * sizeof(float);
        f.nodes[i]->grad = memset(fm_graph_alloc(f.g, bytes), 0, bytes);
    }
    loss->grad[0] = 1.0f;
    for (int i = FRESH_NODES - 1; i >= 0; i--)
        fm_op_table[f.nodes[i]->node->op].backward(f.g, f.nodes[i]->node);
    for (int i = 0; i < FRESH_LEAVES; i++) {
        size_t bytes = (size_t)f.p[i]->numel * sizeof(float);
        want[i] = memcpy(malloc(bytes), f.p[i]->grad, bytes);
        memset(f.p[i]->grad, 0, bytes);
    }
    fm_graph_free(f.g);

    /* fm_backward on an arena full of NaN: a gradient added to while
     * fresh, or a fresh element never stored, turns up as NaN. */
    f.g = fm_graph_new();
    size_t poison = (size_t)1 << 20;
    float *junk = fm_graph_alloc(f.g, poison * sizeof(float));
    for (size_t i = 0; i < poison; i++) junk[i] = NAN;
    fm_graph_reset(f.g);
    fm_backward(f.g, fresh_loss(&f, x));
    ck_assert_uint_lt(fm_arena_used(fm_graph_arena(f.g)), poison * sizeof(float));
    for (int i = 0; i < FRESH_LEAVES; i++) {
        double norm = 0.0;
        for (int64_t q = 0; q < f.p[i]->numel; q++) {
            ck_assert_msg(f.p[i]->grad[q] == want[i][q], "%s: leaf %d element %lld: %g, want %g",
                          fm_test_kernels_name(), i, (long long)q, (double)f.p[i]->grad[q],
                          (double)want[i][q]);
            norm += fabs(want[i][q]);
        }
        ck_assert_double_gt(norm, 1e-6);
        free(want[i]);
        fm_tensor_free(f.p[i]);
    }
    fm_graph_free(f.g);
    fm_tensor_free(x);
    fm_test_restore_kernels();
}
END_TEST

/* ---- backward against finite differences on a graph with a branch ------------- */

typedef struct diamond {
    fm_tensor *x, *w1, *b1, *w2, *b2, *w3, *b3;
} diamond;

static const int32_t diamond_labels[4] = {1, 0, 3, 2};

/* h = relu(x W1 + b1); r = h + relu(h W2 + b2); loss = CE(r W3 + b3):
 * h feeds two consumers, so its gradient is the sum of both paths. */
static fm_tensor *diamond_loss(fm_graph *g, const diamond *d)
{
    fm_tensor *h = fm_relu(g, fm_linear(g, d->x, d->w1, d->b1));
    fm_tensor *r = fm_add(g, h, fm_relu(g, fm_linear(g, h, d->w2, d->b2)));
    return fm_cross_entropy(g, fm_linear(g, r, d->w3, d->b3), diamond_labels);
}

START_TEST(test_backward_matches_finite_differences)
{
    fm_test_each_set(_i, 1);
    diamond d = {
        .x = leaf(2, (int[]){4, 6}, -1.0f, 1.0f, 11),
        .w1 = leaf(2, (int[]){7, 6}, -0.8f, 0.8f, 12),
        .b1 = leaf(1, (int[]){7}, -0.3f, 0.3f, 13),
        .w2 = leaf(2, (int[]){7, 7}, -0.8f, 0.8f, 14),
        .b2 = leaf(1, (int[]){7}, -0.3f, 0.3f, 15),
        .w3 = leaf(2, (int[]){5, 7}, -0.8f, 0.8f, 16),
        .b3 = leaf(1, (int[]){5}, -0.3f, 0.3f, 17),
    };
    fm_graph *g = fm_graph_new();
    fm_backward(g, diamond_loss(g, &d));

    fm_tensor *all[7] = {d.x, d.w1, d.b1, d.w2, d.b2, d.w3, d.b3};
    const float eps = 1e-2f;
    int checked = 0;
    for (int t = 0; t < 7; t++) {
        fm_tensor *p = all[t];
        for (int64_t i = 0; i < p->numel; i += 3) {
            float keep = p->data[i];
            p->data[i] = keep + eps;
            fm_graph_reset(g);
            fm_graph_set_grad(g, false);
            double up = diamond_loss(g, &d)->data[0];
            p->data[i] = keep - eps;
            fm_graph_reset(g);
            double down = diamond_loss(g, &d)->data[0];
            p->data[i] = keep;
            double fd = (up - down) / (2.0 * eps);
            double an = p->grad[i];
            ck_assert_msg(fabs(fd - an) <= 2e-3 + 2e-2 * fabs(an),
                          "%s: tensor %d element %lld: backward %.6g, finite difference %.6g",
                          fm_test_kernels_name(), t, (long long)i, an, fd);
            checked++;
        }
    }
    ck_assert_int_gt(checked, 40);
    for (int t = 0; t < 7; t++) fm_tensor_free(all[t]);
    fm_graph_free(g);
    fm_test_restore_kernels();
}
END_TEST

/* ---- no-grad evaluation ------------------------------------------------------ */

START_TEST(test_no_grad_mode)
{
    mlp net;
    mlp_init(&net, IN, HID, OUT, 4);
    fm_tensor *x = input(2, (int[]){BATCH, IN}, 8);
    fm_graph *g = fm_graph_new();

    fm_tensor *loss = mlp_loss(&net, g, x, labels6);
    float with_grad = loss->data[0];
    size_t used_with_grad = fm_arena_used(fm_graph_arena(g));

    fm_graph_reset(g);
    fm_graph_set_grad(g, false);
    fm_tensor *l2 = mlp_loss(&net, g, x, labels6);
    ck_assert(!l2->requires_grad);
    ck_assert_ptr_null(l2->node);
    ck_assert(l2->data[0] == with_grad);
    /* Evaluation skips what only backward needs. */
    ck_assert_uint_lt(fm_arena_used(fm_graph_arena(g)), used_with_grad);
    /* No backward needed and no gradient touched. */
    size_t n = 0;
    float *gr = grads_copy(net.m, &n);
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++) nonzero += gr[i] != 0.0f;
    ck_assert_uint_eq(nonzero, 0);
    free(gr);
    fm_tensor_free(x);
    fm_graph_free(g);
    fm_model_free(net.m);
}
END_TEST

/* ---- dropout stream ------------------------------------------------------------ */

START_TEST(test_dropout_stream)
{
    fm_tensor *x = input(2, (int[]){8, 64}, 9);
    fm_graph *a = fm_graph_new(), *b = fm_graph_new();
    /* A new graph's stream is seeded from 0. */
    fm_rng_seed(fm_graph_rng(b), 0, FM_RNG_DROPOUT);
    fm_tensor *ya = fm_dropout(a, x, 0.5f), *yb = fm_dropout(b, x, 0.5f);
    ck_assert_mem_eq(ya->data, yb->data, 512 * sizeof(float));
    int zeros = 0;
    for (int i = 0; i < 512; i++) zeros += ya->data[i] == 0.0f;
    ck_assert_int_gt(zeros, 150);
    ck_assert_int_lt(zeros, 362);

    /* The next draw moves on; reseeding repeats. */
    fm_tensor *ya2 = fm_dropout(a, x, 0.5f);
    ck_assert(memcmp(ya->data, ya2->data, 512 * sizeof(float)) != 0);
    fm_rng_seed(fm_graph_rng(a), 0, FM_RNG_DROPOUT);
    fm_tensor *ya3 = fm_dropout(a, x, 0.5f);
    ck_assert_mem_eq(ya->data, ya3->data, 512 * sizeof(float));

    /* Eval mode: identity. */
    fm_graph_set_training(a, false);
    fm_tensor *ye = fm_dropout(a, x, 0.5f);
    ck_assert_mem_eq(ye->data, x->data, 512 * sizeof(float));
    fm_graph_free(a);
    fm_graph_free(b);
    fm_tensor_free(x);
}
END_TEST

/* ---- training ------------------------------------------------------------------- */

START_TEST(test_sgd_training_reduces_loss)
{
    /* Three well-separated clusters in 4-D, 48 points, full batch. */
    enum { NPTS = 48, DIM = 4, CLS = 3 };
    fm_tensor *x = fm_tensor_new(FM_F32, 2, (int[]){NPTS, DIM});
    int32_t labels[NPTS];
    fm_rng rng;
    fm_rng_seed(&rng, 5, FM_RNG_TEST);
    for (int i = 0; i < NPTS; i++) {
        labels[i] = i % CLS;
        for (int k = 0; k < DIM; k++) {
            float centre = (k == labels[i]) ? 2.0f : (k == 3 ? -1.0f * labels[i] : 0.0f);
            x->data[i * DIM + k] = centre + (fm_rng_uniform(&rng) - 0.5f);
        }
    }
    mlp net;
    mlp_init(&net, DIM, 16, CLS, 1);
    fm_optim_config cfg = fm_optim_defaults(FM_OPTIM_SGD);
    cfg.lr = 0.1f;
    cfg.momentum = 0.9f;
    int np = 0;
    fm_tensor *const *params = fm_model_params(net.m, &np);
    fm_optim *opt = fm_optim_new(params, np, &cfg);
    fm_graph *g = fm_graph_new();
    float first = 0.0f, last = 0.0f;
    for (int step = 0; step < 150; step++) {
        fm_graph_reset(g);
        fm_tensor *loss = mlp_loss(&net, g, x, labels);
        if (step == 0) first = loss->data[0];
        last = loss->data[0];
        fm_model_zero_grad(net.m);
        fm_backward(g, loss);
        fm_optim_step(opt);
    }
    ck_assert(isfinite(last));
    ck_assert_msg(last < 0.1f * first, "loss %g -> %g", (double)first, (double)last);

    /* And it classifies the training points. */
    fm_graph_reset(g);
    fm_graph_set_grad(g, false);
    fm_tensor *logits =
        fm_nn_linear(g, &net.fc2, fm_relu(g, fm_nn_linear(g, &net.fc1, x)));
    int correct = 0;
    for (int i = 0; i < NPTS; i++) {
        int best = 0;
        for (int k = 1; k < CLS; k++)
            if (logits->data[i * CLS + k] > logits->data[i * CLS + best]) best = k;
        correct += best == labels[i];
    }
    ck_assert_int_ge(correct, NPTS - 1);
    fm_optim_free(opt);
    fm_graph_free(g);
    fm_model_free(net.m);
    fm_tensor_free(x);
}
END_TEST

typedef struct small_cnn {
    fm_model *m;
    fm_conv_layer conv;
    fm_bn_layer bn;
    fm_linear_layer fc;
} small_cnn;

START_TEST(test_arena_constant_over_training)
{
    small_cnn net;
    net.m = fm_model_new();
    net.conv = fm_nn_conv_new(net.m, "conv", 1, 4, 3, 1, 1, true);
    net.bn = fm_nn_bn_new(net.m, "bn", 4);
    net.fc = fm_nn_linear_new(net.m, "fc", 4 * 4 * 4, 5, true);
    fm_model_finalize(net.m, 3);
    int np = 0;
    fm_tensor *const *params = fm_model_params(net.m, &np);
    fm_optim_config cfg = fm_optim_defaults(FM_OPTIM_ADAM);
    fm_optim *opt = fm_optim_new(params, np, &cfg);

    fm_graph *g = fm_graph_new();
    fm_arena *arena = fm_graph_arena(g);
    size_t cap_initial = fm_arena_capacity(arena), cap_warm = 0;
    int32_t labels[8];
    float first = 0.0f, last = 0.0f;
    enum { STEPS = 1200 };
    for (int step = 0; step < STEPS; step++) {
        /* Every tenth batch is short, as the last batch of an epoch. */
        int n = step % 10 == 9 ? 3 : 8;
        fm_graph_reset(g);
        /* A workspace larger than the initial block stands in for a step whose
         * activations outgrow it: the arena has to grow once, then hold. */
        fm_graph_alloc(g, 17u << 20);
        fm_tensor *x = fm_graph_tensor(g, 4, (int[]){n, 1, 8, 8});
        for (int i = 0; i < n; i++) {
            labels[i] = (step + i) % 5;
            for (int k = 0; k < 64; k++)
                x->data[i * 64 + k] = (k % 5 == labels[i]) ? 1.0f : -0.25f * (float)(k % 3);
        }
        fm_tensor *h = fm_relu(g, fm_nn_bn(g, &net.bn, fm_nn_conv(g, &net.conv, x)));
        h = fm_dropout(g, fm_flatten(g, fm_maxpool2d(g, h, 2)), 0.25f);
        fm_tensor *loss = fm_cross_entropy(g, fm_nn_linear(g, &net.fc, h), labels);
        fm_model_zero_grad(net.m);
        fm_backward(g, loss);
        fm_optim_step(opt);
        if (step < 10) first += loss->data[0] / 10.0f;
        if (step >= STEPS - 10) last += loss->data[0] / 10.0f;
        if (step == 20) cap_warm = fm_arena_capacity(arena);
    }
    ck_assert_uint_gt(cap_warm, cap_initial);  /* it did have to grow */
    ck_assert_uint_eq(fm_arena_capacity(arena), cap_warm);
    ck_assert(isfinite(last));
    ck_assert_msg(last < 0.5f * first, "loss %g -> %g", (double)first, (double)last);
    ck_assert_int_eq(net.bn.num_batches_tracked->i64[0], STEPS);
    fm_optim_free(opt);
    fm_graph_free(g);
    fm_model_free(net.m);
}
END_TEST

/* ---- profile --------------------------------------------------------------------- */

START_TEST(test_profile_counts_calls)
{
    mlp net;
    mlp_init(&net, IN, HID, OUT, 5);
    fm_tensor *x = input(2, (int[]){BATCH, IN}, 10);
    fm_graph *g = fm_graph_new();

    /* Not counting until enabled. */
    fm_backward(g, mlp_loss(&net, g, x, labels6));
    fm_op_profile prof[FM_OP_COUNT + 2];
    memset(prof, 0, sizeof prof);
    ck_assert_int_eq(fm_graph_profile(g, prof, FM_OP_COUNT), FM_OP_COUNT);
    for (int i = 0; i < FM_OP_COUNT; i++) ck_assert_int_eq(prof[i].forward_calls, 0);

    fm_graph_set_profile(g, true);
    for (int step = 0; step < 3; step++) {
        fm_graph_reset(g);
        fm_backward(g, mlp_loss(&net, g, x, labels6));
    }
    fm_graph_reset(g);
    fm_graph_set_grad(g, false);
    mlp_loss(&net, g, x, labels6);  /* forward only */

    memset(prof, 0x7f, sizeof prof);
    ck_assert_int_eq(fm_graph_profile(g, prof, FM_OP_COUNT), FM_OP_COUNT);
    static const char *const names[FM_OP_COUNT] = {
        "linear", "conv2d", "maxpool2d", "global_avgpool", "batchnorm",
        "relu", "dropout", "add", "flatten", "cross_entropy", "batchnorm_relu", "to_bf16",
        "maxpool2d_relu",
    };
    for (int i = 0; i < FM_OP_COUNT; i++) {
        ck_assert_str_eq(prof[i].name, names[i]);
        ck_assert(prof[i].forward_s >= 0.0 && prof[i].backward_s >= 0.0);
    }
    ck_assert_int_eq(prof[FM_OP_LINEAR].forward_calls, 8);
    ck_assert_int_eq(prof[FM_OP_LINEAR].backward_calls, 6);
    ck_assert_int_eq(prof[FM_OP_RELU].forward_calls, 4);
    ck_assert_int_eq(prof[FM_OP_RELU].backward_calls, 3);
    ck_assert_int_eq(prof[FM_OP_CROSS_ENTROPY].forward_calls, 4);
    ck_assert_int_eq(prof[FM_OP_CROSS_ENTROPY].backward_calls, 3);
    ck_assert_int_eq(prof[FM_OP_CONV2D].forward_calls, 0);
    ck_assert_int_eq(prof[FM_OP_BATCHNORM].backward_calls, 0);
    ck_assert(prof[FM_OP_LINEAR].forward_s > 0.0);

    /* `max` limits what is written. */
    fm_op_profile two[3];
    memset(two, 0x5a, sizeof two);
    ck_assert_int_eq(fm_graph_profile(g, two, 2), FM_OP_COUNT);
    ck_assert_str_eq(two[1].name, "conv2d");
    unsigned char sentinel[sizeof two[2]];
    memset(sentinel, 0x5a, sizeof sentinel);
    ck_assert_mem_eq(&two[2], sentinel, sizeof sentinel);

    /* Disabled: counts freeze; enabled again: they start from zero. */
    fm_graph_set_profile(g, false);
    mlp_loss(&net, g, x, labels6);
    fm_graph_profile(g, prof, FM_OP_COUNT);
    ck_assert_int_eq(prof[FM_OP_LINEAR].forward_calls, 8);
    fm_graph_set_profile(g, true);
    mlp_loss(&net, g, x, labels6);
    fm_graph_profile(g, prof, FM_OP_COUNT);
    ck_assert_int_eq(prof[FM_OP_LINEAR].forward_calls, 2);
    ck_assert_int_eq(prof[FM_OP_LINEAR].backward_calls, 0);

    fm_tensor_free(x);
    fm_graph_free(g);
    fm_model_free(net.m);
}
END_TEST

static Suite *autograd_suite(void)
{
    Suite *s = suite_create("autograd");
    TCase *tc = tcase_create("tape");
    tcase_add_test(tc, test_graph_defaults_and_tensors);
    tcase_add_test(tc, test_tape_records_only_when_needed);
    tcase_add_test_raise_signal(tc, test_backward_without_grad_aborts, SIGABRT);
    tcase_add_test_raise_signal(tc, test_backward_non_scalar_aborts, SIGABRT);
    tcase_add_test_raise_signal(tc, test_leaf_without_grad_buffer_aborts, SIGABRT);
    tcase_add_test(tc, test_no_grad_mode);
    tcase_add_test(tc, test_dropout_stream);
    tcase_add_test(tc, test_profile_counts_calls);
    suite_add_tcase(s, tc);

    tc = tcase_create("backward");
    tcase_add_test(tc, test_grads_accumulate_over_steps);
    tcase_add_test(tc, test_backward_twice_same_tape);
    tcase_add_test(tc, test_second_forward_without_reset);
    tcase_add_test(tc, test_unused_branch_gets_no_grad);
    /* The comparisons against a reference, once per kernel set. */
    int sets = fm_test_kernel_sets(NULL);
    tcase_add_loop_test(tc, test_backward_matches_finite_differences, 0, sets);
    tcase_add_loop_test(tc, test_fresh_grads_match_accumulation, 0, sets);
    suite_add_tcase(s, tc);

    tc = tcase_create("training");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_sgd_training_reduces_loss);
    tcase_add_test(tc, test_arena_constant_over_training);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(autograd_suite()); }
