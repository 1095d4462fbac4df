/* confusion.c — the confusion matrix, scikit-learn's classification report,
 * per-class tables and the confusion-matrix heat map. */
#include "fm/fm_report.h"

#include <limits.h>
#include <math.h>
#include <plplot.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "fm/fm_io.h"
#include "plot_internal.h"

#define K FM_NUM_CLASSES

void fm_confusion_clear(fm_confusion *c)
{
    FM_ASSERT(c != NULL);
    memset(c, 0, sizeof *c);
}

void fm_confusion_add(fm_confusion *c, const uint8_t *labels, const uint8_t *preds, int n)
{
    FM_ASSERT(c != NULL && n >= 0 && (n == 0 || (labels != NULL && preds != NULL)));
    for (int i = 0; i < n; i++) {
        FM_ASSERT(labels[i] < K && preds[i] < K);
        c->counts[labels[i]][preds[i]]++;
    }
}

int64_t fm_confusion_total(const fm_confusion *c)
{
    FM_ASSERT(c != NULL);
    int64_t total = 0;
    for (int t = 0; t < K; t++)
        for (int p = 0; p < K; p++)
            total += c->counts[t][p];
    return total;
}

double fm_confusion_accuracy(const fm_confusion *c)
{
    int64_t total = fm_confusion_total(c), right = 0;
    for (int k = 0; k < K; k++)
        right += c->counts[k][k];
    return total > 0 ? (double)right / (double)total : 0.0;
}

static const char *class_name(const char *const *names, int k)
{
    return names ? names[k] : fm_class_name(k);
}

/* ---- classification report ------------------------------------------------------ */

/* numpy's float64 sum (pairwise_sum for n <= 128): eight running sums
 * combined as a tree, then the tail.  Averaging in the same order makes
 * "macro avg" round exactly as scikit-learn's does. */
static double numpy_sum(const double *a, int n)
{
    FM_ASSERT(n <= 128);
    if (n < 8) {
        double res = 0.0;
        for (int i = 0; i < n; i++)
            res += a[i];
        return res;
    }
    double r[8];
    for (int j = 0; j < 8; j++)
        r[j] = a[j];
    int i;
    for (i = 8; i < n - n % 8; i += 8)
        for (int j = 0; j < 8; j++)
            r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++)
        res += a[i];
    return res;
}

typedef struct strbuf {
    char *s;
    size_t len, cap;
} strbuf;

__attribute__((format(printf, 2, 3))) static void sb_printf(strbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        FM_ASSERT(n >= 0);
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = 2 * b->cap + (size_t)n + 1;
        b->s = fm_xrealloc(b->s, b->cap);
    }
}

char *fm_report_classification_text(const fm_confusion *c, const char *const *class_names,
                                    int digits)
{
    FM_ASSERT(c != NULL && digits >= 0 && digits <= 20);
    double prec[K], rec[K], f1[K];
    int64_t support[K], total = 0, right = 0;
    for (int k = 0; k < K; k++) {
        int64_t tp = c->counts[k][k], true_sum = 0, pred_sum = 0;
        for (int j = 0; j < K; j++) {
            true_sum += c->counts[k][j];
            pred_sum += c->counts[j][k];
        }
        /* zero_division=0, and f1 = 2tp / (true + pred) as scikit-learn >= 1.3
         * computes it. */
        prec[k] = pred_sum ? (double)tp / (double)pred_sum : 0.0;
        rec[k] = true_sum ? (double)tp / (double)true_sum : 0.0;
        f1[k] = true_sum + pred_sum ? (double)(2 * tp) / (double)(true_sum + pred_sum) : 0.0;
        support[k] = true_sum;
        total += true_sum;
        right += tp;
    }

    /* scikit-learn: width = max(len(longest name), len("weighted avg"), digits);
     * head_fmt = "{:>{width}s} " + " {:>9}" * 4;
     * row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n". */
    int width = (int)strlen("weighted avg");
    for (int k = 0; k < K; k++)
        width = (int)fmax(width, (double)strlen(class_name(class_names, k)));
    if (digits > width)
        width = digits;

    strbuf b = {fm_xmalloc(1024), 0, 1024};
    sb_printf(&b, "%*s  %9s %9s %9s %9s\n\n", width, "", "precision", "recall", "f1-score",
              "support");
    for (int k = 0; k < K; k++)
        sb_printf(&b, "%*s  %9.*f %9.*f %9.*f %9lld\n", width, class_name(class_names, k), digits,
                  prec[k], digits, rec[k], digits, f1[k], (long long)support[k]);
    sb_printf(&b, "\n");

    double accuracy = total ? (double)(2 * right) / (double)(2 * total) : 0.0;
    sb_printf(&b, "%*s  %9s %9s %9.*f %9lld\n", width, "accuracy", "", "", digits, accuracy,
              (long long)total);

    sb_printf(&b, "%*s  %9.*f %9.*f %9.*f %9lld\n", width, "macro avg", digits,
              numpy_sum(prec, K) / K, digits, numpy_sum(rec, K) / K, digits, numpy_sum(f1, K) / K,
              (long long)total);

    double wp[K], wr[K], wf[K];
    for (int k = 0; k < K; k++) {
        wp[k] = prec[k] * (double)support[k];
        wr[k] = rec[k] * (double)support[k];
        wf[k] = f1[k] * (double)support[k];
    }
    double w = (double)total;
    sb_printf(&b, "%*s  %9.*f %9.*f %9.*f %9lld\n", width, "weighted avg", digits,
              total ? numpy_sum(wp, K) / w : 0.0, digits, total ? numpy_sum(wr, K) / w : 0.0,
              digits, total ? numpy_sum(wf, K) / w : 0.0, (long long)total);
    return b.s;
}

