/* core/tensor: shapes, heap tensors and the per-step arena. */
#include "fm_test_util.h"

#include "fm/fm_tensor.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* ---- shapes ------------------------------------------------------------------ */

START_TEST(test_set_shape_numel)
{
    fm_tensor t;
    memset(&t, 0, sizeof t);
    float sentinel = 3.0f;
    t.data = &sentinel;
    fm_tensor_set_shape(&t, 4, (int[]){64, 32, 28, 28});
    ck_assert_int_eq(t.ndim, 4);
    ck_assert_int_eq(t.numel, (int64_t)64 * 32 * 28 * 28);
    ck_assert_int_eq(t.shape[3], 28);
    ck_assert_ptr_eq(t.data, &sentinel);  /* data left alone */
    ck_assert_ptr_null(t.grad);

    fm_tensor_set_shape(&t, 2, (int[]){7, 5});
    ck_assert_int_eq(t.ndim, 2);
    ck_assert_int_eq(t.numel, 35);
    /* Unused trailing dims are 1, whatever they held before. */
    ck_assert_int_eq(t.shape[2], 1);
    ck_assert_int_eq(t.shape[3], 1);

    fm_tensor_set_shape(&t, 1, (int[]){1});
    ck_assert_int_eq(t.numel, 1);

    /* numel is 64-bit: 2^31 elements do not overflow. */
    fm_tensor_set_shape(&t, 3, (int[]){1 << 16, 1 << 10, 2});
    ck_assert_int_eq(t.numel, (int64_t)1 << 27);
    fm_tensor_set_shape(&t, 4, (int[]){1 << 16, 1 << 10, 4, 8});
    ck_assert_int_eq(t.numel, (int64_t)1 << 31);
}
END_TEST

START_TEST(test_set_shape_zero_dim_aborts)
{
    fm_tensor t;
    memset(&t, 0, sizeof t);
    fm_tensor_set_shape(&t, 2, (int[]){3, 0});
}
END_TEST

START_TEST(test_set_shape_too_many_dims_aborts)
{
    fm_tensor t;
    memset(&t, 0, sizeof t);
    fm_tensor_set_shape(&t, 5, (int[]){1, 2, 3, 4, 5});
}
END_TEST

START_TEST(test_tensor_new_free)
{
    fm_tensor *t = fm_tensor_new(FM_F32, 3, (int[]){2, 3, 5});
    ck_assert_int_eq(t->dtype, FM_F32);
    ck_assert_int_eq(t->numel, 30);
    ck_assert_uint_eq((uintptr_t)t->data % 64, 0);
    for (int i = 0; i < 30; i++) ck_assert(t->data[i] == 0.0f);
    ck_assert_ptr_null(t->grad);
    ck_assert(!t->requires_grad);
    ck_assert_ptr_null(t->node);
    ck_assert_ptr_null(t->name);
    /* A caller may attach a heap grad: fm_tensor_free releases it. */
    t->grad = calloc(30, sizeof(float));
    fm_tensor_free(t);

    fm_tensor *c = fm_tensor_new(FM_I64, 1, (int[]){9});
    ck_assert_int_eq(c->dtype, FM_I64);
    for (int i = 0; i < 9; i++) ck_assert_int_eq(c->i64[i], 0);
    c->i64[8] = INT64_MAX;  /* room for 9 int64s, not 9 floats */
    ck_assert_int_eq(c->i64[8], INT64_MAX);
    fm_tensor_free(c);
    fm_tensor_free(NULL);
}
END_TEST

START_TEST(test_same_shape)
{
    fm_tensor *a = fm_tensor_new(FM_F32, 2, (int[]){2, 3});
    fm_tensor *b = fm_tensor_new(FM_F32, 2, (int[]){2, 3});
    fm_tensor *c = fm_tensor_new(FM_F32, 2, (int[]){3, 2});
    fm_tensor *d = fm_tensor_new(FM_F32, 3, (int[]){2, 3, 1});
    fm_tensor *e = fm_tensor_new(FM_F32, 1, (int[]){6});
    ck_assert(fm_tensor_same_shape(a, b));
    ck_assert(fm_tensor_same_shape(a, a));
    ck_assert(!fm_tensor_same_shape(a, c));
    ck_assert(!fm_tensor_same_shape(a, d));  /* same numel, another ndim */
    ck_assert(!fm_tensor_same_shape(d, a));
    ck_assert(!fm_tensor_same_shape(a, e));
    fm_tensor_free(a);
    fm_tensor_free(b);
    fm_tensor_free(c);
    fm_tensor_free(d);
    fm_tensor_free(e);
}
END_TEST

