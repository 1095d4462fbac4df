/* test_ops — every layer op: finite-difference gradient checks, the fast
 * kernels against naive loops, known values, thread-count determinism and
 * shape assertions.  Everything that computes runs once per kernel set this
 * processor runs; the vector sets are also compared bit for bit with the
 * portable one where their sums are laid out alike (batch norm, pooling)
 * and with each other (convolutions).
 *
 * Gradient checks seed an op's output gradient with a fixed random R and run
 * that node's backward straight from the op table, so the analytic gradient
 * is exactly d sum(out * R) / d input; the numeric one comes from central
 * differences of sum(out * R) in double.  One test also goes through
 * fm_backward on a small network. */
#include "fm_internal.h"
#include "fm_test_util.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------- */

static uint64_t next_seed = 1000;

/* fm_test_leaf with the next seed of this file's sequence. */
static fm_tensor *leaf(int ndim, const int *shape, float lo, float hi, bool grad)
{
    return fm_test_leaf(ndim, shape, lo, hi, next_seed++, grad);
}

static void zero_grad(fm_tensor *t)
{
    if (t && t->grad) memset(t->grad, 0, (size_t)t->numel * sizeof(float));
}

static double dot(const fm_tensor *t, const float *r)
{
    double s = 0.0;
    for (int64_t i = 0; i < t->numel; i++) s += (double)t->data[i] * r[i];
    return s;
}

/* Runs the backward of the node that made `out` with out->grad = r. */
static void node_backward(fm_graph *g, fm_tensor *out, float *r)
{
    ck_assert_ptr_nonnull(out->node);
    out->grad = r;
    fm_op_table[out->node->op].backward(g, out->node);
    out->grad = NULL;
}

/* ---- finite-difference gradient check ------------------------------------ */

typedef struct op_case op_case;
struct op_case {
    fm_tensor *(*build)(fm_graph *g, const op_case *c);
    fm_tensor *in[FM_NODE_MAX_IN];
    bool diff[FM_NODE_MAX_IN];  /* check the gradient w.r.t. this input */
    bool eval;                  /* build in eval mode */
    int iarg[2];
    float farg[2];
    const int32_t *labels;
    float h;                    /* finite-difference step (0: 1e-2) */
};

static fm_tensor *build_linear(fm_graph *g, const op_case *c)
{
    return fm_linear(g, c->in[0], c->in[1], c->in[2]);
}

static fm_tensor *build_conv(fm_graph *g, const op_case *c)
{
    return fm_conv2d(g, c->in[0], c->in[1], c->in[2], c->iarg[0], c->iarg[1]);
}

static fm_tensor *build_maxpool(fm_graph *g, const op_case *c)
{
    return fm_maxpool2d(g, c->in[0], c->iarg[0]);
}

static fm_tensor *build_avgpool(fm_graph *g, const op_case *c)
{
    return fm_global_avgpool(g, c->in[0]);
}

static fm_tensor *build_bn(fm_graph *g, const op_case *c)
{
    return fm_batchnorm(g, c->in[0], c->in[1], c->in[2], c->in[3], c->in[4], c->in[5],
                        c->farg[0], c->farg[1]);
}

static fm_tensor *build_bn_relu(fm_graph *g, const op_case *c)
{
    return fm_batchnorm_relu(g, c->in[0], c->in[1], c->in[2], c->in[3], c->in[4], c->in[5],
                             c->farg[0], c->farg[1], c->in[6]);
}

static fm_tensor *build_relu(fm_graph *g, const op_case *c) { return fm_relu(g, c->in[0]); }

static fm_tensor *build_dropout(fm_graph *g, const op_case *c)
{
    /* The same seed for every evaluation: the same mask each time. */
    fm_rng_seed(fm_graph_rng(g), 77, FM_RNG_DROPOUT);
    return fm_dropout(g, c->in[0], c->farg[0]);
}

static fm_tensor *build_add(fm_graph *g, const op_case *c)
{
    return fm_add(g, c->in[0], c->in[1]);
}

static fm_tensor *build_flatten(fm_graph *g, const op_case *c) { return fm_flatten(g, c->in[0]); }

static fm_tensor *build_ce(fm_graph *g, const op_case *c)
{
    return fm_cross_entropy(g, c->in[0], c->labels);
}

/* Smoothing farg[0]; farg[1] > 0: targets mixed with weight farg[1]. */
static fm_tensor *build_ce_smooth(fm_graph *g, const op_case *c)
{
    static const int32_t labels_b[5] = {2, 2, 0, 3, 1};
    if (c->farg[1] > 0.0f)
        return fm_cross_entropy_mix(g, c->in[0], c->labels, labels_b, c->farg[1], c->farg[0]);
    return fm_cross_entropy_smooth(g, c->in[0], c->labels, c->farg[0]);
}

static fm_tensor *case_run(fm_graph *g, const op_case *c)
{
    fm_graph_reset(g);
    fm_graph_set_training(g, !c->eval);
    return c->build(g, c);
}

/* Checks every element of every input marked in c->diff; returns the largest
 * analytic gradient seen, so callers can tell a vacuous check from a real one. */
static double grad_check(const op_case *c, double atol, double rtol)
{
    float h = c->h > 0.0f ? c->h : 1e-2f;
    fm_graph *g = fm_graph_new();
    for (int i = 0; i < FM_NODE_MAX_IN; i++)
        if (c->diff[i]) zero_grad(c->in[i]);

    fm_tensor *out = case_run(g, c);
    size_t m = (size_t)out->numel;
    float *r = malloc(m * sizeof *r);
    fm_test_fill(r, m, -1.0f, 1.0f, next_seed++);
    node_backward(g, out, r);

    double biggest = 0.0;
    for (int i = 0; i < FM_NODE_MAX_IN; i++) {
        if (!c->diff[i]) continue;
        fm_tensor *t = c->in[i];
        float *ana = malloc((size_t)t->numel * sizeof *ana);
        memcpy(ana, t->grad, (size_t)t->numel * sizeof *ana);
        for (int64_t e = 0; e < t->numel; e++) {
            float v = t->data[e];
            float vp = v + h, vm = v - h;
            t->data[e] = vp;
            double lp = dot(case_run(g, c), r);
            t->data[e] = vm;
            double lm = dot(case_run(g, c), r);
            t->data[e] = v;
            double num = (lp - lm) / ((double)vp - (double)vm);
            double err = fabs(num - ana[e]);
            ck_assert_msg(err <= atol + rtol * fmax(fabs(num), fabs(ana[e])),
                          "%s: input %d element %lld: analytic %.6g numeric %.6g",
                          fm_test_kernels_name(), i, (long long)e, (double)ana[e], num);
            biggest = fmax(biggest, fabs(ana[e]));
        }
        free(ana);
    }
    free(r);
    fm_graph_free(g);
    return biggest;
}

static void case_free(op_case *c)
{
    for (int i = 0; i < FM_NODE_MAX_IN; i++) fm_tensor_free(c->in[i]);
}

/* ---- naive references -------------------------------------------------------- */

typedef struct conv_shape {
    int n, c, h, w, o, kh, kw, stride, pad;
    bool bias;
} conv_shape;

static int conv_oh(const conv_shape *s) { return (s->h + 2 * s->pad - s->kh) / s->stride + 1; }
static int conv_ow(const conv_shape *s) { return (s->w + 2 * s->pad - s->kw) / s->stride + 1; }

static float *ref_conv_forward(const conv_shape *s, const float *x, const float *w, const float *b)
{
    int oh = conv_oh(s), ow = conv_ow(s);
    float *y = malloc((size_t)s->n * s->o * oh * ow * sizeof *y);
    for (int n = 0; n < s->n; n++)
        for (int o = 0; o < s->o; o++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    double acc = b ? b[o] : 0.0;
                    for (int c = 0; c < s->c; c++)
                        for (int ki = 0; ki < s->kh; ki++)
                            for (int kj = 0; kj < s->kw; kj++) {
                                int iy = oy * s->stride - s->pad + ki;
                                int ix = ox * s->stride - s->pad + kj;
                                if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                                acc += (double)x[((n * s->c + c) * s->h + iy) * s->w + ix] *
                                       w[((o * s->c + c) * s->kh + ki) * s->kw + kj];
                            }
                    y[((n * s->o + o) * oh + oy) * ow + ox] = (float)acc;
                }
    return y;
}

/* dx, dw, db (each may be NULL) = the gradients of sum(y * dy). */
static void ref_conv_backward(const conv_shape *s, float *dx, float *dw, float *db,
                              const float *dy, const float *x, const float *w)
{
    int oh = conv_oh(s), ow = conv_ow(s);
    size_t nx = (size_t)s->n * s->c * s->h * s->w, nw = (size_t)s->o * s->c * s->kh * s->kw;
    double *ax = calloc(nx, sizeof *ax), *aw = calloc(nw, sizeof *aw),
           *ab = calloc((size_t)s->o, sizeof *ab);
    for (int n = 0; n < s->n; n++)
        for (int o = 0; o < s->o; o++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    double gy = dy[((n * s->o + o) * oh + oy) * ow + ox];
                    ab[o] += gy;
                    for (int c = 0; c < s->c; c++)
                        for (int ki = 0; ki < s->kh; ki++)
                            for (int kj = 0; kj < s->kw; kj++) {
                                int iy = oy * s->stride - s->pad + ki;
                                int ix = ox * s->stride - s->pad + kj;
                                if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                                size_t xi = ((size_t)(n * s->c + c) * s->h + iy) * s->w + ix;
                                size_t wi = ((size_t)(o * s->c + c) * s->kh + ki) * s->kw + kj;
                                ax[xi] += gy * w[wi];
                                aw[wi] += gy * x[xi];
                            }
                }
    for (size_t i = 0; dx && i < nx; i++) dx[i] = (float)ax[i];
    for (size_t i = 0; dw && i < nw; i++) dw[i] = (float)aw[i];
    for (int i = 0; db && i < s->o; i++) db[i] = (float)ab[i];
    free(ax);
    free(aw);
    free(ab);
}

static float *ref_linear_forward(int n, int in, int out, const float *x, const float *w,
                                 const float *b)
{
    float *y = malloc((size_t)n * out * sizeof *y);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < out; j++) {
            double acc = b ? b[j] : 0.0;
            for (int k = 0; k < in; k++) acc += (double)x[i * in + k] * w[j * in + k];
            y[i * out + j] = (float)acc;
        }
    return y;
}

static void ref_linear_backward(int n, int in, int out, float *dx, float *dw, float *db,
                                const float *dy, const float *x, const float *w)
{
    for (int i = 0; i < n; i++)
        for (int k = 0; k < in; k++) {
            double acc = 0.0;
            for (int j = 0; j < out; j++) acc += (double)dy[i * out + j] * w[j * in + k];
            dx[i * in + k] = (float)acc;
        }
    for (int j = 0; j < out; j++)
        for (int k = 0; k < in; k++) {
            double acc = 0.0;
            for (int i = 0; i < n; i++) acc += (double)dy[i * out + j] * x[i * in + k];
            dw[j * in + k] = (float)acc;
        }
    for (int j = 0; j < out; j++) {
        double acc = 0.0;
        for (int i = 0; i < n; i++) acc += dy[i * out + j];
        db[j] = (float)acc;
    }
}

