/* gemm_bf16.h — the bf16 matrix product's kernels as the ops see them
 * (core/ops/gemm_bf16.c chooses among them).  Private to the core.
 *
 * C = alpha * op(A) op(B) + beta * C with A, B and C float in memory: the
 * operands are rounded to bfloat16 while they are packed, C is summed in
 * float32 exactly as AVX512_BF16's vdpbf16ps sums, whichever processor runs
 * it.  Measured on an AMD EPYC (Zen 4) against 128 million random lanes,
 * denormals, infinities and NaNs included (tools/dpbf16_probe.c), one
 * vdpbf16ps lane is
 *
 *     acc = fma(a0, b0, fma(a1, b1, acc))
 *
 * for a pair (a0, a1), (b0, b1) of bf16 (element 0 the low half of the
 * dword): the odd element first, each step one fused multiply-add (exact
 * here: a product of two bf16 fits in a float) rounded to nearest even, with
 * denormal inputs read as zero and denormal results flushed to zero — as
 * with MXCSR's DAZ and FTZ, tininess detected after rounding: an exact
 * 2^-126 - 2^-150 flushes to 0, although it rounds to 2^-126 with gradual
 * underflow.  The instruction ignores MXCSR.
 *
 * So every kernel here computes each element of C as that chain: k taken
 * FM_GEMM_BF16_KC at a time (even, so a pair never straddles two passes), the
 * pass's pairs accumulated from +0 in order, an odd k padded with a zero
 * element whose fma is done all the same; then, as the float GEMM does,
 * C = sums (alpha 1, beta 0), C = sums + C (alpha 1, beta 1), or
 * C = alpha * sums then + C (beta 1) or fma(beta, C, that) (other beta != 0),
 * the first pass with the caller's beta and later ones with beta 1.  All of
 * it runs with denormals flushed, the update of C included (C's denormals
 * read as zero): the vector copies under MXCSR DAZ|FTZ, set by the caller
 * for the call (core/ops/gemm_bf16.c), the portable one in software.  The
 * results of the vdpbf16ps copy, the vector emulations and the portable loop
 * are then bit-identical — but for NaNs: a NaN comes out where any set gives
 * one, its sign and payload depending on which NaN an instruction
 * propagates. */
#ifndef FM_KERNELS_GEMM_BF16_H
#define FM_KERNELS_GEMM_BF16_H

#include "kset.h"

#include <float.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Elements of k per pass (even). */
#define FM_GEMM_BF16_KC 256
/* Floats of packing workspace every set's bf16 product needs (64-byte
 * aligned): an A panel [128, KC] and a B panel [KC, 480] as floats. */
#define FM_GEMM_BF16_PACK_FLOATS ((size_t)FM_GEMM_BF16_KC * (128 + 480))

_Static_assert(FM_GEMM_BF16_KC % 2 == 0, "a pass holds whole pairs");

/* The bfloat16 nearest x, ties to even, as PyTorch rounds (c10's
 * round_to_nearest_even): the top half of x's bits after adding 0x7FFF plus
 * the lowest bit kept; any NaN becomes the quiet NaN 0x7FC0.  Denormals stay
 * (bf16 has them).  fm_bf16_from_f32 (core/base/half.c), inline here for
 * the packers' ragged edges. */
static inline uint16_t fm_bf16_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static inline float fm_bf16_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* x as a packed operand: rounded to bf16, a denormal read as a zero of its
 * sign (what DAZ does to it in the product anyway). */
static inline float fm_bf16_operand(float x)
{
    uint16_t h = fm_bf16_bits(x);
    if ((h & 0x7F80u) == 0) h &= 0x8000u;
    return fm_bf16_float(h);
}

/* One thread's product (m, n, k > 0; alpha and beta not denormal); pack:
 * FM_GEMM_BF16_PACK_FLOATS floats, 64-byte aligned.  a_packed, if not NULL,
 * is op(A) from the same copy's prepack.  B as the float kernel takes it
 * (kset.h): a matrix, a table of rows, or (not transposed) segments. */
typedef void fm_k_gemm_bf16_fn(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                               const float *a, int lda, const float *a_packed,
                               const fm_gemm_b *gb, float beta, float *c, int ldc, float *pack);
/* op(A) [m, k] packed whole into dst, pass by pass as the product packs it:
 * pass p0 at p0 * m_pad (m rounded up to whole tiles), its tile of rows i at
 * i * kce within it (kce: the pass's k rounded up to even). */
typedef void fm_k_gemm_bf16_prepack_fn(bool trans_a, int m, int k, const float *a, int lda,
                                       float *dst);

/* The avx2 and avx512 emulations (core/kernels/gemm_bf16.c in each vector
 * set) and the vdpbf16ps copy of the same source (built when the compiler
 * takes -mavx512bf16: FM_HAVE_BF16_KERNEL). */
fm_k_gemm_bf16_fn fm_k_gemm_bf16_avx2, fm_k_gemm_bf16_avx512, fm_k_gemm_bf16_avx512bf16;
fm_k_gemm_bf16_prepack_fn fm_k_gemm_bf16_prepack_avx2, fm_k_gemm_bf16_prepack_avx512,
    fm_k_gemm_bf16_prepack_avx512bf16;
/* The rows of each copy's tiles of op(A). */
extern const int fm_k_gemm_bf16_mr_avx2, fm_k_gemm_bf16_mr_avx512, fm_k_gemm_bf16_mr_avx512bf16;

/* Floats a prepacked op(A) [m, k] takes with tiles of mr rows: each pass's
 * tiles [kc rounded up to even][mr] (the vdpbf16ps copy fills the first half
 * of each tile with pairs); the portable set's rows (mr 1). */
static inline size_t fm_gemm_bf16_prepacked_size(int m, int k, int mr)
{
    return (size_t)(m + mr - 1) / (size_t)mr * (size_t)mr * (size_t)(k + (k & 1));
}

#endif /* FM_KERNELS_GEMM_BF16_H */
