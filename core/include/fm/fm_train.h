/* fm_train.h — a training run: the protocol of SPEC §3 as one object, shared
 * by `fmhost train` and the Lua `fm.train`.
 *
 *     fm_train_config cfg;
 *     fm_train_config_init(&cfg);                 // the defaults of SPEC §3
 *     cfg.epochs = 5;
 *     fm_run *run;
 *     if (fm_run_new(&run, plugin, hparams, NULL, &cfg) != FM_OK) ... fm_error_message()
 *     if (fm_run_train(run) != FM_OK) ...
 *     fm_eval_result test;
 *     fm_run_evaluate(run, FM_SPLIT_TEST, &test);  // the best checkpoint on the test set
 *     fm_run_free(run);
 *
 * Artifacts (when cfg.write_artifacts): <out>/artifacts/<model>_best.safetensors,
 * rewritten atomically whenever validation loss improves; <out>/results/<model>/
 * metrics.csv, rewritten atomically after every epoch; and, after
 * fm_run_report(), the plots and tables of SPEC §4.  With cfg.save_dtype
 * FM_FLOAT_BF16, fm_run_train also writes, as it returns,
 *     <out>/artifacts/<model>_best.bf16.safetensors
 * the best weights rounded to bfloat16 (I64 buffers as they are), with the
 * best checkpoint's metadata and "dtype": "bf16".  Checkpoints and the run
 * state stay float32.
 */
#ifndef FM_TRAIN_H
#define FM_TRAIN_H

#include "fm_data.h"
#include "fm_optim.h"
#include "fm_plugin.h"
#include "fm_report.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fm_sched_kind {
    FM_SCHED_CONSTANT, FM_SCHED_STEP, FM_SCHED_COSINE, FM_SCHED_ONECYCLE
} fm_sched_kind;

FM_API fm_status fm_sched_kind_parse(const char *s, fm_sched_kind *out);
FM_API const char *fm_sched_kind_name(fm_sched_kind kind);

/* One epoch: a row of metrics.csv.  lr is the rate of the epoch's last step;
 * seconds its wall time, validation included. */
typedef fm_metrics_row fm_epoch_metrics;

typedef struct fm_step_info {
    int epoch, step, steps_per_epoch;  /* epoch 1-based, step 0-based within it */
    int64_t global_step;               /* 0-based over the run */
    double loss, lr;
} fm_step_info;

typedef struct fm_train_config {
    int epochs;          /* 20 */
    int batch_size;      /* 64 */
    fm_optim_config optim;  /* Adam, lr 1e-3 */
    uint64_t seed;       /* 42 */
    int patience;        /* 5; 0 disables early stopping */
    double val_split;    /* 0.1 */
    fm_sched_kind scheduler;  /* constant */
    int step_size;       /* step: epochs between decays (10) */
    double gamma;        /* step: decay factor (0.1) */
    double min_lr;       /* cosine: the rate annealed toward, reached one epoch after the last (0) */
    int warmup;          /* epochs of linear warm-up before the schedule (0) */
    double pct_start;    /* onecycle: fraction of the steps spent rising (0.3) */
    double div_factor;   /* onecycle: starts at lr / div_factor (25) */
    double final_div_factor;  /* onecycle: ends at lr / (div_factor * final_div_factor) (1e4) */
    bool augment;        /* random crop + flip (false) */
    double random_erasing;  /* probability of torchvision's RandomErasing per training image,
                             * after augmentation (fm_loader_set_erasing; 0) */
    double mixup, cutmix;   /* > 0: Beta alphas of mixup and cutmix of each batch with itself
                             * reversed, the loss on the mixed targets (fm_loader_set_mixing,
                             * fm_cross_entropy_mix; 0) */
    double clip_grad_norm;  /* > 0: clip the gradients' total L2 norm to this each step (0) */
    double label_smoothing; /* training loss only, [0, 1) (fm_cross_entropy_smooth; 0) */
    bool tta;               /* the test set (fm_run_evaluate FM_SPLIT_TEST) with flip
                             * test-time augmentation (fm_evaluate_tta; false) */
    double ema;             /* in (0, 1): validate, checkpoint and test an exponential moving
                             * average of the weights and batch-norm buffers, updated after
                             * every step as ema = ema * decay + w * (1 - decay) (0: off) */
    fm_precision precision;  /* linear and convolution layers' arithmetic (fm_graph.h; fp32) */
    bool resume;         /* continue the run saved in <out>/artifacts/<model>_last.safetensors */
    int threads;         /* 0: one per core */
    int limit;           /* >0: first N training images of the split */
    const char *data_dir;   /* NULL: $FMHOST_DATA, then the system dir */
    const char *out_dir;    /* "." : artifacts/ and results/ go under it */
    bool write_artifacts;   /* true */
    /* Data-parallel over the ranks of the job (fm_dist.h, several ranks):
     * each batch's chunks are split over the ranks, every sum over the
     * batch is the one-process sum (fm_graph_set_batch), and only rank 0
     * writes files or records the run.  false: every rank is a run of its
     * own (fm.dist.map's). */
    bool data_parallel;
    fm_float_dtype save_dtype;  /* FM_FLOAT_BF16: also write the best weights as BF16 (F32) */
    bool quiet;             /* no progress output */
    bool progress_tty;      /* draw a live bar (set when stderr is a terminal) */

    /* Optional hooks, all called on the training thread.  `user` is passed
     * back.  schedule: returns the learning rate for a step (overrides the
     * built-in schedule); on_step/on_epoch: return false to stop training
     * after this step/epoch (the run still keeps its best checkpoint). */
    double (*schedule)(void *user, int epoch, int step, double base_lr);
    bool (*on_step)(void *user, const fm_step_info *info);
    bool (*on_epoch)(void *user, const fm_epoch_metrics *m);
    void *user;

    /* The run store (fm_track.h).  With `track` (true) and artifacts on, or
     * runs_db given, fm_run_new records the run in runs_db (NULL:
     * $FMHOST_RUNS_DB, else <out_dir>/runs.db) and fails, before
     * training, when it cannot; the run's files are also kept in
     * <out_dir>/runs/<id>/.  command and sweep are recorded as given. */
    bool track;
    const char *runs_db;
    const char *command;    /* the command line that made the run */
    const char *sweep;      /* a group of runs (a script's), or NULL */
} fm_train_config;