START_TEST(test_shape_str)
{
    fm_tensor t;
    memset(&t, 0, sizeof t);
    char buf[64];
    fm_tensor_set_shape(&t, 4, (int[]){64, 32, 28, 28});
    ck_assert_ptr_eq(fm_tensor_shape_str(&t, buf, sizeof buf), buf);
    ck_assert_str_eq(buf, "[64, 32, 28, 28]");
    fm_tensor_set_shape(&t, 1, (int[]){10});
    ck_assert_str_eq(fm_tensor_shape_str(&t, buf, sizeof buf), "[10]");
    fm_tensor_set_shape(&t, 2, (int[]){1, 123456789});
    ck_assert_str_eq(fm_tensor_shape_str(&t, buf, sizeof buf), "[1, 123456789]");

    /* A short buffer gets a terminated prefix and nothing past its end. */
    fm_tensor_set_shape(&t, 4, (int[]){64, 32, 28, 28});
    for (size_t len = 1; len <= 17; len++) {
        char small[32];
        memset(small, '#', sizeof small);
        fm_tensor_shape_str(&t, small, len);
        ck_assert_uint_eq(strlen(small), len - 1);
        ck_assert_int_eq(strncmp(small, "[64, 32, 28, 28]", len - 1), 0);
        for (size_t i = len; i < sizeof small; i++) ck_assert_int_eq(small[i], '#');
    }
}
END_TEST

/* ---- arena ------------------------------------------------------------------- */

START_TEST(test_arena_alignment_and_accounting)
{
    fm_arena *a = fm_arena_new(0);
    ck_assert_uint_ge(fm_arena_capacity(a), 1);
    ck_assert_uint_eq(fm_arena_used(a), 0);
    size_t expect_used = 0;
    unsigned char *prev = NULL;
    for (size_t bytes = 1; bytes < 2000; bytes += 61) {
        unsigned char *p = fm_arena_alloc(a, bytes);
        ck_assert_uint_eq((uintptr_t)p % 64, 0);
        memset(p, 0x5a, bytes);
        if (prev) ck_assert_ptr_ne(p, prev);
        prev = p;
        expect_used += (bytes + 63) / 64 * 64;
        ck_assert_uint_eq(fm_arena_used(a), expect_used);
    }
    /* Zero bytes still gives a distinct aligned pointer. */
    void *z1 = fm_arena_alloc(a, 0), *z2 = fm_arena_alloc(a, 0);
    ck_assert_ptr_ne(z1, z2);
    ck_assert_uint_eq((uintptr_t)z1 % 64, 0);
    ck_assert_uint_le(fm_arena_used(a), fm_arena_capacity(a));
    fm_arena_free(a);
    fm_arena_free(NULL);
}
END_TEST

START_TEST(test_arena_reset_reuses_memory)
{
    fm_arena *a = fm_arena_new(1 << 20);
    size_t cap = fm_arena_capacity(a);
    void *first = fm_arena_alloc(a, 1000);
    fm_arena_alloc(a, 5000);
    ck_assert_uint_gt(fm_arena_used(a), 0);
    fm_arena_reset(a);
    ck_assert_uint_eq(fm_arena_used(a), 0);
    ck_assert_uint_eq(fm_arena_capacity(a), cap);
    /* Without growth the same block is reused from its start. */
    ck_assert_ptr_eq(fm_arena_alloc(a, 1000), first);
    fm_arena_free(a);
}
END_TEST

START_TEST(test_arena_calloc_zeroes_reused_memory)
{
    fm_arena *a = fm_arena_new(0);
    unsigned char *p = fm_arena_alloc(a, 4096);
    memset(p, 0xff, 4096);
    fm_arena_reset(a);
    unsigned char *q = fm_arena_calloc(a, 4096);
    ck_assert_ptr_eq(p, q);
    int nonzero = 0;
    for (int i = 0; i < 4096; i++) nonzero += q[i] != 0;
    ck_assert_int_eq(nonzero, 0);
    fm_arena_free(a);
}
END_TEST

