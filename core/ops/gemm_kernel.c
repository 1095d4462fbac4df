/* fm_gemm_serial: one thread's SGEMM, C = alpha * op(A) op(B) + beta * C,
 * row-major.
 *
 * On a processor with AVX-512 it runs fmhost's own kernel; elsewhere it calls
 * cblas_sgemm.  The own kernel exists because the OpenBLAS kernels chosen on
 * such machines may be the AVX2 ones (OPENBLAS_CORETYPE can pin them, as it
 * does where older OpenBLAS builds misbehave), which do half the work per
 * instruction: on the convolution shapes of the reference models it runs at
 * 200-235 GFLOP/s on one core where OpenBLAS's Haswell kernels run at 105-125.
 *
 * The kernel is the classic three-level blocking: panels of op(A) [MC, KC]
 * and, when B is transposed, of op(B) [KC, NC] are packed into the caller's
 * workspace (a plain B is read in place), and an 8 x 48 register tile of C
 * (8 x 16 or 8 x 32 for a ragged last panel) accumulates KC products per
 * pass.  Every element of C is summed over k in the same order, KC at a time,
 * whatever its position in C: the result depends on the shapes only, so
 * callers that split C between threads stay bit-identical for any thread
 * count. */
#include "ops_util.h"

#include <cblas.h>
#include <string.h>

#define GEMM_MR 8
#define GEMM_NR 48
#define GEMM_KC FM_GEMM_KC
#define GEMM_MC 128
#define GEMM_NC 480

_Static_assert(GEMM_MC % GEMM_MR == 0 && GEMM_NC % GEMM_NR == 0, "panels hold whole tiles");
_Static_assert(FM_GEMM_PACK_FLOATS * sizeof(float) >=
                   GEMM_KC * (GEMM_MC + GEMM_NC) * sizeof(float) + GEMM_KC * sizeof(float *),
               "pack workspace too small");

/* The first two rounds of a register transpose of n (8 or 16) rows: after
 * it, r[4g + j] holds rows 4g .. 4g+3 of column 4l + j in its 128-bit lane
 * l. */
__attribute__((target("avx512f"), always_inline)) static inline void
gemm_transpose_lanes(__m512 *r, int n)
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

/* dst [16][8] <- the 8 x 16 block of A at src (row stride lda), transposed:
 * a tile of packed A for 16 steps of k, in registers. */
__attribute__((target("avx512f"))) static void gemm_pack_a_block(float *dst, const float *src,
                                                                 int lda)
{
    __m512 u[8];
    for (int i = 0; i < 8; i++) u[i] = _mm512_loadu_ps(src + (size_t)i * lda);
    gemm_transpose_lanes(u, 8);
    for (int j = 0; j < 4; j++) {
        /* Lanes (l, l) of u[j] and u[4 + j] side by side: columns 4l + j. */
        __m512 lo = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44);
        __m512 hi = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xEE);
        lo = _mm512_shuffle_f32x4(lo, lo, 0xD8);
        hi = _mm512_shuffle_f32x4(hi, hi, 0xD8);
        _mm256_storeu_ps(dst + (size_t)j * 8, _mm512_castps512_ps256(lo));
        _mm256_storeu_ps(dst + (size_t)(4 + j) * 8, fm_ops_upper_half(lo));
        _mm256_storeu_ps(dst + (size_t)(8 + j) * 8, _mm512_castps512_ps256(hi));
        _mm256_storeu_ps(dst + (size_t)(12 + j) * 8, fm_ops_upper_half(hi));
    }
}

