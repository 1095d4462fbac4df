/* fmhost's own SGEMM, C = alpha * op(A) op(B) + beta * C, row-major, one
 * thread's share; written over the vector layer, compiled per vector set.
 *
 * It exists because the OpenBLAS kernels chosen on a machine may be older
 * ones than the processor could run (OPENBLAS_CORETYPE can pin them, as it
 * does where some OpenBLAS builds misbehave), and because OpenBLAS does not
 * promise what the convolutions rely on: that an element of C gets the same
 * bits wherever it lies in the product.
 *
 * The classic three-level blocking: panels of op(A) [MC, KC] and, when B is
 * transposed, of op(B) [KC, NC] are packed into the caller's workspace (a
 * plain B is read in place), and an MR x NR register tile of C accumulates
 * KC products per pass: MR = FM_VL/2 rows of three vectors, 8 x 48 with
 * AVX-512's 32 registers, 4 x 24 with AVX2's 16 (12 accumulators, three of
 * B and one broadcast of A).  Every element of C is summed over k in the
 * same order, one fused multiply-add per step, KC at a time, whatever its
 * position in C and whatever the set: the result depends on the shapes
 * only, so callers that split C between threads stay bit-identical for any
 * thread count, and the AVX2 and AVX-512 copies agree bit for bit. */
#include "kset.h"
#include "vec.h"

#include "fm/fm_base.h"
#include "fm/fm_dist.h"

#define MR (FM_VL / 2)
#define NV 3
#define NR (NV * FM_VL)
#define KC FM_GEMM_KC
#define MC 128
#define NC 480

_Static_assert(MC % MR == 0 && NC % NR == 0, "panels hold whole tiles");
_Static_assert(FM_GEMM_OWN_PACK_FLOATS * sizeof(float) >=
                   KC * (MC + NC) * sizeof(float) + KC * sizeof(float *),
               "pack workspace too small");

static inline const float *gemm_b_row(const fm_gemm_b *gb, int r)
{
    return gb->rows ? gb->rows[r] : gb->b + (size_t)r * gb->ldb;
}

/* dst [mc/MR tiles][kc][MR] <- op(A)[i0.., p0..], rows past mc zero. */
static void gemm_pack_a(float *dst, const float *a, int lda, bool trans, int i0, int mc, int p0,
                        int kc)
{
    for (int ir = 0; ir < mc; ir += MR, dst += (size_t)kc * MR) {
        int rows = mc - ir < MR ? mc - ir : MR;
        if (!trans && rows == MR) {
            const float *src = a + (size_t)(i0 + ir) * lda + p0;
            int p = 0;
            for (; p + FM_VL <= kc; p += FM_VL)
                fm_vf_transpose_half(dst + (size_t)p * MR, src + p, (size_t)lda);
            for (; p < kc; p++)
                for (int r = 0; r < MR; r++) dst[(size_t)p * MR + r] = src[(size_t)r * lda + p];
        } else if (trans) {
            /* op(A)(i, p) = a[p*lda + i]: a tile's column is contiguous. */
            for (int p = 0; p < kc; p++) {
                const float *src = a + (size_t)(p0 + p) * lda + i0 + ir;
                float *d = dst + (size_t)p * MR;
                int r = 0;
                for (; r < rows; r++) d[r] = src[r];
                for (; r < MR; r++) d[r] = 0.0f;
            }
        } else {
            for (int r = 0; r < MR; r++) {
                float *d = dst + r;
                if (r >= rows) {
                    for (int p = 0; p < kc; p++) d[(size_t)p * MR] = 0.0f;
                    continue;
                }
                const float *src = a + (size_t)(i0 + ir + r) * lda + p0;
                for (int p = 0; p < kc; p++) d[(size_t)p * MR] = src[p];
            }
        }
    }
}

/* dst[i*ldd + j] = element col0 + i of stored row row0 + j of B, for an
 * FM_VL x FM_VL block transposed in registers. */
static void gemm_transpose_block(const fm_gemm_b *gb, int row0, int col0, float *dst, size_t ldd)
{
    fm_vf r[FM_VL];
    for (int i = 0; i < FM_VL; i++) r[i] = fm_vf_load(gemm_b_row(gb, row0 + i) + col0);
    fm_vf_transpose(r);
    for (int i = 0; i < FM_VL; i++) fm_vf_store(dst + (size_t)i * ldd, r[i]);
}

