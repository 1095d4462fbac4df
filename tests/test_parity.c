/* test_parity — one training step of each reference model against PyTorch.
 *
 * tests/gen_parity.py (run by hand with python3-torch) wrote, per model, the
 * initial weights and the results of one step on 8 real test images: logits,
 * loss, every parameter gradient, and every parameter and buffer after one
 * Adam step (BatchNorm running statistics included).  PyTorch computed that
 * step in float64 from the float32 weights and inputs, so the fixture is the
 * exact answer rounded once.  Here each plugin loads those weights with
 * fm_safetensors_load, takes the same step the trainer takes, and must
 * reproduce every tensor within PARITY_TOL.  With --precision bf16 the same
 * step is held to PyTorch's autocast step (gen_parity.py --precision bf16;
 * see PARITY_BF16_RATIO). */
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/fm_graph.h"
#include "fm/fm_io.h"
#include "fm/fm_model.h"
#include "fm/fm_optim.h"
#include "fm/fm_plugin.h"
#include "fm_test_util.h"

#define FIXTURE_DIR FM_SOURCE_DIR "/tests/fixtures/parity"
#define FIXTURE_MAX_BYTES ((size_t)64 << 20)
#define PARITY_TOL 1e-4

/* Each element's error is relative to max(|expected|, PARITY_FLOOR * the
 * tensor's largest |expected|).
 *
 * Why a floor: float32 rounding in a sum of thousands of terms (a conv weight
 * gradient sums over N*H*W = 6272 positions, behind up to four BatchNorm
 * backward passes) leaves an ABSOLUTE error of about 1e-6 of the tensor's
 * largest value on every element, so an element that is a near-cancelled sum
 * (1e-9 next to 1e-2) has a relative error of order one however correct the
 * code is.  Measured against the float64 answer, fmhost's largest elements are
 * within 2e-6 relative, and its worst element under this metric is 2.7e-5 at
 * a floor of 3e-2 (7.6e-5 at 1e-2: too close to the tolerance to survive a
 * change of summation order).
 *
 * What it still catches: every element at or above 3% of its tensor's scale
 * must match to 1e-4 of its own size, and no element may be off by more than
 * 3e-6 of the scale.  A wrong index, a missed term, a bias or a variance off
 * by a factor, BatchNorm's eps or its biased/unbiased variance mixed up in the
 * deep layers (N*H*W = 392: a 2.6e-3 change) all land far above that. */
#define PARITY_FLOOR 3e-2

/* --precision bf16 against PyTorch's CPU autocast (the *_step_bf16
 * fixtures).  Both round the same operands to bfloat16 (8 significant bits,
 * a relative step of 2^-8), and where nothing else happens they agree: the
 * MLP's step and the CNN's logits come out bit-identical.  But PyTorch 1.13
 * also runs batch norm, ReLU, max pooling and the residual additions on
 * bfloat16 tensors, rounding every result, where fmhost keeps them in
 * float32 as autocast's contract says; behind ResCNN's seven batch norms
 * PyTorch's stem gradient is then more than 100% off the exact one under
 * this metric, and so is fmhost's.  So each tensor of a bf16 step is held
 * against the exact float64 step (the fp32 fixture) and must be about as
 * close to it as PyTorch's autocast step is, in the Euclidean norm, which
 * the noise of single elements does not dominate: ||fmhost - exact|| <=
 * PARITY_BF16_RATIO * ||PyTorch - exact|| + PARITY_TOL * ||exact||.  (The
 * measured ratios are 0.98 to 1.06 for gradients and statistics.)  The
 * parameters after the step are left out: Adam's first step moves each by
 * lr * sign(g), and the sign of a gradient element near zero is noise at
 * bfloat16's resolution (for either implementation); the optimizer is the
 * float32 code the fp32 runs check. */
#define PARITY_BF16_RATIO 1.25

/* The bf16 run's exact step (the fp32 fixture); NULL for fp32 runs. */
static const struct fixture *parity_exact;

/* ---- a reader for the fixtures -------------------------------------------- */

/* The fixtures are in the repository but are read as if hostile: every size
 * and offset is checked before it is used. */
