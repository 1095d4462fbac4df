/* The bf16 matrix products (what they compute: core/kernels/gemm_bf16.h):
 * fm_gemm_serial_bf16, one thread's product (fm_sgemm_bf16, in gemm.c,
 * splits a product over the pool into these as fm_sgemm does).
 *
 * Which kernel runs: on the avx512 set, where the processor has
 * AVX512_BF16, the copy that runs vdpbf16ps; on avx2 and avx512 otherwise,
 * the same source emulating it with two fused multiply-adds per pair; on
 * the portable set, the loop below, which flushes denormals in software.
 * The vector kernels run with MXCSR set to DAZ|FTZ for the call — for the
 * emulation's sums and, on every copy, the update of C — and put back after
 * it; MXCSR is per thread, so each block of fm_sgemm_bf16 sets its own. */
#include "ops_util.h"
#include "gemm_bf16.h"

#include <math.h>

#ifdef FM_HAVE_X86_KERNELS
#include <xmmintrin.h>
/* All exceptions masked, round to nearest even, DAZ (bit 6), FTZ (bit 15). */
#define BF16_MXCSR 0x9FC0u
#endif

/* The portable loop's block of op(B)'s columns, rounded into the workspace. */
#define BF16_NC 480

/* ---- which kernel -------------------------------------------------------- */

static bool bf16_native_allowed = true;

/* Whether this build has the vdpbf16ps copy and the processor runs it
 * (asked once; threads racing here all store the same answer). */
static bool bf16_native_supported(void)
{
#ifdef FM_HAVE_BF16_KERNEL
    static int known = -1;
    int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (k < 0) {
        __builtin_cpu_init();
        k = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl");
        __atomic_store_n(&known, k, __ATOMIC_RELAXED);
    }
    return k;
#else
    return false;
#endif
}

bool fm_gemm_bf16_native(void)
{
    return fm_kernels_active() == FM_KERNELS_AVX512 &&
           __atomic_load_n(&bf16_native_allowed, __ATOMIC_RELAXED) && bf16_native_supported();
}

void fm_gemm_bf16_allow_native(bool allow)
{
    __atomic_store_n(&bf16_native_allowed, allow, __ATOMIC_RELAXED);
}

typedef struct bf16_kernel {
    fm_k_gemm_bf16_fn *gemm;  /* NULL: the portable loop */
    fm_k_gemm_bf16_prepack_fn *prepack;
    int mr;
} bf16_kernel;

static bf16_kernel bf16_active(void)
{
    switch (fm_kernels_active()) {
#ifdef FM_HAVE_X86_KERNELS
    case FM_KERNELS_AVX512:
#ifdef FM_HAVE_BF16_KERNEL
        if (fm_gemm_bf16_native())
            return (bf16_kernel){fm_k_gemm_bf16_avx512bf16, fm_k_gemm_bf16_prepack_avx512bf16,
                                 fm_k_gemm_bf16_mr_avx512bf16};
#endif
        return (bf16_kernel){fm_k_gemm_bf16_avx512, fm_k_gemm_bf16_prepack_avx512,
                             fm_k_gemm_bf16_mr_avx512};
    case FM_KERNELS_AVX2:
        return (bf16_kernel){fm_k_gemm_bf16_avx2, fm_k_gemm_bf16_prepack_avx2,
                             fm_k_gemm_bf16_mr_avx2};
#endif
    default:
        return (bf16_kernel){NULL, NULL, 1};
    }
}

/* ---- the portable loop: DAZ|FTZ in software ------------------------------ */

/* A denormal as a zero of its sign (DAZ on an input). */
static inline float bf16_flush(float x) { return fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x; }

/* fma(x, y, z) as the vector sets compute it under DAZ|FTZ, for x, y, z
 * neither denormal: rounded once, to nearest even, and flushed to a zero of
 * its sign if the result, rounded as though the exponent were unbounded, is
 * below 2^-126.  fmaf rounds tiny results to the denormal grid instead,
 * which differs just below 2^-126 (2^-126 - 2^-150 flushes, yet rounds up
 * to 2^-126 on that grid), so a result under 2^-100 is computed again
 * scaled by 2^64, where it rounds in the normal range.  No overflow: the
 * exact result being nonzero and under 2^-100, |z| < 2^64 (else the exact
 * x*y + z is a multiple of a large power of two) and the smaller of |x|,
 * |y| is at most sqrt(|x*y|) < 2^32.  A multiplication is bf16_fma(x, y,
 * -0) and an addition bf16_fma(1, x, z): the same bits. */
static float bf16_fma(float x, float y, float z)
{
    float r = fmaf(x, y, z);
    if (!(fabsf(r) < 0x1p-100f) || r == 0.0f) return r;
    if (fabsf(x) < fabsf(y))
        x *= 0x1p64f;
    else
        y *= 0x1p64f;
    float s = fmaf(x, y, z * 0x1p64f);
    return fabsf(s) < 0x1p-62f ? copysignf(0.0f, s) : s * 0x1p-64f;
}