START_TEST(test_arena_growth_and_merge)
{
    fm_arena *a = fm_arena_new(1 << 20);
    size_t cap0 = fm_arena_capacity(a);

    /* Overflow the first block several times; every allocation keeps its
     * contents while later ones land in new blocks. */
    enum { K = 12 };
    unsigned char *ptr[K];
    size_t size[K];
    for (int i = 0; i < K; i++) {
        size[i] = (size_t)(300 + 100 * i) << 10;
        ptr[i] = fm_arena_alloc(a, size[i]);
        ck_assert_uint_eq((uintptr_t)ptr[i] % 64, 0);
        memset(ptr[i], i + 1, size[i]);
    }
    for (int i = 0; i < K; i++) {
        ck_assert_int_eq(ptr[i][0], i + 1);
        ck_assert_int_eq(ptr[i][size[i] - 1], i + 1);
    }
    size_t cap1 = fm_arena_capacity(a);
    size_t used1 = fm_arena_used(a);
    ck_assert_uint_gt(cap1, cap0);
    ck_assert_uint_ge(cap1, used1);

    /* After reset: one block of the combined capacity, so one allocation of
     * the whole capacity fits without growing. */
    fm_arena_reset(a);
    ck_assert_uint_eq(fm_arena_capacity(a), cap1);
    ck_assert_uint_eq(fm_arena_used(a), 0);
    unsigned char *all = fm_arena_alloc(a, cap1);
    memset(all, 0x33, cap1);
    ck_assert_uint_eq(fm_arena_capacity(a), cap1);

    /* The same step again fits in that block. */
    fm_arena_reset(a);
    for (int i = 0; i < K; i++) fm_arena_alloc(a, size[i]);
    ck_assert_uint_eq(fm_arena_capacity(a), cap1);
    ck_assert_uint_eq(fm_arena_used(a), used1);

    /* A single allocation bigger than twice the block gets a block of its own size. */
    fm_arena_reset(a);
    fm_arena_alloc(a, 64);
    unsigned char *huge = fm_arena_alloc(a, 3 * cap1);
    memset(huge, 1, 3 * cap1);
    ck_assert_uint_ge(fm_arena_capacity(a), cap1 + 3 * cap1);
    fm_arena_free(a);
}
END_TEST

/* Steps of a training loop: the allocation pattern depends on step % 7 (say,
 * a short last batch, an eval step, a step with larger workspaces).  After
 * the first cycles the arena must stop growing. */
static size_t simulated_step(fm_arena *a, int step)
{
    int kind = step % 7;
    fm_rng rng;
    fm_rng_seed(&rng, (uint64_t)kind, FM_RNG_TEST);
    int n = 20 + 15 * kind;
    size_t asked = 0;
    for (int i = 0; i < n; i++) {
        size_t bytes = 1 + fm_rng_below(&rng, 40000u << (kind % 3));
        if (i == 3 && kind == 5) bytes = 3u << 20;  /* one big workspace */
        unsigned char *p = fm_arena_alloc(a, bytes);
        p[0] = (unsigned char)i;
        p[bytes - 1] = (unsigned char)i;
        asked += (bytes + 63) / 64 * 64;
    }
    return asked;
}

START_TEST(test_arena_steady_state_2000_steps)
{
    fm_arena *a = fm_arena_new(1 << 20);
    size_t cap_after_warmup = 0, max_used = 0;
    int last_growth = -1;
    size_t prev_cap = fm_arena_capacity(a);
    for (int step = 0; step < 2000; step++) {
        fm_arena_reset(a);
        size_t asked = simulated_step(a, step);
        ck_assert_uint_eq(fm_arena_used(a), asked);
        max_used = asked > max_used ? asked : max_used;
        size_t cap = fm_arena_capacity(a);
        if (cap != prev_cap) last_growth = step;
        ck_assert_uint_ge(cap, prev_cap);  /* reset never shrinks */
        prev_cap = cap;
        if (step == 30) cap_after_warmup = cap;
    }
    ck_assert_msg(last_growth < 21, "arena still growing at step %d", last_growth);
    ck_assert_uint_eq(fm_arena_capacity(a), cap_after_warmup);
    ck_assert_uint_ge(cap_after_warmup, max_used);
    /* Growth by doubling may over-reserve, but not without bound. */
    ck_assert_uint_le(cap_after_warmup, 4 * max_used + (1u << 20));
    fm_arena_free(a);
}
END_TEST

static Suite *tensor_suite(void)
{
    Suite *s = suite_create("tensor");
    TCase *tc = tcase_create("tensor");
    tcase_add_test(tc, test_set_shape_numel);
    tcase_add_test_raise_signal(tc, test_set_shape_zero_dim_aborts, SIGABRT);
    tcase_add_test_raise_signal(tc, test_set_shape_too_many_dims_aborts, SIGABRT);
    tcase_add_test(tc, test_tensor_new_free);
    tcase_add_test(tc, test_same_shape);
    tcase_add_test(tc, test_shape_str);
    suite_add_tcase(s, tc);

    tc = tcase_create("arena");
    tcase_add_test(tc, test_arena_alignment_and_accounting);
    tcase_add_test(tc, test_arena_reset_reuses_memory);
    tcase_add_test(tc, test_arena_calloc_zeroes_reused_memory);
    tcase_add_test(tc, test_arena_growth_and_merge);
    tcase_add_test(tc, test_arena_steady_state_2000_steps);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(tensor_suite()); }
