/* core/base/threads.c: the pool, OpenBLAS kept single-threaded, and results
 * that do not depend on the thread count.
 *
 * Thread counting runs in a fresh process (this executable re-run with
 * --thread-census N) as well as in Check's forked child: a forked child starts
 * with one thread whatever its parent had, so only a fresh process sees the
 * threads OpenBLAS starts when it loads. */
#include "fm_test_util.h"

#include "fm/fm_graph.h"

#include <dirent.h>
#include <dlfcn.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Entries in /proc/self/task, or -1. */
static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static int online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ---- settings --------------------------------------------------------------- */

START_TEST(test_set_get_threads)
{
    fm_set_threads(3);
    ck_assert_int_eq(fm_get_threads(), 3);
    fm_set_threads(1);
    ck_assert_int_eq(fm_get_threads(), 1);
    fm_set_threads(0);
    ck_assert_int_eq(fm_get_threads(), online_cores());
    fm_set_threads(-4);
    ck_assert_int_eq(fm_get_threads(), online_cores());
    fm_set_threads(100000);
    ck_assert_int_eq(fm_get_threads(), 256);
    fm_set_threads(2);
    ck_assert_int_eq(fm_get_threads(), 2);
}
END_TEST

/* ---- every task once, thread indices unique ----------------------------------- */

enum { MAX_THREADS = 8 };

typedef struct census {
    atomic_int *runs;                /* per task */
    atomic_int busy[MAX_THREADS];    /* 1 while a task runs with that index */
    atomic_int used[MAX_THREADS];
    atomic_int bad_index, overlaps;
    int threads;
    bool slow;
} census;

static void census_task(void *arg, int task, int thread)
{
    census *c = arg;
    if (thread < 0 || thread >= c->threads || thread >= MAX_THREADS) {
        atomic_fetch_add(&c->bad_index, 1);
        return;
    }
    if (atomic_exchange(&c->busy[thread], 1) != 0) atomic_fetch_add(&c->overlaps, 1);
    atomic_fetch_add(&c->used[thread], 1);
    atomic_fetch_add(&c->runs[task], 1);
    if (c->slow) {
        usleep(500);
    } else {
        volatile double x = 0.0;
        for (int i = 0; i < 200; i++) x += sqrt((double)(i + task));
    }
    atomic_store(&c->busy[thread], 0);
}

static void run_census(int threads, int ntasks, bool slow, census *c)
{
    memset(c, 0, sizeof *c);
    c->threads = threads;
    c->slow = slow;
    c->runs = calloc((size_t)(ntasks > 0 ? ntasks : 1), sizeof *c->runs);
    fm_parallel_for(ntasks, census_task, c);
    ck_assert_int_eq(atomic_load(&c->bad_index), 0);
    ck_assert_int_eq(atomic_load(&c->overlaps), 0);
    int first_bad = -1;
    for (int t = 0; t < ntasks && first_bad < 0; t++)
        if (atomic_load(&c->runs[t]) != 1) first_bad = t;
    ck_assert_msg(first_bad < 0, "threads %d, %d tasks: task %d ran %d times", threads, ntasks,
                  first_bad, first_bad < 0 ? 1 : atomic_load(&c->runs[first_bad]));
    free(c->runs);
}

START_TEST(test_every_task_once)
{
    static const int counts[] = {0, 1, 2, 3, 5, 8, 17, 64, 255, 1000, 4099};
    census c;
    for (int threads = 1; threads <= 4; threads++) {
        fm_set_threads(threads);
        for (int rep = 0; rep < 3; rep++)
            for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++)
                run_census(threads, counts[k], false, &c);
    }
}
END_TEST

START_TEST(test_many_small_jobs)
{
    /* Thousands of back-to-back jobs: a lost wake-up or a worker that misses
     * a generation hangs here (Check's timeout fails the test). */
    fm_set_threads(2);
    census c;
    for (int rep = 0; rep < 3000; rep++) run_census(2, 2 + rep % 5, false, &c);
    fm_set_threads(3);
    for (int rep = 0; rep < 1000; rep++) run_census(3, 3 + rep % 4, false, &c);
}
END_TEST

START_TEST(test_restart_pool)
{
    /* Changing the count stops the pool; the next job starts a new one. */
    census c;
    for (int rep = 0; rep < 200; rep++) {
        int threads = 1 + rep % 4;
        fm_set_threads(threads);
        run_census(threads, 16, false, &c);
    }
}
END_TEST