fm_status fm_report_classification(const char *path, const fm_confusion *c,
                                   const char *const *class_names)
{
    FM_ASSERT(path != NULL);
    char *text = fm_report_classification_text(c, class_names, 4);
    fm_status st = fm_file_write_atomic(path, text, strlen(text));
    free(text);
    return st;
}

/* ---- CSV tables ---------------------------------------------------------------------- */

fm_status fm_report_confusion_csv(const char *path, const fm_confusion *c,
                                  const char *const *class_names)
{
    FM_ASSERT(path != NULL && c != NULL);
    char tmp[PATH_MAX + 64];
    FILE *f = fm_atomic_open(path, tmp, sizeof tmp);
    if (f == NULL)
        return fm_error_status();
    fputs("true\\predicted", f);
    for (int k = 0; k < K; k++) {
        fputc(',', f);
        fm_csv_write_field(f, class_name(class_names, k));
    }
    fputc('\n', f);
    for (int t = 0; t < K; t++) {
        fm_csv_write_field(f, class_name(class_names, t));
        for (int p = 0; p < K; p++)
            fprintf(f, ",%lld", (long long)c->counts[t][p]);
        fputc('\n', f);
    }
    return fm_atomic_commit(f, tmp, path);
}

fm_status fm_report_per_class_csv(const char *path, const fm_confusion *c,
                                  const char *const *class_names)
{
    FM_ASSERT(path != NULL && c != NULL);
    char tmp[PATH_MAX + 64];
    FILE *f = fm_atomic_open(path, tmp, sizeof tmp);
    if (f == NULL)
        return fm_error_status();
    fputs("class,support,accuracy,most_confused_with,confused_count\n", f);
    for (int t = 0; t < K; t++) {
        int64_t support = 0;
        int worst = -1;
        for (int p = 0; p < K; p++) {
            support += c->counts[t][p];
            if (p != t && c->counts[t][p] > 0 &&
                (worst < 0 || c->counts[t][p] > c->counts[t][worst]))
                worst = p;
        }
        fm_csv_write_field(f, class_name(class_names, t));
        fprintf(f, ",%lld,%.4f,", (long long)support,
                support ? (double)c->counts[t][t] / (double)support : 0.0);
        fm_csv_write_field(f, worst >= 0 ? class_name(class_names, worst) : "");
        fprintf(f, ",%lld\n", worst >= 0 ? (long long)c->counts[t][worst] : 0LL);
    }
    return fm_atomic_commit(f, tmp, path);
}

/* ---- heat map ------------------------------------------------------------------------ */

/* The page in pixels; world coordinates are pixels too (origin bottom left),
 * so slanted text keeps its angle. */
#define CM_W 900
#define CM_H 900
#define CM_LEFT 175
#define CM_BOTTOM 185
#define CM_TOP 80
#define CM_RIGHT 40