FM_API void fm_train_config_init(fm_train_config *cfg);
/* Checks every field's range; FM_ERR_ARG naming the option and the value. */
FM_API fm_status fm_train_config_check(const fm_train_config *cfg);
/* The built-in schedule's learning rate at (epoch 0-based, step within
 * epoch) for a run of steps_per_epoch steps per epoch, as PyTorch's
 * schedulers give it (tests/test_sched.c compares every value):
 *   warm-up, epochs [0, warmup): linear per step, from lr/(warmup *
 *     steps_per_epoch) at the first step to lr at the last (LinearLR
 *     stepped per step);
 *   then per epoch, e = epoch - warmup over T = epochs - warmup epochs:
 *     constant: lr; step: lr * gamma^floor(e / step_size) (StepLR);
 *     cosine: min_lr + (lr - min_lr) * (1 + cos(pi * e / T)) / 2
 *     (CosineAnnealingLR with T_max = T, eta_min = min_lr): the last epoch
 *     runs just above min_lr, which would be reached one epoch later;
 *   onecycle (no warm-up of its own): per step, OneCycleLR(max_lr = lr,
 *     total_steps = epochs * steps_per_epoch, pct_start, div_factor,
 *     final_div_factor, anneal_strategy "cos", cycle_momentum False):
 *     cosine from lr / div_factor up to lr over the first pct_start of the
 *     steps, then down to lr / (div_factor * final_div_factor) at the last. */
FM_API double fm_sched_lr(const fm_train_config *cfg, int epoch, int step, int steps_per_epoch);

/* Both splits of FashionMNIST, loaded once and shared by runs. */
typedef struct fm_fashion {
    char dir[4096];
    fm_dataset train, test;
} fm_fashion;

/* Finds (fm_data_find_dir) and loads the data. */
FM_API fm_status fm_fashion_load(fm_fashion *out, const char *data_dir);
FM_API void fm_fashion_free(fm_fashion *f);

typedef struct fm_run fm_run;

typedef enum fm_split_id { FM_SPLIT_TRAIN, FM_SPLIT_VAL, FM_SPLIT_TEST } fm_split_id;

typedef struct fm_eval_result {
    double loss, acc;
    int n;
    int64_t confusion[FM_NUM_CLASSES][FM_NUM_CLASSES];  /* [true][predicted] */
    /* Per image, in split order; owned by the run, valid until the next
     * evaluation or fm_run_free. */
    const uint8_t *pred;
    const float *confidence;  /* softmax probability of the prediction */
    const uint32_t *index;    /* dataset index of each image */
    const fm_dataset *data;
} fm_eval_result;

/* Creates the model (fm_plugin_create_model with cfg->seed), splits the data
 * and prepares the optimizer.  `data` may be NULL: it is then loaded from
 * cfg->data_dir.  When artifacts are on, checks first that the output
 * directories can be created and written, so a bad --out fails before
 * training, not after. */
FM_API fm_status fm_run_new(fm_run **out, fm_plugin *plugin, const fm_hparams *hp,
                            const fm_fashion *data, const fm_train_config *cfg);
FM_API void fm_run_free(fm_run *r);

/* How a run's training ended. */
typedef enum fm_run_status {
    FM_RUN_RUNNING,      /* not trained yet */
    FM_RUN_COMPLETED,    /* every epoch, or early stopping */
    FM_RUN_STOPPED,      /* a hook (on_step, on_epoch) asked to stop */
    FM_RUN_INTERRUPTED,  /* fm_stop_request(): the current step finished, the state saved */
    FM_RUN_DIVERGED,     /* a non-finite loss or gradient: stopped before it spread */
    FM_RUN_FAILED,       /* an error (an artifact not written, a plugin's bad output) */
} fm_run_status;