typedef struct fx_tensor {
    char *name;
    fm_dtype dtype;
    int ndim;
    int shape[FM_MAX_DIMS];
    int64_t numel;
    const unsigned char *data;  /* unaligned: copy out with memcpy */
} fx_tensor;

typedef struct fixture {
    char *buf;
    fx_tensor *t;
    int n;
} fixture;

static void fixture_free(fixture *fx)
{
    for (int i = 0; i < fx->n; i++) free(fx->t[i].name);
    free(fx->t);
    free(fx->buf);
    *fx = (fixture){0};
}

static bool json_index(const json_t *v, int64_t max, int64_t *out)
{
    if (!json_is_integer(v)) return false;
    json_int_t x = json_integer_value(v);
    if (x < 0 || x > max) return false;
    *out = (int64_t)x;
    return true;
}

/* Fills t from one header entry; false (with why) when it is malformed. */
static bool fixture_entry(fx_tensor *t, const json_t *e, const unsigned char *data, size_t dlen,
                          char *why, size_t why_len)
{
    const json_t *dtype = json_object_get(e, "dtype"), *shape = json_object_get(e, "shape");
    const json_t *offs = json_object_get(e, "data_offsets");
    if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offs)) {
        snprintf(why, why_len, "needs dtype, shape and data_offsets");
        return false;
    }
    size_t elsize;
    if (strcmp(json_string_value(dtype), "F32") == 0) {
        t->dtype = FM_F32;
        elsize = 4;
    } else if (strcmp(json_string_value(dtype), "I64") == 0) {
        t->dtype = FM_I64;
        elsize = 8;
    } else {
        snprintf(why, why_len, "dtype %s is neither F32 nor I64", json_string_value(dtype));
        return false;
    }
    if (json_array_size(shape) > FM_MAX_DIMS) {
        snprintf(why, why_len, "more than %d dimensions", FM_MAX_DIMS);
        return false;
    }
    t->ndim = (int)json_array_size(shape);
    t->numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        int64_t d;
        if (!json_index(json_array_get(shape, (size_t)i), INT_MAX, &d)) {
            snprintf(why, why_len, "shape[%d] is not an int in [0, INT_MAX]", i);
            return false;
        }
        t->shape[i] = (int)d;
        /* numel * elsize must fit in the data section; checked per factor so
         * the product never overflows. */
        if (d != 0 && t->numel > (int64_t)(dlen / elsize) / d) {
            snprintf(why, why_len, "shape larger than the data section");
            return false;
        }
        t->numel *= d;
    }
    int64_t begin, end;
    if (json_array_size(offs) != 2 || !json_index(json_array_get(offs, 0), (int64_t)dlen, &begin) ||
        !json_index(json_array_get(offs, 1), (int64_t)dlen, &end) || begin > end) {
        snprintf(why, why_len, "data_offsets not a range inside the %zu-byte data section", dlen);
        return false;
    }
    if (end - begin != t->numel * (int64_t)elsize) {
        snprintf(why, why_len, "data_offsets span %" PRId64 " bytes, shape needs %" PRId64,
                 end - begin, t->numel * (int64_t)elsize);
        return false;
    }
    t->data = data + begin;
    return true;
}

/* Parses a safetensors-layout buffer (taking ownership of buf, malloc'ed);
 * NULL on success, else a message naming what is wrong. */
