/* run_internal.h — the training run's fields, shared by train.c (the loop,
 * evaluation, the report) and run_state.c (saving and resuming).  Private. */
#ifndef FM_RUN_INTERNAL_H
#define FM_RUN_INTERNAL_H

#include "fm/fm_train.h"

#define EVAL_BATCH 256

/* The epoch in progress: what its metrics row sums so far. */
typedef struct run_partial {
    bool active;          /* an epoch has begun and not ended */
    int step;             /* steps done in it */
    double loss_sum;      /* sum of loss * batch over those steps */
    int64_t correct, seen;
    double lr;            /* of the last step */
    double seconds;       /* its wall time so far */
} run_partial;

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
    int32_t *y_b;    /* [B] with mixup or cutmix: the labels mixed in, else NULL */
    float lam;       /* their batch's weight of y */
    fm_metrics history;
    int best_epoch;
    double best_val_loss;
    int bad_epochs;          /* epochs since the best, for early stopping */
    void *best_state;
    void *ema_state;         /* cfg.ema > 0: the average, a model state (fm_model_state_save) */
    void *swap_state;        /* the trained weights while the average is in the model */
    double seconds;
    int64_t global_step;
    run_partial partial;
    bool finished;           /* the epochs ran out or early stopping ended them */
    fm_run_status status;
    char status_msg[512];
    char results_dir[4096];
    char checkpoint[4096 + 128];
    bool checkpoint_written;
    char state_path[4096 + 128];
    uint8_t *pred;     /* evaluation buffers, sized for the largest split */
    float *confidence;
    bool have_test;
    fm_eval_result test_result;
    struct fm_track *track;  /* the run store, or NULL when not recorded */
    bool track_ended;        /* its end is recorded */
    bool track_warned;       /* a failed write was reported (once) */
    bool parallel;           /* data-parallel over the job's ranks (cfg.data_parallel) */
    bool writer;             /* writes the run's files: not a data-parallel rank but 0 */
};

/* The options that decide a run's numbers, as key/value strings in a fixed
 * order (floats to 9 significant digits: a float32 round-trips): recorded in
 * summary.json and in the run state, which refuses to resume under others. */
#define RUN_MAX_OPTIONS 32
typedef struct run_options {
    int n;
    const char *key[RUN_MAX_OPTIONS];
    const char *value[RUN_MAX_OPTIONS];
    char text[RUN_MAX_OPTIONS][48];
} run_options;

void run_options_make(const fm_train_config *c, run_options *o);

/* run_track.c: the run in the run store (fm_track.h), as it goes.  Begin
 * fails the run when the store cannot be opened or written; later writes
 * that fail are reported once and training goes on. */
fm_status run_track_begin(fm_run *r);
void run_track_epoch(fm_run *r, const fm_epoch_metrics *m, bool best);
void run_track_end(fm_run *r, fm_status st);
void run_track_report(fm_run *r, fm_status st);
void run_track_close(fm_run *r);

/* run_state.c: the state file at r->state_path. */
fm_status run_state_save(fm_run *r);
fm_status run_state_load(fm_run *r);

#endif /* FM_RUN_INTERNAL_H */
