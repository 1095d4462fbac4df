/* fm_report.h — what a run leaves behind for people: metrics.csv, plots
 * (PLplot, PNG), the confusion matrix, scikit-learn's classification report,
 * per-class tables, a grid of the worst mistakes and summary.json.
 *
 * Everything here works on plain data (arrays, counts, strings) and knows
 * nothing of training.  Every file is written atomically (fm_io.h): a failure
 * leaves any older file in place.  Functions that write return FM_OK, or
 * FM_ERR_IO / FM_ERR_FORMAT with a message naming the file.
 *
 * Plots use PLplot's "pngcairo" device (package plplot-driver-cairo), one
 * private PLplot stream per plot, under a process-wide lock: any number of
 * plots can be drawn from one process (the CLI, Lua scripts, tests), from
 * any thread, without disturbing a PLplot stream the caller may own.
 * Text in labels is shown literally ('#', PLplot's escape, is escaped).
 */
#ifndef FM_REPORT_H
#define FM_REPORT_H

#include "fm_base.h"
#include "fm_data.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- line charts --------------------------------------------------------- */

/* Draws n_series curves ys[s][0..n_points) against x[0..n_points) into a PNG
 * (1000×650): title, axis labels, grid, a legend with labels[s], and, when
 * mark_x is not NaN, a dashed vertical line at x = mark_x listed in the
 * legend as mark_label (NULL: "best").  NaN values in ys are gaps, so runs
 * of different lengths share one x array.  labels may be NULL for one
 * unlabelled series.  FM_ERR_ARG when there is nothing to draw (no series,
 * no points, or no finite point); the file is then left as it was. */
FM_API fm_status fm_report_curves(const char *path, const char *title, const char *xlabel,
                                  const char *ylabel, const double *x, const double *const *ys,
                                  const char *const *labels, int n_series, int n_points,
                                  double mark_x, const char *mark_label);

/* ---- metrics.csv ------------------------------------------------------------ */

#define FM_METRICS_HEADER "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds"

/* One line of metrics.csv (same fields as fm_train.h's fm_epoch_metrics). */
typedef struct fm_metrics_row {
    int epoch;  /* 1-based */
    double train_loss, train_acc, val_loss, val_acc;
    double lr;
    double seconds;
} fm_metrics_row;

typedef struct fm_metrics {
    int n;
    fm_metrics_row *rows;  /* [n], owned */
} fm_metrics;

/* Appends a row (the array grows as needed).  m starts zeroed: {0}. */
FM_API void fm_metrics_append(fm_metrics *m, const fm_metrics_row *row);
FM_API void fm_metrics_free(fm_metrics *m);
/* Index (not epoch) of the row with the lowest val_loss, the first on ties;
 * rows whose val_loss is NaN are skipped.  -1 when there is none. */
FM_API int fm_metrics_best(const fm_metrics *m);

/* Writes FM_METRICS_HEADER then one line per row, formatted
 * "%d,%.6f,%.6f,%.6f,%.6f,%.6g,%.3f": identical inputs give identical
 * bytes, so two runs with one seed differ only in the seconds column. */
FM_API fm_status fm_metrics_write_csv(const char *path, const fm_metrics *m);
/* Reads a metrics.csv: exactly FM_METRICS_HEADER, then rows of 7 numbers
 * (epoch a positive integer, the others floats; "nan" is accepted for a
 * diverged loss).  A malformed file is FM_ERR_FORMAT naming the file, the
 * line and the problem; *out is then empty.  Free with fm_metrics_free. */
FM_API fm_status fm_metrics_read_csv(const char *path, fm_metrics *out);

/* Draws dir/loss.png (train and validation loss) and dir/acc.png (train and
 * validation accuracy) per epoch, with the best epoch (lowest val_loss)
 * marked.  `name` (may be NULL) goes into the titles. */
FM_API fm_status fm_report_plots(const char *dir, const char *name, const fm_metrics *m);
/* The same from dir/metrics.csv (what `fmhost report DIR` does); the
 * titles use the directory's last component as the model name. */
FM_API fm_status fm_report_plots_from_metrics(const char *dir);

/* ---- confusion matrix and per-class reports ---------------------------------- */

/* counts[true][predicted]. */
typedef struct fm_confusion {
    int64_t counts[FM_NUM_CLASSES][FM_NUM_CLASSES];
} fm_confusion;

