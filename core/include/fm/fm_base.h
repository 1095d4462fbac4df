/* fm_base.h — errors, assertions, logging, allocation, random numbers, threads.
 *
 * Errors from the world (files, options, plugins) are reported as an fm_status
 * plus a message kept in a per-thread slot: the function that fails sets it with
 * fm_error_set() and returns the status; the caller reads fm_error_message().
 * Programmer errors (shape mismatch, NULL where forbidden) are FM_ASSERT: they
 * print file:line and the expression, then abort.  The library never calls exit().
 */
#ifndef FM_BASE_H
#define FM_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(FM_BUILDING_CORE)
#define FM_API __attribute__((visibility("default")))
#else
#define FM_API
#endif

#define FM_VERSION_STRING "0.1.0"

/* ---- status and the error slot ---------------------------------------- */

typedef enum fm_status {
    FM_OK = 0,
    FM_ERR_IO,      /* a file could not be opened, read or written */
    FM_ERR_FORMAT,  /* a file was read but its content is wrong */
    FM_ERR_ARG,     /* an option or value from the user is invalid */
    FM_ERR_PLUGIN,  /* a plugin could not be loaded or refused to work */
    FM_ERR_NOMEM,   /* an allocation sized by input data failed */
    FM_ERR_SCRIPT,  /* a Lua script failed */
    FM_ERR_STOP,    /* a callback asked to stop (not a failure) */
} fm_status;

/* Sets this thread's error slot and returns `status`, so a failing function
 * can end with `return fm_error_set(FM_ERR_IO, "%s: %s", path, strerror(errno));`. */