/* C's element after a pass with sums `sum`: the vector kernels' update
 * (core/kernels/gemm_bf16.c), flushed. */
static inline float bf16_update(float sum, const float *c, float alpha, float beta)
{
    if (alpha == 1.0f && beta == 0.0f) return sum;
    float x = alpha == 1.0f ? sum : bf16_fma(alpha, sum, -0.0f);
    if (beta == 1.0f) return bf16_fma(1.0f, x, bf16_flush(*c));
    if (beta != 0.0f) return bf16_fma(beta, bf16_flush(*c), x);
    return x;
}

/* op(A)'s row i, elements p0 .. p0 + kce of it, as packed operands (zero
 * past k) into dst. */
static void bf16_row_a(float *dst, bool trans_a, const float *a, int lda, int i, int p0, int kc,
                       int kce)
{
    for (int p = 0; p < kce; p++)
        dst[p] = p >= kc ? 0.0f
                         : fm_bf16_operand(trans_a ? a[(size_t)(p0 + p) * lda + i]
                                                   : a[(size_t)i * lda + p0 + p]);
}

/* s[0..nc) = one pass's sums of a row ar [kce] against the rows of op(B)
 * bt [kce][nc], in the vector kernels' order, each fma(x, y, s) computed as
 * s + x*y then flushed.  The same bits wherever x*y is exact in float — a
 * product of two bf16 is, unless it falls below 2^-126 or overflows — and
 * the sum of two floats that comes out under 2^-126 is exact, so flushing it
 * is FTZ's.  Returns false when some product was neither (s is then to be
 * computed by bf16_sums_exact).  Plain loops over the columns: the compiler
 * vectorises them. */
static bool bf16_sums_fast(float *restrict s, const float *ar, const float *restrict bt, int kce,
                           int nc)
{
    int inexact = 0;
    for (int j = 0; j < nc; j++) s[j] = 0.0f;
    for (int p = 0; p < kce; p += 2) {
        /* The pair's odd element first; products of a zero, an infinity or
         * a NaN are what fma makes of them. */
        const float x1 = ar[p + 1], x0 = ar[p];
        const float *restrict y1 = bt + (size_t)(p + 1) * nc, *restrict y0 = bt + (size_t)p * nc;
        const int f1 = x1 != 0.0f && fabsf(x1) <= FLT_MAX, f0 = x0 != 0.0f && fabsf(x0) <= FLT_MAX;
        for (int j = 0; j < nc; j++) {
            float xy1 = x1 * y1[j], xy0 = x0 * y0[j], r = s[j] + xy1;
            r = fabsf(r) < FLT_MIN ? copysignf(0.0f, r) : r;
            r = r + xy0;
            s[j] = fabsf(r) < FLT_MIN ? copysignf(0.0f, r) : r;
            inexact |= f1 & (((fabsf(xy1) < FLT_MIN) & (y1[j] != 0.0f)) |
                             ((fabsf(xy1) > FLT_MAX) & (fabsf(y1[j]) <= FLT_MAX)));
            inexact |= f0 & (((fabsf(xy0) < FLT_MIN) & (y0[j] != 0.0f)) |
                             ((fabsf(xy0) > FLT_MAX) & (fabsf(y0[j]) <= FLT_MAX)));
        }
    }
    return !inexact;
}

/* The same by bf16_fma, one element at a time. */
static void bf16_sums_exact(float *s, const float *ar, const float *bt, int kce, int nc)
{
    for (int j = 0; j < nc; j++) {
        float sum = 0.0f;
        for (int p = 0; p < kce; p += 2) {
            sum = bf16_fma(ar[p + 1], bt[(size_t)(p + 1) * nc + j], sum);
            sum = bf16_fma(ar[p], bt[(size_t)p * nc + j], sum);
        }
        s[j] = sum;
    }
}

/* op(B)(p, j), B given as the kernels take it (kset.h's fm_gemm_b). */
static inline float bf16_b_elem(const fm_gemm_b *gb, bool trans_b, int p, int j)
{
    if (trans_b) return gb->rows ? gb->rows[j][p] : gb->b[(size_t)j * gb->ldb + p];
    if (gb->segs) return gb->segs[j / gb->seg][(size_t)p * gb->ldb + j % gb->seg];
    return gb->rows ? gb->rows[p][j] : gb->b[(size_t)p * gb->ldb + j];
}

/* The portable set's product: per pass over k and block of BF16_NC columns,
 * op(B)'s rows rounded into the workspace [kce][nc], op(A)'s row by row (or
 * read from the prepacked rows [m][k rounded up to even]), the row's sums,
 * then C's update. */