static const char *fixture_parse(fixture *fx, char *buf, size_t len)
{
    static char why[512];
    *fx = (fixture){.buf = buf};
    uint64_t hlen = 0;
    if (len < 8) {
        snprintf(why, sizeof why, "%zu bytes: shorter than the 8-byte header length", len);
        return why;
    }
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (unsigned char)buf[i];
    if (hlen > len - 8) {
        snprintf(why, sizeof why, "header length %" PRIu64 " exceeds the file", hlen);
        return why;
    }
    json_error_t jerr;
    json_t *hdr = json_loadb(buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(hdr)) {
        snprintf(why, sizeof why, "header is not a JSON object: %s", hdr ? "" : jerr.text);
        json_decref(hdr);
        return why;
    }
    const unsigned char *data = (const unsigned char *)buf + 8 + hlen;
    size_t dlen = len - 8 - (size_t)hlen;
    fx->t = calloc(json_object_size(hdr) + 1, sizeof *fx->t);
    ck_assert_ptr_nonnull(fx->t);
    const char *key;
    json_t *e;
    json_object_foreach(hdr, key, e) {
        if (strcmp(key, "__metadata__") == 0) continue;
        char what[256];
        if (!json_is_object(e) || !fixture_entry(&fx->t[fx->n], e, data, dlen, what, sizeof what)) {
            snprintf(why, sizeof why, "tensor \"%.200s\": %s", key,
                     json_is_object(e) ? what : "not an object");
            json_decref(hdr);
            return why;
        }
        fx->t[fx->n++].name = fm_xstrdup(key);
    }
    json_decref(hdr);
    return NULL;
}

static void fixture_open(fixture *fx, const char *file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", FIXTURE_DIR, file);
    char *buf;
    size_t len;
    ck_assert_msg(fm_file_read_all(path, FIXTURE_MAX_BYTES, &buf, &len) == FM_OK,
                  "%s (regenerate with tests/gen_parity.py)", fm_error_message());
    const char *why = fixture_parse(fx, buf, len);
    ck_assert_msg(why == NULL, "%s: %s", path, why);
}

static const fx_tensor *fixture_find(const fixture *fx, const char *name)
{
    for (int i = 0; i < fx->n; i++)
        if (strcmp(fx->t[i].name, name) == 0) return &fx->t[i];
    return NULL;
}

/* The tensor `name` with the given dtype and numel; aborts the test if absent. */
static const fx_tensor *fixture_get(const fixture *fx, const char *name, fm_dtype dtype,
                                    int64_t numel)
{
    const fx_tensor *t = fixture_find(fx, name);
    ck_assert_msg(t != NULL, "fixture lacks \"%s\"", name);
    ck_assert_msg(t->dtype == dtype && t->numel == numel,
                  "fixture \"%s\": dtype %d numel %" PRId64 ", expected dtype %d numel %" PRId64,
                  name, (int)t->dtype, t->numel, (int)dtype, numel);
    return t;
}

/* The fixture tensor has the shape of the fmhost tensor (PyTorch's 0-d
 * tensors, the loss and num_batches_tracked, are [1] in fmhost). */
static void assert_same_shape(const fx_tensor *t, const fm_tensor *like)
{
    if (t->ndim == 0) {
        ck_assert_msg(like->numel == 1, "%s: 0-d in the fixture, %" PRId64 " elements here",
                      t->name, like->numel);
        return;
    }
    bool same = t->ndim == like->ndim;
    for (int i = 0; same && i < t->ndim; i++) same = t->shape[i] == like->shape[i];
    char buf[64];
    ck_assert_msg(same, "%s: fixture shape differs from %s", t->name,
                  fm_tensor_shape_str(like, buf, sizeof buf));
}

/* A float copy (aligned, caller frees) of an F32 fixture tensor. */
static float *fixture_floats(const fx_tensor *t)
{
    float *a = fm_xmalloc((size_t)t->numel * sizeof *a + 1);
    memcpy(a, t->data, (size_t)t->numel * sizeof *a);
    return a;
}

static int64_t fixture_i64_at(const fx_tensor *t, int64_t i)
{
    int64_t v;
    memcpy(&v, t->data + i * 8, sizeof v);
    return v;
}

/* ---- comparison ------------------------------------------------------------ */

/* Largest |a - b| / max(|b|, PARITY_FLOOR * max|b|) over n elements, where
 * each |a - b| is first reduced by slack[i] (when slack is not NULL);
 * infinity on NaN. */
static double parity_err(const float *a, const float *b, const double *slack, int64_t n)
{
    double scale = 0.0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)b[i]));
    double floor_ = scale > 0.0 ? PARITY_FLOOR * scale : 1e-30;
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]) - (slack ? slack[i] : 0.0);
        d = fmax(d, 0.0) / fmax(fabs((double)b[i]), floor_);
        if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

