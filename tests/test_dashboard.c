/* The dashboard of `fmhost runs html` in a real browser: headless Chromium
 * loads the page from disk (no server, no network), and the test reads
 * back the DOM its script built (the table's rows, which images loaded) and
 * a screenshot (drawn, not blank).  Without Chromium the executable exits
 * 77, which CTest reports as skipped; .ci/run installs it, so CI always
 * runs it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "fm_test_util.h"

#define FMHOST FM_BINARY_DIR "/fmhost"
#define SAMPLE_DIR FM_SOURCE_DIR "/data/sample"
#define SKIP 77

static char browser[4096];

/* The first of the browser's names found on $PATH, into browser[]. */
static bool find_browser(void)
{
    static const char *const names[] = {"chromium", "chromium-browser"};
    const char *path = getenv("PATH");
    if (!path) return false;
    for (size_t n = 0; n < sizeof names / sizeof names[0]; n++) {
        char *dirs = fm_xstrdup(path);
        for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
            snprintf(browser, sizeof browser, "%s/%s", d, names[n]);
            if (access(browser, X_OK) == 0) {
                free(dirs);
                return true;
            }
        }
        free(dirs);
    }
    return false;
}

static void fmhost_ok(char **argv)
{
    fm_test_proc r;
    fm_test_spawn(&r, argv, NULL, 120);
    ck_assert_msg(r.status == 0, "%s %s: exit %d\n%s", argv[1], argv[2], r.status, r.err);
    fm_test_proc_free(&r);
}

