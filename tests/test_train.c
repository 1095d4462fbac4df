/* Integration tests of the training run (fm_train.h) with the real plugins on
 * data/sample (3,000 train / 500 test images).  Every run is cut short with
 * limit/epochs so the whole executable takes seconds. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* memrchr, nftw */
#endif
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm/fm_io.h"
#include "fm/fm_train.h"
#include "fm_test_util.h"

#define SAMPLE_DIR FM_SOURCE_DIR "/data/sample"

/* ---- helpers ---------------------------------------------------------------- */

static char *new_tmpdir(void)
{
    return fm_xstrdup(fm_test_tmpdir());
}

static fm_plugin *open_plugin(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.so", FM_PLUGIN_DIR, name);
    fm_plugin *p = fm_plugin_open(path);
    ck_assert_msg(p != NULL, "cannot open %s: %s", path, fm_error_message());
    return p;
}

static fm_hparams *new_hparams(fm_plugin *p, const char *assignment)
{
    const char *set[1] = {assignment};
    fm_hparams *hp = fm_hparams_new(p, set, assignment ? 1 : 0);
    ck_assert_msg(hp != NULL, "hparams: %s", fm_error_message());
    return hp;
}

static void load_sample(fm_fashion *data)
{
    fm_status st = fm_fashion_load(data, SAMPLE_DIR);
    ck_assert_msg(st == FM_OK, "cannot load %s: %s", SAMPLE_DIR, fm_error_message());
    ck_assert_int_eq(data->train.n, 3000);
    ck_assert_int_eq(data->test.n, 500);
}

/* Quiet, single-threaded, no files: each test turns on what it needs. */
static void small_config(fm_train_config *cfg, int limit, int epochs, int batch)
{
    fm_train_config_init(cfg);
    cfg->limit = limit;
    cfg->epochs = epochs;
    cfg->batch_size = batch;
    cfg->threads = 1;
    cfg->quiet = true;
    cfg->write_artifacts = false;
    cfg->data_dir = SAMPLE_DIR;
}

/* Per-model sizes that keep each run to a second or two: rescnn is narrowed
 * (width 16) and sees fewer images. */
typedef struct model_case {
    const char *name;
    const char *hparam;  /* one assignment or NULL */
    int limit, epochs, batch;
    fm_precision precision;  /* FM_PRECISION_FP32 unless given */
} model_case;

static const model_case learn_cases[] = {
    {"mlp", NULL, 2000, 3, 32, FM_PRECISION_FP32},
    {"cnn", NULL, 2000, 2, 32, FM_PRECISION_FP32},
    {"rescnn", "width=16", 1000, 2, 32, FM_PRECISION_FP32},
};

/* ---- the model learns ---------------------------------------------------------- */

typedef struct step_log {
    int n;
    double losses[1024];
    int bad;  /* steps with a non-finite loss or lr */
} step_log;

static bool log_step(void *user, const fm_step_info *info)
{
    step_log *s = user;
    if (!isfinite(info->loss) || !(info->lr > 0)) s->bad++;
    ck_assert_int_eq(info->global_step, s->n);
    if (s->n < (int)(sizeof s->losses / sizeof s->losses[0])) s->losses[s->n] = info->loss;
    s->n++;
    return true;
}

static double mean(const double *a, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += a[i];
    return s / n;
}

START_TEST(test_train_learns)
{
    const model_case *mc = &learn_cases[_i];
    fm_fashion data;
    load_sample(&data);
    fm_plugin *p = open_plugin(mc->name);
    fm_hparams *hp = new_hparams(p, mc->hparam);
    fm_train_config cfg;
    small_config(&cfg, mc->limit, mc->epochs, mc->batch);
    step_log steps = {0};
    cfg.on_step = log_step;
    cfg.user = &steps;

    fm_run *run;
    ck_assert_msg(fm_run_new(&run, p, hp, &data, &cfg) == FM_OK, "%s", fm_error_message());
    ck_assert_msg(fm_run_train(run) == FM_OK, "%s", fm_error_message());

    int n;
    const fm_epoch_metrics *h = fm_run_history(run, &n);
    ck_assert_int_eq(n, mc->epochs);
    const int steps_per_epoch = (mc->limit + mc->batch - 1) / mc->batch;
    ck_assert_int_eq(steps.n, steps_per_epoch * mc->epochs);
    ck_assert_int_eq(steps.bad, 0);
    for (int e = 0; e < n; e++) {
        ck_assert_int_eq(h[e].epoch, e + 1);
        ck_assert(isfinite(h[e].train_loss) && isfinite(h[e].val_loss));
        ck_assert(h[e].val_acc >= 0 && h[e].val_acc <= 1);
    }
    ck_assert_msg(h[n - 1].train_loss < h[0].train_loss, "%s: train loss %g -> %g", mc->name,
                  h[0].train_loss, h[n - 1].train_loss);
    const int k = 10;
    ck_assert_int_le(steps.n, (int)(sizeof steps.losses / sizeof steps.losses[0]));
    double first = mean(steps.losses, k), last = mean(steps.losses + steps.n - k, k);
    ck_assert_msg(last < 0.8 * first, "%s: batch loss %g (first %d steps) -> %g (last %d)", mc->name,
                  first, k, last, k);

    /* The best epoch is the lowest validation loss, and the weights the run
     * ends with are that epoch's. */
    fm_metrics hist = {.n = n, .rows = (fm_metrics_row *)h};
    ck_assert_int_eq(fm_run_best_epoch(run), fm_metrics_best(&hist) + 1);
    fm_eval_result val;
    ck_assert(fm_run_evaluate(run, FM_SPLIT_VAL, &val) == FM_OK);
    ck_assert_double_eq_tol(val.loss, h[fm_run_best_epoch(run) - 1].val_loss, 1e-6);

    fm_eval_result test;
    ck_assert(fm_run_evaluate(run, FM_SPLIT_TEST, &test) == FM_OK);
    ck_assert_int_eq(test.n, 500);
    ck_assert_msg(test.acc > 0.3, "%s: test accuracy %g is near chance", mc->name, test.acc);
    int64_t total = 0, diag = 0;
    for (int t = 0; t < FM_NUM_CLASSES; t++)
        for (int q = 0; q < FM_NUM_CLASSES; q++) {
            total += test.confusion[t][q];
            if (t == q) diag += test.confusion[t][q];
        }
    ck_assert_int_eq(total, 500);
    ck_assert_double_eq_tol((double)diag / 500, test.acc, 1e-12);

    fm_run_free(run);
    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_fashion_free(&data);
}
END_TEST

