/* ops_util.h — helpers shared by the kernels in core/ops/ (private). */
#ifndef FM_OPS_UTIL_H
#define FM_OPS_UTIL_H

#include "fm_internal.h"
#include "gemm_bf16.h"
#include "kset.h"

#include <string.h>

/* Elementwise work is split into tasks of this many elements: large enough
 * that a task outweighs the pool's dispatch, small enough to balance 2-8
 * threads on activation-sized tensors.  Elementwise results do not depend on
 * the split, so any grain is deterministic. */
#define FM_OPS_GRAIN ((int64_t)1 << 16)

typedef void (*fm_ops_range_fn)(void *arg, int64_t begin, int64_t end);

typedef struct fm_ops_range_job {
    fm_ops_range_fn fn;
    void *arg;
    int64_t n, grain;
} fm_ops_range_job;

static inline void fm_ops_range_task(void *arg, int task, int thread)
{
    (void)thread;
    const fm_ops_range_job *job = arg;
    int64_t begin = (int64_t)task * job->grain;
    int64_t end = begin + job->grain < job->n ? begin + job->grain : job->n;
    job->fn(job->arg, begin, end);
}

/* Calls fn on consecutive ranges covering [0, n), `grain` items each, spread
 * over the pool; runs inline when one range covers everything. */
static inline void fm_ops_parallel_range(int64_t n, int64_t grain, fm_ops_range_fn fn, void *arg)
{
    if (n <= 0) return;
    if (n <= grain) {
        fn(arg, 0, n);
        return;
    }
    fm_ops_range_job job = {fn, arg, n, grain};
    fm_parallel_for((int)((n + grain - 1) / grain), fm_ops_range_task, &job);
}

static inline bool fm_ops_is_f32(const fm_tensor *t) { return t && t->dtype == FM_F32; }

/* fm_gemm_serial_bf16 with B as the kernels take it (a matrix, a table of
 * rows, or column segments): the product behind fm_gemm_serial_rows and
 * fm_gemm_serial_segs when they are asked for bf16. */
void fm_gemm_bf16_product(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *a_packed, const fm_gemm_b *gb,
                          float beta, float *c, int ldc, float *pack);

/* x rounded to bfloat16 as c10::BFloat16 converts (fm_bf16_from_f32's
 * rounding, inline), kept in float32: integer arithmetic only, so the loops
 * using it round identically on every kernel set. */
static inline float fm_ops_bf16_round(float x) { return fm_bf16_float(fm_bf16_bits(x)); }

/* Autocast for a layer with input x, weight w and bias b (or NULL): in a
 * bf16 graph, replaces each by its fm_to_bf16 and returns true (the layer
 * then ends with fm_ops_to_bf16_in_place); else changes nothing. */
bool fm_ops_autocast(fm_graph *g, fm_tensor **x, fm_tensor **w, fm_tensor **b);

/* dst[i] += round(0 + src[i]) for i < n, over the pool: what a cast's
 * backward adds for a gradient that started at zero (-0 counted as +0). */
void fm_ops_add_bf16_rounded(float *dst, const float *src, int64_t n);

/* A tensor of the given shape over x's data (as many elements), for ops
 * whose output is their input: no copy forward, a gradient of its own. */
fm_tensor *fm_ops_view(fm_graph *g, const fm_tensor *x, int ndim, const int *shape);

/* fm_to_bf16 of an op's output that nothing else reads: the result is a
 * view rounding y's data in place (its gradient stays y's own), which saves
 * a copy of the activation.  The bf16 linear and convolution layers end
 * with it. */
fm_tensor *fm_ops_to_bf16_in_place(fm_graph *g, fm_tensor *y);

#endif /* FM_OPS_UTIL_H */