/* ---- op table -------------------------------------------------------------- */

START_TEST(test_op_table_rows)
{
    for (int i = 0; i < FM_OP_COUNT; i++) {
        ck_assert_int_eq(fm_op_table[i].id, i);
        ck_assert_ptr_nonnull(fm_op_table[i].name);
        ck_assert_ptr_nonnull(fm_op_table[i].forward);
        ck_assert_ptr_nonnull(fm_op_table[i].backward);
        for (int j = 0; j < i; j++) ck_assert_str_ne(fm_op_table[i].name, fm_op_table[j].name);
    }
    ck_assert_str_eq(fm_op_table[FM_OP_CONV2D].name, "conv2d");
    ck_assert_str_eq(fm_op_table[FM_OP_CROSS_ENTROPY].name, "cross_entropy");
}
END_TEST

/* ---- linear ------------------------------------------------------------------ */

START_TEST(test_linear_gradcheck)
{
    fm_test_each_set(_i, 1);
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        op_case c = {.build = build_linear};
        c.in[0] = leaf(2, (int[]){5, 7}, -1, 1, true);
        c.in[1] = leaf(2, (int[]){4, 7}, -1, 1, true);
        c.in[2] = with_bias ? leaf(1, (int[]){4}, -1, 1, true) : NULL;
        c.diff[0] = c.diff[1] = true;
        c.diff[2] = with_bias;
        ck_assert_double_gt(grad_check(&c, 2e-3, 1e-2), 0.1);
        case_free(&c);
    }
    fm_test_restore_kernels();
}
END_TEST

static void linear_vs_reference(int n, int in, int out, bool bias)
{
    fm_tensor *x = leaf(2, (int[]){n, in}, -1, 1, true);
    fm_tensor *w = leaf(2, (int[]){out, in}, -1, 1, true);
    fm_tensor *b = bias ? leaf(1, (int[]){out}, -1, 1, true) : NULL;
    fm_graph *g = fm_graph_new();
    fm_tensor *y = fm_linear(g, x, w, b);
    float *ref = ref_linear_forward(n, in, out, x->data, w->data, b ? b->data : NULL);
    ck_assert_double_lt(fm_test_max_rel_diff(y->data, ref, (size_t)n * out), 1e-4);

    float *dy = malloc((size_t)n * out * sizeof *dy);
    fm_test_fill(dy, (size_t)n * out, -1, 1, next_seed++);
    /* Backward adds to the gradients already there. */
    for (int64_t i = 0; i < x->numel; i++) x->grad[i] = 0.25f;
    for (int64_t i = 0; i < w->numel; i++) w->grad[i] = 0.5f;
    for (int i = 0; b && i < out; i++) b->grad[i] = -0.5f;
    node_backward(g, y, dy);
    float *rdx = malloc((size_t)n * in * sizeof *rdx), *rdw = malloc((size_t)out * in * sizeof *rdw),
          *rdb = malloc((size_t)out * sizeof *rdb);
    ref_linear_backward(n, in, out, rdx, rdw, rdb, dy, x->data, w->data);
    for (int i = 0; i < n * in; i++) rdx[i] += 0.25f;
    for (int i = 0; i < out * in; i++) rdw[i] += 0.5f;
    for (int i = 0; i < out; i++) rdb[i] -= 0.5f;
    ck_assert_double_lt(fm_test_max_rel_diff(x->grad, rdx, (size_t)n * in), 1e-4);
    ck_assert_double_lt(fm_test_max_rel_diff(w->grad, rdw, (size_t)out * in), 1e-4);
    if (b) ck_assert_double_lt(fm_test_max_rel_diff(b->grad, rdb, (size_t)out), 1e-4);

    free(ref);
    free(dy);
    free(rdx);
    free(rdw);
    free(rdb);
    fm_graph_free(g);
    fm_tensor_free(x);
    fm_tensor_free(w);
    fm_tensor_free(b);
}

START_TEST(test_linear_vs_reference)
{
    fm_test_each_set(_i, 1);
    linear_vs_reference(3, 5, 4, true);
    linear_vs_reference(1, 17, 3, false);
    /* Large enough for fm_sgemm to split C into blocks (rows, then columns). */
    linear_vs_reference(200, 96, 40, true);
    linear_vs_reference(64, 300, 200, true);
    linear_vs_reference(64, 784, 256, false);
    fm_test_restore_kernels();
}
END_TEST

/* ---- conv2d ------------------------------------------------------------------ */

static const conv_shape conv_grad_shapes[] = {
    {2, 3, 7, 5, 4, 3, 3, 1, 1, true},
    {2, 3, 7, 5, 4, 3, 3, 2, 0, false},
    {3, 2, 7, 5, 3, 1, 1, 1, 0, true},
    {2, 4, 7, 5, 3, 1, 1, 2, 0, false},
    {2, 2, 7, 5, 3, 5, 5, 1, 2, true},
    {2, 3, 7, 5, 2, 3, 3, 2, 2, true},
    {2, 2, 6, 5, 3, 2, 3, 2, 1, false},
    {3, 1, 5, 6, 2, 3, 3, 1, 0, true},
};

#define CONV_GRAD_NSHAPES ((int)(sizeof conv_grad_shapes / sizeof conv_grad_shapes[0]))

START_TEST(test_conv2d_gradcheck)
{
    const conv_shape *s = &conv_grad_shapes[fm_test_each_set(_i, CONV_GRAD_NSHAPES)];
    op_case c = {.build = build_conv, .iarg = {s->stride, s->pad}};
    c.in[0] = leaf(4, (int[]){s->n, s->c, s->h, s->w}, -1, 1, true);
    c.in[1] = leaf(4, (int[]){s->o, s->c, s->kh, s->kw}, -1, 1, true);
    c.in[2] = s->bias ? leaf(1, (int[]){s->o}, -1, 1, true) : NULL;
    c.diff[0] = c.diff[1] = true;
    c.diff[2] = s->bias;
    ck_assert_double_gt(grad_check(&c, 2e-3, 1e-2), 0.1);
    case_free(&c);
    fm_test_restore_kernels();
}
END_TEST

static const conv_shape conv_ref_shapes[] = {
    {2, 3, 7, 5, 4, 3, 3, 1, 1, true},
    {20, 5, 9, 11, 6, 3, 3, 1, 1, true},   /* several chunks */
    {9, 3, 28, 28, 8, 3, 3, 1, 1, false},  /* CNN conv1-like, several chunks */
    {7, 4, 13, 12, 5, 5, 5, 2, 0, true},
    {6, 4, 11, 9, 8, 1, 1, 2, 0, false},   /* ResCNN shortcut */
    {5, 3, 10, 10, 4, 1, 1, 1, 0, true},
    {2, 2, 50, 50, 4, 3, 3, 1, 1, true},   /* one image wider than a chunk */
    {16, 32, 14, 14, 64, 3, 3, 1, 1, true},
    {6, 32, 28, 28, 8, 3, 3, 1, 1, false},  /* ResCNN stage 1: one image per chunk, no staging */
    /* The direct (im2col-free) path with other kernels and paddings. */
    {3, 2, 20, 22, 5, 5, 5, 1, 2, true},
    {4, 3, 16, 18, 6, 3, 3, 1, 0, false},
    {2, 3, 15, 17, 4, 2, 3, 1, 1, true},
    {2, 2, 12, 12, 3, 3, 3, 1, 3, true},    /* padding wider than the kernel */
    /* Several images side by side per direct-path plane, the last group
     * and chunk short. */
    {64, 16, 7, 7, 8, 3, 3, 1, 1, false},   /* ResCNN stage 3: eight 7x7 maps a plane */
    {17, 2, 12, 12, 3, 3, 3, 1, 3, true},   /* wide padding: frames set by the output */
    {15, 2, 9, 20, 4, 5, 5, 1, 2, true},
    /* Strided convolutions on the direct path (phase planes), grouped. */
    {20, 6, 28, 28, 8, 3, 3, 2, 1, false},  /* ResCNN stage 2 entry */
    {18, 16, 14, 14, 8, 3, 3, 2, 1, true},  /* weight gradient tap-major (16 channels) */
    {20, 8, 14, 14, 16, 1, 1, 2, 0, false}, /* ResCNN shortcut: three phases without taps */
    {17, 3, 13, 11, 4, 3, 3, 2, 1, true},   /* odd sizes: phases of unequal rows and columns */
    {2, 2, 21, 21, 3, 5, 5, 1, 0, true},    /* im2col path, output rows over 16 floats */
    {2, 3, 40, 38, 4, 3, 3, 2, 1, true},    /* stride 2, output rows over 16 floats */
    {2, 2, 11, 13, 3, 3, 3, 3, 1, false},   /* stride 3 */
    /* Winograd F(2x2, 3x3) (16+ channels in and out): one image per
     * product, several per product with the last group short, maps wider
     * than 16 tiles; odd maps, whose weight gradient stays direct. */
    {20, 16, 28, 28, 16, 3, 3, 1, 1, true},
    {9, 16, 14, 14, 32, 3, 3, 1, 1, false},
    {3, 16, 40, 36, 16, 3, 3, 1, 1, true},
    {64, 16, 7, 7, 16, 3, 3, 1, 1, true},   /* tiles past the edge */
    {5, 16, 9, 11, 24, 3, 3, 1, 1, false},
};

#define CONV_REF_NSHAPES ((int)(sizeof conv_ref_shapes / sizeof conv_ref_shapes[0]))

/* One convolution of shape s, forward and backward, on the active kernel
 * set: its inputs (seeded from `seed`) with their gradients after the
 * backward, the output and the output gradient.  The gradients hold 0.25,
 * 0.5 and -0.5 before (the backward adds to them), and the workspaces come
 * from an arena full of NaN: what a kernel reads without writing it first
 * (beyond what it may ignore) shows. */
typedef struct conv_result {
    fm_tensor *x, *w, *b;  /* [n, c, h, w], [o, c, kh, kw], [o] or NULL */
    float *y, *dy;         /* [n, o, oh, ow] each */
    size_t ny;
} conv_result;

static conv_result conv_run(const conv_shape *s, uint64_t seed)
{
    conv_result r;
    next_seed = seed;
    r.x = leaf(4, (int[]){s->n, s->c, s->h, s->w}, -1, 1, true);
    r.w = leaf(4, (int[]){s->o, s->c, s->kh, s->kw}, -1, 1, true);
    r.b = s->bias ? leaf(1, (int[]){s->o}, -1, 1, true) : NULL;
    fm_graph *g = fm_graph_new();
    size_t poison = (size_t)1 << 22;
    float *junk = fm_graph_alloc(g, poison * sizeof(float));
    for (size_t i = 0; i < poison; i++) junk[i] = NAN;
    fm_graph_reset(g);
    fm_tensor *y = fm_conv2d(g, r.x, r.w, r.b, s->stride, s->pad);
    ck_assert_int_eq(y->shape[2], conv_oh(s));
    ck_assert_int_eq(y->shape[3], conv_ow(s));
    r.ny = (size_t)y->numel;
    r.y = malloc(r.ny * sizeof *r.y);
    memcpy(r.y, y->data, r.ny * sizeof *r.y);
    r.dy = malloc(r.ny * sizeof *r.dy);
    fm_test_fill(r.dy, r.ny, -1, 1, next_seed++);
    for (int64_t i = 0; i < r.x->numel; i++) r.x->grad[i] = 0.25f;
    for (int64_t i = 0; i < r.w->numel; i++) r.w->grad[i] = 0.5f;
    for (int i = 0; r.b && i < s->o; i++) r.b->grad[i] = -0.5f;
    node_backward(g, y, r.dy);
    /* (all of it within the poisoned memory) */
    ck_assert_uint_eq(fm_arena_peak(fm_graph_arena(g)), poison * sizeof(float));
    fm_graph_free(g);
    return r;
}

