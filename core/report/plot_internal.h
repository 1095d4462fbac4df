/* plot_internal.h — one PLplot session per PNG, shared by the report files. */
#ifndef FM_PLOT_INTERNAL_H
#define FM_PLOT_INTERNAL_H

#include <limits.h>

#include "fm/fm_base.h"

typedef struct fm_plot {
    const char *path;
    char tmp[PATH_MAX + 64];  /* PLplot writes here; renamed to path at the end */
    int prev_stream, stream;
    int width, height;        /* pixels */
} fm_plot;

/* Takes the process-wide PLplot lock, checks that the pngcairo device exists
 * and that the temporary file can be created, then opens a fresh PLplot
 * stream for a width×height pixel PNG with a white background, black
 * foreground and cmap0 entries 2.. set to a ten-colour palette (tab10).  The
 * page is advanced and ready to draw.  On failure nothing is left open. */
fm_status fm_plot_begin(fm_plot *p, const char *path, int width, int height);
/* Ends the stream (PLplot writes the PNG), restores the caller's stream,
 * releases the lock and renames the file into place. */
fm_status fm_plot_end(fm_plot *p);

/* Sets the character height to `rel` times that of a 1000×650 page at
 * scale 1 (about 15 px).  PLplot scales its default with the page size;
 * this keeps text the same size in pixels on pages of any size. */
void fm_plot_chr(const fm_plot *p, double rel);

/* Copies s into out doubling '#' (PLplot's text escape), truncating to fit. */
void fm_plot_escape(const char *s, char *out, size_t len);

/* cmap0 indices set by fm_plot_begin. */
enum {
    FM_PLOT_WHITE = 0,
    FM_PLOT_BLACK = 1,
    FM_PLOT_SERIES = 2,  /* 2..11: the palette */
    FM_PLOT_N_SERIES = 10,
    FM_PLOT_GRID = 12,   /* light grey */
    FM_PLOT_DARK = 13,   /* dark grey */
};

#endif /* FM_PLOT_INTERNAL_H */
