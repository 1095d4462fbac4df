/* fm_test_util.h — helpers shared by the Check test executables. */
#ifndef FM_TEST_UTIL_H
#define FM_TEST_UTIL_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fm/fm_base.h"
#include "fm/fm_tensor.h"

/* Runs every test of the suite (forking, as Check does by default) and
 * returns the process exit status: 0 when all passed. */
int fm_test_run(Suite *s);

/* Fills a[0..n) uniformly in [lo, hi) from a PCG stream seeded with `seed`. */
void fm_test_fill(float *a, size_t n, float lo, float hi, uint64_t seed);

/* A heap float tensor filled by fm_test_fill; with `grad`, it requires grad
 * and owns a zeroed heap gradient (freed by fm_tensor_free). */
fm_tensor *fm_test_leaf(int ndim, const int *shape, float lo, float hi, uint64_t seed, bool grad);

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

#endif /* FM_TEST_UTIL_H */