static void conv_result_free(conv_result *r)
{
    fm_tensor_free(r->x);
    fm_tensor_free(r->w);
    fm_tensor_free(r->b);
    free(r->y);
    free(r->dy);
}

/* Each shape on each kernel set (the portable one runs cblas_sgemm and
 * plain copies, and no Winograd). */
START_TEST(test_conv2d_vs_reference)
{
    int c = fm_test_each_set(_i, CONV_REF_NSHAPES);
    const conv_shape *s = &conv_ref_shapes[c];
    const char *set = fm_test_kernels_name();
    conv_result r = conv_run(s, 1000 + 10 * (uint64_t)c);
    float *ref = ref_conv_forward(s, r.x->data, r.w->data, r.b ? r.b->data : NULL);
    double err = fm_test_max_rel_diff(r.y, ref, r.ny);
    ck_assert_msg(err < 1e-4, "%s shape %d: y error %g", set, c, err);

    size_t nx = (size_t)r.x->numel, nw = (size_t)r.w->numel;
    float *rdx = malloc(nx * sizeof *rdx), *rdw = malloc(nw * sizeof *rdw),
          *rdb = malloc((size_t)s->o * sizeof *rdb);
    ref_conv_backward(s, rdx, rdw, rdb, r.dy, r.x->data, r.w->data);
    for (size_t i = 0; i < nx; i++) rdx[i] += 0.25f;
    for (size_t i = 0; i < nw; i++) rdw[i] += 0.5f;
    for (int i = 0; i < s->o; i++) rdb[i] -= 0.5f;
    err = fm_test_max_rel_diff(r.x->grad, rdx, nx);
    ck_assert_msg(err < 1e-4, "%s shape %d: dx error %g", set, c, err);
    err = fm_test_max_rel_diff(r.w->grad, rdw, nw);
    ck_assert_msg(err < 1e-4, "%s shape %d: dw error %g", set, c, err);
    if (r.b) {
        err = fm_test_max_rel_diff(r.b->grad, rdb, (size_t)s->o);
        ck_assert_msg(err < 1e-4, "%s shape %d: db error %g", set, c, err);
    }
    free(ref);
    free(rdx);
    free(rdw);
    free(rdb);
    conv_result_free(&r);
    fm_test_restore_kernels();
}
END_TEST

/* avx2 and avx512 run the same operations per element in the same order
 * (the im2col, direct and Winograd paths alike): the output and every
 * gradient come out bit-identical on both. */
START_TEST(test_conv2d_vector_sets_agree)
{
    fm_kernels pair[2];
    int c = fm_test_each_pair(_i, CONV_REF_NSHAPES, pair);
    const conv_shape *s = &conv_ref_shapes[c];
    conv_result r[2];
    for (int k = 0; k < 2; k++) {
        fm_test_use_kernels(pair[k]);
        r[k] = conv_run(s, 1000 + 10 * (uint64_t)c);
    }
    char what[96];
    const char *names[4] = {"y", "dx", "dw", "db"};
    const float *got[2][4];
    size_t len[4] = {r[0].ny, (size_t)r[0].x->numel, (size_t)r[0].w->numel,
                     s->bias ? (size_t)s->o : 0};
    for (int k = 0; k < 2; k++) {
        got[k][0] = r[k].y;
        got[k][1] = r[k].x->grad;
        got[k][2] = r[k].w->grad;
        got[k][3] = s->bias ? r[k].b->grad : NULL;
    }
    for (int t = 0; t < 4; t++) {
        snprintf(what, sizeof what, "%s vs %s, shape %d, %s", fm_kernels_name(pair[0]),
                 fm_kernels_name(pair[1]), c, names[t]);
        fm_test_assert_same_bits(got[0][t], got[1][t], len[t], what);
    }
    conv_result_free(&r[0]);
    conv_result_free(&r[1]);
    fm_test_restore_kernels();
}
END_TEST

/* Without grad on the input (the first layer), only dW and db are computed
 * and the input keeps no gradient. */
START_TEST(test_conv2d_weight_grad_only)
{
    fm_test_each_set(_i, 1);
    conv_shape s = {4, 1, 28, 28, 8, 3, 3, 1, 1, true};
    fm_tensor *x = leaf(4, (int[]){4, 1, 28, 28}, -1, 1, false);
    fm_tensor *w = leaf(4, (int[]){8, 1, 3, 3}, -1, 1, true);
    fm_tensor *b = leaf(1, (int[]){8}, -1, 1, true);
    fm_graph *g = fm_graph_new();
    fm_tensor *y = fm_conv2d(g, x, w, b, 1, 1);
    float *dy = malloc((size_t)y->numel * sizeof *dy);
    fm_test_fill(dy, (size_t)y->numel, -1, 1, next_seed++);
    node_backward(g, y, dy);
    float rdw[72], rdb[8];
    ref_conv_backward(&s, NULL, rdw, rdb, dy, x->data, w->data);
    ck_assert_double_lt(fm_test_max_rel_diff(w->grad, rdw, 72), 1e-4);
    ck_assert_double_lt(fm_test_max_rel_diff(b->grad, rdb, 8), 1e-4);
    ck_assert_ptr_null(x->grad);
    free(dy);
    fm_graph_free(g);
    fm_tensor_free(x);
    fm_tensor_free(w);
    fm_tensor_free(b);
    fm_test_restore_kernels();
}
END_TEST

/* One forward + backward of conv and linear under `threads`; returns every
 * output and gradient concatenated. */
static float *det_run(int threads, size_t *len)
{
    fm_set_threads(threads);
    next_seed = 5000;
    fm_tensor *x = leaf(4, (int[]){48, 8, 14, 14}, -1, 1, true);
    fm_tensor *w = leaf(4, (int[]){16, 8, 3, 3}, -1, 1, true);
    fm_tensor *b = leaf(1, (int[]){16}, -1, 1, true);
    fm_tensor *lw = leaf(2, (int[]){100, 16 * 7 * 7}, -0.1f, 0.1f, true);
    fm_tensor *lb = leaf(1, (int[]){100}, -0.1f, 0.1f, true);
    fm_graph *g = fm_graph_new();
    int32_t labels[48];
    for (int i = 0; i < 48; i++) labels[i] = (i * 7) % 100;
    fm_tensor *y = fm_conv2d(g, x, w, b, 1, 1);
    fm_tensor *z = fm_linear(g, fm_flatten(g, fm_maxpool2d(g, fm_relu(g, y), 2)), lw, lb);
    fm_tensor *loss = fm_cross_entropy(g, z, labels);
    fm_backward(g, loss);

    fm_tensor *parts[] = {x, w, b, lw, lb};
    *len = (size_t)(y->numel + z->numel);
    for (int i = 0; i < 5; i++) *len += (size_t)parts[i]->numel;
    float *all = malloc(*len * sizeof *all), *p = all;
    memcpy(p, y->data, (size_t)y->numel * sizeof *p);
    p += y->numel;
    memcpy(p, z->data, (size_t)z->numel * sizeof *p);
    p += z->numel;
    for (int i = 0; i < 5; i++) {
        memcpy(p, parts[i]->grad, (size_t)parts[i]->numel * sizeof *p);
        p += parts[i]->numel;
        fm_tensor_free(parts[i]);
    }
    fm_graph_free(g);
    return all;
}

START_TEST(test_conv2d_thread_determinism)
{
    fm_test_each_set(_i, 1);
    size_t n1, n2;
    float *one = det_run(1, &n1);
    float *two = det_run(2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_int_eq(memcmp(one, two, n1 * sizeof *one), 0);
    /* The second run really had two threads (48 images are 4 conv chunks;
     * the linear layer's GEMMs are 4 and 7 blocks). */
    ck_assert_int_eq(fm_get_threads(), 2);
    free(one);
    free(two);
    fm_test_restore_kernels();
}
END_TEST

/* Workspaces are handed back when an op returns: what a conv leaves in the
 * arena is its output, whatever its scratch needed -- and, when a backward
 * will run, the padded input it keeps for the weight gradient (less than
 * twice the input).  Without a backward (evaluation) the forward pads into
 * its workspace instead, and gives the same values. */
START_TEST(test_conv2d_workspace_released)
{
    fm_test_each_set(_i, 1);
    const conv_shape s = {8, 16, 14, 14, 16, 3, 3, 1, 1, false};
    fm_tensor *xc = leaf(4, (int[]){8, 16, 14, 14}, -1, 1, false);
    fm_tensor *wc = leaf(4, (int[]){16, 16, 3, 3}, -1, 1, false);
    fm_graph *gc = fm_graph_new();
    size_t used = fm_arena_used(fm_graph_arena(gc));
    fm_tensor *yc = fm_conv2d(gc, xc, wc, NULL, 1, 1);
    /* (the output has the input's shape) */
    size_t out_bytes = (size_t)yc->numel * sizeof(float), in_bytes = out_bytes;
    used = fm_arena_used(fm_graph_arena(gc)) - used;
    ck_assert_uint_ge(used, out_bytes);
    ck_assert_uint_lt(used, out_bytes + 4096);  /* + node and tensor headers */
    float *ref = ref_conv_forward(&s, xc->data, wc->data, NULL);
    ck_assert_double_lt(fm_test_max_rel_diff(yc->data, ref, (size_t)yc->numel), 1e-4);
    free(ref);
    fm_graph_free(gc);
    fm_tensor_free(xc);
    fm_tensor_free(wc);

    fm_tensor *x = leaf(4, (int[]){8, 16, 14, 14}, -1, 1, true);
    fm_tensor *w = leaf(4, (int[]){16, 16, 3, 3}, -1, 1, true);
    fm_graph *g = fm_graph_new();
    fm_arena *a = fm_graph_arena(g);
    size_t before = fm_arena_used(a);
    fm_tensor *y = fm_conv2d(g, x, w, NULL, 1, 1);
    size_t after = fm_arena_used(a);
    ck_assert_uint_gt(after - before, out_bytes + in_bytes);
    ck_assert_uint_lt(after - before, out_bytes + 2 * in_bytes + 4096);
    ck_assert_uint_gt(fm_arena_peak(a), after);         /* the workspace was there */
    float *r = malloc((size_t)y->numel * sizeof *r);
    fm_test_fill(r, (size_t)y->numel, -1, 1, next_seed++);
    node_backward(g, y, r);
    ck_assert_uint_eq(fm_arena_used(a), after);
    fm_graph_free(g);
    free(r);
    fm_tensor_free(x);
    fm_tensor_free(w);
    fm_test_restore_kernels();
}
END_TEST

/* Marks nest, and a release spans blocks added after its mark. */
START_TEST(test_arena_mark_release)
{
    fm_arena *a = fm_arena_new(1 << 20);
    void *keep = fm_arena_alloc(a, 1000);
    fm_arena_mark outer = fm_arena_mark_get(a);
    void *p = fm_arena_alloc(a, 5000);
    fm_arena_mark inner = fm_arena_mark_get(a);
    fm_arena_alloc(a, 3u << 20);  /* a new block */
    fm_arena_release(a, inner);
    ck_assert_uint_eq(fm_arena_used(a), 1024 + 5056);
    fm_arena_release(a, outer);
    ck_assert_uint_eq(fm_arena_used(a), 1024);
    ck_assert_ptr_ne(fm_arena_alloc(a, 64), keep);
    ck_assert_uint_ge(fm_arena_peak(a), (3u << 20) + 1024 + 5056);
    (void)p;
    fm_arena_free(a);
}
END_TEST

START_TEST(test_conv2d_wrong_channels_aborts)
{
    fm_tensor *x = leaf(4, (int[]){2, 3, 8, 8}, -1, 1, false);
    fm_tensor *w = leaf(4, (int[]){4, 2, 3, 3}, -1, 1, false);
    fm_graph *g = fm_graph_new();
    fm_conv2d(g, x, w, NULL, 1, 1);
}
END_TEST

START_TEST(test_linear_wrong_width_aborts)
{
    fm_tensor *x = leaf(2, (int[]){2, 5}, -1, 1, false);
    fm_tensor *w = leaf(2, (int[]){4, 6}, -1, 1, false);
    fm_graph *g = fm_graph_new();
    fm_linear(g, x, w, NULL);
}
END_TEST

/* ---- pooling ------------------------------------------------------------------ */

/* Distinct values 0.05 apart in random order: a step of 0.01 never changes
 * which element of a window is the maximum. */
static fm_tensor *distinct_leaf(int ndim, const int *shape)
{
    fm_tensor *t = leaf(ndim, shape, 0, 1, true);
    uint32_t *perm = malloc((size_t)t->numel * sizeof *perm);
    for (int64_t i = 0; i < t->numel; i++) perm[i] = (uint32_t)i;
    fm_rng rng;
    fm_rng_seed(&rng, next_seed++, FM_RNG_TEST);
    fm_rng_shuffle(&rng, perm, (size_t)t->numel);
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = 0.05f * ((float)perm[i] - (float)t->numel / 2);
    free(perm);
    return t;
}

START_TEST(test_maxpool2d_gradcheck)
{
    fm_test_each_set(_i, 1);
    static const int shapes[][5] = {
        {2, 3, 7, 5, 2}, {2, 3, 7, 5, 3}, {3, 2, 4, 6, 2}, {1, 2, 5, 5, 1},
    };
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const int *s = shapes[k];
        op_case c = {.build = build_maxpool, .iarg = {s[4]}};
        c.in[0] = distinct_leaf(4, s);
        c.diff[0] = true;
        fm_graph *g = fm_graph_new();
        fm_tensor *y = fm_maxpool2d(g, c.in[0], s[4]);
        ck_assert_int_eq(y->shape[2], s[2] / s[4]);
        ck_assert_int_eq(y->shape[3], s[3] / s[4]);
        fm_graph_free(g);
        ck_assert_double_gt(grad_check(&c, 1e-3, 1e-3), 0.1);
        case_free(&c);
    }
    fm_test_restore_kernels();
}
END_TEST

