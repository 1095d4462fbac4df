/* test_gemm — fm_gemm_serial (the AVX-512 kernel where the processor has it,
 * and the cblas_sgemm path always) against a naive product in double, over
 * shapes that hit every edge of the register tile and the cache blocks, both
 * transposes, alpha/beta and leading dimensions wider than the matrix; B
 * given as a table of rows or in column segments; A packed up front; the
 * transpose helper; and the property fm_sgemm's
 * thread split relies on: an element of C gets the same bits whether it is
 * computed with the whole of C or in a block of it. */
#include "fm_internal.h"
#include "fm_test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct gemm_case {
    bool ta, tb;
    int m, n, k;
    float alpha, beta;
} gemm_case;

/* Room for `floats` floats (at least one vector), 64-byte aligned. */
static float *aligned_floats(size_t floats)
{
    float *p = aligned_alloc(64, (floats * sizeof(float) + 64) / 64 * 64);
    ck_assert_ptr_nonnull(p);
    return p;
}

static float *pack_buf(void) { return aligned_floats(FM_GEMM_PACK_FLOATS); }

/* The packing space of a row-table or segment product, and c1 and c2 [m, n]
 * filled alike for two products that add to them. */
static float *twin_products_setup(float *c1, float *c2, int m, int n, int k, uint64_t seed)
{
    fm_test_fill(c1, (size_t)m * n, -1.0f, 1.0f, seed);
    memcpy(c2, c1, (size_t)m * n * sizeof(float));
    return aligned_floats(fm_gemm_rows_pack_floats(n, k));
}

/* Runs one case with leading dimensions `pad` wider than needed; returns the
 * worst error relative to sum |a||b| over k (the scale of rounding error). */
static double gemm_run_case(const gemm_case *gc, int pad, uint64_t seed)
{
    int rows_a = gc->ta ? gc->k : gc->m, cols_a = gc->ta ? gc->m : gc->k;
    int rows_b = gc->tb ? gc->n : gc->k, cols_b = gc->tb ? gc->k : gc->n;
    int lda = cols_a + pad, ldb = cols_b + pad, ldc = gc->n + pad;
    size_t na = (size_t)rows_a * lda, nb = (size_t)rows_b * ldb, nc = (size_t)gc->m * ldc;
    float *a = malloc((na + 1) * sizeof(float)), *b = malloc((nb + 1) * sizeof(float));
    float *c = malloc((nc + 1) * sizeof(float)), *c0 = malloc((nc + 1) * sizeof(float));
    fm_test_fill(a, na + 1, -1.0f, 1.0f, seed);
    fm_test_fill(b, nb + 1, -1.0f, 1.0f, seed + 1);
    fm_test_fill(c0, nc + 1, -1.0f, 1.0f, seed + 2);
    /* beta == 0 must not read C: NaN there must not leak into the result. */
    if (gc->beta == 0.0f)
        for (size_t i = 0; i < nc; i++) c0[i] = NAN;
    memcpy(c, c0, (nc + 1) * sizeof(float));
    float *pack = pack_buf();

    fm_gemm_serial(gc->ta, gc->tb, gc->m, gc->n, gc->k, gc->alpha, a, lda, NULL, b, ldb,
                   gc->beta, c, ldc, pack);

    double worst = 0.0;
    for (int i = 0; i < gc->m; i++)
        for (int j = 0; j < ldc; j++) {
            size_t at = (size_t)i * ldc + j;
            if (j >= gc->n) {
                /* Padding between rows of C is never written. */
                ck_assert(memcmp(&c[at], &c0[at], sizeof(float)) == 0);
                continue;
            }
            double sum = 0.0, mag = 0.0;
            for (int p = 0; p < gc->k; p++) {
                double x = gc->ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                double y = gc->tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                sum += x * y;
                mag += fabs(x * y);
            }
            double want = gc->alpha * sum, scale = fabs(gc->alpha) * mag + 1.0;
            if (gc->beta != 0.0f) {
                want += gc->beta * (double)c0[at];
                scale += fabs(gc->beta * c0[at]);
            }
            ck_assert_msg(isfinite(c[at]), "C[%d,%d] = %g", i, j, c[at]);
            double err = fabs(c[at] - want) / scale;
            if (err > worst) worst = err;
        }
    /* The element past C is never written either. */
    ck_assert(memcmp(&c[nc], &c0[nc], sizeof(float)) == 0);
    free(a);
    free(b);
    free(c);
    free(c0);
    free(pack);
    return worst;
}

/* Sizes around the 8 x 48 register tile, the 16 x 16 transpose blocks, the
 * 128-row, 480-column and 256-deep cache blocks, and a conv-like product. */