/* dst [mc/MR tiles][kc][MR] <- op(A)[i0.., p0..], rows past mc zero. */
static void gemm_pack_a(float *dst, const float *a, int lda, bool trans, int i0, int mc, int p0,
                        int kc)
{
    for (int ir = 0; ir < mc; ir += GEMM_MR, dst += (size_t)kc * GEMM_MR) {
        int rows = mc - ir < GEMM_MR ? mc - ir : GEMM_MR;
        if (!trans && rows == GEMM_MR && fm_kernels_avx512()) {
            const float *src = a + (size_t)(i0 + ir) * lda + p0;
            int p = 0;
            for (; p + 16 <= kc; p += 16)
                gemm_pack_a_block(dst + (size_t)p * GEMM_MR, src + p, lda);
            for (; p < kc; p++)
                for (int r = 0; r < GEMM_MR; r++)
                    dst[(size_t)p * GEMM_MR + r] = src[(size_t)r * lda + p];
            continue;
        }
        if (trans) {
            /* op(A)(i, p) = a[p*lda + i]: a tile's column is contiguous. */
            for (int p = 0; p < kc; p++) {
                const float *src = a + (size_t)(p0 + p) * lda + i0 + ir;
                float *d = dst + (size_t)p * GEMM_MR;
                int r = 0;
                for (; r < rows; r++) d[r] = src[r];
                for (; r < GEMM_MR; r++) d[r] = 0.0f;
            }
        } else {
            for (int r = 0; r < GEMM_MR; r++) {
                float *d = dst + r;
                if (r >= rows) {
                    for (int p = 0; p < kc; p++) d[(size_t)p * GEMM_MR] = 0.0f;
                    continue;
                }
                const float *src = a + (size_t)(i0 + ir + r) * lda + p0;
                for (int p = 0; p < kc; p++) d[(size_t)p * GEMM_MR] = src[p];
            }
        }
    }
}

/* B as stored: row r at rows[r] if there is a table, else at b + r*ldb; or
 * (not transposed) in column segments of `seg` columns, segment t's row p at
 * segs[t] + p*ldb. */
typedef struct gemm_b {
    const float *b;
    int ldb;
    const float *const *rows;
    const float *const *segs;
    int seg;
} gemm_b;

static inline const float *gemm_b_row(const gemm_b *gb, int r)
{
    return gb->rows ? gb->rows[r] : gb->b + (size_t)r * gb->ldb;
}

/* dst[i*ldd + j] = element col0 + i of stored row row0 + j of B, for a
 * 16 x 16 block: four rounds of shuffles in registers instead of 256
 * scattered stores. */
__attribute__((target("avx512f"))) static void gemm_transpose16(const gemm_b *gb, int row0,
                                                                int col0, float *dst, size_t ldd)
{
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(gemm_b_row(gb, row0 + i) + col0);
    gemm_transpose_lanes(r, 16);
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; i++) {
            t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xDD);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    }
    for (int i = 0; i < 16; i++) _mm512_storeu_ps(dst + (size_t)i * ldd, r[i]);
}

/* dst [nc/NR panels][kc][NR] <- op(B)[p0.., j0..] for a transposed B,
 * op(B)(p, j) = element p of stored row j: whole 16 x 16 blocks go through
 * registers, the ragged rest one element at a time.  Columns of the last
 * panel past nc are left as they are: the tiles mask them out of every
 * load. */
static void gemm_pack_bt(float *dst, const gemm_b *gb, int p0, int kc, int j0, int nc)
{
    for (int jr = 0; jr < nc; jr += GEMM_NR, dst += (size_t)kc * GEMM_NR) {
        int cols = nc - jr < GEMM_NR ? nc - jr : GEMM_NR;
        int j16 = cols / 16 * 16, p16 = kc / 16 * 16;
        for (int j = 0; j < j16; j += 16)
            for (int p = 0; p < p16; p += 16)
                gemm_transpose16(gb, j0 + jr + j, p0 + p, dst + (size_t)p * GEMM_NR + j,
                                 GEMM_NR);
        for (int j = 0; j < cols; j++) {
            float *d = dst + j;
            const float *src = gemm_b_row(gb, j0 + jr + j) + p0;
            for (int p = j < j16 ? p16 : 0; p < kc; p++) d[(size_t)p * GEMM_NR] = src[p];
        }
    }
}


