/* The training run: SPEC §3's protocol, its artifacts and its progress. */
#include "fm/fm_train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/fm_io.h"

#define EVAL_BATCH 256

struct fm_run {
    fm_train_config cfg;
    fm_kernels kernels;      /* the set in use when the run was made */
    fm_plugin *plugin;
    char name[64];
    char hparams[512];       /* "width=32 blocks=1" */
    char **hp_kv;            /* the same as name, value pairs */
    int n_hp;
    fm_model *model;
    fm_optim *optim;
    fm_graph *graph;
    fm_fashion *owned_data;  /* when the run loaded the data itself */
    const fm_fashion *data;
    fm_subset train, val, test;
    fm_loader *loader;
    int32_t *y;      /* [B] */
    fm_metrics history;
    int best_epoch;
    double best_val_loss;
    void *best_state;
    double seconds;
    int64_t global_step;
    char results_dir[4096];
    char checkpoint[4096 + 128];
    uint8_t *pred;     /* evaluation buffers, sized for the largest split */
    float *confidence;
    bool have_test;
    fm_eval_result test_result;
};

fm_status fm_fashion_load(fm_fashion *out, const char *data_dir)
{
    memset(out, 0, sizeof *out);
    fm_status st = fm_data_find_dir(data_dir, out->dir, sizeof out->dir);
    if (st != FM_OK) return st;
    st = fm_dataset_load_split(&out->train, out->dir, "train");
    if (st == FM_OK) st = fm_dataset_load_split(&out->test, out->dir, "test");
    if (st != FM_OK) fm_fashion_free(out);
    return st;
}

void fm_fashion_free(fm_fashion *f)
{
    fm_dataset_free(&f->train);
    fm_dataset_free(&f->test);
}

static fm_status check_writable_dir(const char *dir)
{
    fm_status st = fm_mkdirs(dir);
    if (st != FM_OK) return st;
    if (access(dir, W_OK) != 0)
        return fm_error_set(FM_ERR_IO, "%s: not writable (%s); choose another --out directory",
                            dir, strerror(errno));
    return FM_OK;
}

fm_status fm_run_new(fm_run **out, fm_plugin *plugin, const fm_hparams *hp, const fm_fashion *data,
                     const fm_train_config *cfg)
{
    *out = NULL;
    fm_status st = fm_train_config_check(cfg);
    if (st != FM_OK) return st;

    fm_run *r = fm_xcalloc(1, sizeof *r);
    r->cfg = *cfg;
    r->kernels = fm_kernels_active();
    r->plugin = plugin;
    fm_plugin_retain(plugin);
    snprintf(r->name, sizeof r->name, "%s", fm_plugin_descriptor_of(plugin)->name);
    fm_hparams_to_string(hp, r->hparams, sizeof r->hparams);
    r->n_hp = fm_hparams_count(hp);
    r->hp_kv = fm_xcalloc(2 * (size_t)r->n_hp + 1, sizeof *r->hp_kv);
    for (int i = 0; i < r->n_hp; i++) {
        r->hp_kv[2 * i] = fm_xstrdup(fm_hparams_name_at(hp, i));
        r->hp_kv[2 * i + 1] = fm_xstrdup(fm_hparams_value_at(hp, i));
    }
    r->best_val_loss = INFINITY;
    fm_set_threads(cfg->threads);

    if (cfg->write_artifacts) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/artifacts", cfg->out_dir);
        snprintf(r->results_dir, sizeof r->results_dir, "%s/results/%s", cfg->out_dir, r->name);
        snprintf(r->checkpoint, sizeof r->checkpoint, "%s/%s_best.safetensors", dir, r->name);
        if ((st = check_writable_dir(dir)) != FM_OK || (st = check_writable_dir(r->results_dir)) != FM_OK) {
            fm_run_free(r);
            return st;
        }
    }

    if (!data) {
        r->owned_data = fm_xcalloc(1, sizeof *r->owned_data);
        if ((st = fm_fashion_load(r->owned_data, cfg->data_dir)) != FM_OK) {
            free(r->owned_data);
            r->owned_data = NULL;
            fm_run_free(r);
            return st;
        }
        data = r->owned_data;
    }
    r->data = data;

    r->model = fm_plugin_create_model(plugin, hp, cfg->seed);
    if (!r->model) {
        fm_status err = fm_error_status();
        fm_run_free(r);
        return err ? err : FM_ERR_PLUGIN;
    }
    int n_params;
    fm_tensor *const *params = fm_model_params(r->model, &n_params);
    r->optim = fm_optim_new(params, n_params, &cfg->optim);
    r->graph = fm_graph_new();
    fm_rng_seed(fm_graph_rng(r->graph), cfg->seed, FM_RNG_DROPOUT);

    fm_split(&data->train, cfg->val_split, cfg->seed, cfg->limit, &r->train, &r->val);
    fm_subset_all(&r->test, &data->test, 0);
    if (r->train.n == 0 || r->val.n == 0) {
        fm_run_free(r);
        return fm_error_set(FM_ERR_ARG, "%s: too few images for training and validation "
                            "(train %d, validation %d); raise --limit or --val-split",
                            data->dir, r->train.n, r->val.n);
    }
    r->loader = fm_loader_new(&r->train, cfg->batch_size, true, cfg->augment, cfg->seed);
    r->y = fm_xcalloc((size_t)cfg->batch_size, sizeof(int32_t));
    r->best_state = fm_xmalloc(fm_model_state_bytes(r->model));
    int most = r->test.n > r->val.n ? r->test.n : r->val.n;
    r->pred = fm_xcalloc((size_t)most, 1);
    r->confidence = fm_xcalloc((size_t)most, sizeof(float));
    *out = r;
    return FM_OK;
}

