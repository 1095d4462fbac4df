/* gemm_tile.h — how a register tile's sums reach C, shared by the float
 * and the bf16 GEMM kernels (gemm.c, gemm_bf16.c), which include it after
 * defining their tile, MR rows by NV vectors, in the same vector layer. */
#ifndef FM_GEMM_TILE_H
#define FM_GEMM_TILE_H

/* How a tile's sums reach C: C = sums, C += sums, or C = alpha * sums +
 * beta * C (beta == 0 never reads C). */
enum { GEMM_STORE, GEMM_ADD, GEMM_SCALE };

FM_VEC_INLINE void gemm_tile_update(const int nv, const bool full, const int mode,
                                    fm_vf acc[MR][NV], float *c, int ldc, int rows, int cols,
                                    float alpha, float beta)
{
    const fm_vf va = fm_vf_set1(alpha), vb = fm_vf_set1(beta);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        if (r >= rows) break;
        float *cr = c + (size_t)r * ldc;
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++) {
            /* Whole vectors but the last of a ragged tile. */
            int n = full || v < nv - 1 ? FM_VL : cols - FM_VL * v;
            fm_vf x = acc[r][v];
            if (mode == GEMM_ADD) {
                x = fm_vf_add(x, fm_vf_loadn(cr + FM_VL * v, n));
            } else if (mode == GEMM_SCALE) {
                if (alpha != 1.0f) x = fm_vf_mul(va, x);
                if (beta == 1.0f)
                    x = fm_vf_add(x, fm_vf_loadn(cr + FM_VL * v, n));
                else if (beta != 0.0f)
                    x = fm_vf_fma(vb, fm_vf_loadn(cr + FM_VL * v, n), x);
            }
            fm_vf_storen(cr + FM_VL * v, x, n);
        }
    }
}

#endif /* FM_GEMM_TILE_H */
