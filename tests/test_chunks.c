/* test_chunks — a batch in chunks and their fixed tree (core/dist/chunks.c).
 *
 * fm_chunk_sum must give, for every split of the chunks over ranks, the
 * bits of the tree node [lo, hi) = [lo, mid) + [mid, hi) computed naively
 * here.  The ranks are simulated in this process: a backend whose gather
 * keeps each rank's message for rank 0 and whose broadcast hands rank 0's
 * root to the others, each rank's call made in turn (the other ranks once
 * before rank 0, to leave their messages, and once after, to get the
 * root). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "fm/fm_dist.h"
#include "fm_test_util.h"

#define MAX_RANKS 6

static fm_dist_backend g_fake;
static void *g_msg[MAX_RANKS];
static size_t g_msg_len[MAX_RANKS];
static void *g_root;
static size_t g_root_len;

static fm_status fake_gather(const void *bytes, size_t n, void **all, size_t *len)
{
    int r = g_fake.rank;
    free(g_msg[r]);
    g_msg[r] = malloc(n ? n : 1);
    memcpy(g_msg[r], bytes, n);
    g_msg_len[r] = n;
    if (r != 0) return FM_OK;
    size_t total = 0;
    for (int k = 0; k < g_fake.size; k++) total += g_msg_len[k];
    char *buf = malloc(total ? total : 1), *p = buf;
    for (int k = 0; k < g_fake.size; k++) {
        ck_assert_ptr_nonnull(g_msg[k]);  /* every rank spoke before rank 0 */
        memcpy(p, g_msg[k], g_msg_len[k]);
        p += g_msg_len[k];
        len[k] = g_msg_len[k];
    }
    *all = buf;
    return FM_OK;
}

static fm_status fake_broadcast(void **bytes, size_t *n)
{
    if (g_fake.rank == 0) {
        free(g_root);
        g_root = malloc(*n ? *n : 1);
        memcpy(g_root, *bytes, *n);
        g_root_len = *n;
        return FM_OK;
    }
    if (!g_root) return fm_error_set(FM_ERR_IO, "no root yet");  /* the first round */
    *bytes = malloc(g_root_len ? g_root_len : 1);
    memcpy(*bytes, g_root, g_root_len);
    *n = g_root_len;
    return FM_OK;
}

static fm_status fake_barrier(void) { return FM_OK; }

static void fake_reset(int size)
{
    for (int k = 0; k < MAX_RANKS; k++) {
        free(g_msg[k]);
        g_msg[k] = NULL;
        g_msg_len[k] = 0;
    }
    free(g_root);
    g_root = NULL;
    g_fake = (fm_dist_backend){.name = "fake", .rank = 0, .size = size, .gather = fake_gather,
                               .broadcast = fake_broadcast, .barrier = fake_barrier};
}

static void fake_rank(int rank)
{
    g_fake.rank = rank;
    fm_dist_set_backend(&g_fake);
}

/* The tree's node [lo, hi) of chunk parts v [n_chunks, len], element e. */
static double naive_f64(const double *v, int64_t len, int lo, int hi, int64_t e)
{
    if (hi - lo == 1) return v[(size_t)lo * len + e];
    int mid = lo + (hi - lo) / 2;
    return naive_f64(v, len, lo, mid, e) + naive_f64(v, len, mid, hi, e);
}

static float naive_f32(const float *v, int64_t len, int lo, int hi, int64_t e)
{
    if (hi - lo == 1) return v[(size_t)lo * len + e];
    int mid = lo + (hi - lo) / 2;
    return naive_f32(v, len, lo, mid, e) + naive_f32(v, len, mid, hi, e);
}