START_TEST(test_maxpool2d_values_and_ties)
{
    fm_test_each_set(_i, 1);
    /* One 4x4 plane, k = 2; the bottom-right window is all ties. */
    fm_tensor *x = fm_tensor_new(FM_F32, 4, (int[]){1, 1, 4, 4});
    const float v[16] = {1, 5, 2, 0, 3, 4, 8, -1, 0, 0, 7, 7, -2, -3, 7, 7};
    memcpy(x->data, v, sizeof v);
    x->requires_grad = true;
    x->grad = calloc(16, sizeof(float));
    fm_graph *g = fm_graph_new();
    fm_tensor *y = fm_maxpool2d(g, x, 2);
    const float expect[4] = {5, 8, 0, 7};
    for (int i = 0; i < 4; i++) ck_assert_float_eq(y->data[i], expect[i]);
    float dy[4] = {1, 2, 3, 4};
    node_backward(g, y, dy);
    /* The 0-tie window (0, 0, -2, -3) and the 7-tie window each send their
     * gradient to the first maximum in row-major order. */
    const float dexp[16] = {0, 1, 0, 0, 0, 0, 2, 0, 3, 0, 4, 0, 0, 0, 0, 0};
    for (int i = 0; i < 16; i++) ck_assert_float_eq(x->grad[i], dexp[i]);
    fm_graph_free(g);
    fm_tensor_free(x);
    fm_test_restore_kernels();
}
END_TEST

/* Each vector set's 2x2 path against the portable loop: same outputs and
 * the same gradient routing, on odd widths, rows longer than one vector,
 * ties (values on a coarse grid) and NaNs. */
static void maxpool_run(fm_tensor *x, fm_kernels set, float *y_out, float *dx_out)
{
    fm_test_use_kernels(set);
    memset(x->grad, 0, (size_t)x->numel * sizeof(float));
    fm_graph *g = fm_graph_new();
    fm_tensor *y = fm_maxpool2d(g, x, 2);
    float *dy = malloc((size_t)y->numel * sizeof(float));
    for (int64_t i = 0; i < y->numel; i++) dy[i] = (float)(i % 13) + 1.0f;
    node_backward(g, y, dy);
    memcpy(y_out, y->data, (size_t)y->numel * sizeof(float));
    memcpy(dx_out, x->grad, (size_t)x->numel * sizeof(float));
    free(dy);
    fm_graph_free(g);
}

#define MAXPOOL_NSHAPES 6
START_TEST(test_maxpool2d_simd_matches_portable)
{
    static const int shapes[MAXPOOL_NSHAPES][4] = {
        {2, 3, 28, 28}, {1, 2, 7, 7}, {2, 2, 9, 35}, {1, 1, 4, 66}, {3, 2, 14, 14}, {1, 1, 2, 2},
    };
    int c = fm_test_each_vector_set(_i, MAXPOOL_NSHAPES);
    fm_kernels set = fm_kernels_active();
    const int *s = shapes[c];
    fm_tensor *x = fm_tensor_new(FM_F32, 4, s);
    fm_test_fill(x->data, (size_t)x->numel, -2.0f, 2.0f, 77 + (uint64_t)c);
    for (int64_t i = 0; i < x->numel; i++) {
        x->data[i] = roundf(x->data[i] * 2.0f) / 2.0f;  /* many ties */
        if (i % 37 == 5) x->data[i] = NAN;
    }
    x->requires_grad = true;
    x->grad = calloc((size_t)x->numel, sizeof(float));
    size_t ny = (size_t)s[0] * s[1] * (s[2] / 2) * (s[3] / 2);
    float *y1 = malloc(ny * sizeof(float)), *y2 = malloc(ny * sizeof(float));
    float *d1 = malloc((size_t)x->numel * sizeof(float));
    float *d2 = malloc((size_t)x->numel * sizeof(float));
    maxpool_run(x, FM_KERNELS_PORTABLE, y1, d1);
    maxpool_run(x, set, y2, d2);
    char what[64];
    snprintf(what, sizeof what, "%s vs portable, shape %d, y", fm_kernels_name(set), c);
    fm_test_assert_same_bits(y2, y1, ny, what);
    snprintf(what, sizeof what, "%s vs portable, shape %d, dx", fm_kernels_name(set), c);
    fm_test_assert_same_bits(d2, d1, (size_t)x->numel, what);
    free(y1);
    free(y2);
    free(d1);
    free(d2);
    fm_tensor_free(x);
    fm_test_restore_kernels();
}
END_TEST

/* fm_maxpool2d_relu against fm_relu(fm_maxpool2d), on every set: the
 * pooled maps, then (through a linear layer and the cross-entropy) the
 * gradients of x and of the weights, bit for bit; x on a coarse grid, so
 * that ties, exact zeros and negative maxima occur.  The 2x2 shapes run
 * the row kernels, the 3x3 one the general loop.  With NaNs in x (forward
 * only) both give relu's 0 where a NaN wins. */
#define POOL_RELU_NSHAPES 4
START_TEST(test_maxpool2d_relu_matches_ops)
{
    static const int shapes[POOL_RELU_NSHAPES][5] = {
        {4, 3, 28, 28, 2}, {3, 2, 9, 35, 2}, {2, 3, 7, 7, 3}, {5, 4, 14, 14, 2},
    };
    const int *s = shapes[fm_test_each_set(_i, POOL_RELU_NSHAPES)];
    const int n = s[0], k = s[4], feat = s[1] * (s[2] / k) * (s[3] / k);
    fm_tensor *x = leaf(4, s, -2, 2, true);
    for (int64_t i = 0; i < x->numel; i++) {
        x->data[i] = roundf(x->data[i] * 2.0f) / 2.0f - 0.5f;
        if (i % 29 == 3) x->data[i] = -0.0f;
    }
    fm_tensor *lw = leaf(2, (int[]){10, feat}, -0.1f, 0.1f, true), *lb = leaf(1, (int[]){10}, -1, 1, true);
    int32_t labels[8];
    for (int i = 0; i < n; i++) labels[i] = (i * 3) % 10;
    const size_t ny = (size_t)n * feat;
    float *y[2], *dx[2], *dw[2];
    int zeros = 0;
    for (int fused = 0; fused < 2; fused++) {
        zero_grad(x);
        zero_grad(lw);
        zero_grad(lb);
        fm_graph *g = fm_graph_new();
        fm_tensor *p = fused ? fm_maxpool2d_relu(g, x, k) : fm_relu(g, fm_maxpool2d(g, x, k));
        fm_backward(g, fm_cross_entropy(g, fm_linear(g, fm_flatten(g, p), lw, lb), labels));
        y[fused] = malloc(ny * sizeof(float));
        dx[fused] = malloc((size_t)x->numel * sizeof(float));
        dw[fused] = malloc((size_t)lw->numel * sizeof(float));
        memcpy(y[fused], p->data, ny * sizeof(float));
        memcpy(dx[fused], x->grad, (size_t)x->numel * sizeof(float));
        memcpy(dw[fused], lw->grad, (size_t)lw->numel * sizeof(float));
        fm_graph_free(g);
    }
    for (size_t i = 0; i < ny; i++) zeros += y[1][i] == 0.0f;
    ck_assert_msg(zeros > 0 && zeros < (int)ny, "%d of %zu pooled values are 0", zeros, ny);
    char what[96];
    snprintf(what, sizeof what, "%s, %dx%d pool of %dx%d, y", fm_test_kernels_name(), k, k, s[2], s[3]);
    fm_test_assert_same_bits(y[1], y[0], ny, what);
    snprintf(what, sizeof what, "%s, %dx%d pool of %dx%d, dx", fm_test_kernels_name(), k, k, s[2], s[3]);
    fm_test_assert_same_bits(dx[1], dx[0], (size_t)x->numel, what);
    snprintf(what, sizeof what, "%s, %dx%d pool of %dx%d, dW", fm_test_kernels_name(), k, k, s[2], s[3]);
    fm_test_assert_same_bits(dw[1], dw[0], (size_t)lw->numel, what);

    for (int64_t i = 0; i < x->numel; i += 7) x->data[i] = NAN;
    fm_graph *g = fm_graph_new();
    fm_graph_set_grad(g, false);
    fm_tensor *a = fm_maxpool2d_relu(g, x, k), *b = fm_relu(g, fm_maxpool2d(g, x, k));
    snprintf(what, sizeof what, "%s, %dx%d pool of %dx%d with NaNs, y", fm_test_kernels_name(), k, k, s[2], s[3]);
    fm_test_assert_same_bits(a->data, b->data, ny, what);
    fm_graph_free(g);
    for (int f = 0; f < 2; f++) {
        free(y[f]);
        free(dx[f]);
        free(dw[f]);
    }
    fm_tensor_free(x);
    fm_tensor_free(lw);
    fm_tensor_free(lb);
    fm_test_restore_kernels();
}
END_TEST

