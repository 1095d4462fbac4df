/* core/base: the error slot, assertions, allocation, logging, PCG32, the clock. */
#include "fm_test_util.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- error slot ------------------------------------------------------------- */

START_TEST(test_error_set_get_clear)
{
    fm_error_clear();
    ck_assert_int_eq(fm_error_status(), FM_OK);
    ck_assert_str_eq(fm_error_message(), "");

    fm_status st = fm_error_set(FM_ERR_IO, "%s: cannot open (%d)", "/no/such/file", 2);
    ck_assert_int_eq(st, FM_ERR_IO);
    ck_assert_int_eq(fm_error_status(), FM_ERR_IO);
    ck_assert_str_eq(fm_error_message(), "/no/such/file: cannot open (2)");

    /* The slot holds the last error only. */
    fm_error_set(FM_ERR_ARG, "bad value %.2f for --lr", 1.5);
    ck_assert_int_eq(fm_error_status(), FM_ERR_ARG);
    ck_assert_str_eq(fm_error_message(), "bad value 1.50 for --lr");

    fm_error_clear();
    ck_assert_int_eq(fm_error_status(), FM_OK);
    ck_assert_str_eq(fm_error_message(), "");
}
END_TEST

static fm_status set_via_v(fm_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fm_status r = fm_error_setv(st, fmt, ap);
    va_end(ap);
    return r;
}

START_TEST(test_error_setv)
{
    ck_assert_int_eq(set_via_v(FM_ERR_FORMAT, "%s has magic %#x", "x.idx", 0x803), FM_ERR_FORMAT);
    ck_assert_str_eq(fm_error_message(), "x.idx has magic 0x803");
    ck_assert_int_eq(fm_error_status(), FM_ERR_FORMAT);
}
END_TEST

START_TEST(test_error_wraps_own_message)
{
    /* Adding context to the current error: the message is an argument too. */
    fm_error_set(FM_ERR_IO, "%s: no such file", "train-images-idx3-ubyte.gz");
    fm_error_set(fm_error_status(), "loading the dataset: %s (try --data-dir)", fm_error_message());
    ck_assert_str_eq(fm_error_message(),
                     "loading the dataset: train-images-idx3-ubyte.gz: no such file (try --data-dir)");
    ck_assert_int_eq(fm_error_status(), FM_ERR_IO);
}
END_TEST

START_TEST(test_error_long_message_truncated)
{
    size_t n = 10000;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = '\0';
    fm_error_set(FM_ERR_PLUGIN, "%s", big);
    const char *msg = fm_error_message();
    size_t len = strlen(msg);
    ck_assert_uint_gt(len, 100);
    ck_assert_uint_lt(len, n);
    ck_assert_uint_eq(strspn(msg, "x"), len);
    ck_assert_int_eq(fm_error_status(), FM_ERR_PLUGIN);
    free(big);
}
END_TEST

typedef struct {
    fm_status seen_status;
    char seen_message[64];
    fm_status after_status;
} thread_probe;

static void *error_thread(void *arg)
{
    thread_probe *p = arg;
    p->seen_status = fm_error_status();
    snprintf(p->seen_message, sizeof p->seen_message, "%s", fm_error_message());
    fm_error_set(FM_ERR_NOMEM, "thread's own error");
    p->after_status = fm_error_status();
    return NULL;
}

START_TEST(test_error_slot_per_thread)
{
    fm_error_set(FM_ERR_SCRIPT, "main thread error");
    thread_probe p;
    memset(&p, 0, sizeof p);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, error_thread, &p), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(p.seen_status, FM_OK);
    ck_assert_str_eq(p.seen_message, "");
    ck_assert_int_eq(p.after_status, FM_ERR_NOMEM);
    /* The other thread's error did not touch ours. */
    ck_assert_int_eq(fm_error_status(), FM_ERR_SCRIPT);
    ck_assert_str_eq(fm_error_message(), "main thread error");
}
END_TEST

