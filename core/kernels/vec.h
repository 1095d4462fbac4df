/* vec.h — the vector layer the kernels in core/kernels/ are written over.
 *
 * Each kernel source is compiled once per kernel set, with the set's flags
 * (-mavx512f -mfma, or -mavx2 -mfma; see CMakeLists.txt), and this header
 * maps one small vocabulary onto that set's registers: FM_VL float lanes per
 * vector, loads and stores of the first n lanes, arithmetic (never fused
 * unless the kernel says fma), comparisons into lane masks, the permutes the
 * kernels need (even/odd lanes of a pair, interleaving a pair, transposes),
 * and eight double-precision lanes for the sums that batch norm and the
 * bias gradients keep in double.  A kernel written over it does, lane for
 * lane, the same operations in the same order on every set: the sets differ
 * in how many lanes a step covers, never in the value of a lane.
 *
 * Kernels name their functions FM_K(name) (kset.h), which suffixes the set:
 * the copies of one source coexist in the library (fm_k_gemm_avx2,
 * fm_k_gemm_avx512) and kset.c collects them into the set's table. */
#ifndef FM_KERNELS_VEC_H
#define FM_KERNELS_VEC_H

#include <immintrin.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define FM_VEC_INLINE __attribute__((always_inline)) static inline

#if defined(__AVX512F__)

#define FM_VL 16
typedef __m512 fm_vf;    /* FM_VL floats */
typedef __m512i fm_vi;   /* FM_VL int32 */
typedef __mmask16 fm_vm; /* a lane mask */

FM_VEC_INLINE fm_vf fm_vf_zero(void) { return _mm512_setzero_ps(); }
FM_VEC_INLINE fm_vf fm_vf_set1(float x) { return _mm512_set1_ps(x); }
FM_VEC_INLINE fm_vf fm_vf_load(const float *p) { return _mm512_loadu_ps(p); }
FM_VEC_INLINE void fm_vf_store(float *p, fm_vf v) { _mm512_storeu_ps(p, v); }
FM_VEC_INLINE fm_vf fm_vf_add(fm_vf a, fm_vf b) { return _mm512_add_ps(a, b); }
FM_VEC_INLINE fm_vf fm_vf_sub(fm_vf a, fm_vf b) { return _mm512_sub_ps(a, b); }
FM_VEC_INLINE fm_vf fm_vf_mul(fm_vf a, fm_vf b) { return _mm512_mul_ps(a, b); }
/* a * b + c, rounded once. */
FM_VEC_INLINE fm_vf fm_vf_fma(fm_vf a, fm_vf b, fm_vf c) { return _mm512_fmadd_ps(a, b, c); }

/* The first n lanes (all for n >= FM_VL, none for n <= 0). */
FM_VEC_INLINE fm_vm fm_vm_first(int n)
{
    return n >= 16 ? (fm_vm)0xFFFF : n <= 0 ? (fm_vm)0 : (fm_vm)((1u << n) - 1u);
}
FM_VEC_INLINE fm_vm fm_vm_and(fm_vm a, fm_vm b) { return a & b; }
FM_VEC_INLINE fm_vm fm_vm_or(fm_vm a, fm_vm b) { return a | b; }
/* Bit l of the result is lane l; and back. */
FM_VEC_INLINE unsigned fm_vm_bits(fm_vm m) { return m; }
FM_VEC_INLINE fm_vm fm_vm_from_bits(unsigned bits) { return (fm_vm)bits; }
/* Lanes 0, 2, 4, ... */
FM_VEC_INLINE fm_vm fm_vm_even(void) { return (fm_vm)0x5555; }

