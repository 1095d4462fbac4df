/* overlay.c — the validation curves of several runs on one plot, from the
 * epochs the store holds (`fmhost runs compare`, the dashboard). */
#include "fm/fm_track.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "run 4: mlp lr=0.003 scheduler=constant": the run, its model and the
 * settings whose values differ among the runs (what tells the curves apart),
 * cut to the legend's width. */
static char *label_of(const fm_track_run *runs, int n, int i)
{
    const size_t cap = 64;  /* what the legend has room for */
    bool one_model = true;
    for (int j = 0; j < n; j++) one_model = one_model && !strcmp(runs[j].model, runs[0].model);
    char *s = fm_xmalloc(cap);
    size_t len = (size_t)snprintf(s, cap, "run %lld: %s", (long long)runs[i].id, runs[i].model);
    const fm_track_run *r = &runs[i];
    for (int k = 0; k < r->n_settings && len < cap - 1; k++) {
        const char *key = r->setting_key[k], *v = r->setting_value[k] ? r->setting_value[k] : "";
        /* Another model's hyper-parameters differ by nature: the model says it. */
        if (!strcmp(key, "out") || !strcmp(key, "data_dir") ||
            (!one_model && !strcmp(r->setting_kind[k], "hparam")))
            continue;
        bool differs = false;
        for (int j = 0; j < n && !differs; j++) {
            const char *w = fm_track_run_setting(&runs[j], key);
            differs = !w || strcmp(w, v) != 0;
        }
        if (!differs) continue;
        /* Numbers as recorded carry float32's digits: %g shows what was typed. */
        char *end;
        double d = strtod(v, &end);
        if (*v && !*end)
            len += (size_t)snprintf(s + len, cap - len, " %s=%g", key, d);
        else
            len += (size_t)snprintf(s + len, cap - len, " %s=%s", key, v);
    }
    return s;
}

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
        labels[i] = label_of(runs, n, i);
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