/* C[rows, cols] (rows <= MR, cols <= 16*NV <= NR) = alpha * Ap B + beta * C
 * over kc steps: Ap packed, row p of B at brow[p] + boff (in a packed panel
 * or in B itself), only its first `cols` columns read.  beta == 0 never
 * reads C.  NV, the vectors per row, is a constant in each copy below, so
 * a ragged last panel of 16 or 32 columns costs no arithmetic on zeros. */
__attribute__((target("avx512f"), always_inline)) static inline void
gemm_tile_nv(const int nv, int kc, const float *ap, const float *const *brow, size_t boff,
             float *c, int ldc, int rows, int cols, float alpha, float beta)
{
    const __mmask16 mask[3] = {fm_ops_lane_mask(cols), fm_ops_lane_mask(cols - 16), fm_ops_lane_mask(cols - 32)};
    /* Every index into acc is a constant after unrolling, so it lives in
     * registers (a variable index would put it on the stack). */
    __m512 acc[GEMM_MR][3];
#pragma GCC unroll 8
    for (int r = 0; r < GEMM_MR; r++)
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++) acc[r][v] = _mm512_setzero_ps();
    for (int p = 0; p < kc; p++, ap += GEMM_MR) {
        const float *bp = brow[p] + boff;
        __m512 bv[3];
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++) bv[v] = fm_ops_load16(bp + 16 * v, mask[v]);
#pragma GCC unroll 8
        for (int r = 0; r < GEMM_MR; r++) {
            __m512 a = _mm512_set1_ps(ap[r]);
#pragma GCC unroll 3
            for (int v = 0; v < nv; v++) acc[r][v] = _mm512_fmadd_ps(a, bv[v], acc[r][v]);
        }
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
    for (int r = 0; r < GEMM_MR; r++) {
        if (r >= rows) break;
        float *cr = c + (size_t)r * ldc;
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++) {
            __m512 x = alpha == 1.0f ? acc[r][v] : _mm512_mul_ps(va, acc[r][v]);
            if (beta == 1.0f)
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask[v], cr + 16 * v));
            else if (beta != 0.0f)
                x = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask[v], cr + 16 * v), x);
            _mm512_mask_storeu_ps(cr + 16 * v, mask[v], x);
        }
    }
}

#define GEMM_TILE_COPY(NV)                                                                     \
    __attribute__((target("avx512f"))) static void gemm_tile##NV(                              \
        int kc, const float *ap, const float *const *brow, size_t boff, float *c, int ldc,     \
        int rows, int cols, float alpha, float beta)                                           \
    {                                                                                          \
        gemm_tile_nv(NV, kc, ap, brow, boff, c, ldc, rows, cols, alpha, beta);                 \
    }
GEMM_TILE_COPY(1)
GEMM_TILE_COPY(2)
GEMM_TILE_COPY(3)

typedef void (*gemm_tile_fn)(int kc, const float *ap, const float *const *brow, size_t boff,
                             float *c, int ldc, int rows, int cols, float alpha, float beta);
static const gemm_tile_fn gemm_tiles[4] = {NULL, gemm_tile1, gemm_tile2, gemm_tile3};

static void gemm_scale(int m, int n, float beta, float *c, int ldc)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float *e = c + (size_t)i * ldc + j;
            *e = beta == 0.0f ? 0.0f : beta * *e;
        }
}

/* The product for fm_gemm_serial and fm_gemm_serial_rows; pack is
 * FM_GEMM_PACK_FLOATS: the A panel, the B panel, then a table of KC row
 * pointers into B. */
