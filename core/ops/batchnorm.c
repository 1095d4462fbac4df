/* Batch normalisation over N, H, W per channel, as PyTorch's BatchNorm2d (and
 * BatchNorm1d for [N, C] input).
 *
 * Each op runs in two phases: per-channel reductions (parallel tasks over
 * blocks of channels, each channel summed in a fixed order in double, so
 * statistics and gradients do not depend on the thread count) that end in a
 * few coefficients per channel, then an elementwise pass over the tensor in
 * memory order, which streams far better than walking one channel's N
 * strided runs at a time. */
#include "ops_util.h"

#include <math.h>

typedef struct bn_job {
    int n, c;
    int64_t s;            /* H*W, or 1 for [N, C] input */
    bool batch_stats;     /* normalise with the batch statistics (training) */
    bool update_running;  /* fold the batch statistics into the running ones */
    float momentum, eps;
    const float *x;       // [N, C, S]
    const float *weight;  // [C] or NULL (1)
    const float *bias;    // [C] or NULL (0)
    float *running_mean;  // [C] or NULL
    float *running_var;   // [C] or NULL
    float *y;             // [N, C, S]
    float *mean;          // [C] the mean used to normalise
    float *invstd;        // [C] 1/sqrt(var + eps) used to normalise
    float *coef;          // [4, C] per-channel coefficients of the elementwise pass
    const float *dy;      // [N, C, S]
    float *dx;            // [N, C, S] or NULL
    bool dx_store;        /* dx is fresh: store into it rather than add */
    float *dweight;       // [C] or NULL
    float *dbias;         // [C] or NULL
    /* The fused op relu(bn(x) + res): */
    bool relu;            /* y = max(., 0); backward masks dy where y == 0 */
    const float *res;     // [N, C, S] added before the relu, or NULL
    float *dres;          // [N, C, S] or NULL
    bool dres_store;      /* the same for dres */
    /* The relu's mask, y > 0, one bit per element: bit q % 16 of word q / 16
     * of plane (n, c)'s mask_words.  Written by a recorded forward (NULL
     * otherwise), read by the backward in place of y: 1/32 of its bytes. */
    uint16_t *mask;       // [N, C, mask_words]
    int64_t mask_words;
    int block;            /* channels per reduction task (bn_block) */
    fm_chunks ch;         /* the batch's chunks (fm_graph_chunks) */
    double *part;         // [chunks, C] or [chunks, 2, C]: per-chunk sums
    double *stat;         // [C] the mean, between the forward's two passes
    int pass;             /* bn_stats_task: 0 sums x, 1 squared deviations */
} bn_job;

static inline bool bn_mask_bit(const uint16_t *mask, int64_t q)
{
    return mask[q >> 4] >> (q & 15) & 1u;
}

/* Sums over a channel run through eight interleaved double accumulators
 * (lane q % 8 of each contiguous run of S elements) and are combined in a
 * fixed order: the latency of one accumulator would otherwise bound the
 * loop, and the order depends on the shape only. */
#define BN_LANES 8

