/* dpbf16_probe — what vdpbf16ps computes, measured against candidate
 * definitions on random operands (a processor with AVX512_BF16 only):
 *
 *   gcc -O2 -mavx512f -mavx512bf16 -mavx512bw -mavx512vl -mfma \
 *       -ffp-contract=off -o /tmp/dpbf16_probe tools/dpbf16_probe.c -lm
 *   /tmp/dpbf16_probe [millions of lanes, default 16]
 *
 * Each lane computes acc + a1*b1 + a0*b0 from a float acc and two bf16
 * pairs (a0, a1), (b0, b1), element 0 being the low half of the dword.  The
 * candidates, each evaluated lane by lane in scalar code:
 *   odd_first   fma(a0, b0, fma(a1, b1, acc)) under MXCSR DAZ|FTZ (Intel's
 *               pseudo-code: the odd element first)
 *   even_first  fma(a1, b1, fma(a0, b0, acc)) under DAZ|FTZ
 *   soft        odd_first in software, MXCSR untouched (fmhost's portable
 *               emulation: denormals flushed by hand, tininess after
 *               rounding found by scaling)
 *   ieee        odd_first with gradual underflow (no DAZ/FTZ)
 * and it counts the lanes where each differs from the instruction, in the
 * bits, and ignoring the sign and payload of NaNs. */
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x853c49e6748fea9bULL;

static uint32_t rnd(void)
{
    uint64_t old = rng_state;
    rng_state = old * 6364136223846793005ULL + 1442695040888963407ULL;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

static float f_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t u_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* A bf16 (16 bits) from one of several populations: any pattern, values
 * near 1, tiny normals and denormals, the specials; mode 5: about 2^-75,
 * whose products fall near the smallest normal float. */
static uint16_t rnd_bf16(int mode)
{
    uint32_t r = rnd();
    switch (mode) {
    case 0: return (uint16_t)r;                                         /* any */
    case 1: return (uint16_t)((r & 0x8000u) | ((0x7Cu + (r >> 16) % 6) << 7) | (r & 0x7Fu));
    case 2: return (uint16_t)((r & 0x8000u) | (((r >> 16) % 24) << 7) | (r & 0x7Fu)); /* tiny */
    case 3: return (uint16_t)((r & 0x8000u) | (r & 0x7Fu));             /* denormal or 0 */
    case 5: return (uint16_t)((r & 0x8000u) | ((45u + (r >> 16) % 16) << 7) | (r & 0x7Fu));
    default: {
        static const uint16_t special[] = {0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFC0,
                                           0x7F81, 0x3F80, 0x0001, 0x8001, 0x0080, 0x7F7F};
        return special[r % (sizeof special / sizeof special[0])];
    }
    }
}

/* acc, matched to the product scale for mode 2 so that results land near
 * the denormal boundary. */
static uint32_t rnd_acc(int mode)
{
    uint32_t r = rnd();
    switch (mode) {
    case 0: return r;
    case 1: return (r & 0x80000000u) | ((0x7Cu + (rnd() % 6)) << 23) | (r & 0x7FFFFFu);
    case 2: return (r & 0x80000000u) | ((rnd() % 4) << 23) | (r & 0x7FFFFFu);
    case 3: return r & 0x807FFFFFu;
    default: {
        static const uint32_t special[] = {0, 0x80000000u, 0x7F800000u, 0xFF800000u,
                                           0x7FC00000u, 0xFFC00000u, 0x00800000u, 0x00000001u};
        return special[r % (sizeof special / sizeof special[0])];
    }
    }
}

static float bf(uint16_t h) { return f_of((uint32_t)h << 16); }

/* Hardware FMA: -mfma makes fmaf one instruction, so MXCSR applies. */
static float fma_hw(float x, float y, float z) { return fmaf(x, y, z); }

static float flush(float x) { return fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x; }

/* x*y + z with denormal inputs read as zero and tiny results (after
 * rounding, as if the exponent were unbounded) flushed, in software. */
static float fma_soft(float x, float y, float z)
{
    x = flush(x), y = flush(y), z = flush(z);
    float r = fma_hw(x, y, z);
    if (!(fabsf(r) < 0x1p-100f) || r == 0.0f) return r;
    /* A nonzero result this small comes from small z and x*y only (see
     * core/ops/gemm_bf16.c): scaled by 2^64 (z, and the smaller of x and
     * y) it rounds in the normal range, to 24 bits. */
    if (fabsf(x) < fabsf(y))
        x *= 0x1p64f;
    else
        y *= 0x1p64f;
    float s = fma_hw(x, y, z * 0x1p64f);
    return fabsf(s) < 0x1p-62f ? copysignf(0.0f, s) : s * 0x1p-64f;
}

/* fma(a0, b0, fma(a1, b1, c)) (or the even element first) with MXCSR set
 * to csr; the empty asm statements keep the arithmetic between the two
 * writes of MXCSR. */
static __attribute__((noinline)) float dp_csr(unsigned csr, int even_first, float a0, float a1,
                                              float b0, float b1, float c)
{
    unsigned old = _mm_getcsr();
    _mm_setcsr(csr);
    __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(b0), "+x"(b1), "+x"(c));
    float r = even_first ? fma_hw(a1, b1, fma_hw(a0, b0, c)) : fma_hw(a0, b0, fma_hw(a1, b1, c));
    __asm__ volatile("" : "+x"(r));
    _mm_setcsr(old);
    return r;
}

