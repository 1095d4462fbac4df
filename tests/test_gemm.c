/* test_gemm — the matrix products on every kernel set this processor runs
 * (portable: cblas_sgemm; avx2 and avx512: fmhost's own kernel).
 *
 * On each set: fm_gemm_serial against a naive product in double, over
 * shapes that hit every edge of the register tiles and the cache blocks,
 * both transposes, alpha/beta and leading dimensions wider than the matrix;
 * B given as a table of rows or in column segments, and A packed up front,
 * against the plain product; the transpose helper; fm_sgemm's thread split
 * (through fm_linear); the weight gradient's chunked product in its tree.
 * Every product gets a workspace of exactly fm_gemm_pack_floats floats, on
 * the heap, so that the sanitizers see a kernel writing past what that
 * function promised.
 *
 * Across sets: the vector sets give bit-identical results (same operations
 * per element), and each element of their products is independent of the
 * block of C it is computed in; the portable set promises neither (see
 * test_gemm_block_independent). */
#include "fm_internal.h"
#include "fm_test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct gemm_case {
    bool ta, tb;
    int m, n, k;
    float alpha, beta;
} gemm_case;

/* Exactly `floats` floats, 64-byte aligned, on the heap (posix_memalign:
 * aligned_alloc wants a multiple of 64 bytes, and rounding up would hide an
 * overflow from ASan). */
static float *aligned_floats(size_t floats)
{
    void *p = NULL;
    ck_assert_int_eq(posix_memalign(&p, 64, floats * sizeof(float)), 0);
    ck_assert(p != NULL || floats == 0);
    return p;
}

/* The twins below run the float products, or with twin_bf16 the bfloat16
 * ones (fm_gemm_serial_bf16, fm_gemm_serial_rows/_segs asked for bf16), whose
 * workspace does not depend on the shapes. */
static bool twin_bf16;

/* The workspace of one product with B [k, n] on the active set, exactly. */
static float *pack_for(int n, int k, bool b_table)
{
    return aligned_floats(twin_bf16 ? fm_gemm_bf16_pack_floats() : fm_gemm_pack_floats(n, k, b_table));
}

/* The three products, each with its own exactly sized workspace. */
static void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *a_packed, const float *b, int ldb, float beta, float *c, int ldc)
{
    float *pack = pack_for(n, k, false);
    if (twin_bf16)
        fm_gemm_serial_bf16(ta, tb, m, n, k, alpha, a, lda, a_packed, b, ldb, beta, c, ldc, pack);
    else
        fm_gemm_serial(ta, tb, m, n, k, alpha, a, lda, a_packed, b, ldb, beta, c, ldc, pack);
    free(pack);
}

static void gemm_rows(bool ta, bool tb, int m, int n, int k, float alpha, const float *a,
                      int lda, const float *a_packed, const float *const *rows, float beta,
                      float *c, int ldc)
{
    float *pack = pack_for(n, k, true);
    fm_gemm_serial_rows(twin_bf16, ta, tb, m, n, k, alpha, a, lda, a_packed, rows, beta, c, ldc,
                        pack);
    free(pack);
}

static void gemm_segs(int m, int n, int k, float alpha, const float *a, int lda,
                      const float *const *segs, int seg, int ldb, float beta, float *c, int ldc)
{
    float *pack = pack_for(n, k, true);
    fm_gemm_serial_segs(twin_bf16, m, n, k, alpha, a, lda, segs, seg, ldb, beta, c, ldc, pack);
    free(pack);
}

/* ---- against a naive product ------------------------------------------- */

/* A case's operands with leading dimensions `pad` wider than needed, and
 * one float past each array. */
typedef struct gemm_operands {
    float *a, *b, *c0;  /* c0: C before the product */
    int lda, ldb, ldc;
    size_t na, nb, nc;
} gemm_operands;

static gemm_operands operands_new(const gemm_case *gc, int pad, uint64_t seed)
{
    gemm_operands o;
    int rows_a = gc->ta ? gc->k : gc->m, cols_a = gc->ta ? gc->m : gc->k;
    int rows_b = gc->tb ? gc->n : gc->k, cols_b = gc->tb ? gc->k : gc->n;
    o.lda = cols_a + pad, o.ldb = cols_b + pad, o.ldc = gc->n + pad;
    o.na = (size_t)rows_a * o.lda, o.nb = (size_t)rows_b * o.ldb, o.nc = (size_t)gc->m * o.ldc;
    o.a = malloc((o.na + 1) * sizeof(float));
    o.b = malloc((o.nb + 1) * sizeof(float));
    o.c0 = malloc((o.nc + 1) * sizeof(float));
    fm_test_fill(o.a, o.na + 1, -1.0f, 1.0f, seed);
    fm_test_fill(o.b, o.nb + 1, -1.0f, 1.0f, seed + 1);
    fm_test_fill(o.c0, o.nc + 1, -1.0f, 1.0f, seed + 2);
    /* beta == 0 must not read C: NaN there must not leak into the result. */
    if (gc->beta == 0.0f)
        for (size_t i = 0; i < o.nc; i++) o.c0[i] = NAN;
    return o;
}