/* "running", "completed", "stopped", "interrupted", "diverged", "failed". */
FM_API const char *fm_run_status_name(fm_run_status status);

/* Trains with early stopping, then restores the best weights (lowest
 * validation loss), if any epoch gave one.  Returns FM_OK however training
 * ended (fm_run_status_of tells how) and an error only when an artifact
 * could not be written.
 *
 * With artifacts, the run's whole state (weights and buffers, the best
 * weights, optimizer moments and step, every random stream, the data order
 * and position, early stopping's counters, the history) is written
 * atomically to fm_run_state_path() at every epoch end and when
 * interrupted; a run made with cfg.resume continues from it to the same
 * bytes as a run never stopped (same options; the thread count and the
 * vector kernel set may differ). */
FM_API fm_status fm_run_train(fm_run *r);
FM_API fm_run_status fm_run_status_of(const fm_run *r);
/* Why training diverged or was interrupted ("" otherwise): names the epoch
 * and step and the fix. */
FM_API const char *fm_run_status_message(const fm_run *r);
/* <out>/artifacts/<model>_last.safetensors ("" without artifacts). */
FM_API const char *fm_run_state_path(const fm_run *r);

/* Evaluates the model's current weights (after training: the best). */
FM_API fm_status fm_run_evaluate(fm_run *r, fm_split_id split, fm_eval_result *out);

/* Writes the test-set report files of SPEC §4 and summary.json (evaluates
 * the test set if needed). */
FM_API fm_status fm_run_report(fm_run *r);

/* Saves the current weights as safetensors with the run's metadata: plugin,
 * hparams, epoch, val_loss, seed, params, fmhost_version, kernels. */
FM_API fm_status fm_run_save(fm_run *r, const char *path);

FM_API fm_model *fm_run_model(fm_run *r);
FM_API const char *fm_run_name(const fm_run *r);
FM_API const fm_epoch_metrics *fm_run_history(const fm_run *r, int *n_epochs);
FM_API int fm_run_best_epoch(const fm_run *r);  /* 1-based; 0 before any epoch */
FM_API double fm_run_seconds(const fm_run *r);  /* training wall time */
FM_API const char *fm_run_results_dir(const fm_run *r);
/* The best checkpoint's path, or NULL while none has been written (no
 * artifacts, or no epoch ended with a finite validation loss). */
FM_API const char *fm_run_checkpoint_path(const fm_run *r);
/* The kernel set in use when fm_run_new made the run; recorded in its
 * checkpoints ("kernels" in the metadata) and summary.json.  Keep it in use
 * while the run trains and evaluates: the run does not switch sets itself
 * (fm_kernels_use is process-wide). */
FM_API fm_kernels fm_run_kernels(const fm_run *r);
/* The run's cfg.precision: its training graph and its evaluations use it. */
FM_API fm_precision fm_run_precision(const fm_run *r);
/* The run's id in the run store and the store's path: 0 and NULL when the
 * run is not recorded.  Its own folder (<out>/runs/<id>/, "" without
 * artifacts) by fm_run_track_dir. */
FM_API int64_t fm_run_track_id(const fm_run *r);
FM_API const char *fm_run_track_path(const fm_run *r);
FM_API const char *fm_run_track_dir(const fm_run *r);
/* Records the run as failed, with the message (e.g. a script's callback
 * raised an error, which ended the run). */
FM_API void fm_run_track_failed(fm_run *r, const char *message);

/* Writes the test-set files of SPEC §4 into dir: confusion_matrix.png and
 * .csv, classification_report.txt, per_class.csv and errors.png.  `res`
 * must come with per-image predictions (pred, confidence). */
FM_API fm_status fm_eval_write_report(const fm_eval_result *res, const char *dir, const char *name);

/* Evaluates a model on a dataset subset in eval mode, no grad, batch_size
 * images per forward pass but never more than 256: a larger batch runs as
 * passes of 256, faster and in less memory, with the same logits (on the
 * portable set, but in their last bits).  pred and confidence (may be
 * NULL) receive s->n values. */
FM_API fm_status fm_evaluate(fm_model *m, const fm_subset *s, int batch_size, fm_eval_result *out,
                             uint8_t *pred, float *confidence);
/* fm_evaluate, and with `tta` test-time augmentation by horizontal flip:
 * the logits are the mean of the model's logits on each image and on its
 * mirror, (z(x) + z(flip(x))) / 2, as timm's validate.py and airbench
 * average them; loss, prediction and confidence come from that mean. */
FM_API fm_status fm_evaluate_tta(fm_model *m, const fm_subset *s, int batch_size, bool tta,
                                 fm_eval_result *out, uint8_t *pred, float *confidence);

#ifdef __cplusplus
}
#endif
#endif /* FM_TRAIN_H */