void fm_run_free(fm_run *r)
{
    if (!r) return;
    fm_loader_free(r->loader);
    fm_subset_free(&r->train);
    fm_subset_free(&r->val);
    fm_subset_free(&r->test);
    fm_graph_free(r->graph);
    fm_optim_free(r->optim);
    fm_model_free(r->model);
    if (r->owned_data) {
        fm_fashion_free(r->owned_data);
        free(r->owned_data);
    }
    free(r->y);
    fm_metrics_free(&r->history);
    free(r->best_state);
    free(r->pred);
    free(r->confidence);
    for (int i = 0; i < 2 * r->n_hp; i++) free(r->hp_kv[i]);
    free(r->hp_kv);
    fm_plugin_release(r->plugin);
    free(r);
}

/* ---- evaluation ------------------------------------------------------------ */

static int argmax10(const float *row, float *prob_out)
{
    int best = 0;
    double mx = row[0];
    for (int k = 1; k < FM_NUM_CLASSES; k++)
        if (row[k] > mx) mx = row[best = k];
    double z = 0.0;
    for (int k = 0; k < FM_NUM_CLASSES; k++) z += exp((double)row[k] - mx);
    if (prob_out) *prob_out = (float)(1.0 / z);
    return best;
}

/* Resets g, loads the loader's next batch straight into a new input tensor
 * and runs the model on it: logits [b, 10], or NULL at the end of the epoch.
 * y receives the b labels. */
static fm_tensor *next_logits(fm_model *m, fm_graph *g, fm_loader *l, int batch_size, int32_t *y,
                              int *b)
{
    fm_graph_reset(g);
    int shape[4] = {batch_size, 1, FM_IMAGE_H, FM_IMAGE_W};
    fm_tensor *x = fm_graph_tensor(g, 4, shape);
    if ((*b = fm_loader_next(l, x->data, y, NULL)) == 0) return NULL;
    shape[0] = *b;
    fm_tensor_set_shape(x, 4, shape);  /* a short last batch */
    fm_tensor *logits = fm_model_forward(m, g, x);
    FM_ASSERT(logits->ndim == 2 && logits->shape[0] == *b && logits->shape[1] == FM_NUM_CLASSES);
    return logits;
}

fm_status fm_evaluate(fm_model *m, const fm_subset *s, int batch_size, fm_eval_result *out,
                      uint8_t *pred, float *confidence)
{
    memset(out, 0, sizeof *out);
    out->data = s->data;
    out->index = s->index;
    out->pred = pred;
    out->confidence = confidence;
    if (s->n == 0) return FM_OK;
    fm_graph *g = fm_graph_new();
    fm_graph_set_training(g, false);
    fm_graph_set_grad(g, false);
    fm_loader *l = fm_loader_new(s, batch_size, false, false, 0);
    int32_t *y = fm_xcalloc((size_t)batch_size, sizeof *y);
    double loss_sum = 0.0;
    int64_t correct = 0;
    int done = 0, b;
    fm_loader_begin_epoch(l);
    for (fm_tensor *logits; (logits = next_logits(m, g, l, batch_size, y, &b));) {
        fm_tensor *loss = fm_cross_entropy(g, logits, y);
        loss_sum += (double)loss->data[0] * b;
        for (int i = 0; i < b; i++) {
            float conf;
            int p = argmax10(logits->data + (size_t)i * FM_NUM_CLASSES, &conf);
            if (pred) pred[done + i] = (uint8_t)p;
            if (confidence) confidence[done + i] = conf;
            out->confusion[y[i]][p]++;
            correct += p == y[i];
        }
        done += b;
    }
    out->n = done;
    out->loss = loss_sum / done;
    out->acc = (double)correct / done;
    free(y);
    fm_loader_free(l);
    fm_graph_free(g);
    return FM_OK;
}

