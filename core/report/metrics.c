/* metrics.c — metrics.csv: writing, hostile-input reading, loss/accuracy plots. */
#include "fm/fm_report.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/fm_io.h"

#define METRICS_MAX_BYTES (64u << 20)
#define METRICS_FIELDS 7

void fm_metrics_append(fm_metrics *m, const fm_metrics_row *row)
{
    FM_ASSERT(m != NULL && row != NULL);
    /* Doubling on powers of two: n alone tells the capacity. */
    if ((m->n & (m->n - 1)) == 0)
        m->rows = fm_xrealloc(m->rows, (size_t)(m->n ? 2 * m->n : 1) * sizeof *m->rows);
    m->rows[m->n++] = *row;
}

void fm_metrics_free(fm_metrics *m)
{
    if (m == NULL)
        return;
    free(m->rows);
    m->rows = NULL;
    m->n = 0;
}

int fm_metrics_best(const fm_metrics *m)
{
    FM_ASSERT(m != NULL);
    int best = -1;
    for (int i = 0; i < m->n; i++)
        if (!isnan(m->rows[i].val_loss) &&
            (best < 0 || m->rows[i].val_loss < m->rows[best].val_loss))
            best = i;
    return best;
}

fm_status fm_metrics_write_csv(const char *path, const fm_metrics *m)
{
    FM_ASSERT(path != NULL && m != NULL);
    char tmp[PATH_MAX + 64];
    FILE *f = fm_atomic_open(path, tmp, sizeof tmp);
    if (f == NULL)
        return fm_error_status();
    fputs(FM_METRICS_HEADER "\n", f);
    for (int i = 0; i < m->n; i++) {
        const fm_metrics_row *r = &m->rows[i];
        fprintf(f, "%d,%.6f,%.6f,%.6f,%.6f,%.6g,%.3f\n", r->epoch, r->train_loss, r->train_acc,
                r->val_loss, r->val_acc, r->lr, r->seconds);
    }
    return fm_atomic_commit(f, tmp, path);
}

static bool parse_double(const char *s, double *out)
{
    if (*s == '\0')
        return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end != '\0' || (errno == ERANGE && isinf(v)))
        return false;
    *out = v;
    return true;
}

/* Parses one data line (NUL-terminated, no newline) into row. */
static fm_status parse_row(const char *path, int line_no, char *line, fm_metrics_row *row)
{
    static const char *const names[METRICS_FIELDS] = {
        "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
    };
    char *field[METRICS_FIELDS];
    int n = 0;
    for (char *p = line;; p++) {
        char *comma = strchr(p, ',');
        if (n < METRICS_FIELDS)
            field[n] = p;
        n++;
        if (comma == NULL)
            break;
        *comma = '\0';
        p = comma;
    }
    if (n != METRICS_FIELDS)
        return fm_error_set(FM_ERR_FORMAT, "%s:%d: %d comma-separated values, expected %d (%s)",
                            path, line_no, n, METRICS_FIELDS, FM_METRICS_HEADER);
    char *end;
    errno = 0;
    long epoch = strtol(field[0], &end, 10);
    if (field[0][0] == '\0' || *end != '\0' || errno != 0 || epoch < 1 || epoch > 1000000)
        return fm_error_set(FM_ERR_FORMAT, "%s:%d: epoch \"%.40s\" is not a positive integer",
                            path, line_no, field[0]);
    row->epoch = (int)epoch;
    double *dst[METRICS_FIELDS - 1] = {&row->train_loss, &row->train_acc, &row->val_loss,
                                       &row->val_acc,    &row->lr,        &row->seconds};
    for (int i = 1; i < METRICS_FIELDS; i++)
        if (!parse_double(field[i], dst[i - 1]))
            return fm_error_set(FM_ERR_FORMAT, "%s:%d: %s \"%.40s\" is not a number", path,
                                line_no, names[i], field[i]);
    return FM_OK;
}