FM_VEC_INLINE fm_vf fm_vf_load_m(const float *p, fm_vm m) { return _mm512_maskz_loadu_ps(m, p); }
FM_VEC_INLINE void fm_vf_store_m(float *p, fm_vf v, fm_vm m) { _mm512_mask_storeu_ps(p, m, v); }
/* a > b (ordered: false for NaN); a is NaN. */
FM_VEC_INLINE fm_vm fm_vf_gt(fm_vf a, fm_vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
FM_VEC_INLINE fm_vm fm_vf_isnan(fm_vf a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
/* m ? a : b, lane by lane; m ? a : +0. */
FM_VEC_INLINE fm_vf fm_vf_select(fm_vm m, fm_vf a, fm_vf b) { return _mm512_mask_mov_ps(b, m, a); }
FM_VEC_INLINE fm_vf fm_vf_keep(fm_vm m, fm_vf a) { return _mm512_maskz_mov_ps(m, a); }

FM_VEC_INLINE fm_vi fm_vi_set1(int32_t x) { return _mm512_set1_epi32(x); }
FM_VEC_INLINE fm_vi fm_vi_add(fm_vi a, fm_vi b) { return _mm512_add_epi32(a, b); }
FM_VEC_INLINE fm_vi fm_vi_select(fm_vm m, fm_vi a, fm_vi b) { return _mm512_mask_mov_epi32(b, m, a); }
/* 0, 1, 2, ... */
FM_VEC_INLINE fm_vi fm_vi_iota(void)
{
    return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}
FM_VEC_INLINE void fm_vi_store_m(int32_t *p, fm_vi v, fm_vm m) { _mm512_mask_storeu_epi32(p, m, v); }

/* Elements 0, 2, 4, ... and 1, 3, 5, ... of the 2 * FM_VL elements a, b. */
FM_VEC_INLINE fm_vf fm_vf_even(fm_vf a, fm_vf b)
{
    const __m512i idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(a, idx, b);
}
FM_VEC_INLINE fm_vf fm_vf_odd(fm_vf a, fm_vf b)
{
    const __m512i idx = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_permutex2var_ps(a, idx, b);
}
/* a0 b0 a1 b1 ...: its first FM_VL elements (zip_lo) and the next (zip_hi). */
FM_VEC_INLINE fm_vf fm_vf_zip_lo(fm_vf a, fm_vf b)
{
    const __m512i idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    return _mm512_permutex2var_ps(a, idx, b);
}
FM_VEC_INLINE fm_vf fm_vf_zip_hi(fm_vf a, fm_vf b)
{
    const __m512i idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    return _mm512_permutex2var_ps(a, idx, b);
}

/* Lanes 0 .. FM_VL/2 - 1 (h = 0) or the rest (h = 1) of v, stored at p. */
FM_VEC_INLINE void fm_vf_store_half(float *p, fm_vf v, int h)
{
    if (h == 0)
        _mm256_storeu_ps(p, _mm512_castps512_ps256(v));
    else
        _mm256_storeu_ps(p, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/* The first two rounds of a register transpose of n (8 or 16) rows: after
 * it, r[4g + j] holds rows 4g .. 4g+3 of column 4l + j in its 128-bit lane
 * l. */
FM_VEC_INLINE void fm_v512_transpose_lanes(__m512 *r, int n)
{
    __m512 t[16];
    for (int i = 0; i < n; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < n; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
}

/* r[i] <- column i of the FM_VL x FM_VL block whose rows are r[0..). */
FM_VEC_INLINE void fm_vf_transpose(fm_vf r[FM_VL])
{
    __m512 t[16];
    fm_v512_transpose_lanes(r, 16);
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; i++) {
            t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xDD);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    }
}

/* dst [FM_VL][FM_VL/2] <- the FM_VL/2 x FM_VL block at src (row stride ld),
 * transposed: half as many rows as lanes, as a packed GEMM tile of A. */
FM_VEC_INLINE void fm_vf_transpose_half(float *dst, const float *src, size_t ld)
{
    __m512 u[8];
    for (int i = 0; i < 8; i++) u[i] = _mm512_loadu_ps(src + i * ld);
    fm_v512_transpose_lanes(u, 8);
    for (int j = 0; j < 4; j++) {
        /* Lanes (l, l) of u[j] and u[4 + j] side by side: columns 4l + j. */
        __m512 lo = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44);
        __m512 hi = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xEE);
        lo = _mm512_shuffle_f32x4(lo, lo, 0xD8);
        hi = _mm512_shuffle_f32x4(hi, hi, 0xD8);
        fm_vf_store_half(dst + j * 8, lo, 0);
        fm_vf_store_half(dst + (4 + j) * 8, lo, 1);
        fm_vf_store_half(dst + (8 + j) * 8, hi, 0);
        fm_vf_store_half(dst + (12 + j) * 8, hi, 1);
    }
}

/* Eight double lanes. */
typedef __m512d fm_vd8;
FM_VEC_INLINE fm_vd8 fm_vd8_load(const double *p) { return _mm512_loadu_pd(p); }
FM_VEC_INLINE void fm_vd8_store(double *p, fm_vd8 v) { _mm512_storeu_pd(p, v); }
FM_VEC_INLINE fm_vd8 fm_vd8_set1(double x) { return _mm512_set1_pd(x); }
/* p[0..8) widened to double. */
FM_VEC_INLINE fm_vd8 fm_vd8_widen(const float *p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
FM_VEC_INLINE fm_vd8 fm_vd8_add(fm_vd8 a, fm_vd8 b) { return _mm512_add_pd(a, b); }
FM_VEC_INLINE fm_vd8 fm_vd8_sub(fm_vd8 a, fm_vd8 b) { return _mm512_sub_pd(a, b); }
FM_VEC_INLINE fm_vd8 fm_vd8_mul(fm_vd8 a, fm_vd8 b) { return _mm512_mul_pd(a, b); }
/* Lane l of v where bit l of bits is set, else +0. */
FM_VEC_INLINE fm_vd8 fm_vd8_keep(unsigned bits, fm_vd8 v) { return _mm512_maskz_mov_pd((__mmask8)bits, v); }

#elif defined(__AVX2__) && defined(__FMA__)

#define FM_VL 8
typedef __m256 fm_vf;
typedef __m256i fm_vi;
typedef __m256i fm_vm; /* a lane mask: all ones or all zeros per lane */

FM_VEC_INLINE fm_vf fm_vf_zero(void) { return _mm256_setzero_ps(); }
FM_VEC_INLINE fm_vf fm_vf_set1(float x) { return _mm256_set1_ps(x); }
FM_VEC_INLINE fm_vf fm_vf_load(const float *p) { return _mm256_loadu_ps(p); }
FM_VEC_INLINE void fm_vf_store(float *p, fm_vf v) { _mm256_storeu_ps(p, v); }
FM_VEC_INLINE fm_vf fm_vf_add(fm_vf a, fm_vf b) { return _mm256_add_ps(a, b); }
FM_VEC_INLINE fm_vf fm_vf_sub(fm_vf a, fm_vf b) { return _mm256_sub_ps(a, b); }
FM_VEC_INLINE fm_vf fm_vf_mul(fm_vf a, fm_vf b) { return _mm256_mul_ps(a, b); }
FM_VEC_INLINE fm_vf fm_vf_fma(fm_vf a, fm_vf b, fm_vf c) { return _mm256_fmadd_ps(a, b, c); }

FM_VEC_INLINE fm_vi fm_vi_iota(void) { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
FM_VEC_INLINE fm_vm fm_vm_first(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), fm_vi_iota());
}
FM_VEC_INLINE fm_vm fm_vm_and(fm_vm a, fm_vm b) { return _mm256_and_si256(a, b); }
FM_VEC_INLINE fm_vm fm_vm_or(fm_vm a, fm_vm b) { return _mm256_or_si256(a, b); }
FM_VEC_INLINE unsigned fm_vm_bits(fm_vm m) { return (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(m)); }
FM_VEC_INLINE fm_vm fm_vm_from_bits(unsigned bits)
{
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    __m256i b = _mm256_and_si256(_mm256_set1_epi32((int)bits), lane_bit);
    return _mm256_cmpeq_epi32(b, lane_bit);
}
FM_VEC_INLINE fm_vm fm_vm_even(void) { return _mm256_setr_epi32(-1, 0, -1, 0, -1, 0, -1, 0); }

FM_VEC_INLINE fm_vf fm_vf_load_m(const float *p, fm_vm m) { return _mm256_maskload_ps(p, m); }
FM_VEC_INLINE void fm_vf_store_m(float *p, fm_vf v, fm_vm m) { _mm256_maskstore_ps(p, m, v); }
FM_VEC_INLINE fm_vm fm_vf_gt(fm_vf a, fm_vf b)
{
    return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_GT_OQ));
}
FM_VEC_INLINE fm_vm fm_vf_isnan(fm_vf a) { return _mm256_castps_si256(_mm256_cmp_ps(a, a, _CMP_UNORD_Q)); }
FM_VEC_INLINE fm_vf fm_vf_select(fm_vm m, fm_vf a, fm_vf b)
{
    return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(m));
}
FM_VEC_INLINE fm_vf fm_vf_keep(fm_vm m, fm_vf a) { return _mm256_and_ps(_mm256_castsi256_ps(m), a); }

