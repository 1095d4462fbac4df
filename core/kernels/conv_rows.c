/* The convolutions' row copies over the vector layer: im2col and col2im
 * rows, the direct path's output rows, and the stride-2 phase splits.
 * Rows are 7 to 28 floats on the reference models, which plain loops copy
 * mostly one at a time.  Same values, same order of additions as the
 * portable loops in core/ops/conv2d.c. */
#include "kset.h"
#include "vec.h"

/* The first n lanes (n <= FM_VL) of dst = src (+ dst with `add`, + *bias). */
FM_VEC_INLINE void row_copy_vec(float *dst, const float *src, bool add, const float *bias, int n)
{
    fm_vf v = fm_vf_loadn(src, n);
    if (add) v = fm_vf_add(fm_vf_loadn(dst, n), v);
    if (bias) v = fm_vf_add(v, fm_vf_set1(*bias));
    fm_vf_storen(dst, v, n);
}

void FM_K(row_copy)(float *dst, const float *src, int n, bool add, const float *bias)
{
    int x = 0;
    for (; x + FM_VL <= n; x += FM_VL) row_copy_vec(dst + x, src + x, add, bias, FM_VL);
    if (x < n) row_copy_vec(dst + x, src + x, add, bias, n - x);
}

/* dst[0..n) = src[0], src[2], ...: FM_VL outputs from two loads. */
void FM_K(row_stride2)(float *dst, const float *src, int n)
{
    for (int x = 0; x < n; x += FM_VL) {
        /* Outputs x.. read inputs 2x .. 2(n-1): in = 2(n-x) - 1 of them. */
        int in = 2 * (n - x) - 1;
        const float *s = src + 2 * x;
        fm_vf a = fm_vf_loadn(s, in), b = fm_vf_loadn(s + FM_VL, in - FM_VL);
        fm_vf_storen(dst + x, fm_vf_even(a, b), n - x);
    }
}

/* even[0..) = src[0], src[2], ...; odd[0..) = src[1], src[3], ...: a row of
 * n pixels split into its two phases, 2 * FM_VL pixels per two loads. */
void FM_K(row_unweave2)(float *even, float *odd, const float *src, int n)
{
    for (int x = 0; x < n; x += 2 * FM_VL) {
        fm_vf a = fm_vf_loadn(src + x, n - x), b = fm_vf_loadn(src + x + FM_VL, n - x - FM_VL);
        fm_vf_storen(even + x / 2, fm_vf_even(a, b), (n - x + 1) / 2);
        fm_vf_storen(odd + x / 2, fm_vf_odd(a, b), (n - x) / 2);
    }
}

/* dst[0..n) += (or, with `store`, =) even[0], odd[0], even[1], odd[1], ...:
 * 2 * FM_VL outputs from two loads and two interleaves. */
void FM_K(row_weave2)(float *dst, const float *even, const float *odd, int n, bool store)
{
    for (int x = 0; x < n; x += 2 * FM_VL) {
        /* Outputs x.. take even[x/2 ..] ((n-x+1)/2 of them) and odd[x/2 ..]
         * ((n-x)/2). */
        fm_vf e = fm_vf_loadn(even + x / 2, (n - x + 1) / 2);
        fm_vf o = fm_vf_loadn(odd + x / 2, (n - x) / 2);
        fm_vf v[2] = {fm_vf_zip_lo(e, o), fm_vf_zip_hi(e, o)};
        for (int h = 0; h < 2; h++) {
            int left = n - x - FM_VL * h;
            if (left <= 0) break;
            float *d = dst + x + FM_VL * h;
            if (!store) v[h] = fm_vf_add(fm_vf_loadn(d, left), v[h]);
            fm_vf_storen(d, v[h], left);
        }
    }
}

/* dst[0], dst[2], ... (n of them) += src[0..n): FM_VL sources spread to the
 * even lanes of two vectors, the odd lanes left as they are. */
void FM_K(row_scatter2)(float *dst, const float *src, int n)
{
    for (int x = 0; x < n; x += FM_VL) {
        fm_vf v = fm_vf_loadn(src + x, n - x);
        fm_vf spread[2] = {fm_vf_zip_lo(v, v), fm_vf_zip_hi(v, v)};
        for (int h = 0; h < 2; h++) {
            /* dst[2x + VL*h ..]: 2(n - x) - 1 - VL*h of them left, even lanes only. */
            int left = 2 * (n - x) - 1 - FM_VL * h;
            if (left <= 0) break;
            fm_vm m = fm_vm_and(fm_vm_first(left), fm_vm_even());
            float *d = dst + 2 * x + FM_VL * h;
            fm_vf_store_m(d, fm_vf_add(fm_vf_load_m(d, m), spread[h]), m);
        }
    }
}