START_TEST(test_global_avgpool_gradcheck)
{
    fm_test_each_set(_i, 1);
    op_case c = {.build = build_avgpool};
    c.in[0] = leaf(4, (int[]){2, 3, 5, 3}, -1, 1, true);
    c.diff[0] = true;
    ck_assert_double_gt(grad_check(&c, 1e-3, 1e-2), 0.01);
    fm_graph *g = fm_graph_new();
    fm_tensor *y = fm_global_avgpool(g, c.in[0]);
    ck_assert_int_eq(y->ndim, 2);
    double s = 0.0;
    for (int i = 0; i < 15; i++) s += c.in[0]->data[15 + i];  /* image 0, channel 1 */
    ck_assert_double_eq_tol(y->data[1], s / 15.0, 1e-6);
    fm_graph_free(g);
    case_free(&c);
    fm_test_restore_kernels();
}
END_TEST

/* ---- batch norm -------------------------------------------------------------- */

static void bn_case(int ndim, const int *shape, bool eval, bool affine)
{
    int ch = shape[1];
    op_case c = {.build = build_bn, .eval = eval, .farg = {0.1f, 1e-5f}, .h = 5e-3f};
    c.in[0] = leaf(ndim, shape, -1, 1.5f, true);
    c.in[1] = affine ? leaf(1, &ch, 0.5f, 1.5f, true) : NULL;
    c.in[2] = affine ? leaf(1, &ch, -0.5f, 0.5f, true) : NULL;
    c.in[3] = leaf(1, &ch, -0.2f, 0.2f, false);
    c.in[4] = leaf(1, &ch, 0.5f, 1.5f, false);
    c.in[5] = fm_tensor_new(FM_I64, 1, (int[]){1});
    c.diff[0] = true;
    c.diff[1] = c.diff[2] = affine;
    ck_assert_double_gt(grad_check(&c, 3e-3, 1e-2), 0.1);
    case_free(&c);
}

START_TEST(test_batchnorm_gradcheck_train_4d)
{
    fm_test_each_set(_i, 1);
    bn_case(4, (int[]){3, 4, 3, 5}, false, true);
    bn_case(4, (int[]){2, 2, 2, 3}, false, false);
    fm_test_restore_kernels();
}
END_TEST

START_TEST(test_batchnorm_gradcheck_eval_4d)
{
    fm_test_each_set(_i, 1);
    bn_case(4, (int[]){3, 4, 3, 5}, true, true);
    fm_test_restore_kernels();
}
END_TEST

START_TEST(test_batchnorm_gradcheck_train_2d)
{
    fm_test_each_set(_i, 1);
    bn_case(2, (int[]){6, 4}, false, true);
    fm_test_restore_kernels();
}
END_TEST

START_TEST(test_batchnorm_gradcheck_eval_2d)
{
    fm_test_each_set(_i, 1);
    bn_case(2, (int[]){6, 4}, true, true);
    fm_test_restore_kernels();
}
END_TEST

/* Two training steps on a [4, 2] batch (BatchNorm1d), values worked by hand:
 *   step 1: channel 0 = {1, 2, 3, 4}: mean 2.5, unbiased var 5/3;
 *           channel 1 = {0, 0, 0, 4}: mean 1,   unbiased var 12/3 = 4.
 *   step 2: channel 0 = {2, 2, 2, 2}: mean 2,   var 0;
 *           channel 1 = {-1, 1, -1, 1}: mean 0, unbiased var 4/3.
 * From running_mean 0, running_var 1, momentum 0.1:
 *   mean0: 0.25 -> 0.9*0.25 + 0.2 = 0.425;  var0: 0.9 + 1/6 -> 0.9*(16/15) = 0.96
 *   mean1: 0.1  -> 0.09;                    var1: 1.3 -> 1.17 + 0.4/3 = 1.30333... */
START_TEST(test_batchnorm_running_stats)
{
    fm_test_each_set(_i, 1);
    fm_tensor *x = fm_tensor_new(FM_F32, 2, (int[]){4, 2});
    fm_tensor *w = fm_tensor_new(FM_F32, 1, (int[]){2});
    fm_tensor *b = fm_tensor_new(FM_F32, 1, (int[]){2});
    fm_tensor *rm = fm_tensor_new(FM_F32, 1, (int[]){2});
    fm_tensor *rv = fm_tensor_new(FM_F32, 1, (int[]){2});
    fm_tensor *nbt = fm_tensor_new(FM_I64, 1, (int[]){1});
    w->data[0] = w->data[1] = 1.0f;
    rv->data[0] = rv->data[1] = 1.0f;
    const float step1[8] = {1, 0, 2, 0, 3, 0, 4, 4}, step2[8] = {2, -1, 2, 1, 2, -1, 2, 1};
    fm_graph *g = fm_graph_new();
    memcpy(x->data, step1, sizeof step1);
    fm_tensor *y = fm_batchnorm(g, x, w, b, rm, rv, nbt, 0.1f, 1e-5f);
    /* Normalised with the biased variance: (1 - 2.5) / sqrt(1.25 + eps). */
    ck_assert_double_eq_tol(y->data[0], -1.5 / sqrt(1.25 + 1e-5), 1e-5);
    ck_assert_double_eq_tol(rm->data[0], 0.25, 1e-6);
    ck_assert_double_eq_tol(rv->data[1], 1.3, 1e-6);
    fm_graph_reset(g);
    memcpy(x->data, step2, sizeof step2);
    fm_batchnorm(g, x, w, b, rm, rv, nbt, 0.1f, 1e-5f);
    ck_assert_double_eq_tol(rm->data[0], 0.425, 1e-6);
    ck_assert_double_eq_tol(rm->data[1], 0.09, 1e-6);
    ck_assert_double_eq_tol(rv->data[0], 0.96, 1e-6);
    ck_assert_double_eq_tol(rv->data[1], 1.17 + 0.4 / 3.0, 1e-6);
    ck_assert_int_eq(nbt->i64[0], 2);

    /* Eval neither uses nor changes the batch statistics. */
    fm_graph_reset(g);
    fm_graph_set_training(g, false);
    y = fm_batchnorm(g, x, w, b, rm, rv, nbt, 0.1f, 1e-5f);
    ck_assert_double_eq_tol(y->data[0], (2 - 0.425) / sqrt(0.96 + 1e-5), 1e-5);
    ck_assert_double_eq_tol(rm->data[0], 0.425, 1e-6);
    ck_assert_int_eq(nbt->i64[0], 2);
    fm_graph_free(g);
    fm_tensor *all[] = {x, w, b, rm, rv, nbt};
    for (int i = 0; i < 6; i++) fm_tensor_free(all[i]);
    fm_test_restore_kernels();
}
END_TEST

/* ---- batchnorm_relu (fused) ---------------------------------------------------- */

/* One forward (and in training one backward, through a fixed linear layer
 * and cross entropy) of relu(bn(x) + r), r optional, under `threads`: fused
 * as one op, or as fm_batchnorm, fm_add and fm_relu.  Returns the output,
 * every gradient and the updated running statistics, concatenated. */
/* The inputs of a fused batch-norm case: x, weight, bias, running mean and
 * variance, batches tracked, residual. */
typedef struct bn_inputs {
    fm_tensor *x, *w, *b, *rm, *rv, *nbt, *r;
} bn_inputs;

static bn_inputs bn_inputs_new(int ndim, const int *shape, uint64_t seed)
{
    next_seed = seed;
    int ch = shape[1];
    return (bn_inputs){
        .x = leaf(ndim, shape, -1, 1.5f, true),
        .w = leaf(1, &ch, 0.5f, 1.5f, true),
        .b = leaf(1, &ch, -0.5f, 0.5f, true),
        .rm = leaf(1, &ch, -0.2f, 0.2f, false),
        .rv = leaf(1, &ch, 0.5f, 1.5f, false),
        .nbt = fm_tensor_new(FM_I64, 1, (int[]){1}),
        .r = leaf(ndim, shape, -1, 1, true),
    };
}

static void bn_inputs_free(bn_inputs *in)
{
    fm_tensor *all[] = {in->x, in->w, in->b, in->rm, in->rv, in->nbt, in->r};
    for (int i = 0; i < 7; i++) fm_tensor_free(all[i]);
}

static float *bn_relu_run(bool fused, bool residual, bool training, int ndim, const int *shape,
                          int threads, size_t *len)
{
    fm_set_threads(threads);
    bn_inputs in = bn_inputs_new(ndim, shape, 7000);
    fm_tensor *x = in.x, *w = in.w, *b = in.b, *rm = in.rm, *rv = in.rv, *nbt = in.nbt, *r = in.r;
    int n = shape[0], feat = (int)(x->numel / n);
    fm_tensor *lw = leaf(2, (int[]){10, feat}, -0.3f, 0.3f, false);
    int32_t labels[64];
    for (int i = 0; i < n; i++) labels[i] = (i * 3) % 10;
    fm_graph *g = fm_graph_new();
    fm_graph_set_training(g, training);
    fm_graph_set_grad(g, training);
    fm_tensor *res = residual ? r : NULL, *y;
    if (fused) {
        y = fm_batchnorm_relu(g, x, w, b, rm, rv, nbt, 0.1f, 1e-5f, res);
    } else {
        y = fm_batchnorm(g, x, w, b, rm, rv, nbt, 0.1f, 1e-5f);
        if (res) y = fm_add(g, y, res);
        y = fm_relu(g, y);
    }
    if (training)
        fm_backward(g, fm_cross_entropy(g, fm_linear(g, fm_flatten(g, y), lw, NULL), labels));

    fm_tensor *grads[] = {x, w, b, r}, *stats[] = {rm, rv};
    *len = (size_t)y->numel + 3;
    for (int i = 0; i < 4; i++) *len += (size_t)grads[i]->numel;
    for (int i = 0; i < 2; i++) *len += (size_t)stats[i]->numel;
    float *all = malloc(*len * sizeof *all), *p = all;
    memcpy(p, y->data, (size_t)y->numel * sizeof *p);
    p += y->numel;
    for (int i = 0; i < 4; i++, p += grads[i - 1]->numel)
        memcpy(p, grads[i]->grad, (size_t)grads[i]->numel * sizeof *p);
    for (int i = 0; i < 2; i++, p += stats[i - 1]->numel)
        memcpy(p, stats[i]->data, (size_t)stats[i]->numel * sizeof *p);
    /* Counts that must differ between the cases, so that the comparison
     * covers what it claims: batches tracked, zeros in y (relu active). */
    int64_t zeros = 0;
    for (int64_t i = 0; i < y->numel; i++) zeros += y->data[i] == 0.0f;
    p[0] = (float)nbt->i64[0];
    p[1] = (float)zeros;
    p[2] = (float)y->numel;
    fm_graph_free(g);
    bn_inputs_free(&in);
    fm_tensor_free(lw);
    return all;
}