fm_status fm_report_confusion_png(const char *path, const char *title, const fm_confusion *c,
                                  const char *const *class_names)
{
    FM_ASSERT(path != NULL && c != NULL);
    int64_t max = 0;
    for (int t = 0; t < K; t++)
        for (int p = 0; p < K; p++)
            if (c->counts[t][p] > max)
                max = c->counts[t][p];
    char title_buf[256];
    if (title == NULL) {
        snprintf(title_buf, sizeof title_buf, "Confusion matrix (accuracy %.2f%%)",
                 100.0 * fm_confusion_accuracy(c));
        title = title_buf;
    }

    fm_plot p;
    fm_status st = fm_plot_begin(&p, path, CM_W, CM_H);
    if (st != FM_OK)
        return st;
    /* matplotlib's "Blues": white for 0, dark blue for the largest count. */
    PLFLT pos[3] = {0.0, 0.5, 1.0};
    PLFLT r[3] = {247 / 255.0, 107 / 255.0, 8 / 255.0};
    PLFLT g[3] = {251 / 255.0, 174 / 255.0, 48 / 255.0};
    PLFLT bl[3] = {255 / 255.0, 214 / 255.0, 107 / 255.0};
    plscmap1n(256);
    plscmap1l(1, 3, pos, r, g, bl, NULL);

    plvpor(0.0, 1.0, 0.0, 1.0);
    plwind(0.0, CM_W, 0.0, CM_H);
    double cell = fmin((double)(CM_W - CM_LEFT - CM_RIGHT) / K,
                       (double)(CM_H - CM_BOTTOM - CM_TOP) / K);
    double x0 = CM_LEFT + ((CM_W - CM_LEFT - CM_RIGHT) - K * cell) / 2, y_top = CM_H - CM_TOP, y0 = y_top - K * cell;
    char buf[256];

    for (int t = 0; t < K; t++) {
        for (int q = 0; q < K; q++) {
            double v = max > 0 ? (double)c->counts[t][q] / (double)max : 0.0;
            PLFLT cx[4] = {x0 + q * cell, x0 + (q + 1) * cell, x0 + (q + 1) * cell, x0 + q * cell};
            double top = y_top - t * cell;
            PLFLT cy[4] = {top, top, top - cell, top - cell};
            plcol1(v);
            plfill(4, cx, cy);
            plcol0(v > 0.5 ? FM_PLOT_WHITE : FM_PLOT_BLACK);
            fm_plot_chr(&p, 1.1);
            snprintf(buf, sizeof buf, "%lld", (long long)c->counts[t][q]);
            plptex(x0 + (q + 0.5) * cell, top - 0.5 * cell, 1.0, 0.0, 0.5, buf);
        }
    }
    /* Thin separators, then the frame. */
    plcol0(FM_PLOT_GRID);
    plwidth(0.8);
    for (int k = 1; k < K; k++) {
        PLFLT hx[2] = {x0, x0 + K * cell}, hy[2] = {y_top - k * cell, y_top - k * cell};
        PLFLT vx[2] = {x0 + k * cell, x0 + k * cell}, vy[2] = {y0, y_top};
        pljoin(hx[0], hy[0], hx[1], hy[1]);
        pljoin(vx[0], vy[0], vx[1], vy[1]);
    }
    plcol0(FM_PLOT_BLACK);
    plwidth(1.2);
    PLFLT fx[5] = {x0, x0 + K * cell, x0 + K * cell, x0, x0};
    PLFLT fy[5] = {y_top, y_top, y0, y0, y_top};
    plline(5, fx, fy);

    fm_plot_chr(&p, 1.15);
    for (int k = 0; k < K; k++) {
        fm_plot_escape(class_name(class_names, k), buf, sizeof buf);
        /* True classes: right-aligned left of their row. */
        plptex(x0 - 10, y_top - (k + 0.5) * cell, 1.0, 0.0, 1.0, buf);
        /* Predicted classes: slanted 45°, ending just below their column. */
        plptex(x0 + (k + 0.5) * cell + 4, y0 - 14, 1.0, 1.0, 1.0, buf);
    }
    fm_plot_chr(&p, 1.35);
    plptex(x0 + K * cell / 2, 28, 1.0, 0.0, 0.5, "Predicted label");
    plptex(32, y0 + K * cell / 2, 0.0, 1.0, 0.5, "True label");
    /* Long titles shrink rather than run off the page. */
    size_t title_len = strlen(title);
    fm_plot_chr(&p, title_len > 44 ? fmax(0.9, 1.6 * 44.0 / (double)title_len) : 1.6);
    fm_plot_escape(title, buf, sizeof buf);
    plptex(CM_W / 2.0, CM_H - CM_TOP / 2, 1.0, 0.0, 0.5, buf);
    return fm_plot_end(&p);
}