static void operands_free(gemm_operands *o)
{
    free(o->a);
    free(o->b);
    free(o->c0);
}

/* C [nc + 1] after the case's product on the active set. */
static float *gemm_on_active(const gemm_case *gc, const gemm_operands *o)
{
    float *c = malloc((o->nc + 1) * sizeof(float));
    memcpy(c, o->c0, (o->nc + 1) * sizeof(float));
    gemm(gc->ta, gc->tb, gc->m, gc->n, gc->k, gc->alpha, o->a, o->lda, NULL, o->b, o->ldb,
         gc->beta, c, o->ldc);
    return c;
}

/* op(X) [rows, cols] in double, row-major, from X stored with leading
 * dimension ld (transposed when t). */
static double *op_double(const float *x, int ld, bool t, int rows, int cols)
{
    double *d = malloc((size_t)rows * cols * sizeof *d);
    for (int r = 0; r < rows; r++)
        for (int q = 0; q < cols; q++)
            d[(size_t)r * cols + q] = t ? x[(size_t)q * ld + r] : x[(size_t)r * ld + q];
    return d;
}

/* The worst error of c against the product in double, relative to
 * sum |a||b| over k (the scale of rounding error); fails if anything outside
 * the m x n matrix was written.  (One assertion per check, not per element:
 * each passing ck_assert costs Check a write.) */
static double gemm_error(const gemm_case *gc, const gemm_operands *o, const float *c)
{
    /* op(A) [m, k] and op(B)^T [n, k]: each dot product reads two rows. */
    double *a = op_double(o->a, o->lda, gc->ta, gc->m, gc->k);
    double *bt = op_double(o->b, o->ldb, !gc->tb, gc->n, gc->k);
    double worst = 0.0;
    for (int i = 0; i < gc->m; i++) {
        /* Padding between rows of C is never written. */
        size_t row = (size_t)i * o->ldc;
        ptrdiff_t pad = fm_test_first_diff(c + row + gc->n, o->c0 + row + gc->n,
                                           (size_t)(o->ldc - gc->n));
        ck_assert_msg(pad < 0, "%s: padding C[%d,%td] written", fm_test_kernels_name(), i,
                      gc->n + pad);
        for (int j = 0; j < gc->n; j++) {
            size_t at = row + j;
            const double *x = a + (size_t)i * gc->k, *y = bt + (size_t)j * gc->k;
            double sum = 0.0, mag = 0.0;
            for (int p = 0; p < gc->k; p++) {
                sum += x[p] * y[p];
                mag += fabs(x[p] * y[p]);
            }
            double want = gc->alpha * sum, scale = fabs(gc->alpha) * mag + 1.0;
            if (gc->beta != 0.0f) {
                want += gc->beta * (double)o->c0[at];
                scale += fabs(gc->beta * o->c0[at]);
            }
            /* (a NaN's error is NaN: made infinite, it fails the caller) */
            double err = isfinite(c[at]) ? fabs(c[at] - want) / scale : INFINITY;
            if (err > worst) worst = err;
        }
    }
    /* The element past C is never written either. */
    ck_assert(memcmp(&c[o->nc], &o->c0[o->nc], sizeof(float)) == 0);
    free(a);
    free(bt);
    return worst;
}

/* Sizes around the register tiles (8 x 48 on avx512, 4 x 24 on avx2), the
 * 16 x 16 and 8 x 8 transpose blocks, the 128-row, 480-column and 256-deep
 * cache blocks, and a conv-like product. */
static const int gemm_dims[][3] = {
    {1, 1, 1},    {3, 5, 2},     {8, 48, 16},   {9, 49, 17},   {7, 47, 15},
    {16, 96, 32}, {33, 100, 65}, {64, 288, 9},  {129, 481, 257}, {130, 500, 600},
    {64, 196, 288}, {10, 1000, 3}, {300, 20, 513},
    {24, 64, 40}, {17, 112, 300},  /* 64 columns left: two 32-wide tiles unless packed */
    {5, 25, 7},   {4, 24, 8},
};
#define GEMM_NDIMS ((int)(sizeof gemm_dims / sizeof gemm_dims[0]))
#define GEMM_NCASES (4 * GEMM_NDIMS) /* dims x 4 transposes */

static gemm_case gemm_case_at(int c, float alpha, float beta)
{
    const int *d = gemm_dims[c / 4];
    return (gemm_case){c % 4 & 1, c % 4 >> 1, d[0], d[1], d[2], alpha, beta};
}

/* _i runs over the cases on each set. */
static void gemm_check(int i, int pad, float alpha, float beta)
{
    int c = fm_test_each_set(i, GEMM_NCASES);
    gemm_case gc = gemm_case_at(c, alpha, beta);
    gemm_operands o = operands_new(&gc, pad, 100 + (uint64_t)c);
    float *out = gemm_on_active(&gc, &o);
    double err = gemm_error(&gc, &o, out);
    ck_assert_msg(err < 1e-6, "%s ta=%d tb=%d %dx%dx%d alpha=%g beta=%g: error %g",
                  fm_test_kernels_name(), gc.ta, gc.tb, gc.m, gc.n, gc.k, (double)alpha,
                  (double)beta, err);
    free(out);
    operands_free(&o);
    fm_test_restore_kernels();
}

