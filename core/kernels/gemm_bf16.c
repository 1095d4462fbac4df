/* The bf16 product, C = alpha * op(A) op(B) + beta * C with the operands
 * rounded to bfloat16 and C summed in float32 as vdpbf16ps sums (what that
 * is: gemm_bf16.h), one thread's share; written over the vector layer.
 *
 * Compiled in every vector set as an emulation of vdpbf16ps — per pair two
 * fused multiply-adds, the odd element first, under the DAZ|FTZ its caller
 * sets — and once more with FM_GEMM_BF16_DPBF16 and AVX512_BF16's flags as
 * the copy that runs vdpbf16ps itself (fmk_avx512bf16 in CMakeLists.txt),
 * for the avx512 set on processors that have it.
 *
 * The blocking is the float GEMM's (gemm.c): panels of op(A) [MC, KC] and
 * op(B) [KC, NC] in the caller's workspace, MR x NR register tiles (8 x 48
 * with AVX-512, 4 x 24 with AVX2) summing one pass of KC.  Both operands are
 * always packed, since packing is where they are rounded.  A panel is first
 * packed as floats, one row per index of k (rows of op(B), tiles' rows of
 * op(A)), rounded to bf16 and zero past the matrix and past an odd k: what
 * the emulation reads, the row of a pair's odd elements and then its even
 * one.  The vdpbf16ps copy then folds each two rows into one row of bf16
 * pairs, in place.  Every element of C is the same chain of operations
 * whatever its position, so the result depends on the shapes only. */
#include "kset.h"
#include "vec.h"
#include "vec_bf16.h"
#include "gemm_bf16.h"

#include "fm/fm_base.h"

#define MR (FM_VL / 2)
#define NV 3
#define NR (NV * FM_VL)
#define KC FM_GEMM_BF16_KC
#define MC 128
#define NC 480

_Static_assert(MC % MR == 0 && NC % NR == 0, "panels hold whole tiles");
_Static_assert(FM_GEMM_BF16_PACK_FLOATS >= (size_t)KC * (MC + NC), "pack workspace too small");

#if defined(FM_GEMM_BF16_DPBF16) && FM_VL != 16
#error "the vdpbf16ps copy is an AVX-512 one"
#endif

/* Rows 2q and 2q + 1 of a tile of op(A) [kce][MR], packed as floats, folded
 * into row q of MR pairs.  In place: row q is written once rows 2q and 2q + 1
 * are read, and lies below every row still to be read. */
static inline void bf16_fold_a(float *t, int kce)
{
#ifdef FM_GEMM_BF16_DPBF16
    for (int q = 0; q < kce / 2; q++) {
        fm_vf rows = fm_vf_load(t + (size_t)2 * q * MR);  /* rows 2q, 2q + 1 */
        fm_vf_store_half(t + (size_t)q * MR, fm_vf_bf16_pairs(rows, fm_vf_upper_half(rows)), 0);
    }
#else
    (void)t, (void)kce;
#endif
}

/* The same for a panel of op(B) [kce][NR], of which the first w columns (a
 * whole number of vectors) were written. */
static inline void bf16_fold_b(float *t, int kce, int w)
{
#ifdef FM_GEMM_BF16_DPBF16
    for (int q = 0; q < kce / 2; q++)
        for (int j = 0; j < w; j += FM_VL) {
            fm_vf even = fm_vf_load(t + (size_t)2 * q * NR + j);
            fm_vf odd = fm_vf_load(t + (size_t)(2 * q + 1) * NR + j);
            fm_vf_store(t + (size_t)q * NR + j, fm_vf_bf16_pairs(even, odd));
        }
#else
    (void)t, (void)kce, (void)w;
#endif
}

/* dst [mc/MR tiles][kce][MR] <- op(A)[i0.., p0..] as packed operands, rows
 * past mc and the row past an odd kc zero (kce: kc rounded up to even). */
