#define _GNU_SOURCE  /* memrchr */
#include "fm_test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm/fm_io.h"

/* True when $FMHOST_KERNELS names a set (fm_test_run has checked that it
 * is a valid one), stored in *k when k is not NULL. */
static bool forced_set(fm_kernels *k)
{
    const char *env = getenv("FMHOST_KERNELS");
    fm_kernels parsed;
    if (!env || !*env || fm_kernels_parse(env, &parsed) != FM_OK) return false;
    if (k) *k = parsed;
    return true;
}

int fm_test_run(Suite *s)
{
    /* A mistyped FMHOST_KERNELS would otherwise leave the default set
     * running and a run that checked the wrong kernels passing. */
    if (fm_kernels_use_env() != FM_OK) {
        fprintf(stderr, "%s\nno test ran\n", fm_error_message());
        srunner_free(srunner_create(s));  /* (frees the suite) */
        return EXIT_FAILURE;
    }
    /* How much this run checks depends on the processor: say so in the log. */
    fm_kernels sets[FM_KERNELS_COUNT];
    int n = fm_test_kernel_sets(sets);
    printf("kernel sets tested:");
    for (int i = 0; i < n; i++) printf(" %s", fm_kernels_name(sets[i]));
    printf("; default: %s%s\n", fm_test_kernels_name(),
           forced_set(NULL) ? " (forced by FMHOST_KERNELS: the other sets are not tested)" : "");
    fflush(stdout);  /* before Check forks, or each child repeats it */

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int fm_test_kernel_sets(fm_kernels out[FM_KERNELS_COUNT])
{
    fm_kernels forced;
    if (forced_set(&forced)) {
        if (out) out[0] = forced;
        return 1;
    }
    int n = 0;
    for (int k = 0; k < FM_KERNELS_COUNT; k++)
        if (fm_kernels_supported((fm_kernels)k)) {
            if (out) out[n] = (fm_kernels)k;
            n++;
        }
    return n;
}

int fm_test_vector_sets(fm_kernels out[FM_KERNELS_COUNT])
{
    fm_kernels forced;
    if (forced_set(&forced)) {
        if (forced == FM_KERNELS_PORTABLE) return 0;
        if (out) out[0] = forced;
        return 1;
    }
    int n = 0;
    for (int k = 0; k < FM_KERNELS_COUNT; k++)
        if (k != FM_KERNELS_PORTABLE && fm_kernels_supported((fm_kernels)k)) {
            if (out) out[n] = (fm_kernels)k;
            n++;
        }
    return n;
}

int fm_test_vector_pairs(fm_kernels out[FM_TEST_MAX_PAIRS][2])
{
    if (forced_set(NULL)) return 0;
    fm_kernels v[FM_KERNELS_COUNT];
    int nv = fm_test_vector_sets(v), n = 0;
    for (int a = 0; a < nv; a++)
        for (int b = a + 1; b < nv; b++) {
            if (out) {
                out[n][0] = v[a];
                out[n][1] = v[b];
            }
            n++;
        }
    return n;
}

void fm_test_use_kernels(fm_kernels k)
{
    fm_status st = fm_kernels_use(k);
    ck_assert_msg(st == FM_OK, "cannot use the %s kernels: %s", fm_kernels_name(k),
                  fm_error_message());
    ck_assert_int_eq(fm_kernels_active(), k);
}

void fm_test_restore_kernels(void)
{
    /* fm_test_run checked $FMHOST_KERNELS already: it is valid here. */
    fm_status st = fm_kernels_use_env();
    ck_assert_msg(st == FM_OK, "%s", fm_error_message());
}

/* Set i / ncases of the `n` in sets, made active; the case i % ncases. */
static int each_of(const fm_kernels *sets, int n, int i, int ncases)
{
    ck_assert_int_gt(ncases, 0);
    ck_assert_msg(i >= 0 && i / ncases < n,
                  "iteration %d of %d cases: only %d sets (registered with the wrong count)", i,
                  ncases, n);
    fm_test_use_kernels(sets[i / ncases]);
    return i % ncases;
}

int fm_test_each_set(int i, int ncases)
{
    fm_kernels sets[FM_KERNELS_COUNT];
    int n = fm_test_kernel_sets(sets);
    return each_of(sets, n, i, ncases);
}

int fm_test_each_vector_set(int i, int ncases)
{
    fm_kernels sets[FM_KERNELS_COUNT];
    int n = fm_test_vector_sets(sets);
    return each_of(sets, n, i, ncases);
}

int fm_test_each_pair(int i, int ncases, fm_kernels pair[2])
{
    fm_kernels pairs[FM_TEST_MAX_PAIRS][2];
    int n = fm_test_vector_pairs(pairs);
    ck_assert_int_gt(ncases, 0);
    ck_assert_msg(i >= 0 && i / ncases < n,
                  "iteration %d of %d cases: only %d pairs (registered with the wrong count)", i,
                  ncases, n);
    pair[0] = pairs[i / ncases][0];
    pair[1] = pairs[i / ncases][1];
    return i % ncases;
}

const char *fm_test_kernels_name(void) { return fm_kernels_name(fm_kernels_active()); }

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

ptrdiff_t fm_test_first_diff(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) return (ptrdiff_t)i;
    return -1;
}

void fm_test_assert_same_bits(const float *a, const float *b, size_t n, const char *what)
{
    ptrdiff_t at = fm_test_first_diff(a, b, n);
    ck_assert_msg(at < 0, "%s: element %td of %zu differs: %.9g vs %.9g", what, at, n,
                  at < 0 ? 0.0 : (double)a[at], at < 0 ? 0.0 : (double)b[at]);
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

void fm_test_spawn(fm_test_proc *r, char *const *argv, const char *env, unsigned timeout)
{
    static int counter;
    char out_path[4096], err_path[4096];
    const char *tmp = getenv("TMPDIR");
    tmp = tmp && *tmp ? tmp : "/tmp";
    snprintf(out_path, sizeof out_path, "%s/fmproc.%d.%d.out", tmp, (int)getpid(), counter);
    snprintf(err_path, sizeof err_path, "%s/fmproc.%d.%d.err", tmp, (int)getpid(), counter++);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fi = open("/dev/null", O_RDONLY);
        if (fo < 0 || fe < 0 || fi < 0) _exit(126);
        dup2(fi, 0);
        dup2(fo, 1);
        dup2(fe, 2);
        close(fi), close(fo), close(fe);
        unsetenv("FMHOST_DATA");
        if (env) putenv((char *)env);
        alarm(timeout);  /* kept across execv */
        execv(argv[0], argv);
        _exit(127);
    }
    int ws;
    ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
    r->status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    r->out = fm_test_read_file(out_path, NULL);
    r->err = fm_test_read_file(err_path, NULL);
    unlink(out_path);
    unlink(err_path);
    ck_assert_msg(r->status != 127, "cannot run %s", argv[0]);
}

void fm_test_proc_free(fm_test_proc *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

bool fm_test_tmp_left(const char *path)
{
    char dirname[4300];
    snprintf(dirname, sizeof dirname, "%s", path);
    char *slash = strrchr(dirname, '/');
    ck_assert_ptr_nonnull(slash);
    *slash = '\0';
    char prefix[4300];
    snprintf(prefix, sizeof prefix, "%s.tmp.", slash + 1);
    DIR *d = opendir(dirname);
    ck_assert_ptr_nonnull(d);
    bool found = false;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) found = true;
    closedir(d);
    return found;
}