/* dst [nc/NR panels][kc][NR] <- op(B)[p0.., j0..] for a transposed B,
 * op(B)(p, j) = element p of stored row j: whole blocks go through
 * registers, the ragged rest one element at a time.  Columns of the last
 * panel past nc are left as they are: the tiles never read them. */
static void gemm_pack_bt(float *dst, const fm_gemm_b *gb, int p0, int kc, int j0, int nc)
{
    for (int jr = 0; jr < nc; jr += NR, dst += (size_t)kc * NR) {
        int cols = nc - jr < NR ? nc - jr : NR;
        int jv = cols / FM_VL * FM_VL, pv = kc / FM_VL * FM_VL;
        for (int j = 0; j < jv; j += FM_VL)
            for (int p = 0; p < pv; p += FM_VL)
                gemm_transpose_block(gb, j0 + jr + j, p0 + p, dst + (size_t)p * NR + j, NR);
        for (int j = 0; j < cols; j++) {
            float *d = dst + j;
            const float *src = gemm_b_row(gb, j0 + jr + j) + p0;
            for (int p = j < jv ? pv : 0; p < kc; p++) d[(size_t)p * NR] = src[p];
        }
    }
}

#include "gemm_tile.h"

/* C[rows, cols] (rows <= MR, cols <= nv vectors) = alpha * Ap B + beta * C
 * over kc steps: Ap packed, row p of B at brow[p] + boff (in a packed panel
 * or in B itself), only its first `cols` columns read.  beta == 0 never
 * reads C.  nv and `full` (cols == nv vectors: no masked load in the loop)
 * are constants in each copy below. */
FM_VEC_INLINE void gemm_tile_nv(const int nv, const bool full, int kc, const float *ap,
                                const float *const *brow, size_t boff, float *c, int ldc,
                                int rows, int cols, float alpha, float beta)
{
    const fm_vm last = fm_vm_first(cols - (nv - 1) * FM_VL);
    /* Every index into acc is a constant after unrolling, so it lives in
     * registers (a variable index would put it on the stack). */
    fm_vf acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++) acc[r][v] = fm_vf_zero();
    for (int p = 0; p < kc; p++, ap += MR) {
        const float *bp = brow[p] + boff;
        fm_vf bv[NV];
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++)
            bv[v] = full || v < nv - 1 ? fm_vf_load(bp + FM_VL * v) : fm_vf_load_m(bp + FM_VL * v, last);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            fm_vf a = fm_vf_set1(ap[r]);
#pragma GCC unroll 3
            for (int v = 0; v < nv; v++) acc[r][v] = fm_vf_fma(a, bv[v], acc[r][v]);
        }
    }
    /* The common updates of C get loops of their own: a branch per tile
     * rather than per vector. */
    if (alpha == 1.0f && beta == 0.0f)
        gemm_tile_update(nv, full, GEMM_STORE, acc, c, ldc, rows, cols, alpha, beta);
    else if (alpha == 1.0f && beta == 1.0f)
        gemm_tile_update(nv, full, GEMM_ADD, acc, c, ldc, rows, cols, alpha, beta);
    else
        gemm_tile_update(nv, full, GEMM_SCALE, acc, c, ldc, rows, cols, alpha, beta);
}

typedef void (*gemm_tile_fn)(int kc, const float *ap, const float *const *brow, size_t boff,
                             float *c, int ldc, int rows, int cols, float alpha, float beta);

#define GEMM_TILE_COPY(NVEC, FULL, NAME)                                                    \
    static void NAME(int kc, const float *ap, const float *const *brow, size_t boff, float *c, \
                     int ldc, int rows, int cols, float alpha, float beta)                 \
    {                                                                                       \
        gemm_tile_nv(NVEC, FULL, kc, ap, brow, boff, c, ldc, rows, cols, alpha, beta);      \
    }
GEMM_TILE_COPY(1, true, gemm_tile1)
GEMM_TILE_COPY(2, true, gemm_tile2)
GEMM_TILE_COPY(3, true, gemm_tile3)
GEMM_TILE_COPY(1, false, gemm_tile1r)
GEMM_TILE_COPY(2, false, gemm_tile2r)
GEMM_TILE_COPY(3, false, gemm_tile3r)

/* By vectors, then ragged (1) or whole (0). */
static const gemm_tile_fn gemm_tiles[NV + 1][2] = {
    {NULL, NULL}, {gemm_tile1, gemm_tile1r}, {gemm_tile2, gemm_tile2r}, {gemm_tile3, gemm_tile3r}};

/* m, n, k > 0 (the caller handles empty products).  pack: the A panel, the
 * B panel, then a table of KC row pointers into B. */
