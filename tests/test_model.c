/* core/nn: the model registry (names, order, init, the persistent block,
 * snapshots) and the layer helpers. */
#include "fm_test_util.h"

#include "fm/fm_model.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the reference networks' registrations (SPEC section 2) ------------------ */

static fm_model *mlp_model(uint64_t seed)
{
    fm_model *m = fm_model_new();
    fm_nn_linear_new(m, "fc1", 784, 256, true);
    fm_nn_linear_new(m, "fc2", 256, 128, true);
    fm_nn_linear_new(m, "fc3", 128, 10, true);
    fm_model_finalize(m, seed);
    return m;
}

static fm_model *cnn_model(uint64_t seed)
{
    fm_model *m = fm_model_new();
    fm_nn_conv_new(m, "conv1", 1, 32, 3, 1, 1, true);
    fm_nn_conv_new(m, "conv2", 32, 64, 3, 1, 1, true);
    fm_nn_linear_new(m, "fc1", 3136, 128, true);
    fm_nn_linear_new(m, "fc2", 128, 10, true);
    fm_model_finalize(m, seed);
    return m;
}

static fm_model *rescnn_model(uint64_t seed)
{
    fm_model *m = fm_model_new();
    int w = 32;
    fm_nn_conv_new(m, "stem.0", 1, w, 3, 1, 1, false);
    fm_nn_bn_new(m, "stem.1", w);
    int in = w;
    for (int stage = 0; stage < 3; stage++) {
        int out = w << stage, stride = stage == 0 ? 1 : 2;
        char p[64], q[96];
        snprintf(p, sizeof p, "layers.%d", stage);
        snprintf(q, sizeof q, "%s.conv1", p);
        fm_nn_conv_new(m, q, in, out, 3, stride, 1, false);
        snprintf(q, sizeof q, "%s.bn1", p);
        fm_nn_bn_new(m, q, out);
        snprintf(q, sizeof q, "%s.conv2", p);
        fm_nn_conv_new(m, q, out, out, 3, 1, 1, false);
        snprintf(q, sizeof q, "%s.bn2", p);
        fm_nn_bn_new(m, q, out);
        if (stride != 1 || in != out) {
            snprintf(q, sizeof q, "%s.short.0", p);
            fm_nn_conv_new(m, q, in, out, 1, stride, 0, false);
            snprintf(q, sizeof q, "%s.short.1", p);
            fm_nn_bn_new(m, q, out);
        }
        in = out;
    }
    fm_nn_linear_new(m, "fc", 4 * w, 10, true);
    fm_model_finalize(m, seed);
    return m;
}

START_TEST(test_reference_param_counts)
{
    fm_model *m = mlp_model(1);
    ck_assert_int_eq(fm_model_num_params(m), 235146);
    ck_assert_int_eq(fm_model_count(m), 6);
    fm_model_free(m);

    m = cnn_model(1);
    ck_assert_int_eq(fm_model_num_params(m), 421642);
    fm_model_free(m);

    m = rescnn_model(1);
    ck_assert_int_eq(fm_model_num_params(m), 308074);  /* buffers not counted */
    int nparams = 0, nbuffers = 0;
    for (int i = 0; i < fm_model_count(m); i++)
        *(fm_model_entry_at(m, i).is_buffer ? &nbuffers : &nparams) += 1;
    int count = 0;
    fm_model_params(m, &count);
    ck_assert_int_eq(count, nparams);
    ck_assert_int_eq(nbuffers, 3 * 9);  /* 9 batch norms */
    ck_assert_ptr_nonnull(fm_model_find(m, "layers.2.short.1.num_batches_tracked"));
    ck_assert_ptr_null(fm_model_find(m, "layers.0.short.0.weight"));  /* identity shortcut */
    fm_model_free(m);
}
END_TEST