static void bf16_pack_a(float *dst, const float *a, int lda, bool trans, int i0, int mc, int p0,
                        int kc)
{
    const int kce = kc + (kc & 1);
    for (int ir = 0; ir < mc; ir += MR, dst += (size_t)kce * MR) {
        int rows = mc - ir < MR ? mc - ir : MR, p = 0;
        if (trans) {
            /* op(A)(i, p) = a[p*lda + i]: a tile's row p is contiguous. */
            for (; p < kc; p++) {
                fm_vf x = fm_vf_loadn(a + (size_t)(p0 + p) * lda + i0 + ir, rows);
                fm_vf_store_half(dst + (size_t)p * MR, fm_vf_bf16_operand(x), 0);
            }
        } else if (rows == MR) {
            const float *src = a + (size_t)(i0 + ir) * lda + p0;
            for (; p + FM_VL <= kc; p += FM_VL) {
                /* FM_VL rows of the tile, MR vectors, transposed then rounded. */
                float *d = dst + (size_t)p * MR;
                fm_vf_transpose_half(d, src + p, (size_t)lda);
                for (int v = 0; v < MR; v++)
                    fm_vf_store(d + FM_VL * v, fm_vf_bf16_operand(fm_vf_load(d + FM_VL * v)));
            }
            for (; p < kc; p++)
                for (int r = 0; r < MR; r++)
                    dst[(size_t)p * MR + r] = fm_bf16_operand(src[(size_t)r * lda + p]);
        } else {
            const float *src = a + (size_t)(i0 + ir) * lda + p0;
            for (; p < kc; p++)
                for (int r = 0; r < MR; r++)
                    dst[(size_t)p * MR + r] = r < rows ? fm_bf16_operand(src[(size_t)r * lda + p]) : 0.0f;
        }
        for (; p < kce; p++)
            for (int r = 0; r < MR; r++) dst[(size_t)p * MR + r] = 0.0f;
        bf16_fold_a(dst, kce);
    }
}

/* Element (p, j) of op(B) for a plain B: row p of B, or of the row table,
 * at column j; a segmented B's column j lies in segment j / seg, followed
 * in memory by the rest of that segment's row only. */
static inline const float *bf16_b_plain(const fm_gemm_b *gb, int p, int j)
{
    if (gb->segs) return gb->segs[j / gb->seg] + (size_t)p * gb->ldb + j % gb->seg;
    return (gb->rows ? gb->rows[p] : gb->b + (size_t)p * gb->ldb) + j;
}

/* Stored row j of a transposed B, whose element p is op(B)(p, j). */
static inline const float *bf16_b_row(const fm_gemm_b *gb, int j)
{
    return gb->rows ? gb->rows[j] : gb->b + (size_t)j * gb->ldb;
}

/* dst [nc/NR panels][kce][NR] <- op(B)[p0.., j0..] as packed operands, the
 * row past an odd kc zero.  The last panel is written up to a whole vector
 * past nc, with zeros (the tiles load whole vectors), and no further. */