FM_API void fm_confusion_clear(fm_confusion *c);
/* Counts n (label, prediction) pairs, each in [0, FM_NUM_CLASSES). */
FM_API void fm_confusion_add(fm_confusion *c, const uint8_t *labels, const uint8_t *preds, int n);
FM_API int64_t fm_confusion_total(const fm_confusion *c);
/* Trace / total (0 when empty). */
FM_API double fm_confusion_accuracy(const fm_confusion *c);

/* In all of the following, class_names holds FM_NUM_CLASSES names, or is
 * NULL for FashionMNIST's (fm_class_name). */

/* A 10×10 heat map (white to blue by count) with the count in each cell,
 * true classes down the left, predicted classes along the bottom (slanted),
 * and a title (NULL: "Confusion matrix (accuracy 91.78%)"). */
FM_API fm_status fm_report_confusion_png(const char *path, const char *title,
                                         const fm_confusion *c,
                                         const char *const *class_names);
/* Header "true\predicted,<names...>", then one row per true class: its name
 * and the 10 counts. */
FM_API fm_status fm_report_confusion_csv(const char *path, const fm_confusion *c,
                                         const char *const *class_names);
/* Header "class,support,accuracy,most_confused_with,confused_count": per true
 * class the number of images, the fraction predicted right (recall, "%.4f"),
 * and the most frequent wrong prediction with its count (the lowest class
 * index on ties; empty and 0 when the class has no mistakes). */
FM_API fm_status fm_report_per_class_csv(const char *path, const fm_confusion *c,
                                         const char *const *class_names);

/* scikit-learn's classification_report(y_true, y_pred, target_names=...,
 * digits=digits) for the same predictions, character for character
 * (precision, recall and f1-score are 0 when undefined, as with
 * zero_division=0).  Returns a malloc'ed string; the caller frees it. */
FM_API char *fm_report_classification_text(const fm_confusion *c,
                                           const char *const *class_names, int digits);
/* The same with digits=4, written to path. */
FM_API fm_status fm_report_classification(const char *path, const fm_confusion *c,
                                          const char *const *class_names);

/* ---- the worst mistakes ------------------------------------------------------------ */

/* A sheet of up to grid×grid (grid <= 0: 8) misclassified images, the most
 * confident mistakes first (ties: earlier image first), each captioned
 * "true → predicted" and "(confidence)"; 40 + 200·grid pixels wide, with
 * only as many rows of 170 pixels as needed.  Image i of the n evaluated is
 * images[k*784 ..] with label labels[k], where k = index ? index[i] : i;
 * pred[i] and confidence[i] are the model's answer for it.  With no mistakes
 * the sheet says so. */
FM_API fm_status fm_report_errors_png(const char *path, const uint8_t *images /* [N, 28, 28] */,
                                      const uint8_t *labels /* [N] */,
                                      const uint32_t *index /* [n] or NULL */,
                                      const uint8_t *pred /* [n] */,
                                      const float *confidence /* [n] */, int n, int grid,
                                      const char *const *class_names);

/* ---- summary.json ---------------------------------------------------------------- */

/* What one run did.  Key/value arrays hold pairs: kv[2*i] = key, kv[2*i+1]
 * = value; values that read as numbers or true/false are written as JSON
 * numbers or booleans, the rest as strings.  NaN doubles become null. */
typedef struct fm_summary {
    const char *model;            /* plugin name, "rescnn" */
    const char *plugin_path;      /* may be NULL */
    const char *const *hparams;   /* the plugin's hyper-parameters */
    int n_hparams;
    const char *const *options;   /* training options: optimizer, lr, batch, schedule, ... */
    int n_options;
    uint64_t seed;
    int epochs_run;
    int best_epoch;               /* 1-based */
    double val_loss, val_acc;     /* of the best epoch */
    double test_loss, test_acc;   /* of the best checkpoint */
    int64_t num_params;           /* trainable */
    double wall_seconds;
    const char *checkpoint;       /* path of the best weights; may be NULL */
    const char *kernels;          /* kernel set of the run; NULL: the set in use */
    const char *precision;        /* "fp32" or "bf16" (fm_graph.h); NULL: omitted */
    const char *status;           /* how training ended (fm_run_status_name); NULL: omitted */
} fm_summary;

/* Writes s as a JSON object (indented, keys in a fixed order) with
 * "fmhost_version": FM_VERSION_STRING and "kernels". */
FM_API fm_status fm_summary_write(const char *path, const fm_summary *s);

#ifdef __cplusplus
}
#endif
#endif /* FM_REPORT_H */
