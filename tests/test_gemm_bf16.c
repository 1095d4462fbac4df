/* test_gemm_bf16 — the bf16 matrix product (fm_gemm_serial_bf16) on every
 * kernel set this processor runs, and on the avx512 set both ways where the
 * processor has AVX512_BF16: vdpbf16ps and its emulation.
 *
 * What the product computes is defined exactly (core/kernels/gemm_bf16.h),
 * so each result is checked bit for bit against a naive reference written
 * from that definition: operands rounded by PyTorch's formula, denormals
 * read as zero, the pairs along k summed odd element first, one fused
 * multiply-add each, KC at a time, then the float GEMM's update of C.  On
 * x86-64 the reference runs the processor's own FMA under MXCSR DAZ|FTZ
 * (what tools/dpbf16_probe.c found vdpbf16ps to match on 128 million random
 * lanes), so the portable set's flushing in software is checked against
 * the hardware's.  NaNs compare as one value: where one comes out is
 * promised, its sign and payload are not.
 *
 * Also: cases that tell the definition from its near misses (the even
 * element first, gradual underflow); the packers' rounding of many bit
 * patterns; the conversion against PyTorch's formula; the sets and both
 * avx512 kernels agreeing bit for bit; fm_sgemm_bf16's thread split; A
 * packed up front; and the distance to the float GEMM, within the bound
 * that bf16's 8-bit significand gives. */
#include "fm_internal.h"
#include "fm_test_util.h"
#include "gemm_bf16.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define REF_HW 1
/* The reference's arithmetic: the processor's FMA (with MXCSR's DAZ|FTZ,
 * set around the reference's loop). */
#define REF_TARGET __attribute__((target("fma"), noinline))
#else
#define REF_HW 0
#define REF_TARGET __attribute__((noinline))
#endif

#define KC FM_GEMM_BF16_KC /* elements of k per pass: part of the definition */

/* ---- the reference --------------------------------------------------------- */

/* PyTorch's round_to_nearest_even, as the issue states it: for a non-NaN
 * with bits u, (u + 0x7FFF + ((u >> 16) & 1)) >> 16; a NaN, 0x7FC0. */
static uint16_t ref_bf16(float x)
{
    if (isnan(x)) return 0x7FC0;
    uint32_t u = fm_test_bits_of(x);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* A denormal as a zero of its sign. */
static float ref_flush(float x) { return fpclassify(x) == FP_SUBNORMAL ? copysignf(0.0f, x) : x; }

/* x as the product reads it: rounded to bf16, a denormal as zero. */
static float ref_operand(float x) { return ref_flush(fm_test_float_of((uint32_t)ref_bf16(x) << 16)); }

#if REF_HW
__attribute__((target("fma"))) static inline float ref_fma(float x, float y, float z)
{
    return __builtin_fmaf(x, y, z);
}
#else
/* Without MXCSR: fmaf, and a result under 2^-100 rounded again scaled into
 * the normal range to see whether, rounded with an unbounded exponent, it
 * lies below 2^-126 (flushed). */
static float ref_fma(float x, float y, float z)
{
    x = ref_flush(x), y = ref_flush(y), z = ref_flush(z);
    float r = fmaf(x, y, z);
    if (!(fabsf(r) < 0x1p-100f) || r == 0.0f) return r;
    float s = fabsf(x) < fabsf(y) ? fmaf(x * 0x1p64f, y, z * 0x1p64f) : fmaf(x, y * 0x1p64f, z * 0x1p64f);
    return fabsf(s) < 0x1p-62f ? copysignf(0.0f, s) : s * 0x1p-64f;
}
#endif

/* C [m, n] (leading dimension ldc) from op(A) and op(B)^T as rounded rows
 * [m][ke], [n][ke] (ke: k rounded up to even, zero past k): per pass of KC,
 * each element's sum from +0 over the pass's pairs, odd element first, then
 * C = sum (alpha 1, beta 0), else x = alpha == 1 ? sum : alpha * sum and
 * C = x + C (beta 1), fma(beta, C, x) (beta != 0) or x; later passes with
 * beta 1.  Multiplications and additions are FMAs (x * y + -0, 1 * x + y:
 * the same bits), so that nothing depends on the compiler contracting. */
REF_TARGET static void ref_sums(const float *ar, const float *bt, int m, int n, int k,
                                float alpha, float beta, float *c, int ldc)
{
    int ke = k + (k & 1);
    for (int p0 = 0; p0 < ke; p0 += KC) {
        int pe = p0 + KC < ke ? p0 + KC : ke;
        float pass_beta = p0 == 0 ? beta : 1.0f;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                const float *x = ar + (size_t)i * ke, *y = bt + (size_t)j * ke;
                float sum = 0.0f;
                for (int p = p0; p < pe; p += 2) {
                    sum = ref_fma(x[p + 1], y[p + 1], sum);
                    sum = ref_fma(x[p], y[p], sum);
                }
                float *e = c + (size_t)i * ldc + j;
                if (alpha == 1.0f && pass_beta == 0.0f) {
                    *e = sum;
                    continue;
                }
                float v = alpha == 1.0f ? sum : ref_fma(alpha, sum, -0.0f);
                if (pass_beta == 1.0f)
                    v = ref_fma(1.0f, v, *e);
                else if (pass_beta != 0.0f)
                    v = ref_fma(pass_beta, *e, v);
                *e = v;
            }
    }
}

