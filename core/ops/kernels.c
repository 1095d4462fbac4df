/* Which kernel set this process runs (see fm_base.h and core/kernels/kset.h):
 * $FMHOST_KERNELS or the best set the processor supports, chosen on first
 * use; fm_kernels_use() changes it between runs. */
#include "fm_internal.h"
#include "kset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const fm_kset fm_k_table_portable;
#ifdef FM_HAVE_X86_KERNELS
extern const fm_kset fm_k_table_avx2, fm_k_table_avx512;
#endif

/* NULL: not in this build (the vector sets are built for x86-64 only). */
static const fm_kset *const kset_tables[FM_KERNELS_COUNT] = {
    [FM_KERNELS_PORTABLE] = &fm_k_table_portable,
#ifdef FM_HAVE_X86_KERNELS
    [FM_KERNELS_AVX2] = &fm_k_table_avx2,
    [FM_KERNELS_AVX512] = &fm_k_table_avx512,
#endif
};

static const char *const kset_names[FM_KERNELS_COUNT] = {"portable", "avx2", "avx512"};

static const fm_kset *kset_current;  /* NULL until first use */

const char *fm_kernels_name(fm_kernels k)
{
    return k >= 0 && k < FM_KERNELS_COUNT ? kset_names[k] : "?";
}

static bool kset_lookup(const char *name, fm_kernels *out)
{
    for (int k = 0; k < FM_KERNELS_COUNT; k++)
        if (strcmp(name, kset_names[k]) == 0) {
            *out = (fm_kernels)k;
            return true;
        }
    return false;
}

fm_status fm_kernels_parse(const char *name, fm_kernels *out)
{
    if (kset_lookup(name, out)) return FM_OK;
    return fm_error_set(FM_ERR_ARG, "unknown kernel set '%s' (choose portable, avx2 or avx512)",
                        name);
}

bool fm_kernels_supported(fm_kernels k)
{
    if (k < 0 || k >= FM_KERNELS_COUNT || !kset_tables[k]) return false;
#ifdef FM_HAVE_X86_KERNELS
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (k == FM_KERNELS_AVX2) return avx2;
    if (k == FM_KERNELS_AVX512) return avx2 && __builtin_cpu_supports("avx512f");
#endif
    return true;
}

fm_kernels fm_kernels_best(void)
{
    int k = FM_KERNELS_COUNT - 1;
    while (k > 0 && !fm_kernels_supported((fm_kernels)k)) k--;
    return (fm_kernels)k;
}

/* The supported sets as "portable, avx2", for messages. */
static const char *kset_supported_list(char *buf, size_t size)
{
    buf[0] = '\0';
    for (int k = 0; k < FM_KERNELS_COUNT; k++)
        if (fm_kernels_supported((fm_kernels)k)) {
            size_t len = strlen(buf);
            snprintf(buf + len, size - len, "%s%s", len ? ", " : "", kset_names[k]);
        }
    return buf;
}

fm_status fm_kernels_use(fm_kernels k)
{
    if (!fm_kernels_supported(k)) {
        char list[64];
        return fm_error_set(FM_ERR_ARG,
                            "this processor (or build) cannot run the %s kernels; it runs: %s "
                            "(choose one of those)",
                            fm_kernels_name(k), kset_supported_list(list, sizeof list));
    }
    __atomic_store_n(&kset_current, kset_tables[k], __ATOMIC_RELEASE);
    return FM_OK;
}

/* $FMHOST_KERNELS as a supported set, or the best one; *bad says whether
 * the variable named something else (the error is then set if `report`). */
static fm_kernels kset_from_env(bool report, bool *bad)
{
    const char *env = getenv("FMHOST_KERNELS");
    fm_kernels k;
    *bad = false;
    if (!env || !*env) return fm_kernels_best();
    if (!kset_lookup(env, &k)) {
        *bad = true;
        if (report)
            fm_error_set(FM_ERR_ARG,
                     "FMHOST_KERNELS=%s: unknown kernel set (choose portable, avx2 or avx512, "
                     "or unset it for the best this processor runs)", env);
        return fm_kernels_best();
    }
    if (!fm_kernels_supported(k)) {
        char list[64];
        *bad = true;
        if (report)
            fm_error_set(FM_ERR_ARG,
                     "FMHOST_KERNELS=%s: this processor (or build) cannot run the %s kernels; "
                     "it runs: %s (set one of those, or unset FMHOST_KERNELS for the best)",
                     env, env, kset_supported_list(list, sizeof list));
        return fm_kernels_best();
    }
    return k;
}

fm_status fm_kernels_use_env(void)
{
    bool bad;
    fm_kernels k = kset_from_env(true, &bad);
    __atomic_store_n(&kset_current, kset_tables[k], __ATOMIC_RELEASE);
    return bad ? FM_ERR_ARG : FM_OK;
}

const fm_kset *fm_kset_active(void)
{
    const fm_kset *ks = __atomic_load_n(&kset_current, __ATOMIC_ACQUIRE);
    if (ks) return ks;
    bool bad;
    ks = kset_tables[kset_from_env(false, &bad)];
    /* Threads racing here all store the same table. */
    __atomic_store_n(&kset_current, ks, __ATOMIC_RELEASE);
    return ks;
}

fm_kernels fm_kernels_active(void) { return fm_kset_active()->id; }

double fm_kernels_peak_gflops(double seconds)
{
    fm_k_fma_peak_fn *peak = fm_kset_active()->fma_peak;
    if (!peak) return 0.0;
    float sink;
    int64_t iters = 1 << 16;
    double best = 0.0, t_end = fm_now() + seconds;
    /* Best of repeated bursts: the first ones also wake the core up. */
    do {
        double t0 = fm_now();
        double flops = peak(iters, &sink);
        double dt = fm_now() - t0;
        if (dt < 1e-3) {
            iters *= 4;
            continue;
        }
        if (flops / dt > best) best = flops / dt;
    } while (fm_now() < t_end);
    return best / 1e9;
}
