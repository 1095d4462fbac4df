/* The training run: SPEC §3's protocol, its artifacts and its progress. */
#include "fm/fm_train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/fm_dist.h"
#include "fm/fm_io.h"
#include "run_internal.h"

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
    r->parallel = cfg->data_parallel && fm_dist_size() > 1;
    r->writer = !r->parallel || fm_dist_rank() == 0;
    if (!r->writer) {
        /* Rank 0 speaks and writes for the job. */
        r->cfg.quiet = true;
        r->cfg.track = false;
    }
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
        snprintf(r->state_path, sizeof r->state_path, "%s/%s_last.safetensors", dir, r->name);
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
    fm_graph_set_precision(r->graph, cfg->precision);

    fm_split(&data->train, cfg->val_split, cfg->seed, cfg->limit, &r->train, &r->val);
    fm_subset_all(&r->test, &data->test, 0);
    if (r->train.n == 0 || r->val.n == 0) {
        fm_run_free(r);
        return fm_error_set(FM_ERR_ARG, "%s: too few images for training and validation "
                            "(train %d, validation %d); raise --limit or --val-split",
                            data->dir, r->train.n, r->val.n);
    }
    r->loader = fm_loader_new(&r->train, cfg->batch_size, true, cfg->augment, cfg->seed);
    if (cfg->random_erasing > 0) fm_loader_set_erasing(r->loader, cfg->random_erasing);
    r->y = fm_xcalloc((size_t)cfg->batch_size, sizeof(int32_t));
    r->lam = 1.0f;
    if (cfg->mixup > 0 || cfg->cutmix > 0) {
        fm_loader_set_mixing(r->loader, cfg->mixup, cfg->cutmix);
        r->y_b = fm_xcalloc((size_t)cfg->batch_size, sizeof(int32_t));
    }
    r->best_state = fm_xmalloc(fm_model_state_bytes(r->model));
    if (cfg->ema > 0) {
        /* The average starts from the initial weights (timm's ModelEmaV2). */
        r->ema_state = fm_xmalloc(fm_model_state_bytes(r->model));
        r->swap_state = fm_xmalloc(fm_model_state_bytes(r->model));
        fm_model_state_save(r->model, r->ema_state);
    }
    int most = r->test.n > r->val.n ? r->test.n : r->val.n;
    r->pred = fm_xcalloc((size_t)most, 1);
    r->confidence = fm_xcalloc((size_t)most, sizeof(float));
    if (cfg->resume) {
        if (!cfg->write_artifacts) {
            fm_run_free(r);
            return fm_error_set(FM_ERR_ARG, "resume needs the run's artifacts (a run without "
                                "artifacts saves no state)");
        }
        if ((st = run_state_load(r)) != FM_OK) {
            fm_run_free(r);
            return st;
        }
    }
    if ((st = run_track_begin(r)) != FM_OK) {
        fm_run_free(r);
        return st;
    }
    *out = r;
    return FM_OK;
}

void fm_run_free(fm_run *r)
{
    if (!r) return;
    run_track_close(r);
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
    free(r->y_b);
    fm_metrics_free(&r->history);
    free(r->best_state);
    free(r->ema_state);
    free(r->swap_state);
    free(r->pred);
    free(r->confidence);
    for (int i = 0; i < 2 * r->n_hp; i++) free(r->hp_kv[i]);
    free(r->hp_kv);
    fm_plugin_release(r->plugin);
    free(r);
}

/* ---- evaluation ------------------------------------------------------------ */

/* The predicted class of a row of logits, and in *prob_out (unless NULL)
 * its softmax probability. */
static int argmax10(const float *row, float *prob_out)
{
    int best = 0;
    double mx = row[0];
    for (int k = 1; k < FM_NUM_CLASSES; k++)
        if (row[k] > mx) mx = row[best = k];
    if (!prob_out) return best;
    double z = 0.0;
    for (int k = 0; k < FM_NUM_CLASSES; k++) z += exp((double)row[k] - mx);
    *prob_out = (float)(1.0 / z);
    return best;
}

/* The plugin's name, for messages about what its forward returned. */
static const char *model_plugin_name(const fm_model *m)
{
    const fm_plugin *p = fm_model_owner(m);
    return p ? fm_plugin_descriptor_of(p)->name : "(none)";
}