static void gemm_own_product(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                             const float *a, int lda, const float *a_packed, const gemm_b *gb,
                             float beta, float *c, int ldc, float *pack)
{
    const size_t m_pad = (size_t)(m + GEMM_MR - 1) / GEMM_MR * GEMM_MR;
    FM_ASSERT(pack && ((uintptr_t)pack & 63) == 0);
    float *apack = pack, *bpack = apack + (size_t)GEMM_MC * GEMM_KC;
    const float **brow = (const float **)(bpack + (size_t)GEMM_KC * GEMM_NC);
    /* Only a transposed B is packed.  A plain one is read in place: its rows
     * are contiguous, and on the products here (m <= a few hundred, so few
     * row tiles share a panel) packing cost more than the strided reads it
     * would save — measured equal or slower on every conv and linear shape
     * of the reference models.  Then nothing depends on the width of a
     * block of columns, and A is packed once per pass over k. */
    const bool pack_b = trans_b;
    /* Column blocks: packing panels, or B's segments, or all of B. */
    const int nc_max = pack_b ? GEMM_NC : gb->segs ? gb->seg : n;
    for (int p0 = 0; p0 < k; p0 += GEMM_KC) {
        int kc = k - p0 < GEMM_KC ? k - p0 : GEMM_KC;
        /* The first pass over k applies the caller's beta; later ones add. */
        float pass_beta = p0 == 0 ? beta : 1.0f;
        for (int j0 = 0; j0 < n; j0 += nc_max) {
            int nc = n - j0 < nc_max ? n - j0 : nc_max;
            if (pack_b) {
                gemm_pack_bt(bpack, gb, p0, kc, j0, nc);
                for (int p = 0; p < kc; p++) brow[p] = bpack + (size_t)p * GEMM_NR;
            } else if (gb->segs) {
                const float *seg = gb->segs[j0 / gb->seg] + (size_t)p0 * gb->ldb;
                for (int p = 0; p < kc; p++) brow[p] = seg + (size_t)p * gb->ldb;
            } else {
                for (int p = 0; p < kc; p++) brow[p] = gemm_b_row(gb, p0 + p) + j0;
            }
            for (int i0 = 0; i0 < m; i0 += GEMM_MC) {
                int mc = m - i0 < GEMM_MC ? m - i0 : GEMM_MC;
                const float *ap = apack;
                if (a_packed)
                    ap = a_packed + (size_t)p0 * m_pad + (size_t)i0 * kc;
                else if (j0 == 0 || m > GEMM_MC)  /* one row block: packed at j0 = 0 */
                    gemm_pack_a(apack, a, lda, trans_a, i0, mc, p0, kc);
                for (int jr = 0, cols; jr < nc; jr += cols) {
                    /* 64 columns as two 32-wide tiles rather than 48 and a
                     * 16-wide one, which spends as much on loads as on
                     * arithmetic (packed panels are 48 wide: not there). */
                    cols = !pack_b && nc - jr == 64 ? 32 : nc - jr < GEMM_NR ? nc - jr : GEMM_NR;
                    size_t boff = pack_b ? (size_t)jr * kc : (size_t)jr;
                    for (int ir = 0; ir < mc; ir += GEMM_MR) {
                        int rows = mc - ir < GEMM_MR ? mc - ir : GEMM_MR;
                        gemm_tiles[(cols + 15) / 16](kc, ap + (size_t)ir * kc, brow, boff,
                                  c + (size_t)(i0 + ir) * ldc + j0 + jr, ldc, rows, cols, alpha,
                                  pass_beta);
                    }
                }
            }
        }
    }
}

size_t fm_gemm_prepacked_floats(int m, int k)
{
    if (!fm_kernels_avx512()) return 0;
    return (size_t)(m + GEMM_MR - 1) / GEMM_MR * GEMM_MR * (size_t)k;
}

/* The whole of op(A), pass over k by pass, each pass's tiles as
 * gemm_pack_a lays them: pass p0 starts at p0 * m_pad, row tile i at i * kc
 * within it — where gemm_own_product looks. */
const float *fm_gemm_prepack_a(bool trans_a, int m, int k, const float *a, int lda, float *dst)
{
    if (!fm_kernels_avx512()) return NULL;
    const size_t m_pad = (size_t)(m + GEMM_MR - 1) / GEMM_MR * GEMM_MR;
    for (int p0 = 0; p0 < k; p0 += GEMM_KC) {
        int kc = k - p0 < GEMM_KC ? k - p0 : GEMM_KC;
        gemm_pack_a(dst + (size_t)p0 * m_pad, a, lda, trans_a, 0, m, p0, kc);
    }
    return dst;
}