static const int gemm_dims[][3] = {
    {1, 1, 1},    {3, 5, 2},     {8, 48, 16},   {9, 49, 17},   {7, 47, 15},
    {16, 96, 32}, {33, 100, 65}, {64, 288, 9},  {129, 481, 257}, {130, 500, 600},
    {64, 196, 288}, {10, 1000, 3}, {300, 20, 513},
    {24, 64, 40}, {17, 112, 300},  /* 64 columns left: two 32-wide tiles unless packed */
};
#define GEMM_NDIMS ((int)(sizeof gemm_dims / sizeof gemm_dims[0]))

/* _i runs over dims x 4 transposes x 2 paths. */
static void gemm_check(int i, int pad, float alpha, float beta)
{
    const int *d = gemm_dims[i / 8 % GEMM_NDIMS];
    int t = i % 4;
    bool blas = i / 4 % 2;
    gemm_case gc = {t & 1, t >> 1, d[0], d[1], d[2], alpha, beta};
    fm_kernels_force_portable(blas);
    double err = gemm_run_case(&gc, pad, 100 + (uint64_t)i);
    fm_kernels_force_portable(false);
    ck_assert_msg(err < 1e-6, "%s ta=%d tb=%d %dx%dx%d alpha=%g beta=%g: error %g",
                  blas ? "blas" : fm_gemm_kernel_name(), gc.ta, gc.tb, gc.m, gc.n, gc.k,
                  (double)alpha, (double)beta, err);
}

START_TEST(test_gemm_vs_naive_beta0) { gemm_check(_i, 0, 1.0f, 0.0f); }
END_TEST

START_TEST(test_gemm_vs_naive_beta1_strided) { gemm_check(_i, 3, 1.0f, 1.0f); }
END_TEST

START_TEST(test_gemm_vs_naive_alpha_beta) { gemm_check(_i, 1, -0.5f, 0.75f); }
END_TEST

START_TEST(test_gemm_k0_scales_c)
{
    float c[6] = {1, 2, 3, 4, 5, NAN}, a[1] = {0}, b[1] = {0};
    float *pack = pack_buf();
    fm_gemm_serial(false, false, 2, 2, 0, 1.0f, a, 1, NULL, b, 2, 0.5f, c, 3, pack);
    ck_assert_float_eq(c[0], 0.5f);
    ck_assert_float_eq(c[4], 2.5f);
    ck_assert_float_eq(c[2], 3.0f);  /* outside the 2 x 2 block */
    fm_gemm_serial(false, false, 2, 2, 0, 1.0f, a, 1, NULL, b, 2, 0.0f, c, 3, pack);
    ck_assert_float_eq(c[0], 0.0f);
    ck_assert_float_eq(c[4], 0.0f);
    free(pack);
}
END_TEST

/* fm_sgemm hands each thread a block of rows or columns of C: every element
 * must come out bit-identical to the whole product, wherever the cut falls. */
START_TEST(test_gemm_block_independent)
{
    int m = 70, n = 530, k = 700;
    bool ta = _i & 1, tb = _i >> 1;
    int lda = ta ? m : k, ldb = tb ? k : n;
    float *a = malloc((size_t)m * k * sizeof(float)), *b = malloc((size_t)k * n * sizeof(float));
    float *whole = malloc((size_t)m * n * sizeof(float));
    float *part = malloc((size_t)m * n * sizeof(float));
    fm_test_fill(a, (size_t)m * k, -1.0f, 1.0f, 7);
    fm_test_fill(b, (size_t)k * n, -1.0f, 1.0f, 8);
    float *pack = pack_buf();
    fm_gemm_serial(ta, tb, m, n, k, 1.0f, a, lda, NULL, b, ldb, 0.0f, whole, n, pack);
    /* Columns cut at 17 and 301, rows at 5 and 41: none on a tile boundary. */
    const int ccut[] = {0, 17, 301, n}, rcut[] = {0, 5, 41, m};
    for (int ci = 0; ci < 3; ci++) {
        int j0 = ccut[ci];
        fm_gemm_serial(ta, tb, m, ccut[ci + 1] - j0, k, 1.0f, a, lda, NULL,
                       tb ? b + (size_t)j0 * ldb : b + j0, ldb, 0.0f, part + j0, n, pack);
    }
    ck_assert(memcmp(whole, part, (size_t)m * n * sizeof(float)) == 0);
    memset(part, 0, (size_t)m * n * sizeof(float));
    for (int ri = 0; ri < 3; ri++) {
        int i0 = rcut[ri];
        fm_gemm_serial(ta, tb, rcut[ri + 1] - i0, n, k, 1.0f,
                       ta ? a + i0 : a + (size_t)i0 * lda, lda, NULL, b, ldb, 0.0f,
                       part + (size_t)i0 * n, n, pack);
    }
    ck_assert(memcmp(whole, part, (size_t)m * n * sizeof(float)) == 0);
    free(a);
    free(b);
    free(whole);
    free(part);
    free(pack);
}
END_TEST