static double bn_lanes_total(const double *lane)
{
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/* The lane loops: the vector sets' kernels (core/kernels/norm.c) take
 * whole groups of eight with exactly these loops' operations, the loops
 * below finish the rest, so the sums are the same bits on every set. */
static void bn_lanes_sum(double *lane, const float *a, int64_t n)
{
    fm_k_lane_sums_fn *vec = fm_kset_active()->lane_sums;
    int64_t q = vec ? vec(lane, a, n) : 0;
    for (; q + BN_LANES <= n; q += BN_LANES)
        for (int l = 0; l < BN_LANES; l++) lane[l] += a[q + l];
    for (; q < n; q++) lane[q % BN_LANES] += a[q];
}

static void bn_lanes_sqdev(double *lane, const float *a, int64_t n, double mean)
{
    fm_k_bn_sqdev_fn *vec = fm_kset_active()->bn_sqdev;
    int64_t q = vec ? vec(lane, a, n, mean) : 0;
    for (; q + BN_LANES <= n; q += BN_LANES)
        for (int l = 0; l < BN_LANES; l++) {
            double d = a[q + l] - mean;
            lane[l] += d * d;
        }
    for (; q < n; q++) {
        double d = a[q] - mean;
        lane[q % BN_LANES] += d * d;
    }
}

/* sum(dy) into l_dy, sum(dy * (x - mean)) into l_dyx. */
static void bn_lanes_dy(double *l_dy, double *l_dyx, const float *dy, const float *x, int64_t n,
                        double mean)
{
    fm_k_bn_dy_fn *vec = fm_kset_active()->bn_dy;
    int64_t q = vec ? vec(l_dy, l_dyx, dy, NULL, x, n, mean) : 0;
    for (; q + BN_LANES <= n; q += BN_LANES)
        for (int l = 0; l < BN_LANES; l++) {
            l_dy[l] += dy[q + l];
            l_dyx[l] += dy[q + l] * (x[q + l] - mean);
        }
    for (; q < n; q++) {
        l_dy[q % BN_LANES] += dy[q];
        l_dyx[q % BN_LANES] += dy[q] * (x[q] - mean);
    }
}

/* dy masked by a relu: dy where its output was > 0 (`keep`), else +0 --
 * what relu's backward passes on.  An AND with the mask rather than a
 * select: GCC turns the select into a branch per element, which random
 * signs make unpredictable. */
static inline float bn_relu_grad(float dy, bool keep)
{
    uint32_t bits;
    memcpy(&bits, &dy, sizeof bits);
    bits &= -(uint32_t)keep;
    memcpy(&dy, &bits, sizeof dy);
    return dy;
}

/* As bn_lanes_dy, for dy masked by a relu (mask as in bn_job). */
static void bn_lanes_dy_relu(double *l_dy, double *l_dyx, const float *dy, const uint16_t *mask,
                             const float *x, int64_t n, double mean)
{
    fm_k_bn_dy_fn *vec = fm_kset_active()->bn_dy;
    int64_t q = vec ? vec(l_dy, l_dyx, dy, mask, x, n, mean) : 0;
    for (; q < n; q++) {
        float g = bn_relu_grad(dy[q], bn_mask_bit(mask, q));
        l_dy[q % BN_LANES] += g;
        l_dyx[q % BN_LANES] += g * (x[q] - mean);
    }
}

/* The reductions run over a block of channels per task, image after image:
 * each image's share of a block is one contiguous run of memory, where one
 * channel's is H*W floats (49 on 7x7 maps) a whole image apart, a walk the
 * prefetchers follow badly.  Each channel still gets its sums in the same
 * order (images in turn, lane by lane), so the blocks change no bit. */
#define BN_RUN_FLOATS 4096
#define BN_MAX_BLOCK 128

/* Channels per reduction task: runs of about BN_RUN_FLOATS, and at least
 * two tasks per thread where there are channels enough. */
static int bn_block(const bn_job *j)
{
    int64_t tasks = ((int64_t)j->c * j->s + BN_RUN_FLOATS - 1) / BN_RUN_FLOATS;
    int64_t few = 2 * (int64_t)fm_get_threads();
    if (tasks < few) tasks = few;
    int64_t block = ((int64_t)j->c + tasks - 1) / tasks;
    return block < 1 ? 1 : block > BN_MAX_BLOCK ? BN_MAX_BLOCK : (int)block;
}

static int bn_block_tasks(const bn_job *j) { return (j->c + j->block - 1) / j->block; }

/* Task t's channels c0 .. c0+*nc-1. */
static int bn_block_span(const bn_job *j, int task, int *nc)
{
    int c0 = task * j->block;
    *nc = j->c - c0 < j->block ? j->c - c0 : j->block;
    return c0;
}

/* Channel c's statistics (with batch statistics, from the batch's mean and
 * sum of squared deviations sq), the running ones, and the elementwise
 * pass's coefficients. */
static void bn_forward_channel(const bn_job *j, int c, double mean, double sq)
{
    double invstd;
    if (j->batch_stats) {
        double m = (double)j->ch.total * j->s, var = sq / m;
        invstd = 1.0 / sqrt(var + j->eps);
        if (j->update_running) {
            double mom = j->momentum;
            j->running_mean[c] = (float)((1.0 - mom) * j->running_mean[c] + mom * mean);
            j->running_var[c] = (float)((1.0 - mom) * j->running_var[c] + mom * sq / (m - 1.0));
        }
    } else {
        mean = j->running_mean[c];
        invstd = 1.0 / sqrt((double)j->running_var[c] + j->eps);
    }
    j->mean[c] = (float)mean;
    j->invstd[c] = (float)invstd;

    /* y = x * scale + shift, as PyTorch's CPU kernel computes it. */
    double w = j->weight ? j->weight[c] : 1.0, b = j->bias ? j->bias[c] : 0.0;
    j->coef[c] = (float)(w * invstd);
    j->coef[j->c + c] = (float)(b - mean * w * invstd);
}

/* The batch statistics' sums over the chunks of the batch, a block of
 * channels a task: per local chunk and channel, the sum of x (pass 0) or of
 * (x - mean)^2 (pass 1) into part [chunks, C]. */
static void bn_stats_task(void *arg, int task, int thread)
{
    (void)thread;
    const bn_job *j = arg;
    int nc, c0 = bn_block_span(j, task, &nc);
    size_t cs = (size_t)j->c * j->s;
    for (int k = 0; k < j->ch.end - j->ch.first; k++) {
        int i0 = k * j->ch.size, i1 = i0 + fm_chunks_len(&j->ch, j->n, k);
        double lane[BN_MAX_BLOCK][BN_LANES] = {{0}};
        for (int i = i0; i < i1; i++)
            for (int c = 0; c < nc; c++) {
                const float *x = j->x + i * cs + (size_t)(c0 + c) * j->s;
                if (j->pass == 0)
                    bn_lanes_sum(lane[c], x, j->s);
                else
                    bn_lanes_sqdev(lane[c], x, j->s, j->stat[c0 + c]);
            }
        for (int c = 0; c < nc; c++) j->part[(size_t)k * j->c + c0 + c] = bn_lanes_total(lane[c]);
    }
}

/* part [chunks, C] of the pass, summed over the batch into j->stat [C]. */
static void bn_stats_pass(bn_job *j, int pass)
{
    j->pass = pass;
    fm_parallel_for(bn_block_tasks(j), bn_stats_task, j);
    fm_chunks_sum(&j->ch, FM_CHUNK_F64, j->part, j->part, j->c);
}

static void bn_forward_range(void *arg, int64_t begin, int64_t end)
{
    const bn_job *j = arg;
    const fm_kset *ks = fm_kset_active();
    const float *scale = j->coef, *shift = j->coef + j->c;
    for (int64_t pl = begin; pl < end; pl++) {
        int c = (int)(pl % j->c);
        const float *x = j->x + pl * j->s;
        float *y = j->y + pl * j->s, sc = scale[c], sh = shift[c];
        if (!j->relu) {
            ks->bn_plane(y, x, sc, sh, j->s);
            continue;
        }
        const float *r = j->res ? j->res + pl * j->s : NULL;
        uint16_t *mask = j->mask ? j->mask + pl * j->mask_words : NULL;
        if (ks->bn_relu_plane) {
            ks->bn_relu_plane(y, mask, x, r, sc, sh, j->s);
            continue;
        }
        /* The same roundings as batchnorm, add and relu run one after the
         * other: the fused op's results are bit-identical to theirs. */
        for (int64_t q = 0; q < j->s; q++) {
            float t = x[q] * sc + sh;
            if (r) t = t + r[q];
            y[q] = t > 0.0f ? t : 0.0f;
            if (mask) {
                if (q % 16 == 0) mask[q >> 4] = 0;
                mask[q >> 4] |= (uint16_t)((t > 0.0f) << (q & 15));
            }
        }
    }
}

/* Channel c's parameter gradients and the elementwise pass's coefficients,
 * from its sums of dy and dy * (x - mean). */
static void bn_backward_channel(const bn_job *j, int c, double sum_dy, double sum_dy_xmu)
{
    double invstd = j->invstd[c];
    if (j->dweight) j->dweight[c] += (float)(sum_dy_xmu * invstd);
    if (j->dbias) j->dbias[c] += (float)sum_dy;
    if (!j->dx) return;

    /* dx += a * dy + b * (x - mean) + d; with batch statistics the mean and
     * variance depend on every x:
     * dx = w*invstd * (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x - mean))). */
    double w = j->weight ? j->weight[c] : 1.0, k = w * invstd;
    double a = k, b = 0.0, d = 0.0;
    if (j->batch_stats) {
        double m = (double)j->ch.total * j->s;
        b = -k * sum_dy_xmu / m * invstd * invstd;
        d = -k * sum_dy / m;
    }
    j->coef[c] = (float)a;
    j->coef[j->c + c] = (float)b;
    j->coef[2 * j->c + c] = j->mean[c];
    j->coef[3 * j->c + c] = (float)d;
}

/* Per local chunk and channel of a block, the sums of dy and of
 * dy * (x - mean) into part [chunks, 2, C]. */
static void bn_backward_task(void *arg, int task, int thread)
{
    (void)thread;
    const bn_job *j = arg;
    int nc, c0 = bn_block_span(j, task, &nc);
    size_t cs = (size_t)j->c * j->s;
    for (int k = 0; k < j->ch.end - j->ch.first; k++) {
        int i0 = k * j->ch.size, i1 = i0 + fm_chunks_len(&j->ch, j->n, k);
        double l_dy[BN_MAX_BLOCK][BN_LANES] = {{0}}, l_dyx[BN_MAX_BLOCK][BN_LANES] = {{0}};
        for (int i = i0; i < i1; i++)
            for (int c = 0; c < nc; c++) {
                size_t off = (size_t)(c0 + c) * j->s + i * cs;
                double mean = j->mean[c0 + c];
                if (j->relu)
                    bn_lanes_dy_relu(l_dy[c], l_dyx[c], j->dy + off,
                                     j->mask + ((size_t)i * j->c + (size_t)(c0 + c)) * j->mask_words,
                                     j->x + off, j->s, mean);
                else
                    bn_lanes_dy(l_dy[c], l_dyx[c], j->dy + off, j->x + off, j->s, mean);
            }
        double *part = j->part + (size_t)k * 2 * j->c;
        for (int c = 0; c < nc; c++) {
            part[c0 + c] = bn_lanes_total(l_dy[c]);
            part[j->c + c0 + c] = bn_lanes_total(l_dyx[c]);
        }
    }
}

/* The fused op's backward for one plane: g = dy masked by the relu; dx as
 * bn_backward_plane with g for dy (dx may be NULL), and dres += (or =) g. */
static void bn_backward_relu_plane(float *dx, float *dres, const float *x, const float *dy,
                                   const uint16_t *mask, float a, float b, float mu, float d,
                                   int64_t s, bool dx_store, bool dres_store)
{
    fm_k_bn_relu_backward_fn *vec = fm_kset_active()->bn_relu_backward;
    if (vec) {
        vec(dx, dres, x, dy, mask, a, b, mu, d, s, dx_store, dres_store);
        return;
    }
    const bool affine_only = b == 0.0f && d == 0.0f;
    for (int64_t q = 0; q < s; q++) {
        float g = bn_relu_grad(dy[q], bn_mask_bit(mask, q));
        if (dx) {
            float v = affine_only ? a * g : a * g + b * (x[q] - mu) + d;
            dx[q] = dx_store ? v : dx[q] + v;
        }
        if (dres) dres[q] = dres_store ? g : dres[q] + g;
    }
}

static void bn_backward_range(void *arg, int64_t begin, int64_t end)
{
    const bn_job *j = arg;
    const float *a = j->coef, *b = a + j->c, *mu = b + j->c, *d = mu + j->c;
    for (int64_t pl = begin; pl < end; pl++) {
        int c = (int)(pl % j->c);
        const float *x = j->x + pl * j->s, *dy = j->dy + pl * j->s;
        float *dx = j->dx ? j->dx + pl * j->s : NULL;
        if (j->relu)
            bn_backward_relu_plane(dx, j->dres ? j->dres + pl * j->s : NULL, x, dy,
                                   j->mask + pl * j->mask_words, a[c], b[c], mu[c], d[c], j->s,
                                   j->dx_store, j->dres_store);
        else if (dx)
            fm_kset_active()->bn_backward_plane(dx, x, dy, a[c], b[c], mu[c], d[c], j->s,
                                                j->dx_store);
    }
}

static int64_t bn_grain(int64_t s)
{
    int64_t grain = FM_OPS_GRAIN / s;
    return grain < 1 ? 1 : grain;
}

static bool bn_param_ok(const fm_tensor *t, int c)
{
    return !t || (fm_ops_is_f32(t) && t->ndim == 1 && t->shape[0] == c);
}

/* The shape and argument checks shared by fm_batchnorm and fm_batchnorm_relu. */
static void bn_check(const fm_tensor *x, const fm_tensor *weight, const fm_tensor *bias,
                     const fm_tensor *running_mean, const fm_tensor *running_var,
                     const fm_tensor *num_batches_tracked, float momentum, float eps)
{
    FM_ASSERT(fm_ops_is_f32(x) && (x->ndim == 4 || x->ndim == 2));
    const int c = x->shape[1];
    FM_ASSERT(bn_param_ok(weight, c) && bn_param_ok(bias, c));
    FM_ASSERT(bn_param_ok(running_mean, c) && bn_param_ok(running_var, c));
    FM_ASSERT((running_mean == NULL) == (running_var == NULL));
    FM_ASSERT(!running_mean || (!running_mean->requires_grad && !running_var->requires_grad));
    if (num_batches_tracked)
        FM_ASSERT(num_batches_tracked->dtype == FM_I64 && num_batches_tracked->numel == 1);
    FM_ASSERT(eps > 0.0f && momentum >= 0.0f && momentum <= 1.0f);
}

fm_tensor *fm_batchnorm(fm_graph *g, fm_tensor *x, fm_tensor *weight, fm_tensor *bias,
                        fm_tensor *running_mean, fm_tensor *running_var,
                        fm_tensor *num_batches_tracked, float momentum, float eps)
{
    bn_check(x, weight, bias, running_mean, running_var, num_batches_tracked, momentum, eps);
    fm_node *n = fm_node_new(g, FM_OP_BATCHNORM, 6, (fm_tensor *[]){x, weight, bias, running_mean,
                                                                  running_var,
                                                                  num_batches_tracked});
    n->farg[0] = momentum;
    n->farg[1] = eps;
    n->out = fm_graph_tensor(g, x->ndim, x->shape);
    return fm_graph_apply(g, n);
}

fm_tensor *fm_batchnorm_relu(fm_graph *g, fm_tensor *x, fm_tensor *weight, fm_tensor *bias,
                             fm_tensor *running_mean, fm_tensor *running_var,
                             fm_tensor *num_batches_tracked, float momentum, float eps,
                             fm_tensor *residual)
{
    if (residual) FM_ASSERT(fm_ops_is_f32(residual) && fm_tensor_same_shape(x, residual));
    bn_check(x, weight, bias, running_mean, running_var, num_batches_tracked, momentum, eps);
    fm_node *n = fm_node_new(g, FM_OP_BATCHNORM_RELU, 7,
                             (fm_tensor *[]){x, weight, bias, running_mean, running_var,
                                             num_batches_tracked, residual});
    n->farg[0] = momentum;
    n->farg[1] = eps;
    n->out = fm_graph_tensor(g, x->ndim, x->shape);
    return fm_graph_apply(g, n);
}

static bn_job bn_job_make(const fm_graph *g, const fm_node *n)
{
    const fm_tensor *x = n->in[0];
    fm_chunks ch;
    fm_graph_chunks(g, x->shape[0], &ch);
    return (bn_job){
        .ch = ch,
        .n = x->shape[0], .c = x->shape[1],
        .s = x->ndim == 4 ? (int64_t)x->shape[2] * x->shape[3] : 1,
        .momentum = n->farg[0], .eps = n->farg[1],
        .x = x->data,
        .weight = n->in[1] ? n->in[1]->data : NULL,
        .bias = n->in[2] ? n->in[2]->data : NULL,
        .relu = n->op == FM_OP_BATCHNORM_RELU,
        .res = n->op == FM_OP_BATCHNORM_RELU && n->in[6] ? n->in[6]->data : NULL,
        .mask_words = x->ndim == 4 ? ((int64_t)x->shape[2] * x->shape[3] + 15) / 16 : 1,
    };
}

/* Floats the forward keeps for the backward: mean and invstd [2, C]
 * (rounded up to 64 bytes), then (the fused op) the relu mask. */
static size_t bn_stats_floats(const bn_job *j) { return (2 * (size_t)j->c + 15) / 16 * 16; }

static size_t bn_saved_floats(const bn_job *j)
{
    if (!j->relu) return bn_stats_floats(j);
    return bn_stats_floats(j) + ((size_t)j->n * j->c * (size_t)j->mask_words + 1) / 2;
}

static uint16_t *bn_saved_mask(const bn_job *j, float *saved)
{
    return (uint16_t *)(saved + bn_stats_floats(j));
}

void fm_op_batchnorm_forward(fm_graph *g, fm_node *n)
{
    bool training = fm_graph_training(g);
    bn_job j = bn_job_make(g, n);
    /* Without running statistics, eval mode normalises with the batch's, as
     * PyTorch does with track_running_stats=False. */
    j.batch_stats = training || !n->in[3];
    j.update_running = training && n->in[3];
    if (n->in[3]) {
        j.running_mean = n->in[3]->data;
        j.running_var = n->in[4]->data;
    }
    if (j.batch_stats) FM_ASSERT((int64_t)j.ch.total * j.s > 1);  /* as PyTorch: > 1 value per channel */
    if (training && n->in[5]) n->in[5]->i64[0] += 1;
    float *stats = fm_graph_alloc(g, bn_saved_floats(&j) * sizeof(float));
    j.mean = stats;
    j.invstd = stats + j.c;
    if (j.relu && n->record) j.mask = bn_saved_mask(&j, stats);
    fm_arena_mark mark = fm_arena_mark_get(fm_graph_arena(g));
    j.coef = fm_graph_alloc(g, 2 * (size_t)j.c * sizeof(float));
    j.y = n->out->data;
    j.block = bn_block(&j);
    if (j.batch_stats) {
        /* The mean, then the squared deviations from it: each the batch's
         * chunks' tree of their sums (fm_chunk_sum), as one process on the
         * whole batch computes them. */
        j.part = fm_graph_alloc(g, (size_t)(j.ch.end - j.ch.first + 1) * j.c * sizeof(double));
        j.stat = fm_graph_alloc(g, (size_t)j.c * sizeof(double));
        double m = (double)j.ch.total * j.s;
        bn_stats_pass(&j, 0);
        for (int c = 0; c < j.c; c++) j.stat[c] = j.part[c] / m;
        bn_stats_pass(&j, 1);
        for (int c = 0; c < j.c; c++) bn_forward_channel(&j, c, j.stat[c], j.part[c]);
    } else {
        for (int c = 0; c < j.c; c++) bn_forward_channel(&j, c, 0.0, 0.0);
    }
    fm_ops_parallel_range((int64_t)j.n * j.c, bn_grain(j.s), bn_forward_range, &j);
    fm_arena_release(fm_graph_arena(g), mark);
    n->iarg[0] = j.batch_stats;
    n->saved = stats;
}

void fm_op_batchnorm_backward(fm_graph *g, fm_node *n)
{
    bn_job j = bn_job_make(g, n);
    j.batch_stats = n->iarg[0] != 0;
    float *stats = n->saved;
    j.mean = stats;
    j.invstd = stats + j.c;
    j.dy = n->out->grad;
    j.dx = fm_node_wants_grad(n, 0) ? n->in[0]->grad : NULL;
    j.dx_store = j.dx && fm_node_grad_overwrite(n, 0);
    j.dweight = fm_node_wants_grad(n, 1) ? n->in[1]->grad : NULL;
    j.dbias = fm_node_wants_grad(n, 2) ? n->in[2]->grad : NULL;
    if (j.relu) {
        j.mask = bn_saved_mask(&j, stats);
        j.dres = fm_node_wants_grad(n, 6) ? n->in[6]->grad : NULL;
        j.dres_store = j.dres && fm_node_grad_overwrite(n, 6);
    }
    if (!j.dx && !j.dweight && !j.dbias && !j.dres) return;
    fm_arena_mark mark = fm_arena_mark_get(fm_graph_arena(g));
    j.coef = fm_graph_alloc(g, 4 * (size_t)j.c * sizeof(float));
    j.block = bn_block(&j);
    j.part = fm_graph_alloc(g, (size_t)(j.ch.end - j.ch.first + 1) * 2 * j.c * sizeof(double));
    fm_parallel_for(bn_block_tasks(&j), bn_backward_task, &j);
    fm_chunks_sum(&j.ch, FM_CHUNK_F64, j.part, j.part, 2 * (int64_t)j.c);
    for (int c = 0; c < j.c; c++) bn_backward_channel(&j, c, j.part[c], j.part[j.c + c]);
    if (j.dx || j.dres)
        fm_ops_parallel_range((int64_t)j.n * j.c, bn_grain(j.s), bn_backward_range, &j);
    fm_arena_release(fm_graph_arena(g), mark);
}

/* The fused op shares the kernels: bn_job_make() sees the op id. */
void fm_op_batchnorm_relu_forward(fm_graph *g, fm_node *n) { fm_op_batchnorm_forward(g, n); }
void fm_op_batchnorm_relu_backward(fm_graph *g, fm_node *n) { fm_op_batchnorm_backward(g, n); }