static const struct {
    int ndim, shape[4];
} bn_relu_shapes[] = {
    {4, {3, 4, 5, 7}},      /* planes not a multiple of the 8 lanes */
    {2, {6, 5}},            /* BatchNorm1d */
    {4, {16, 64, 14, 14}},  /* several elementwise tasks */
};
#define BN_NSHAPES ((int)(sizeof bn_relu_shapes / sizeof bn_relu_shapes[0]))

/* The fused op against the three ops it replaces, bit for bit; the fused op
 * under two threads, the reference under one. */
START_TEST(test_batchnorm_relu_matches_separate_ops)
{
    int c = fm_test_each_set(_i, BN_NSHAPES);
    int ndim = bn_relu_shapes[c].ndim;
    const int *shape = bn_relu_shapes[c].shape;
    for (int mode = 0; mode < 4; mode++) {
        bool residual = mode & 1, training = mode & 2;
        size_t n_ref, n_fused;
        float *ref = bn_relu_run(false, residual, training, ndim, shape, 1, &n_ref);
        float *fused = bn_relu_run(true, residual, training, ndim, shape, 2, &n_fused);
        ck_assert_uint_eq(n_ref, n_fused);
        ck_assert_msg(memcmp(ref, fused, n_ref * sizeof *ref) == 0,
                      "%s residual %d training %d: fused and separate ops differ",
                      fm_test_kernels_name(), residual, training);
        float zeros = ref[n_ref - 2], numel = ref[n_ref - 1];
        ck_assert(zeros > 0.0f && zeros < numel);  /* the relu masks some, not all */
        ck_assert_float_eq(ref[n_ref - 3], training ? 1.0f : 0.0f);
        if (training) {
            /* The residual's gradient is there exactly when it is used. */
            const float *dr = ref + n_ref - 3 - 2 * shape[1] - (size_t)numel;
            bool any = false;
            for (size_t i = 0; i < (size_t)numel; i++) any |= dr[i] != 0.0f;
            ck_assert(any == residual);
        }
        free(ref);
        free(fused);
    }
    fm_test_restore_kernels();
}
END_TEST

/* One training forward and backward (output gradient seeded, no other op
 * involved) of bn(x) or relu(bn(x) + r), the gradients of x and r holding
 * grad0 before; returns the output, the gradients and the running
 * statistics, concatenated. */
static float *bn_simd_run(bool fused, bool residual, int ndim, const int *shape, float grad0,
                          size_t *len)
{
    bn_inputs in = bn_inputs_new(ndim, shape, 9000);
    fm_tensor *x = in.x, *w = in.w, *b = in.b, *rm = in.rm, *rv = in.rv, *nbt = in.nbt, *r = in.r;
    fm_graph *g = fm_graph_new();
    fm_graph_set_training(g, true);
    fm_graph_set_grad(g, true);
    fm_tensor *y = fused ? fm_batchnorm_relu(g, x, w, b, rm, rv, nbt, 0.1f, 1e-5f,
                                             residual ? r : NULL)
                         : fm_batchnorm(g, x, w, b, rm, rv, nbt, 0.1f, 1e-5f);
    float *dy = malloc((size_t)y->numel * sizeof *dy);
    fm_test_fill(dy, (size_t)y->numel, -1.0f, 1.0f, 9100);
    for (int64_t i = 0; i < x->numel; i++) x->grad[i] = r->grad[i] = grad0;
    node_backward(g, y, dy);
    fm_tensor *parts[] = {y, x, w, b, r, rm, rv};
    *len = 0;
    for (int i = 0; i < 7; i++) *len += (size_t)parts[i]->numel;
    float *all = malloc(*len * sizeof *all), *p = all;
    for (int i = 0; i < 7; i++) {
        const float *src = i >= 1 && i <= 4 ? parts[i]->grad : parts[i]->data;
        memcpy(p, src, (size_t)parts[i]->numel * sizeof *p);
        p += parts[i]->numel;
    }
    free(dy);
    fm_graph_free(g);
    bn_inputs_free(&in);
    return all;
}

/* Each vector set's statistics and gradient sums against the portable
 * loops, bit for bit (their lane sums are laid out to add in the same
 * order), for batch norm alone and fused with the residual and relu. */
START_TEST(test_batchnorm_simd_matches_portable)
{
    int c = fm_test_each_vector_set(_i, BN_NSHAPES);
    fm_kernels set = fm_kernels_active();
    int ndim = bn_relu_shapes[c].ndim;
    const int *shape = bn_relu_shapes[c].shape;
    for (int mode = 0; mode < 3; mode++) {
        bool fused = mode > 0, residual = mode == 2;
        size_t n_simd, n_port;
        fm_test_use_kernels(set);
        float *simd = bn_simd_run(fused, residual, ndim, shape, 0.0f, &n_simd);
        fm_test_use_kernels(FM_KERNELS_PORTABLE);
        float *port = bn_simd_run(fused, residual, ndim, shape, 0.0f, &n_port);
        ck_assert_uint_eq(n_simd, n_port);
        char what[80];
        snprintf(what, sizeof what, "%s vs portable, shape %d, fused %d residual %d",
                 fm_kernels_name(set), c, fused, residual);
        fm_test_assert_same_bits(simd, port, n_port, what);
        free(simd);
        free(port);
    }
    fm_test_restore_kernels();
}
END_TEST

/* Backward adds to the input gradients already there (only a fresh buffer,
 * which the engine hands out, is stored into): x's and r's gradients come
 * out 0.25 above those computed on zeroed buffers. */
START_TEST(test_batchnorm_backward_adds)
{
    int c = fm_test_each_set(_i, BN_NSHAPES);
    int ndim = bn_relu_shapes[c].ndim;
    const int *shape = bn_relu_shapes[c].shape;
    for (int mode = 0; mode < 3; mode++) {
        bool fused = mode > 0, residual = mode == 2;
        size_t n0, n1;
        float *zero = bn_simd_run(fused, residual, ndim, shape, 0.0f, &n0);
        float *added = bn_simd_run(fused, residual, ndim, shape, 0.25f, &n1);
        ck_assert_uint_eq(n0, n1);
        size_t numel = 1;
        for (int d = 0; d < ndim; d++) numel *= (size_t)shape[d];
        /* Output, then x's gradient, w's and b's, then r's. */
        const size_t ch = (size_t)shape[1], dx = numel, dr = 2 * numel + 2 * ch;
        /* The worst deviation, asserted once (each passing ck_assert costs
         * Check a write, and there are 200,000 elements). */
        double worst = 0.0;
        for (size_t i = 0; i < numel; i++) {
            worst = fmax(worst, fabs((double)added[dx + i] - (zero[dx + i] + 0.25f)));
            worst = fmax(worst, fabs((double)added[dr + i] - (zero[dr + i] + 0.25f)));
        }
        ck_assert_msg(worst <= 1e-6, "%s fused %d residual %d: off by %g",
                      fm_test_kernels_name(), fused, residual, worst);
        free(zero);
        free(added);
    }
    fm_test_restore_kernels();
}
END_TEST

START_TEST(test_batchnorm_relu_gradcheck)
{
    fm_test_each_set(_i, 1);
    int shape[4] = {3, 4, 3, 5}, ch = 4;
    op_case c = {.build = build_bn_relu, .farg = {0.1f, 1e-5f}, .h = 5e-3f};
    c.in[0] = leaf(4, shape, -1, 1.5f, true);
    c.in[1] = leaf(1, &ch, 0.5f, 1.5f, true);
    c.in[2] = leaf(1, &ch, -0.5f, 0.5f, true);
    c.in[3] = leaf(1, &ch, -0.2f, 0.2f, false);
    c.in[4] = leaf(1, &ch, 0.5f, 1.5f, false);
    c.in[5] = fm_tensor_new(FM_I64, 1, (int[]){1});
    c.in[6] = leaf(4, shape, -1, 1, true);
    c.diff[0] = c.diff[1] = c.diff[2] = c.diff[6] = true;
    ck_assert_double_gt(grad_check(&c, 3e-3, 1e-2), 0.1);
    case_free(&c);
    fm_test_restore_kernels();
}
END_TEST

START_TEST(test_batchnorm_wrong_channels_aborts)
{
    fm_tensor *x = leaf(4, (int[]){2, 3, 4, 4}, -1, 1, false);
    fm_tensor *p = leaf(1, (int[]){4}, -1, 1, false);
    fm_graph *g = fm_graph_new();
    fm_batchnorm(g, x, p, p, p, p, NULL, 0.1f, 1e-5f);
}
END_TEST

/* ---- elementwise ------------------------------------------------------------- */

START_TEST(test_relu_gradcheck)
{
    fm_test_each_set(_i, 1);
    op_case c = {.build = build_relu};
    c.in[0] = leaf(4, (int[]){2, 3, 4, 5}, 0.1f, 1.0f, true);
    fm_rng rng;
    fm_rng_seed(&rng, 3, FM_RNG_TEST);
    /* Magnitudes in [0.1, 1) with random signs: away from the kink. */
    for (int64_t i = 0; i < c.in[0]->numel; i++)
        if (fm_rng_u32(&rng) & 1) c.in[0]->data[i] = -c.in[0]->data[i];
    c.diff[0] = true;
    ck_assert_double_gt(grad_check(&c, 1e-3, 1e-3), 0.1);
    case_free(&c);
    fm_test_restore_kernels();
}
END_TEST

START_TEST(test_dropout_gradcheck)
{
    fm_test_each_set(_i, 1);
    for (int mode = 0; mode < 3; mode++) {
        /* 0: training p = 0.3; 1: eval; 2: training p = 0. */
        op_case c = {.build = build_dropout, .eval = mode == 1, .farg = {mode == 2 ? 0.0f : 0.3f}};
        c.in[0] = leaf(2, (int[]){4, 37}, -1, 1, true);
        c.diff[0] = true;
        ck_assert_double_gt(grad_check(&c, 1e-3, 1e-3), 0.1);
        case_free(&c);
    }
    fm_test_restore_kernels();
}
END_TEST