START_TEST(test_workers_share_the_work)
{
    /* Slow tasks (sleeping): with 2 threads both indices take part. */
    fm_set_threads(2);
    census c;
    run_census(2, 200, true, &c);
    ck_assert_int_gt(atomic_load(&c.used[0]), 0);
    ck_assert_int_gt(atomic_load(&c.used[1]), 0);
    ck_assert_int_eq(atomic_load(&c.used[0]) + atomic_load(&c.used[1]), 200);
}
END_TEST

/* ---- nesting ------------------------------------------------------------------ */

typedef struct nest {
    atomic_int inner_runs[16][50];
    atomic_int wrong_thread;
} nest;

typedef struct nest_inner {
    nest *n;
    int outer, thread;
} nest_inner;

static void inner_task(void *arg, int task, int thread)
{
    nest_inner *in = arg;
    if (thread != in->thread) atomic_fetch_add(&in->n->wrong_thread, 1);
    atomic_fetch_add(&in->n->inner_runs[in->outer][task], 1);
}

static void outer_task(void *arg, int task, int thread)
{
    nest_inner in = {arg, task, thread};
    fm_parallel_for(50, inner_task, &in);
}

START_TEST(test_nested_runs_serially)
{
    for (int threads = 1; threads <= 3; threads++) {
        fm_set_threads(threads);
        nest *n = calloc(1, sizeof *n);
        fm_parallel_for(16, outer_task, n);
        ck_assert_int_eq(atomic_load(&n->wrong_thread), 0);
        int not_once = 0;
        for (int o = 0; o < 16; o++)
            for (int i = 0; i < 50; i++) not_once += atomic_load(&n->inner_runs[o][i]) != 1;
        ck_assert_int_eq(not_once, 0);
        free(n);
    }
}
END_TEST

static void set_threads_task(void *arg, int task, int thread)
{
    (void)arg;
    (void)task;
    (void)thread;
    fm_set_threads(2);
}

START_TEST(test_set_threads_inside_task_aborts)
{
    fm_set_threads(1);
    fm_parallel_for(1, set_threads_task, NULL);
}
END_TEST

/* ---- who owns the threads ------------------------------------------------------ */

typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *b, int ldb, float beta, float *c,
                         int ldc);

static void spin_task(void *arg, int task, int thread)
{
    atomic_int *done = arg;
    volatile double x = 0.0;
    for (int i = 0; i < 2000; i++) x += sqrt((double)(i + task + thread));
    atomic_fetch_add(done, 1);
}

/* Parallel work of every kind the host does: pool jobs, GEMMs through the
 * ops, and a direct OpenBLAS call on a matrix big enough that a threaded
 * OpenBLAS would use its pool.  No ck_assert here: it also runs in the
 * --thread-census child, outside any test.  Returns false on a failure. */
static bool busy_work(void)
{
    atomic_int done = 0;
    fm_parallel_for(64, spin_task, &done);
    if (atomic_load(&done) != 64) return false;

    fm_graph *g = fm_graph_new();
    fm_tensor *x = fm_graph_tensor(g, 2, (int[]){256, 300});
    fm_tensor *w = fm_graph_tensor(g, 2, (int[]){200, 300});
    fm_test_fill(x->data, (size_t)x->numel, -1.0f, 1.0f, 1);
    fm_test_fill(w->data, (size_t)w->numel, -1.0f, 1.0f, 2);
    fm_tensor *y = fm_linear(g, x, w, NULL);
    bool ok = isfinite(y->data[0]) && isfinite(y->data[y->numel - 1]);
    fm_graph_free(g);

    /* libopenblas is loaded with libfmcore; look its symbol up rather than
     * link the test against it. */
    sgemm_fn sgemm = (sgemm_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "cblas_sgemm");
    if (!sgemm) return false;
    int n = 512;
    float *a = malloc((size_t)n * n * sizeof *a), *b = malloc((size_t)n * n * sizeof *b);
    float *c = malloc((size_t)n * n * sizeof *c);
    fm_test_fill(a, (size_t)n * n, -1.0f, 1.0f, 3);
    fm_test_fill(b, (size_t)n * n, -1.0f, 1.0f, 4);
    enum { ROW_MAJOR = 101, NO_TRANS = 111 };
    sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    ok = ok && isfinite(c[0]) && isfinite(c[(size_t)n * n - 1]);
    free(a);
    free(b);
    free(c);
    return ok;
}