START_TEST(test_chunk_layout)
{
    /* Chunks depend on the batch size only, cover it, and at most 8. */
    for (int batch = 1; batch <= 300; batch++) {
        int size = fm_chunk_size(batch), count = fm_chunk_count(batch);
        ck_assert_int_le(count, FM_BATCH_CHUNKS);
        ck_assert_int_ge(size * count, batch);
        ck_assert_int_lt(size * (count - 1), batch);
    }
    ck_assert_int_eq(fm_chunk_size(64), 8);
    ck_assert_int_eq(fm_chunk_count(9), 5);
    /* Shares are contiguous, in rank order, cover every chunk once. */
    for (int count = 1; count <= 9; count++)
        for (int size = 1; size <= MAX_RANKS; size++) {
            int next = 0;
            for (int r = 0; r < size; r++) {
                int first, end;
                fm_chunk_share(count, r, size, &first, &end);
                ck_assert_int_eq(first, next);
                ck_assert_int_ge(end - first, count / size);
                ck_assert_int_le(end - first, (count + size - 1) / size);
                next = end;
            }
            ck_assert_int_eq(next, count);
        }
}
END_TEST

/* For n_chunks and len, every rank count: each rank's result is the
 * naive tree's, bit for bit, as is one process's. */
static void check_sum(fm_chunk_type type, int n_chunks, int64_t len)
{
    size_t es = type == FM_CHUNK_F64 ? sizeof(double) : sizeof(float);
    size_t part = (size_t)len * es;
    unsigned char *v = malloc((size_t)n_chunks * part), *want = malloc(part);
    unsigned seed = (unsigned)(n_chunks * 7919 + len);
    for (size_t i = 0; i < (size_t)n_chunks * (size_t)len; i++) {
        /* Magnitudes far apart: the order of the additions shows. */
        double x = (rand_r(&seed) / (double)RAND_MAX - 0.5) * (rand_r(&seed) % 7 == 0 ? 1e6 : 1.0);
        if (type == FM_CHUNK_F64)
            ((double *)v)[i] = x;
        else
            ((float *)v)[i] = (float)x;
    }
    for (int64_t e = 0; e < len; e++) {
        if (type == FM_CHUNK_F64)
            ((double *)want)[e] = naive_f64((const double *)v, len, 0, n_chunks, e);
        else
            ((float *)want)[e] = naive_f32((const float *)v, len, 0, n_chunks, e);
    }
    unsigned char *parts = malloc((size_t)n_chunks * part), *got = malloc(part);
    /* One process (the built-in backend), all chunks here. */
    memcpy(parts, v, (size_t)n_chunks * part);
    ck_assert_int_eq(fm_chunk_sum(type, got, parts, len, n_chunks, 0, n_chunks, false), FM_OK);
    ck_assert_msg(memcmp(got, want, part) == 0, "one process: %d chunks of %lld", n_chunks,
                  (long long)len);
    for (int size = 2; size <= MAX_RANKS; size++) {
        fake_reset(size);
        for (int round = 0; round < 3; round++) {
            /* Round 0: ranks 1.. leave their messages; 1: rank 0; 2: ranks 1.. again. */
            for (int r = round == 1 ? 0 : 1; r < (round == 1 ? 1 : size); r++) {
                int first, end;
                fm_chunk_share(n_chunks, r, size, &first, &end);
                memcpy(parts, v + (size_t)first * part, (size_t)(end - first) * part);
                fake_rank(r);
                memset(got, 0xa5, part);
                fm_status st = fm_chunk_sum(type, got, parts, len, n_chunks, first, end, true);
                if (round == 0) {
                    fm_error_clear();
                    continue;
                }
                ck_assert_int_eq(st, FM_OK);
                ck_assert_msg(memcmp(got, want, part) == 0,
                              "rank %d of %d: %d chunks of %lld", r, size, n_chunks,
                              (long long)len);
            }
        }
    }
    fake_reset(1);
    free(v);
    free(want);
    free(parts);
    free(got);
}

START_TEST(test_chunk_sum_any_split)
{
    const int64_t lens[] = {1, 13, 5000};  /* 5000: several of the sum's element blocks */
    for (int t = 0; t < 2; t++)
        for (int n_chunks = 1; n_chunks <= 9; n_chunks++)
            for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
                check_sum(t ? FM_CHUNK_F64 : FM_CHUNK_F32, n_chunks, lens[l]);
}
END_TEST

static Suite *chunks_suite(void)
{
    Suite *s = suite_create("chunks");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_chunk_layout);
    tcase_add_test(tc, test_chunk_sum_any_split);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(chunks_suite()); }