START_TEST(test_dropout_mask)
{
    fm_test_each_set(_i, 1);
    int n = 20000;
    fm_tensor *x = leaf(1, &n, 1, 2, true);
    fm_graph *g = fm_graph_new();
    fm_rng_seed(fm_graph_rng(g), 9, FM_RNG_DROPOUT);
    fm_tensor *y = fm_dropout(g, x, 0.25f);
    int kept = 0, wrong = 0;  /* counted, then asserted once */
    for (int i = 0; i < n; i++) {
        if (y->data[i] != 0.0f) {
            kept++;
            wrong += !(fabsf(y->data[i] - x->data[i] / 0.75f) <= 1e-6f);
        }
    }
    ck_assert_int_eq(wrong, 0);
    ck_assert_int_gt(kept, (int)(0.73 * n));
    ck_assert_int_lt(kept, (int)(0.77 * n));
    /* Backward passes gradient exactly where forward kept the input. */
    float *dy = malloc((size_t)n * sizeof *dy);
    for (int i = 0; i < n; i++) dy[i] = 1.0f;
    node_backward(g, y, dy);
    for (int i = 0; i < n; i++)
        wrong += x->grad[i] != (y->data[i] != 0.0f ? 1.0f / 0.75f : 0.0f);
    ck_assert_int_eq(wrong, 0);
    /* The same seed gives the same mask. */
    fm_tensor *first = fm_graph_tensor(g, 1, &n);
    memcpy(first->data, y->data, (size_t)n * sizeof(float));
    fm_rng_seed(fm_graph_rng(g), 9, FM_RNG_DROPOUT);
    fm_tensor *again = fm_dropout(g, x, 0.25f);
    ck_assert_int_eq(memcmp(first->data, again->data, (size_t)n * sizeof(float)), 0);
    /* Eval: the identity. */
    fm_graph_set_training(g, false);
    fm_tensor *id = fm_dropout(g, x, 0.25f);
    ck_assert_int_eq(memcmp(id->data, x->data, (size_t)n * sizeof(float)), 0);
    free(dy);
    fm_graph_free(g);
    fm_tensor_free(x);
    fm_test_restore_kernels();
}
END_TEST

START_TEST(test_add_gradcheck)
{
    fm_test_each_set(_i, 1);
    op_case c = {.build = build_add};
    c.in[0] = leaf(4, (int[]){2, 3, 4, 5}, -1, 1, true);
    c.in[1] = leaf(4, (int[]){2, 3, 4, 5}, -1, 1, true);
    c.diff[0] = c.diff[1] = true;
    ck_assert_double_gt(grad_check(&c, 1e-3, 1e-3), 0.1);
    case_free(&c);

    /* The same tensor twice: both gradients accumulate into one buffer. */
    op_case twice = {.build = build_add};
    twice.in[0] = leaf(2, (int[]){3, 4}, -1, 1, true);
    twice.in[1] = twice.in[0];
    twice.diff[0] = true;
    ck_assert_double_gt(grad_check(&twice, 1e-3, 1e-3), 0.1);
    twice.in[1] = NULL;
    case_free(&twice);
    fm_test_restore_kernels();
}
END_TEST

START_TEST(test_add_shape_mismatch_aborts)
{
    fm_tensor *a = leaf(2, (int[]){2, 3}, -1, 1, false);
    fm_tensor *b = leaf(2, (int[]){3, 2}, -1, 1, false);
    fm_graph *g = fm_graph_new();
    fm_add(g, a, b);
}
END_TEST

START_TEST(test_flatten_gradcheck)
{
    fm_test_each_set(_i, 1);
    op_case c = {.build = build_flatten};
    c.in[0] = leaf(4, (int[]){3, 2, 4, 5}, -1, 1, true);
    c.diff[0] = true;
    ck_assert_double_gt(grad_check(&c, 1e-3, 1e-3), 0.1);
    fm_graph *g = fm_graph_new();
    fm_tensor *y = fm_flatten(g, c.in[0]);
    ck_assert_int_eq(y->ndim, 2);
    ck_assert_int_eq(y->shape[0], 3);
    ck_assert_int_eq(y->shape[1], 40);
    ck_assert_ptr_eq(y->data, c.in[0]->data);  /* a view */
    fm_graph_free(g);
    case_free(&c);
    fm_test_restore_kernels();
}
END_TEST

/* ---- cross-entropy ------------------------------------------------------------ */

START_TEST(test_cross_entropy_gradcheck)
{
    fm_test_each_set(_i, 1);
    static const int32_t labels[5] = {0, 3, 1, 1, 2};
    op_case c = {.build = build_ce, .labels = labels};
    c.in[0] = leaf(2, (int[]){5, 4}, -3, 3, true);
    c.diff[0] = true;
    ck_assert_double_gt(grad_check(&c, 1e-3, 1e-2), 0.05);
    case_free(&c);
    fm_test_restore_kernels();
}
END_TEST

/* Rows and labels worked by hand: loss_i = logsumexp(z_i) - z_i[label]
 *   (1, 2, 3) label 2:    log(1 + e^-1 + e^-2)         = 0.40760596
 *   (1, 0, -1) label 2:   2 + log(1 + e^-1 + e^-2)     = 2.40760596
 *   (0.5, -2, 4) label 0: 3.5 + log(1 + e^-3.5 + e^-6) = 3.53215362
 * mean 2.11578852.  The logits are shifted by +1000 in a second run: the
 * stable form must give the same value. */
START_TEST(test_cross_entropy_known_value)
{
    fm_test_each_set(_i, 1);
    const float z[9] = {1, 2, 3, 1, 0, -1, 0.5f, -2, 4};
    const int32_t labels[3] = {2, 2, 0};
    for (int shift = 0; shift <= 1000; shift += 1000) {
        fm_tensor *x = fm_tensor_new(FM_F32, 2, (int[]){3, 3});
        for (int i = 0; i < 9; i++) x->data[i] = z[i] + (float)shift;
        x->requires_grad = true;
        x->grad = calloc(9, sizeof(float));
        fm_graph *g = fm_graph_new();
        fm_tensor *loss = fm_cross_entropy(g, x, labels);
        ck_assert_int_eq(loss->numel, 1);
        ck_assert_double_eq_tol(loss->data[0], 2.11578852, 1e-5);
        fm_backward(g, loss);
        /* Row 0: softmax(1, 2, 3) - onehot(2), over N = 3. */
        double e = 1 + exp(1.0) + exp(2.0);
        ck_assert_double_eq_tol(x->grad[0], (1 / e) / 3, 1e-6);
        ck_assert_double_eq_tol(x->grad[2], (exp(2.0) / e - 1) / 3, 1e-6);
        fm_graph_free(g);
        fm_tensor_free(x);
    }
    fm_test_restore_kernels();
}
END_TEST

START_TEST(test_cross_entropy_smooth_gradcheck)
{
    fm_test_each_set(_i, 1);
    static const int32_t labels[5] = {0, 3, 1, 1, 2};
    const float eps[3] = {0.1f, 0.6f, 0.1f}, lam[3] = {0.0f, 0.0f, 0.3f};
    for (int k = 0; k < 3; k++) {
        op_case c = {.build = build_ce_smooth, .labels = labels, .farg = {eps[k], lam[k]}};
        c.in[0] = leaf(2, (int[]){5, 4}, -3, 3, true);
        c.diff[0] = true;
        ck_assert_double_gt(grad_check(&c, 1e-3, 1e-2), 0.02);
        case_free(&c);
    }
    fm_test_restore_kernels();
}
END_TEST

/* Reads `count` numbers after `tag` on the fixture's next line. */
static void read_values(FILE *f, const char *tag, double *v, int count)
{
    char word[32];
    ck_assert_msg(fscanf(f, "%31s", word) == 1 && !strcmp(word, tag), "label_smoothing.txt: "
                  "expected '%s', found '%s'", tag, word);
    for (int i = 0; i < count; i++) ck_assert_int_eq(fscanf(f, "%lf", &v[i]), 1);
}

/* Every case of tests/fixtures/label_smoothing.txt (tests/gen_label_smoothing.py):
 * nn.CrossEntropyLoss(label_smoothing=e)'s loss and gradient, computed by
 * PyTorch in float64 from the same float32 logits; the "mixcase" ones with
 * the class-probability targets of mixup and cutmix (fm_cross_entropy_mix). */
START_TEST(test_cross_entropy_smooth_matches_torch)
{
    const char *path = FM_SOURCE_DIR "/tests/fixtures/label_smoothing.txt";
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s (written by tests/gen_label_smoothing.py)", path);
    char line[256];
    ck_assert(fgets(line, sizeof line, f) != NULL);  /* the header */
    int cases = 0, smoothed = 0;
    char name[64], kind[16];
    int n, k, mixed = 0;
    double eps, lam = 1.0;
    while (fscanf(f, " %15s %63s %d %d %lf", kind, name, &n, &k, &eps) == 5) {
        bool mix = !strcmp(kind, "mixcase");
        ck_assert_msg(mix || !strcmp(kind, "case"), "label_smoothing.txt: '%s'", kind);
        if (mix) ck_assert_int_eq(fscanf(f, "%lf", &lam), 1);
        double *z = malloc((size_t)n * k * sizeof *z), *grad = malloc((size_t)n * k * sizeof *grad);
        double *lab = malloc((size_t)n * sizeof *lab), *lab_b = malloc((size_t)n * sizeof *lab_b);
        double loss_want;
        read_values(f, "logits", z, n * k);
        read_values(f, "labels", lab, n);
        if (mix) read_values(f, "labels_b", lab_b, n);
        read_values(f, "loss", &loss_want, 1);
        read_values(f, "grad", grad, n * k);
        fm_tensor *x = fm_tensor_new(FM_F32, 2, (int[]){n, k});
        int32_t *labels = malloc((size_t)n * sizeof *labels), *labels_b = malloc((size_t)n * sizeof *labels_b);
        for (int i = 0; i < n * k; i++) x->data[i] = (float)z[i];
        for (int i = 0; i < n; i++) labels[i] = (int32_t)lab[i], labels_b[i] = (int32_t)lab_b[i];
        x->requires_grad = true;
        x->grad = calloc((size_t)n * k, sizeof(float));
        fm_graph *g = fm_graph_new();
        fm_tensor *loss = mix ? fm_cross_entropy_mix(g, x, labels, labels_b, (float)lam, (float)eps)
                              : fm_cross_entropy_smooth(g, x, labels, (float)eps);
        ck_assert_msg(fabs(loss->data[0] - loss_want) <= 1e-6 * fmax(1.0, fabs(loss_want)),
                      "%s: loss %.9g, PyTorch %.9g", name, (double)loss->data[0], loss_want);
        fm_backward(g, loss);
        for (int i = 0; i < n * k; i++)
            ck_assert_msg(fabs(x->grad[i] - grad[i]) <= 1e-7 + 1e-5 * fabs(grad[i]),
                          "%s: grad[%d] %.9g, PyTorch %.9g", name, i, (double)x->grad[i], grad[i]);
        fm_graph_free(g);
        fm_tensor_free(x);
        free(labels);
        free(labels_b);
        free(z);
        free(grad);
        free(lab);
        free(lab_b);
        cases++;
        smoothed += eps > 0;
        mixed += mix;
    }
    fclose(f);
    ck_assert_int_ge(cases, 9);
    ck_assert_int_ge(mixed, 4);
    ck_assert_int_ge(smoothed, 4);
}
END_TEST

/* Smoothing 0 is the plain loss, bit for bit, value and gradient. */
START_TEST(test_cross_entropy_smooth_zero_is_plain)
{
    static const int32_t labels[6] = {0, 3, 1, 1, 2, 9};
    fm_tensor *a = leaf(2, (int[]){6, 10}, -4, 4, true), *b = leaf(2, (int[]){6, 10}, -4, 4, true);
    memcpy(b->data, a->data, 60 * sizeof(float));
    zero_grad(a);
    zero_grad(b);
    fm_graph *g = fm_graph_new();
    fm_tensor *la = fm_cross_entropy(g, a, labels);
    fm_backward(g, la);
    float va = la->data[0];
    fm_graph_reset(g);
    fm_tensor *lb = fm_cross_entropy_smooth(g, b, labels, 0.0f);
    fm_backward(g, lb);
    ck_assert(memcmp(&va, lb->data, sizeof va) == 0);
    ck_assert(memcmp(a->grad, b->grad, 60 * sizeof(float)) == 0);
    fm_graph_free(g);
    fm_tensor_free(a);
    fm_tensor_free(b);
}
END_TEST