/* ||a - b|| / ||b|| (Euclidean) over n elements; infinity on NaN. */
static double parity_l2(const float *a, const float *b, int64_t n)
{
    double d2 = 0.0, b2 = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        d2 += d * d;
        b2 += (double)b[i] * b[i];
    }
    double r = b2 > 0.0 ? sqrt(d2 / b2) : sqrt(d2);
    return isnan(r) ? INFINITY : r;
}

/* Adam's first step moves a parameter by lr * g / (|g| + eps) (m = (1-b1) g
 * and v = (1-b2) g^2 with their bias corrections), which tends to lr * sign(g)
 * and is steepest where |g| is near eps.  A gradient element the test
 * accepts may differ from the exact one by delta = PARITY_TOL * max(|g|,
 * PARITY_FLOOR * max|g|), so a parameter whose exact gradient is, say,
 * -1.6e-8 may move by 0.62 lr or 0.63 lr and both are right: slack[i] is the
 * largest change of the step that the accepted gradient error can cause.  For
 * every element whose gradient is well above eps and its own tolerance it is
 * negligible, so a wrong update formula is still seen there. */
static double *adam_slack(const float *g, int64_t n, double lr, double eps)
{
    double scale = 0.0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)g[i]));
    double *slack = fm_xmalloc((size_t)n * sizeof *slack + 1);
    for (int64_t i = 0; i < n; i++) {
        double gi = g[i], delta = PARITY_TOL * fmax(fabs(gi), PARITY_FLOOR * scale);
        double lo = gi - delta, hi = gi + delta, u = gi / (fabs(gi) + eps);
        /* u(g) is increasing, so the extremes are at the ends of the range. */
        slack[i] = lr * fmax(hi / (fabs(hi) + eps) - u, u - lo / (fabs(lo) + eps));
    }
    return slack;
}

/* Worst error per class of tensor, reported on stdout. */
typedef struct parity_stats {
    double logits, loss, grad, after_param, after_buffer, buffer_change;
    char worst_grad[256], worst_param[256], worst_buffer[256], worst_change[256];
} parity_stats;

/* Compares a (fmhost) with the fixture tensor `name`, with slack as in
 * parity_err; records the error in *worst (naming the tensor in worst_name
 * when it is the largest so far). */
static void compare(const fixture *fx, const char *name, const fm_tensor *shape_of, const float *a,
                    const double *slack, double *worst, char *worst_name, size_t worst_len)
{
    const fx_tensor *t = fixture_get(fx, name, FM_F32, shape_of->numel);
    assert_same_shape(t, shape_of);
    float *b = fixture_floats(t);
    double err;
    if (parity_exact) {
        /* bf16: both steps against the exact one. */
        float *exact = fixture_floats(fixture_get(parity_exact, name, FM_F32, shape_of->numel));
        err = parity_l2(a, exact, shape_of->numel);
        double torch_err = parity_l2(b, exact, shape_of->numel);
        free(exact);
        ck_assert_msg(err <= PARITY_BF16_RATIO * torch_err + PARITY_TOL,
                      "%s: relative error %.3g from the exact step, more than %g times "
                      "PyTorch autocast's %.3g", name, err, PARITY_BF16_RATIO, torch_err);
    } else {
        err = parity_err(a, b, slack, shape_of->numel);
        ck_assert_msg(err <= PARITY_TOL, "%s: relative error %.3g > %g", name, err, PARITY_TOL);
    }
    free(b);
    if (!(err <= *worst)) {
        *worst = err;
        if (worst_name) snprintf(worst_name, worst_len, "%s", name);
    }
}

/* A running statistic moves by only momentum = 0.1 of the batch statistic in
 * one step, so its value after the step hides a small error in that statistic
 * (the biased variance instead of the unbiased one shifts running_var by
 * 1e-4 at most).  Its change, after minus before, shows it undiluted.  Both
 * subtractions are exact in float32 (Sterbenz: running_var stays within a
 * factor 2 of 1; running_mean starts at 0). */