static void bf16_pack_b(float *dst, const fm_gemm_b *gb, bool trans, int p0, int kc, int j0,
                        int nc)
{
    const int kce = kc + (kc & 1);
    for (int jr = 0; jr < nc; jr += NR, dst += (size_t)kce * NR) {
        int cols = nc - jr < NR ? nc - jr : NR, w = (cols + FM_VL - 1) / FM_VL * FM_VL;
        if (!trans) {
            for (int p = 0; p < kc; p++)
                for (int j = 0; j < cols; j += FM_VL) {
                    int col = j0 + jr + j, len = cols - j < FM_VL ? cols - j : FM_VL;
                    const float *src = bf16_b_plain(gb, p0 + p, col);
                    float gather[FM_VL];
                    if (gb->segs && col % gb->seg + len > gb->seg) {
                        /* The vector straddles segments. */
                        for (int e = 0; e < len; e++) gather[e] = *bf16_b_plain(gb, p0 + p, col + e);
                        src = gather;
                    }
                    fm_vf_store(dst + (size_t)p * NR + j,
                                fm_vf_bf16_operand(fm_vf_loadn(src, len)));
                }
        } else {
            /* FM_VL x FM_VL blocks transposed in registers, the ragged rest
             * one element at a time. */
            int jv = cols / FM_VL * FM_VL, pv = kc / FM_VL * FM_VL;
            for (int j = 0; j < jv; j += FM_VL)
                for (int p = 0; p < pv; p += FM_VL) {
                    fm_vf r[FM_VL];
                    for (int i = 0; i < FM_VL; i++)
                        r[i] = fm_vf_load(bf16_b_row(gb, j0 + jr + j + i) + p0 + p);
                    fm_vf_transpose(r);
                    for (int i = 0; i < FM_VL; i++)
                        fm_vf_store(dst + (size_t)(p + i) * NR + j, fm_vf_bf16_operand(r[i]));
                }
            for (int j = 0; j < w; j++) {
                float *d = dst + j;
                if (j >= cols) {
                    for (int p = 0; p < kc; p++) d[(size_t)p * NR] = 0.0f;
                    continue;
                }
                const float *src = bf16_b_row(gb, j0 + jr + j) + p0;
                for (int p = j < jv ? pv : 0; p < kc; p++) d[(size_t)p * NR] = fm_bf16_operand(src[p]);
            }
        }
        if (kc < kce)
            for (int j = 0; j < w; j++) dst[(size_t)kc * NR + j] = 0.0f;
        bf16_fold_b(dst, kce, w);
    }
}

#include "gemm_tile.h"

/* C[rows, cols] (rows <= MR, cols <= nv vectors) = alpha * sums + beta * C,
 * the sums over the kce rows of a packed tile ap and panel bp (whole
 * vectors, zero past cols).  `full`: cols == nv vectors. */
FM_VEC_INLINE void bf16_tile_nv(const int nv, const bool full, int kce, const float *ap,
                                const float *bp, float *c, int ldc, int rows, int cols,
                                float alpha, float beta)
{
    fm_vf acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++) acc[r][v] = fm_vf_zero();
#ifdef FM_GEMM_BF16_DPBF16
    /* Row q of a folded panel: the pairs of k = 2q, 2q + 1. */
    for (int q = 0; q < kce / 2; q++, ap += MR, bp += NR) {
        __m512bh bv[NV];
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++) bv[v] = (__m512bh)fm_vf_load(bp + FM_VL * v);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            __m512bh a = (__m512bh)fm_vf_set1(ap[r]);
#pragma GCC unroll 3
            for (int v = 0; v < nv; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, bv[v]);
        }
    }
#else
    for (int p = 0; p < kce; p += 2, ap += 2 * MR, bp += 2 * NR) {
        /* The pair's odd element first, as vdpbf16ps. */
#pragma GCC unroll 2
        for (int e = 1; e >= 0; e--) {
            fm_vf bv[NV];
#pragma GCC unroll 3
            for (int v = 0; v < nv; v++) bv[v] = fm_vf_load(bp + (size_t)e * NR + FM_VL * v);
#pragma GCC unroll 8
            for (int r = 0; r < MR; r++) {
                fm_vf a = fm_vf_set1(ap[e * MR + r]);
#pragma GCC unroll 3
                for (int v = 0; v < nv; v++) acc[r][v] = fm_vf_fma(a, bv[v], acc[r][v]);
            }
        }
    }
#endif
    if (alpha == 1.0f && beta == 0.0f)
        gemm_tile_update(nv, full, GEMM_STORE, acc, c, ldc, rows, cols, alpha, beta);
    else if (alpha == 1.0f && beta == 1.0f)
        gemm_tile_update(nv, full, GEMM_ADD, acc, c, ldc, rows, cols, alpha, beta);
    else
        gemm_tile_update(nv, full, GEMM_SCALE, acc, c, ldc, rows, cols, alpha, beta);
}

typedef void (*bf16_tile_fn)(int kce, const float *ap, const float *bp, float *c, int ldc,
                             int rows, int cols, float alpha, float beta);