START_TEST(test_gemm_vs_naive_beta0) { gemm_check(_i, 0, 1.0f, 0.0f); }
END_TEST

START_TEST(test_gemm_vs_naive_beta1_strided) { gemm_check(_i, 3, 1.0f, 1.0f); }
END_TEST

START_TEST(test_gemm_vs_naive_alpha_beta) { gemm_check(_i, 1, -0.5f, 0.75f); }
END_TEST

START_TEST(test_gemm_k0_scales_c)
{
    fm_test_each_set(_i, 1);
    float c[6] = {1, 2, 3, 4, 5, NAN}, a[1] = {0}, b[1] = {0};
    gemm(false, false, 2, 2, 0, 1.0f, a, 1, NULL, b, 2, 0.5f, c, 3);
    ck_assert_float_eq(c[0], 0.5f);
    ck_assert_float_eq(c[4], 2.5f);
    ck_assert_float_eq(c[2], 3.0f);  /* outside the 2 x 2 block */
    gemm(false, false, 2, 2, 0, 1.0f, a, 1, NULL, b, 2, 0.0f, c, 3);
    ck_assert_float_eq(c[0], 0.0f);
    ck_assert_float_eq(c[4], 0.0f);
    fm_test_restore_kernels();
}
END_TEST

/* ---- how a product may be cut ------------------------------------------ */

/* The vector sets sum every element of C in an order fixed by the shapes,
 * wherever it lies in C: an element comes out bit-identical whether it is
 * computed with the whole of C or in a block of it, wherever the cut falls.
 * OpenBLAS (the portable set) promises no such thing — its kernels may round
 * an element differently in a product cut differently — so this runs on the
 * vector sets only, and the portable set is held to what it does guarantee:
 * test_sgemm_threads_independent.  Nor does it depend on how B is stored:
 * a transposed B turned into a plain one first (as fm_sgemm does for a
 * product it splits by rows) gives the same bits. */
START_TEST(test_gemm_block_independent)
{
    int c = fm_test_each_vector_set(_i, 4);
    int m = 70, n = 530, k = 700;
    bool ta = c & 1, tb = c >> 1;
    int lda = ta ? m : k, ldb = tb ? k : n;
    float *a = malloc((size_t)m * k * sizeof(float)), *b = malloc((size_t)k * n * sizeof(float));
    float *whole = malloc((size_t)m * n * sizeof(float));
    float *part = malloc((size_t)m * n * sizeof(float));
    fm_test_fill(a, (size_t)m * k, -1.0f, 1.0f, 7);
    fm_test_fill(b, (size_t)k * n, -1.0f, 1.0f, 8);
    gemm(ta, tb, m, n, k, 1.0f, a, lda, NULL, b, ldb, 0.0f, whole, n);
    /* Columns cut at 17 and 301, rows at 5 and 41: none on a tile boundary. */
    const int ccut[] = {0, 17, 301, n}, rcut[] = {0, 5, 41, m};
    for (int ci = 0; ci < 3; ci++) {
        int j0 = ccut[ci];
        gemm(ta, tb, m, ccut[ci + 1] - j0, k, 1.0f, a, lda, NULL,
             tb ? b + (size_t)j0 * ldb : b + j0, ldb, 0.0f, part + j0, n);
    }
    fm_test_assert_same_bits(whole, part, (size_t)m * n, fm_test_kernels_name());
    memset(part, 0, (size_t)m * n * sizeof(float));
    for (int ri = 0; ri < 3; ri++) {
        int i0 = rcut[ri];
        gemm(ta, tb, rcut[ri + 1] - i0, n, k, 1.0f, ta ? a + i0 : a + (size_t)i0 * lda, lda,
             NULL, b, ldb, 0.0f, part + (size_t)i0 * n, n);
    }
    fm_test_assert_same_bits(whole, part, (size_t)m * n, fm_test_kernels_name());
    if (tb) {
        float *bt = malloc((size_t)k * n * sizeof(float));  // [k, n]
        for (int j = 0; j < n; j++)
            for (int p = 0; p < k; p++) bt[(size_t)p * n + j] = b[(size_t)j * ldb + p];
        gemm(ta, false, m, n, k, 1.0f, a, lda, NULL, bt, n, 0.0f, part, n);
        fm_test_assert_same_bits(whole, part, (size_t)m * n, fm_test_kernels_name());
        free(bt);
    }
    free(a);
    free(b);
    free(whole);
    free(part);
    fm_test_restore_kernels();
}
END_TEST

/* What every set guarantees, the portable one included: fm_sgemm cuts C
 * into blocks fixed by the shape alone (never by the thread count) and
 * never splits k, so C comes out bit-identical for 1, 2 and 3 threads.
 * fm_sgemm is reached through fm_linear (its exported caller): the forward
 * (B transposed), the input gradient (plain) and the weight gradient (A
 * transposed, adding to C).  Case 0 splits the forward's and the input
 * gradient's C by rows and the weight gradient's by columns; case 1 the
 * other way round.  The forward is also checked against the naive product,
 * so that the comparison is of the right numbers. */