/* ---- hooks stop training ----------------------------------------------------------- */

typedef struct stop_at {
    int stop;   /* epoch (on_epoch) or global step (on_step) after which to stop */
    int calls;
} stop_at;

static bool stop_epoch(void *user, const fm_epoch_metrics *m)
{
    stop_at *s = user;
    s->calls++;
    return m->epoch < s->stop;
}

static bool stop_step(void *user, const fm_step_info *info)
{
    stop_at *s = user;
    s->calls++;
    return info->global_step < s->stop;
}

START_TEST(test_train_on_epoch_stops)
{
    fm_fashion data;
    load_sample(&data);
    fm_plugin *p = open_plugin("mlp");
    fm_hparams *hp = new_hparams(p, NULL);
    fm_train_config cfg;
    small_config(&cfg, 500, 6, 64);
    cfg.patience = 0;
    stop_at s = {.stop = 2};
    cfg.on_epoch = stop_epoch;
    cfg.user = &s;
    fm_run *run;
    ck_assert_msg(fm_run_new(&run, p, hp, &data, &cfg) == FM_OK, "%s", fm_error_message());
    ck_assert_msg(fm_run_train(run) == FM_OK, "a hook's stop is not a failure: %s", fm_error_message());
    int n;
    fm_run_history(run, &n);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(s.calls, 2);
    ck_assert(fm_run_best_epoch(run) >= 1 && fm_run_best_epoch(run) <= 2);
    fm_run_free(run);

    /* on_step: stop after the third step of the first epoch; that epoch is
     * still validated and recorded. */
    small_config(&cfg, 500, 6, 64);
    stop_at t = {.stop = 2};
    cfg.on_step = stop_step;
    cfg.user = &t;
    ck_assert(fm_run_new(&run, p, hp, &data, &cfg) == FM_OK);
    ck_assert(fm_run_train(run) == FM_OK);
    const fm_epoch_metrics *h = fm_run_history(run, &n);
    ck_assert_int_eq(t.calls, 3);
    ck_assert_int_eq(n, 1);
    ck_assert(isfinite(h[0].val_loss));
    ck_assert_int_eq(fm_run_best_epoch(run), 1);
    fm_run_free(run);

    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_fashion_free(&data);
}
END_TEST

/* ---- early stopping and the best checkpoint ----------------------------------------- */

/* The base rate in epoch 1, then `after` (epoch is 1-based here). */
typedef struct two_rates {
    double after;
} two_rates;

static double rate_then(void *user, int epoch, int step, double base_lr)
{
    (void)step;
    const two_rates *r = user;
    return epoch == 1 ? base_lr : r->after;
}