/* op(X) [rows, cols] (X stored with leading dimension ld, transposed when
 * t) as rounded rows [rows][cols rounded up to even]. */
static float *ref_rows(const float *x, int ld, bool t, int rows, int cols)
{
    int ce = cols + (cols & 1);
    float *d = calloc((size_t)rows * ce + 1, sizeof *d);
    for (int r = 0; r < rows; r++)
        for (int q = 0; q < cols; q++)
            d[(size_t)r * ce + q] = ref_operand(t ? x[(size_t)q * ld + r] : x[(size_t)r * ld + q]);
    return d;
}

typedef struct bcase {
    bool ta, tb;
    int m, n, k;
    float alpha, beta;
} bcase;

/* A case's operands, leading dimensions `pad` wider than the matrices and
 * one float past each array; c0: C before the product. */
typedef struct bops {
    float *a, *b, *c0;
    int lda, ldb, ldc;
    size_t na, nb, nc;
} bops;

/* C [nc + 1] as the definition has it: c0 where the product does not write. */
static float *ref_product(const bcase *bc, const bops *o)
{
    float *c = malloc((o->nc + 1) * sizeof(float));
    memcpy(c, o->c0, (o->nc + 1) * sizeof(float));
    /* A denormal alpha or beta is read as zero. */
    float alpha = ref_flush(bc->alpha), beta = ref_flush(bc->beta);
    if (bc->k == 0) {
        for (int i = 0; i < bc->m; i++)
            for (int j = 0; j < bc->n; j++) {
                float *e = c + (size_t)i * o->ldc + j;
                *e = beta == 0.0f ? 0.0f : ref_fma(beta, ref_flush(*e), -0.0f);
            }
        return c;
    }
    float *ar = ref_rows(o->a, o->lda, bc->ta, bc->m, bc->k);
    float *bt = ref_rows(o->b, o->ldb, !bc->tb, bc->n, bc->k);
#if REF_HW
    unsigned csr = _mm_getcsr();
    _mm_setcsr(0x9FC0u);  /* exceptions masked, to nearest, DAZ, FTZ */
    __asm__ volatile("" ::: "memory");
#else
    /* C's elements are read as zero if denormal, as DAZ reads them. */
    for (int i = 0; i < bc->m; i++)
        for (int j = 0; j < bc->n; j++) c[(size_t)i * o->ldc + j] = ref_flush(c[(size_t)i * o->ldc + j]);
#endif
    ref_sums(ar, bt, bc->m, bc->n, bc->k, alpha, beta, c, o->ldc);
#if REF_HW
    __asm__ volatile("" ::: "memory");
    _mm_setcsr(csr);
#endif
    free(ar);
    free(bt);
    return c;
}

/* ---- operands and the product under test ----------------------------------- */

/* Exactly `floats` floats, 64-byte aligned, on the heap (as in test_gemm:
 * ASan then sees a kernel writing past what it was promised). */
static float *aligned_floats(size_t floats)
{
    void *p = NULL;
    ck_assert_int_eq(posix_memalign(&p, 64, (floats ? floats : 1) * sizeof(float)), 0);
    return p;
}

static void gemm_bf16(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *a_packed, const float *b, int ldb, float beta, float *c, int ldc)
{
    float *pack = aligned_floats(fm_gemm_bf16_pack_floats());
    fm_gemm_serial_bf16(ta, tb, m, n, k, alpha, a, lda, a_packed, b, ldb, beta, c, ldc, pack);
    free(pack);
}

/* Values that probe the definition's edges, at random: mostly uniform in
 * [-1, 1), and some scaled to about 2^-63 (two of them multiply to about
 * 2^-126, where results flush), some denormal or rounding to a bf16
 * denormal, ties between two bf16, values whose products overflow, values
 * that round up to infinity, infinities and NaNs of both signs (rarely, or
 * they would swamp everything). */
static void fill_edges(float *x, size_t n, uint64_t seed)
{
    fm_rng rng;
    fm_rng_seed(&rng, seed, 0);
    for (size_t i = 0; i < n; i++) {
        uint32_t pick = fm_rng_below(&rng, 1000), sign = fm_rng_u32(&rng) & 0x80000000u;
        float u = 2.0f * fm_rng_uniform(&rng) - 1.0f;
        if (pick < 700)
            x[i] = u;
        else if (pick < 800)
            x[i] = u * 0x1p-63f;
        else if (pick < 860)
            x[i] = u * 0x1p-126f;  /* denormal, mostly */
        else if (pick < 880)
            x[i] = fm_test_float_of(sign | 0x00008000u | (fm_rng_below(&rng, 0x100u) << 16));  /* bf16-denormal tie */
        else if (pick < 940)  /* a tie: a bf16 plus half its last place */
            x[i] = fm_test_float_of(sign | (0x3C000000u + (fm_rng_below(&rng, 0x800u) << 16)) | 0x8000u);
        else if (pick < 970)
            x[i] = u * 0x1p70f;
        else if (pick < 980)
            x[i] = fm_test_float_of(sign | 0x7F7FF000u);  /* rounds to infinity */
        else if (pick < 990)
            x[i] = fm_test_float_of(sign | 0x7F800000u);
        else if (pick < 995)
            x[i] = fm_test_float_of(sign | 0x7FC00000u);
        else
            x[i] = fm_test_float_of(sign | 0x7F800001u | fm_rng_below(&rng, 0x3FFFFFu));  /* signalling */
    }
}