#define BF16_TILE_COPY(NVEC, FULL, NAME)                                                     \
    static void NAME(int kce, const float *ap, const float *bp, float *c, int ldc, int rows, \
                     int cols, float alpha, float beta)                                      \
    {                                                                                        \
        bf16_tile_nv(NVEC, FULL, kce, ap, bp, c, ldc, rows, cols, alpha, beta);              \
    }
BF16_TILE_COPY(1, true, bf16_tile1)
BF16_TILE_COPY(2, true, bf16_tile2)
BF16_TILE_COPY(3, true, bf16_tile3)
BF16_TILE_COPY(1, false, bf16_tile1r)
BF16_TILE_COPY(2, false, bf16_tile2r)
BF16_TILE_COPY(3, false, bf16_tile3r)

/* By vectors, then ragged (1) or whole (0). */
static const bf16_tile_fn bf16_tiles[NV + 1][2] = {
    {NULL, NULL}, {bf16_tile1, bf16_tile1r}, {bf16_tile2, bf16_tile2r}, {bf16_tile3, bf16_tile3r}};

/* The rows of this copy's tiles of op(A), for the size of a prepacked A. */
const int FM_K(gemm_bf16_mr) = MR;

/* pack: the A panel, then the B panel.  A prepacked op(A) holds each pass
 * p0 at p0 * m_pad, its tile of rows i at i * kce within it. */
void FM_K(gemm_bf16)(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                     const float *a, int lda, const float *a_packed, const fm_gemm_b *gb,
                     float beta, float *c, int ldc, float *pack)
{
    FM_ASSERT(m > 0 && n > 0 && k > 0);
    FM_ASSERT(pack && ((uintptr_t)pack & 63) == 0);
    const size_t m_pad = (size_t)(m + MR - 1) / MR * MR;
    float *apack = pack, *bpack = apack + (size_t)MC * KC;
    for (int p0 = 0; p0 < k; p0 += KC) {
        int kc = k - p0 < KC ? k - p0 : KC, kce = kc + (kc & 1);
        /* The first pass over k applies the caller's beta; later ones add. */
        float pass_beta = p0 == 0 ? beta : 1.0f;
        for (int j0 = 0; j0 < n; j0 += NC) {
            int nc = n - j0 < NC ? n - j0 : NC;
            bf16_pack_b(bpack, gb, trans_b, p0, kc, j0, nc);
            for (int i0 = 0; i0 < m; i0 += MC) {
                int mc = m - i0 < MC ? m - i0 : MC;
                const float *ap = apack;
                if (a_packed)
                    ap = a_packed + (size_t)p0 * m_pad + (size_t)i0 * kce;
                else if (j0 == 0 || m > MC)  /* one row block: packed at j0 = 0 */
                    bf16_pack_a(apack, a, lda, trans_a, i0, mc, p0, kc);
                for (int jr = 0; jr < nc; jr += NR) {
                    int cols = nc - jr < NR ? nc - jr : NR;
                    int nv = (cols + FM_VL - 1) / FM_VL;
                    bf16_tile_fn tile = bf16_tiles[nv][cols != nv * FM_VL];
                    for (int ir = 0; ir < mc; ir += MR) {
                        int rows = mc - ir < MR ? mc - ir : MR;
                        tile(kce, ap + (size_t)ir * kce, bpack + (size_t)jr * kce,
                             c + (size_t)(i0 + ir) * ldc + j0 + jr, ldc, rows, cols, alpha,
                             pass_beta);
                    }
                }
            }
        }
    }
}

void FM_K(gemm_bf16_prepack)(bool trans_a, int m, int k, const float *a, int lda, float *dst)
{
    const size_t m_pad = (size_t)(m + MR - 1) / MR * MR;
    for (int p0 = 0; p0 < k; p0 += KC) {
        int kc = k - p0 < KC ? k - p0 : KC;
        bf16_pack_a(dst + (size_t)p0 * m_pad, a, lda, trans_a, 0, m, p0, kc);
    }
}
