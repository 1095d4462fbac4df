/* Pooling: k x k max pooling with stride k, and global average pooling. */
#include "ops_util.h"

#include <math.h>

/* Planes (one image, one channel) per parallel task: about FM_OPS_GRAIN elements. */
static int64_t pool_grain(int64_t plane)
{
    int64_t grain = FM_OPS_GRAIN / plane;
    return grain < 1 ? 1 : grain;
}

/* ---- max pooling ---------------------------------------------------------- */

typedef struct maxpool_job {
    const float *x;  // [N*C, H, W]
    float *y;        // [N*C, OH, OW]
    int32_t *arg;    // [N*C, OH, OW] index into the input plane, or NULL
    const float *dy; // [N*C, OH, OW]
    float *dx;       // [N*C, H, W]
    bool dx_store;   /* dx is fresh: each plane is zeroed before the scatter */
    bool relu;       /* fm_maxpool2d_relu: y = relu(max); dy passes only where y > 0 */
    int h, w, oh, ow, k;
} maxpool_job;

/* Every path compares with a strict >, so ties keep the first maximum in
 * row-major order, and lets a NaN win, as PyTorch does; 2x2 windows run the
 * vector sets' row kernel (core/kernels/pool.c) where there is one. */
static void maxpool_forward_range(void *arg, int64_t begin, int64_t end)
{
    const maxpool_job *j = arg;
    size_t in_plane = (size_t)j->h * j->w, out_plane = (size_t)j->oh * j->ow;
    for (int64_t pl = begin; pl < end; pl++) {
        const float *x = j->x + (size_t)pl * in_plane;
        float *y = j->y + (size_t)pl * out_plane;
        int32_t *am = j->arg ? j->arg + (size_t)pl * out_plane : NULL;
        fm_k_maxpool2_row_fn *row2 = fm_kset_active()->maxpool2_row;
        if (j->k == 2 && row2) {
            for (int oy = 0; oy < j->oh; oy++) {
                const float *r0 = x + (size_t)2 * oy * j->w;
                row2(r0, r0 + j->w, j->w, j->ow, y + (size_t)oy * j->ow,
                     am ? am + (size_t)oy * j->ow : NULL, 2 * oy * j->w, j->relu);
            }
            continue;
        }
        if (j->k == 2) {
            /* The usual window, unrolled and branch-free (random data makes
             * the comparisons unpredictable). */
            for (int oy = 0; oy < j->oh; oy++) {
                const float *r0 = x + (size_t)2 * oy * j->w, *r1 = r0 + j->w;
                float *yr = y + (size_t)oy * j->ow;
                int32_t *ar = am ? am + (size_t)oy * j->ow : NULL;
                int base = 2 * oy * j->w;
                for (int ox = 0; ox < j->ow; ox++) {
                    float v0 = r0[2 * ox], v1 = r0[2 * ox + 1], v2 = r1[2 * ox], v3 = r1[2 * ox + 1];
                    float best = v0;
                    int off = 0;
                    bool t1 = v1 > best || isnan(v1);
                    best = t1 ? v1 : best;
                    off = t1 ? 1 : off;
                    bool t2 = v2 > best || isnan(v2);
                    best = t2 ? v2 : best;
                    off = t2 ? j->w : off;
                    bool t3 = v3 > best || isnan(v3);
                    best = t3 ? v3 : best;
                    off = t3 ? j->w + 1 : off;
                    yr[ox] = j->relu && !(best > 0.0f) ? 0.0f : best;
                    if (ar) ar[ox] = base + 2 * ox + off;
                }
            }
            continue;
        }
        for (int oy = 0; oy < j->oh; oy++)
            for (int ox = 0; ox < j->ow; ox++) {
                int first = oy * j->k * j->w + ox * j->k, best_i = first;
                float best = x[first];
                for (int ky = 0; ky < j->k; ky++)
                    for (int kx = 0; kx < j->k; kx++) {
                        int i = first + ky * j->w + kx;
                        if (x[i] > best || isnan(x[i])) {
                            best = x[i];
                            best_i = i;
                        }
                    }
                y[oy * j->ow + ox] = j->relu && !(best > 0.0f) ? 0.0f : best;
                if (am) am[oy * j->ow + ox] = best_i;
            }
    }
}

static void maxpool_backward_range(void *arg, int64_t begin, int64_t end)
{
    const maxpool_job *j = arg;
    size_t in_plane = (size_t)j->h * j->w, out_plane = (size_t)j->oh * j->ow;
    for (int64_t pl = begin; pl < end; pl++) {
        float *dx = j->dx + (size_t)pl * in_plane;
        const float *dy = j->dy + (size_t)pl * out_plane;
        const int32_t *am = j->arg + (size_t)pl * out_plane;
        /* A plane at a time, while it is in cache: cheaper than a separate
         * pass zeroing the whole gradient first. */
        if (j->dx_store) memset(dx, 0, in_plane * sizeof *dx);
        if (!j->relu) {
            for (size_t q = 0; q < out_plane; q++) dx[am[q]] += dy[q];
            continue;
        }
        /* What relu's backward would leave in the pooled output's zeroed
         * gradient, 0 + (y > 0 ? dy : 0), then scattered: the same bits as
         * the two ops. */
        const float *y = j->y + (size_t)pl * out_plane;
        for (size_t q = 0; q < out_plane; q++) dx[am[q]] += 0.0f + (y[q] > 0.0f ? dy[q] : 0.0f);
    }
}