START_TEST(test_sgemm_threads_independent)
{
    static const int shapes[2][3] = {{530, 300, 70}, {70, 300, 530}};  /* batch, in, out */
    int c = fm_test_each_set(_i, 2);
    int batch = shapes[c][0], in = shapes[c][1], out = shapes[c][2];
    fm_tensor *x = fm_test_leaf(2, (int[]){batch, in}, -1.0f, 1.0f, 51, true);
    fm_tensor *w = fm_test_leaf(2, (int[]){out, in}, -1.0f, 1.0f, 52, true);
    float *dy = malloc((size_t)batch * out * sizeof(float));
    fm_test_fill(dy, (size_t)batch * out, -1.0f, 1.0f, 53);
    size_t ny = (size_t)batch * out, nx = (size_t)batch * in, nw = (size_t)out * in;
    float *res[3];  /* per thread count: y, dx, dw */
    int threads0 = fm_get_threads();
    for (int t = 0; t < 3; t++) {
        fm_set_threads(t + 1);
        ck_assert_int_eq(fm_get_threads(), t + 1);
        memset(x->grad, 0, nx * sizeof(float));
        fm_test_fill(w->grad, nw, -1.0f, 1.0f, 54);  /* the weight gradient adds to this */
        fm_graph *g = fm_graph_new();
        fm_tensor *y = fm_linear(g, x, w, NULL);
        y->grad = dy;
        fm_op_table[y->node->op].backward(g, y->node);
        y->grad = NULL;
        res[t] = malloc((ny + nx + nw) * sizeof(float));
        memcpy(res[t], y->data, ny * sizeof(float));
        memcpy(res[t] + ny, x->grad, nx * sizeof(float));
        memcpy(res[t] + ny + nx, w->grad, nw * sizeof(float));
        fm_graph_free(g);
    }
    fm_set_threads(threads0);
    char what[64];
    for (int t = 1; t < 3; t++) {
        snprintf(what, sizeof what, "%s, 1 vs %d threads (y, dx, dw)", fm_test_kernels_name(),
                 t + 1);
        fm_test_assert_same_bits(res[0], res[t], ny + nx + nw, what);
    }
    float *ref = malloc(ny * sizeof(float));
    for (int i = 0; i < batch; i++)
        for (int j = 0; j < out; j++) {
            double s = 0.0;
            for (int p = 0; p < in; p++)
                s += (double)x->data[(size_t)i * in + p] * w->data[(size_t)j * in + p];
            ref[(size_t)i * out + j] = (float)s;
        }
    ck_assert_double_lt(fm_test_max_rel_diff(res[0], ref, ny), 1e-5);
    for (int t = 0; t < 3; t++) free(res[t]);
    free(ref);
    free(dy);
    fm_tensor_free(x);
    fm_tensor_free(w);
    fm_test_restore_kernels();
}
END_TEST

/* ---- B as a table, A packed: the same bits as the plain product -------- */

/* Two products that must agree: c1 by the plain fm_gemm_serial, c2 by a
 * variant, each [m, n]. */
typedef struct twin {
    float *c1, *c2;
    size_t n;
} twin;

static void twin_free(twin *t)
{
    free(t->c1);
    free(t->c2);
}

/* c1 and c2 [m, n] filled alike, for two products that add to them. */
static twin twin_new(int m, int n, uint64_t seed)
{
    twin t = {malloc((size_t)m * n * sizeof(float)), malloc((size_t)m * n * sizeof(float)),
              (size_t)m * n};
    fm_test_fill(t.c1, t.n, -1.0f, 1.0f, seed);
    memcpy(t.c2, t.c1, t.n * sizeof(float));
    return t;
}

/* fm_gemm_serial_rows on rows scattered (in reverse order, overlapping
 * windows of one array, as a convolution's shifted planes are) against
 * fm_gemm_serial on the same rows gathered into a matrix; case: B
 * transposed or not. */
#define ROWS_NCASES 2
static twin rows_twin(int c)
{
    bool tb = c & 1;
    int m = 37, n = 301, k = 290;
    int nrows = tb ? n : k, len = tb ? k : n;
    float *a = malloc((size_t)m * k * sizeof(float));
    float *pool = malloc(((size_t)nrows * 3 + (size_t)len) * sizeof(float));
    float *plain = malloc((size_t)nrows * len * sizeof(float));
    const float **rows = malloc((size_t)nrows * sizeof *rows);
    fm_test_fill(a, (size_t)m * k, -1.0f, 1.0f, 11);
    fm_test_fill(pool, (size_t)nrows * 3 + (size_t)len, -1.0f, 1.0f, 12);
    for (int r = 0; r < nrows; r++) {
        rows[r] = pool + (size_t)(nrows - 1 - r) * 3;
        memcpy(plain + (size_t)r * len, rows[r], (size_t)len * sizeof(float));
    }
    twin t = twin_new(m, n, 13);
    gemm(false, tb, m, n, k, 1.0f, a, k, NULL, plain, len, 1.0f, t.c1, n);
    gemm_rows(false, tb, m, n, k, 1.0f, a, k, NULL, rows, 1.0f, t.c2, n);
    free(a);
    free(pool);
    free(plain);
    free(rows);
    return t;
}