FM_VEC_INLINE fm_vi fm_vi_set1(int32_t x) { return _mm256_set1_epi32(x); }
FM_VEC_INLINE fm_vi fm_vi_add(fm_vi a, fm_vi b) { return _mm256_add_epi32(a, b); }
FM_VEC_INLINE fm_vi fm_vi_select(fm_vm m, fm_vi a, fm_vi b) { return _mm256_blendv_epi8(b, a, m); }
FM_VEC_INLINE void fm_vi_store_m(int32_t *p, fm_vi v, fm_vm m) { _mm256_maskstore_epi32((int *)p, m, v); }

/* shuffle_ps takes the even (odd) elements of a and b within each 128-bit
 * half; the 64-bit permute puts a's two pairs before b's. */
FM_VEC_INLINE fm_vf fm_vf_even(fm_vf a, fm_vf b)
{
    __m256 t = _mm256_shuffle_ps(a, b, 0x88);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), 0xD8));
}
FM_VEC_INLINE fm_vf fm_vf_odd(fm_vf a, fm_vf b)
{
    __m256 t = _mm256_shuffle_ps(a, b, 0xDD);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), 0xD8));
}
FM_VEC_INLINE fm_vf fm_vf_zip_lo(fm_vf a, fm_vf b)
{
    return _mm256_permute2f128_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b), 0x20);
}
FM_VEC_INLINE fm_vf fm_vf_zip_hi(fm_vf a, fm_vf b)
{
    return _mm256_permute2f128_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b), 0x31);
}