static fm_tensor *maxpool_node(fm_graph *g, fm_tensor *x, int k, fm_op_id op)
{
    FM_ASSERT(fm_ops_is_f32(x) && x->ndim == 4);
    FM_ASSERT(k >= 1 && x->shape[2] >= k && x->shape[3] >= k);
    fm_node *n = fm_node_new(g, op, 1, &x);
    n->iarg[0] = k;
    n->out = fm_graph_tensor(g, 4, (int[]){x->shape[0], x->shape[1], x->shape[2] / k,
                                           x->shape[3] / k});
    return fm_graph_apply(g, n);
}

fm_tensor *fm_maxpool2d(fm_graph *g, fm_tensor *x, int k)
{
    return maxpool_node(g, x, k, FM_OP_MAXPOOL2D);
}

fm_tensor *fm_maxpool2d_relu(fm_graph *g, fm_tensor *x, int k)
{
    return maxpool_node(g, x, k, FM_OP_MAXPOOL2D_RELU);
}

static maxpool_job maxpool_job_make(const fm_node *n)
{
    const fm_tensor *x = n->in[0];
    int k = n->iarg[0];
    return (maxpool_job){.h = x->shape[2], .w = x->shape[3], .oh = x->shape[2] / k,
                         .ow = x->shape[3] / k, .k = k, .relu = n->op == FM_OP_MAXPOOL2D_RELU,
                         .y = n->out->data};
}

void fm_op_maxpool2d_forward(fm_graph *g, fm_node *n)
{
    maxpool_job j = maxpool_job_make(n);
    j.x = n->in[0]->data;
    if (n->record) {
        j.arg = fm_graph_alloc(g, (size_t)n->out->numel * sizeof *j.arg);
        n->saved = j.arg;
    }
    int64_t planes = (int64_t)n->in[0]->shape[0] * n->in[0]->shape[1];
    fm_ops_parallel_range(planes, pool_grain((int64_t)j.h * j.w), maxpool_forward_range, &j);
}

void fm_op_maxpool2d_backward(fm_graph *g, fm_node *n)
{
    (void)g;
    if (!fm_node_wants_grad(n, 0)) return;
    FM_ASSERT(n->saved != NULL);
    maxpool_job j = maxpool_job_make(n);
    j.arg = n->saved;
    j.dy = n->out->grad;
    j.dx = n->in[0]->grad;
    j.dx_store = fm_node_grad_overwrite(n, 0);
    int64_t planes = (int64_t)n->in[0]->shape[0] * n->in[0]->shape[1];
    fm_ops_parallel_range(planes, pool_grain((int64_t)j.h * j.w), maxpool_backward_range, &j);
}

/* The fused op shares the max pooling's functions: maxpool_job_make() sees
 * the op id. */
void fm_op_maxpool2d_relu_forward(fm_graph *g, fm_node *n) { fm_op_maxpool2d_forward(g, n); }
void fm_op_maxpool2d_relu_backward(fm_graph *g, fm_node *n) { fm_op_maxpool2d_backward(g, n); }

/* ---- global average pooling ---------------------------------------------- */

typedef struct avgpool_job {
    const float *x;  // [N*C, H*W]
    float *y;        // [N*C]
    const float *dy; // [N*C]
    float *dx;       // [N*C, H*W]
    int64_t plane;
} avgpool_job;

static void avgpool_forward_range(void *arg, int64_t begin, int64_t end)
{
    const avgpool_job *j = arg;
    for (int64_t pl = begin; pl < end; pl++) {
        const float *x = j->x + pl * j->plane;
        double s = 0.0;
        for (int64_t q = 0; q < j->plane; q++) s += x[q];
        j->y[pl] = (float)(s / (double)j->plane);
    }
}

static void avgpool_backward_range(void *arg, int64_t begin, int64_t end)
{
    const avgpool_job *j = arg;
    float scale = 1.0f / (float)j->plane;
    for (int64_t pl = begin; pl < end; pl++) {
        float *dx = j->dx + pl * j->plane;
        float d = j->dy[pl] * scale;
        for (int64_t q = 0; q < j->plane; q++) dx[q] += d;
    }
}

fm_tensor *fm_global_avgpool(fm_graph *g, fm_tensor *x)
{
    FM_ASSERT(fm_ops_is_f32(x) && x->ndim == 4);
    fm_node *n = fm_node_new(g, FM_OP_GLOBAL_AVGPOOL, 1, &x);
    n->out = fm_graph_tensor(g, 2, (int[]){x->shape[0], x->shape[1]});
    return fm_graph_apply(g, n);
}

void fm_op_global_avgpool_forward(fm_graph *g, fm_node *n)
{
    (void)g;
    const fm_tensor *x = n->in[0];
    avgpool_job j = {.x = x->data, .y = n->out->data, .plane = (int64_t)x->shape[2] * x->shape[3]};
    fm_ops_parallel_range(n->out->numel, pool_grain(j.plane), avgpool_forward_range, &j);
}

void fm_op_global_avgpool_backward(fm_graph *g, fm_node *n)
{
    (void)g;
    if (!fm_node_wants_grad(n, 0)) return;
    const fm_tensor *x = n->in[0];
    avgpool_job j = {.dy = n->out->grad, .dx = x->grad, .plane = (int64_t)x->shape[2] * x->shape[3]};
    fm_ops_parallel_range(n->out->numel, pool_grain(j.plane), avgpool_backward_range, &j);
}