/* A packed once up front (as a convolution does for its weights) against A
 * packed on the fly, through several passes over k and several row blocks,
 * B plain or as a table; on the portable set there is nothing to pack.
 * Case: A transposed or not, times the two forms of B. */
#define PREPACKED_NCASES 4
static twin prepacked_twin(int c)
{
    bool ta = c & 1, rows_variant = c >> 1;
    int m = 133, n = 70, k = 600, lda = ta ? m : k;
    float *a = malloc((size_t)m * k * sizeof(float)), *b = malloc((size_t)k * n * sizeof(float));
    const float **rows = malloc((size_t)k * sizeof *rows);
    fm_test_fill(a, (size_t)m * k, -1.0f, 1.0f, 21);
    fm_test_fill(b, (size_t)k * n, -1.0f, 1.0f, 22);
    for (int p = 0; p < k; p++) rows[p] = b + (size_t)p * n;
    /* The bf16 products prepack on every set, the portable one included. */
    bool vector = twin_bf16 || fm_kernels_active() != FM_KERNELS_PORTABLE;
    size_t floats = twin_bf16 ? fm_gemm_bf16_prepacked_floats(m, k) : fm_gemm_prepacked_floats(m, k);
    ck_assert_msg((floats > 0) == vector, "%s: %zu floats to prepack", fm_test_kernels_name(),
                  floats);
    float *packed = aligned_floats(floats);
    const float *ap = twin_bf16 ? fm_gemm_bf16_prepack_a(ta, m, k, a, lda, packed)
                                : fm_gemm_prepack_a(ta, m, k, a, lda, packed);
    ck_assert(ap == (vector ? packed : NULL));
    twin t = twin_new(m, n, 23);
    gemm(ta, false, m, n, k, 1.0f, a, lda, NULL, b, n, 0.0f, t.c1, n);
    if (rows_variant)
        gemm_rows(ta, false, m, n, k, 1.0f, a, lda, ap, rows, 0.0f, t.c2, n);
    else
        gemm(ta, false, m, n, k, 1.0f, a, lda, ap, b, n, 0.0f, t.c2, n);
    free(a);
    free(b);
    free(rows);
    free(packed);
    return t;
}

/* fm_gemm_serial_segs: B in column segments (here shifted windows of one
 * channel-minor array, as a convolution's taps are) against fm_gemm_serial
 * on the segments gathered into one matrix; case: segments of 32, 64, 48,
 * a ragged 40, and 16 columns. */
#define SEGS_NCASES 5
static twin segs_twin(int c)
{
    static const int seg_widths[SEGS_NCASES] = {32, 64, 48, 40, 16};
    int seg = seg_widths[c], segs = 5, m = 37, k = 290, n = seg * segs, ldb = seg + 3;
    float *a = malloc((size_t)m * k * sizeof(float));
    float *pool = malloc((size_t)(k + 4 * segs) * ldb * sizeof(float));
    float *plain = malloc((size_t)k * n * sizeof(float));
    const float **b_segs = malloc((size_t)segs * sizeof *b_segs);
    fm_test_fill(a, (size_t)m * k, -1.0f, 1.0f, 31);
    fm_test_fill(pool, (size_t)(k + 4 * segs) * ldb, -1.0f, 1.0f, 32);
    for (int t = 0; t < segs; t++) {
        b_segs[t] = pool + (size_t)(4 * (segs - 1 - t)) * ldb + t % 3;
        for (int p = 0; p < k; p++)
            memcpy(plain + (size_t)p * n + (size_t)t * seg, b_segs[t] + (size_t)p * ldb,
                   (size_t)seg * sizeof(float));
    }
    twin t = twin_new(m, n, 33);
    gemm(false, false, m, n, k, 1.0f, a, k, NULL, plain, n, 1.0f, t.c1, n);
    gemm_segs(m, n, k, 1.0f, a, k, b_segs, seg, ldb, 1.0f, t.c2, n);
    free(a);
    free(pool);
    free(plain);
    free(b_segs);
    return t;
}

/* One twin case on the active set: c1 and c2 bit-identical. */
static void twin_check(twin (*run)(int), int c, const char *variant)
{
    twin t = run(c);
    char what[80];
    snprintf(what, sizeof what, "%s, %s%s case %d", fm_test_kernels_name(),
             twin_bf16 ? "bf16 " : "", variant, c);
    fm_test_assert_same_bits(t.c1, t.c2, t.n, what);
    twin_free(&t);
}

START_TEST(test_gemm_rows_matches_plain)
{
    twin_check(rows_twin, fm_test_each_set(_i, ROWS_NCASES), "rows");
    fm_test_restore_kernels();
}
END_TEST

START_TEST(test_gemm_prepacked_a)
{
    twin_check(prepacked_twin, fm_test_each_set(_i, PREPACKED_NCASES), "prepacked");
    fm_test_restore_kernels();
}
END_TEST