FM_VEC_INLINE void fm_vf_store_half(float *p, fm_vf v, int h)
{
    _mm_storeu_ps(p, h == 0 ? _mm256_castps256_ps128(v) : _mm256_extractf128_ps(v, 1));
}

FM_VEC_INLINE void fm_vf_transpose(fm_vf r[FM_VL])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    /* u[j] and u[4 + j] hold columns j (low halves) and 4 + j (high). */
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}

FM_VEC_INLINE void fm_vf_transpose_half(float *dst, const float *src, size_t ld)
{
    __m256 r[4], t[4], u[4];
    for (int i = 0; i < 4; i++) r[i] = _mm256_loadu_ps(src + i * ld);
    t[0] = _mm256_unpacklo_ps(r[0], r[1]);
    t[1] = _mm256_unpackhi_ps(r[0], r[1]);
    t[2] = _mm256_unpacklo_ps(r[2], r[3]);
    t[3] = _mm256_unpackhi_ps(r[2], r[3]);
    /* u[j]: column j in its low half, column 4 + j in its high half. */
    u[0] = _mm256_shuffle_ps(t[0], t[2], 0x44);
    u[1] = _mm256_shuffle_ps(t[0], t[2], 0xEE);
    u[2] = _mm256_shuffle_ps(t[1], t[3], 0x44);
    u[3] = _mm256_shuffle_ps(t[1], t[3], 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u[0], u[1], 0x20));
    _mm256_storeu_ps(dst + 8, _mm256_permute2f128_ps(u[2], u[3], 0x20));
    _mm256_storeu_ps(dst + 16, _mm256_permute2f128_ps(u[0], u[1], 0x31));
    _mm256_storeu_ps(dst + 24, _mm256_permute2f128_ps(u[2], u[3], 0x31));
}

