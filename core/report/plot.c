/* plot.c — PLplot sessions (one stream per PNG, under a lock) and line charts.
 *
 * PLplot keeps global state (the current stream, the driver table) and calls
 * exit() on errors it cannot recover from, such as a device it does not know
 * or an output file it cannot open.  So every plot runs under one lock, in a
 * stream of its own made with plmkstrm and ended with plend1, and the two
 * fatal cases are ruled out before plinit: the device is looked up first,
 * and the temporary output file is created by us before PLplot opens it.
 */
#include "plot_internal.h"

#include <math.h>
#include <plplot.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fm/fm_io.h"
#include "fm/fm_report.h"

static pthread_mutex_t plot_lock = PTHREAD_MUTEX_INITIALIZER;

/* matplotlib's tab10: distinct, readable on white, familiar to ML readers. */
static const unsigned char palette[FM_PLOT_N_SERIES][3] = {
    {31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},   {148, 103, 189},
    {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
};

static bool have_pngcairo(void)
{
    static int known;  /* 0 not looked up, 1 present, -1 absent; under plot_lock */
    if (known == 0) {
        /* plgDevs fills arrays the caller provides, through pointers to them. */
        const char *menu[256], *names[256];
        const char **menu_p = menu, **names_p = names;
        int n = 256;
        plgDevs(&menu_p, &names_p, &n);
        known = -1;
        for (int i = 0; i < n; i++)
            if (names[i] && strcmp(names[i], "pngcairo") == 0)
                known = 1;
    }
    return known == 1;
}

fm_status fm_plot_begin(fm_plot *p, const char *path, int width, int height)
{
    FM_ASSERT(p != NULL && path != NULL && width > 0 && height > 0);
    memset(p, 0, sizeof *p);
    p->path = path;
    p->width = width;
    p->height = height;
    pthread_mutex_lock(&plot_lock);
    if (!have_pngcairo()) {
        pthread_mutex_unlock(&plot_lock);
        return fm_error_set(FM_ERR_IO,
                            "cannot draw %s: PLplot's pngcairo device is not available "
                            "(apt-get install plplot-driver-cairo)",
                            path);
    }
    FILE *f = fm_atomic_open(path, p->tmp, sizeof p->tmp);
    if (f == NULL) {
        pthread_mutex_unlock(&plot_lock);
        return fm_error_status();
    }
    fclose(f);

    PLINT prev, strm;
    plgstrm(&prev);
    plmkstrm(&strm);
    p->prev_stream = prev;
    p->stream = strm;
    plsdev("pngcairo");
    plsfnam(p->tmp);
    plspage(0.0, 0.0, width, height, 0, 0);
    plscmap0n(16);
    plscol0(FM_PLOT_WHITE, 255, 255, 255);
    plscol0(FM_PLOT_BLACK, 0, 0, 0);
    for (int i = 0; i < FM_PLOT_N_SERIES; i++)
        plscol0(FM_PLOT_SERIES + i, palette[i][0], palette[i][1], palette[i][2]);
    plscol0(FM_PLOT_GRID, 225, 225, 225);
    plscol0(FM_PLOT_DARK, 90, 90, 90);
    plinit();
    pladv(0);
    return FM_OK;
}

/* PLplot ignores cairo's write errors (a full disk), so the file is checked
 * to end with the PNG's closing IEND chunk before it replaces anything. */
static bool png_complete(const char *path)
{
    static const unsigned char iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};
    unsigned char tail[12];
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    bool ok = fseek(f, -12, SEEK_END) == 0 && fread(tail, 1, 12, f) == 12 &&
              memcmp(tail, iend, 12) == 0;
    fclose(f);
    return ok;
}

fm_status fm_plot_end(fm_plot *p)
{
    plend1();
    plsstrm(p->prev_stream);
    pthread_mutex_unlock(&plot_lock);
    if (!png_complete(p->tmp)) {
        fm_atomic_abort(NULL, p->tmp);
        return fm_error_set(FM_ERR_IO,
                            "cannot write %s: PLplot produced an incomplete PNG (disk full?)",
                            p->path);
    }
    return fm_file_commit(p->tmp, p->path);
}

void fm_plot_chr(const fm_plot *p, double rel)
{
    /* PLplot's default height is proportional to the mean page side. */
    plschr(0.0, rel * 825.0 / (0.5 * (p->width + p->height)));
}