static void compare_buffer_change(const fixture *s, const fixture *w, const fm_model_entry *e,
                                  parity_stats *st)
{
    char name[256];
    snprintf(name, sizeof name, "after.%s", e->name);
    int64_t n = e->tensor->numel;
    float *after = fixture_floats(fixture_get(s, name, FM_F32, n));
    float *before = fixture_floats(fixture_get(w, e->name, FM_F32, n));
    float *mine = fm_xmalloc((size_t)n * sizeof *mine + 1);
    for (int64_t i = 0; i < n; i++) {
        mine[i] = e->tensor->data[i] - before[i];
        after[i] -= before[i];
    }
    double err;
    if (parity_exact) {
        /* bf16: both changes against the exact step's. */
        float *exact = fixture_floats(fixture_get(parity_exact, name, FM_F32, n));
        for (int64_t i = 0; i < n; i++) exact[i] -= before[i];
        err = parity_l2(mine, exact, n);
        double torch_err = parity_l2(after, exact, n);
        free(exact);
        ck_assert_msg(err <= PARITY_BF16_RATIO * torch_err + PARITY_TOL,
                      "%s: change in the step off by %.3g relative from the exact step, more "
                      "than %g times PyTorch autocast's %.3g", e->name, err, PARITY_BF16_RATIO,
                      torch_err);
    } else {
        err = parity_err(mine, after, NULL, n);
        ck_assert_msg(err <= PARITY_TOL, "%s: change in the step off by %.3g relative (> %g)",
                      e->name, err, PARITY_TOL);
    }
    if (!(err <= st->buffer_change)) {
        st->buffer_change = err;
        snprintf(st->worst_change, sizeof st->worst_change, "%s", e->name);
    }
    free(mine);
    free(before);
    free(after);
}

/* ---- one model ------------------------------------------------------------- */

static fm_model *model_from_plugin(const char *model, const char *const *kv, int n_kv)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.so", FM_PLUGIN_DIR, model);
    fm_plugin *p = fm_plugin_open(path);
    ck_assert_msg(p != NULL, "%s", fm_error_message());
    fm_hparams *hp = fm_hparams_new(p, kv, n_kv);
    ck_assert_msg(hp != NULL, "%s", fm_error_message());
    fm_model *m = fm_plugin_create_model(p, hp, 1);
    ck_assert_msg(m != NULL, "%s", fm_error_message());
    fm_hparams_free(hp);
    fm_plugin_release(p);
    return m;
}

/* The model's entries and the weights fixture's tensors are the same names
 * with the same shapes, and the loaded values are the fixture's, bit for bit. */
static void check_weights_loaded(const fm_model *m, const fixture *w)
{
    ck_assert_int_eq(w->n, fm_model_count(m));
    for (int i = 0; i < fm_model_count(m); i++) {
        fm_model_entry e = fm_model_entry_at(m, i);
        const fx_tensor *t = fixture_get(w, e.name, e.tensor->dtype, e.tensor->numel);
        assert_same_shape(t, e.tensor);
        size_t bytes = (size_t)t->numel * (t->dtype == FM_I64 ? 8 : 4);
        ck_assert_msg(memcmp(e.tensor->data, t->data, bytes) == 0, "%s differs after load",
                      e.name);
    }
}