START_TEST(test_train_patience)
{
    fm_fashion data;
    load_sample(&data);
    fm_plugin *p = open_plugin("mlp");
    fm_hparams *hp = new_hparams(p, NULL);
    /* With a zero learning rate after epoch 1 the weights never move again,
     * so the validation loss repeats epoch 1's exactly and never improves:
     * patience 2 must stop after epoch 3. */
    two_rates frozen = {.after = 0.0};
    fm_train_config cfg;
    small_config(&cfg, 500, 10, 64);
    cfg.patience = 2;
    cfg.schedule = rate_then;
    cfg.user = &frozen;
    fm_run *run;
    ck_assert_msg(fm_run_new(&run, p, hp, &data, &cfg) == FM_OK, "%s", fm_error_message());
    ck_assert(fm_run_train(run) == FM_OK);
    int n;
    const fm_epoch_metrics *h = fm_run_history(run, &n);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(fm_run_best_epoch(run), 1);
    ck_assert_double_eq(h[1].val_loss, h[0].val_loss);
    ck_assert_double_eq(h[2].val_loss, h[0].val_loss);
    ck_assert_double_eq(h[1].lr, 0.0);
    fm_run_free(run);

    /* patience 0 turns early stopping off: every epoch runs. */
    cfg.patience = 0;
    cfg.epochs = 4;
    ck_assert(fm_run_new(&run, p, hp, &data, &cfg) == FM_OK);
    ck_assert(fm_run_train(run) == FM_OK);
    fm_run_history(run, &n);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(fm_run_best_epoch(run), 1);
    fm_run_free(run);

    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_fashion_free(&data);
}
END_TEST

static const model_case restore_cases[] = {
    {"mlp", NULL, 500, 2, 32, FM_PRECISION_FP32},
    {"rescnn", "width=8", 300, 2, 32, FM_PRECISION_FP32},  /* batch-norm buffers must come back too */
};

START_TEST(test_train_restores_best)
{
    const model_case *mc = &restore_cases[_i];
    fm_fashion data;
    load_sample(&data);
    fm_plugin *p = open_plugin(mc->name);
    fm_hparams *hp = new_hparams(p, mc->hparam);
    char *out = new_tmpdir();
    /* Epoch 2 runs Adam at lr 5, which wrecks the weights: epoch 1 is best
     * and the run must end with its weights, not the last ones. */
    two_rates wreck = {.after = 5.0};
    fm_train_config cfg;
    small_config(&cfg, mc->limit, mc->epochs, mc->batch);
    cfg.patience = 0;
    cfg.schedule = rate_then;
    cfg.user = &wreck;
    cfg.write_artifacts = true;
    cfg.out_dir = out;
    fm_run *run;
    ck_assert_msg(fm_run_new(&run, p, hp, &data, &cfg) == FM_OK, "%s", fm_error_message());
    ck_assert(fm_run_train(run) == FM_OK);
    int n;
    const fm_epoch_metrics *h = fm_run_history(run, &n);
    ck_assert_int_eq(n, 2);
    ck_assert_msg(!(h[1].val_loss <= h[0].val_loss), "lr 5 did not raise the val loss (%g -> %g)",
                  h[0].val_loss, h[1].val_loss);
    ck_assert_int_eq(fm_run_best_epoch(run), 1);

    fm_eval_result val;
    ck_assert(fm_run_evaluate(run, FM_SPLIT_VAL, &val) == FM_OK);
    ck_assert_double_eq_tol(val.loss, h[0].val_loss, 1e-6);
    ck_assert_double_eq_tol(val.acc, h[0].val_acc, 1e-12);

    /* The checkpoint on disk holds the same weights, with their epoch. */
    char ckpt[4200];
    snprintf(ckpt, sizeof ckpt, "%s/artifacts/%s_best.safetensors", out, mc->name);
    ck_assert_str_eq(fm_run_checkpoint_path(run), ckpt);
    fm_model *m = fm_plugin_create_model(p, hp, 1234);
    ck_assert(m != NULL);
    fm_meta *meta = NULL;
    ck_assert_msg(fm_safetensors_load(ckpt, m, &meta) == FM_OK, "%s", fm_error_message());
    ck_assert_str_eq(fm_meta_get(meta, "epoch"), "1");
    ck_assert_str_eq(fm_meta_get(meta, "plugin"), mc->name);
    fm_subset tr, va;
    fm_split(&data.train, cfg.val_split, cfg.seed, cfg.limit, &tr, &va);
    fm_eval_result again;
    ck_assert(fm_evaluate(m, &va, 100, &again, NULL, NULL) == FM_OK);
    ck_assert_int_eq(again.n, val.n);
    ck_assert_double_eq_tol(again.loss, h[0].val_loss, 1e-6);

    fm_subset_free(&tr);
    fm_subset_free(&va);
    fm_meta_free(meta);
    fm_model_free(m);
    fm_run_free(run);
    fm_test_rmtree(out);
    free(out);
    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_fashion_free(&data);
}
END_TEST

/* ---- a bad output directory fails up front -------------------------------------------- */

static int steps_seen;

static bool count_step(void *user, const fm_step_info *info)
{
    (void)user, (void)info;
    steps_seen++;
    return true;
}