void fm_plot_escape(const char *s, char *out, size_t len)
{
    FM_ASSERT(out != NULL && len > 0);
    size_t j = 0;
    for (const char *c = s ? s : ""; *c && j + 2 < len; c++) {
        if (*c == '#')
            out[j++] = '#';
        out[j++] = *c;
    }
    out[j] = '\0';
}

/* ---- line charts ------------------------------------------------------------- */

/* A tick step from 1, 2, 5 × 10^k giving at most ~10 ticks. */
static double nice_step(double range)
{
    double raw = range / 10.0;
    double mag = pow(10.0, floor(log10(raw)));
    double f = raw / mag;
    return (f <= 1.0 ? 1.0 : f <= 2.0 ? 2.0 : f <= 5.0 ? 5.0 : 10.0) * mag;
}

/* The legend goes in the inside corner that hides the fewest data points:
 * loss curves fall (free top-right), accuracy curves rise (free bottom-right). */
static PLINT legend_corner(const double *x, const double *const *ys, int n_series, int n_points,
                           double xmin, double xmax, double ymin, double ymax, int n_entries)
{
    const PLINT corners[4] = {
        PL_POSITION_TOP | PL_POSITION_RIGHT,
        PL_POSITION_BOTTOM | PL_POSITION_RIGHT,
        PL_POSITION_TOP | PL_POSITION_LEFT,
        PL_POSITION_BOTTOM | PL_POSITION_LEFT,
    };
    double w = 0.38, h = fmin(0.9, 0.06 * n_entries + 0.06);
    int best = 0, best_hits = INT32_MAX;
    for (int c = 0; c < 4; c++) {
        bool right = corners[c] & PL_POSITION_RIGHT, top = corners[c] & PL_POSITION_TOP;
        int hits = 0;
        for (int s = 0; s < n_series; s++)
            for (int i = 0; i < n_points; i++) {
                if (!isfinite(x[i]) || !isfinite(ys[s][i]))
                    continue;
                double u = (x[i] - xmin) / (xmax - xmin), v = (ys[s][i] - ymin) / (ymax - ymin);
                bool in_x = right ? u > 1.0 - w : u < w;
                bool in_y = top ? v > 1.0 - h : v < h;
                hits += in_x && in_y;
            }
        if (hits < best_hits) {
            best_hits = hits;
            best = c;
        }
    }
    return corners[best] | PL_POSITION_INSIDE | PL_POSITION_VIEWPORT;
}

/* Draws the finite stretches of one series as lines, with a dot per point. */
static void draw_series(const double *x, const double *y, int n)
{
    double *px = fm_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    double *py = fm_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    int k = 0;
    for (int i = 0; i <= n; i++) {
        bool ok = i < n && isfinite(x[i]) && isfinite(y[i]);
        if (ok) {
            px[k] = x[i];
            py[k] = y[i];
            k++;
            continue;
        }
        if (k > 1) {
            plwidth(2.2);
            plline(k, px, py);
        }
        if (k > 0 && n <= 60) {
            plwidth(1.0);
            plssym(0.0, 0.7);
            plpoin(k, px, py, 17);
        }
        k = 0;
    }
    free(px);
    free(py);
}

