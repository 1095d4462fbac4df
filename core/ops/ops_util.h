/* ops_util.h — helpers shared by the kernels in core/ops/ (private). */
#ifndef FM_OPS_UTIL_H
#define FM_OPS_UTIL_H

#include "fm_internal.h"

#include <immintrin.h>
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

/* Hot loops compiled twice, for AVX-512 and for the baseline, the copy
 * picked when the library loads.  Both round identically: the loops are
 * written lane by lane and nothing is contracted into a multiply-add
 * (-ffp-contract=off), so vectorising changes no result. */
#define FM_OPS_CLONES __attribute__((target_clones("avx512f", "default")))

/* The first n of 16 lanes as an AVX-512 mask (all for n >= 16, none for
 * n <= 0): the ragged end of a row in the AVX-512 kernels. */
static inline uint16_t fm_ops_lane_mask(int n)
{
    return n >= 16 ? 0xFFFF : n <= 0 ? 0 : (uint16_t)((1u << n) - 1u);
}

/* Lane indices 0, 2, ..., 30: with _mm512_permutex2var_ps, the even elements
 * of two vectors (a row's pixels at stride 2). */
__attribute__((target("avx512f"), always_inline)) static inline __m512i fm_ops_even_lanes(void)
{
    return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}

/* Loads and stores of the lanes in m: plain ones for a whole vector (m a
 * constant 0xFFFF after inlining), masked ones -- which cost more on some
 * processors -- only for a ragged end. */
__attribute__((target("avx512f"), always_inline)) static inline __m512
fm_ops_load16(const float *p, __mmask16 m)
{
    return m == 0xFFFF ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}

__attribute__((target("avx512f"), always_inline)) static inline void
fm_ops_store16(float *p, __m512 v, __mmask16 m)
{
    if (m == 0xFFFF)
        _mm512_storeu_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, m, v);
}

/* The upper eight floats of v (AVX-512F has no float-typed extract). */
__attribute__((target("avx512f"), always_inline)) static inline __m256 fm_ops_upper_half(__m512 v)
{
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

/* lane[l] += a[q] for q = l (mod 8), q < n rounded down to whole groups of
 * eight, in order: eight double sums in one register, bit-identical to the
 * scalar loop.  Returns how many elements it took. */
__attribute__((target("avx512f"))) static inline int64_t fm_ops_lane_sums_avx512(double *lane,
                                                                                const float *a,
                                                                                int64_t n)
{
    __m512d acc = _mm512_loadu_pd(lane);
    int64_t q = 0;
    for (; q + 8 <= n; q += 8) acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_loadu_ps(a + q)));
    _mm512_storeu_pd(lane, acc);
    return q;
}

static inline bool fm_ops_is_f32(const fm_tensor *t) { return t && t->dtype == FM_F32; }

#endif /* FM_OPS_UTIL_H */