START_TEST(test_gemm_segs_matches_plain)
{
    twin_check(segs_twin, fm_test_each_set(_i, SEGS_NCASES), "segs");
    fm_test_restore_kernels();
}
END_TEST

/* The same three twins on the bfloat16 products, each set. */
START_TEST(test_gemm_bf16_variants_match_plain)
{
    int c = fm_test_each_set(_i, ROWS_NCASES + PREPACKED_NCASES + SEGS_NCASES);
    twin_bf16 = true;
    if (c < ROWS_NCASES)
        twin_check(rows_twin, c, "rows");
    else if (c < ROWS_NCASES + PREPACKED_NCASES)
        twin_check(prepacked_twin, c - ROWS_NCASES, "prepacked");
    else
        twin_check(segs_twin, c - ROWS_NCASES - PREPACKED_NCASES, "segs");
    twin_bf16 = false;
    fm_test_restore_kernels();
}
END_TEST

/* fm_transpose against the definition, on sizes around its 16 x 16 and
 * 8 x 8 blocks and with strides wider than the matrix; nothing outside
 * dst's matrix is written. */
#define TRANSPOSE_NCASES 7
START_TEST(test_transpose)
{
    static const int dims[TRANSPOSE_NCASES][2] = {{16, 16}, {32, 48}, {17, 35}, {3, 40},
                                                  {45, 5},  {1, 1},   {9, 7}};
    int c = fm_test_each_set(_i, TRANSPOSE_NCASES);
    int rows = dims[c][0], cols = dims[c][1];
    size_t lds = (size_t)cols + 3, ldd = (size_t)rows + 5;
    float *src = malloc((size_t)rows * lds * sizeof(float));
    float *dst = malloc((size_t)cols * ldd * sizeof(float));
    fm_test_fill(src, (size_t)rows * lds, -1.0f, 1.0f, 41);
    for (size_t i = 0; i < (size_t)cols * ldd; i++) dst[i] = 7.0f;
    fm_transpose(dst, ldd, src, lds, rows, cols);
    float *want = malloc((size_t)cols * ldd * sizeof(float));
    for (int j = 0; j < cols; j++)
        for (size_t i = 0; i < ldd; i++)
            want[(size_t)j * ldd + i] = i < (size_t)rows ? src[i * lds + (size_t)j] : 7.0f;
    char what[64];
    snprintf(what, sizeof what, "%s transpose %dx%d", fm_test_kernels_name(), rows, cols);
    fm_test_assert_same_bits(dst, want, (size_t)cols * ldd, what);
    free(want);
    free(src);
    free(dst);
    fm_test_restore_kernels();
}
END_TEST

/* ---- a weight gradient's chunked product ------------------------------- */

/* fm_gemm_tn_tree against its definition: per chunk of `size` rows, each
 * element summed over the chunk's rows in order, one fmaf per step from
 * zero; the chunks' sums added in fm_chunk_sum's tree (left + right, mid =
 * lo + (hi - lo) / 2); the root added to g.  Bit for bit on the vector
 * sets, on shapes with ragged row and column tiles, a short last chunk, one
 * chunk, eight, and enough columns for several tasks.  The portable set has
 * no fused kernel: there the function must decline (return false, g
 * untouched) so that the caller takes the per-chunk products. */
static float tn_tree_ref(const float *parts, int lo, int hi)
{
    if (hi - lo == 1) return parts[lo];
    int mid = lo + (hi - lo) / 2;
    return tn_tree_ref(parts, lo, mid) + tn_tree_ref(parts, mid, hi);
}

#define TN_TREE_NCASES 7
START_TEST(test_gemm_tn_tree)
{
    static const int dims[TN_TREE_NCASES][4] = {  // m, n, k, size
        {10, 128, 64, 8}, {17, 53, 28, 4}, {8, 48, 64, 8},   {33, 200, 9, 2},
        {1, 1, 1, 1},     {5, 3, 3, 1},    {130, 500, 512, 64}};
    int c = fm_test_each_set(_i, TN_TREE_NCASES);
    int m = dims[c][0], n = dims[c][1], k = dims[c][2], size = dims[c][3];
    float *a = malloc((size_t)k * m * sizeof(float)), *b = malloc((size_t)k * n * sizeof(float));
    float *g = malloc((size_t)m * n * sizeof(float)), *want = malloc((size_t)m * n * sizeof(float));
    fm_test_fill(a, (size_t)k * m, -1.0f, 1.0f, 51);
    fm_test_fill(b, (size_t)k * n, -1.0f, 1.0f, 52);
    fm_test_fill(g, (size_t)m * n, -1.0f, 1.0f, 53);
    memcpy(want, g, (size_t)m * n * sizeof(float));
    char what[96];
    snprintf(what, sizeof what, "%s tn_tree %dx%dx%d by %d", fm_test_kernels_name(), m, n, k, size);
    if (fm_kernels_active() == FM_KERNELS_PORTABLE) {
        ck_assert_msg(!fm_gemm_tn_tree(m, n, k, size, a, b, g), "%s: took it on", what);
        fm_test_assert_same_bits(g, want, (size_t)m * n, what);
    } else {
        ck_assert_msg(fm_gemm_tn_tree(m, n, k, size, a, b, g), "%s: declined", what);
        int chunks = (k + size - 1) / size;
        float parts[FM_BATCH_CHUNKS];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                for (int ch = 0; ch < chunks; ch++) {
                    float s = 0.0f;
                    for (int p = ch * size; p < k && p < (ch + 1) * size; p++)
                        s = fmaf(a[(size_t)p * m + i], b[(size_t)p * n + j], s);
                    parts[ch] = s;
                }
                want[(size_t)i * n + j] += tn_tree_ref(parts, 0, chunks);
            }
        fm_test_assert_same_bits(g, want, (size_t)m * n, what);
    }
    free(a);
    free(b);
    free(g);
    free(want);
    fm_test_restore_kernels();
}
END_TEST