/* The value of attribute `name` of the <body> tag in html, or -1. */
static long body_attr(const char *html, const char *name)
{
    const char *body = strstr(html, "<body");
    if (!body) return -1;
    const char *end = strchr(body, '>');
    char key[64];
    snprintf(key, sizeof key, " %s=\"", name);
    const char *at = strstr(body, key);
    if (!at || at > end) return -1;
    return strtol(at + strlen(key), NULL, 10);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* The ids of the table's first n rows as decimal digits: 3 2 1 -> 321. */
static int row_order(const char *html, int n)
{
    int order = 0;
    const char *p = html;
    for (int i = 0; i < n && (p = strstr(p, "<tr data-id=\"")); i++) {
        p += strlen("<tr data-id=\"");
        order = order * 10 + atoi(p);
    }
    return order;
}

/* ---- a PNG's pixels (8-bit RGB or RGBA, what Chromium writes) ---------------------- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int paeth(int a, int b, int c)
{
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/* Decodes the PNG at path: *w, *h, *channels (3 or 4) and the pixels. */
static unsigned char *png_pixels(const char *path, int *w, int *h, int *channels)
{
    size_t len;
    unsigned char *f = (unsigned char *)fm_test_read_file(path, &len);
    ck_assert_msg(len > 33 && !memcmp(f, "\x89PNG\r\n\x1a\n", 8), "%s: not a PNG", path);
    *w = (int)be32(f + 16);
    *h = (int)be32(f + 20);
    int depth = f[24], type = f[25];
    ck_assert_msg(depth == 8 && (type == 2 || type == 6) && f[28] == 0, "%s: depth %d type %d",
                  path, depth, type);
    *channels = type == 6 ? 4 : 3;
    size_t idat_len = 0;
    unsigned char *idat = NULL;
    for (size_t p = 8; p + 12 <= len;) {
        uint32_t n = be32(f + p);
        ck_assert(p + 12 + n <= len);
        if (!memcmp(f + p + 4, "IDAT", 4)) {
            idat = realloc(idat, idat_len + n);
            memcpy(idat + idat_len, f + p + 8, n);
            idat_len += n;
        }
        p += 12 + n;
    }
    size_t stride = (size_t)*w * (size_t)*channels;
    uLongf raw_len = (uLongf)((stride + 1) * (size_t)*h);
    unsigned char *raw = fm_xmalloc(raw_len), *px = fm_xmalloc(stride * (size_t)*h);
    ck_assert_int_eq(uncompress(raw, &raw_len, idat, (uLong)idat_len), Z_OK);
    ck_assert_int_eq(raw_len, (stride + 1) * (size_t)*h);
    for (int y = 0; y < *h; y++) {
        const unsigned char *in = raw + (size_t)y * (stride + 1) + 1;
        unsigned char *row = px + (size_t)y * stride, *up = y ? row - stride : NULL;
        int filter = in[-1];
        for (size_t x = 0; x < stride; x++) {
            int a = x >= (size_t)*channels ? row[x - (size_t)*channels] : 0, b = up ? up[x] : 0;
            int c = up && x >= (size_t)*channels ? up[x - (size_t)*channels] : 0;
            int pred = filter == 1 ? a : filter == 2 ? b : filter == 3 ? (a + b) / 2
                     : filter == 4 ? paeth(a, b, c) : 0;
            row[x] = (unsigned char)(in[x] + pred);
        }
    }
    free(raw);
    free(idat);
    free(f);
    return px;
}

START_TEST(test_dashboard_in_chromium)
{
    char tmp[1024], out[1100], db[1200], dash[1200], profile[1200], shot[1300], url[1400];
    snprintf(tmp, sizeof tmp, "%s", fm_test_tmpdir());
    snprintf(out, sizeof out, "%s/out", tmp);
    snprintf(db, sizeof db, "%s/runs.db", out);
    snprintf(dash, sizeof dash, "%s/dash", tmp);
    snprintf(profile, sizeof profile, "%s/profile", tmp);
    snprintf(shot, sizeof shot, "%s/shot.png", tmp);
    snprintf(url, sizeof url, "file://%s/index.html", dash);
    /* Two training runs and an evaluation. */
    for (int i = 0; i < 2; i++) {
        char *train[] = {FMHOST, "train", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--epochs",
                         "3", "--limit", "300", "--threads", "1", "--quiet", "--seed",
                         i ? "2" : "1", "--out", out, NULL};
        fmhost_ok(train);
    }
    char *eval[] = {FMHOST, "eval", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--out", out, NULL};
    fmhost_ok(eval);
    char *html[] = {FMHOST, "runs", "html", dash, "--runs-db", db, NULL};
    fmhost_ok(html);

    /* The DOM once the page loaded: the script's marks on <body>. */
    char user_dir[1300];
    snprintf(user_dir, sizeof user_dir, "--user-data-dir=%s", profile);
    char *dump[] = {browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    user_dir, "--dump-dom", url, NULL};
    fm_test_proc r;
    fm_test_spawn(&r, dump, NULL, 120);
    ck_assert_msg(r.status == 0, "%s --dump-dom: exit %d\n%s", browser, r.status, r.err);
    long rows = body_attr(r.out, "data-rows"), images = body_attr(r.out, "data-images");
    long loaded = body_attr(r.out, "data-images-loaded"), failed = body_attr(r.out, "data-images-failed");
    ck_assert_msg(rows == 3, "data-rows %ld, want 3 (did the script run?)\n%.2000s", rows, r.out);
    ck_assert_int_eq(count(r.out, "<tr data-id="), 3);
    /* Per training run acc, loss, confusion matrix and errors; the evaluation
     * has no curves. */
    ck_assert_int_eq(images, 2 * 4 + 2);
    ck_assert_int_eq(loaded, images);
    ck_assert_int_eq(failed, 0);
    ck_assert_int_eq(body_attr(r.out, "data-ready"), 1);
    /* Sections per run with the per-class table, and overlay curves of the ticked runs. */
    ck_assert_int_eq(count(r.out, "<section class=\"run\""), 3);
    ck_assert_int_ge(count(r.out, "Ankle boot"), 3);
    ck_assert_int_ge(count(r.out, "<polyline"), 2 * 2 + 2 * 2 * 2);
    /* Newest first by default. */
    ck_assert_msg(row_order(r.out, 3) == 321, "row order %d, want 3 2 1", row_order(r.out, 3));
    fm_test_proc_free(&r);

    /* Sorted as the address says (what a click on a heading sets). */
    char sorted[1500];
    snprintf(sorted, sizeof sorted, "%s#sort=id&asc", url);
    dump[7] = sorted;
    fm_test_spawn(&r, dump, NULL, 120);
    ck_assert_int_eq(r.status, 0);
    ck_assert_msg(row_order(r.out, 3) == 123, "row order %d, want 1 2 3", row_order(r.out, 3));
    fm_test_proc_free(&r);

    /* A screenshot: a PNG of the window, with something drawn on it. */
    char shot_arg[1400];
    snprintf(shot_arg, sizeof shot_arg, "--screenshot=%s", shot);
    char *screenshot[] = {browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--hide-scrollbars", user_dir, "--window-size=1280,900", shot_arg, url,
                          NULL};
    fm_test_spawn(&r, screenshot, NULL, 120);
    ck_assert_msg(r.status == 0, "%s --screenshot: exit %d\n%s", browser, r.status, r.err);
    fm_test_proc_free(&r);
    int w, h, ch;
    unsigned char *px = png_pixels(shot, &w, &h, &ch);
    ck_assert_int_eq(w, 1280);
    ck_assert_int_eq(h, 900);
    long inked = 0, colored = 0;
    for (long i = 0; i < (long)w * h; i++) {
        const unsigned char *p = px + i * ch;
        inked += p[0] < 200 || p[1] < 200 || p[2] < 200;
        colored += abs(p[0] - p[2]) > 40;  /* the curves, the status colors */
    }
    free(px);
    ck_assert_msg(inked > (long)w * h / 200, "the screenshot is nearly blank: %ld dark pixels", inked);
    ck_assert_msg(colored > 50, "the screenshot has no colored curve: %ld colored pixels", colored);
    fm_test_rmtree(tmp);
}
END_TEST

int main(void)
{
    if (!find_browser()) {
        printf("test_dashboard: SKIPPED: no chromium on $PATH (apt-get install chromium; "
               ".ci/run installs it from .ci/test-packages)\n");
        return SKIP;
    }
    printf("test_dashboard: browser %s\n", browser);
    Suite *s = suite_create("dashboard");
    TCase *tc = tcase_create("dashboard");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_dashboard_in_chromium);
    suite_add_tcase(s, tc);
    return fm_test_run(s);
}