#define LANES 16
#define NCAND 4
static const char *const cand_name[NCAND] = {"odd_first", "even_first", "soft", "ieee"};

int main(int argc, char **argv)
{
    long millions = argc > 1 ? atol(argv[1]) : 16;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512bf16")) {
        fprintf(stderr, "this processor has no AVX512_BF16\n");
        return 2;
    }
    const unsigned csr0 = _mm_getcsr(), csr_daz_ftz = csr0 | 0x8040u;
    long bits_diff[NCAND] = {0}, class_diff[NCAND] = {0}, lanes = 0, nan_out = 0, tiny_out = 0;
    uint32_t acc[LANES], pa[LANES], pb[LANES], got[LANES];
    for (long it = 0; it < millions * 1000000 / LANES; it++) {
        int mode_a = rnd() % 5, mode_b = rnd() % 5, mode_c = rnd() % 5;
        if (it % 3 == 0) mode_a = mode_b = 5, mode_c = 2;  /* near the denormal boundary */
        for (int l = 0; l < LANES; l++) {
            /* Specials mixed with others; the odd element of mode 5 big
             * or tiny, so that one product at a time is near the boundary. */
            int ma = mode_a == 4 && rnd() % 2 ? 1 : mode_a, mb = mode_b == 4 && rnd() % 2 ? 1 : mode_b;
            pa[l] = rnd_bf16(ma) | (uint32_t)rnd_bf16(mode_a) << 16;
            pb[l] = rnd_bf16(mb) | (uint32_t)rnd_bf16(mode_b) << 16;
            acc[l] = rnd_acc(mode_c == 4 && rnd() % 2 ? 1 : mode_c);
        }
        __m512 r = _mm512_dpbf16_ps(_mm512_loadu_ps((const float *)acc),
                                    (__m512bh)_mm512_loadu_si512(pa),
                                    (__m512bh)_mm512_loadu_si512(pb));
        _mm512_storeu_si512(got, _mm512_castps_si512(r));
        for (int l = 0; l < LANES; l++) {
            float a0 = bf((uint16_t)pa[l]), a1 = bf((uint16_t)(pa[l] >> 16));
            float b0 = bf((uint16_t)pb[l]), b1 = bf((uint16_t)(pb[l] >> 16));
            float c = f_of(acc[l]), want[NCAND];
            want[0] = dp_csr(csr_daz_ftz, 0, a0, a1, b0, b1, c);
            want[1] = dp_csr(csr_daz_ftz, 1, a0, a1, b0, b1, c);
            want[2] = fma_soft(a0, b0, fma_soft(a1, b1, c));
            want[3] = dp_csr(csr0, 0, a0, a1, b0, b1, c);
            float g = f_of(got[l]);
            nan_out += isnan(g);
            tiny_out += fabsf(g) < 0x1p-120f;
            for (int k = 0; k < NCAND; k++) {
                uint32_t w = u_of(want[k]);
                if (w != got[l]) {
                    if (bits_diff[k] < 3 && k != 3)
                        printf("%s differs: acc %08x a %08x b %08x: got %08x want %08x\n",
                               cand_name[k], acc[l], pa[l], pb[l], got[l], w);
                    bits_diff[k]++;
                }
                if (!(isnan(g) && isnan(want[k])) && w != got[l]) class_diff[k]++;
            }
            lanes++;
        }
    }
    printf("%ld lanes (%ld NaN results, %ld below 2^-120 in magnitude)\n", lanes, nan_out,
           tiny_out);
    for (int k = 0; k < NCAND; k++)
        printf("  %-10s differs in %ld lanes' bits, %ld NaN-as-one-value\n", cand_name[k],
               bits_diff[k], class_diff[k]);
    return 0;
}