START_TEST(test_registration_order_and_names)
{
    fm_model *m = fm_model_new();
    fm_tensor *w = fm_model_param(m, "conv.weight", 4, (int[]){4, 2, 3, 3}, FM_INIT_FAN_IN, 18);
    fm_tensor *rm = fm_model_buffer(m, "bn.running_mean", FM_F32, 1, (int[]){4}, FM_INIT_ZEROS);
    fm_tensor *b = fm_model_param(m, "conv.bias", 1, (int[]){4}, FM_INIT_FAN_IN, 18);
    fm_tensor *nbt = fm_model_buffer(m, "bn.num_batches_tracked", FM_I64, 1, (int[]){1}, FM_INIT_ZEROS);
    fm_tensor *g = fm_model_param(m, "bn.weight", 1, (int[]){4}, FM_INIT_ONES, 0);
    ck_assert_int_eq(fm_model_count(m), 5);
    ck_assert_int_eq(fm_model_num_params(m), 72 + 4 + 4);
    fm_model_finalize(m, 5);

    static const char *const names[] = {"conv.weight", "bn.running_mean", "conv.bias",
                                        "bn.num_batches_tracked", "bn.weight"};
    fm_tensor *const tensors[] = {w, rm, b, nbt, g};
    static const bool buffers[] = {false, true, false, true, false};
    for (int i = 0; i < 5; i++) {
        fm_model_entry e = fm_model_entry_at(m, i);
        ck_assert_str_eq(e.name, names[i]);
        ck_assert_ptr_eq(e.tensor, tensors[i]);
        ck_assert_int_eq(e.is_buffer, buffers[i]);
        ck_assert_str_eq(e.tensor->name, names[i]);
        ck_assert_ptr_eq(fm_model_find(m, names[i]), tensors[i]);
        ck_assert_int_eq(e.tensor->requires_grad, !buffers[i]);
        ck_assert_ptr_null(e.tensor->node);
    }
    ck_assert_ptr_null(fm_model_find(m, "conv"));
    ck_assert_ptr_null(fm_model_find(m, "conv.weight.x"));
    ck_assert_int_eq(w->ndim, 4);
    ck_assert_int_eq(w->numel, 72);
    ck_assert_int_eq(nbt->dtype, FM_I64);

    int count = -1;
    fm_tensor *const *params = fm_model_params(m, &count);
    ck_assert_int_eq(count, 3);
    ck_assert_ptr_eq(params[0], w);
    ck_assert_ptr_eq(params[1], b);
    ck_assert_ptr_eq(params[2], g);
    fm_model_free(m);
}
END_TEST

START_TEST(test_layer_helper_names_and_shapes)
{
    fm_model *m = fm_model_new();
    fm_linear_layer fc = fm_nn_linear_new(m, "head.fc", 20, 7, true);
    fm_linear_layer nb = fm_nn_linear_new(m, "proj", 7, 3, false);
    fm_conv_layer cv = fm_nn_conv_new(m, "layers.0.conv1", 3, 8, 5, 2, 1, false);
    fm_bn_layer bn = fm_nn_bn_new(m, "layers.0.bn1", 8);
    fm_model_finalize(m, 1);

    ck_assert_ptr_eq(fm_model_find(m, "head.fc.weight"), fc.weight);
    ck_assert_ptr_eq(fm_model_find(m, "head.fc.bias"), fc.bias);
    ck_assert_int_eq(fc.weight->shape[0], 7);  /* [out, in] */
    ck_assert_int_eq(fc.weight->shape[1], 20);
    ck_assert_ptr_null(nb.bias);
    ck_assert_ptr_null(fm_model_find(m, "proj.bias"));
    ck_assert_ptr_null(cv.bias);
    ck_assert_int_eq(cv.stride, 2);
    ck_assert_int_eq(cv.pad, 1);
    ck_assert_int_eq(cv.weight->ndim, 4);
    int expect_shape[4] = {8, 3, 5, 5};
    for (int i = 0; i < 4; i++) ck_assert_int_eq(cv.weight->shape[i], expect_shape[i]);
    ck_assert_ptr_eq(fm_model_find(m, "layers.0.bn1.running_var"), bn.running_var);
    ck_assert_float_eq(bn.momentum, 0.1f);
    ck_assert_float_eq(bn.eps, 1e-5f);

    static const char *const order[] = {
        "head.fc.weight", "head.fc.bias", "proj.weight", "layers.0.conv1.weight",
        "layers.0.bn1.weight", "layers.0.bn1.bias", "layers.0.bn1.running_mean",
        "layers.0.bn1.running_var", "layers.0.bn1.num_batches_tracked",
    };
    ck_assert_int_eq(fm_model_count(m), 9);
    for (int i = 0; i < 9; i++) ck_assert_str_eq(fm_model_entry_at(m, i).name, order[i]);
    fm_model_free(m);
}
END_TEST

/* ---- initialisation ------------------------------------------------------------ */