fm_status fm_metrics_read_csv(const char *path, fm_metrics *out)
{
    FM_ASSERT(path != NULL && out != NULL);
    memset(out, 0, sizeof *out);
    char *text;
    size_t len;
    fm_status st = fm_file_read_all(path, METRICS_MAX_BYTES, &text, &len);
    if (st != FM_OK)
        return st;
    if (memchr(text, '\0', len) != NULL) {
        free(text);
        return fm_error_set(FM_ERR_FORMAT, "%s: binary data in a CSV file", path);
    }
    int line_no = 0;
    char *p = text;
    while (st == FM_OK && *p) {
        char *nl = strchr(p, '\n');
        char *next = nl ? nl + 1 : p + strlen(p);
        if (nl)
            *nl = '\0';
        size_t n = strlen(p);
        if (n > 0 && p[n - 1] == '\r')
            p[--n] = '\0';
        line_no++;
        if (line_no == 1) {
            if (strcmp(p, FM_METRICS_HEADER) != 0)
                st = fm_error_set(FM_ERR_FORMAT,
                                  "%s:1: header is \"%.80s\", expected \"%s\": not a metrics.csv",
                                  path, p, FM_METRICS_HEADER);
        } else if (n > 0) {
            fm_metrics_row row;
            st = parse_row(path, line_no, p, &row);
            if (st == FM_OK)
                fm_metrics_append(out, &row);
        }
        p = next;
    }
    if (st == FM_OK && line_no == 0)
        st = fm_error_set(FM_ERR_FORMAT, "%s: empty file, expected the header \"%s\"", path,
                          FM_METRICS_HEADER);
    free(text);
    if (st != FM_OK)
        fm_metrics_free(out);
    return st;
}

fm_status fm_report_plots(const char *dir, const char *name, const fm_metrics *m)
{
    FM_ASSERT(dir != NULL && m != NULL);
    if (m->n == 0)
        return fm_error_set(FM_ERR_FORMAT, "%s: no epochs in the metrics, nothing to plot", dir);
    int n = m->n;
    double *x = fm_xmalloc((size_t)n * 5 * sizeof(double));
    double *tl = x + n, *vl = x + 2 * n, *ta = x + 3 * n, *va = x + 4 * n;
    for (int i = 0; i < n; i++) {
        x[i] = m->rows[i].epoch;
        tl[i] = m->rows[i].train_loss;
        vl[i] = m->rows[i].val_loss;
        ta[i] = m->rows[i].train_acc;
        va[i] = m->rows[i].val_acc;
    }
    int best = fm_metrics_best(m);
    double mark = best >= 0 ? x[best] : NAN;
    char mark_label[96] = "";
    if (best >= 0)
        snprintf(mark_label, sizeof mark_label, "best epoch %d (val loss %.4f)",
                 m->rows[best].epoch, m->rows[best].val_loss);
    const char *labels[2] = {"train", "validation"};
    char path[PATH_MAX], title[256];
    const char *prefix = name && *name ? name : "";
    const char *sep = name && *name ? ": " : "";

    const double *loss[2] = {tl, vl};
    snprintf(path, sizeof path, "%s/loss.png", dir);
    snprintf(title, sizeof title, "%s%sloss per epoch", prefix, sep);
    fm_status st = fm_report_curves(path, title, "Epoch", "Cross-entropy loss", x, loss, labels, 2,
                                    n, mark, mark_label);
    if (st == FM_OK) {
        const double *acc[2] = {ta, va};
        snprintf(path, sizeof path, "%s/acc.png", dir);
        snprintf(title, sizeof title, "%s%saccuracy per epoch", prefix, sep);
        st = fm_report_curves(path, title, "Epoch", "Accuracy", x, acc, labels, 2, n, mark,
                              mark_label);
    }
    free(x);
    return st;
}

fm_status fm_report_plots_from_metrics(const char *dir)
{
    FM_ASSERT(dir != NULL);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    fm_metrics m;
    fm_status st = fm_metrics_read_csv(path, &m);
    if (st != FM_OK)
        return st;
    if (m.n == 0) {
        fm_metrics_free(&m);
        return fm_error_set(FM_ERR_FORMAT, "%s: no epochs recorded, nothing to plot", path);
    }
    /* The model's name is the directory's: results/<model>. */
    char name[256];
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    size_t start = n;
    while (start > 0 && dir[start - 1] != '/')
        start--;
    snprintf(name, sizeof name, "%.*s", (int)(n - start), dir + start);
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        name[0] = '\0';
    st = fm_report_plots(dir, name, &m);
    fm_metrics_free(&m);
    return st;
}