void FM_K(gemm)(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
                int lda, const float *a_packed, const fm_gemm_b *gb, float beta, float *c,
                int ldc, float *pack)
{
    FM_ASSERT(m > 0 && n > 0 && k > 0);
    const size_t m_pad = (size_t)(m + MR - 1) / MR * MR;
    FM_ASSERT(pack && ((uintptr_t)pack & 63) == 0);
    float *apack = pack, *bpack = apack + (size_t)MC * KC;
    const float **brow = (const float **)(bpack + (size_t)KC * NC);
    /* Only a transposed B is packed.  A plain one is read in place: its rows
     * are contiguous, and on the products here (m <= a few hundred, so few
     * row tiles share a panel) packing cost more than the strided reads it
     * would save — measured equal or slower on every conv and linear shape
     * of the reference models.  Then nothing depends on the width of a
     * block of columns, and A is packed once per pass over k. */
    const bool pack_b = trans_b;
    /* Column blocks: packing panels, or B's segments, or all of B. */
    const int nc_max = pack_b ? NC : gb->segs ? gb->seg : n;
    for (int p0 = 0; p0 < k; p0 += KC) {
        int kc = k - p0 < KC ? k - p0 : KC;
        /* The first pass over k applies the caller's beta; later ones add. */
        float pass_beta = p0 == 0 ? beta : 1.0f;
        for (int j0 = 0; j0 < n; j0 += nc_max) {
            int nc = n - j0 < nc_max ? n - j0 : nc_max;
            if (pack_b) {
                gemm_pack_bt(bpack, gb, p0, kc, j0, nc);
                for (int p = 0; p < kc; p++) brow[p] = bpack + (size_t)p * NR;
            } else if (gb->segs) {
                const float *seg = gb->segs[j0 / gb->seg] + (size_t)p0 * gb->ldb;
                for (int p = 0; p < kc; p++) brow[p] = seg + (size_t)p * gb->ldb;
            } else {
                for (int p = 0; p < kc; p++) brow[p] = gemm_b_row(gb, p0 + p) + j0;
            }
            for (int i0 = 0; i0 < m; i0 += MC) {
                int mc = m - i0 < MC ? m - i0 : MC;
                const float *ap = apack;
                if (a_packed)
                    ap = a_packed + (size_t)p0 * m_pad + (size_t)i0 * kc;
                else if (j0 == 0 || m > MC)  /* one row block: packed at j0 = 0 */
                    gemm_pack_a(apack, a, lda, trans_a, i0, mc, p0, kc);
                for (int jr = 0, cols; jr < nc; jr += cols) {
                    /* Four vectors' worth of columns as two tiles of two
                     * rather than three and one, whose loads would weigh
                     * as much as its arithmetic (packed panels are NR wide:
                     * not there). */
                    cols = !pack_b && nc - jr == 4 * FM_VL ? 2 * FM_VL : nc - jr < NR ? nc - jr : NR;
                    int nv = (cols + FM_VL - 1) / FM_VL;
                    gemm_tile_fn tile = gemm_tiles[nv][cols != nv * FM_VL];
                    size_t boff = pack_b ? (size_t)jr * kc : (size_t)jr;
                    for (int ir = 0; ir < mc; ir += MR) {
                        int rows = mc - ir < MR ? mc - ir : MR;
                        tile(kc, ap + (size_t)ir * kc, brow, boff,
                             c + (size_t)(i0 + ir) * ldc + j0 + jr, ldc, rows, cols, alpha,
                             pass_beta);
                    }
                }
            }
        }
    }
}

/* ---- a weight gradient's chunked product, summed in the chunks' tree ---- */

/* Node [lo, hi) of fm_chunk_sum's tree over the tile sums in part[lo..hi),
 * into part[lo]: left + right. */
static void tn_tree_node(float (*part)[MR * NR], int lo, int hi)
{
    if (hi - lo < 2) return;
    int mid = fm_chunk_tree_mid(lo, hi);
    tn_tree_node(part, lo, mid);
    tn_tree_node(part, mid, hi);
    for (int i = 0; i < MR * NR; i += FM_VL)
        fm_vf_store(part[lo] + i, fm_vf_add(fm_vf_load(part[lo] + i), fm_vf_load(part[mid] + i)));
}

/* One tile, rows [i, i + rows) (rows <= MR) and columns [j, j + cols) (cols
 * <= NR): each chunk's sum into part[c], the tree, then added to g.  `full`
 * (rows == MR) is a constant in each copy below. */