static void check_fan_in(const fm_tensor *t, int fan_in)
{
    double bound = 1.0 / sqrt((double)fan_in);
    double lo = 1e9, hi = -1e9, sum = 0.0;
    for (int64_t i = 0; i < t->numel; i++) {
        double v = t->data[i];
        lo = fmin(lo, v);
        hi = fmax(hi, v);
        sum += v;
    }
    ck_assert_msg(lo >= -bound * (1 + 1e-6) && hi <= bound * (1 + 1e-6),
                  "%s: values in [%g, %g], outside +-%g", t->name, lo, hi, bound);
    ck_assert_msg(hi > lo, "%s: all values equal", t->name);
    if (t->numel >= 1000) {
        /* Uniform over the whole interval, centred. */
        ck_assert_double_gt(hi, 0.98 * bound);
        ck_assert_double_lt(lo, -0.98 * bound);
        ck_assert_double_lt(fabs(sum / (double)t->numel), 0.05 * bound);
    }
}

START_TEST(test_fan_in_init)
{
    fm_model *m = fm_model_new();
    fm_linear_layer fc = fm_nn_linear_new(m, "fc", 100, 64, true);
    fm_conv_layer cv = fm_nn_conv_new(m, "conv", 3, 40, 5, 1, 2, true);
    fm_tensor *p = fm_model_param(m, "p", 2, (int[]){50, 40}, FM_INIT_FAN_IN, 9);
    fm_model_finalize(m, 42);
    check_fan_in(fc.weight, 100);
    check_fan_in(fc.bias, 100);  /* the bias uses the weight's fan-in, as PyTorch */
    check_fan_in(cv.weight, 3 * 5 * 5);
    check_fan_in(cv.bias, 3 * 5 * 5);
    check_fan_in(p, 9);
    /* The bound really is 1/sqrt(fan_in), not a smaller one. */
    float mx = 0.0f;
    for (int64_t i = 0; i < p->numel; i++) mx = fmaxf(mx, fabsf(p->data[i]));
    ck_assert_float_gt(mx, 0.32f);
    fm_model_free(m);
}
END_TEST

START_TEST(test_bn_init)
{
    fm_model *m = fm_model_new();
    fm_nn_conv_new(m, "conv", 1, 6, 3, 1, 1, true);  /* draws from the stream first */
    fm_bn_layer bn = fm_nn_bn_new(m, "bn", 6);
    fm_model_finalize(m, 3);
    for (int c = 0; c < 6; c++) {
        ck_assert(bn.weight->data[c] == 1.0f);
        ck_assert(bn.bias->data[c] == 0.0f);
        ck_assert(bn.running_mean->data[c] == 0.0f);
        ck_assert(bn.running_var->data[c] == 1.0f);
    }
    ck_assert_int_eq(bn.num_batches_tracked->dtype, FM_I64);
    ck_assert_int_eq(bn.num_batches_tracked->numel, 1);
    ck_assert_int_eq(bn.num_batches_tracked->i64[0], 0);
    ck_assert(bn.weight->requires_grad && bn.bias->requires_grad);
    ck_assert(!bn.running_mean->requires_grad && !bn.running_var->requires_grad);
    ck_assert_ptr_null(bn.running_mean->grad);
    ck_assert_ptr_null(bn.num_batches_tracked->grad);
    fm_model_free(m);
}
END_TEST

static bool same_state(const fm_model *a, const fm_model *b)
{
    size_t n = fm_model_state_bytes(a);
    if (n != fm_model_state_bytes(b)) return false;
    void *x = malloc(n), *y = malloc(n);
    fm_model_state_save(a, x);
    fm_model_state_save(b, y);
    bool same = memcmp(x, y, n) == 0;
    free(x);
    free(y);
    return same;
}

START_TEST(test_seed_determinism)
{
    fm_model *a = cnn_model(42), *b = cnn_model(42), *c = cnn_model(43);
    ck_assert(same_state(a, b));
    ck_assert(!same_state(a, c));
    /* Tensor by tensor too: every FAN_IN tensor differs between seeds. */
    for (int i = 0; i < fm_model_count(a); i++) {
        fm_tensor *ta = fm_model_entry_at(a, i).tensor, *tc = fm_model_entry_at(c, i).tensor;
        ck_assert_mem_eq(ta->data, fm_model_entry_at(b, i).tensor->data,
                         (size_t)ta->numel * sizeof(float));
        ck_assert(memcmp(ta->data, tc->data, (size_t)ta->numel * sizeof(float)) != 0);
    }
    fm_model_free(a);
    fm_model_free(b);
    fm_model_free(c);
}
END_TEST