fm_status fm_run_evaluate(fm_run *r, fm_split_id split, fm_eval_result *out)
{
    const fm_subset *s = split == FM_SPLIT_TEST ? &r->test : split == FM_SPLIT_VAL ? &r->val : &r->train;
    if (split == FM_SPLIT_TRAIN) {
        /* The training split can be larger than the buffers: no per-image output. */
        return fm_evaluate(r->model, s, EVAL_BATCH, out, NULL, NULL);
    }
    fm_status st = fm_evaluate(r->model, s, EVAL_BATCH, out, r->pred, r->confidence);
    if (st == FM_OK && split == FM_SPLIT_TEST) {
        r->test_result = *out;
        r->have_test = true;
    } else {
        r->have_test = false;  /* the buffers now hold the validation predictions */
    }
    return st;
}

/* ---- artifacts -------------------------------------------------------------- */

static fm_status write_metrics(const fm_run *r)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.csv", r->results_dir);
    return fm_metrics_write_csv(path, &r->history);
}

fm_status fm_run_save(fm_run *r, const char *path)
{
    char epoch[32], val_loss[64], seed[32], nparams[32];
    snprintf(epoch, sizeof epoch, "%d", r->best_epoch);
    snprintf(val_loss, sizeof val_loss, "%.9g", r->best_val_loss);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)r->cfg.seed);
    snprintf(nparams, sizeof nparams, "%lld", (long long)fm_model_num_params(r->model));
    const char *meta[] = {
        "plugin", r->name,
        "hparams", r->hparams,
        "epoch", epoch,
        "val_loss", val_loss,
        "seed", seed,
        "params", nparams,
        "fmhost_version", FM_VERSION_STRING,
        "kernels", fm_kernels_name(r->kernels),
    };
    return fm_safetensors_save(path, r->model, meta, (int)(sizeof meta / sizeof meta[0] / 2));
}

/* ---- progress ------------------------------------------------------------------ */

static void progress_bar(const fm_run *r, int epoch, int step, int steps, double loss_avg,
                         double t_epoch)
{
    if (r->cfg.quiet || !r->cfg.progress_tty) return;
    const int width = 24;
    int filled = steps ? (int)((int64_t)width * step / steps) : width;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
    bar[width] = '\0';
    double rate = t_epoch > 0 ? (double)step * r->cfg.batch_size / t_epoch : 0.0;
    double eta = step > 0 ? t_epoch * (steps - step) / step : 0.0;
    fprintf(stderr, "\r%s epoch %d/%d [%s] %d/%d  %.0f img/s  loss %.4f  ETA %.0fs \033[K",
            r->name, epoch, r->cfg.epochs, bar, step, steps, rate, loss_avg, eta);
    fflush(stderr);
}

static void epoch_line(const fm_run *r, const fm_epoch_metrics *m, bool best)
{
    if (r->cfg.quiet) return;
    fprintf(stderr, "%s%s epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  "
            "lr %.3g  %.1fs%s\n",
            r->cfg.progress_tty ? "\r\033[K" : "", r->name, m->epoch, r->cfg.epochs,
            m->train_loss, m->train_acc, m->val_loss, m->val_acc, m->lr, m->seconds,
            best ? "  *best" : "");
}

/* ---- the loop -------------------------------------------------------------------- */

static double step_lr(const fm_run *r, int epoch, int step, int steps)
{
    if (r->cfg.schedule) return r->cfg.schedule(r->cfg.user, epoch + 1, step, r->cfg.optim.lr);
    return fm_sched_lr(&r->cfg, epoch, step, steps);
}

