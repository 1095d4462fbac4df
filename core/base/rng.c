/* PCG32 (pcg32_random_r from the PCG reference), with the stream chosen by
 * the increment: seed and stream together fix the sequence. */
#include "fm/fm_base.h"

void fm_rng_seed(fm_rng *rng, uint64_t seed, uint64_t stream)
{
    rng->state = 0;
    rng->inc = (stream << 1u) | 1u;
    fm_rng_u32(rng);
    rng->state += seed;
    fm_rng_u32(rng);
}

uint32_t fm_rng_u32(fm_rng *rng)
{
    uint64_t old = rng->state;
    rng->state = old * 6364136223846793005ULL + rng->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

float fm_rng_uniform(fm_rng *rng)
{
    return (float)(fm_rng_u32(rng) >> 8) * (1.0f / 16777216.0f);
}

uint32_t fm_rng_below(fm_rng *rng, uint32_t n)
{
    FM_ASSERT(n > 0);
    /* Lemire's rejection keeps the result unbiased for any n. */
    uint32_t threshold = -n % n;
    for (;;) {
        uint32_t r = fm_rng_u32(rng);
        if (r >= threshold) return r % n;
    }
}

void fm_rng_shuffle(fm_rng *rng, uint32_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = fm_rng_below(rng, (uint32_t)i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}