/* fm_gemm_serial_rows on rows scattered (in reverse order, overlapping
 * windows of one array, as a convolution's shifted planes are) gives the
 * same bits as fm_gemm_serial on the same rows gathered into a matrix. */
START_TEST(test_gemm_rows_matches_plain)
{
    bool tb = _i & 1, blas = _i >> 1;
    int m = 37, n = 301, k = 290;
    int nrows = tb ? n : k, len = tb ? k : n;
    float *a = malloc((size_t)m * k * sizeof(float));
    float *pool = malloc(((size_t)nrows * 3 + (size_t)len) * sizeof(float));
    float *plain = malloc((size_t)nrows * len * sizeof(float));
    const float **rows = malloc((size_t)nrows * sizeof *rows);
    float *c1 = malloc((size_t)m * n * sizeof(float)), *c2 = malloc((size_t)m * n * sizeof(float));
    fm_test_fill(a, (size_t)m * k, -1.0f, 1.0f, 11);
    fm_test_fill(pool, (size_t)nrows * 3 + (size_t)len, -1.0f, 1.0f, 12);
    for (int r = 0; r < nrows; r++) {
        rows[r] = pool + (size_t)(nrows - 1 - r) * 3;
        memcpy(plain + (size_t)r * len, rows[r], (size_t)len * sizeof(float));
    }
    fm_kernels_force_portable(blas);
    float *pack = twin_products_setup(c1, c2, m, n, k, 13);
    fm_gemm_serial(false, tb, m, n, k, 1.0f, a, k, NULL, plain, len, 1.0f, c1, n, pack);
    fm_gemm_serial_rows(false, tb, m, n, k, 1.0f, a, k, NULL, rows, 1.0f, c2, n, pack);
    fm_kernels_force_portable(false);
    ck_assert(memcmp(c1, c2, (size_t)m * n * sizeof(float)) == 0);
    free(a);
    free(pool);
    free(plain);
    free(rows);
    free(c1);
    free(c2);
    free(pack);
}
END_TEST

/* A packed once up front (as a convolution does for its weights) gives the
 * same bits as A packed on the fly, through several passes over k and
 * several row blocks; on the portable path there is nothing to pack. */
START_TEST(test_gemm_prepacked_a)
{
    bool ta = _i & 1, rows_variant = _i >> 1;
    int m = 133, n = 70, k = 600, lda = ta ? m : k;
    float *a = malloc((size_t)m * k * sizeof(float)), *b = malloc((size_t)k * n * sizeof(float));
    float *c1 = malloc((size_t)m * n * sizeof(float)), *c2 = malloc((size_t)m * n * sizeof(float));
    const float **rows = malloc((size_t)k * sizeof *rows);
    fm_test_fill(a, (size_t)m * k, -1.0f, 1.0f, 21);
    fm_test_fill(b, (size_t)k * n, -1.0f, 1.0f, 22);
    for (int p = 0; p < k; p++) rows[p] = b + (size_t)p * n;
    size_t floats = fm_gemm_prepacked_floats(m, k);
    ck_assert_uint_eq(floats > 0, fm_kernels_avx512());
    float *packed = aligned_floats(floats);
    const float *ap = fm_gemm_prepack_a(ta, m, k, a, lda, packed);
    ck_assert(ap == (fm_kernels_avx512() ? packed : NULL));
    float *pack = pack_buf();
    fm_gemm_serial(ta, false, m, n, k, 1.0f, a, lda, NULL, b, n, 0.0f, c1, n, pack);
    if (rows_variant)
        fm_gemm_serial_rows(ta, false, m, n, k, 1.0f, a, lda, ap, rows, 0.0f, c2, n, pack);
    else
        fm_gemm_serial(ta, false, m, n, k, 1.0f, a, lda, ap, b, n, 0.0f, c2, n, pack);
    ck_assert(memcmp(c1, c2, (size_t)m * n * sizeof(float)) == 0);
    free(a);
    free(b);
    free(c1);
    free(c2);
    free(rows);
    free(packed);
    free(pack);
}
END_TEST

/* fm_gemm_serial_segs: B in column segments (here shifted windows of one
 * channel-minor array, as a convolution's taps are) gives the same bits as
 * fm_gemm_serial on the segments gathered into one matrix; segments of 32,
 * 64 and 48 columns and a ragged 40, on both kernels. */