static void run_parity(const char *model, const char *const *kv, int n_kv, fm_precision precision)
{
    bool bf16 = precision == FM_PRECISION_BF16;
    fm_model *m = model_from_plugin(model, kv, n_kv);
    char file[256];
    snprintf(file, sizeof file, "%s/%s_weights.fixture", FIXTURE_DIR, model);
    ck_assert_msg(fm_safetensors_load(file, m, NULL) == FM_OK, "%s", fm_error_message());

    fixture w, s;
    snprintf(file, sizeof file, "%s_weights.fixture", model);
    fixture_open(&w, file);
    check_weights_loaded(m, &w);
    snprintf(file, sizeof file, "%s_step%s.fixture", model, bf16 ? "_bf16" : "");
    fixture_open(&s, file);
    fixture exact = {0};
    if (bf16) {
        snprintf(file, sizeof file, "%s_step.fixture", model);
        fixture_open(&exact, file);
        parity_exact = &exact;
    }

    enum { n = 8 };  // the batch of tests/gen_parity.py
    const fx_tensor *in = fixture_get(&s, "input", FM_F32, n * 28 * 28);
    ck_assert(in->ndim == 4 && in->shape[0] == n && in->shape[1] == 1 && in->shape[2] == 28 &&
              in->shape[3] == 28);
    const fx_tensor *lab = fixture_get(&s, "labels", FM_I64, n);
    int32_t labels[n];
    for (int i = 0; i < n; i++) {
        int64_t y = fixture_i64_at(lab, i);
        ck_assert(y >= 0 && y < 10);
        labels[i] = (int32_t)y;
    }

    /* The trainer's step (core/train/train.c). */
    fm_graph *g = fm_graph_new();
    fm_graph_set_training(g, true);
    fm_graph_set_grad(g, true);
    fm_graph_set_precision(g, precision);
    fm_graph_reset(g);
    fm_tensor *x = fm_graph_tensor(g, 4, (int[]){n, 1, 28, 28});
    memcpy(x->data, in->data, (size_t)x->numel * sizeof(float));
    fm_tensor *logits = fm_model_forward(m, g, x);  // [N, 10]
    fm_tensor *loss = fm_cross_entropy(g, logits, labels);
    fm_model_zero_grad(m);
    fm_backward(g, loss);
    int np;
    fm_tensor *const *params = fm_model_params(m, &np);
    fm_optim_config cfg = fm_optim_defaults(FM_OPTIM_ADAM);
    fm_optim *opt = fm_optim_new(params, np, &cfg);
    fm_optim_step(opt);

    parity_stats st = {0};
    compare(&s, "logits", logits, logits->data, NULL, &st.logits, NULL, 0);
    compare(&s, "loss", loss, loss->data, NULL, &st.loss, NULL, 0);
    char name[256];
    for (int i = 0; i < np; i++) {
        snprintf(name, sizeof name, "grad.%s", params[i]->name);
        compare(&s, name, params[i], params[i]->grad, NULL, &st.grad, st.worst_grad,
                sizeof st.worst_grad);
    }
    int n_buffers = 0;
    for (int i = 0; i < fm_model_count(m); i++) {
        fm_model_entry e = fm_model_entry_at(m, i);
        snprintf(name, sizeof name, "after.%s", e.name);
        if (e.tensor->dtype == FM_I64) {
            const fx_tensor *t = fixture_get(&s, name, FM_I64, e.tensor->numel);
            for (int64_t k = 0; k < t->numel; k++)
                ck_assert_msg(e.tensor->i64[k] == fixture_i64_at(t, k),
                              "%s: %" PRId64 ", PyTorch %" PRId64, name, e.tensor->i64[k],
                              fixture_i64_at(t, k));
        } else if (e.is_buffer) {
            compare(&s, name, e.tensor, e.tensor->data, NULL, &st.after_buffer, st.worst_buffer,
                    sizeof st.worst_buffer);
            compare_buffer_change(&s, &w, &e, &st);
        } else if (!bf16) {
            char gname[256];
            snprintf(gname, sizeof gname, "grad.%s", e.name);
            float *g = fixture_floats(fixture_get(&s, gname, FM_F32, e.tensor->numel));
            double *slack = adam_slack(g, e.tensor->numel, cfg.lr, cfg.eps);
            compare(&s, name, e.tensor, e.tensor->data, slack, &st.after_param, st.worst_param,
                    sizeof st.worst_param);
            free(slack);
            free(g);
        }
        n_buffers += e.is_buffer;
    }
    /* Nothing in the fixture went unchecked: input, labels, logits, loss, a
     * gradient per parameter and an after-value per entry. */
    ck_assert_int_eq(s.n, 4 + np + fm_model_count(m));
    printf("parity %-6s %s logits %.2e  loss %.2e  grad %.2e (%s)  params %.2e (%s)",
           model, fm_precision_name(precision), st.logits, st.loss, st.grad, st.worst_grad, st.after_param, st.worst_param);
    if (n_buffers > 0)
        printf("  buffers %.2e (%s)  buffer change %.2e (%s)", st.after_buffer,
               st.worst_buffer, st.buffer_change, st.worst_change);
    printf("\n");
    fflush(stdout);

    fm_optim_free(opt);
    fm_graph_free(g);
    parity_exact = NULL;
    fixture_free(&exact);
    fixture_free(&s);
    fixture_free(&w);
    fm_model_free(m);
}