/* The --thread-census child: prints the process's thread count after busy_work. */
static int thread_census_main(int threads)
{
    fm_set_threads(threads);
    if (!busy_work() || !busy_work()) return 1;
    printf("%d\n", count_threads());
    return 0;
}

static int census_in_fresh_process(int threads)
{
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(len, 0);
    self[len] = '\0';
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "'%s' --thread-census %d", self, threads);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    int count = -1;
    ck_assert_int_eq(fscanf(p, "%d", &count), 1);
    ck_assert_int_eq(pclose(p), 0);
    return count;
}

START_TEST(test_one_thread_fresh_process)
{
    ck_assert_int_eq(census_in_fresh_process(1), 1);
}
END_TEST

START_TEST(test_two_threads_fresh_process)
{
    int n = census_in_fresh_process(2);
    ck_assert_int_ge(n, 1);
    ck_assert_int_le(n, 2);
}
END_TEST

START_TEST(test_thread_count_in_process)
{
    fm_set_threads(2);
    ck_assert(busy_work());
    ck_assert_int_le(count_threads(), 2);
    fm_set_threads(4);
    ck_assert(busy_work());
    ck_assert_int_le(count_threads(), 4);
    /* Lowering the count joins the workers. */
    fm_set_threads(1);
    ck_assert(busy_work());
    ck_assert_int_eq(count_threads(), 1);
}
END_TEST

/* ---- determinism across thread counts ------------------------------------------- */

enum { N = 16, C = 4, H = 16, W = 16, O = 16, K = 20 };

typedef struct run_result {
    float loss;
    float logits[N * K];
    float *grads[9];
    size_t sizes[9];
    float running[2][O];
    int64_t nbt;
} run_result;

/* A heap leaf that requires grad, with a zeroed heap grad. */
static fm_tensor *leaf(int ndim, const int *shape, float lo, float hi, uint64_t seed)
{
    return fm_test_leaf(ndim, shape, lo, hi, seed, true);
}

/* conv2d -> batchnorm -> relu -> maxpool -> flatten -> linear -> cross_entropy,
 * one forward and backward from heap tensors. */
static void run_network(int threads, uint64_t seed, run_result *r)
{
    fm_set_threads(threads);
    fm_tensor *x = leaf(4, (int[]){N, C, H, W}, -1.0f, 1.0f, seed);
    fm_tensor *cw = leaf(4, (int[]){O, C, 3, 3}, -0.3f, 0.3f, seed + 1);
    fm_tensor *cb = leaf(1, (int[]){O}, -0.1f, 0.1f, seed + 2);
    fm_tensor *bw = leaf(1, (int[]){O}, 0.5f, 1.5f, seed + 3);
    fm_tensor *bb = leaf(1, (int[]){O}, -0.2f, 0.2f, seed + 4);
    fm_tensor *lw = leaf(2, (int[]){K, O * (H / 2) * (W / 2)}, -0.05f, 0.05f, seed + 5);
    fm_tensor *lb = leaf(1, (int[]){K}, -0.1f, 0.1f, seed + 6);
    fm_tensor *rm = fm_tensor_new(FM_F32, 1, (int[]){O});
    fm_tensor *rv = fm_tensor_new(FM_F32, 1, (int[]){O});
    fm_tensor *nbt = fm_tensor_new(FM_I64, 1, (int[]){1});
    for (int c = 0; c < O; c++) rv->data[c] = 1.0f;
    int32_t labels[N];
    fm_rng rng;
    fm_rng_seed(&rng, seed, FM_RNG_TEST);
    for (int i = 0; i < N; i++) labels[i] = (int32_t)fm_rng_below(&rng, K);

    fm_graph *g = fm_graph_new();
    fm_tensor *h = fm_conv2d(g, x, cw, cb, 1, 1);
    h = fm_batchnorm(g, h, bw, bb, rm, rv, nbt, 0.1f, 1e-5f);
    h = fm_relu(g, h);
    h = fm_maxpool2d(g, h, 2);
    h = fm_flatten(g, h);
    fm_tensor *logits = fm_linear(g, h, lw, lb);
    fm_tensor *loss = fm_cross_entropy(g, logits, labels);
    fm_backward(g, loss);

    r->loss = loss->data[0];
    memcpy(r->logits, logits->data, sizeof r->logits);
    fm_tensor *leaves[7] = {x, cw, cb, bw, bb, lw, lb};
    for (int i = 0; i < 7; i++) {
        r->sizes[i] = (size_t)leaves[i]->numel * sizeof(float);
        r->grads[i] = malloc(r->sizes[i]);
        memcpy(r->grads[i], leaves[i]->grad, r->sizes[i]);
        fm_tensor_free(leaves[i]);
    }
    memcpy(r->running[0], rm->data, sizeof r->running[0]);
    memcpy(r->running[1], rv->data, sizeof r->running[1]);
    r->nbt = nbt->i64[0];
    fm_tensor_free(rm);
    fm_tensor_free(rv);
    fm_tensor_free(nbt);
    fm_graph_free(g);
}