FM_VEC_INLINE void tn_tree_tile(const bool full, int k, int size, const float *a, int lda,
                                const float *b, int ldb, float *g, int ldg, int rows, int cols,
                                float (*part)[MR * NR])
{
    _Static_assert(NV == 3, "one mask per vector of the tile");
    const int nv = (cols + FM_VL - 1) / FM_VL;
    const fm_vm mask[NV] = {fm_vm_first(cols), fm_vm_first(cols - FM_VL),
                            fm_vm_first(cols - 2 * FM_VL)};
    int n_chunks = 0;
    for (int p0 = 0; p0 < k; p0 += size, n_chunks++) {
        int p1 = k - p0 < size ? k : p0 + size;
        fm_vf acc[MR][NV];
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) acc[r][v] = fm_vf_zero();
        for (int p = p0; p < p1; p++) {
            const float *ap = a + (size_t)p * lda, *bp = b + (size_t)p * ldb;
            fm_vf bv[NV];
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) bv[v] = fm_vf_load_m(bp + FM_VL * v, mask[v]);
#pragma GCC unroll 8
            for (int r = 0; r < MR; r++) {
                fm_vf av = full || r < rows ? fm_vf_set1(ap[r]) : fm_vf_zero();
#pragma GCC unroll 3
                for (int v = 0; v < NV; v++) acc[r][v] = fm_vf_fma(av, bv[v], acc[r][v]);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) fm_vf_store(part[n_chunks] + r * NR + FM_VL * v, acc[r][v]);
    }
    tn_tree_node(part, 0, n_chunks);
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < nv; v++) {
            float *gp = g + (size_t)r * ldg + FM_VL * v;
            fm_vf s = fm_vf_add(fm_vf_load_m(gp, mask[v]), fm_vf_load(part[0] + r * NR + FM_VL * v));
            fm_vf_store_m(gp, s, mask[v]);
        }
}

void FM_K(gemm_tn_tree)(int m, int n, int k, int size, const float *a, int lda, const float *b,
                        int ldb, float *g, int ldg, int j0, int j1)
{
    FM_ASSERT(size > 0 && size <= KC && (k + size - 1) / size <= FM_BATCH_CHUNKS);
    FM_ASSERT(0 <= j0 && j0 <= j1 && j1 <= n);
    _Alignas(64) float part[FM_BATCH_CHUNKS][MR * NR];
    for (int j = j0; j < j1; j += NR) {
        int cols = j1 - j < NR ? j1 - j : NR;
        for (int i = 0; i < m; i += MR) {
            const float *ai = a + i, *bj = b + j;
            float *gij = g + (size_t)i * ldg + j;
            if (m - i >= MR)
                tn_tree_tile(true, k, size, ai, lda, bj, ldb, gij, ldg, MR, cols, part);
            else
                tn_tree_tile(false, k, size, ai, lda, bj, ldb, gij, ldg, m - i, cols, part);
        }
    }
}

/* The whole of op(A), pass over k by pass, each pass's tiles as
 * gemm_pack_a lays them: pass p0 starts at p0 * m_pad, row tile i at i * kc
 * within it — where FM_K(gemm) looks. */
void FM_K(gemm_prepack)(bool trans_a, int m, int k, const float *a, int lda, float *dst)
{
    const size_t m_pad = (size_t)(m + MR - 1) / MR * MR;
    for (int p0 = 0; p0 < k; p0 += KC) {
        int kc = k - p0 < KC ? k - p0 : KC;
        gemm_pack_a(dst + (size_t)p0 * m_pad, a, lda, trans_a, 0, m, p0, kc);
    }
}

void FM_K(transpose)(float *dst, size_t ldd, const float *src, size_t lds, int rows, int cols)
{
    FM_ASSERT(lds <= INT32_MAX);
    fm_gemm_b gb = {.b = src, .ldb = (int)lds};
    int rv = rows / FM_VL * FM_VL, cv = cols / FM_VL * FM_VL;
    for (int i = 0; i < rv; i += FM_VL)
        for (int j = 0; j < cv; j += FM_VL)
            gemm_transpose_block(&gb, i, j, dst + (size_t)j * ldd + i, ldd);
    /* The rest: rows past rv in full, and columns past cv of the others. */
    for (int i = 0; i < rows; i++)
        for (int j = i < rv ? cv : 0; j < cols; j++) dst[(size_t)j * ldd + i] = src[(size_t)i * lds + j];
}
