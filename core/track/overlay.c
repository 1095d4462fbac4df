/* overlay.c — the validation curves of several runs on one plot, from the
 * epochs the store holds (`fmhost runs compare`, the dashboard). */
#include "fm/fm_track.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static fm_status draw(const char *path, const char *title, const char *ylabel,
                      const fm_track_run *runs, int n, bool acc)
{
    int points = 0;
    for (int i = 0; i < n; i++)
        for (int e = 0; e < runs[i].history.n; e++)
            if (runs[i].history.rows[e].epoch > points) points = runs[i].history.rows[e].epoch;
    if (points == 0)
        return fm_error_set(FM_ERR_ARG, "%s: none of the runs has a recorded epoch to plot", path);
    double *x = fm_xcalloc((size_t)points, sizeof *x);
    double **ys = fm_xcalloc((size_t)n, sizeof *ys);
    char **labels = fm_xcalloc((size_t)n, sizeof *labels);
    for (int p = 0; p < points; p++) x[p] = p + 1;
    for (int i = 0; i < n; i++) {
        ys[i] = fm_xmalloc((size_t)points * sizeof **ys);
        for (int p = 0; p < points; p++) ys[i][p] = NAN;
        for (int e = 0; e < runs[i].history.n; e++) {
            const fm_metrics_row *m = &runs[i].history.rows[e];
            if (m->epoch >= 1 && m->epoch <= points) ys[i][m->epoch - 1] = acc ? m->val_acc : m->val_loss;
        }
        labels[i] = fm_xmalloc(160);
        snprintf(labels[i], 160, "run %lld: %s %s", (long long)runs[i].id, runs[i].model,
                 runs[i].hparams ? runs[i].hparams : "");
    }
    fm_status st = fm_report_curves(path, title, "epoch", ylabel, x, (const double *const *)ys,
                                    (const char *const *)labels, n, points, NAN, NULL);
    for (int i = 0; i < n; i++) {
        free(ys[i]);
        free(labels[i]);
    }
    free(ys);
    free(labels);
    free(x);
    return st;
}

fm_status fm_track_plot_overlay(const char *path_acc, const char *path_loss,
                                const fm_track_run *runs, int n)
{
    fm_status st = FM_OK;
    if (path_acc)
        st = draw(path_acc, "Validation accuracy per epoch", "validation accuracy", runs, n, true);
    if (st == FM_OK && path_loss)
        st = draw(path_loss, "Validation loss per epoch", "validation loss", runs, n, false);
    return st;
}
