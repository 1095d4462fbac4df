/* run_track.c — a training run in the run store (fm_track.h): its row when
 * it is made, a row per epoch, its files kept in its own folder, its end. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fm/fm_track.h"
#include "run_internal.h"

/* A write that failed while training: the run goes on, the user is told once. */
static void track_warn(fm_run *r, fm_status st)
{
    if (st == FM_OK || r->track_warned) return;
    r->track_warned = true;
    fm_log(FM_LOG_WARN, "%s: the run store missed a write (training goes on): %s", r->name,
           fm_error_message());
}

fm_status run_track_begin(fm_run *r)
{
    const fm_train_config *c = &r->cfg;
    bool explicit_db = c->runs_db && *c->runs_db;
    if (!c->track || (!c->write_artifacts && !explicit_db)) return FM_OK;
    char path[4096];
    fm_track_default_path(c->runs_db, c->out_dir, path, sizeof path);
    fm_status st = fm_track_open(&r->track, path, true);
    if (st != FM_OK) return st;

    run_options opt;
    run_options_make(&r->cfg, &opt);
    const char *kv[2 * (RUN_MAX_OPTIONS + 8)];
    int n = 0;
    for (int i = 0; i < opt.n; i++) {
        kv[2 * n] = opt.key[i];
        kv[2 * n + 1] = opt.value[i];
        n++;
    }
    char seed[32], threads[16];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)c->seed);
    snprintf(threads, sizeof threads, "%d", c->threads);
    const char *extra[] = {
        "seed", seed, "threads", threads, "kernels", fm_kernels_name(r->kernels),
        "resume", c->resume ? "true" : "false", "out", c->out_dir,
        "data_dir", r->data->dir, "artifacts", c->write_artifacts ? "true" : "false",
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i += 2, n++) {
        kv[2 * n] = extra[i];
        kv[2 * n + 1] = extra[i + 1];
    }
    fm_track_start s = {
        .kind = "train",
        .model = r->name,
        .command = c->command,
        .sweep = c->sweep,
        .plugin_path = fm_plugin_path(r->plugin),
        .hparams = r->hparams,
        .hp_kv = (const char *const *)r->hp_kv,
        .n_hp = r->n_hp,
        .opt_kv = kv,
        .n_opt = n,
        .seed = c->seed,
        .threads = c->threads,
        .kernels = fm_kernels_name(r->kernels),
        .precision = fm_precision_name(c->precision),
        .out_dir = c->write_artifacts ? c->out_dir : NULL,
        .data_dir = r->data->dir,
        .params = fm_model_num_params(r->model),
    };
    if ((st = fm_track_begin(r->track, &s)) != FM_OK) {
        fm_track_close(r->track);
        r->track = NULL;
    }
    return st;
}

static void keep(fm_run *r, const char *path, const char *name)
{
    if (access(path, F_OK) == 0) track_warn(r, fm_track_keep(r->track, path, name));
}

void run_track_epoch(fm_run *r, const fm_epoch_metrics *m, bool best)
{
    if (!r->track) return;
    track_warn(r, fm_track_epoch(r->track, m));
    if (!r->cfg.write_artifacts) return;
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.csv", r->results_dir);
    keep(r, path, NULL);
    if (best && r->checkpoint_written) keep(r, r->checkpoint, NULL);
}

/* The end as known now: training's, or with the test set's numbers once
 * the report is written. */
static void finish(fm_run *r, const char *status, const char *message)
{
    int best = r->best_epoch - 1;
    bool tested = r->have_test;
    fm_track_end e = {
        .status = status,
        .message = message,
        .epochs_run = r->history.n,
        .best_epoch = r->best_epoch,
        .val_loss = best >= 0 ? r->history.rows[best].val_loss : NAN,
        .val_acc = best >= 0 ? r->history.rows[best].val_acc : NAN,
        .test_loss = tested ? r->test_result.loss : NAN,
        .test_acc = tested ? r->test_result.acc : NAN,
        .test_n = tested ? r->test_result.n : 0,
        .confusion = tested ? (const int64_t(*)[FM_NUM_CLASSES])r->test_result.confusion : NULL,
        .wall_seconds = r->seconds,
    };
    track_warn(r, fm_track_finish(r->track, &e));
    r->track_ended = true;
}

void run_track_end(fm_run *r, fm_status st)
{
    if (!r->track) return;
    finish(r, fm_run_status_name(r->status), st != FM_OK ? fm_error_message() : r->status_msg);
}

void run_track_report(fm_run *r, fm_status st)
{
    if (!r->track) return;
    if (st == FM_OK && r->cfg.write_artifacts) {
        static const char *const files[] = {
            "metrics.csv", "loss.png", "acc.png", "confusion_matrix.png", "confusion_matrix.csv",
            "classification_report.txt", "per_class.csv", "errors.png", "summary.json",
        };
        char path[4200];
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
            snprintf(path, sizeof path, "%s/%s", r->results_dir, files[i]);
            keep(r, path, NULL);
        }
        keep(r, r->state_path, NULL);  /* the state as the run ended, for --resume */
        if (r->checkpoint_written) {
            keep(r, r->checkpoint, NULL);
            if (r->cfg.save_dtype != FM_FLOAT_F32) {
                int stem = (int)(strlen(r->checkpoint) - strlen(".safetensors"));
                snprintf(path, sizeof path, "%.*s.%s.safetensors", stem, r->checkpoint,
                         fm_float_dtype_name(r->cfg.save_dtype));
                keep(r, path, NULL);
            }
        }
    }
    if (st != FM_OK)
        finish(r, "failed", fm_error_message());
    else
        finish(r, fm_run_status_name(r->status), r->status_msg);
}

void run_track_close(fm_run *r)
{
    if (!r->track) return;
    if (!r->track_ended)
        finish(r, "failed", "the run was closed before its training ended");
    fm_track_close(r->track);
    r->track = NULL;
}

void fm_run_track_failed(fm_run *r, const char *message)
{
    if (r->track) finish(r, "failed", message);
}

int64_t fm_run_track_id(const fm_run *r) { return r->track ? fm_track_run_id(r->track) : 0; }
const char *fm_run_track_path(const fm_run *r) { return r->track ? fm_track_path(r->track) : NULL; }
const char *fm_run_track_dir(const fm_run *r) { return r->track ? fm_track_run_dir(r->track) : ""; }
