#define _GNU_SOURCE  /* memrchr */
#include "fm_test_util.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/fm_io.h"

int fm_test_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

void fm_test_fill(float *a, size_t n, float lo, float hi, uint64_t seed)
{
    fm_rng rng;
    fm_rng_seed(&rng, seed, FM_RNG_TEST);
    for (size_t i = 0; i < n; i++)
        a[i] = lo + (hi - lo) * fm_rng_uniform(&rng);
}

fm_tensor *fm_test_leaf(int ndim, const int *shape, float lo, float hi, uint64_t seed, bool grad)
{
    fm_tensor *t = fm_tensor_new(FM_F32, ndim, shape);
    fm_test_fill(t->data, (size_t)t->numel, lo, hi, seed);
    if (grad) {
        t->grad = calloc((size_t)t->numel, sizeof(float));
        t->requires_grad = true;
    }
    return t;
}

double fm_test_max_rel_diff(const float *a, const float *b, size_t n)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]) / fmax(1.0, fabs((double)b[i]));
        if (d > worst || isnan(d))
            worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

const char *fm_test_tmpdir(void)
{
    static char path[4096];
    const char *base = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/fmtest.XXXXXX", base && *base ? base : "/tmp");
    ck_assert_msg(mkdtemp(path) != NULL, "mkdtemp failed for %s", path);
    return path;
}

void fm_test_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

char *fm_test_read_file(const char *path, size_t *len_out)
{
    char *buf = NULL;
    size_t len = 0;
    fm_status st = fm_file_read_all(path, 256u << 20, &buf, &len);
    ck_assert_msg(st == FM_OK, "%s", fm_error_message());
    if (len_out) *len_out = len;
    return buf;
}

char *fm_test_metrics_without_seconds(const char *path, int *lines)
{
    size_t len;
    char *text = fm_test_read_file(path, &len);
    char *out = fm_xcalloc(len + 1, 1), *w = out;
    *lines = 0;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        char *comma = memrchr(line, ',', n);
        ck_assert_msg(comma != NULL, "%s: line without a comma", path);
        memcpy(w, line, (size_t)(comma - line));
        w += comma - line;
        *w++ = '\n';
        (*lines)++;
        line += n + (nl ? 1 : 0);
    }
    free(text);
    return out;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

void fm_test_rmtree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