static bops ops_new(const bcase *bc, int pad, uint64_t seed, bool edges)
{
    bops o;
    int rows_a = bc->ta ? bc->k : bc->m, cols_a = bc->ta ? bc->m : bc->k;
    int rows_b = bc->tb ? bc->n : bc->k, cols_b = bc->tb ? bc->k : bc->n;
    o.lda = cols_a + pad, o.ldb = cols_b + pad, o.ldc = bc->n + pad;
    o.na = (size_t)rows_a * o.lda, o.nb = (size_t)rows_b * o.ldb, o.nc = (size_t)bc->m * o.ldc;
    o.a = malloc((o.na + 1) * sizeof(float));
    o.b = malloc((o.nb + 1) * sizeof(float));
    o.c0 = malloc((o.nc + 1) * sizeof(float));
    if (edges) {
        fill_edges(o.a, o.na + 1, seed);
        fill_edges(o.b, o.nb + 1, seed + 1);
        fill_edges(o.c0, o.nc + 1, seed + 2);
    } else {
        fm_test_fill(o.a, o.na + 1, -1.0f, 1.0f, seed);
        fm_test_fill(o.b, o.nb + 1, -1.0f, 1.0f, seed + 1);
        fm_test_fill(o.c0, o.nc + 1, -1.0f, 1.0f, seed + 2);
    }
    /* beta == 0 must not read C: NaN there must not leak into the result. */
    if (ref_flush(bc->beta) == 0.0f)
        for (size_t i = 0; i < o.nc; i++) o.c0[i] = NAN;
    return o;
}

static void ops_free(bops *o)
{
    free(o->a);
    free(o->b);
    free(o->c0);
}

/* C [nc + 1] after the case's product on the kernel in use. */
static float *product(const bcase *bc, const bops *o)
{
    float *c = malloc((o->nc + 1) * sizeof(float));
    memcpy(c, o->c0, (o->nc + 1) * sizeof(float));
    gemm_bf16(bc->ta, bc->tb, bc->m, bc->n, bc->k, bc->alpha, o->a, o->lda, NULL, o->b, o->ldb,
              bc->beta, c, o->ldc);
    return c;
}

/* Fails unless got and want [n] have the same bits, or are both NaN. */
static void assert_same(const float *got, const float *want, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        if (fm_test_bits_of(got[i]) == fm_test_bits_of(want[i]) || (isnan(got[i]) && isnan(want[i]))) continue;
        ck_abort_msg("%s: element %zu is %a (0x%08x), want %a (0x%08x)", what, i, (double)got[i],
                     fm_test_bits_of(got[i]), (double)want[i], fm_test_bits_of(want[i]));
    }
}

/* ---- the kernels of a set ------------------------------------------------- */

/* On the active set: how many bf16 kernels it has (2 on avx512 with
 * AVX512_BF16: vdpbf16ps, then its emulation) ... */
static int bf16_kernels(void)
{
    fm_gemm_bf16_allow_native(true);
    return fm_gemm_bf16_native() ? 2 : 1;
}

/* ... and kernel v of them made the one in use; returns its name. */
static const char *bf16_use(int v)
{
    fm_gemm_bf16_allow_native(v == 0);
    if (fm_gemm_bf16_native()) return "avx512 (vdpbf16ps)";
    return fm_kernels_active() == FM_KERNELS_AVX512 ? "avx512 (emulated)" : fm_test_kernels_name();
}

static void bf16_restore(void)
{
    fm_gemm_bf16_allow_native(true);
    fm_test_restore_kernels();
}

/* ---- against the reference ------------------------------------------------- */

/* Shapes around the register tiles (8 x 48 on avx512, 4 x 24 on avx2), the
 * 16 x 16 and 8 x 8 transpose blocks, the 128-row, 480-column and 256-deep
 * cache blocks; odd and even k, k = 1 and 2. */
static const int bf16_dims[][3] = {
    {1, 1, 1},     {1, 1, 2},      {3, 5, 3},     {8, 48, 16},    {9, 49, 17},   {7, 47, 15},
    {4, 24, 8},    {5, 25, 7},     {16, 96, 32},  {33, 100, 65},  {64, 288, 9},  {10, 1000, 1},
    {24, 64, 40},  {17, 112, 301}, {300, 20, 513}, {129, 481, 257}, {40, 100, 600},
};
#define BF16_NDIMS ((int)(sizeof bf16_dims / sizeof bf16_dims[0]))
#define BF16_NCASES (4 * BF16_NDIMS) /* dims x 4 transposes */

static bcase case_at(int c, float alpha, float beta)
{
    const int *d = bf16_dims[c / 4];
    return (bcase){c % 4 & 1, c % 4 >> 1, d[0], d[1], d[2], alpha, beta};
}