START_TEST(test_train_bad_out_dir)
{
    fm_fashion data;
    load_sample(&data);
    fm_plugin *p = open_plugin("mlp");
    fm_hparams *hp = new_hparams(p, NULL);
    char *tmp = new_tmpdir();
    char file[4200], out[4300];
    snprintf(file, sizeof file, "%s/plain-file", tmp);
    fm_test_write_file(file, "x", 1);
    snprintf(out, sizeof out, "%s/run", file);

    fm_train_config cfg;
    small_config(&cfg, 200, 1, 64);
    cfg.write_artifacts = true;
    cfg.out_dir = out;
    cfg.on_step = count_step;
    steps_seen = 0;
    static char sentinel;
    fm_run *run = (fm_run *)(void *)&sentinel;  /* must be reset to NULL on failure */
    fm_status st = fm_run_new(&run, p, hp, &data, &cfg);
    ck_assert_int_eq(st, FM_ERR_IO);
    ck_assert_ptr_null(run);
    ck_assert_msg(strstr(fm_error_message(), file) != NULL, "message does not name %s: %s", file,
                  fm_error_message());
    ck_assert_int_eq(steps_seen, 0);

    /* A directory without write permission (root may write anywhere). */
    if (geteuid() != 0) {
        char ro[4200];
        snprintf(ro, sizeof ro, "%s/readonly", tmp);
        ck_assert_int_eq(mkdir(ro, 0555), 0);
        cfg.out_dir = ro;
        st = fm_run_new(&run, p, hp, &data, &cfg);
        ck_assert_int_ne(st, FM_OK);
        ck_assert_ptr_null(run);
        ck_assert_msg(strstr(fm_error_message(), ro) != NULL, "message does not name %s: %s", ro,
                      fm_error_message());
        chmod(ro, 0755);
    }

    /* A bad option is refused before anything is made, naming the option. */
    small_config(&cfg, 200, 0, 64);
    st = fm_run_new(&run, p, hp, &data, &cfg);
    ck_assert_int_eq(st, FM_ERR_ARG);
    ck_assert_ptr_null(run);
    ck_assert_msg(strstr(fm_error_message(), "--epochs") != NULL, "%s", fm_error_message());

    fm_test_rmtree(tmp);
    free(tmp);
    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_fashion_free(&data);
}
END_TEST

/* ---- determinism ------------------------------------------------------------------------ */

/* Run on every kernel set (and under the sanitizers, where the vector
 * kernels are slow): the convolutional models for one epoch, the mlp for
 * two, so that choosing and restoring the best epoch is compared too. */
static const model_case det_cases[] = {
    {"mlp", NULL, 500, 2, 64, FM_PRECISION_FP32},
    {"cnn", NULL, 300, 1, 32, FM_PRECISION_FP32},
    {"rescnn", "width=8", 300, 1, 32, FM_PRECISION_FP32},
    {"cnn", NULL, 300, 1, 32, FM_PRECISION_BF16},
    {"rescnn", "width=8", 300, 1, 32, FM_PRECISION_BF16},
};
#define DET_NCASES ((int)(sizeof det_cases / sizeof det_cases[0]))

static void det_run(const model_case *mc, fm_plugin *p, const fm_hparams *hp, const fm_fashion *data,
                    const char *out, int threads)
{
    fm_train_config cfg;
    small_config(&cfg, mc->limit, mc->epochs, mc->batch);
    cfg.seed = 7;
    cfg.threads = threads;
    cfg.precision = mc->precision;
    cfg.write_artifacts = true;
    cfg.out_dir = out;
    cfg.augment = true;  /* the augmentation stream must be seeded too */
    fm_run *run;
    ck_assert_msg(fm_run_new(&run, p, hp, data, &cfg) == FM_OK, "%s", fm_error_message());
    ck_assert_int_eq(fm_get_threads(), threads);
    ck_assert(fm_run_train(run) == FM_OK);
    fm_run_free(run);
}

/* Each kernel set is deterministic on its own: every model, on every set
 * this processor runs, gives the same metrics (but seconds) and a
 * byte-identical checkpoint for one and two threads. */
