/* fm_track.h — the run store: every train, eval and scripted run recorded in
 * an SQLite database (`fmhost runs`, fm.runs.query).
 *
 * One file holds any number of runs, written by any number of processes at
 * once (a sweep, several shells): the database is in WAL mode with a busy
 * timeout, and every write is one short transaction, so writers wait for
 * each other instead of failing or losing a row.  A run is written as it
 * goes: its row at the start (status "running", with the process id, the
 * host and its start time), one row per epoch, then its end (status, test
 * metrics, per-class accuracy, artifacts with their SHA-256, wall time,
 * peak RSS).  A process that dies without writing its end (SIGKILL, a
 * crash, the power) leaves "running": every reader checks such rows of its
 * own host and marks those whose process is gone "failed", with a message
 * saying so.
 *
 * The schema carries its version (table schema_version); opening an older
 * file migrates it in place, in one transaction; a newer one is refused
 * with a message naming both versions.
 *
 * Errors are FM_ERR_IO (the file cannot be opened, created or written:
 * the message names it, SQLite's reason and the fix) or FM_ERR_FORMAT (the
 * file is not an fmhost run store, or is corrupt).
 */
#ifndef FM_TRACK_H
#define FM_TRACK_H

#include <stdio.h>

#include "fm_base.h"
#include "fm_report.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The schema version this build writes. */
#define FM_TRACK_SCHEMA_VERSION 2

typedef struct fm_track fm_track;

/* The store's path for a run writing under out_dir: `explicit_path` when
 * given, else $FMHOST_RUNS_DB when set and non-empty, else
 * <out_dir>/runs.db.  Into buf (size bytes); returns buf. */
FM_API const char *fm_track_default_path(const char *explicit_path, const char *out_dir, char *buf,
                                         size_t size);

/* Opens (creating it, and its directory, when `create`) the store at path,
 * migrates an older schema, and returns it in *out.  Without `create` a
 * missing file is FM_ERR_IO naming it. */
FM_API fm_status fm_track_open(fm_track **out, const char *path, bool create);
/* Closes the store; a run still open (begun, not ended) is left as it is,
 * "running" until a reader finds its process gone.  NULL is fine. */
FM_API void fm_track_close(fm_track *t);
FM_API const char *fm_track_path(const fm_track *t);

/* ---- recording a run ----------------------------------------------------------- */

/* What is known when a run starts.  Strings may be NULL (recorded as NULL). */
typedef struct fm_track_start {
    const char *kind;         /* "train" or "eval" */
    const char *model;        /* the plugin's name */
    const char *command;      /* the full command line */
    const char *sweep;        /* a group of runs (a script's), or NULL */
    const char *plugin_path;  /* its content's SHA-256 is recorded */
    const char *hparams;      /* "width=32 blocks=1" */
    const char *const *hp_kv; /* n_hp name/value pairs */
    int n_hp;
    const char *const *opt_kv;  /* n_opt option name/value pairs (every option) */
    int n_opt;
    uint64_t seed;
    int threads;
    const char *kernels, *precision;
    const char *out_dir, *data_dir;
    int64_t params;           /* trainable parameters */
} fm_track_start;

/* Inserts the run's row (status "running") and the folder of its own,
 * <out_dir>/runs/<id>/ (or <id>.2, ... when that name is taken), where
 * fm_track_keep puts its files.  With out_dir NULL no folder is made. */
FM_API fm_status fm_track_begin(fm_track *t, const fm_track_start *s);
/* The open run's id (0 before fm_track_begin) and its folder ("" without). */
FM_API int64_t fm_track_run_id(const fm_track *t);
FM_API const char *fm_track_run_dir(const fm_track *t);

/* Records one epoch (a metrics.csv row) and the heartbeat. */
FM_API fm_status fm_track_epoch(fm_track *t, const fm_metrics_row *m);

/* Keeps a file the run wrote in its folder, under name (NULL: the file's
 * own name): a hard link (the run's files are replaced by rename, so the
 * link keeps this version), or a copy across file systems.  Records it as
 * an artifact with its size and SHA-256 (name -> the kept path). */
FM_API fm_status fm_track_keep(fm_track *t, const char *path, const char *name);

/* The end of a run, or an update of it (fm_track_end may be called again:
 * the last call wins).  NaN metrics are recorded as NULL; confusion may
 * be NULL. */
typedef struct fm_track_end {
    const char *status;   /* "completed", "stopped", "interrupted", "diverged", "failed" */
    const char *message;  /* why it ended so, or NULL */
    int epochs_run, best_epoch;
    double val_loss, val_acc;   /* of the best epoch */
    double test_loss, test_acc;
    int test_n;
    const int64_t (*confusion)[FM_NUM_CLASSES];  /* [true][predicted], or NULL */
    double wall_seconds;
} fm_track_end;
FM_API fm_status fm_track_finish(fm_track *t, const fm_track_end *e);

/* ---- reading runs ------------------------------------------------------------------ */

