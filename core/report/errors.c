/* errors.c — a contact sheet of the most confident mistakes. */
#include "fm/fm_report.h"

#include <math.h>
#include <plplot.h>
#include <stdlib.h>
#include <string.h>

#include "plot_internal.h"

/* Pixels per grid cell: the image scaled 4× (112 px) with two caption lines
 * under it, wide enough for "T-shirt/top → Ankle boot". */
#define ERR_CELL_W 200
#define ERR_CELL_H 170
#define ERR_IMG 112
#define ERR_MARGIN 20
#define ERR_TITLE 70

typedef struct mistake {
    int i;        /* position among the n evaluated images */
    float conf;
} mistake;

static int by_confidence(const void *a, const void *b)
{
    const mistake *x = a, *y = b;
    if (x->conf != y->conf)
        return x->conf > y->conf ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static const char *class_name(const char *const *names, int k)
{
    return names ? names[k] : fm_class_name(k);
}

fm_status fm_report_errors_png(const char *path, const uint8_t *images, const uint8_t *labels,
                               const uint32_t *index, const uint8_t *pred,
                               const float *confidence, int n, int grid,
                               const char *const *class_names)
{
    FM_ASSERT(path != NULL && n >= 0);
    FM_ASSERT(n == 0 || (images && labels && pred && confidence));
    if (grid <= 0)
        grid = 8;
    FM_ASSERT(grid <= 64);

    mistake *list = fm_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *list);
    int n_wrong = 0;
    for (int i = 0; i < n; i++) {
        uint32_t k = index ? index[i] : (uint32_t)i;
        FM_ASSERT(labels[k] < FM_NUM_CLASSES && pred[i] < FM_NUM_CLASSES);
        if (labels[k] != pred[i])
            list[n_wrong++] = (mistake){i, isnan(confidence[i]) ? 0.0f : confidence[i]};
    }
    qsort(list, (size_t)n_wrong, sizeof *list, by_confidence);
    int shown = n_wrong < grid * grid ? n_wrong : grid * grid;

    int width = 2 * ERR_MARGIN + grid * ERR_CELL_W;
    /* Only as many rows as there are mistakes to show. */
    int rows = shown > 0 ? (shown + grid - 1) / grid : 1;
    int height = ERR_TITLE + ERR_MARGIN + rows * ERR_CELL_H;
    fm_plot p;
    fm_status st = fm_plot_begin(&p, path, width, height);
    if (st != FM_OK) {
        free(list);
        return st;
    }
    PLFLT pos[2] = {0.0, 1.0}, ramp[2] = {0.0, 1.0};
    plscmap1n(256);
    plscmap1l(1, 2, pos, ramp, ramp, ramp, NULL);
    plvpor(0.0, 1.0, 0.0, 1.0);
    plwind(0.0, width, 0.0, height);

    char buf[256], a[96], b[96];
    if (n_wrong == 0)
        snprintf(buf, sizeof buf, "No misclassified images among %d", n);
    else
        snprintf(buf, sizeof buf, "Most confident mistakes: %d of %d misclassified images (of %d)",
                 shown, n_wrong, n);
    plcol0(FM_PLOT_BLACK);
    fm_plot_chr(&p, 1.4);
    plptex(width / 2.0, height - ERR_TITLE / 2.0, 1.0, 0.0, 0.5, buf);

    PLFLT **img = fm_xmalloc(FM_IMAGE_W * sizeof *img);
    PLFLT *cells = fm_xmalloc(FM_IMAGE_PIXELS * sizeof *cells);
    for (int x = 0; x < FM_IMAGE_W; x++)
        img[x] = cells + x * FM_IMAGE_H;
    for (int s = 0; s < shown; s++) {
        int i = list[s].i;
        uint32_t k = index ? index[i] : (uint32_t)i;
        const uint8_t *px = images + (size_t)k * FM_IMAGE_PIXELS;
        /* plimage wants [x][y] with y upwards; the image is row-major, top row first. */
        for (int y = 0; y < FM_IMAGE_H; y++)
            for (int x = 0; x < FM_IMAGE_W; x++)
                img[x][FM_IMAGE_H - 1 - y] = px[y * FM_IMAGE_W + x];
        int row = s / grid, col = s % grid;
        double cx = ERR_MARGIN + (col + 0.5) * ERR_CELL_W;
        double top = height - ERR_TITLE - row * ERR_CELL_H;
        double ix0 = cx - ERR_IMG / 2.0, iy1 = top - 6, iy0 = iy1 - ERR_IMG;
        plimage((PLFLT_MATRIX)img, FM_IMAGE_W, FM_IMAGE_H, ix0, ix0 + ERR_IMG, iy0, iy1, 0.0,
                255.0, ix0, ix0 + ERR_IMG, iy0, iy1);

        fm_plot_escape(class_name(class_names, labels[k]), a, sizeof a);
        fm_plot_escape(class_name(class_names, pred[i]), b, sizeof b);
        plcol0(FM_PLOT_BLACK);
        fm_plot_chr(&p, 0.75);
        snprintf(buf, sizeof buf, "%s → %s", a, b);
        plptex(cx, iy0 - 13, 1.0, 0.0, 0.5, buf);
        plcol0(FM_PLOT_DARK);
        snprintf(buf, sizeof buf, "(%.2f)", confidence[i]);
        plptex(cx, iy0 - 32, 1.0, 0.0, 0.5, buf);
    }
    free(cells);
    free(img);
    free(list);
    return fm_plot_end(&p);
}