START_TEST(test_gemm_segs_matches_plain)
{
    static const int seg_widths[] = {32, 64, 48, 40, 16};
    int seg = seg_widths[_i / 2 % 5], segs = 5, m = 37, k = 290, n = seg * segs, ldb = seg + 3;
    bool blas = _i & 1;
    float *a = malloc((size_t)m * k * sizeof(float));
    float *pool = malloc((size_t)(k + 4 * segs) * ldb * sizeof(float));
    float *plain = malloc((size_t)k * n * sizeof(float));
    const float **b_segs = malloc((size_t)segs * sizeof *b_segs);
    float *c1 = malloc((size_t)m * n * sizeof(float)), *c2 = malloc((size_t)m * n * sizeof(float));
    fm_test_fill(a, (size_t)m * k, -1.0f, 1.0f, 31);
    fm_test_fill(pool, (size_t)(k + 4 * segs) * ldb, -1.0f, 1.0f, 32);
    for (int t = 0; t < segs; t++) {
        b_segs[t] = pool + (size_t)(4 * (segs - 1 - t)) * ldb + t % 3;
        for (int p = 0; p < k; p++)
            memcpy(plain + (size_t)p * n + (size_t)t * seg, b_segs[t] + (size_t)p * ldb,
                   (size_t)seg * sizeof(float));
    }
    fm_kernels_force_portable(blas);
    float *pack = twin_products_setup(c1, c2, m, n, k, 33);
    fm_gemm_serial(false, false, m, n, k, 1.0f, a, k, NULL, plain, n, 1.0f, c1, n, pack);
    fm_gemm_serial_segs(m, n, k, 1.0f, a, k, b_segs, seg, ldb, 1.0f, c2, n, pack);
    fm_kernels_force_portable(false);
    ck_assert_msg(memcmp(c1, c2, (size_t)m * n * sizeof(float)) == 0, "seg %d blas %d", seg, blas);
    free(a);
    free(pool);
    free(plain);
    free(b_segs);
    free(c1);
    free(c2);
    free(pack);
}
END_TEST

/* fm_transpose against the definition, on sizes around its 16 x 16 blocks
 * and with strides wider than the matrix; nothing outside dst's matrix is
 * written. */
START_TEST(test_transpose)
{
    static const int dims[][2] = {{16, 16}, {32, 48}, {17, 35}, {3, 40}, {45, 5}, {1, 1}};
    int rows = dims[_i / 2][0], cols = dims[_i / 2][1];
    size_t lds = (size_t)cols + 3, ldd = (size_t)rows + 5;
    float *src = malloc((size_t)rows * lds * sizeof(float));
    float *dst = malloc((size_t)cols * ldd * sizeof(float));
    fm_test_fill(src, (size_t)rows * lds, -1.0f, 1.0f, 41);
    for (size_t i = 0; i < (size_t)cols * ldd; i++) dst[i] = 7.0f;
    fm_kernels_force_portable(_i & 1);
    fm_transpose(dst, ldd, src, lds, rows, cols);
    fm_kernels_force_portable(false);
    for (int j = 0; j < cols; j++)
        for (size_t i = 0; i < ldd; i++)
            ck_assert_float_eq(dst[(size_t)j * ldd + i],
                               i < (size_t)rows ? src[i * lds + (size_t)j] : 7.0f);
    free(src);
    free(dst);
}
END_TEST

START_TEST(test_gemm_kernel_name)
{
    const char *name = fm_gemm_kernel_name();
    ck_assert(strcmp(name, "avx512") == 0 || strcmp(name, "blas") == 0);
    __builtin_cpu_init();
    ck_assert_int_eq(strcmp(name, "avx512") == 0, __builtin_cpu_supports("avx512f") != 0);
    fm_kernels_force_portable(true);
    ck_assert_str_eq(fm_gemm_kernel_name(), "blas");
    fm_kernels_force_portable(false);
    ck_assert_str_eq(fm_gemm_kernel_name(), name);
}
END_TEST

static Suite *gemm_suite(void)
{
    Suite *s = suite_create("gemm");
    TCase *tc = tcase_create("kernel");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_gemm_vs_naive_beta0, 0, 8 * GEMM_NDIMS);
    tcase_add_loop_test(tc, test_gemm_vs_naive_beta1_strided, 0, 8 * GEMM_NDIMS);
    tcase_add_loop_test(tc, test_gemm_vs_naive_alpha_beta, 0, 8 * GEMM_NDIMS);
    tcase_add_test(tc, test_gemm_k0_scales_c);
    tcase_add_loop_test(tc, test_gemm_block_independent, 0, 4);
    tcase_add_loop_test(tc, test_gemm_rows_matches_plain, 0, 4);
    tcase_add_loop_test(tc, test_gemm_prepacked_a, 0, 4);
    tcase_add_loop_test(tc, test_gemm_segs_matches_plain, 0, 10);
    tcase_add_loop_test(tc, test_transpose, 0, 12);
    tcase_add_test(tc, test_gemm_kernel_name);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(gemm_suite()); }