typedef struct fm_vd8 {
    __m256d lo, hi;
} fm_vd8;
FM_VEC_INLINE fm_vd8 fm_vd8_load(const double *p) { return (fm_vd8){_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4)}; }
FM_VEC_INLINE void fm_vd8_store(double *p, fm_vd8 v)
{
    _mm256_storeu_pd(p, v.lo);
    _mm256_storeu_pd(p + 4, v.hi);
}
FM_VEC_INLINE fm_vd8 fm_vd8_set1(double x) { return (fm_vd8){_mm256_set1_pd(x), _mm256_set1_pd(x)}; }
FM_VEC_INLINE fm_vd8 fm_vd8_widen(const float *p)
{
    return (fm_vd8){_mm256_cvtps_pd(_mm_loadu_ps(p)), _mm256_cvtps_pd(_mm_loadu_ps(p + 4))};
}
FM_VEC_INLINE fm_vd8 fm_vd8_add(fm_vd8 a, fm_vd8 b) { return (fm_vd8){_mm256_add_pd(a.lo, b.lo), _mm256_add_pd(a.hi, b.hi)}; }
FM_VEC_INLINE fm_vd8 fm_vd8_sub(fm_vd8 a, fm_vd8 b) { return (fm_vd8){_mm256_sub_pd(a.lo, b.lo), _mm256_sub_pd(a.hi, b.hi)}; }
FM_VEC_INLINE fm_vd8 fm_vd8_mul(fm_vd8 a, fm_vd8 b) { return (fm_vd8){_mm256_mul_pd(a.lo, b.lo), _mm256_mul_pd(a.hi, b.hi)}; }
FM_VEC_INLINE fm_vd8 fm_vd8_keep(unsigned bits, fm_vd8 v)
{
    const __m256i lane_bit = _mm256_setr_epi64x(1, 2, 4, 8);
    __m256i lo = _mm256_and_si256(_mm256_set1_epi64x(bits & 15u), lane_bit);
    __m256i hi = _mm256_and_si256(_mm256_set1_epi64x(bits >> 4 & 15u), lane_bit);
    return (fm_vd8){_mm256_and_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(lo, lane_bit)), v.lo),
                    _mm256_and_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(hi, lane_bit)), v.hi)};
}

#else
#error "core/kernels/vec.h: compile with -mavx512f -mfma or -mavx2 -mfma"
#endif

/* ---- built on the above, the same on every set -------------------------- */

/* The first n lanes at p (n >= FM_VL: a whole vector), zeros elsewhere;
 * and the store of the first n.  Whole vectors take plain loads and stores
 * (masked ones cost more on some processors); with n a constant after
 * inlining the test disappears. */
FM_VEC_INLINE fm_vf fm_vf_loadn(const float *p, int n)
{
    return n >= FM_VL ? fm_vf_load(p) : fm_vf_load_m(p, fm_vm_first(n));
}
FM_VEC_INLINE void fm_vf_storen(float *p, fm_vf v, int n)
{
    if (n >= FM_VL)
        fm_vf_store(p, v);
    else
        fm_vf_store_m(p, v, fm_vm_first(n));
}

/* Indices of a row's even elements, i0, i0 + 2, ... */
FM_VEC_INLINE fm_vi fm_vi_even_from(int32_t i0)
{
    fm_vi iota = fm_vi_iota();
    return fm_vi_add(fm_vi_set1(i0), fm_vi_add(iota, iota));
}

#endif /* FM_KERNELS_VEC_H */