START_TEST(test_train_deterministic)
{
    const model_case *mc = &det_cases[fm_test_each_set(_i, DET_NCASES)];
    const char *set = fm_test_kernels_name();
    fm_fashion data;
    load_sample(&data);
    fm_plugin *p = open_plugin(mc->name);
    fm_hparams *hp = new_hparams(p, mc->hparam);
    char *dirs[3];
    const int threads[3] = {1, 1, 2};
    for (int r = 0; r < 3; r++) {
        dirs[r] = new_tmpdir();
        det_run(mc, p, hp, &data, dirs[r], threads[r]);
    }
    char path[4200];
    int lines0;
    snprintf(path, sizeof path, "%s/results/%s/metrics.csv", dirs[0], mc->name);
    char *m0 = fm_test_metrics_without_seconds(path, &lines0);
    ck_assert_int_eq(lines0, 1 + mc->epochs);
    ck_assert_msg(!strncmp(m0, "epoch,train_loss,train_acc,val_loss,val_acc,lr\n", 47), "%s", m0);
    size_t len0;
    snprintf(path, sizeof path, "%s/artifacts/%s_best.safetensors", dirs[0], mc->name);
    char *c0 = fm_test_read_file(path, &len0);
    ck_assert_uint_gt(len0, 1000);
    for (int r = 1; r < 3; r++) {
        int lines;
        snprintf(path, sizeof path, "%s/results/%s/metrics.csv", dirs[r], mc->name);
        char *m = fm_test_metrics_without_seconds(path, &lines);
        ck_assert_msg(!strcmp(m, m0), "%s on %s: metrics differ (threads %d vs %d):\n%s---\n%s",
                      mc->name, set, threads[0], threads[r], m0, m);
        size_t len;
        snprintf(path, sizeof path, "%s/artifacts/%s_best.safetensors", dirs[r], mc->name);
        char *c = fm_test_read_file(path, &len);
        ck_assert_msg(len == len0 && !memcmp(c, c0, len),
                      "%s on %s: checkpoints differ (threads %d vs %d)", mc->name, set, threads[0],
                      threads[r]);
        free(c);
        free(m);
    }
    free(c0);
    free(m0);

    /* Another seed must give another run, or the comparison above is empty. */
    char *other = new_tmpdir();
    fm_train_config cfg;
    small_config(&cfg, mc->limit, 1, mc->batch);
    cfg.seed = 8;
    cfg.precision = mc->precision;
    cfg.write_artifacts = true;
    cfg.out_dir = other;
    cfg.augment = true;
    fm_run *run;
    ck_assert(fm_run_new(&run, p, hp, &data, &cfg) == FM_OK);
    ck_assert(fm_run_train(run) == FM_OK);
    fm_run_free(run);
    size_t len1;
    snprintf(path, sizeof path, "%s/artifacts/%s_best.safetensors", other, mc->name);
    char *c1 = fm_test_read_file(path, &len1);
    snprintf(path, sizeof path, "%s/artifacts/%s_best.safetensors", dirs[0], mc->name);
    char *c0b = fm_test_read_file(path, &len0);
    ck_assert(len1 != len0 || memcmp(c1, c0b, len0) != 0);
    free(c1);
    free(c0b);
    fm_test_rmtree(other);
    free(other);

    for (int r = 0; r < 3; r++) {
        fm_test_rmtree(dirs[r]);
        free(dirs[r]);
    }
    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_fashion_free(&data);
    fm_test_restore_kernels();
}
END_TEST

/* avx2 and avx512 compute every element with the same operations in the
 * same order, so a training gives the same weights on both: every
 * parameter and buffer, and every epoch's metrics.  Tensors are compared,
 * not checkpoint files, whose metadata names the set. */
START_TEST(test_train_vector_sets_agree)
{
    fm_kernels pair[2];
    const model_case *mc = &det_cases[fm_test_each_pair(_i, DET_NCASES, pair)];
    fm_fashion data;
    load_sample(&data);
    fm_plugin *p = open_plugin(mc->name);
    fm_hparams *hp = new_hparams(p, mc->hparam);
    fm_run *run[2];
    fm_train_config cfg;
    small_config(&cfg, mc->limit, mc->epochs, mc->batch);
    cfg.seed = 7;
    cfg.precision = mc->precision;
    cfg.augment = true;
    for (int k = 0; k < 2; k++) {
        fm_test_use_kernels(pair[k]);
        ck_assert_msg(fm_run_new(&run[k], p, hp, &data, &cfg) == FM_OK, "%s", fm_error_message());
        ck_assert(fm_run_train(run[k]) == FM_OK);
    }
    const char *a = fm_kernels_name(pair[0]), *b = fm_kernels_name(pair[1]);

    int n0, n1;
    const fm_epoch_metrics *h0 = fm_run_history(run[0], &n0), *h1 = fm_run_history(run[1], &n1);
    ck_assert_int_eq(n0, mc->epochs);
    ck_assert_int_eq(n1, n0);
    for (int e = 0; e < n0; e++) {
        const double v0[5] = {h0[e].train_loss, h0[e].train_acc, h0[e].val_loss, h0[e].val_acc,
                              h0[e].lr};
        const double v1[5] = {h1[e].train_loss, h1[e].train_acc, h1[e].val_loss, h1[e].val_acc,
                              h1[e].lr};
        ck_assert_msg(!memcmp(v0, v1, sizeof v0), "%s, epoch %d: metrics differ on %s and %s",
                      mc->name, e + 1, a, b);
    }

    /* The untrained model: the weights compared must have moved from it,
     * or the comparison says nothing about the kernels. */
    fm_model *init = fm_plugin_create_model(p, hp, cfg.seed);
    ck_assert(init != NULL);
    fm_model *m0 = fm_run_model(run[0]), *m1 = fm_run_model(run[1]);
    int count = fm_model_count(m0), moved = 0;
    ck_assert_int_eq(fm_model_count(m1), count);
    ck_assert_int_eq(fm_model_count(init), count);
    for (int i = 0; i < count; i++) {
        fm_model_entry e0 = fm_model_entry_at(m0, i), e1 = fm_model_entry_at(m1, i);
        fm_model_entry ei = fm_model_entry_at(init, i);
        ck_assert_str_eq(e0.name, e1.name);
        ck_assert(e0.tensor->dtype == e1.tensor->dtype);
        ck_assert_int_eq(e0.tensor->numel, e1.tensor->numel);
        size_t n = (size_t)e0.tensor->numel;
        size_t bytes = n * (e0.tensor->dtype == FM_I64 ? sizeof(int64_t) : sizeof(float));
        if (e0.tensor->dtype == FM_F32) {
            ptrdiff_t at = fm_test_first_diff(e0.tensor->data, e1.tensor->data, n);
            ck_assert_msg(at < 0, "%s: %s[%td] is %.9g on %s, %.9g on %s", mc->name, e0.name, at,
                          at < 0 ? 0.0 : (double)e0.tensor->data[at], a,
                          at < 0 ? 0.0 : (double)e1.tensor->data[at], b);
        } else {
            ck_assert_msg(!memcmp(e0.tensor->data, e1.tensor->data, bytes),
                          "%s: %s differs on %s and %s", mc->name, e0.name, a, b);
        }
        moved += memcmp(e0.tensor->data, ei.tensor->data, bytes) != 0;
    }
    ck_assert_int_gt(moved, count / 2);

    fm_model_free(init);
    fm_run_free(run[0]);
    fm_run_free(run[1]);
    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_fashion_free(&data);
    fm_test_restore_kernels();
}
END_TEST