START_TEST(test_mlp_parity)
{
    run_parity("mlp", (const char *const[]){"dropout=0"}, 1, FM_PRECISION_FP32);
}
END_TEST

START_TEST(test_mlp_parity_bf16)
{
    run_parity("mlp", (const char *const[]){"dropout=0"}, 1, FM_PRECISION_BF16);
}
END_TEST

START_TEST(test_cnn_parity)
{
    run_parity("cnn", (const char *const[]){"dropout=0"}, 1, FM_PRECISION_FP32);
}
END_TEST

START_TEST(test_cnn_parity_bf16)
{
    run_parity("cnn", (const char *const[]){"dropout=0"}, 1, FM_PRECISION_BF16);
}
END_TEST

START_TEST(test_rescnn_parity)
{
    run_parity("rescnn", NULL, 0, FM_PRECISION_FP32);
}
END_TEST

START_TEST(test_rescnn_parity_bf16)
{
    run_parity("rescnn", NULL, 0, FM_PRECISION_BF16);
}
END_TEST

/* ---- the reader itself refuses malformed files ------------------------------ */

/* A buffer "<u64 header length><header><data>" as fixture_parse takes it. */
static char *make_buf(const char *header, size_t data_len, size_t *len_out)
{
    size_t hlen = strlen(header), len = 8 + hlen + data_len;
    char *buf = calloc(1, len + 1);
    ck_assert_ptr_nonnull(buf);
    for (int i = 0; i < 8; i++) buf[i] = (char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    *len_out = len;
    return buf;
}

static void assert_parse(const char *header, size_t data_len, const char *needle)
{
    size_t len;
    char *buf = make_buf(header, data_len, &len);
    fixture fx;
    const char *why = fixture_parse(&fx, buf, len);
    if (needle == NULL) {
        ck_assert_msg(why == NULL, "%s refused: %s", header, why);
        ck_assert_int_eq(fx.n, 1);
    } else {
        ck_assert_msg(why != NULL, "%s accepted", header);
        ck_assert_msg(strstr(why, needle) != NULL, "\"%s\" lacks \"%s\"", why, needle);
    }
    fixture_free(&fx);
}

START_TEST(test_reader_refuses_malformed)
{
    assert_parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, NULL);
    assert_parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 8,
                 "data_offsets");
    assert_parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 12,
                 "shape needs 12");
    assert_parse("{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "F16");
    assert_parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                 "shape[0]");
    assert_parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[65536,65536,65536,65536],"
                 "\"data_offsets\":[0,0]}}", 0, "larger than the data");
    assert_parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                 "dimensions");
    assert_parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4,
                 "data_offsets");
    assert_parse("{\"a\":1}", 0, "not an object");
    assert_parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4,
                 "not a JSON object");

    size_t len;
    char *buf = make_buf("{}", 0, &len);
    buf[0] = 100;  // header length past the end
    fixture fx;
    const char *why = fixture_parse(&fx, buf, len);
    ck_assert_msg(why != NULL && strstr(why, "exceeds") != NULL, "%s", why ? why : "accepted");
    fixture_free(&fx);
}
END_TEST

static Suite *parity_suite(void)
{
    Suite *s = suite_create("parity");
    TCase *tc = tcase_create("pytorch");
    tcase_add_test(tc, test_reader_refuses_malformed);
    tcase_add_test(tc, test_mlp_parity);
    tcase_add_test(tc, test_cnn_parity);
    tcase_add_test(tc, test_rescnn_parity);
    tcase_add_test(tc, test_mlp_parity_bf16);
    tcase_add_test(tc, test_cnn_parity_bf16);
    tcase_add_test(tc, test_rescnn_parity_bf16);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(parity_suite()); }