FM_API fm_status fm_error_set(fm_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
FM_API fm_status fm_error_setv(fm_status status, const char *fmt, va_list ap);
/* The message of the last error on this thread ("" when none). Valid until
 * the next fm_error_set on this thread. */
FM_API const char *fm_error_message(void);
FM_API fm_status fm_error_status(void);
FM_API void fm_error_clear(void);
FM_API const char *fm_status_name(fm_status status);

/* ---- assertions -------------------------------------------------------- */

FM_API __attribute__((noreturn)) void fm_abort(const char *file, int line, const char *expr);

#define FM_ASSERT(x)                                                        \
    do {                                                                    \
        if (!(x)) fm_abort(__FILE__, __LINE__, #x);                         \
    } while (0)

/* ---- allocation -------------------------------------------------------- */

/* malloc/calloc/aligned alloc that abort with a message on exhaustion.  Use
 * them for sizes the program controls; sizes read from files are checked
 * first and reported as FM_ERR_NOMEM/FM_ERR_FORMAT by the reader. */
FM_API void *fm_xmalloc(size_t bytes);
FM_API void *fm_xcalloc(size_t count, size_t size);
FM_API void *fm_xrealloc(void *p, size_t bytes);
/* 64-byte aligned, freed with free(). */
FM_API void *fm_xaligned(size_t bytes);
FM_API char *fm_xstrdup(const char *s);

/* ---- logging ------------------------------------------------------------ */

typedef enum { FM_LOG_ERROR, FM_LOG_WARN, FM_LOG_INFO, FM_LOG_DEBUG } fm_log_level;

/* Messages at or below the level go to stderr (default FM_LOG_INFO). */
FM_API void fm_log_set_level(fm_log_level level);
FM_API fm_log_level fm_log_get_level(void);
FM_API void fm_log(fm_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- random numbers ----------------------------------------------------- */

/* PCG32 (O'Neill): 64-bit state, 32-bit output, 2^63 selectable streams.  Every
 * use of randomness has its own stream, so changing one (say, turning dropout
 * off) never shifts the numbers another (say, the shuffle) draws. */
typedef struct fm_rng {
    uint64_t state;
    uint64_t inc;
} fm_rng;

enum {
    FM_RNG_INIT = 1,  /* parameter initialisation */
    FM_RNG_SPLIT,     /* train/validation split */
    FM_RNG_SHUFFLE,   /* per-epoch order */
    FM_RNG_DROPOUT,   /* dropout masks */
    FM_RNG_AUGMENT,   /* crop offsets and flips */
    FM_RNG_TEST,      /* tests and benchmarks */
    FM_RNG_ERASE,     /* random erasing */
    FM_RNG_MIX,       /* mixup and cutmix */
};

FM_API void fm_rng_seed(fm_rng *rng, uint64_t seed, uint64_t stream);
FM_API uint32_t fm_rng_u32(fm_rng *rng);
/* Uniform in [0, 1) with 24 random bits. */
FM_API float fm_rng_uniform(fm_rng *rng);
/* Uniform integer in [0, n), unbiased; n > 0. */
FM_API uint32_t fm_rng_below(fm_rng *rng, uint32_t n);
/* Fisher–Yates shuffle of a[0..n). */
FM_API void fm_rng_shuffle(fm_rng *rng, uint32_t *a, size_t n);

/* ---- 16-bit floats ------------------------------------------------------- */

/* bfloat16 (float32's sign and exponent, 7 mantissa bits) and IEEE binary16
 * (5 exponent, 10 mantissa bits), held as their bits in a uint16_t.  The
 * conversions give the bits PyTorch's CPU conversions give. */

/* Round to nearest, ties to even, as c10::BFloat16: overflow gives
 * infinity, subnormals round like normals, and every NaN becomes 0x7FC0
 * (positive quiet NaN; sign and payload are dropped, as in c10). */
FM_API uint16_t fm_bf16_from_f32(float x);
/* Exact: the bits shifted into float32's upper half (NaNs kept as they are). */
FM_API float fm_f32_from_bf16(uint16_t h);
/* Round to nearest, ties to even, as c10::Half: magnitudes from 65520 up
 * give infinity, those below 2^-14 round to binary16's subnormals (ties to
 * even, 2^-25 to zero), and every NaN becomes 0x7E00 with its sign kept. */
FM_API uint16_t fm_f16_from_f32(float x);
/* Exact for every value, subnormals and infinities included; a NaN keeps
 * its sign and payload and is made quiet (as F16C's vcvtph2ps and c10::Half). */
FM_API float fm_f32_from_f16(uint16_t h);
/* The same over arrays: dst[i] from src[i] for i < n; dst and src do not overlap. */
FM_API void fm_bf16_from_f32_n(uint16_t *dst, const float *src, size_t n);
FM_API void fm_f16_from_f32_n(uint16_t *dst, const float *src, size_t n);
FM_API void fm_f32_from_bf16_n(float *dst, const uint16_t *src, size_t n);
FM_API void fm_f32_from_f16_n(float *dst, const uint16_t *src, size_t n);

/* How floating-point tensors are stored in a file written by fmhost (the
 * tensors themselves are always float32). */
typedef enum fm_float_dtype { FM_FLOAT_F32, FM_FLOAT_BF16, FM_FLOAT_F16 } fm_float_dtype;

/* "f32", "bf16" or "f16". */
FM_API const char *fm_float_dtype_name(fm_float_dtype d);
/* The dtype called `name` ("f32", "bf16", "f16"); FM_ERR_ARG naming the choices
 * for another name. */
FM_API fm_status fm_float_dtype_parse(const char *name, fm_float_dtype *out);

/* ---- threads ------------------------------------------------------------ */

/* The host owns every thread in the process: OpenBLAS is made single-threaded
 * when the library loads (its own pool is shut down) and all parallel work
 * goes through fm_parallel_for.  n <= 0 means one thread per online core. */
FM_API void fm_set_threads(int n);
FM_API int fm_get_threads(void);

/* Runs fn(arg, task, thread) for task in [0, ntasks), spread over the pool;
 * returns when all are done.  `thread` is in [0, fm_get_threads()) and is
 * unique among tasks running at the same time (for per-thread scratch).
 * Callers split work into chunks whose count and bounds do not depend on the
 * thread count, and combine results in task order: that is what makes every
 * result bit-identical for any number of threads.  Calls do not nest: a task
 * that calls fm_parallel_for runs the inner tasks itself, serially. */
typedef void (*fm_task_fn)(void *arg, int task, int thread);
FM_API void fm_parallel_for(int ntasks, fm_task_fn fn, void *arg);

/* ---- stopping cleanly -------------------------------------------------------- */

/* A request to stop work cleanly, made by a signal handler (SIGINT, SIGTERM)
 * or a host: a training run finishes its current step, saves its state and
 * returns as interrupted.  `sig` is the signal number (any non-zero value
 * for a host).  Async-signal-safe. */
FM_API void fm_stop_request(int sig);
/* The pending request's signal number; 0 when there is none. */
FM_API int fm_stop_requested(void);
FM_API void fm_stop_clear(void);

/* ---- kernel sets ---------------------------------------------------------- */

/* The kernels a process runs, one set chosen at run time:
 *   portable  plain C loops and OpenBLAS's cblas_sgemm: any processor;
 *   avx2      fmhost's own kernels for AVX2 + FMA (x86-64 from 2013 on);
 *   avx512    the same kernels, from the same source, for AVX-512F.
 * avx2 and avx512 compute every element in the same order with the same
 * operations, so they give bit-identical results; portable rounds
 * differently (OpenBLAS sums in its own order, and 3x3 convolutions run
 * without Winograd).  Each set is deterministic for any thread count.
 *
 * The default is $FMHOST_KERNELS when set, else the best set the processor
 * runs.  Change the set only between runs, never while work is in flight. */
typedef enum fm_kernels {
    FM_KERNELS_PORTABLE,
    FM_KERNELS_AVX2,
    FM_KERNELS_AVX512,
    FM_KERNELS_COUNT
} fm_kernels;

/* "portable", "avx2" or "avx512". */
FM_API const char *fm_kernels_name(fm_kernels k);
/* The set called `name`; FM_ERR_ARG (naming the choices) for another name. */
FM_API fm_status fm_kernels_parse(const char *name, fm_kernels *out);
/* true when this build has the set and this processor runs it. */
FM_API bool fm_kernels_supported(fm_kernels k);
/* The fastest supported set. */
FM_API fm_kernels fm_kernels_best(void);
/* The set in use. */
FM_API fm_kernels fm_kernels_active(void);
/* Makes k the set in use; FM_ERR_ARG (naming the processor's sets) when
 * it is not supported. */
FM_API fm_status fm_kernels_use(fm_kernels k);
/* Applies $FMHOST_KERNELS (the best set when unset or empty); an unknown or
 * unsupported value is FM_ERR_ARG with a message naming the variable, the
 * value and the sets this processor runs.  Programs call it once at start;
 * until they do, an invalid value is ignored (the best set runs). */
FM_API fm_status fm_kernels_use_env(void);

/* Seconds from a monotonic clock. */
FM_API double fm_now(void);

#ifdef __cplusplus
}
#endif
#endif /* FM_BASE_H */
