/* Which kernels this process runs: the AVX-512 ones where the processor has
 * AVX-512, the portable ones (cblas_sgemm, plain C loops) elsewhere or when
 * a test asks for them.  Both give the same results up to rounding; each is
 * deterministic on its own. */
#include "fm_internal.h"

static int simd_mode = -1;  /* -1: not decided yet, 0: portable, 1: AVX-512 */

bool fm_kernels_avx512(void)
{
    int mode = __atomic_load_n(&simd_mode, __ATOMIC_RELAXED);
    if (mode < 0) {
        __builtin_cpu_init();
        mode = __builtin_cpu_supports("avx512f") ? 1 : 0;
        __atomic_store_n(&simd_mode, mode, __ATOMIC_RELAXED);
    }
    return mode == 1;
}

void fm_kernels_force_portable(bool portable)
{
    __atomic_store_n(&simd_mode, portable ? 0 : -1, __ATOMIC_RELAXED);
}

const char *fm_gemm_kernel_name(void) { return fm_kernels_avx512() ? "avx512" : "blas"; }
