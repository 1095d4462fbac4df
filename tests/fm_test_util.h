/* fm_test_util.h — helpers shared by the Check test executables. */
#ifndef FM_TEST_UTIL_H
#define FM_TEST_UTIL_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fm/fm_base.h"
#include "fm/fm_tensor.h"

/* Applies $FMHOST_KERNELS (failing loudly, with a non-zero status, when it
 * names no set this processor runs), prints which kernel sets the per-set
 * tests compare against the references and which one the others run, then
 * runs every test of the suite (forking, as Check does by default).
 * Returns the process exit status: 0 when all passed. */
int fm_test_run(Suite *s);

/* ---- kernel sets ------------------------------------------------------------
 *
 * A test that must hold on every kernel set is a loop test with ncases
 * iterations per set, registered at suite creation with exactly as many
 * iterations as this processor has sets to run, so that none passes without
 * checking anything:
 *
 *     tcase_add_loop_test(tc, test_x, 0, NCASES * fm_test_kernel_sets(NULL));
 *
 * and iteration _i runs case fm_test_each_set(_i, NCASES) (which makes that
 * iteration's set active) and ends with fm_test_restore_kernels().  The
 * same with fm_test_vector_sets / fm_test_each_vector_set for what only
 * fmhost's own kernels promise, and fm_test_vector_pairs / fm_test_each_pair
 * for the bit-identity of two vector sets. */

/* Most pairs of distinct kernel sets. */
#define FM_TEST_MAX_PAIRS (FM_KERNELS_COUNT * (FM_KERNELS_COUNT - 1) / 2)

/* The sets this processor and build run, in the enum's order (portable
 * first), into out (may be NULL); returns how many.  With $FMHOST_KERNELS
 * set, only that set: a run forced onto one set tests that set (the
 * default run tests them all, and CI runs both). */
int fm_test_kernel_sets(fm_kernels out[FM_KERNELS_COUNT]);
/* Of those, the vector sets: fmhost's own kernels (every set but portable). */
int fm_test_vector_sets(fm_kernels out[FM_KERNELS_COUNT]);
/* Every pair {a, b}, a before b, of supported vector sets: the sets whose
 * results must agree bit for bit.  out may be NULL; returns how many (none
 * with $FMHOST_KERNELS set: one set, no pair). */
int fm_test_vector_pairs(fm_kernels out[FM_TEST_MAX_PAIRS][2]);

/* Makes k the kernel set in use; fails the test if it cannot. */
void fm_test_use_kernels(fm_kernels k);
/* Makes the default set (the one fm_kernels_use_env picks) active again. */
void fm_test_restore_kernels(void);

/* Iteration i of a loop test over ncases cases per supported set (or per
 * supported vector set): makes set i / ncases active and returns the case,
 * i % ncases. */
int fm_test_each_set(int i, int ncases);
int fm_test_each_vector_set(int i, int ncases);
/* Iteration i of a loop test over ncases cases per pair of vector sets:
 * stores pair i / ncases in pair (activating neither) and returns the case. */
int fm_test_each_pair(int i, int ncases, fm_kernels pair[2]);
/* The name of the set in use, for failure messages. */
const char *fm_test_kernels_name(void);

/* A float's bits, and the float with those bits. */
static inline uint32_t fm_test_bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float fm_test_float_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Fills a[0..n) uniformly in [lo, hi) from a PCG stream seeded with `seed`. */
void fm_test_fill(float *a, size_t n, float lo, float hi, uint64_t seed);

/* A heap float tensor filled by fm_test_fill; with `grad`, it requires grad
 * and owns a zeroed heap gradient (freed by fm_tensor_free). */
fm_tensor *fm_test_leaf(int ndim, const int *shape, float lo, float hi, uint64_t seed, bool grad);

/* The index of the first element where a and b differ in their bits, or
 * -1 when all n are identical (for messages that say where). */
ptrdiff_t fm_test_first_diff(const float *a, const float *b, size_t n);

/* Fails the test unless a and b [n] are bit-identical, naming `what`, the
 * first differing element and both values. */
void fm_test_assert_same_bits(const float *a, const float *b, size_t n, const char *what);

/* Largest |a-b| / max(1, |b|) over n elements. */
double fm_test_max_rel_diff(const float *a, const float *b, size_t n);

/* A new empty directory under $TMPDIR (or /tmp), e.g. "/tmp/fmtest.ab12cd";
 * the returned string is static per call site's copy: copy it if you keep it. */
const char *fm_test_tmpdir(void);

/* Writes `len` bytes to `path`; aborts the test on failure. */
void fm_test_write_file(const char *path, const void *data, size_t len);

/* The whole file, NUL-terminated, malloc'ed (the caller frees it); its length
 * in *len_out when not NULL.  Fails the test when it cannot be read. */
char *fm_test_read_file(const char *path, size_t *len_out);

/* A metrics.csv with the last (seconds) column of every line removed: what
 * must be identical between two runs with one seed.  *lines gets the line
 * count.  The caller frees the result. */
char *fm_test_metrics_without_seconds(const char *path, int *lines);

/* rm -rf dir (errors ignored). */
void fm_test_rmtree(const char *dir);

/* True when a temporary file of path's ("<path>.tmp.*") is left in its
 * directory. */
bool fm_test_tmp_left(const char *path);

/* ---- running a program --------------------------------------------------------- */

typedef struct fm_test_proc {
    int status;     /* exit status, or 128 + the signal that ended it */
    char *out, *err;  /* what it wrote, NUL-terminated (free with fm_test_proc_free) */
} fm_test_proc;

/* Runs argv[0] with argv (NULL-terminated), stdin from /dev/null, stdout and
 * stderr captured in files (so a chatty child never blocks on a pipe, and
 * stderr is not a terminal), $FMHOST_DATA unset, and `env` ("NAME=VALUE",
 * or NULL) added to its environment.  A child still running after
 * `timeout` seconds (0: no limit) gets SIGALRM (status 128 + 14): a hang
 * fails the test that asserts the status rather than the whole run.  Fails the test when
 * argv[0] cannot be run (127). */
void fm_test_spawn(fm_test_proc *r, char *const *argv, const char *env, unsigned timeout);
void fm_test_proc_free(fm_test_proc *r);

#endif /* FM_TEST_UTIL_H */
