/* 2x2 max pooling, one output row at a time, over the vector layer. */
#include "kset.h"
#include "vec.h"

/* FM_VL outputs per step: the even and odd columns of both input rows are
 * split apart, then the portable loop's comparisons run as lane masks.  A
 * strict > keeps the first maximum in row-major order, and a NaN wins, as
 * in PyTorch. */
void FM_K(maxpool2_row)(const float *r0, const float *r1, int w, int ow, float *yr, int32_t *am,
                        int base, bool relu)
{
    const int offs[4] = {0, 1, w, w + 1};
    for (int ox = 0; ox < ow; ox += FM_VL) {
        int left = ow - ox;  /* outputs still to go */
        /* 2*left inputs from each row, in two halves of up to FM_VL. */
        const float *a = r0 + 2 * ox, *b = r1 + 2 * ox;
        fm_vf a_lo = fm_vf_loadn(a, 2 * left), a_hi = fm_vf_loadn(a + FM_VL, 2 * left - FM_VL);
        fm_vf b_lo = fm_vf_loadn(b, 2 * left), b_hi = fm_vf_loadn(b + FM_VL, 2 * left - FM_VL);
        fm_vf v[4] = {fm_vf_even(a_lo, a_hi), fm_vf_odd(a_lo, a_hi), fm_vf_even(b_lo, b_hi),
                      fm_vf_odd(b_lo, b_hi)};
        fm_vf best = v[0];
        fm_vi off = fm_vi_set1(0);
        for (int t = 1; t < 4; t++) {
            fm_vm win = fm_vm_or(fm_vf_gt(v[t], best), fm_vf_isnan(v[t]));
            best = fm_vf_select(win, v[t], best);
            off = fm_vi_select(win, fm_vi_set1(offs[t]), off);
        }
        if (relu) best = fm_vf_keep(fm_vf_gt(best, fm_vf_zero()), best);
        fm_vf_storen(yr + ox, best, left);
        /* Input column 2*(ox + lane): the even indices, plus the offset. */
        if (am) fm_vi_store_m(am + ox, fm_vi_add(fm_vi_even_from(base + 2 * ox), off), fm_vm_first(left));
    }
}