static void bf16_loop(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *a_packed, const fm_gemm_b *gb,
                      float beta, float *c, int ldc, float *pack)
{
    const int ke = k + (k & 1);
    float *bt = pack, *arow = bt + (size_t)BF16_NC * FM_GEMM_BF16_KC;
    float *sums = arow + FM_GEMM_BF16_KC;
    for (int p0 = 0; p0 < k; p0 += FM_GEMM_BF16_KC) {
        int kc = k - p0 < FM_GEMM_BF16_KC ? k - p0 : FM_GEMM_BF16_KC, kce = kc + (kc & 1);
        float pass_beta = p0 == 0 ? beta : 1.0f;
        for (int j0 = 0; j0 < n; j0 += BF16_NC) {
            int nc = n - j0 < BF16_NC ? n - j0 : BF16_NC;
            for (int p = 0; p < kce; p++)
                for (int j = 0; j < nc; j++)
                    bt[(size_t)p * nc + j] =
                        p >= kc ? 0.0f : fm_bf16_operand(bf16_b_elem(gb, trans_b, p0 + p, j0 + j));
            for (int i = 0; i < m; i++) {
                const float *ar = arow;
                if (a_packed)
                    ar = a_packed + (size_t)i * ke + p0;
                else
                    bf16_row_a(arow, trans_a, a, lda, i, p0, kc, kce);
                if (!bf16_sums_fast(sums, ar, bt, kce, nc)) bf16_sums_exact(sums, ar, bt, kce, nc);
                float *ci = c + (size_t)i * ldc + j0;
                for (int j = 0; j < nc; j++) ci[j] = bf16_update(sums[j], &ci[j], alpha, pass_beta);
            }
        }
    }
}

_Static_assert((size_t)BF16_NC * FM_GEMM_BF16_KC + FM_GEMM_BF16_KC + BF16_NC <=
                   FM_GEMM_BF16_PACK_FLOATS,
               "the portable loop's workspace");

/* ---- entry points ---------------------------------------------------------- */

size_t fm_gemm_bf16_pack_floats(void) { return FM_GEMM_BF16_PACK_FLOATS; }

void fm_gemm_bf16_product(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *a_packed, const fm_gemm_b *gb,
                          float beta, float *c, int ldc, float *pack)
{
    FM_ASSERT(m >= 0 && n >= 0 && k >= 0);
    if (m == 0 || n == 0) return;
    /* DAZ reads a denormal alpha or beta as zero; so does every set, since
     * here they are flushed before any set looks at them. */
    alpha = bf16_flush(alpha);
    beta = bf16_flush(beta);
    if (k == 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                float *e = c + (size_t)i * ldc + j;
                *e = beta == 0.0f ? 0.0f : bf16_fma(beta, bf16_flush(*e), -0.0f);
            }
        return;
    }
    FM_ASSERT(pack && ((uintptr_t)pack & 63) == 0);
    bf16_kernel kr = bf16_active();
    if (!kr.gemm) {
        bf16_loop(trans_a, trans_b, m, n, k, alpha, a, lda, a_packed, gb, beta, c, ldc, pack);
        return;
    }
#ifdef FM_HAVE_X86_KERNELS
    /* The kernel is called through a pointer, from another object: no
     * arithmetic moves across the two writes of MXCSR. */
    unsigned csr = _mm_getcsr();
    _mm_setcsr(BF16_MXCSR);
    kr.gemm(trans_a, trans_b, m, n, k, alpha, a, lda, a_packed, gb, beta, c, ldc, pack);
    _mm_setcsr(csr);
#endif
}

void fm_gemm_serial_bf16(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *a_packed, const float *b, int ldb,
                         float beta, float *c, int ldc, float *pack)
{
    fm_gemm_b gb = {.b = b, .ldb = ldb};
    fm_gemm_bf16_product(trans_a, trans_b, m, n, k, alpha, a, lda, a_packed, &gb, beta, c, ldc,
                         pack);
}

size_t fm_gemm_bf16_prepacked_floats(int m, int k)
{
    FM_ASSERT(m >= 0 && k >= 0);
    return fm_gemm_bf16_prepacked_size(m, k, bf16_active().mr);
}

const float *fm_gemm_bf16_prepack_a(bool trans_a, int m, int k, const float *a, int lda,
                                    float *dst)
{
    FM_ASSERT(m >= 0 && k >= 0);
    if (m == 0 || k == 0) return dst;
    bf16_kernel kr = bf16_active();
    if (kr.prepack) {
        kr.prepack(trans_a, m, k, a, lda, dst);
        return dst;
    }
    const int ke = k + (k & 1);
    for (int i = 0; i < m; i++) bf16_row_a(dst + (size_t)i * ke, trans_a, a, lda, i, 0, k, ke);
    return dst;
}