/* ---- the vector sets agree bit for bit --------------------------------- */

/* avx2 and avx512 run the same operations per element, in the same order:
 * every product above gives the same bits on both (padding included). */
START_TEST(test_gemm_vector_sets_agree)
{
    fm_kernels pair[2];
    int c = fm_test_each_pair(_i, GEMM_NCASES, pair);
    gemm_case gc = gemm_case_at(c, -0.5f, 0.75f);
    gemm_operands o = operands_new(&gc, 1, 300 + (uint64_t)c);
    float *out[2];
    for (int s = 0; s < 2; s++) {
        fm_test_use_kernels(pair[s]);
        out[s] = gemm_on_active(&gc, &o);
    }
    char what[128];
    snprintf(what, sizeof what, "%s vs %s, ta=%d tb=%d %dx%dx%d", fm_kernels_name(pair[0]),
             fm_kernels_name(pair[1]), gc.ta, gc.tb, gc.m, gc.n, gc.k);
    fm_test_assert_same_bits(out[0], out[1], o.nc + 1, what);
    free(out[0]);
    free(out[1]);
    operands_free(&o);
    fm_test_restore_kernels();
}
END_TEST

static const struct {
    twin (*run)(int c);
    int ncases;
    const char *name;
} twin_variants[] = {
    {rows_twin, ROWS_NCASES, "rows"},
    {prepacked_twin, PREPACKED_NCASES, "prepacked"},
    {segs_twin, SEGS_NCASES, "segs"},
};
#define TWIN_NCASES (ROWS_NCASES + PREPACKED_NCASES + SEGS_NCASES)

/* The same for B as a table, A prepacked and B in segments: both products
 * of each case. */
START_TEST(test_gemm_variants_vector_sets_agree)
{
    fm_kernels pair[2];
    int c = fm_test_each_pair(_i, TWIN_NCASES, pair), v = 0;
    while (c >= twin_variants[v].ncases) c -= twin_variants[v++].ncases;
    twin t[2];
    for (int s = 0; s < 2; s++) {
        fm_test_use_kernels(pair[s]);
        t[s] = twin_variants[v].run(c);
    }
    char what[128];
    snprintf(what, sizeof what, "%s vs %s, %s case %d", fm_kernels_name(pair[0]),
             fm_kernels_name(pair[1]), twin_variants[v].name, c);
    fm_test_assert_same_bits(t[0].c1, t[1].c1, t[0].n, what);
    fm_test_assert_same_bits(t[0].c2, t[1].c2, t[0].n, what);
    twin_free(&t[0]);
    twin_free(&t[1]);
    fm_test_restore_kernels();
}
END_TEST

/* ---- the kernel-set API ------------------------------------------------- */