START_TEST(test_cross_entropy_bad_label_aborts)
{
    fm_tensor *x = leaf(2, (int[]){2, 3}, -1, 1, false);
    const int32_t labels[2] = {0, 3};
    fm_graph *g = fm_graph_new();
    fm_cross_entropy(g, x, labels);
}
END_TEST

/* ---- through the engine ----------------------------------------------------- */

typedef struct net {
    fm_tensor *x, *w1, *b1, *bnw, *bnb, *rm, *rv, *w2, *fw, *fb, *vw;
    int32_t labels[4];
} net;

static fm_tensor *net_loss(fm_graph *g, const net *m)
{
    fm_graph_reset(g);
    fm_rng_seed(fm_graph_rng(g), 5, FM_RNG_DROPOUT);
    fm_tensor *h = fm_conv2d(g, m->x, m->w1, m->b1, 1, 1);                      // [4, 3, 6, 6]
    h = fm_relu(g, fm_batchnorm(g, h, m->bnw, m->bnb, m->rm, m->rv, NULL, 0.1f, 1e-5f));
    fm_tensor *p = fm_maxpool2d(g, h, 2);                                       // [4, 3, 3, 3]
    fm_tensor *s = fm_conv2d(g, p, m->w2, NULL, 1, 1);                          // [4, 3, 3, 3]
    fm_tensor *r = fm_add(g, s, p);
    fm_tensor *a = fm_dropout(g, fm_flatten(g, r), 0.2f);                       // [4, 27]
    fm_tensor *v = fm_linear(g, fm_global_avgpool(g, r), m->vw, NULL);          // [4, 3]
    return fm_cross_entropy(g, fm_add(g, fm_linear(g, a, m->fw, m->fb), v), m->labels);
}

START_TEST(test_engine_network_gradcheck)
{
    fm_test_each_set(_i, 1);
    net m = {.labels = {0, 2, 1, 2}};
    m.x = leaf(4, (int[]){4, 2, 6, 6}, -1, 1, false);
    m.w1 = leaf(4, (int[]){3, 2, 3, 3}, -0.5f, 0.5f, true);
    m.b1 = leaf(1, (int[]){3}, -0.5f, 0.5f, true);
    m.bnw = leaf(1, (int[]){3}, 0.5f, 1.5f, true);
    m.bnb = leaf(1, (int[]){3}, -0.5f, 0.5f, true);
    m.rm = leaf(1, (int[]){3}, 0, 0, false);
    m.rv = leaf(1, (int[]){3}, 1, 1, false);
    m.w2 = leaf(4, (int[]){3, 3, 3, 3}, -0.5f, 0.5f, true);
    m.fw = leaf(2, (int[]){3, 27}, -0.5f, 0.5f, true);
    m.fb = leaf(1, (int[]){3}, -0.5f, 0.5f, true);
    m.vw = leaf(2, (int[]){3, 3}, -1, 1, true);
    fm_graph *g = fm_graph_new();
    fm_backward(g, net_loss(g, &m));
    fm_tensor *params[] = {m.w1, m.b1, m.bnw, m.bnb, m.w2, m.fw, m.fb, m.vw};
    double biggest = 0.0;
    for (int k = 0; k < 8; k++) {
        fm_tensor *t = params[k];
        float *ana = malloc((size_t)t->numel * sizeof *ana);
        memcpy(ana, t->grad, (size_t)t->numel * sizeof *ana);
        for (int64_t e = 0; e < t->numel; e++) {
            float v = t->data[e], h = 1e-2f;
            t->data[e] = v + h;
            double lp = net_loss(g, &m)->data[0];
            t->data[e] = v - h;
            double lm = net_loss(g, &m)->data[0];
            t->data[e] = v;
            double num = (lp - lm) / ((double)(v + h) - (double)(v - h));
            ck_assert_msg(fabs(num - ana[e]) <= 2e-3 + 2e-2 * fabs(num),
                          "param %d element %lld: analytic %.6g numeric %.6g", k, (long long)e,
                          (double)ana[e], num);
            biggest = fmax(biggest, fabs(ana[e]));
        }
        free(ana);
    }
    ck_assert_double_gt(biggest, 0.05);
    fm_graph_free(g);
    fm_tensor *all[] = {m.x, m.w1, m.b1, m.bnw, m.bnb, m.rm, m.rv, m.w2, m.fw, m.fb, m.vw};
    for (int i = 0; i < 11; i++) fm_tensor_free(all[i]);
    fm_test_restore_kernels();
}
END_TEST

/* With grad off nothing is recorded and nothing is saved, but the values are
 * the same as with grad on. */
START_TEST(test_no_grad_same_values)
{
    fm_test_each_set(_i, 1);
    fm_tensor *x = leaf(4, (int[]){3, 2, 8, 8}, -1, 1, false);
    fm_tensor *w = leaf(4, (int[]){4, 2, 3, 3}, -1, 1, true);
    fm_graph *g = fm_graph_new();
    fm_tensor *a = fm_maxpool2d(g, fm_conv2d(g, x, w, NULL, 1, 1), 2);
    ck_assert(a->requires_grad);
    fm_graph_set_grad(g, false);
    fm_tensor *b = fm_maxpool2d(g, fm_conv2d(g, x, w, NULL, 1, 1), 2);
    ck_assert(!b->requires_grad);
    ck_assert_ptr_null(b->node);
    ck_assert_int_eq(memcmp(a->data, b->data, (size_t)a->numel * sizeof(float)), 0);
    fm_graph_free(g);
    fm_tensor_free(x);
    fm_tensor_free(w);
    fm_test_restore_kernels();
}
END_TEST

static Suite *ops_suite(void)
{
    /* The value and gradient tests run once per kernel set this processor
     * runs; the bitwise comparisons between sets once per vector set (or
     * pair of them); the shape assertions and the arena once. */
    int sets = fm_test_kernel_sets(NULL), vsets = fm_test_vector_sets(NULL);
    int pairs = fm_test_vector_pairs(NULL);
    Suite *s = suite_create("ops");
    TCase *tc;

    tc = tcase_create("op_table");
    tcase_add_test(tc, test_op_table_rows);
    suite_add_tcase(s, tc);

    tc = tcase_create("linear");
    tcase_add_loop_test(tc, test_linear_gradcheck, 0, sets);
    tcase_add_loop_test(tc, test_linear_vs_reference, 0, sets);
    tcase_add_test_raise_signal(tc, test_linear_wrong_width_aborts, SIGABRT);
    suite_add_tcase(s, tc);

    tc = tcase_create("conv2d");
    tcase_add_loop_test(tc, test_conv2d_gradcheck, 0, CONV_GRAD_NSHAPES * sets);
    tcase_add_loop_test(tc, test_conv2d_vs_reference, 0, CONV_REF_NSHAPES * sets);
    tcase_add_loop_test(tc, test_conv2d_vector_sets_agree, 0, CONV_REF_NSHAPES * pairs);
    tcase_add_loop_test(tc, test_conv2d_weight_grad_only, 0, sets);
    tcase_add_loop_test(tc, test_conv2d_thread_determinism, 0, sets);
    tcase_add_loop_test(tc, test_conv2d_workspace_released, 0, sets);
    tcase_add_test(tc, test_arena_mark_release);
    tcase_add_test_raise_signal(tc, test_conv2d_wrong_channels_aborts, SIGABRT);
    suite_add_tcase(s, tc);

    tc = tcase_create("maxpool2d");
    tcase_add_loop_test(tc, test_maxpool2d_gradcheck, 0, sets);
    tcase_add_loop_test(tc, test_maxpool2d_values_and_ties, 0, sets);
    tcase_add_loop_test(tc, test_maxpool2d_simd_matches_portable, 0, MAXPOOL_NSHAPES * vsets);
    tcase_add_loop_test(tc, test_maxpool2d_relu_matches_ops, 0, POOL_RELU_NSHAPES * sets);
    suite_add_tcase(s, tc);

    tc = tcase_create("global_avgpool");
    tcase_add_loop_test(tc, test_global_avgpool_gradcheck, 0, sets);
    suite_add_tcase(s, tc);

    tc = tcase_create("batchnorm");
    tcase_add_loop_test(tc, test_batchnorm_gradcheck_train_4d, 0, sets);
    tcase_add_loop_test(tc, test_batchnorm_gradcheck_eval_4d, 0, sets);
    tcase_add_loop_test(tc, test_batchnorm_gradcheck_train_2d, 0, sets);
    tcase_add_loop_test(tc, test_batchnorm_gradcheck_eval_2d, 0, sets);
    tcase_add_loop_test(tc, test_batchnorm_running_stats, 0, sets);
    tcase_add_test_raise_signal(tc, test_batchnorm_wrong_channels_aborts, SIGABRT);
    tcase_add_loop_test(tc, test_batchnorm_relu_matches_separate_ops, 0, BN_NSHAPES * sets);
    tcase_add_loop_test(tc, test_batchnorm_relu_gradcheck, 0, sets);
    tcase_add_loop_test(tc, test_batchnorm_backward_adds, 0, BN_NSHAPES * sets);
    tcase_add_loop_test(tc, test_batchnorm_simd_matches_portable, 0, BN_NSHAPES * vsets);
    suite_add_tcase(s, tc);

    tc = tcase_create("relu");
    tcase_add_loop_test(tc, test_relu_gradcheck, 0, sets);
    suite_add_tcase(s, tc);

    tc = tcase_create("dropout");
    tcase_add_loop_test(tc, test_dropout_gradcheck, 0, sets);
    tcase_add_loop_test(tc, test_dropout_mask, 0, sets);
    suite_add_tcase(s, tc);

    tc = tcase_create("add");
    tcase_add_loop_test(tc, test_add_gradcheck, 0, sets);
    tcase_add_test_raise_signal(tc, test_add_shape_mismatch_aborts, SIGABRT);
    suite_add_tcase(s, tc);

    tc = tcase_create("flatten");
    tcase_add_loop_test(tc, test_flatten_gradcheck, 0, sets);
    suite_add_tcase(s, tc);

    tc = tcase_create("cross_entropy");
    tcase_add_loop_test(tc, test_cross_entropy_gradcheck, 0, sets);
    tcase_add_loop_test(tc, test_cross_entropy_known_value, 0, sets);
    tcase_add_test_raise_signal(tc, test_cross_entropy_bad_label_aborts, SIGABRT);
    tcase_add_loop_test(tc, test_cross_entropy_smooth_gradcheck, 0, sets);
    tcase_add_test(tc, test_cross_entropy_smooth_matches_torch);
    tcase_add_test(tc, test_cross_entropy_smooth_zero_is_plain);
    suite_add_tcase(s, tc);

    tc = tcase_create("engine");
    tcase_add_loop_test(tc, test_engine_network_gradcheck, 0, sets);
    tcase_add_loop_test(tc, test_no_grad_same_values, 0, sets);
    suite_add_tcase(s, tc);

    return s;
}

int main(void) { return fm_test_run(ops_suite()); }