START_TEST(test_status_names)
{
    static const fm_status all[] = {FM_OK,     FM_ERR_IO,    FM_ERR_FORMAT, FM_ERR_ARG,
                                    FM_ERR_PLUGIN, FM_ERR_NOMEM, FM_ERR_SCRIPT, FM_ERR_STOP};
    size_t n = sizeof all / sizeof all[0];
    ck_assert_str_eq(fm_status_name(FM_OK), "ok");
    for (size_t i = 0; i < n; i++) {
        const char *a = fm_status_name(all[i]);
        ck_assert_ptr_nonnull(a);
        ck_assert_uint_gt(strlen(a), 0);
        ck_assert_str_ne(a, "unknown error");
        for (size_t j = 0; j < i; j++) ck_assert_str_ne(a, fm_status_name(all[j]));
    }
    ck_assert_str_eq(fm_status_name((fm_status)999), "unknown error");
}
END_TEST

/* ---- assertions ------------------------------------------------------------- */

START_TEST(test_assert_true_is_silent)
{
    int x = 3;
    FM_ASSERT(x == 3);
    FM_ASSERT(x > 0 && x < 10);
    ck_assert_int_eq(x, 3);
}
END_TEST

START_TEST(test_assert_false_aborts)
{
    int x = 3;
    FM_ASSERT(x == 4);
}
END_TEST

static void fail_answer(int answer)
{
    FM_ASSERT(answer == 42);
}
static const int fail_answer_line = __LINE__ - 2;

/* Runs a failing FM_ASSERT in a child with stderr on a pipe; checks the
 * child died of SIGABRT and printed file:line and the expression. */
START_TEST(test_assert_message)
{
    int fd[2];
    ck_assert_int_eq(pipe(fd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], STDERR_FILENO);
        fail_answer(41);
        _exit(0);
    }
    close(fd[1]);
    char buf[1024];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof buf - 1 && (r = read(fd[0], buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)r;
    buf[got] = '\0';
    close(fd[0]);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
                  "child did not abort (status %#x)", status);
    char where[64];
    snprintf(where, sizeof where, "test_base.c:%d", fail_answer_line);
    ck_assert_msg(strstr(buf, where) != NULL, "'%s' not in stderr: %s", where, buf);
    ck_assert_msg(strstr(buf, "answer == 42") != NULL, "expression not in stderr: %s", buf);
}
END_TEST

/* ---- allocation ------------------------------------------------------------- */

START_TEST(test_alloc_helpers)
{
    for (size_t bytes = 0; bytes < 300; bytes += 37) {
        float *p = fm_xaligned(bytes);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq((uintptr_t)p % 64, 0);
        memset(p, 0xab, bytes);
        free(p);
    }
    int *z = fm_xcalloc(1000, sizeof *z);
    int bad = 0;
    for (int i = 0; i < 1000; i++) bad += z[i] != 0;
    ck_assert_int_eq(bad, 0);
    for (int i = 0; i < 1000; i++) z[i] = i;
    z = fm_xrealloc(z, 5000 * sizeof *z);
    for (int i = 0; i < 1000; i++) bad += z[i] != i;
    ck_assert_int_eq(bad, 0);
    free(z);

    void *m0 = fm_xmalloc(0);  /* never NULL, even for 0 bytes */
    ck_assert_ptr_nonnull(m0);
    free(m0);

    char *s = fm_xstrdup("layers.0.conv1.weight");
    ck_assert_str_eq(s, "layers.0.conv1.weight");
    free(s);
}
END_TEST

/* ---- logging ---------------------------------------------------------------- */

/* Redirects stderr into a temporary file while fn runs; returns what was written. */
static void capture_stderr(void (*fn)(void), char *out, size_t len)
{
    fflush(stderr);
    FILE *tmp = tmpfile();
    ck_assert_ptr_nonnull(tmp);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(tmp), STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    size_t got = fread(out, 1, len - 1, tmp);
    out[got] = '\0';
    fclose(tmp);
}