/* Case c on the active set's every bf16 kernel, against the reference. */
static void check_vs_ref(int c, int pad, float alpha, float beta, bool edges, uint64_t seed)
{
    bcase bc = case_at(c, alpha, beta);
    bops o = ops_new(&bc, pad, seed + 10 * (uint64_t)c, edges);
    float *want = ref_product(&bc, &o);
    for (int v = 0, nv = bf16_kernels(); v < nv; v++) {
        char what[160];
        snprintf(what, sizeof what, "%s ta=%d tb=%d %dx%dx%d alpha=%g beta=%g%s", bf16_use(v),
                 bc.ta, bc.tb, bc.m, bc.n, bc.k, (double)alpha, (double)beta,
                 edges ? ", edge values" : "");
        float *got = product(&bc, &o);
        assert_same(got, want, o.nc + 1, what);
        free(got);
    }
    free(want);
    ops_free(&o);
}

START_TEST(test_bf16_vs_ref_beta0)
{
    check_vs_ref(fm_test_each_set(_i, BF16_NCASES), 0, 1.0f, 0.0f, false, 100);
    bf16_restore();
}
END_TEST

START_TEST(test_bf16_vs_ref_beta1_strided)
{
    check_vs_ref(fm_test_each_set(_i, BF16_NCASES), 3, 1.0f, 1.0f, false, 200);
    bf16_restore();
}
END_TEST

START_TEST(test_bf16_vs_ref_alpha_beta)
{
    check_vs_ref(fm_test_each_set(_i, BF16_NCASES), 1, -0.5f, 0.75f, false, 300);
    bf16_restore();
}
END_TEST

/* Denormals, ties, overflow, infinities and NaNs in A, B and C; alpha and
 * beta cycling through the update's forms (a denormal beta is zero). */
START_TEST(test_bf16_vs_ref_edges)
{
    static const float ab[][2] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {-0.5f, 0.75f}, {3.0f, 1.0f},
                                  {1.0f, 0x1p-140f}, {0x1p-130f, -2.0f}};
    int c = fm_test_each_set(_i, BF16_NCASES);
    const float *s = ab[c % (int)(sizeof ab / sizeof ab[0])];
    check_vs_ref(c, 1, s[0], s[1], true, 400);
    bf16_restore();
}
END_TEST

/* k == 0 scales C by beta (zero without reading it); m or n == 0 writes
 * nothing. */
START_TEST(test_bf16_k0_scales_c)
{
    fm_test_each_set(_i, 1);
    float c[6] = {1, 2, 3, 4, 5, NAN}, a[1] = {0}, b[1] = {0};
    gemm_bf16(false, false, 2, 2, 0, 1.0f, a, 1, NULL, b, 2, 0.5f, c, 3);
    ck_assert_float_eq(c[0], 0.5f);
    ck_assert_float_eq(c[4], 2.5f);
    ck_assert_float_eq(c[2], 3.0f);  /* outside the 2 x 2 block */
    gemm_bf16(false, false, 2, 2, 0, 1.0f, a, 1, NULL, b, 2, 0.0f, c, 3);
    ck_assert_float_eq(c[0], 0.0f);
    ck_assert_float_eq(c[4], 0.0f);
    gemm_bf16(false, false, 0, 2, 3, 1.0f, a, 1, NULL, b, 2, 0.0f, c, 3);
    gemm_bf16(false, false, 2, 0, 3, 1.0f, a, 1, NULL, b, 2, 0.0f, c, 3);
    ck_assert_float_eq(c[2], 3.0f);
    ck_assert(isnan(c[5]));
    bf16_restore();
}
END_TEST

/* ---- what tells the definition from its near misses ------------------------ */

/* One 1 x 1 product per row: a, b [4] (k of them used), the result's bits. */
static const struct {
    int k;
    float a[4], b[4], c0, alpha, beta;
    uint32_t want;
    const char *why;
} pinned[] = {
    /* pair 0 gives 1; pair 1: odd first, 1 + 2^-24 ties to 1, then 1 - 1 = +0
     * (the even element first, or a plain sum, gives 2^-24). */
    {4, {0, 1, -1, 0x1p-12f}, {0, 1, 1, 0x1p-12f}, 0, 1, 0, 0x00000000u, "odd element first"},
    /* 2^-126 then - 2^-150: 2^-126 - 2^-150 is below 2^-126 rounded to 24
     * bits, so flushed, although it rounds up to 2^-126 on the denormal grid. */
    {2, {0x1p-75f, 0x1p-63f}, {-0x1p-75f, 0x1p-63f}, 0, 1, 0, 0x00000000u, "tininess after rounding"},
    /* 2^-126 - 2^-151 ties to 2^-126 when rounded to 24 bits: kept. */
    {2, {0x1p-75f, 0x1p-63f}, {-0x1p-76f, 0x1p-63f}, 0, 1, 0, 0x00800000u, "rounded up to 2^-126"},
    /* A product below 2^-126 flushes; 2^-63 * 2^-64 is one. */
    {1, {0x1p-63f}, {0x1p-64f}, 0, 1, 0, 0x00000000u, "denormal product flushed"},
    /* A denormal operand is zero; a denormal C is zero when added. */
    {1, {0x1p-130f}, {1.0f}, 0x1p-140f, 1, 1, 0x00000000u, "denormal A and C read as zero"},
    /* An odd k's padding element is summed too: pair 0 leaves -0 (a flushed
     * negative product, then -0 + -0); the padding's fma(0, 0, -0) makes it
     * +0, and -0 + +0 stays +0 (without it: -0). */
    {3, {0, -0x1p-63f, 0}, {-1.0f, 0x1p-64f, -1.0f}, 0, 1, 0, 0x00000000u, "the padding's fma"},
    /* A denormal beta is zero: C (NaN) is not read. */
    {1, {2.0f}, {3.0f}, NAN, 1, 0x1p-140f, 0x40C00000u, "denormal beta"},
    /* 1 + 2^-8 is a tie between two bf16: to the even one, 1. */
    {1, {1.00390625f}, {1.0f}, 0, 1, 0, 0x3F800000u, "tie to even"},
    /* 0x7F7F8000 ties between the largest bf16 and infinity: infinity. */
    {1, {0x1.ffp+127f}, {1.0f}, 0, 1, 0, 0x7F800000u, "rounds to infinity"},
};
#define PINNED_NCASES ((int)(sizeof pinned / sizeof pinned[0]))