/* One epoch of training; returns false when a hook asked to stop. */
static bool train_epoch(fm_run *r, int epoch, fm_epoch_metrics *m)
{
    const int steps = fm_loader_num_batches(r->loader);
    double t0 = fm_now(), last_draw = 0.0, loss_sum = 0.0, lr = r->cfg.optim.lr;
    int64_t correct = 0, seen = 0;
    bool go_on = true;
    fm_loader_begin_epoch(r->loader);
    fm_graph_set_training(r->graph, true);
    fm_graph_set_grad(r->graph, true);
    fm_tensor *logits;
    for (int step = 0, b;
         go_on && (logits = next_logits(r->model, r->graph, r->loader, r->cfg.batch_size, r->y, &b));
         step++) {
        lr = step_lr(r, epoch, step, steps);
        fm_optim_set_lr(r->optim, (float)lr);
        fm_tensor *loss = fm_cross_entropy(r->graph, logits, r->y);
        fm_model_zero_grad(r->model);
        fm_backward(r->graph, loss);
        fm_optim_step(r->optim);

        double l = loss->data[0];
        loss_sum += l * b;
        for (int i = 0; i < b; i++)
            correct += argmax10(logits->data + (size_t)i * FM_NUM_CLASSES, NULL) == r->y[i];
        seen += b;
        if (r->cfg.on_step) {
            fm_step_info info = {epoch + 1, step, steps, r->global_step, l, lr};
            go_on = r->cfg.on_step(r->cfg.user, &info);
        }
        r->global_step++;
        double now = fm_now();
        if (now - last_draw > 0.1 || step + 1 == steps) {
            progress_bar(r, epoch + 1, step + 1, steps, loss_sum / seen, now - t0);
            last_draw = now;
        }
    }
    m->epoch = epoch + 1;
    m->train_loss = seen ? loss_sum / seen : NAN;
    m->train_acc = seen ? (double)correct / seen : NAN;
    m->lr = lr;
    return go_on;
}

fm_status fm_run_train(fm_run *r)
{
    double t_start = fm_now();
    int bad_epochs = 0;
    fm_status st = FM_OK;
    for (int epoch = r->history.n; epoch < r->cfg.epochs; epoch++) {
        double t0 = fm_now();
        fm_epoch_metrics m = {0};
        bool go_on = train_epoch(r, epoch, &m);
        fm_eval_result val;
        if ((st = fm_run_evaluate(r, FM_SPLIT_VAL, &val)) != FM_OK) break;
        m.val_loss = val.loss;
        m.val_acc = val.acc;
        m.seconds = fm_now() - t0;
        fm_metrics_append(&r->history, &m);

        bool best = m.val_loss < r->best_val_loss;
        if (best) {
            r->best_val_loss = m.val_loss;
            r->best_epoch = m.epoch;
            fm_model_state_save(r->model, r->best_state);
            bad_epochs = 0;
        } else {
            bad_epochs++;
        }
        epoch_line(r, &m, best);
        if (r->cfg.write_artifacts) {
            if (best && (st = fm_run_save(r, r->checkpoint)) != FM_OK) break;
            if ((st = write_metrics(r)) != FM_OK) break;
        }
        if (r->cfg.on_epoch && !r->cfg.on_epoch(r->cfg.user, &m)) go_on = false;
        if (!go_on) break;
        if (r->cfg.patience > 0 && bad_epochs >= r->cfg.patience) {
            if (!r->cfg.quiet)
                fm_log(FM_LOG_INFO, "%s: early stop after epoch %d: validation loss has not improved "
                       "for %d epochs (best %.4f at epoch %d)", r->name, m.epoch, bad_epochs,
                       r->best_val_loss, r->best_epoch);
            break;
        }
    }
    if (r->best_epoch > 0) fm_model_state_load(r->model, r->best_state);
    r->have_test = false;
    r->seconds += fm_now() - t_start;
    return st;
}

fm_model *fm_run_model(fm_run *r) { return r->model; }
fm_kernels fm_run_kernels(const fm_run *r) { return r->kernels; }
const char *fm_run_name(const fm_run *r) { return r->name; }
int fm_run_best_epoch(const fm_run *r) { return r->best_epoch; }
double fm_run_seconds(const fm_run *r) { return r->seconds; }
const char *fm_run_results_dir(const fm_run *r) { return r->results_dir; }
const char *fm_run_checkpoint_path(const fm_run *r) { return r->checkpoint; }

const fm_epoch_metrics *fm_run_history(const fm_run *r, int *n_epochs)
{
    *n_epochs = r->history.n;
    return r->history.rows;
}

/* ---- the report ------------------------------------------------------------------ */

static void path_in(const char *dir, const char *file, char *path, size_t len)
{
    snprintf(path, len, "%s/%s", dir, file);
}