fm_status fm_report_curves(const char *path, const char *title, const char *xlabel,
                           const char *ylabel, const double *x, const double *const *ys,
                           const char *const *labels, int n_series, int n_points, double mark_x,
                           const char *mark_label)
{
    FM_ASSERT(path != NULL && x != NULL && ys != NULL);
    if (n_series < 1 || n_points < 1)
        return fm_error_set(FM_ERR_ARG, "cannot draw %s: %d series of %d points", path, n_series,
                            n_points);
    for (int s = 0; s < n_series; s++)
        FM_ASSERT(ys[s] != NULL);
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    bool x_integral = true;
    for (int i = 0; i < n_points; i++) {
        if (!isfinite(x[i]))
            continue;
        for (int s = 0; s < n_series; s++) {
            double y = ys[s][i];
            if (!isfinite(y))
                continue;
            xmin = fmin(xmin, x[i]);
            xmax = fmax(xmax, x[i]);
            ymin = fmin(ymin, y);
            ymax = fmax(ymax, y);
            x_integral = x_integral && x[i] == floor(x[i]);
        }
    }
    if (!(xmin <= xmax))
        return fm_error_set(FM_ERR_ARG, "cannot draw %s: no finite data points", path);
    bool mark = isfinite(mark_x);
    if (mark) {
        xmin = fmin(xmin, mark_x);
        xmax = fmax(xmax, mark_x);
    }
    if (xmax == xmin) {
        xmin -= 1.0;
        xmax += 1.0;
    }
    if (ymax == ymin) {
        double d = fmax(fabs(ymax) * 0.05, 0.05);
        ymin -= d;
        ymax += d;
    }
    double xpad = (xmax - xmin) * 0.03, ypad = (ymax - ymin) * 0.07;
    double x0 = xmin - xpad, x1 = xmax + xpad, y0 = ymin - ypad, y1 = ymax + ypad;
    double xtick = x_integral && xmax - xmin >= 1.0 ? fmax(1.0, nice_step(xmax - xmin)) : 0.0;

    int n_entries = n_series + (mark ? 1 : 0);
    char(*text)[160] = fm_xcalloc((size_t)n_entries, sizeof *text);
    const char **text_ptr = fm_xcalloc((size_t)n_entries, sizeof(char *));
    PLINT *opts = fm_xcalloc((size_t)n_entries, sizeof(PLINT));
    PLINT *colors = fm_xcalloc((size_t)n_entries, sizeof(PLINT));
    PLINT *styles = fm_xcalloc((size_t)n_entries, sizeof(PLINT));
    PLFLT *widths = fm_xcalloc((size_t)n_entries, sizeof(PLFLT));
    PLINT *text_colors = fm_xcalloc((size_t)n_entries, sizeof(PLINT));
    for (int s = 0; s < n_entries; s++) {
        bool is_mark = s == n_series;
        const char *label = is_mark ? (mark_label ? mark_label : "best")
                            : labels && labels[s] ? labels[s]
                                                  : "";
        fm_plot_escape(label, text[s], sizeof text[s]);
        text_ptr[s] = text[s];
        opts[s] = PL_LEGEND_LINE;
        colors[s] = is_mark ? FM_PLOT_DARK : FM_PLOT_SERIES + s % FM_PLOT_N_SERIES;
        styles[s] = is_mark ? 2 : 1;
        widths[s] = is_mark ? 1.5 : 2.2;
        text_colors[s] = FM_PLOT_BLACK;
    }

    fm_plot p;
    fm_status st = fm_plot_begin(&p, path, 1000, 650);
    if (st == FM_OK) {
        char buf[512];
        plvpor(0.09, 0.97, 0.12, 0.90);
        plwind(x0, x1, y0, y1);
        fm_plot_chr(&p, 1.0);
        plcol0(FM_PLOT_GRID);
        plwidth(1.0);
        plbox("g", xtick, 0, "g", 0.0, 0);
        plcol0(FM_PLOT_BLACK);
        plbox("bcnst", xtick, xtick > 0 ? 1 : 0, "bcnstv", 0.0, 0);

        fm_plot_chr(&p, 1.15);
        fm_plot_escape(xlabel, buf, sizeof buf);
        plmtex("b", 3.0, 0.5, 0.5, buf);
        fm_plot_escape(ylabel, buf, sizeof buf);
        plmtex("l", 3.8, 0.5, 0.5, buf);
        size_t title_len = title ? strlen(title) : 0;
        fm_plot_chr(&p, title_len > 60 ? fmax(0.8, 1.5 * 60.0 / (double)title_len) : 1.5);
        fm_plot_escape(title, buf, sizeof buf);
        plmtex("t", 1.6, 0.5, 0.5, buf);
        fm_plot_chr(&p, 1.0);

        if (mark) {
            double mx[2] = {mark_x, mark_x}, my[2] = {y0, y1};
            plcol0(FM_PLOT_DARK);
            pllsty(2);
            plwidth(1.5);
            plline(2, mx, my);
            pllsty(1);
        }
        for (int s = 0; s < n_series; s++) {
            plcol0(FM_PLOT_SERIES + s % FM_PLOT_N_SERIES);
            draw_series(x, ys[s], n_points);
        }
        if (labels != NULL || mark) {
            PLFLT lw, lh;
            PLINT pos = legend_corner(x, ys, n_series, n_points, x0, x1, y0, y1, n_entries);
            plwidth(1.0);
            pllegend(&lw, &lh, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, pos, 0.02, 0.03,
                     0.08, FM_PLOT_WHITE, FM_PLOT_GRID, 1, 0, 0, n_entries, opts, 1.0, 1.0, 2.0,
                     0.0, text_colors, text_ptr, NULL, NULL, NULL, NULL, colors, styles, widths, NULL,
                     NULL, NULL, NULL);
        }
        st = fm_plot_end(&p);
    }
    free(text);
    free(text_ptr);
    free(opts);
    free(colors);
    free(styles);
    free(widths);
    free(text_colors);
    return st;
}