/* The mean of the logits of x and of its mirror image (x flipped along
 * its width), in g: test-time augmentation.  *logits holds z(x) on entry. */
static fm_status flip_average(fm_model *m, fm_graph *g, fm_tensor *x, fm_tensor **logits)
{
    fm_tensor *mirror = fm_graph_tensor(g, 4, x->shape);
    const int w = x->shape[3];
    const int64_t rows = x->numel / w;
    for (int64_t r = 0; r < rows; r++)
        for (int j = 0; j < w; j++) mirror->data[r * w + j] = x->data[r * w + (w - 1 - j)];
    fm_tensor *plain = *logits, *flipped;
    fm_status st = fm_model_forward_checked(m, g, mirror, model_plugin_name(m), &flipped);
    if (st != FM_OK) return st;
    fm_tensor *mean = fm_graph_tensor(g, 2, plain->shape);
    for (int64_t i = 0; i < mean->numel; i++)
        mean->data[i] = (plain->data[i] + flipped->data[i]) * 0.5f;
    *logits = mean;
    return FM_OK;
}

/* Resets g, loads the loader's next batch straight into a new input tensor
 * and runs the model on it (with `tta`, the mean over the image and its
 * mirror): *logits [b, 10], or NULL at the end of the epoch (*b = 0).  y
 * receives the b labels; with y_b the batch is mixed (fm_loader_next_mixed:
 * y_b and *lam receive the labels mixed in and y's weight).  An error when
 * the plugin's forward returns something else than logits. */
static fm_status next_logits_tta(fm_model *m, fm_graph *g, fm_loader *l, int batch_size, bool tta,
                                 int32_t *y, int32_t *y_b, float *lam, int *b, fm_tensor **logits)
{
    fm_graph_reset(g);
    *logits = NULL;
    int shape[4] = {batch_size, 1, FM_IMAGE_H, FM_IMAGE_W};
    fm_tensor *x = fm_graph_tensor(g, 4, shape);
    *b = y_b ? fm_loader_next_mixed(l, x->data, y, y_b, lam) : fm_loader_next(l, x->data, y, NULL);
    if (*b == 0) return FM_OK;
    shape[0] = *b;
    fm_tensor_set_shape(x, 4, shape);  /* a short last batch */
    fm_status st = fm_model_forward_checked(m, g, x, model_plugin_name(m), logits);
    if (st != FM_OK || !tta) return st;
    return flip_average(m, g, x, logits);
}

fm_status fm_evaluate(fm_model *m, const fm_subset *s, int batch_size, fm_eval_result *out,
                      uint8_t *pred, float *confidence)
{
    return fm_evaluate_tta(m, s, batch_size, false, out, pred, confidence);
}

/* Images per forward pass of an evaluation, at most: a larger batch runs
 * as passes of this many.  An image's logits do not depend on the other
 * images of its pass -- on the portable set, whose OpenBLAS products may
 * round a row otherwise in a product of another height, but in their last
 * bits (test_train's test_forward_pass_independent) -- and beyond this the
 * convolutional nets' activations outgrow the caches:
 * ResCNN evaluated 1,850 img/s in passes of 1000 against 3,000 in passes of
 * 256, with 1,241 MB against 493 MB at its peak (avx2, two threads). */
#define EVAL_PASS_MAX 256