/* ---- the weights' moving average (--ema) ------------------------------------------------ */

#define EMA_DECAY 0.75
#define EMA_MAX_STEPS 8

/* The model's state after every step, for the hand computation. */
typedef struct ema_trace {
    fm_run *run;
    int steps;
    void *after[EMA_MAX_STEPS];
} ema_trace;

static bool trace_step(void *user, const fm_step_info *info)
{
    (void)info;
    ema_trace *t = user;
    fm_model *m = fm_run_model(t->run);
    ck_assert_int_lt(t->steps, EMA_MAX_STEPS);
    t->after[t->steps] = malloc(fm_model_state_bytes(m));
    fm_model_state_save(m, t->after[t->steps++]);
    return true;
}

/* ema = 0.75 ema + 0.25 w after each step from the initial weights, worked
 * in double from the weights the steps left: the run ends holding it (its
 * best and only epoch), batch-norm running statistics included, counters
 * copied; it is what was validated; and it is not the trained weights. */
START_TEST(test_train_ema_by_hand)
{
    fm_fashion data;
    load_sample(&data);
    fm_plugin *p = open_plugin("rescnn");
    fm_hparams *hp = new_hparams(p, "width=8");
    fm_train_config cfg;
    small_config(&cfg, 240, 1, 40);  /* 216 training images: 6 steps */
    cfg.ema = EMA_DECAY;
    ema_trace trace = {0};
    cfg.on_step = trace_step;
    cfg.user = &trace;
    fm_run *run;
    ck_assert_msg(fm_run_new(&run, p, hp, &data, &cfg) == FM_OK, "%s", fm_error_message());
    trace.run = run;
    fm_model *m = fm_run_model(run);
    void *init = malloc(fm_model_state_bytes(m));
    fm_model_state_save(m, init);
    ck_assert(fm_run_train(run) == FM_OK);
    ck_assert_int_eq(trace.steps, 6);
    ck_assert_int_eq(fm_run_best_epoch(run), 1);

    int buffers_averaged = 0, checked = 0;
    for (int i = 0; i < fm_model_count(m); i++) {
        fm_model_entry e = fm_model_entry_at(m, i);
        const void *last = fm_model_state_entry(m, trace.after[trace.steps - 1], i);
        if (e.tensor->dtype == FM_I64) {
            ck_assert(memcmp(e.tensor->i64, last, (size_t)e.tensor->numel * sizeof(int64_t)) == 0);
            continue;
        }
        bool differs = false;
        for (int64_t j = 0; j < e.tensor->numel; j++) {
            double avg = ((const float *)fm_model_state_entry(m, init, i))[j];
            for (int k = 0; k < trace.steps; k++)
                avg = EMA_DECAY * avg +
                      (1 - EMA_DECAY) * ((const float *)fm_model_state_entry(m, trace.after[k], i))[j];
            float got = e.tensor->data[j];
            ck_assert_msg(fabs(got - avg) <= 1e-6 + 1e-5 * fabs(avg), "%s[%lld]: %.9g, by hand %.9g",
                          e.name, (long long)j, (double)got, avg);
            differs = differs || got != ((const float *)last)[j];
            checked++;
        }
        if (e.is_buffer && differs) buffers_averaged++;
    }
    ck_assert_int_gt(checked, 1000);
    ck_assert_int_ge(buffers_averaged, 2);  /* running means and variances */

    int n;
    const fm_epoch_metrics *h = fm_run_history(run, &n);
    fm_eval_result val;
    ck_assert(fm_run_evaluate(run, FM_SPLIT_VAL, &val) == FM_OK);
    ck_assert_double_eq_tol(val.loss, h[0].val_loss, 1e-9);

    for (int k = 0; k < trace.steps; k++) free(trace.after[k]);
    free(init);
    fm_run_free(run);
    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_fashion_free(&data);
}
END_TEST