START_TEST(test_bf16_pinned)
{
    int c = fm_test_each_set(_i, PINNED_NCASES);
    for (int v = 0, nv = bf16_kernels(); v < nv; v++) {
        const char *name = bf16_use(v);
        float out = pinned[c].c0;
        gemm_bf16(false, false, 1, 1, pinned[c].k, pinned[c].alpha, pinned[c].a, pinned[c].k,
                  NULL, pinned[c].b, 1, pinned[c].beta, &out, 1);
        ck_assert_msg(fm_test_bits_of(out) == pinned[c].want, "%s, %s: got %a (0x%08x), want 0x%08x",
                      name, pinned[c].why, (double)out, fm_test_bits_of(out), pinned[c].want);
        /* The reference agrees, or it would prove nothing elsewhere. */
        bcase bc = {false, false, 1, 1, pinned[c].k, pinned[c].alpha, pinned[c].beta};
        float c0[2] = {pinned[c].c0, 0};
        bops o = {.a = (float *)pinned[c].a, .b = (float *)pinned[c].b, .c0 = c0,
                  .lda = pinned[c].k, .ldb = 1, .ldc = 1, .nc = 1};
        float *want = ref_product(&bc, &o);
        ck_assert_msg(fm_test_bits_of(want[0]) == pinned[c].want, "reference, %s: 0x%08x", pinned[c].why,
                      fm_test_bits_of(want[0]));
        free(want);
    }
    bf16_restore();
}
END_TEST

/* ---- the packers' rounding --------------------------------------------------- */

/* Finite bit patterns that do not round to infinity (with a few chosen
 * ones among them: ties, denormals, zeros of both signs). */
static void fill_patterns(float *x, size_t n, uint64_t seed)
{
    static const uint32_t chosen[] = {0x00000000u, 0x80000000u, 0x00000001u, 0x807FFFFFu,
                                      0x007F8000u, 0x007FFFFFu, 0x00800000u, 0x3F808000u,
                                      0x3F818000u, 0xBF808000u, 0x7F7F7FFFu, 0xFF7F7FFFu,
                                      0x3F807FFFu, 0x3F80FFFFu};
    fm_rng rng;
    fm_rng_seed(&rng, seed, 0);
    for (size_t i = 0; i < n; i++) {
        uint32_t u = fm_rng_u32(&rng);
        if (i % 17 == 0) u = chosen[i / 17 % (sizeof chosen / sizeof chosen[0])];
        if ((u & 0x7FFFFFFFu) > 0x7F7F7FFFu) u &= 0xBFFFFFFFu;
        x[i] = fm_test_float_of(u);
    }
}

/* op(X) [rows, cols] of patterns times the identity, on either side: C is
 * every pattern as the product reads it (-0 comes out +0: the sums start at
 * +0), through the vector packers' whole blocks and their ragged edges.
 * Case: which side, X transposed or not, and two depths (one of 48 and
 * one ragged). */
#define PATTERN_NCASES 8
START_TEST(test_bf16_pack_rounding)
{
    int c = fm_test_each_set(_i, PATTERN_NCASES);
    bool side_a = c & 1, t = c >> 1 & 1;
    int rows = side_a ? 301 : (c >> 2 ? 37 : 48), cols = side_a ? (c >> 2 ? 37 : 48) : 1001;
    /* Side A: C = X [rows, cols] * I; side B: C = I * X. */
    int m = rows, n = cols, k = side_a ? cols : rows, ld = t ? rows : cols;
    float *x = malloc((size_t)rows * cols * sizeof(float));
    float *id = calloc((size_t)k * k, sizeof(float));
    float *out = malloc((size_t)m * n * sizeof(float)), *want = malloc((size_t)m * n * sizeof(float));
    fill_patterns(x, (size_t)rows * cols, 500 + (uint64_t)c);
    for (int p = 0; p < k; p++) id[(size_t)p * k + p] = 1.0f;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            float e = ref_operand(t ? x[(size_t)j * ld + i] : x[(size_t)i * ld + j]);
            want[(size_t)i * cols + j] = e == 0.0f ? 0.0f : e;
        }
    for (int v = 0, nv = bf16_kernels(); v < nv; v++) {
        char what[96];
        snprintf(what, sizeof what, "%s, patterns as %s%s, depth %d", bf16_use(v),
                 side_a ? "A" : "B", t ? " transposed" : "", k);
        if (side_a)
            gemm_bf16(t, false, m, n, k, 1.0f, x, ld, NULL, id, k, 0.0f, out, n);
        else
            gemm_bf16(false, t, m, n, k, 1.0f, id, k, NULL, x, ld, 0.0f, out, n);
        fm_test_assert_same_bits(out, want, (size_t)m * n, what);
    }
    free(x);
    free(id);
    free(out);
    free(want);
    bf16_restore();
}
END_TEST