/* ---- the persistent block ------------------------------------------------------ */

START_TEST(test_block_layout)
{
    fm_model *m = rescnn_model(7);
    int n = fm_model_count(m);
    for (int i = 0; i < n; i++) {
        fm_model_entry e = fm_model_entry_at(m, i);
        const fm_tensor *t = e.tensor;
        ck_assert_ptr_nonnull(t->data);
        ck_assert_uint_eq((uintptr_t)t->data % 64, 0);
        if (e.is_buffer) {
            ck_assert_ptr_null(t->grad);
        } else {
            ck_assert_ptr_nonnull(t->grad);
            ck_assert_uint_eq((uintptr_t)t->grad % 64, 0);
            int64_t nonzero = 0;
            for (int64_t k = 0; k < t->numel; k++) nonzero += t->grad[k] != 0.0f;
            ck_assert_int_eq(nonzero, 0);
        }
    }
    /* No two data or grad ranges overlap. */
    typedef struct { uintptr_t lo, hi; } range;
    range *r = calloc((size_t)2 * n, sizeof *r);
    int nr = 0;
    for (int i = 0; i < n; i++) {
        const fm_tensor *t = fm_model_entry_at(m, i).tensor;
        size_t bytes = (size_t)t->numel * (t->dtype == FM_I64 ? 8 : 4);
        r[nr++] = (range){(uintptr_t)t->data, (uintptr_t)t->data + bytes};
        if (t->grad) r[nr++] = (range){(uintptr_t)t->grad, (uintptr_t)t->grad + (size_t)t->numel * 4};
    }
    for (int i = 0; i < nr; i++)
        for (int j = i + 1; j < nr; j++)
            ck_assert_msg(r[i].hi <= r[j].lo || r[j].hi <= r[i].lo, "ranges %d and %d overlap", i, j);
    free(r);
    fm_model_free(m);
}
END_TEST

START_TEST(test_zero_grad)
{
    fm_model *m = cnn_model(1);
    fm_model *ref = cnn_model(1);
    int count = 0;
    fm_tensor *const *p = fm_model_params(m, &count);
    for (int i = 0; i < count; i++)
        for (int64_t k = 0; k < p[i]->numel; k++) p[i]->grad[k] = 1.5f + (float)i;
    /* Writing gradients leaves the weights alone. */
    ck_assert(same_state(m, ref));
    fm_model_zero_grad(m);
    int64_t nonzero = 0;
    for (int i = 0; i < count; i++)
        for (int64_t k = 0; k < p[i]->numel; k++) nonzero += p[i]->grad[k] != 0.0f;
    ck_assert_int_eq(nonzero, 0);
    ck_assert(same_state(m, ref));
    fm_model_free(m);
    fm_model_free(ref);
}
END_TEST

START_TEST(test_state_round_trip)
{
    fm_model *m = fm_model_new();
    fm_linear_layer fc = fm_nn_linear_new(m, "fc", 13, 5, true);
    fm_bn_layer bn = fm_nn_bn_new(m, "bn", 5);
    fm_model_finalize(m, 9);

    size_t bytes = fm_model_state_bytes(m);
    size_t min_bytes = (size_t)(13 * 5 + 5 + 4 * 5) * sizeof(float) + sizeof(int64_t);
    ck_assert_uint_ge(bytes, min_bytes);

    bn.num_batches_tracked->i64[0] = 123456789012345LL;
    bn.running_var->data[2] = 4.25f;
    float w_before[65];
    memcpy(w_before, fc.weight->data, sizeof w_before);
    void *snap = malloc(bytes);
    fm_model_state_save(m, snap);

    for (int i = 0; i < 65; i++) fc.weight->data[i] = -7.0f;
    for (int i = 0; i < 5; i++) fc.bias->data[i] = 9.0f;
    bn.num_batches_tracked->i64[0] = 0;
    bn.running_var->data[2] = 0.0f;
    bn.running_mean->data[0] = 2.0f;
    for (int i = 0; i < 5; i++) fc.bias->grad[i] = 3.0f;

    fm_model_state_load(m, snap);
    ck_assert_mem_eq(fc.weight->data, w_before, sizeof w_before);
    ck_assert_int_eq(bn.num_batches_tracked->i64[0], 123456789012345LL);
    ck_assert_float_eq(bn.running_var->data[2], 4.25f);
    ck_assert_float_eq(bn.running_mean->data[0], 0.0f);
    ck_assert_float_ne(fc.bias->data[0], 9.0f);
    /* A snapshot holds values, not gradients. */
    ck_assert_float_eq(fc.bias->grad[0], 3.0f);

    /* Into another model of the same architecture. */
    fm_model *other = fm_model_new();
    fm_nn_linear_new(other, "fc", 13, 5, true);
    fm_nn_bn_new(other, "bn", 5);
    fm_model_finalize(other, 10);
    ck_assert(!same_state(m, other));
    fm_model_state_load(other, snap);
    ck_assert(same_state(m, other));
    free(snap);
    fm_model_free(m);
    fm_model_free(other);
}
END_TEST

