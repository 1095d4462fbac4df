/* fmhost bench --gemm: the matrix products of ResCNN's training step, one
 * thread, by the kernel set in use beside OpenBLAS (the portable set's
 * product), against the set's peak multiply-add rate measured here; and the
 * same products in bf16 (fm_gemm_serial_bf16) on the set in use, by
 * vdpbf16ps where the processor has AVX512_BF16 and by its emulation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fm_internal.h"

/* ResCNN (width 32, batch 64) as the convolutions run them: Winograd's
 * products [O, C] x [C, tiles] and its weight gradient's [O, tiles] x
 * [tiles, C], the strided convolutions' and the stem's direct products
 * [O, C*9] x [C*9, columns of a group of images], and the direct weight
 * gradient of the 7x7 stage. */
static const struct gemm_shape {
    const char *what;
    int m, n, k;
} gemm_shapes[] = {
    {"stem, direct", 32, 1652, 9},
    {"stage 1 3x3, Winograd", 32, 196, 32},
    {"stage 1 3x3, Winograd dW", 32, 32, 196},
    {"stage 2 entry 3x3/2, direct", 64, 840, 288},
    {"stage 2 3x3, Winograd", 64, 196, 64},
    {"stage 2 3x3, Winograd dW", 64, 64, 196},
    {"stage 3 entry 3x3/2, direct", 128, 448, 576},
    {"stage 3 3x3, Winograd", 128, 128, 128},
    {"stage 3 3x3, direct dW", 128, 1152, 455},
};
#define GEMM_NSHAPES ((int)(sizeof gemm_shapes / sizeof gemm_shapes[0]))

/* Seconds per product (bf16: fm_gemm_serial_bf16's) on the set in use: the
 * best of five runs of about `seconds` / 5 each (best, not mean: these
 * machines are shared). */
static double gemm_time(const struct gemm_shape *s, const float *a, const float *b, float *c,
                        float *pack, double seconds, bool bf16)
{
    int reps = 1;
    double best = 1e30;
    for (int round = 0; round < 6; round++) {
        double t0 = fm_now();
        for (int r = 0; r < reps; r++)
            if (bf16)
                fm_gemm_serial_bf16(false, false, s->m, s->n, s->k, 1.0f, a, s->k, NULL, b, s->n,
                                    0.0f, c, s->n, pack);
            else
                fm_gemm_serial(false, false, s->m, s->n, s->k, 1.0f, a, s->k, NULL, b, s->n,
                               0.0f, c, s->n, pack);
        double per = (fm_now() - t0) / reps;
        if (round > 0 && per < best) best = per;  /* round 0 warms up and sizes reps */
        reps = (int)(seconds / 5 / per) + 1;
    }
    return best;
}

static void *gemm_buffer(size_t floats)
{
    float *p = aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "fmhost bench: out of memory\n");
        exit(FM_EXIT_FAIL);
    }
    fm_rng rng;
    fm_rng_seed(&rng, floats, FM_RNG_TEST);
    for (size_t i = 0; i < floats; i++) p[i] = fm_rng_uniform(&rng) - 0.5f;
    return p;
}

int fm_cli_bench_gemm(double seconds)
{
    fm_kernels own = fm_kernels_active();
    if (own == FM_KERNELS_PORTABLE) {
        fprintf(stderr, "fmhost bench --gemm: the portable kernels have no GEMM of their own "
                        "(they call OpenBLAS); choose a vector set with --kernels avx2 or avx512\n");
        return FM_EXIT_USAGE;
    }
    double peak = fm_kernels_peak_gflops(seconds);
    fm_gemm_bf16_allow_native(true);
    bool native = fm_gemm_bf16_native();
    printf("kernels %s, one thread: peak %.1f GFLOP/s (independent vector multiply-adds); "
           "OpenBLAS runs its %s kernels (OPENBLAS_CORETYPE chooses others)\n",
           fm_kernels_name(own), peak, fm_gemm_blas_core());
    printf("bf16: operands rounded to bfloat16 as they are packed, sums in float32; by "
           "vdpbf16ps%s and by its emulation (two multiply-adds a pair)\n\n",
           native ? "" : " (not on this set or processor: -)");
    printf("| product | m | n | k | %s GFLOP/s | of peak | OpenBLAS GFLOP/s | of peak "
           "| bf16 vdpbf16ps GFLOP/s | bf16 emulated GFLOP/s |\n", fm_kernels_name(own));
    printf("|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    double flops_all = 0.0, t_own = 0.0, t_blas = 0.0, t_dp = 0.0, t_emu = 0.0;
    for (int i = 0; i < GEMM_NSHAPES; i++) {
        const struct gemm_shape *s = &gemm_shapes[i];
        float *a = gemm_buffer((size_t)s->m * s->k), *b = gemm_buffer((size_t)s->k * s->n);
        float *c = gemm_buffer((size_t)s->m * s->n);
        double flops = 2.0 * s->m * s->n * s->k, t[2];
        for (int side = 0; side < 2; side++) {
            fm_kernels k = side == 0 ? own : FM_KERNELS_PORTABLE;
            if (fm_kernels_use(k) != FM_OK) return fm_cli_fail("bench", fm_error_status());
            float *pack = gemm_buffer(fm_gemm_pack_floats(s->n, s->k, false));
            t[side] = gemm_time(s, a, b, c, pack, seconds, false);
            free(pack);
        }
        fm_kernels_use(own);
        /* bf16: vdpbf16ps (where there is one), then the emulation. */
        double tb[2] = {0.0, 0.0};
        float *pack = gemm_buffer(fm_gemm_bf16_pack_floats());
        for (int side = native ? 0 : 1; side < 2; side++) {
            fm_gemm_bf16_allow_native(side == 0);
            tb[side] = gemm_time(s, a, b, c, pack, seconds, true);
        }
        fm_gemm_bf16_allow_native(true);
        free(pack);
        double g_own = flops / t[0] / 1e9, g_blas = flops / t[1] / 1e9;
        char dp[32] = "-";
        if (native) snprintf(dp, sizeof dp, "%.1f", flops / tb[0] / 1e9);
        printf("| %s | %d | %d | %d | %.1f | %.0f%% | %.1f | %.0f%% | %s | %.1f |\n", s->what,
               s->m, s->n, s->k, g_own, 100.0 * g_own / peak, g_blas, 100.0 * g_blas / peak, dp,
               flops / tb[1] / 1e9);
        fflush(stdout);
        flops_all += flops;
        t_own += t[0];
        t_blas += t[1];
        t_dp += tb[0];
        t_emu += tb[1];
        free(a);
        free(b);
        free(c);
    }
    double g_own = flops_all / t_own / 1e9, g_blas = flops_all / t_blas / 1e9;
    char dp[32] = "-";
    if (native) snprintf(dp, sizeof dp, "%.1f", flops_all / t_dp / 1e9);
    printf("| all, one of each | | | | %.1f | %.0f%% | %.1f | %.0f%% | %s | %.1f |\n", g_own,
           100.0 * g_own / peak, g_blas, 100.0 * g_blas / peak, dp, flops_all / t_emu / 1e9);
    return FM_EXIT_OK;
}