/* One run as stored. */
typedef struct fm_track_run {
    int64_t id;
    char *kind, *model, *status, *message, *sweep;
    char *started, *ended, *heartbeat;  /* UTC "YYYY-MM-DD HH:MM:SS"; NULL when unknown */
    char *command, *cwd, *host;
    int64_t pid, pid_start;  /* pid_start: the process's start time, 0 when unknown */
    char *plugin_path, *plugin_sha256, *hparams, *kernels, *precision, *fmhost_version;
    char *out_dir, *data_dir, *run_dir;
    int64_t seed, threads, params, peak_rss_kb;
    int epochs_run, best_epoch, test_n;
    double val_loss, val_acc, test_loss, test_acc, wall_seconds;  /* NaN when NULL */
    int n_settings;
    char **setting_kind, **setting_key, **setting_value;  /* "hparam" or "option" */
    fm_metrics history;                                   /* the epochs recorded */
    bool have_classes;
    double class_acc[FM_NUM_CLASSES];                     /* per-class accuracy (recall) */
    int64_t class_support[FM_NUM_CLASSES];
    int64_t confusion[FM_NUM_CLASSES][FM_NUM_CLASSES];    /* all 0 when not recorded */
    bool have_confusion;
    int n_artifacts;
    char **artifact_name, **artifact_path, **artifact_sha256;
    int64_t *artifact_bytes;
} fm_track_run;

/* Which runs, in which order.  Zeroed: all, newest first. */
typedef struct fm_track_filter {
    const char *model, *status, *kind, *sweep;  /* exact matches, or NULL */
    const char *since, *until;  /* started on or after / before: "YYYY-MM-DD[ HH:MM:SS]" */
    const char *const *where;   /* n_where "KEY=VALUE": a hyper-parameter or option */
    int n_where;
    const char *sort;           /* a column of fm_track_sort_keys(); NULL: started */
    bool ascending;             /* default descending (highest first) */
    int limit;                  /* 0: all */
} fm_track_filter;

/* The keys runs can be sorted by, NULL-terminated. */
FM_API const char *const *fm_track_sort_keys(void);

/* Marks the "running" runs of this host whose process is gone as
 * "failed"; returns how many (0 when the store is read-only). */
FM_API int fm_track_reap(fm_track *t);

/* The matching runs (fully read), in *runs_out (n in *n_out); free with
 * fm_track_runs_free.  FM_ERR_ARG for a bad filter (unknown sort key,
 * malformed where), naming it. */
FM_API fm_status fm_track_query(fm_track *t, const fm_track_filter *f, fm_track_run **runs_out,
                                int *n_out);
/* One run by id; FM_ERR_ARG "no run N in PATH" when there is none. */
FM_API fm_status fm_track_get(fm_track *t, int64_t id, fm_track_run *out);
FM_API void fm_track_run_clear(fm_track_run *r);
FM_API void fm_track_runs_free(fm_track_run *runs, int n);

/* The value of a run's hyper-parameter or option `key`, or NULL. */
FM_API const char *fm_track_run_setting(const fm_track_run *r, const char *key);

/* Deletes a run's rows (its files stay). */
FM_API fm_status fm_track_delete(fm_track *t, int64_t id);

/* True when this run's process is known to be alive (a "running" run of
 * this host whose process exists). */
FM_API bool fm_track_run_alive(const fm_track_run *r);

/* ---- export ------------------------------------------------------------------------ */

/* The runs as CSV: one line per run, its fields, then a column per
 * hyper-parameter ("hp.width") and option ("opt.lr") any of them has. */
FM_API fm_status fm_track_write_csv(FILE *f, const fm_track_run *runs, int n);
/* The runs as a JSON array of objects: every field, "hyperparameters",
 * "options", "epochs" (metrics.csv's rows), "per_class" and "artifacts". */
FM_API fm_status fm_track_write_json(FILE *f, const fm_track_run *runs, int n);
/* The JSON of one run (as an element of fm_track_write_json's array),
 * compact, malloc'ed: for the dashboard and fm.runs. */
FM_API char *fm_track_run_json(const fm_track_run *r);

/* ---- the dashboard ---------------------------------------------------------------- */

/* Writes dir/index.html, a static page that needs no network and no server
 * (its script and style inline), for the runs given: a sortable table of
 * them, and per run its curves, confusion matrix and per-class accuracy
 * (the PNGs kept in its folder are copied beside the page, under
 * dir/runs/<id>/; curves are drawn from the stored epochs when its folder
 * has none), and an overlay of the validation curves of the runs ticked in
 * the table (drawn in the page from the stored epochs). */
FM_API fm_status fm_track_write_html(const char *dir, const fm_track_run *runs, int n,
                                     const char *db_path);

/* Draws the validation accuracy and loss curves of several runs on one PNG
 * each: path_acc and path_loss (either may be NULL). */
FM_API fm_status fm_track_plot_overlay(const char *path_acc, const char *path_loss,
                                       const fm_track_run *runs, int n);

/* ---- helpers -------------------------------------------------------------------- */

/* The SHA-256 of a file's content as 64 hex digits into hex[65]; its size
 * in *bytes (may be NULL). */
FM_API fm_status fm_sha256_file(const char *path, char hex[65], int64_t *bytes);
/* The process's peak resident set size, in KiB. */
FM_API int64_t fm_peak_rss_kb(void);

#ifdef __cplusplus
}
#endif
#endif /* FM_TRACK_H */