static void log_some(void)
{
    fm_log(FM_LOG_ERROR, "e%d", 1);
    fm_log(FM_LOG_WARN, "w%s", "2");
    fm_log(FM_LOG_INFO, "i3");
    fm_log(FM_LOG_DEBUG, "d4");
}

START_TEST(test_log_levels)
{
    char buf[512];
    ck_assert_int_eq(fm_log_get_level(), FM_LOG_INFO);
    capture_stderr(log_some, buf, sizeof buf);
    ck_assert_str_eq(buf, "error: e1\nwarning: w2\ni3\n");

    fm_log_set_level(FM_LOG_DEBUG);
    ck_assert_int_eq(fm_log_get_level(), FM_LOG_DEBUG);
    capture_stderr(log_some, buf, sizeof buf);
    ck_assert_str_eq(buf, "error: e1\nwarning: w2\ni3\ndebug: d4\n");

    fm_log_set_level(FM_LOG_ERROR);
    capture_stderr(log_some, buf, sizeof buf);
    ck_assert_str_eq(buf, "error: e1\n");
    fm_log_set_level(FM_LOG_INFO);
}
END_TEST

/* ---- PCG32 ------------------------------------------------------------------ */

/* pcg32-demo from the PCG reference (pcg32_srandom_r(&rng, 42u, 54u)), then
 * the same generator continued; the last rows were computed with an
 * independent transcription of pcg32_random_r. */
static const uint32_t pcg_42_54[12] = {
    0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e,
    0xbfc6a3ad, 0x812fff6d, 0xe61f305a, 0xf9384b90, 0x32db86fe, 0x1dc035f9,
};

START_TEST(test_pcg32_reference)
{
    fm_rng rng;
    fm_rng_seed(&rng, 42u, 54u);
    for (int i = 0; i < 12; i++)
        ck_assert_msg(fm_rng_u32(&rng) == pcg_42_54[i], "draw %d differs from pcg32", i);

    static const uint32_t s0_1[6] = {0x0f5deba9, 0x184296dd, 0x357643f4,
                                     0xf8e84c31, 0xaac1ca89, 0x4555f003};
    fm_rng_seed(&rng, 0, 1);
    for (int i = 0; i < 6; i++) ck_assert_uint_eq(fm_rng_u32(&rng), s0_1[i]);

    /* Full-width seed and the largest stream. */
    static const uint32_t big[6] = {0x2675c047, 0x7779a837, 0xa145aa13,
                                    0x5f6be726, 0x523c44c5, 0x75a406d6};
    fm_rng_seed(&rng, UINT64_MAX, (UINT64_C(1) << 63) - 1);
    for (int i = 0; i < 6; i++) ck_assert_uint_eq(fm_rng_u32(&rng), big[i]);
}
END_TEST

START_TEST(test_pcg32_streams)
{
    static const uint32_t s42_55[6] = {0xadd2c78f, 0x335de4ab, 0xb53e3abc,
                                       0x6763a1bb, 0x7eca047b, 0xc466f69f};
    fm_rng a, b, c;
    fm_rng_seed(&a, 42, 55);
    for (int i = 0; i < 6; i++) ck_assert_uint_eq(fm_rng_u32(&a), s42_55[i]);

    /* Same seed and stream: the same sequence; another stream or seed: another. */
    fm_rng_seed(&a, 7, FM_RNG_SHUFFLE);
    fm_rng_seed(&b, 7, FM_RNG_SHUFFLE);
    fm_rng_seed(&c, 7, FM_RNG_DROPOUT);
    fm_rng d;
    fm_rng_seed(&d, 8, FM_RNG_SHUFFLE);
    int same_ab = 0, same_ac = 0, same_ad = 0;
    for (int i = 0; i < 1000; i++) {
        uint32_t x = fm_rng_u32(&a), y = fm_rng_u32(&b), z = fm_rng_u32(&c), w = fm_rng_u32(&d);
        same_ab += x == y;
        same_ac += x == z;
        same_ad += x == w;
    }
    ck_assert_int_eq(same_ab, 1000);
    ck_assert_int_lt(same_ac, 3);
    ck_assert_int_lt(same_ad, 3);

    /* Drawing from one stream does not move another. */
    fm_rng_seed(&a, 5, FM_RNG_INIT);
    fm_rng_seed(&b, 5, FM_RNG_AUGMENT);
    fm_rng_seed(&c, 5, FM_RNG_AUGMENT);
    for (int i = 0; i < 100; i++) fm_rng_u32(&a);
    for (int i = 0; i < 100; i++) ck_assert_uint_eq(fm_rng_u32(&b), fm_rng_u32(&c));
}
END_TEST