START_TEST(test_kernel_sets_api)
{
    /* Names round-trip; anything else is refused, naming the choices. */
    static const char *const names[FM_KERNELS_COUNT] = {"portable", "avx2", "avx512"};
    for (int k = 0; k < FM_KERNELS_COUNT; k++) {
        fm_kernels back = FM_KERNELS_COUNT;
        ck_assert_str_eq(fm_kernels_name((fm_kernels)k), names[k]);
        ck_assert_int_eq(fm_kernels_parse(names[k], &back), FM_OK);
        ck_assert_int_eq(back, k);
    }
    static const char *const bad[] = {"blas", "AVX2", "avx", "avx512 ", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fm_kernels back = FM_KERNELS_COUNT;
        ck_assert_int_eq(fm_kernels_parse(bad[i], &back), FM_ERR_ARG);
        ck_assert_int_eq(back, FM_KERNELS_COUNT);
        ck_assert_msg(strstr(fm_error_message(), "portable, avx2 or avx512") != NULL, "%s",
                      fm_error_message());
    }

    /* The sets supported are those the processor has the instructions for
     * (an x86-64 build has all three), and the best of them is the default. */
    bool avx2 = false, avx512 = false;
#if defined(__x86_64__)
    __builtin_cpu_init();
    avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    avx512 = avx2 && __builtin_cpu_supports("avx512f");
#endif
    ck_assert(fm_kernels_supported(FM_KERNELS_PORTABLE));
    ck_assert_int_eq(fm_kernels_supported(FM_KERNELS_AVX2), avx2);
    ck_assert_int_eq(fm_kernels_supported(FM_KERNELS_AVX512), avx512);
    fm_kernels best = avx512 ? FM_KERNELS_AVX512 : avx2 ? FM_KERNELS_AVX2 : FM_KERNELS_PORTABLE;
    ck_assert_int_eq(fm_kernels_best(), best);
    /* The tests loop over all of them, or over the one FMHOST_KERNELS forces. */
    const char *forced = getenv("FMHOST_KERNELS");
    ck_assert_int_eq(fm_test_kernel_sets(NULL), forced && *forced ? 1 : 1 + avx2 + avx512);

    /* fm_kernels_use: a supported set becomes active; an unsupported one is
     * refused and leaves the active set alone. */
    for (int k = 0; k < FM_KERNELS_COUNT; k++) {
        fm_kernels before = fm_kernels_active();
        fm_status st = fm_kernels_use((fm_kernels)k);
        if (fm_kernels_supported((fm_kernels)k)) {
            ck_assert_int_eq(st, FM_OK);
            ck_assert_int_eq(fm_kernels_active(), k);
        } else {
            ck_assert_int_eq(st, FM_ERR_ARG);
            ck_assert_int_eq(fm_kernels_active(), before);
            ck_assert_msg(strstr(fm_error_message(), names[k]) != NULL, "%s", fm_error_message());
        }
    }
    ck_assert_int_eq(fm_kernels_use(FM_KERNELS_COUNT), FM_ERR_ARG);

    /* $FMHOST_KERNELS: each set by name (refused where unsupported), a bad
     * name refused with a message naming the variable, unset the best. */
    const char *env = getenv("FMHOST_KERNELS");
    char *saved = env ? strdup(env) : NULL;
    for (int k = 0; k < FM_KERNELS_COUNT; k++) {
        setenv("FMHOST_KERNELS", names[k], 1);
        fm_status st = fm_kernels_use_env();
        if (fm_kernels_supported((fm_kernels)k)) {
            ck_assert_int_eq(st, FM_OK);
            ck_assert_int_eq(fm_kernels_active(), k);
        } else {
            ck_assert_int_eq(st, FM_ERR_ARG);
            ck_assert(strstr(fm_error_message(), "FMHOST_KERNELS") != NULL);
        }
    }
    setenv("FMHOST_KERNELS", "bogus", 1);
    ck_assert_int_eq(fm_kernels_use_env(), FM_ERR_ARG);
    ck_assert_msg(strstr(fm_error_message(), "FMHOST_KERNELS") != NULL &&
                      strstr(fm_error_message(), "bogus") != NULL,
                  "the message names neither the variable nor its value: %s",
                  fm_error_message());
    unsetenv("FMHOST_KERNELS");
    ck_assert_int_eq(fm_kernels_use_env(), FM_OK);
    ck_assert_int_eq(fm_kernels_active(), best);
    if (saved) setenv("FMHOST_KERNELS", saved, 1);
    free(saved);
    fm_test_restore_kernels();
}
END_TEST

static Suite *gemm_suite(void)
{
    int sets = fm_test_kernel_sets(NULL), vsets = fm_test_vector_sets(NULL);
    int pairs = fm_test_vector_pairs(NULL);
    Suite *s = suite_create("gemm");
    TCase *tc = tcase_create("kernel");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_gemm_vs_naive_beta0, 0, GEMM_NCASES * sets);
    tcase_add_loop_test(tc, test_gemm_vs_naive_beta1_strided, 0, GEMM_NCASES * sets);
    tcase_add_loop_test(tc, test_gemm_vs_naive_alpha_beta, 0, GEMM_NCASES * sets);
    tcase_add_loop_test(tc, test_gemm_k0_scales_c, 0, sets);
    tcase_add_loop_test(tc, test_gemm_block_independent, 0, 4 * vsets);
    tcase_add_loop_test(tc, test_sgemm_threads_independent, 0, 2 * sets);
    tcase_add_loop_test(tc, test_gemm_rows_matches_plain, 0, ROWS_NCASES * sets);
    tcase_add_loop_test(tc, test_gemm_prepacked_a, 0, PREPACKED_NCASES * sets);
    tcase_add_loop_test(tc, test_gemm_segs_matches_plain, 0, SEGS_NCASES * sets);
    tcase_add_loop_test(tc, test_gemm_bf16_variants_match_plain, 0,
                        (ROWS_NCASES + PREPACKED_NCASES + SEGS_NCASES) * sets);
    tcase_add_loop_test(tc, test_transpose, 0, TRANSPOSE_NCASES * sets);
    tcase_add_loop_test(tc, test_gemm_tn_tree, 0, TN_TREE_NCASES * sets);
    tcase_add_loop_test(tc, test_gemm_vector_sets_agree, 0, GEMM_NCASES * pairs);
    tcase_add_loop_test(tc, test_gemm_variants_vector_sets_agree, 0, TWIN_NCASES * pairs);
    tcase_add_test(tc, test_kernel_sets_api);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(gemm_suite()); }