fm_status fm_evaluate_tta(fm_model *m, const fm_subset *s, int batch_size, bool tta,
                          fm_eval_result *out, uint8_t *pred, float *confidence)
{
    if (batch_size > EVAL_PASS_MAX) batch_size = EVAL_PASS_MAX;
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
    fm_status st;
    fm_loader_begin_epoch(l);
    fm_tensor *logits;
    while ((st = next_logits_tta(m, g, l, batch_size, tta, y, NULL, NULL, &b, &logits)) == FM_OK &&
           logits) {
        fm_tensor *loss = fm_cross_entropy(g, logits, y);
        loss_sum += (double)loss->data[0] * b;
        for (int i = 0; i < b; i++) {
            int p = argmax10(logits->data + (size_t)i * FM_NUM_CLASSES,
                             confidence ? &confidence[done + i] : NULL);
            if (pred) pred[done + i] = (uint8_t)p;
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
    return st;
}

/* fm_evaluate in the run's precision; the test set with --tta. */
static fm_status run_evaluate_subset(fm_run *r, const fm_subset *s, fm_eval_result *out,
                                     uint8_t *pred, float *confidence)
{
    fm_precision before = fm_precision_active();
    fm_precision_use(r->cfg.precision);
    bool tta = r->cfg.tta && s == &r->test;
    fm_status st = fm_evaluate_tta(r->model, s, EVAL_BATCH, tta, out, pred, confidence);
    fm_precision_use(before);
    return st;
}

fm_status fm_run_evaluate(fm_run *r, fm_split_id split, fm_eval_result *out)
{
    const fm_subset *s = split == FM_SPLIT_TEST ? &r->test : split == FM_SPLIT_VAL ? &r->val : &r->train;
    if (split == FM_SPLIT_TRAIN) {
        /* The training split can be larger than the buffers: no per-image output. */
        return run_evaluate_subset(r, s, out, NULL, NULL);
    }
    fm_status st = run_evaluate_subset(r, s, out, r->pred, r->confidence);
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

/* The current weights with the run's metadata, floats stored as `as`. */
static fm_status save_weights(fm_run *r, const char *path, fm_float_dtype as)
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
        "precision", fm_precision_name(r->cfg.precision),
        "dtype", fm_float_dtype_name(as),
    };
    /* An F32 checkpoint's metadata stays as it was: no "dtype" key. */
    int n_meta = (int)(sizeof meta / sizeof meta[0] / 2) - (as == FM_FLOAT_F32);
    /* The weights of a run with --ema are the average: said so, after. */
    char ema[32];
    const char *with_ema[sizeof meta / sizeof meta[0] + 2];
    if (r->cfg.ema > 0) {
        snprintf(ema, sizeof ema, "%.9g", r->cfg.ema);
        memcpy(with_ema, meta, 2 * (size_t)n_meta * sizeof *meta);
        with_ema[2 * n_meta] = "ema";
        with_ema[2 * n_meta + 1] = ema;
        return fm_safetensors_save_as(path, r->model, with_ema, n_meta + 1, as);
    }
    return fm_safetensors_save_as(path, r->model, meta, n_meta, as);
}

fm_status fm_run_save(fm_run *r, const char *path)
{
    return save_weights(r, path, FM_FLOAT_F32);
}

/* The best weights (in the model once training returns) as
 * <model>_best.bf16.safetensors beside the best checkpoint, when asked. */
static fm_status save_best_converted(fm_run *r)
{
    if (r->cfg.save_dtype == FM_FLOAT_F32 || !r->checkpoint_written || !r->writer) return FM_OK;
    char path[sizeof r->checkpoint + 16];
    int stem = (int)(strlen(r->checkpoint) - strlen(".safetensors"));
    snprintf(path, sizeof path, "%.*s.%s.safetensors", stem, r->checkpoint,
             fm_float_dtype_name(r->cfg.save_dtype));
    return save_weights(r, path, r->cfg.save_dtype);
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

/* How an epoch of training ended. */
typedef enum epoch_end { EPOCH_DONE, EPOCH_HOOK_STOP, EPOCH_INTERRUPTED, EPOCH_DIVERGED } epoch_end;

/* Stops the run as diverged at (epoch, step), with the diagnosis and the fix. */
static epoch_end diverged(fm_run *r, int epoch, int step, const char *what, double value)
{
    r->status = FM_RUN_DIVERGED;
    char shown[32];
    if (isnan(value))
        snprintf(shown, sizeof shown, "NaN");
    else
        snprintf(shown, sizeof shown, "%g", value);
    snprintf(r->status_msg, sizeof r->status_msg,
             "%s: training diverged at epoch %d, step %d: %s is %s; lower the learning rate "
             "(--lr, now %g)%s", r->name, epoch + 1, step + 1, what, shown,
             (double)r->cfg.optim.lr,
             r->cfg.clip_grad_norm > 0 ? " or the gradient clipping (--clip-grad-norm)"
                                       : " or clip the gradients (--clip-grad-norm 1)");
    return EPOCH_DIVERGED;
}

/* ---- the moving average of the weights --------------------------------------------- */

/* ema = ema * decay + w * (1 - decay) for every float weight and buffer, in
 * float32 as timm's ModelEmaV2 computes it (decay * e + (1 - decay) * m);
 * integer buffers (batch-norm counters) are copied. */
static void ema_update(fm_run *r)
{
    const float decay = (float)r->cfg.ema, rest = (float)(1.0 - r->cfg.ema);
    for (int i = 0; i < fm_model_count(r->model); i++) {
        fm_tensor *t = fm_model_entry_at(r->model, i).tensor;
        void *avg = fm_model_state_entry(r->model, r->ema_state, i);
        if (t->dtype == FM_I64) {
            memcpy(avg, t->i64, (size_t)t->numel * sizeof(int64_t));
            continue;
        }
        float *e = avg;
        const float *w = t->data;
        for (int64_t j = 0; j < t->numel; j++) {
            float kept = decay * e[j], added = rest * w[j];
            e[j] = kept + added;
        }
    }
}

/* Puts the average in the model (keeping the trained weights aside), or
 * the trained weights back; nothing without --ema. */
static void ema_swap(fm_run *r, bool in)
{
    if (!r->ema_state) return;
    if (in) {
        fm_model_state_save(r->model, r->swap_state);
        fm_model_state_load(r->model, r->ema_state);
    } else {
        fm_model_state_load(r->model, r->swap_state);
    }
}

/* Resets the run's graph, loads the next training batch and runs the
 * model on it: *logits, or NULL at the end of the epoch (*b = 0).
 * Data-parallel, every rank loads the whole batch of *b images (so the
 * loader's shuffling and augmentation streams stay the single process's)
 * and runs its chunks (fm_chunk_slice) alone: images [*offset, *offset +
 * *n) of the batch; else *offset = 0, *n = *b. */
static fm_status next_train_logits(fm_run *r, int *b, int *offset, int *n, fm_tensor **logits)
{
    fm_graph *g = r->graph;
    if (!r->parallel) {
        fm_status st = next_logits_tta(r->model, g, r->loader, r->cfg.batch_size, false, r->y,
                                       r->y_b, &r->lam, b, logits);
        *offset = 0;
        *n = *b;
        return st;
    }
    fm_graph_reset(g);
    *logits = NULL;
    *offset = *n = 0;
    int shape[4] = {r->cfg.batch_size, 1, FM_IMAGE_H, FM_IMAGE_W};
    fm_tensor *x = fm_graph_tensor(g, 4, shape);
    *b = r->y_b ? fm_loader_next_mixed(r->loader, x->data, r->y, r->y_b, &r->lam)
                : fm_loader_next(r->loader, x->data, r->y, NULL);
    if (*b == 0) return FM_OK;
    fm_chunk_slice(*b, offset, n);
    fm_graph_set_batch(g, *b, *offset, *n);
    /* A rank with no chunk of a small batch still runs every op (and
     * takes part in every sum) on a stand-in: the batch's first image. */
    int held = *n ? *n : 1, from = *n ? *offset : 0;
    shape[0] = held;
    fm_tensor *mine = fm_graph_tensor(g, 4, shape);
    const size_t image = (size_t)FM_IMAGE_H * FM_IMAGE_W;
    memcpy(mine->data, x->data + (size_t)from * image, (size_t)held * image * sizeof(float));
    return fm_model_forward_checked(r->model, g, mine, model_plugin_name(r->model), logits);
}

/* Data-parallel: every rank stops after the same step, when rank 0 says
 * so; the others' own signals are mpirun's forwarding of the same one.
 * *correct (this rank's right answers) becomes the batch's.  Integer
 * counts: their sum does not depend on the order. */
static fm_status parallel_agree(fm_run *r, int64_t *correct, bool *stop)
{
    if (!r->parallel) return FM_OK;
    int size = fm_dist_size();
    size_t *lens = fm_xcalloc((size_t)size, sizeof *lens);
    void *all = NULL;
    int64_t mine = correct ? *correct : 0, msg[2] = {0, *stop};
    fm_status st = fm_dist_gather(&mine, sizeof mine, &all, lens);
    if (st == FM_OK && fm_dist_rank() == 0)
        for (int k = 0; k < size; k++) {
            int64_t v;
            memcpy(&v, (char *)all + k * sizeof v, sizeof v);
            msg[0] += v;
        }
    free(all);
    free(lens);
    void *buf = msg;
    size_t len = sizeof msg;
    if (st == FM_OK && (st = fm_dist_broadcast(&buf, &len)) == FM_OK && buf != msg) {
        FM_ASSERT(len == sizeof msg);
        memcpy(msg, buf, sizeof msg);
        free(buf);
    }
    if (correct) *correct = msg[0];
    *stop = msg[1] != 0;
    return st;
}

/* Whether to stop now, the same on every rank. */
static bool stop_agreed(fm_run *r, fm_status *st)
{
    bool stop = fm_stop_requested();
    *st = parallel_agree(r, NULL, &stop);
    return stop;
}

/* One step on the batch in `logits` (images [offset, offset + n) of the
 * b); EPOCH_DONE when it went through, EPOCH_INTERRUPTED when the run
 * stops after it. */
static epoch_end train_step(fm_run *r, int epoch, int steps, fm_tensor *logits, int b, int offset,
                            int n, fm_status *st)
{
    run_partial *pa = &r->partial;
    int step = pa->step;
    double lr = step_lr(r, epoch, step, steps);
    fm_optim_set_lr(r->optim, (float)lr);
    fm_tensor *loss = fm_cross_entropy_mix(r->graph, logits, r->y + offset,
                                           r->y_b ? r->y_b + offset : NULL, r->lam,
                                           (float)r->cfg.label_smoothing);
    double l = loss->data[0];
    if (!isfinite(l)) return diverged(r, epoch, step, "the loss", l);
    fm_model_zero_grad(r->model);
    fm_backward(r->graph, loss);
    if (r->cfg.clip_grad_norm > 0) {
        double norm = fm_optim_clip_grad_norm(r->optim, r->cfg.clip_grad_norm);
        if (!isfinite(norm)) return diverged(r, epoch, step, "the gradient norm", norm);
    }
    if (!fm_optim_step(r->optim)) return diverged(r, epoch, step, "a gradient element", NAN);
    if (r->ema_state) ema_update(r);

    pa->loss_sum += l * b;
    /* Mixed images count as right on the label that weighs more. */
    const int32_t *truth = (r->y_b && r->lam < 0.5f ? r->y_b : r->y) + offset;
    int64_t correct = 0;
    for (int i = 0; i < n; i++)
        correct += argmax10(logits->data + (size_t)i * FM_NUM_CLASSES, NULL) == truth[i];
    bool stop = fm_stop_requested();
    if ((*st = parallel_agree(r, &correct, &stop)) != FM_OK) return EPOCH_DIVERGED;
    pa->correct += correct;
    pa->seen += b;
    pa->step++;
    pa->lr = lr;
    bool go_on = true;
    if (r->cfg.on_step) {
        fm_step_info info = {epoch + 1, step, steps, r->global_step, l, lr};
        go_on = r->cfg.on_step(r->cfg.user, &info);
    }
    r->global_step++;
    if (stop) return EPOCH_INTERRUPTED;
    return go_on ? EPOCH_DONE : EPOCH_HOOK_STOP;
}

/* Trains epoch `epoch` from where r->partial stands (a new epoch when it is
 * not active) to its end, a hook's stop, a stop request after a step, or
 * divergence; fills m when the epoch's steps are over. */
static epoch_end train_epoch(fm_run *r, int epoch, fm_epoch_metrics *m, fm_status *st)
{
    const int steps = fm_loader_num_batches(r->loader);
    run_partial *pa = &r->partial;
    if (!pa->active) {
        *pa = (run_partial){.active = true, .lr = r->cfg.optim.lr};
        fm_loader_begin_epoch(r->loader);
    }
    double t0 = fm_now() - pa->seconds, last_draw = 0.0;
    epoch_end end = EPOCH_DONE;
    fm_graph_set_training(r->graph, true);
    fm_graph_set_grad(r->graph, true);
    for (;;) {
        fm_tensor *logits;
        int b, offset, n;
        if ((*st = next_train_logits(r, &b, &offset, &n, &logits)) != FM_OK) return EPOCH_DIVERGED;
        if (b == 0) break;
        end = train_step(r, epoch, steps, logits, b, offset, n, st);
        if (*st != FM_OK) return EPOCH_DIVERGED;
        double now = fm_now();
        if (now - last_draw > 0.1 || pa->step == steps) {
            progress_bar(r, epoch + 1, pa->step, steps, pa->loss_sum / pa->seen, now - t0);
            last_draw = now;
        }
        if (end == EPOCH_DIVERGED) return end;
        if (end == EPOCH_INTERRUPTED) {
            pa->seconds = fm_now() - t0;
            return EPOCH_INTERRUPTED;
        }
        if (end == EPOCH_HOOK_STOP) break;
    }
    m->epoch = epoch + 1;
    m->train_loss = pa->seen ? pa->loss_sum / pa->seen : NAN;
    m->train_acc = pa->seen ? (double)pa->correct / pa->seen : NAN;
    m->lr = pa->lr;
    *pa = (run_partial){0};
    return end;
}

/* The end of an epoch on the weights in the model (the average, with
 * --ema): validation, history, best checkpoint, metrics, hooks, early
 * stopping.  False when the run ends here, before its state is saved;
 * *go_on false when it ends after. */
static bool end_epoch_weights(fm_run *r, fm_epoch_metrics *m, double t0, bool *go_on_out,
                              fm_status *st)
{
    bool go_on = *go_on_out;
    fm_eval_result val;
    if ((*st = fm_run_evaluate(r, FM_SPLIT_VAL, &val)) != FM_OK) return false;
    m->val_loss = val.loss;
    m->val_acc = val.acc;
    m->seconds = fm_now() - t0;
    if (!isfinite(m->val_loss)) {
        diverged(r, m->epoch - 1, fm_loader_num_batches(r->loader) - 1, "the validation loss",
                 m->val_loss);
        return false;
    }
    fm_metrics_append(&r->history, m);
    bool best = m->val_loss < r->best_val_loss;
    if (best) {
        r->best_val_loss = m->val_loss;
        r->best_epoch = m->epoch;
        fm_model_state_save(r->model, r->best_state);
        r->bad_epochs = 0;
    } else {
        r->bad_epochs++;
    }
    epoch_line(r, m, best);
    if (r->cfg.write_artifacts && r->writer) {
        if (best) {
            if ((*st = fm_run_save(r, r->checkpoint)) != FM_OK) return false;
            r->checkpoint_written = true;
        }
        if ((*st = write_metrics(r)) != FM_OK) return false;
    }
    run_track_epoch(r, m, best);
    if (r->cfg.on_epoch && !r->cfg.on_epoch(r->cfg.user, m)) go_on = false;
    if (r->cfg.patience > 0 && r->bad_epochs >= r->cfg.patience) {
        if (!r->cfg.quiet)
            fm_log(FM_LOG_INFO, "%s: early stop after epoch %d: validation loss has not improved "
                   "for %d epochs (best %.4f at epoch %d)", r->name, m->epoch, r->bad_epochs,
                   r->best_val_loss, r->best_epoch);
        r->finished = true;
    } else if (m->epoch == r->cfg.epochs) {
        r->finished = true;
    }
    if (!go_on && !r->finished) r->status = FM_RUN_STOPPED;
    *go_on_out = go_on;
    return true;
}

/* The end of an epoch: end_epoch_weights on the average (--ema) or the
 * weights, then the run's state.  False when the run ends here. */
static bool end_epoch(fm_run *r, fm_epoch_metrics *m, double t0, bool go_on, fm_status *st)
{
    ema_swap(r, true);
    bool ok = end_epoch_weights(r, m, t0, &go_on, st);
    ema_swap(r, false);
    if (!ok) return false;
    if (r->cfg.write_artifacts && r->writer && (*st = run_state_save(r)) != FM_OK) return false;
    return go_on && !r->finished;
}

fm_status fm_run_train(fm_run *r)
{
    double t_start = fm_now();
    fm_status st = FM_OK;
    r->status = FM_RUN_RUNNING;
    r->status_msg[0] = '\0';
    for (int epoch = r->history.n; !r->finished && epoch < r->cfg.epochs; epoch++) {
        if (!r->partial.active && stop_agreed(r, &st)) {
            r->status = FM_RUN_INTERRUPTED;
            break;
        }
        if (st != FM_OK) break;
        double t0 = fm_now() - r->partial.seconds;
        fm_epoch_metrics m = {0};
        epoch_end end = train_epoch(r, epoch, &m, &st);
        if (st != FM_OK) break;
        if (end == EPOCH_DIVERGED) break;
        if (end == EPOCH_INTERRUPTED) {
            r->status = FM_RUN_INTERRUPTED;
            break;
        }
        if (!end_epoch(r, &m, t0, end == EPOCH_DONE, &st)) break;
    }
    if (st != FM_OK)
        r->status = FM_RUN_FAILED;
    else if (r->status == FM_RUN_RUNNING)
        r->status = FM_RUN_COMPLETED;
    r->seconds += fm_now() - t_start;
    if (r->status == FM_RUN_INTERRUPTED) {
        const char *saved = r->cfg.write_artifacts ? "; the run's state is saved for --resume" : "";
        if (r->partial.active)
            snprintf(r->status_msg, sizeof r->status_msg,
                     "%s: interrupted during epoch %d after %d of its steps%s", r->name,
                     r->history.n + 1, r->partial.step, saved);
        else
            snprintf(r->status_msg, sizeof r->status_msg, "%s: interrupted after epoch %d%s",
                     r->name, r->history.n, saved);
        if (st == FM_OK && r->cfg.write_artifacts && r->writer) st = run_state_save(r);
    }
    if (r->best_epoch > 0) fm_model_state_load(r->model, r->best_state);
    r->have_test = false;
    if (st == FM_OK && (st = save_best_converted(r)) != FM_OK) r->status = FM_RUN_FAILED;
    run_track_end(r, st);
    return st;
}

fm_model *fm_run_model(fm_run *r) { return r->model; }
fm_kernels fm_run_kernels(const fm_run *r) { return r->kernels; }
fm_precision fm_run_precision(const fm_run *r) { return r->cfg.precision; }
const char *fm_run_name(const fm_run *r) { return r->name; }
int fm_run_best_epoch(const fm_run *r) { return r->best_epoch; }
double fm_run_seconds(const fm_run *r) { return r->seconds; }
const char *fm_run_results_dir(const fm_run *r) { return r->results_dir; }
const char *fm_run_checkpoint_path(const fm_run *r)
{
    return r->checkpoint_written ? r->checkpoint : NULL;
}
fm_run_status fm_run_status_of(const fm_run *r) { return r->status; }
const char *fm_run_status_message(const fm_run *r) { return r->status_msg; }
const char *fm_run_state_path(const fm_run *r) { return r->state_path; }

const char *fm_run_status_name(fm_run_status status)
{
    static const char *const names[] = {"running",     "completed", "stopped",
                                        "interrupted", "diverged",  "failed"};
    return status >= 0 && status <= FM_RUN_FAILED ? names[status] : "?";
}

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

/* The options that decide the run's numbers (the run state's and
 * summary.json's). */
void run_options_make(const fm_train_config *c, run_options *o)
{
    o->n = 0;
#define OPT(k, ...)                                                                    \
    do {                                                                               \
        FM_ASSERT(o->n < RUN_MAX_OPTIONS);                                             \
        snprintf(o->text[o->n], sizeof o->text[o->n], __VA_ARGS__);                    \
        o->key[o->n] = k;                                                              \
        o->value[o->n] = o->text[o->n];                                                \
        o->n++;                                                                        \
    } while (0)
    OPT("optimizer", "%s", fm_optim_kind_name(c->optim.kind));
    OPT("lr", "%.9g", (double)c->optim.lr);
    OPT("weight_decay", "%.9g", (double)c->optim.weight_decay);
    OPT("momentum", "%.9g", (double)c->optim.momentum);
    OPT("dampening", "%.9g", (double)c->optim.dampening);
    OPT("nesterov", "%s", c->optim.nesterov ? "true" : "false");
    OPT("betas", "%.9g,%.9g", (double)c->optim.beta1, (double)c->optim.beta2);
    OPT("eps", "%.9g", (double)c->optim.eps);
    OPT("batch_size", "%d", c->batch_size);
    OPT("epochs", "%d", c->epochs);
    OPT("patience", "%d", c->patience);
    OPT("val_split", "%.9g", c->val_split);
    OPT("scheduler", "%s", c->schedule ? "lua" : fm_sched_kind_name(c->scheduler));
    OPT("step_size", "%d", c->step_size);
    OPT("gamma", "%.9g", c->gamma);
    OPT("min_lr", "%.9g", c->min_lr);
    OPT("warmup", "%d", c->warmup);
    OPT("pct_start", "%.9g", c->pct_start);
    OPT("div_factor", "%.9g", c->div_factor);
    OPT("final_div_factor", "%.9g", c->final_div_factor);
    OPT("augment", "%s", c->augment ? "true" : "false");
    OPT("random_erasing", "%.9g", c->random_erasing);
    OPT("mixup", "%.9g", c->mixup);
    OPT("cutmix", "%.9g", c->cutmix);
    OPT("limit", "%d", c->limit);
    OPT("clip_grad_norm", "%.9g", c->clip_grad_norm);
    OPT("label_smoothing", "%.9g", c->label_smoothing);
    OPT("ema", "%.9g", c->ema);
    OPT("tta", "%s", c->tta ? "true" : "false");
    OPT("save_dtype", "%s", fm_float_dtype_name(c->save_dtype));
    OPT("precision", "%s", fm_precision_name(c->precision));
#undef OPT
}

static fm_status run_report(fm_run *r);

fm_status fm_run_report(fm_run *r)
{
    fm_status st = run_report(r);
    run_track_report(r, st);
    return st;
}

static fm_status run_report(fm_run *r)
{
    if (!r->writer) return FM_OK;
    if (!r->cfg.write_artifacts) {
        /* A recorded run without artifacts still gets its test numbers. */
        fm_eval_result test;
        if (r->track && r->best_epoch > 0 && !r->have_test)
            return fm_run_evaluate(r, FM_SPLIT_TEST, &test);
        return FM_OK;
    }
    fm_status st;
    fm_eval_result test;
    /* The test set tells about the best weights; with none (diverged in the
     * first epoch) there is nothing to evaluate. */
    bool tested = r->best_epoch > 0;
    if (tested && !r->have_test && (st = fm_run_evaluate(r, FM_SPLIT_TEST, &test)) != FM_OK)
        return st;
    if (tested && (st = fm_eval_write_report(&r->test_result, r->results_dir, r->name)) != FM_OK)
        return st;
    if (r->history.n > 0 && (st = fm_report_plots(r->results_dir, r->name, &r->history)) != FM_OK)
        return st;

    run_options opt;
    run_options_make(&r->cfg, &opt);
    const char *options[2 * RUN_MAX_OPTIONS];
    for (int i = 0; i < opt.n; i++) {
        options[2 * i] = opt.key[i];
        options[2 * i + 1] = opt.value[i];
    }
    int best = r->best_epoch - 1;
    fm_summary s = {
        .model = r->name,
        .plugin_path = fm_plugin_path(r->plugin),
        .hparams = (const char *const *)r->hp_kv,
        .n_hparams = r->n_hp,
        .options = options,
        .n_options = opt.n,
        .seed = r->cfg.seed,
        .epochs_run = r->history.n,
        .best_epoch = r->best_epoch,
        .val_loss = best >= 0 ? r->history.rows[best].val_loss : NAN,
        .val_acc = best >= 0 ? r->history.rows[best].val_acc : NAN,
        .test_loss = tested ? r->test_result.loss : NAN,
        .test_acc = tested ? r->test_result.acc : NAN,
        .num_params = fm_model_num_params(r->model),
        .wall_seconds = r->seconds,
        .checkpoint = fm_run_checkpoint_path(r),
        .kernels = fm_kernels_name(r->kernels),
        .precision = fm_precision_name(r->cfg.precision),
        .status = fm_run_status_name(r->status),
    };
    char path[4200];
    path_in(r->results_dir, "summary.json", path, sizeof path);
    return fm_summary_write(path, &s);
}
