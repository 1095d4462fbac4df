/* Batch norm's reductions and the fused batch norm + add + relu over the
 * vector layer.
 *
 * The sums run in eight double lanes, lane l taking the elements q = l
 * (mod 8) of each run, with exactly the portable loop's operations in the
 * same order (widen, subtract, multiply, add; nothing fused): the sums are
 * bit-identical to core/ops/batchnorm.c's loops on every set.  Each
 * returns how many elements it took (whole groups of eight); the caller's
 * loop finishes the rest. */
#include "kset.h"
#include "vec.h"

int64_t FM_K(lane_sums)(double *lane, const float *a, int64_t n)
{
    fm_vd8 acc = fm_vd8_load(lane);
    int64_t q = 0;
    for (; q + 8 <= n; q += 8) acc = fm_vd8_add(acc, fm_vd8_widen(a + q));
    fm_vd8_store(lane, acc);
    return q;
}

int64_t FM_K(bn_sqdev)(double *lane, const float *a, int64_t n, double mean)
{
    fm_vd8 acc = fm_vd8_load(lane), mu = fm_vd8_set1(mean);
    int64_t q = 0;
    for (; q + 8 <= n; q += 8) {
        fm_vd8 d = fm_vd8_sub(fm_vd8_widen(a + q), mu);
        acc = fm_vd8_add(acc, fm_vd8_mul(d, d));
    }
    fm_vd8_store(lane, acc);
    return q;
}

/* dy and dy * (x - mean) sums; with a relu mask, dy is first masked to
 * where y > 0 (+0 elsewhere, as the portable loop's masking gives). */
int64_t FM_K(bn_dy)(double *l_dy, double *l_dyx, const float *dy, const uint16_t *mask,
                    const float *x, int64_t n, double mean)
{
    fm_vd8 acc = fm_vd8_load(l_dy), accx = fm_vd8_load(l_dyx), mu = fm_vd8_set1(mean);
    int64_t q = 0;
    for (; q + 8 <= n; q += 8) {
        fm_vd8 gd = fm_vd8_widen(dy + q);
        if (mask) gd = fm_vd8_keep((unsigned)(mask[q >> 4] >> (q & 15)) & 0xFFu, gd);
        acc = fm_vd8_add(acc, gd);
        fm_vd8 d = fm_vd8_sub(fm_vd8_widen(x + q), mu);
        accx = fm_vd8_add(accx, fm_vd8_mul(gd, d));
    }
    fm_vd8_store(l_dy, acc);
    fm_vd8_store(l_dyx, accx);
    return q;
}

/* The relu mask's bits for elements q .. q + FM_VL - 1 (q a multiple of
 * FM_VL): word q / 16, from bit q % 16. */
FM_VEC_INLINE unsigned relu_bits(const uint16_t *mask, int64_t q)
{
    return (unsigned)(mask[q >> 4] >> (q & 15)) & ((1u << FM_VL) - 1u);
}

/* The first n (<= FM_VL) elements of the fused forward, and their bits of
 * the mask: the portable loop's operations, lane by lane. */
FM_VEC_INLINE void relu_forward_vec(float *y, uint16_t *mask, int64_t q, const float *x,
                                    const float *r, fm_vf sc, fm_vf sh, int n)
{
    fm_vf t = fm_vf_add(fm_vf_mul(fm_vf_loadn(x, n), sc), sh);
    if (r) t = fm_vf_add(t, fm_vf_loadn(r, n));
    fm_vm pos = fm_vf_gt(t, fm_vf_zero());
    fm_vf_storen(y, fm_vf_keep(pos, t), n);
    if (!mask) return;
    unsigned bits = fm_vm_bits(n >= FM_VL ? pos : fm_vm_and(pos, fm_vm_first(n)));
    if (q % 16 == 0)
        mask[q >> 4] = (uint16_t)bits;
    else
        mask[q >> 4] |= (uint16_t)(bits << (q & 15));
}

void FM_K(bn_relu_plane)(float *y, uint16_t *mask, const float *x, const float *r, float sc,
                         float sh, int64_t s)
{
    const fm_vf vsc = fm_vf_set1(sc), vsh = fm_vf_set1(sh);
    int64_t q = 0;
    for (; q + FM_VL <= s; q += FM_VL)
        relu_forward_vec(y + q, mask, q, x + q, r ? r + q : NULL, vsc, vsh, FM_VL);
    if (q < s) relu_forward_vec(y + q, mask, q, x + q, r ? r + q : NULL, vsc, vsh, (int)(s - q));
}

/* The first n elements of the fused backward: g = dy masked by the relu;
 * dx as batch norm's backward with g for dy, dres += g (= g when fresh). */
FM_VEC_INLINE void relu_backward_vec(float *dx, float *dres, const float *x, const float *dy,
                                     unsigned bits, fm_vf a, fm_vf b, fm_vf mu, fm_vf d,
                                     bool affine_only, bool dx_store, bool dres_store, int n)
{
    fm_vf g = fm_vf_keep(fm_vm_from_bits(bits), fm_vf_loadn(dy, n));
    if (dx) {
        fm_vf v = fm_vf_mul(a, g);
        if (!affine_only)
            v = fm_vf_add(fm_vf_add(v, fm_vf_mul(b, fm_vf_sub(fm_vf_loadn(x, n), mu))), d);
        if (!dx_store) v = fm_vf_add(fm_vf_loadn(dx, n), v);
        fm_vf_storen(dx, v, n);
    }
    if (dres) fm_vf_storen(dres, dres_store ? g : fm_vf_add(fm_vf_loadn(dres, n), g), n);
}

void FM_K(bn_relu_backward)(float *dx, float *dres, const float *x, const float *dy,
                            const uint16_t *mask, float a, float b, float mu, float d, int64_t s,
                            bool dx_store, bool dres_store)
{
    const fm_vf va = fm_vf_set1(a), vb = fm_vf_set1(b), vmu = fm_vf_set1(mu), vd = fm_vf_set1(d);
    const bool affine_only = b == 0.0f && d == 0.0f;
    for (int64_t q = 0; q < s; q += FM_VL) {
        int n = s - q < FM_VL ? (int)(s - q) : FM_VL;
        relu_backward_vec(dx ? dx + q : NULL, dres ? dres + q : NULL, x + q, dy + q,
                          relu_bits(mask, q), va, vb, vmu, vd, affine_only, dx_store,
                          dres_store, n);
    }
}
