/* run_state.c — a training run's whole state in one safetensors file,
 * <out>/artifacts/<model>_last.safetensors, from which a run continues to
 * the same bytes as one never stopped.
 *
 * Tensors: "model.<name>" (every weight and buffer as they are now),
 * "best.<name>" (as they were after the best epoch), with --ema
 * "ema.<name>" (their moving average), and "optim.m.<name>",
 * "optim.v.<name>" (the optimizer's state of each parameter that has one).
 * Metadata: the plugin, its hyper-parameters, the seed and every option the
 * numbers depend on (a resume under other ones is refused), and every
 * scalar of the loop -- epochs done, the epoch in progress, the optimizer's
 * step count, each random stream (random erasing's and mixing's when on),
 * the loader's position, early stopping's counters, the history -- floats
 * as C99 hexadecimal, so they come back exactly.  The scheduler needs
 * nothing of its own: the learning rate is a function of (epoch, step). */
#include "run_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/fm_io.h"

#define STATE_FORMAT "1"

/* ---- the tensors ------------------------------------------------------------- */

static size_t tensor_bytes(const fm_tensor *t)
{
    return (size_t)t->numel * (t->dtype == FM_I64 ? sizeof(int64_t) : sizeof(float));
}

static void *tensor_bytes_at(fm_tensor *t) { return t->dtype == FM_I64 ? (void *)t->i64 : (void *)t->data; }

/* The copies of the model the state holds: the weights, the best ones and
 * the average (--ema). */
static int state_parts(const fm_run *r) { return r->ema_state ? 3 : 2; }

/* Part p's copy of entry i, in the run. */
static void *state_part_at(fm_run *r, int p, int i)
{
    if (p == 0) return tensor_bytes_at(fm_model_entry_at(r->model, i).tensor);
    return fm_model_state_entry(r->model, p == 1 ? r->best_state : r->ema_state, i);
}

/* A model holding the state's tensors, shaped after the run's model and
 * optimizer (its data zeroed). */
static fm_model *state_layout(fm_run *r)
{
    fm_model *l = fm_model_new();
    char name[512];
    const char *parts[3] = {"model", "best", "ema"};
    for (int p = 0; p < state_parts(r); p++)
        for (int i = 0; i < fm_model_count(r->model); i++) {
            fm_model_entry e = fm_model_entry_at(r->model, i);
            snprintf(name, sizeof name, "%s.%s", parts[p], e.name);
            fm_model_buffer(l, name, e.tensor->dtype, e.tensor->ndim, e.tensor->shape,
                            FM_INIT_ZEROS);
        }
    int param = 0;
    for (int i = 0; i < fm_model_count(r->model); i++) {
        fm_model_entry e = fm_model_entry_at(r->model, i);
        if (e.is_buffer) continue;
        float *m, *v;
        fm_optim_state(r->optim, param++, &m, &v);
        const char *kinds[2] = {m ? "m" : NULL, v ? "v" : NULL};
        for (int k = 0; k < 2; k++) {
            if (!kinds[k]) continue;
            snprintf(name, sizeof name, "optim.%s.%s", kinds[k], e.name);
            fm_model_buffer(l, name, FM_F32, e.tensor->ndim, e.tensor->shape, FM_INIT_ZEROS);
        }
    }
    fm_model_finalize(l, 0);
    return l;
}

/* Copies between the run and the layout, in layout order: into the layout
 * (`save`) or out of it. */
static void state_copy(fm_run *r, fm_model *l, bool save)
{
    int at = 0, n = fm_model_count(r->model);
    for (int p = 0; p < state_parts(r); p++)
        for (int i = 0; i < n; i++, at++) {
            fm_tensor *t = fm_model_entry_at(r->model, i).tensor;
            void *run = state_part_at(r, p, i);
            void *file = tensor_bytes_at(fm_model_entry_at(l, at).tensor);
            memcpy(save ? file : run, save ? run : file, tensor_bytes(t));
        }
    int param = 0;
    for (int i = 0; i < n; i++) {
        fm_model_entry e = fm_model_entry_at(r->model, i);
        if (e.is_buffer) continue;
        float *mv[2];
        fm_optim_state(r->optim, param++, &mv[0], &mv[1]);
        for (int k = 0; k < 2; k++) {
            if (!mv[k]) continue;
            float *file = fm_model_entry_at(l, at++).tensor->data;
            size_t bytes = (size_t)e.tensor->numel * sizeof(float);
            memcpy(save ? file : mv[k], save ? mv[k] : file, bytes);
        }
    }
}