/* ---- the plugin instance ------------------------------------------------------- */

static char events[64];

static void note(char c)
{
    size_t n = strlen(events);
    if (n + 1 < sizeof events) {
        events[n] = c;
        events[n + 1] = '\0';
    }
}

typedef struct { int tag; } fake_self;

static fm_tensor *fake_forward(void *self, fm_graph *g, fm_tensor *x)
{
    (void)g;
    note(((fake_self *)self)->tag == 77 ? 'f' : '?');
    return x;
}

static void fake_destroy(void *self)
{
    note(((fake_self *)self)->tag == 77 ? 'd' : '?');
}

static void fake_on_free(void *ctx)
{
    note(*(int *)ctx == 5 ? 'u' : '?');
}

START_TEST(test_impl_lifecycle)
{
    events[0] = '\0';
    fake_self self = {77};
    int ctx = 5;
    fm_model *m = fm_model_new();
    fm_nn_linear_new(m, "fc", 2, 2, true);
    fm_model_set_impl(m, &self, fake_forward, fake_destroy, fake_on_free, &ctx);
    fm_model_finalize(m, 0);
    ck_assert_ptr_eq(fm_model_self(m), &self);
    ck_assert_ptr_eq(fm_model_owner(m), &ctx);
    fm_tensor x = {0};
    ck_assert_ptr_eq(fm_model_forward(m, NULL, &x), &x);
    fm_model_free(m);
    /* destroy runs before the owner is told (it may unload the plugin's code). */
    ck_assert_str_eq(events, "fdu");
    fm_model_free(NULL);
}
END_TEST

/* ---- programmer errors ---------------------------------------------------------- */

START_TEST(test_duplicate_name_aborts)
{
    fm_model *m = fm_model_new();
    fm_nn_linear_new(m, "fc", 4, 4, true);
    fm_model_buffer(m, "fc.bias", FM_F32, 1, (int[]){4}, FM_INIT_ZEROS);
}
END_TEST

START_TEST(test_register_after_finalize_aborts)
{
    fm_model *m = fm_model_new();
    fm_nn_linear_new(m, "fc", 4, 4, true);
    fm_model_finalize(m, 0);
    fm_model_param(m, "late", 1, (int[]){4}, FM_INIT_ZEROS, 0);
}
END_TEST

START_TEST(test_fan_in_zero_aborts)
{
    fm_model *m = fm_model_new();
    fm_model_param(m, "w", 1, (int[]){4}, FM_INIT_FAN_IN, 0);
}
END_TEST

START_TEST(test_forward_without_impl_aborts)
{
    fm_model *m = fm_model_new();
    fm_nn_linear_new(m, "fc", 4, 4, true);
    fm_model_finalize(m, 0);
    fm_tensor x = {0};
    fm_model_forward(m, NULL, &x);
}
END_TEST

/* ---- layer forwards (need the ops) ---------------------------------------------- */

START_TEST(test_nn_linear_forward)
{
    fm_model *m = fm_model_new();
    fm_linear_layer fc = fm_nn_linear_new(m, "fc", 5, 3, true);
    fm_model_finalize(m, 4);
    fm_graph *g = fm_graph_new();
    fm_tensor *x = fm_graph_tensor(g, 2, (int[]){2, 5});
    fm_test_fill(x->data, 10, -1.0f, 1.0f, 1);
    fm_tensor *y = fm_nn_linear(g, &fc, x);
    ck_assert_int_eq(y->shape[0], 2);
    ck_assert_int_eq(y->shape[1], 3);
    for (int i = 0; i < 2; i++)
        for (int o = 0; o < 3; o++) {
            double s = fc.bias->data[o];
            for (int k = 0; k < 5; k++) s += (double)x->data[i * 5 + k] * fc.weight->data[o * 5 + k];
            ck_assert_double_eq_tol(y->data[i * 3 + o], s, 1e-5);
        }
    ck_assert(y->requires_grad);  /* computed from parameters with grad on */
    fm_graph_free(g);
    fm_model_free(m);
}
END_TEST

