/* vec_bf16.h — what the bf16 product (gemm_bf16.c) adds to the vector layer
 * (vec.h): rounding a vector of floats to bf16 packed operands, folding two
 * such vectors into bf16 pairs, and moving a vector's upper half down.  The
 * same lane values on every set, as in vec.h; the rounding is integer
 * arithmetic on the bits, so MXCSR does not touch it. */
#ifndef FM_KERNELS_VEC_BF16_H
#define FM_KERNELS_VEC_BF16_H

#include "vec.h"

#if defined(__AVX512F__)

/* Lane by lane fm_bf16_operand (gemm_bf16.h): x rounded to the nearest
 * bf16, ties to even (0x7FFF plus the lowest kept bit added to the bits,
 * the low half cleared), a NaN as 0x7FC00000, a denormal result as a zero
 * of its sign. */
FM_VEC_INLINE fm_vf fm_vf_bf16_operand(fm_vf x)
{
    __m512i u = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
    r = _mm512_and_si512(r, _mm512_set1_epi32((int)0xFFFF0000u));
    __mmask16 denormal = _mm512_testn_epi32_mask(r, _mm512_set1_epi32(0x7F800000));
    r = _mm512_mask_and_epi32(r, denormal, r, _mm512_set1_epi32((int)0x80000000u));
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_castsi512_ps(_mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7FC00000)));
}

/* Lane l: the bf16 pair (even[l], odd[l]), even in the low half; both are
 * packed operands (low halves zero).  A float vector carrying integers. */
FM_VEC_INLINE fm_vf fm_vf_bf16_pairs(fm_vf even, fm_vf odd)
{
    __m512i e = _mm512_srli_epi32(_mm512_castps_si512(even), 16);
    return _mm512_castsi512_ps(_mm512_or_si512(e, _mm512_castps_si512(odd)));
}

/* Lanes FM_VL/2 .. FM_VL - 1 of v in lanes 0 .. FM_VL/2 - 1 (the rest:
 * anything). */
FM_VEC_INLINE fm_vf fm_vf_upper_half(fm_vf v) { return _mm512_shuffle_f32x4(v, v, 0xEE); }

#elif defined(__AVX2__) && defined(__FMA__)

FM_VEC_INLINE fm_vf fm_vf_bf16_operand(fm_vf x)
{
    __m256i u = _mm256_castps_si256(x);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
    r = _mm256_and_si256(r, _mm256_set1_epi32((int)0xFFFF0000u));
    __m256i denormal = _mm256_cmpeq_epi32(_mm256_and_si256(r, _mm256_set1_epi32(0x7F800000)),
                                          _mm256_setzero_si256());
    r = _mm256_andnot_si256(_mm256_and_si256(denormal, _mm256_set1_epi32(0x7FFFFFFF)), r);
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    return _mm256_castsi256_ps(_mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC00000), nan));
}

FM_VEC_INLINE fm_vf fm_vf_bf16_pairs(fm_vf even, fm_vf odd)
{
    __m256i e = _mm256_srli_epi32(_mm256_castps_si256(even), 16);
    return _mm256_castsi256_ps(_mm256_or_si256(e, _mm256_castps_si256(odd)));
}

FM_VEC_INLINE fm_vf fm_vf_upper_half(fm_vf v) { return _mm256_permute2f128_ps(v, v, 0x11); }

#endif

#endif /* FM_KERNELS_VEC_BF16_H */