fm_status fm_eval_write_report(const fm_eval_result *res, const char *dir, const char *name)
{
    FM_ASSERT(res->pred && res->confidence);
    fm_confusion c;
    memcpy(c.counts, res->confusion, sizeof c.counts);
    char path[4200], title[256];
    snprintf(title, sizeof title, "%s: test confusion matrix (accuracy %.2f%%)", name, 100.0 * res->acc);
    fm_status st;
    path_in(dir, "confusion_matrix.png", path, sizeof path);
    if ((st = fm_report_confusion_png(path, title, &c, NULL)) != FM_OK) return st;
    path_in(dir, "confusion_matrix.csv", path, sizeof path);
    if ((st = fm_report_confusion_csv(path, &c, NULL)) != FM_OK) return st;
    path_in(dir, "classification_report.txt", path, sizeof path);
    if ((st = fm_report_classification(path, &c, NULL)) != FM_OK) return st;
    path_in(dir, "per_class.csv", path, sizeof path);
    if ((st = fm_report_per_class_csv(path, &c, NULL)) != FM_OK) return st;
    path_in(dir, "errors.png", path, sizeof path);
    return fm_report_errors_png(path, res->data->images, res->data->labels, res->index, res->pred,
                                res->confidence, res->n, 8, NULL);
}

fm_status fm_run_report(fm_run *r)
{
    if (!r->cfg.write_artifacts) return FM_OK;
    fm_status st;
    fm_eval_result test;
    if (!r->have_test && (st = fm_run_evaluate(r, FM_SPLIT_TEST, &test)) != FM_OK) return st;
    if ((st = fm_eval_write_report(&r->test_result, r->results_dir, r->name)) != FM_OK) return st;
    if (r->history.n > 0 && (st = fm_report_plots(r->results_dir, r->name, &r->history)) != FM_OK)
        return st;

    char lr[32], batch[16], patience[16], val_split[32], min_lr[32], warmup[16], augment[8];
    char step_size[16], gamma[32], wd[32], momentum[32], limit[16];
    snprintf(lr, sizeof lr, "%g", (double)r->cfg.optim.lr);
    snprintf(batch, sizeof batch, "%d", r->cfg.batch_size);
    snprintf(patience, sizeof patience, "%d", r->cfg.patience);
    snprintf(val_split, sizeof val_split, "%g", r->cfg.val_split);
    snprintf(min_lr, sizeof min_lr, "%g", r->cfg.min_lr);
    snprintf(warmup, sizeof warmup, "%d", r->cfg.warmup);
    snprintf(augment, sizeof augment, "%s", r->cfg.augment ? "true" : "false");
    snprintf(step_size, sizeof step_size, "%d", r->cfg.step_size);
    snprintf(gamma, sizeof gamma, "%g", r->cfg.gamma);
    snprintf(wd, sizeof wd, "%g", (double)r->cfg.optim.weight_decay);
    snprintf(momentum, sizeof momentum, "%g", (double)r->cfg.optim.momentum);
    snprintf(limit, sizeof limit, "%d", r->cfg.limit);
    const char *options[] = {
        "optimizer", fm_optim_kind_name(r->cfg.optim.kind), "lr", lr, "weight_decay", wd,
        "momentum", momentum, "batch_size", batch, "patience", patience, "val_split", val_split,
        "scheduler", r->cfg.schedule ? "lua" : fm_sched_kind_name(r->cfg.scheduler),
        "step_size", step_size, "gamma", gamma, "min_lr", min_lr, "warmup", warmup,
        "augment", augment, "limit", limit,
    };
    int best = r->best_epoch - 1;
    fm_summary s = {
        .model = r->name,
        .plugin_path = fm_plugin_path(r->plugin),
        .hparams = (const char *const *)r->hp_kv,
        .n_hparams = r->n_hp,
        .options = options,
        .n_options = (int)(sizeof options / sizeof options[0] / 2),
        .seed = r->cfg.seed,
        .epochs_run = r->history.n,
        .best_epoch = r->best_epoch,
        .val_loss = best >= 0 ? r->history.rows[best].val_loss : NAN,
        .val_acc = best >= 0 ? r->history.rows[best].val_acc : NAN,
        .test_loss = r->test_result.loss,
        .test_acc = r->test_result.acc,
        .num_params = fm_model_num_params(r->model),
        .wall_seconds = r->seconds,
        .checkpoint = r->checkpoint,
        .kernels = fm_kernels_name(r->kernels),
    };
    char path[4200];
    path_in(r->results_dir, "summary.json", path, sizeof path);
    return fm_summary_write(path, &s);
}
