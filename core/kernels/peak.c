/* The set's peak multiply-add rate, for `fmhost bench --gemm` to measure
 * the GEMM against: twelve independent chains (enough to cover the
 * latency of two FMA pipes on the processors this runs on), in registers. */
#include "kset.h"
#include "vec.h"

#define PEAK_CHAINS 12

double FM_K(fma_peak)(int64_t iters, float *sink)
{
    fm_vf acc[PEAK_CHAINS];
    /* acc = acc * 0.5 + 1 converges to 2: no overflow, no subnormals. */
    const fm_vf half = fm_vf_set1(0.5f), one = fm_vf_set1(1.0f);
    for (int r = 0; r < PEAK_CHAINS; r++) acc[r] = fm_vf_set1((float)r);
    for (int64_t i = 0; i < iters; i++)
#pragma GCC unroll 12
        for (int r = 0; r < PEAK_CHAINS; r++) acc[r] = fm_vf_fma(acc[r], half, one);
    fm_vf total = acc[0];
    for (int r = 1; r < PEAK_CHAINS; r++) total = fm_vf_add(total, acc[r]);
    float lanes[FM_VL];
    fm_vf_store(lanes, total);
    *sink = lanes[0];
    return 2.0 * FM_VL * PEAK_CHAINS * (double)iters;
}