/* ---- test-time augmentation by flip (--tta) -------------------------------------------- */

/* The first n images of s into x (n * 784 floats) and their labels into y;
 * returns a graph in eval mode, without gradients, to run them through. */
static fm_graph *load_for_eval(const fm_subset *s, int n, float *x, int32_t *y)
{
    fm_loader *l = fm_loader_new(s, n, false, false, 0);
    ck_assert_int_eq(fm_loader_next(l, x, y, NULL), n);
    fm_loader_free(l);
    fm_graph *g = fm_graph_new();
    fm_graph_set_training(g, false);
    fm_graph_set_grad(g, false);
    return g;
}

/* fm_evaluate_tta against both passes worked by hand: the loader's batch
 * and its mirror through the model, the logits averaged, then the
 * cross-entropy, the arg max and the softmax probability; TTA changes
 * something, and a mirrored test set gives the same numbers bit for bit. */
START_TEST(test_evaluate_tta_by_hand)
{
    enum { N = 40 };
    fm_fashion data;
    load_sample(&data);
    fm_plugin *p = open_plugin("cnn");
    fm_hparams *hp = new_hparams(p, NULL);
    fm_model *m = fm_plugin_create_model(p, hp, 5);
    ck_assert(m != NULL);
    fm_subset s;
    fm_subset_all(&s, &data.test, N);
    ck_assert_int_eq(s.n, N);
    uint8_t pred[N], pred_plain[N];
    float conf[N], conf_plain[N];
    fm_eval_result tta, plain;
    ck_assert(fm_evaluate_tta(m, &s, 16, true, &tta, pred, conf) == FM_OK);
    ck_assert(fm_evaluate(m, &s, 16, &plain, pred_plain, conf_plain) == FM_OK);
    ck_assert_int_eq(tta.n, N);

    float *x = malloc((size_t)N * 784 * sizeof *x);
    int32_t y[N];
    fm_graph *g = load_for_eval(&s, N, x, y);
    int shape[4] = {N, 1, 28, 28};
    fm_tensor *a = fm_graph_tensor(g, 4, shape), *b = fm_graph_tensor(g, 4, shape);
    for (int i = 0; i < N * 28; i++)
        for (int j = 0; j < 28; j++) {
            a->data[i * 28 + j] = x[i * 28 + j];
            b->data[i * 28 + j] = x[i * 28 + 27 - j];
        }
    const float *za = fm_model_forward(m, g, a)->data, *zb = fm_model_forward(m, g, b)->data;
    double loss = 0.0;
    int changed = 0;
    for (int i = 0; i < N; i++) {
        double z[10], mx = -INFINITY, sum = 0.0;
        int best = 0;
        for (int k = 0; k < 10; k++) {
            z[k] = 0.5 * ((double)za[i * 10 + k] + zb[i * 10 + k]);
            if (z[k] > mx) mx = z[k], best = k;
        }
        for (int k = 0; k < 10; k++) sum += exp(z[k] - mx);
        loss += mx + log(sum) - z[y[i]];
        ck_assert_int_eq(pred[i], best);
        ck_assert_double_eq_tol(conf[i], 1.0 / sum, 1e-6);
        changed += pred[i] != pred_plain[i] || conf[i] != conf_plain[i];
    }
    ck_assert_double_eq_tol(tta.loss, loss / N, 1e-6);
    ck_assert_int_gt(changed, N / 2);

    /* The mirrored set: each image flipped. */
    fm_dataset mirror = {.n = N, .images = malloc((size_t)N * 784), .labels = malloc(N)};
    for (int i = 0; i < N; i++) {
        mirror.labels[i] = data.test.labels[s.index[i]];
        for (int r = 0; r < 28; r++)
            for (int c = 0; c < 28; c++)
                mirror.images[i * 784 + r * 28 + c] = data.test.images[(size_t)s.index[i] * 784 + r * 28 + 27 - c];
    }
    fm_subset ms;
    fm_subset_all(&ms, &mirror, 0);
    uint8_t pred_m[N];
    float conf_m[N];
    fm_eval_result tm;
    ck_assert(fm_evaluate_tta(m, &ms, 16, true, &tm, pred_m, conf_m) == FM_OK);
    ck_assert(memcmp(pred_m, pred, N) == 0 && memcmp(conf_m, conf, sizeof conf) == 0);
    ck_assert(tm.loss == tta.loss);

    fm_subset_free(&ms);
    free(mirror.images);
    free(mirror.labels);
    fm_graph_free(g);
    free(x);
    fm_subset_free(&s);
    fm_model_free(m);
    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_fashion_free(&data);
}
END_TEST

/* ---- evaluation in passes ----------------------------------------------------------- */

/* fm_evaluate runs a batch of more than 256 images as passes of 256: sound
 * only if an image's logits do not depend on the other images of its pass.
 * For each model (and ResCNN in bf16), on two threads (the work is split
 * differently each time), 300 images in one pass and in passes of 256 + 44
 * and of 100 + 200: on the vector sets the logits are the same bit for bit
 * (their products sum every element alike whatever the product's height);
 * on the portable set, whose OpenBLAS products round some rows otherwise in
 * a product of another height, within 1e-5 (1 + |z|) of each other.  And
 * fm_evaluate asked for batches of 1000 predicts the arg max of the passes
 * of 256 + 44, on every set. */