/* Every entry point: the own kernel where it runs, else cblas_sgemm on B as
 * stored (gathered first into pack, past its FM_GEMM_PACK_FLOATS, when B
 * comes as a table of rows or of column segments). */
static void gemm_product(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *a_packed, const gemm_b *gb,
                         float beta, float *c, int ldc, float *pack)
{
    FM_ASSERT(m >= 0 && n >= 0 && k >= 0);
    if (m == 0 || n == 0) return;
    if (k == 0) {
        gemm_scale(m, n, beta, c, ldc);
        return;
    }
    if (fm_kernels_avx512()) {
        gemm_own_product(trans_a, trans_b, m, n, k, alpha, a, lda, a_packed, gb, beta, c, ldc,
                         pack);
        return;
    }
    const float *b = gb->b;
    int ldb = gb->ldb;
    if (gb->segs) {
        float *gathered = pack + FM_GEMM_PACK_FLOATS;
        for (int p = 0; p < k; p++)
            for (int t = 0; t < n / gb->seg; t++)
                memcpy(gathered + (size_t)p * n + (size_t)t * gb->seg,
                       gb->segs[t] + (size_t)p * gb->ldb, (size_t)gb->seg * sizeof *gathered);
        b = gathered;
        ldb = n;
    } else if (gb->rows) {
        int nrows = trans_b ? n : k;
        float *gathered = pack + FM_GEMM_PACK_FLOATS;
        ldb = trans_b ? k : n;
        for (int r = 0; r < nrows; r++)
            memcpy(gathered + (size_t)r * ldb, gb->rows[r], (size_t)ldb * sizeof *gathered);
        b = gathered;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c,
                ldc);
}

void fm_gemm_serial(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                    const float *a, int lda, const float *a_packed, const float *b, int ldb,
                    float beta, float *c, int ldc, float *pack)
{
    gemm_b gb = {.b = b, .ldb = ldb};
    gemm_product(trans_a, trans_b, m, n, k, alpha, a, lda, a_packed, &gb, beta, c, ldc, pack);
}

size_t fm_gemm_rows_pack_floats(int n, int k)
{
    return FM_GEMM_PACK_FLOATS + (fm_kernels_avx512() ? 0 : (size_t)n * (size_t)k);
}

void fm_gemm_serial_rows(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *a_packed,
                         const float *const *b_rows, float beta, float *c, int ldc, float *pack)
{
    gemm_b gb = {.rows = b_rows};
    gemm_product(trans_a, trans_b, m, n, k, alpha, a, lda, a_packed, &gb, beta, c, ldc, pack);
}

void fm_gemm_serial_segs(int m, int n, int k, float alpha, const float *a, int lda,
                         const float *const *b_segs, int seg, int ldb, float beta, float *c,
                         int ldc, float *pack)
{
    FM_ASSERT(seg > 0 && n % seg == 0);
    gemm_b gb = {.segs = b_segs, .seg = seg, .ldb = ldb};
    gemm_product(false, false, m, n, k, alpha, a, lda, NULL, &gb, beta, c, ldc, pack);
}

void fm_transpose(float *dst, size_t ldd, const float *src, size_t lds, int rows, int cols)
{
    int r16 = 0, c16 = 0;
    if (fm_kernels_avx512()) {
        gemm_b gb = {.b = src, .ldb = (int)lds};
        FM_ASSERT(lds <= INT32_MAX);
        r16 = rows / 16 * 16;
        c16 = cols / 16 * 16;
        for (int i = 0; i < r16; i += 16)
            for (int j = 0; j < c16; j += 16)
                gemm_transpose16(&gb, i, j, dst + (size_t)j * ldd + i, ldd);
    }
    /* The rest: rows past r16 in full, and columns past c16 of the others. */
    for (int i = 0; i < rows; i++)
        for (int j = i < r16 ? c16 : 0; j < cols; j++)
            dst[(size_t)j * ldd + i] = src[(size_t)i * lds + j];
}