/* ---- the scalars ----------------------------------------------------------------- */

#define STATE_MAX_META 64

typedef struct state_meta {
    int n;
    const char *kv[2 * STATE_MAX_META];
    char *owned[STATE_MAX_META];
} state_meta;

static void meta_put(state_meta *m, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void meta_put(state_meta *m, const char *key, const char *fmt, ...)
{
    FM_ASSERT(m->n < STATE_MAX_META);
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *value = fm_xmalloc((size_t)len + 1);
    vsnprintf(value, (size_t)len + 1, fmt, ap2);
    va_end(ap2);
    m->owned[m->n] = value;
    m->kv[2 * m->n] = key;
    m->kv[2 * m->n + 1] = value;
    m->n++;
}

static void meta_free(state_meta *m)
{
    for (int i = 0; i < m->n; i++) free(m->owned[i]);
}

static void put_rng(state_meta *m, const char *key, const fm_rng *rng)
{
    meta_put(m, key, "%016" PRIx64 ":%016" PRIx64, rng->state, rng->inc);
}

/* The kernel sets that give the same numbers: the vector sets agree bit for
 * bit, portable rounds otherwise. */
static const char *kernels_family(const char *kernels)
{
    return strcmp(kernels, "portable") == 0 ? "portable" : "avx2 or avx512";
}

/* Everything run_state_load compares before it restores anything. */
static void put_identity(state_meta *m, const fm_run *r)
{
    meta_put(m, "fmhost_run_state", STATE_FORMAT);
    meta_put(m, "plugin", "%s", r->name);
    meta_put(m, "hparams", "%s", r->hparams);
    meta_put(m, "seed", "%" PRIu64, r->cfg.seed);
    meta_put(m, "kernels", "%s", fm_kernels_name(r->kernels));
    meta_put(m, "train_images", "%d", r->train.n);
    run_options o;
    run_options_make(&r->cfg, &o);
    for (int i = 0; i < o.n; i++) meta_put(m, o.key[i], "%s", o.value[i]);
}

fm_status run_state_save(fm_run *r)
{
    state_meta m = {0};
    put_identity(&m, r);
    meta_put(&m, "epochs_done", "%d", r->history.n);
    meta_put(&m, "finished", "%d", r->finished);
    meta_put(&m, "global_step", "%" PRId64, r->global_step);
    meta_put(&m, "optim_steps", "%" PRId64, fm_optim_steps(r->optim));
    meta_put(&m, "best_epoch", "%d", r->best_epoch);
    meta_put(&m, "best_val_loss", "%a", r->best_val_loss);
    meta_put(&m, "bad_epochs", "%d", r->bad_epochs);
    meta_put(&m, "seconds", "%a", r->seconds);
    put_rng(&m, "rng_dropout", fm_graph_rng(r->graph));
    fm_loader_state ls = fm_loader_save(r->loader);
    put_rng(&m, "rng_shuffle", &ls.shuffle_at_begin);
    put_rng(&m, "rng_augment", &ls.augment);
    if (r->cfg.random_erasing > 0) put_rng(&m, "rng_erase", &ls.erase);
    if (r->y_b) put_rng(&m, "rng_mix", &ls.mix);
    meta_put(&m, "loader", "%d %d", ls.pos, ls.begun);
    const run_partial *pa = &r->partial;
    meta_put(&m, "partial", "%d %d %a %" PRId64 " %" PRId64 " %a %a", pa->active, pa->step,
             pa->loss_sum, pa->correct, pa->seen, pa->lr, pa->seconds);
    size_t cap = 64 + (size_t)r->history.n * 7 * 32, len = 0;
    char *hist = fm_xmalloc(cap);
    hist[0] = '\0';
    for (int i = 0; i < r->history.n; i++) {
        const fm_metrics_row *h = &r->history.rows[i];
        len += (size_t)snprintf(hist + len, cap - len, "%s%d %a %a %a %a %a %a", i ? ";" : "",
                                h->epoch, h->train_loss, h->train_acc, h->val_loss, h->val_acc,
                                h->lr, h->seconds);
    }
    meta_put(&m, "history", "%s", hist);
    free(hist);

    fm_model *l = state_layout(r);
    state_copy(r, l, true);
    fm_status st = fm_safetensors_save(r->state_path, l, m.kv, m.n);
    fm_model_free(l);
    meta_free(&m);
    return st;
}

/* ---- resuming ---------------------------------------------------------------- */

typedef struct state_reader {
    const char *path;
    fm_meta *meta;
    fm_status st;  /* the first error */
} state_reader;

static const char *get(state_reader *s, const char *key)
{
    const char *v = fm_meta_get(s->meta, key);
    if (!v && s->st == FM_OK)
        s->st = fm_error_set(FM_ERR_FORMAT, "%s: the run state lacks \"%s\" (a file of another "
                             "fmhost version?); start afresh without --resume", s->path, key);
    return v ? v : "";
}

/* Reads the whole of `key` with sscanf's `fmt`, which must convert `n` values. */
static void scan(state_reader *s, const char *key, int n, const char *fmt, ...)
{
    const char *v = get(s, key);
    if (s->st != FM_OK) return;
    va_list ap;
    va_start(ap, fmt);
    int got = vsscanf(v, fmt, ap);
    va_end(ap);
    if (got != n)
        s->st = fm_error_set(FM_ERR_FORMAT, "%s: the run state's \"%s\" is unreadable (\"%.40s\")",
                             s->path, key, v);
}

static void scan_rng(state_reader *s, const char *key, fm_rng *rng)
{
    scan(s, key, 2, "%" SCNx64 ":%" SCNx64, &rng->state, &rng->inc);
}

/* The value an option had before it existed: its default (a state saved by
 * an older fmhost lacks the key); NULL for a key that is not an option. */
static const char *option_default(const run_options *defaults, const char *key)
{
    for (int i = 0; i < defaults->n; i++)
        if (!strcmp(defaults->key[i], key)) return defaults->value[i];
    return NULL;
}

/* The saved identity against this run's: the first difference, named. */
static fm_status check_identity(state_reader *s, const fm_run *r)
{
    if (strcmp(get(s, "fmhost_run_state"), STATE_FORMAT) != 0)
        return fm_error_set(FM_ERR_FORMAT, "%s: not a run state fmhost %s can resume", s->path,
                            FM_VERSION_STRING);
    state_meta now = {0};
    put_identity(&now, r);
    fm_train_config defaults_cfg;
    fm_train_config_init(&defaults_cfg);
    run_options defaults;
    run_options_make(&defaults_cfg, &defaults);
    fm_status st = FM_OK;
    for (int i = 1; i < now.n && st == FM_OK; i++) {
        const char *key = now.kv[2 * i], *want = now.kv[2 * i + 1];
        const char *had = fm_meta_get(s->meta, key);
        if (!had) had = option_default(&defaults, key);  /* saved before the option existed */
        if (!had) had = get(s, key);
        if (s->st != FM_OK) {
            st = s->st;
        } else if (!strcmp(key, "kernels")) {
            if (strcmp(kernels_family(had), kernels_family(want)) != 0)
                st = fm_error_set(FM_ERR_ARG,
                                  "cannot resume from %s: it was trained with the %s kernels, "
                                  "whose numbers the %s kernels do not reproduce; resume with "
                                  "--kernels %s", s->path, had, want, had);
        } else if (strcmp(had, want) != 0) {
            st = fm_error_set(FM_ERR_ARG,
                              "cannot resume from %s: it was saved with %s %s, this run has %s "
                              "%s; resume with the same options, or start afresh without "
                              "--resume", s->path, key, *had ? had : "(none)", key, want);
        }
    }
    meta_free(&now);
    return st;
}

static void load_history(state_reader *s, fm_metrics *history, int epochs_done)
{
    const char *v = get(s, "history");
    for (int i = 0; i < epochs_done && s->st == FM_OK; i++) {
        fm_metrics_row h;
        int used = 0;
        if (sscanf(v, "%d %la %la %la %la %la %la%n", &h.epoch, &h.train_loss, &h.train_acc,
                   &h.val_loss, &h.val_acc, &h.lr, &h.seconds, &used) != 7 || h.epoch != i + 1) {
            s->st = fm_error_set(FM_ERR_FORMAT, "%s: the run state's history is unreadable at "
                                 "epoch %d", s->path, i + 1);
            return;
        }
        fm_metrics_append(history, &h);
        v += used;
        if (*v == ';') v++;
    }
}

fm_status run_state_load(fm_run *r)
{
    state_reader s = {.path = r->state_path};
    if (access(r->state_path, F_OK) != 0)
        return fm_error_set(FM_ERR_IO, "nothing to resume: %s does not exist (%s); run without "
                            "--resume to start", r->state_path, strerror(errno));
    fm_status st = fm_safetensors_read_meta(r->state_path, &s.meta);
    if (st == FM_OK) st = check_identity(&s, r);
    fm_model *l = NULL;
    if (st == FM_OK) {
        l = state_layout(r);
        st = fm_safetensors_load(r->state_path, l, NULL);
    }
    int epochs_done = 0, finished = 0, loader_pos = 0, loader_begun = 0, active = 0;
    int64_t optim_steps = 0;
    fm_rng dropout = {0};
    fm_loader_state ls = {0};
    run_partial pa = {0};
    if (st == FM_OK) {
        scan(&s, "epochs_done", 1, "%d", &epochs_done);
        scan(&s, "finished", 1, "%d", &finished);
        scan(&s, "global_step", 1, "%" SCNd64, &r->global_step);
        scan(&s, "optim_steps", 1, "%" SCNd64, &optim_steps);
        scan(&s, "best_epoch", 1, "%d", &r->best_epoch);
        scan(&s, "best_val_loss", 1, "%la", &r->best_val_loss);
        scan(&s, "bad_epochs", 1, "%d", &r->bad_epochs);
        scan(&s, "seconds", 1, "%la", &r->seconds);
        scan_rng(&s, "rng_dropout", &dropout);
        scan_rng(&s, "rng_shuffle", &ls.shuffle_at_begin);
        scan_rng(&s, "rng_augment", &ls.augment);
        ls.erase = fm_loader_save(r->loader).erase;  /* unused without erasing */
        if (r->cfg.random_erasing > 0) scan_rng(&s, "rng_erase", &ls.erase);
        ls.mix = fm_loader_save(r->loader).mix;
        if (r->y_b) scan_rng(&s, "rng_mix", &ls.mix);
        scan(&s, "loader", 2, "%d %d", &loader_pos, &loader_begun);
        scan(&s, "partial", 7, "%d %d %la %" SCNd64 " %" SCNd64 " %la %la", &active, &pa.step,
             &pa.loss_sum, &pa.correct, &pa.seen, &pa.lr, &pa.seconds);
        if (s.st == FM_OK && (epochs_done < 0 || epochs_done > r->cfg.epochs ||
                              loader_pos < 0 || loader_pos > r->train.n || optim_steps < 0 ||
                              r->best_epoch < 0 || r->best_epoch > epochs_done))
            s.st = fm_error_set(FM_ERR_FORMAT, "%s: the run state's counters are inconsistent",
                                r->state_path);
        if (s.st == FM_OK) load_history(&s, &r->history, epochs_done);
        st = s.st;
    }
    if (st == FM_OK) {
        state_copy(r, l, false);
        fm_optim_set_steps(r->optim, optim_steps);
        *fm_graph_rng(r->graph) = dropout;
        ls.pos = loader_pos;
        ls.begun = loader_begun != 0;
        fm_loader_restore(r->loader, &ls);
        pa.active = active != 0;
        r->partial = pa;
        r->finished = finished != 0;
        r->checkpoint_written = r->best_epoch > 0 && access(r->checkpoint, F_OK) == 0;
    } else {
        fm_metrics_free(&r->history);
        r->history = (fm_metrics){0};
    }
    fm_model_free(l);
    fm_meta_free(s.meta);
    return st;
}