typedef struct pass_case {
    const char *name, *hparam;
    fm_precision precision;
} pass_case;
static const pass_case pass_cases[] = {
    {"mlp", NULL, FM_PRECISION_FP32},
    {"cnn", NULL, FM_PRECISION_FP32},
    {"rescnn", NULL, FM_PRECISION_FP32},
    {"rescnn", "width=16", FM_PRECISION_BF16},
};
#define PASS_NCASES ((int)(sizeof pass_cases / sizeof pass_cases[0]))

START_TEST(test_forward_pass_independent)
{
    enum { N = 300 };
    const pass_case *pc = &pass_cases[fm_test_each_set(_i, PASS_NCASES)];
    const char *set = fm_test_kernels_name();
    fm_set_threads(2);
    fm_precision_use(pc->precision);
    fm_fashion data;
    load_sample(&data);
    fm_plugin *p = open_plugin(pc->name);
    fm_hparams *hp = new_hparams(p, pc->hparam);
    fm_model *m = fm_plugin_create_model(p, hp, 11);
    ck_assert(m != NULL);
    fm_subset s;
    fm_subset_all(&s, &data.test, N);
    const bool exact = fm_kernels_active() != FM_KERNELS_PORTABLE;
    float *x = malloc((size_t)N * 784 * sizeof *x), *z[3];
    for (int k = 0; k < 3; k++) z[k] = malloc((size_t)N * 10 * sizeof *z[k]);
    int32_t y[N];
    fm_graph *g = load_for_eval(&s, N, x, y);
    const int splits[3][3] = {{N}, {256, 44}, {100, 200}};
    for (int k = 0; k < 3; k++)
        for (int i0 = 0, j = 0; i0 < N; i0 += splits[k][j++]) {
            int b = splits[k][j], shape[4] = {b, 1, 28, 28};
            fm_graph_reset(g);
            fm_tensor *a = fm_graph_tensor(g, 4, shape);
            memcpy(a->data, x + (size_t)i0 * 784, (size_t)b * 784 * sizeof *x);
            memcpy(z[k] + (size_t)i0 * 10, fm_model_forward(m, g, a)->data, (size_t)b * 10 * sizeof(float));
        }
    for (int k = 1; k < 3; k++)
        for (int e = 0; e < N * 10; e++) {
            float u = z[k][e], v = z[0][e];
            ck_assert_msg(exact ? fm_test_bits_of(u) == fm_test_bits_of(v)
                                : fabsf(u - v) <= 1e-5f * (1.0f + fabsf(v)),
                          "%s %s on %s: image %d, logit %d: %.9g in passes of %d + %d, %.9g in one of %d",
                          pc->name, pc->precision == FM_PRECISION_BF16 ? "bf16" : "fp32", set,
                          e / 10, e % 10, u, splits[k][0], splits[k][1], v, N);
        }
    uint8_t pred[N];
    fm_eval_result res;
    ck_assert(fm_evaluate(m, &s, 1000, &res, pred, NULL) == FM_OK);
    ck_assert_int_eq(res.n, N);
    for (int i = 0; i < N; i++) {
        int best = 0;
        for (int c = 1; c < 10; c++)
            if (z[1][i * 10 + c] > z[1][i * 10 + best]) best = c;
        ck_assert_int_eq(pred[i], best);
    }

    fm_precision_use(FM_PRECISION_FP32);
    fm_graph_free(g);
    for (int k = 0; k < 3; k++) free(z[k]);
    free(x);
    fm_subset_free(&s);
    fm_model_free(m);
    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_fashion_free(&data);
    fm_test_restore_kernels();
}
END_TEST

static Suite *train_suite(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("run");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_train_learns, 0, (int)(sizeof learn_cases / sizeof learn_cases[0]));
    tcase_add_test(tc, test_train_on_epoch_stops);
    tcase_add_test(tc, test_train_patience);
    tcase_add_loop_test(tc, test_train_restores_best, 0,
                        (int)(sizeof restore_cases / sizeof restore_cases[0]));
    tcase_add_test(tc, test_train_bad_out_dir);
    tcase_add_test(tc, test_train_ema_by_hand);
    tcase_add_test(tc, test_evaluate_tta_by_hand);
    tcase_add_loop_test(tc, test_forward_pass_independent, 0,
                        PASS_NCASES * fm_test_kernel_sets(NULL));
    suite_add_tcase(s, tc);

    tc = tcase_create("determinism");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_train_deterministic, 0, DET_NCASES * fm_test_kernel_sets(NULL));
    tcase_add_loop_test(tc, test_train_vector_sets_agree, 0,
                        DET_NCASES * fm_test_vector_pairs(NULL));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fm_test_run(train_suite());
}