static void free_result(run_result *r)
{
    for (int i = 0; i < 7; i++) free(r->grads[i]);
}

static void assert_identical(const run_result *a, const run_result *b, const char *what)
{
    static const char *const names[7] = {"x", "conv.weight", "conv.bias", "bn.weight",
                                         "bn.bias", "fc.weight", "fc.bias"};
    ck_assert_msg(memcmp(&a->loss, &b->loss, sizeof a->loss) == 0, "%s: loss %.9g vs %.9g", what,
                  (double)a->loss, (double)b->loss);
    ck_assert_msg(memcmp(a->logits, b->logits, sizeof a->logits) == 0, "%s: logits differ", what);
    for (int i = 0; i < 7; i++) {
        ck_assert_uint_eq(a->sizes[i], b->sizes[i]);
        ck_assert_msg(memcmp(a->grads[i], b->grads[i], a->sizes[i]) == 0, "%s: grad of %s differs",
                      what, names[i]);
    }
    ck_assert_msg(memcmp(a->running, b->running, sizeof a->running) == 0,
                  "%s: running statistics differ", what);
    ck_assert_int_eq(a->nbt, b->nbt);
}

START_TEST(test_bit_identical_across_thread_counts)
{
    run_result one, two, three;
    run_network(1, 42, &one);
    run_network(2, 42, &two);
    run_network(3, 42, &three);
    /* Not a vacuous comparison: a real loss and real gradients. */
    ck_assert(isfinite(one.loss) && one.loss > 0.5f);
    ck_assert_int_eq(one.nbt, 1);
    float gmax = 0.0f;
    for (size_t i = 0; i < one.sizes[1] / sizeof(float); i++) gmax = fmaxf(gmax, fabsf(one.grads[1][i]));
    ck_assert_float_gt(gmax, 1e-6f);
    assert_identical(&one, &two, "1 vs 2 threads");
    assert_identical(&one, &three, "1 vs 3 threads");
    free_result(&one);
    free_result(&two);
    free_result(&three);
}
END_TEST

START_TEST(test_bit_identical_same_seed)
{
    run_result a, b, c;
    run_network(2, 7, &a);
    run_network(2, 7, &b);
    run_network(2, 8, &c);
    assert_identical(&a, &b, "same seed");
    ck_assert(memcmp(a.logits, c.logits, sizeof a.logits) != 0);
    free_result(&a);
    free_result(&b);
    free_result(&c);
}
END_TEST

static Suite *threads_suite(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_set_get_threads);
    tcase_add_test(tc, test_every_task_once);
    tcase_add_test(tc, test_many_small_jobs);
    tcase_add_test(tc, test_restart_pool);
    tcase_add_test(tc, test_workers_share_the_work);
    tcase_add_test(tc, test_nested_runs_serially);
    tcase_add_test_raise_signal(tc, test_set_threads_inside_task_aborts, SIGABRT);
    suite_add_tcase(s, tc);

    tc = tcase_create("ownership");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_one_thread_fresh_process);
    tcase_add_test(tc, test_two_threads_fresh_process);
    tcase_add_test(tc, test_thread_count_in_process);
    suite_add_tcase(s, tc);

    tc = tcase_create("determinism");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_bit_identical_across_thread_counts);
    tcase_add_test(tc, test_bit_identical_same_seed);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--thread-census") == 0)
        return thread_census_main(atoi(argv[2]));
    return fm_test_run(threads_suite());
}