/* The packers' scalar rounding (gemm_bf16.h's fm_bf16_bits, and
 * fm_bf16_operand: that plus DAZ) against the formula, and against the
 * core's public conversion fm_bf16_from_f32, on a few million random
 * patterns and the edges; widening on every bf16. */
static void check_conversion(uint32_t u)
{
    float x = fm_test_float_of(u);
    uint16_t got = fm_bf16_bits(x), want = ref_bf16(x);
    if (got != want || fm_bf16_from_f32(x) != want ||
        fm_test_bits_of(fm_bf16_operand(x)) != fm_test_bits_of(ref_operand(x)))
        ck_abort_msg("0x%08x -> 0x%04x (public 0x%04x, operand 0x%08x), want 0x%04x (0x%08x)", u,
                     got, fm_bf16_from_f32(x), fm_test_bits_of(fm_bf16_operand(x)), want,
                     fm_test_bits_of(ref_operand(x)));
}

START_TEST(test_bf16_conversion)
{
    static const uint32_t edges[] = {
        0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u, 0x00007FFFu, 0x00008000u,
        0x00018000u, 0x007FFFFFu, 0x00800000u, 0x3F800000u, 0x3F808000u, 0x3F818000u,
        0x3F807FFFu, 0x3F808001u, 0x7F7F7FFFu, 0x7F7F8000u, 0x7F7FFFFFu, 0xFF7F8000u,
        0x7F800000u, 0xFF800000u, 0x7F800001u, 0x7FBFFFFFu, 0x7FC00000u, 0xFFC00000u,
        0x7FFFFFFFu, 0xFFFFFFFFu, 0xFF800001u, 0x007F8000u, 0x807F8001u};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) check_conversion(edges[i]);
    /* Ties go to even, NaNs to the one quiet NaN, the top overflows, a
     * denormal is read as zero but one that rounds up to 2^-126 is not. */
    ck_assert_uint_eq(fm_bf16_bits(fm_test_float_of(0x3F808000u)), 0x3F80);
    ck_assert_uint_eq(fm_bf16_bits(fm_test_float_of(0x3F818000u)), 0x3F82);
    ck_assert_uint_eq(fm_bf16_bits(fm_test_float_of(0xFFC12345u)), 0x7FC0);
    ck_assert_uint_eq(fm_bf16_bits(fm_test_float_of(0x7F7F8000u)), 0x7F80);
    ck_assert_uint_eq(fm_test_bits_of(fm_bf16_operand(fm_test_float_of(0x807F0000u))), 0x80000000u);
    ck_assert_uint_eq(fm_test_bits_of(fm_bf16_operand(fm_test_float_of(0x007F8000u))), 0x00800000u);
    fm_rng rng;
    fm_rng_seed(&rng, 77, 0);
    for (int i = 0; i < 4000000; i++) check_conversion(fm_rng_u32(&rng));
    for (uint32_t h = 0; h <= 0xFFFFu; h++) {
        float x = fm_bf16_float((uint16_t)h);
        ck_assert_uint_eq(fm_test_bits_of(x), h << 16);
        if (!isnan(x)) ck_assert_uint_eq(fm_bf16_bits(x), h);
    }
}
END_TEST

/* ---- one answer everywhere ------------------------------------------------- */

/* Every set this processor runs, and both avx512 kernels, give the same
 * bits on the edge-valued cases (NaNs as one value). */
START_TEST(test_bf16_all_kernels_agree)
{
    static const float ab[][2] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {-0.5f, 0.75f}};
    int c = _i;
    bcase bc = case_at(c, ab[c % 3][0], ab[c % 3][1]);
    bops o = ops_new(&bc, 1, 600 + (uint64_t)c, c % 2 == 0);
    fm_kernels sets[FM_KERNELS_COUNT];
    int nsets = fm_test_kernel_sets(sets), runs = 0;
    float *first = NULL;
    char first_name[32] = "";
    for (int s = 0; s < nsets; s++) {
        fm_test_use_kernels(sets[s]);
        for (int v = 0, nv = bf16_kernels(); v < nv; v++, runs++) {
            const char *name = bf16_use(v);
            float *got = product(&bc, &o);
            if (!first) {
                first = got;
                snprintf(first_name, sizeof first_name, "%s", name);
                continue;
            }
            char what[160];
            snprintf(what, sizeof what, "%s vs %s, ta=%d tb=%d %dx%dx%d", name, first_name, bc.ta,
                     bc.tb, bc.m, bc.n, bc.k);
            assert_same(got, first, o.nc + 1, what);
            free(got);
        }
    }
    ck_assert_int_ge(runs, nsets);
    free(first);
    ops_free(&o);
    bf16_restore();
}
END_TEST