START_TEST(test_nn_conv_and_bn_forward)
{
    fm_model *m = fm_model_new();
    fm_conv_layer cv = fm_nn_conv_new(m, "conv", 2, 3, 3, 2, 1, true);
    fm_bn_layer bn = fm_nn_bn_new(m, "bn", 3);
    fm_model_finalize(m, 4);
    fm_graph *g = fm_graph_new();
    fm_tensor *x = fm_graph_tensor(g, 4, (int[]){2, 2, 7, 7});
    fm_test_fill(x->data, (size_t)x->numel, -1.0f, 1.0f, 2);
    fm_tensor *y = fm_nn_conv(g, &cv, x);
    /* stride 2, pad 1 from the layer: (7 + 2 - 3) / 2 + 1 = 4 */
    int expect[4] = {2, 3, 4, 4};
    for (int i = 0; i < 4; i++) ck_assert_int_eq(y->shape[i], expect[i]);
    /* One output by hand: image 1, channel 2, position (1, 2). */
    double s = cv.bias->data[2];
    for (int c = 0; c < 2; c++)
        for (int ki = 0; ki < 3; ki++)
            for (int kj = 0; kj < 3; kj++) {
                int r = 1 * 2 - 1 + ki, col = 2 * 2 - 1 + kj;
                if (r < 0 || r >= 7 || col < 0 || col >= 7) continue;
                s += (double)x->data[((1 * 2 + c) * 7 + r) * 7 + col] *
                     cv.weight->data[((2 * 2 + c) * 3 + ki) * 3 + kj];
            }
    ck_assert_double_eq_tol(y->data[((1 * 3 + 2) * 4 + 1) * 4 + 2], s, 1e-5);

    fm_tensor *z = fm_nn_bn(g, &bn, y);
    ck_assert_int_eq(bn.num_batches_tracked->i64[0], 1);
    for (int c = 0; c < 3; c++) {
        double mean = 0.0;
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < 16; k++) mean += y->data[(i * 3 + c) * 16 + k];
        mean /= 32.0;
        /* momentum 0.1 from the layer */
        ck_assert_double_eq_tol(bn.running_mean->data[c], 0.1 * mean, 1e-5);
        double zm = 0.0;
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < 16; k++) zm += z->data[(i * 3 + c) * 16 + k];
        ck_assert_double_eq_tol(zm / 32.0, 0.0, 1e-4);
    }
    fm_graph_free(g);
    fm_model_free(m);
}
END_TEST

static Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("registry");
    tcase_add_test(tc, test_reference_param_counts);
    tcase_add_test(tc, test_registration_order_and_names);
    tcase_add_test(tc, test_layer_helper_names_and_shapes);
    tcase_add_test(tc, test_impl_lifecycle);
    suite_add_tcase(s, tc);

    tc = tcase_create("init");
    tcase_add_test(tc, test_fan_in_init);
    tcase_add_test(tc, test_bn_init);
    tcase_add_test(tc, test_seed_determinism);
    suite_add_tcase(s, tc);

    tc = tcase_create("block");
    tcase_add_test(tc, test_block_layout);
    tcase_add_test(tc, test_zero_grad);
    tcase_add_test(tc, test_state_round_trip);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test_raise_signal(tc, test_duplicate_name_aborts, SIGABRT);
    tcase_add_test_raise_signal(tc, test_register_after_finalize_aborts, SIGABRT);
    tcase_add_test_raise_signal(tc, test_fan_in_zero_aborts, SIGABRT);
    tcase_add_test_raise_signal(tc, test_forward_without_impl_aborts, SIGABRT);
    suite_add_tcase(s, tc);

    tc = tcase_create("layers");
    tcase_add_test(tc, test_nn_linear_forward);
    tcase_add_test(tc, test_nn_conv_and_bn_forward);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(model_suite()); }