START_TEST(test_rng_uniform)
{
    fm_rng a, b;
    fm_rng_seed(&a, 3, FM_RNG_TEST);
    fm_rng_seed(&b, 3, FM_RNG_TEST);
    double sum = 0.0;
    float lo = 1.0f, hi = 0.0f;
    const int n = 100000;
    int wrong = 0;
    for (int i = 0; i < n; i++) {
        float u = fm_rng_uniform(&a);
        /* 24 random bits: the top 24 of the next u32. */
        wrong += u != (float)(fm_rng_u32(&b) >> 8) / 16777216.0f;
        wrong += !(u >= 0.0f && u < 1.0f);
        sum += u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    ck_assert_int_eq(wrong, 0);
    ck_assert_double_eq_tol(sum / n, 0.5, 0.01);
    ck_assert_float_lt(lo, 0.001f);
    ck_assert_float_gt(hi, 0.999f);
}
END_TEST

START_TEST(test_rng_below_range_and_uniformity)
{
    fm_rng rng;
    fm_rng_seed(&rng, 11, FM_RNG_TEST);
    static const uint32_t ns[] = {1, 2, 3, 7, 10, 1000, 65537, 0x80000001u, UINT32_MAX};
    /* Counted, not asserted one by one: each ck_assert reports to the runner. */
    int out_of_range = 0;
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
        for (int i = 0; i < 2000; i++) out_of_range += fm_rng_below(&rng, ns[k]) >= ns[k];
    for (int i = 0; i < 100; i++) out_of_range += fm_rng_below(&rng, 1) != 0;
    ck_assert_int_eq(out_of_range, 0);

    /* Six bins, 60000 draws: each within 5% of 10000 (about 5 sigma). */
    int bins[6] = {0};
    for (int i = 0; i < 60000; i++) bins[fm_rng_below(&rng, 6)]++;
    for (int i = 0; i < 6; i++) ck_assert_int_lt(abs(bins[i] - 10000), 500);

    /* n = 3 * 2^30: a plain `u32 % n` would put half the draws below 2^30
     * (they are reached twice); unbiased draws put a third there. */
    uint32_t n = 3u << 30;
    int low = 0;
    const int draws = 30000;
    for (int i = 0; i < draws; i++) low += fm_rng_below(&rng, n) < (1u << 30);
    ck_assert_double_eq_tol((double)low / draws, 1.0 / 3.0, 0.015);
}
END_TEST

START_TEST(test_rng_below_zero_aborts)
{
    fm_rng rng;
    fm_rng_seed(&rng, 1, FM_RNG_TEST);
    fm_rng_below(&rng, 0);
}
END_TEST

START_TEST(test_rng_shuffle_permutation)
{
    enum { N = 1000 };
    uint32_t a[N], b[N];
    for (uint32_t i = 0; i < N; i++) a[i] = b[i] = i;
    fm_rng r1, r2;
    fm_rng_seed(&r1, 42, FM_RNG_SHUFFLE);
    fm_rng_seed(&r2, 42, FM_RNG_SHUFFLE);
    fm_rng_shuffle(&r1, a, N);
    fm_rng_shuffle(&r2, b, N);
    ck_assert_mem_eq(a, b, sizeof a);

    int seen[N] = {0}, fixed = 0;
    for (uint32_t i = 0; i < N; i++) {
        ck_assert_uint_lt(a[i], N);  /* before indexing with it */
        seen[a[i]]++;
        fixed += a[i] == i;
    }
    int not_once = 0;
    for (int i = 0; i < N; i++) not_once += seen[i] != 1;
    ck_assert_int_eq(not_once, 0);
    ck_assert_int_lt(fixed, 10);  /* about one fixed point expected */

    /* A second shuffle from the same stream gives another order. */
    uint32_t c[N];
    memcpy(c, a, sizeof a);
    fm_rng_shuffle(&r1, c, N);
    ck_assert(memcmp(a, c, sizeof a) != 0);

    /* Degenerate sizes touch nothing. */
    uint32_t one = 77;
    fm_rng_shuffle(&r1, &one, 1);
    ck_assert_uint_eq(one, 77);
    fm_rng_shuffle(&r1, NULL, 0);
}
END_TEST

START_TEST(test_rng_shuffle_uniform)
{
    /* All 6 orders of 3 elements, 60000 shuffles: each within 5% of 10000. */
    fm_rng rng;
    fm_rng_seed(&rng, 9, FM_RNG_SHUFFLE);
    int count[3][3][3] = {{{0}}};
    for (int i = 0; i < 60000; i++) {
        uint32_t a[3] = {0, 1, 2};
        fm_rng_shuffle(&rng, a, 3);
        count[a[0]][a[1]][a[2]]++;
    }
    int perms = 0;
    for (int x = 0; x < 3; x++)
        for (int y = 0; y < 3; y++)
            for (int z = 0; z < 3; z++) {
                if (x == y || y == z || x == z) {
                    ck_assert_int_eq(count[x][y][z], 0);
                    continue;
                }
                perms++;
                ck_assert_int_lt(abs(count[x][y][z] - 10000), 500);
            }
    ck_assert_int_eq(perms, 6);
}
END_TEST

START_TEST(test_now_monotonic)
{
    double t0 = fm_now();
    ck_assert_double_gt(t0, 0.0);
    usleep(20000);
    double t1 = fm_now();
    ck_assert_double_ge(t1 - t0, 0.015);
    ck_assert_double_lt(t1 - t0, 5.0);
}
END_TEST

static Suite *base_suite(void)
{
    Suite *s = suite_create("base");
    TCase *tc = tcase_create("errors");
    tcase_add_test(tc, test_error_set_get_clear);
    tcase_add_test(tc, test_error_setv);
    tcase_add_test(tc, test_error_wraps_own_message);
    tcase_add_test(tc, test_error_long_message_truncated);
    tcase_add_test(tc, test_error_slot_per_thread);
    tcase_add_test(tc, test_status_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("assert");
    tcase_add_test(tc, test_assert_true_is_silent);
    tcase_add_test_raise_signal(tc, test_assert_false_aborts, SIGABRT);
    tcase_add_test(tc, test_assert_message);
    suite_add_tcase(s, tc);

    tc = tcase_create("alloc_log");
    tcase_add_test(tc, test_alloc_helpers);
    tcase_add_test(tc, test_log_levels);
    tcase_add_test(tc, test_now_monotonic);
    suite_add_tcase(s, tc);

    tc = tcase_create("rng");
    tcase_add_test(tc, test_pcg32_reference);
    tcase_add_test(tc, test_pcg32_streams);
    tcase_add_test(tc, test_rng_uniform);
    tcase_add_test(tc, test_rng_below_range_and_uniformity);
    tcase_add_test_raise_signal(tc, test_rng_below_zero_aborts, SIGABRT);
    tcase_add_test(tc, test_rng_shuffle_permutation);
    tcase_add_test(tc, test_rng_shuffle_uniform);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(base_suite()); }