/* The kernel is chosen as documented: vdpbf16ps on avx512 where the
 * processor has AVX512_BF16 (and not turned off), nowhere else. */
START_TEST(test_bf16_native_choice)
{
    bool has = false;
#if defined(__x86_64__)
    __builtin_cpu_init();
    has = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl");
#endif
    fm_kernels sets[FM_KERNELS_COUNT];
    int nsets = fm_test_kernel_sets(sets);
    for (int s = 0; s < nsets; s++) {
        fm_test_use_kernels(sets[s]);
        fm_gemm_bf16_allow_native(true);
        bool want = has && sets[s] == FM_KERNELS_AVX512;
        ck_assert_msg(fm_gemm_bf16_native() == want, "%s: vdpbf16ps %s", fm_kernels_name(sets[s]),
                      fm_gemm_bf16_native() ? "in use" : "not in use");
        fm_gemm_bf16_allow_native(false);
        ck_assert(!fm_gemm_bf16_native());
    }
    bf16_restore();
}
END_TEST

/* fm_sgemm_bf16 cuts C by the shape alone and never splits k: the same
 * bits for 1, 2 and 3 threads, and as one fm_gemm_serial_bf16 (an element
 * does not depend on where in C it lies).  Cases: C split by columns, then
 * by rows; plain, then both operands transposed. */
START_TEST(test_bf16_threads_independent)
{
    static const int shapes[2][3] = {{70, 530, 300}, {530, 70, 300}};
    int c = fm_test_each_set(_i, 4);
    bool t = c & 1;
    int m = shapes[c >> 1][0], n = shapes[c >> 1][1], k = shapes[c >> 1][2];
    int lda = t ? m : k, ldb = t ? k : n;
    float *a = malloc((size_t)m * k * sizeof(float)), *b = malloc((size_t)k * n * sizeof(float));
    float *whole = malloc((size_t)m * n * sizeof(float)), *c0 = malloc((size_t)m * n * sizeof(float));
    fm_test_fill(a, (size_t)m * k, -1.0f, 1.0f, 61);
    fm_test_fill(b, (size_t)k * n, -1.0f, 1.0f, 62);
    fm_test_fill(c0, (size_t)m * n, -1.0f, 1.0f, 63);
    int threads0 = fm_get_threads();
    for (int v = 0, nv = bf16_kernels(); v < nv; v++) {
        const char *name = bf16_use(v);
        memcpy(whole, c0, (size_t)m * n * sizeof(float));
        gemm_bf16(t, t, m, n, k, 0.5f, a, lda, NULL, b, ldb, 1.0f, whole, n);
        for (int th = 1; th <= 3; th++) {
            fm_set_threads(th);
            ck_assert_int_eq(fm_get_threads(), th);
            float *out = malloc((size_t)m * n * sizeof(float));
            memcpy(out, c0, (size_t)m * n * sizeof(float));
            fm_graph *g = fm_graph_new();
            fm_sgemm_bf16(g, t, t, m, n, k, 0.5f, a, lda, b, ldb, 1.0f, out, n);
            fm_graph_free(g);
            char what[96];
            snprintf(what, sizeof what, "%s, %d threads vs one product, %dx%dx%d t=%d", name, th,
                     m, n, k, t);
            fm_test_assert_same_bits(out, whole, (size_t)m * n, what);
            free(out);
        }
    }
    fm_set_threads(threads0);
    free(a);
    free(b);
    free(whole);
    free(c0);
    bf16_restore();
}
END_TEST

/* A packed once up front, through several passes over k (the last odd)
 * and several row blocks, against A packed on the fly.  Case: A transposed
 * or not. */
START_TEST(test_bf16_prepacked_a)
{
    int c = fm_test_each_set(_i, 2);
    bool ta = c & 1;
    int m = 133, n = 70, k = 601, lda = ta ? m : k;
    float *a = malloc((size_t)m * k * sizeof(float)), *b = malloc((size_t)k * n * sizeof(float));
    float *c1 = malloc((size_t)m * n * sizeof(float)), *c2 = malloc((size_t)m * n * sizeof(float));
    fm_test_fill(a, (size_t)m * k, -1.0f, 1.0f, 71);
    fm_test_fill(b, (size_t)k * n, -1.0f, 1.0f, 72);
    for (int v = 0, nv = bf16_kernels(); v < nv; v++) {
        const char *name = bf16_use(v);
        float *packed = aligned_floats(fm_gemm_bf16_prepacked_floats(m, k));
        const float *ap = fm_gemm_bf16_prepack_a(ta, m, k, a, lda, packed);
        ck_assert(ap == packed);
        gemm_bf16(ta, false, m, n, k, 1.0f, a, lda, NULL, b, n, 0.0f, c1, n);
        gemm_bf16(ta, false, m, n, k, 1.0f, a, lda, ap, b, n, 0.0f, c2, n);
        char what[64];
        snprintf(what, sizeof what, "%s, prepacked ta=%d", name, ta);
        fm_test_assert_same_bits(c2, c1, (size_t)m * n, what);
        free(packed);
    }
    free(a);
    free(b);
    free(c1);
    free(c2);
    bf16_restore();
}
END_TEST

/* ---- against the float product ------------------------------------------- */

/* With u = 2^-8, bf16's unit roundoff (8 significant bits, 7 of them
 * stored: neighbours 2^-7 apart relative to the power of two below, so
 * rounding to nearest errs by at most 2^-8 of the value; 1 + 2^-8 - 2^-16,
 * for one, rounds to 1), each operand is a(1 + d), |d| <= u, so a product
 * is off by at most
 * (2u + u^2)|a||b|.  Summing k products in float (fused or not, in any
 * order) adds at most g_k = k 2^-24 / (1 - k 2^-24) of the sum of their
 * magnitudes, for the bf16 product (of magnitudes up to (1 + u)^2 |a||b|)
 * and for the float GEMM alike.  So per element
 *     |C_bf16 - C_f32| <= (2u + u^2 + g_k (1 + (1 + u)^2)) sum_p |a_ip||b_pj|.
 * Checked on every set against its float GEMM; and the largest error seen
 * must be of bf16's order, or the operands were not rounded at all. */
START_TEST(test_bf16_vs_float_bound)
{
    int c = fm_test_each_set(_i, BF16_NCASES);
    bcase bc = case_at(c, 1.0f, 0.0f);
    bops o = ops_new(&bc, 0, 800 + (uint64_t)c, false);
    float *f32 = malloc((o.nc + 1) * sizeof(float));
    float *pack = aligned_floats(fm_gemm_pack_floats(bc.n, bc.k, false));
    fm_gemm_serial(bc.ta, bc.tb, bc.m, bc.n, bc.k, 1.0f, o.a, o.lda, NULL, o.b, o.ldb, 0.0f, f32,
                   o.ldc, pack);
    free(pack);
    const double u = 0x1p-8, eps = 0x1p-24, gk = bc.k * eps / (1.0 - bc.k * eps);
    const double coef = 2 * u + u * u + gk * (1.0 + (1.0 + u) * (1.0 + u));
    for (int v = 0, nv = bf16_kernels(); v < nv; v++) {
        const char *name = bf16_use(v);
        float *got = product(&bc, &o);
        double worst = 0.0;
        for (int i = 0; i < bc.m; i++)
            for (int j = 0; j < bc.n; j++) {
                double mag = 0.0;
                for (int p = 0; p < bc.k; p++) {
                    float x = bc.ta ? o.a[(size_t)p * o.lda + i] : o.a[(size_t)i * o.lda + p];
                    float y = bc.tb ? o.b[(size_t)j * o.ldb + p] : o.b[(size_t)p * o.ldb + j];
                    mag += fabs((double)x * y);
                }
                size_t at = (size_t)i * o.ldc + j;
                double diff = fabs((double)got[at] - f32[at]);
                ck_assert_msg(diff <= coef * mag, "%s ta=%d tb=%d %dx%dx%d: C[%d,%d] = %g, float %g: "
                              "off by %g > %g", name, bc.ta, bc.tb, bc.m, bc.n, bc.k, i, j,
                              (double)got[at], (double)f32[at], diff, coef * mag);
                if (mag > 0 && diff / mag > worst) worst = diff / mag;
            }
        /* The operands' errors partly cancel along k, by about sqrt(k); a
         * product of unrounded operands would be off by some 2^-24.  (A
         * handful of elements may all round well by chance: not checked.) */
        if (bc.m * bc.n >= 16)
            ck_assert_msg(worst > u / (4.0 * sqrt(bc.k)), "%s %dx%dx%d: at most %g off the float "
                          "product: not rounded?", name, bc.m, bc.n, bc.k, worst);
        free(got);
    }
    free(f32);
    ops_free(&o);
    bf16_restore();
}
END_TEST

static Suite *gemm_bf16_suite(void)
{
    int sets = fm_test_kernel_sets(NULL);
    Suite *s = suite_create("gemm_bf16");
    TCase *tc = tcase_create("kernel");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_bf16_vs_ref_beta0, 0, BF16_NCASES * sets);
    tcase_add_loop_test(tc, test_bf16_vs_ref_beta1_strided, 0, BF16_NCASES * sets);
    tcase_add_loop_test(tc, test_bf16_vs_ref_alpha_beta, 0, BF16_NCASES * sets);
    tcase_add_loop_test(tc, test_bf16_vs_ref_edges, 0, BF16_NCASES * sets);
    tcase_add_loop_test(tc, test_bf16_k0_scales_c, 0, sets);
    tcase_add_loop_test(tc, test_bf16_pinned, 0, PINNED_NCASES * sets);
    tcase_add_loop_test(tc, test_bf16_pack_rounding, 0, PATTERN_NCASES * sets);
    tcase_add_test(tc, test_bf16_conversion);
    tcase_add_loop_test(tc, test_bf16_all_kernels_agree, 0, BF16_NCASES);
    tcase_add_test(tc, test_bf16_native_choice);
    tcase_add_loop_test(tc, test_bf16_threads_independent, 0, 4 * sets);
    tcase_add_loop_test(tc, test_bf16_prepacked_a, 0, 2 * sets);
    tcase_add_loop_test(tc, test_bf16_vs_float_bound, 0, BF16_NCASES * sets);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(gemm_bf16_suite()); }
