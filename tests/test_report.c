/* test_report.c — classification report, CSV tables, metrics.csv, PNG plots,
 * summary.json. */
#include <check.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "fm/fm_io.h"
#include "fm/fm_report.h"
#include "fm_test_util.h"

/* PLplot's cairo driver draws text with Pango, whose font map and
 * fontconfig's caches live until the process ends: a fixed ~65 kB, the same
 * after 1 or 20 plots, so not a leak of ours.  LeakSanitizer calls this hook
 * (when built with FM_SANITIZE) to skip it. */
const char *__lsan_default_suppressions(void);
__attribute__((used)) const char *__lsan_default_suppressions(void)
{
    return "leak:libfontconfig.so\nleak:libpango\n";
}

static const char *const names[FM_NUM_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

/* A realistic test-set confusion matrix (rows true, columns predicted). */
static const int64_t typical[10][10] = {
    {856, 1, 15, 21, 3, 1, 97, 0, 6, 0},  {3, 974, 1, 15, 3, 0, 2, 0, 2, 0},
    {16, 1, 842, 9, 71, 0, 60, 0, 1, 0},  {22, 6, 11, 902, 30, 0, 27, 0, 2, 0},
    {1, 1, 81, 26, 852, 0, 38, 0, 1, 0},  {0, 0, 0, 0, 0, 976, 0, 16, 0, 8},
    {118, 2, 70, 27, 78, 0, 695, 0, 10, 0}, {0, 0, 0, 0, 0, 7, 0, 971, 0, 22},
    {4, 1, 3, 3, 2, 2, 4, 3, 978, 0},     {0, 0, 0, 0, 0, 5, 1, 28, 0, 966},
};

/* Class 8 never occurs and class 9 is never predicted: zero divisions. */
static const int64_t degenerate[10][10] = {
    {5, 1, 0, 0, 0, 0, 0, 0, 0, 0}, {0, 3, 0, 0, 0, 0, 0, 0, 0, 0},
    {0, 0, 2, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 4, 0, 0, 0, 0, 0, 0},
    {0, 0, 0, 0, 1, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 7, 0, 0, 0, 0},
    {1, 0, 0, 0, 0, 0, 2, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 6, 0, 0},
    {0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 1, 2, 0},
};

/* scikit-learn's output for the matrices above (classification_report,
 * digits=4), produced by its formatting code on the same predictions. */
static const char golden_typical[] =
    "              precision    recall  f1-score   support\n"
    "\n"
    " T-shirt/top     0.8392    0.8560    0.8475      1000\n"
    "     Trouser     0.9878    0.9740    0.9809      1000\n"
    "    Pullover     0.8231    0.8420    0.8324      1000\n"
    "       Dress     0.8993    0.9020    0.9006      1000\n"
    "        Coat     0.8200    0.8520    0.8357      1000\n"
    "      Sandal     0.9849    0.9760    0.9804      1000\n"
    "       Shirt     0.7522    0.6950    0.7225      1000\n"
    "     Sneaker     0.9538    0.9710    0.9623      1000\n"
    "         Bag     0.9780    0.9780    0.9780      1000\n"
    "  Ankle boot     0.9699    0.9660    0.9679      1000\n"
    "\n"
    "    accuracy                         0.9012     10000\n"
    "   macro avg     0.9008    0.9012    0.9008     10000\n"
    "weighted avg     0.9008    0.9012    0.9008     10000\n";

static const char golden_degenerate[] =
    "                          precision    recall  f1-score   support\n"
    "\n"
    "             T-shirt/top     0.8333    0.8333    0.8333         6\n"
    "                 Trouser     0.7500    1.0000    0.8571         3\n"
    "                Pullover     1.0000    1.0000    1.0000         2\n"
    "A much longer class name     1.0000    1.0000    1.0000         4\n"
    "                    Coat     1.0000    1.0000    1.0000         1\n"
    "                  Sandal     1.0000    1.0000    1.0000         7\n"
    "                   Shirt     1.0000    0.6667    0.8000         3\n"
    "                 Sneaker     0.8571    1.0000    0.9231         6\n"
    "                     Bag     0.0000    0.0000    0.0000         0\n"
    "              Ankle boot     0.0000    0.0000    0.0000         3\n"
    "\n"
    "                accuracy                         0.8571        35\n"
    "               macro avg     0.7440    0.7500    0.7414        35\n"
    "            weighted avg     0.8398    0.8571    0.8431        35\n";

static char dir[4096];

static void setup(void)
{
    snprintf(dir, sizeof dir, "%s", fm_test_tmpdir());
}

static const char *in_dir(const char *name)
{
    static char path[8][4200];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, sizeof path[0], "%s/%s", dir, name);
    return p;
}

static fm_confusion confusion_of(const int64_t m[10][10])
{
    fm_confusion c;
    memcpy(c.counts, m, sizeof c.counts);
    return c;
}

static char *slurp(const char *path)
{
    char *data;
    size_t len;
    ck_assert_msg(fm_file_read_all(path, 1 << 26, &data, &len) == FM_OK, "%s",
                  fm_error_message());
    return data;
}

/* Checks the PNG signature and reads width and height from the IHDR chunk. */
static void check_png(const char *path, uint32_t want_w, uint32_t want_h)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s was not written", path);
    unsigned char h[24];
    ck_assert_uint_eq(fread(h, 1, sizeof h, f), sizeof h);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    ck_assert_msg(memcmp(h, sig, 8) == 0, "%s: not a PNG", path);
    ck_assert(memcmp(h + 12, "IHDR", 4) == 0);
    uint32_t w = (uint32_t)h[16] << 24 | (uint32_t)h[17] << 16 | (uint32_t)h[18] << 8 | h[19];
    uint32_t ht = (uint32_t)h[20] << 24 | (uint32_t)h[21] << 16 | (uint32_t)h[22] << 8 | h[23];
    ck_assert_uint_eq(w, want_w);
    ck_assert_uint_eq(ht, want_h);
    /* A blank page compresses to almost nothing; a drawn one does not. */
    ck_assert_int_gt(size, 5000);
    ck_assert_msg(!fm_test_tmp_left(path), "temporary file of %s left behind", path);
}

/* ---- confusion matrix and classification report ------------------------------- */

START_TEST(test_confusion_add)
{
    fm_confusion c;
    fm_confusion_clear(&c);
    const uint8_t y[6] = {0, 0, 1, 9, 9, 9}, p[6] = {0, 1, 1, 9, 8, 9};
    fm_confusion_add(&c, y, p, 6);
    ck_assert_int_eq(c.counts[0][0], 1);
    ck_assert_int_eq(c.counts[0][1], 1);
    ck_assert_int_eq(c.counts[9][8], 1);
    ck_assert_int_eq(c.counts[9][9], 2);
    ck_assert_int_eq(fm_confusion_total(&c), 6);
    ck_assert_double_eq_tol(fm_confusion_accuracy(&c), 4.0 / 6.0, 1e-12);
}
END_TEST

START_TEST(test_classification_matches_sklearn)
{
    fm_confusion c = confusion_of(typical);
    char *text = fm_report_classification_text(&c, names, 4);
    ck_assert_str_eq(text, golden_typical);
    free(text);
    /* NULL names mean FashionMNIST's. */
    text = fm_report_classification_text(&c, NULL, 4);
    ck_assert_str_eq(text, golden_typical);
    free(text);

    const char *long_names[10];
    memcpy(long_names, names, sizeof long_names);
    long_names[3] = "A much longer class name";
    c = confusion_of(degenerate);
    text = fm_report_classification_text(&c, long_names, 4);
    ck_assert_str_eq(text, golden_degenerate);
    free(text);
}
END_TEST

/* Parses the report back and compares every number with precision, recall
 * and f1 computed here from the counts (f1 as 2pr/(p+r)). */
START_TEST(test_classification_numbers)
{
    fm_confusion c = confusion_of(typical);
    /* Make it less symmetric than the real one. */
    c.counts[3][3] = 17;
    c.counts[5][0] = 400;
    const char *path = in_dir("classification_report.txt");
    ck_assert_int_eq(fm_report_classification(path, &c, names), FM_OK);
    char *text = slurp(path);

    char *lines[32];
    int n = 0;
    for (char *save, *l = strtok_r(text, "\n", &save); l && n < 32; l = strtok_r(NULL, "\n", &save))
        lines[n++] = l;
    ck_assert_int_eq(n, 14);  /* strtok drops the two blank lines */
    ck_assert_str_eq(lines[0], "              precision    recall  f1-score   support");

    double sum_p = 0, sum_r = 0, sum_f = 0, wp = 0, wr = 0, wf = 0;
    int64_t total = 0, right = 0;
    for (int k = 0; k < 10; k++) {
        int64_t tp = c.counts[k][k], rows = 0, cols = 0;
        for (int j = 0; j < 10; j++) {
            rows += c.counts[k][j];
            cols += c.counts[j][k];
        }
        double p = cols ? (double)tp / cols : 0, r = rows ? (double)tp / rows : 0;
        double f = p + r > 0 ? 2 * p * r / (p + r) : 0;
        const char *line = lines[1 + k];
        ck_assert_uint_eq(strlen(line), 12 + 1 + 4 * 10);
        char name[32];
        snprintf(name, sizeof name, "%.12s", line);
        char want_name[32];
        snprintf(want_name, sizeof want_name, "%12s", names[k]);
        ck_assert_str_eq(name, want_name);
        double gp, gr, gf;
        long long gs;
        ck_assert_int_eq(sscanf(line + 12, "%lf %lf %lf %lld", &gp, &gr, &gf, &gs), 4);
        ck_assert_double_eq_tol(gp, p, 5.1e-5);
        ck_assert_double_eq_tol(gr, r, 5.1e-5);
        ck_assert_double_eq_tol(gf, f, 5.1e-5);
        ck_assert_int_eq(gs, rows);
        sum_p += p;
        sum_r += r;
        sum_f += f;
        wp += p * rows;
        wr += r * rows;
        wf += f * rows;
        total += rows;
        right += tp;
    }
    double acc;
    long long gs;
    ck_assert_int_eq(sscanf(lines[11], "    accuracy %lf %lld", &acc, &gs), 2);
    ck_assert_double_eq_tol(acc, (double)right / total, 5.1e-5);
    ck_assert_int_eq(gs, total);
    ck_assert_uint_eq(strlen(lines[11]), strlen(lines[12]));
    double p, r, f;
    ck_assert_int_eq(sscanf(lines[12], "   macro avg %lf %lf %lf %lld", &p, &r, &f, &gs), 4);
    ck_assert_double_eq_tol(p, sum_p / 10, 5.1e-5);
    ck_assert_double_eq_tol(r, sum_r / 10, 5.1e-5);
    ck_assert_double_eq_tol(f, sum_f / 10, 5.1e-5);
    ck_assert_int_eq(sscanf(lines[13], "weighted avg %lf %lf %lf %lld", &p, &r, &f, &gs), 4);
    ck_assert_double_eq_tol(p, wp / total, 5.1e-5);
    ck_assert_double_eq_tol(r, wr / total, 5.1e-5);
    ck_assert_double_eq_tol(f, wf / total, 5.1e-5);
    ck_assert_int_eq(gs, total);
    free(text);
}
END_TEST

START_TEST(test_confusion_csv)
{
    fm_confusion c = confusion_of(typical);
    const char *path = in_dir("confusion_matrix.csv");
    ck_assert_int_eq(fm_report_confusion_csv(path, &c, names), FM_OK);
    char *text = slurp(path);
    ck_assert_msg(strncmp(text,
                          "true\\predicted,T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,"
                          "Sneaker,Bag,Ankle boot\n"
                          "T-shirt/top,856,1,15,21,3,1,97,0,6,0\n",
                          strlen("true\\predicted,T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,"
                                 "Shirt,Sneaker,Bag,Ankle boot\n"
                                 "T-shirt/top,856,1,15,21,3,1,97,0,6,0\n")) == 0,
                  "%s", text);
    ck_assert_msg(strstr(text, "\nAnkle boot,0,0,0,0,0,5,1,28,0,966\n") != NULL, "%s", text);
    int lines = 0;
    for (char *p = text; *p; p++)
        lines += *p == '\n';
    ck_assert_int_eq(lines, 11);
    free(text);

    /* A class name with a comma is quoted. */
    const char *odd[10];
    memcpy(odd, names, sizeof odd);
    odd[0] = "top, t-shirt";
    ck_assert_int_eq(fm_report_confusion_csv(path, &c, odd), FM_OK);
    text = slurp(path);
    ck_assert_msg(strstr(text, "true\\predicted,\"top, t-shirt\",Trouser") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "\n\"top, t-shirt\",856,") != NULL, "%s", text);
    free(text);
}
END_TEST

START_TEST(test_per_class_csv)
{
    fm_confusion c = confusion_of(degenerate);
    const char *path = in_dir("per_class.csv");
    ck_assert_int_eq(fm_report_per_class_csv(path, &c, names), FM_OK);
    char *text = slurp(path);
    ck_assert_msg(strncmp(text, "class,support,accuracy,most_confused_with,confused_count\n"
                                "T-shirt/top,6,0.8333,Trouser,1\n"
                                "Trouser,3,1.0000,,0\n",
                          strlen("class,support,accuracy,most_confused_with,confused_count\n"
                                 "T-shirt/top,6,0.8333,Trouser,1\n"
                                 "Trouser,3,1.0000,,0\n")) == 0,
                  "%s", text);
    ck_assert_msg(strstr(text, "\nShirt,3,0.6667,T-shirt/top,1\n") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "\nBag,0,0.0000,,0\n") != NULL, "%s", text);
    /* Ankle boot: 1 as Sneaker, 2 as Bag. */
    ck_assert_msg(strstr(text, "\nAnkle boot,3,0.0000,Bag,2\n") != NULL, "%s", text);
    free(text);
}
END_TEST

/* ---- metrics.csv ------------------------------------------------------------------------ */

static fm_metrics sample_metrics(int n)
{
    fm_metrics m = {0};
    for (int e = 1; e <= n; e++) {
        fm_metrics_row r = {e,
                            0.6 * exp(-0.15 * e) + 0.2,
                            0.8 + 0.15 * (1 - exp(-0.2 * e)),
                            0.45 * exp(-0.2 * e) + 0.25 + 0.0004 * e * e,
                            0.82 + 0.1 * (1 - exp(-0.3 * e)),
                            1e-3 * (1 + cos(M_PI * e / n)) / 2,
                            10.0 + e};
        fm_metrics_append(&m, &r);
    }
    return m;
}

START_TEST(test_metrics_round_trip)
{
    fm_metrics m = sample_metrics(14);
    ck_assert_int_eq(m.n, 14);
    const char *path = in_dir("metrics.csv");
    ck_assert_int_eq(fm_metrics_write_csv(path, &m), FM_OK);
    char *text = slurp(path);
    char first[256];
    snprintf(first, sizeof first, FM_METRICS_HEADER "\n1,%.6f,%.6f,%.6f,%.6f,%.6g,11.000\n2,",
             m.rows[0].train_loss, m.rows[0].train_acc, m.rows[0].val_loss, m.rows[0].val_acc,
             m.rows[0].lr);
    ck_assert_msg(strncmp(text, first, strlen(first)) == 0, "%s", text);
    free(text);

    fm_metrics back;
    ck_assert_msg(fm_metrics_read_csv(path, &back) == FM_OK, "%s", fm_error_message());
    ck_assert_int_eq(back.n, 14);
    for (int i = 0; i < 14; i++) {
        ck_assert_int_eq(back.rows[i].epoch, i + 1);
        ck_assert_double_eq_tol(back.rows[i].val_loss, m.rows[i].val_loss, 1e-6);
        ck_assert_double_eq_tol(back.rows[i].lr, m.rows[i].lr, 1e-8);
        ck_assert_double_eq_tol(back.rows[i].seconds, m.rows[i].seconds, 1e-3);
    }
    int lowest = 0;
    for (int i = 1; i < 14; i++)
        if (m.rows[i].val_loss < m.rows[lowest].val_loss)
            lowest = i;
    ck_assert_int_gt(lowest, 0);  /* the sample is not monotonic */
    ck_assert_int_lt(lowest, 13);
    ck_assert_int_eq(fm_metrics_best(&back), lowest);
    fm_metrics_free(&back);
    fm_metrics_free(&m);

    /* CRLF line ends, a trailing blank line and a nan loss are fine. */
    const char crlf[] =
        FM_METRICS_HEADER "\r\n1,2.3,0.1,nan,0.1,0.001,5\r\n2,2.0,0.2,1.5,0.3,0.001,5\r\n\n";
    fm_test_write_file(path, crlf, strlen(crlf));
    ck_assert_msg(fm_metrics_read_csv(path, &back) == FM_OK, "%s", fm_error_message());
    ck_assert_int_eq(back.n, 2);
    ck_assert(isnan(back.rows[0].val_loss));
    ck_assert_int_eq(fm_metrics_best(&back), 1);
    fm_metrics_free(&back);
}
END_TEST

static void expect_corrupt(const char *content, const char *want)
{
    const char *path = in_dir("metrics.csv");
    fm_test_write_file(path, content, strlen(content));
    fm_metrics m;
    ck_assert_int_eq(fm_metrics_read_csv(path, &m), FM_ERR_FORMAT);
    ck_assert_int_eq(m.n, 0);
    ck_assert_ptr_null(m.rows);
    const char *msg = fm_error_message();
    ck_assert_msg(strstr(msg, path) != NULL, "message does not name the file: %s", msg);
    ck_assert_msg(strstr(msg, want) != NULL, "message lacks \"%s\": %s", want, msg);
}

START_TEST(test_metrics_corrupt)
{
    expect_corrupt("", "empty");
    expect_corrupt("epoch,loss\n1,2\n", "metrics.csv:1: header");
    expect_corrupt(FM_METRICS_HEADER "\n1,0.5,0.8,0.4,0.85,0.001,3.2\n2,0.5,0.8,0.4\n",
                   "metrics.csv:3: 4 comma-separated values, expected 7");
    expect_corrupt(FM_METRICS_HEADER "\n1,0.5,0.8,0.4,0.85,0.001,3.2,9\n", "metrics.csv:2: 8");
    expect_corrupt(FM_METRICS_HEADER "\n1,0.5,0.8,abc,0.85,0.001,3.2\n",
                   "metrics.csv:2: val_loss \"abc\" is not a number");
    expect_corrupt(FM_METRICS_HEADER "\n1,0.5,0.8,,0.85,0.001,3.2\n", "val_loss");
    expect_corrupt(FM_METRICS_HEADER "\n0,0.5,0.8,0.4,0.85,0.001,3.2\n", "metrics.csv:2: epoch");
    expect_corrupt(FM_METRICS_HEADER "\n1.5,0.5,0.8,0.4,0.85,0.001,3.2\n", "epoch \"1.5\"");
    expect_corrupt(FM_METRICS_HEADER "\n1,0.5,0.8,0.4,0.85,0.001,1e999\n", "seconds");
    const char bin[] = FM_METRICS_HEADER "\n1,0.5\0,0.8\n";
    const char *path = in_dir("metrics.csv");
    fm_test_write_file(path, bin, sizeof bin - 1);
    fm_metrics m;
    ck_assert_int_eq(fm_metrics_read_csv(path, &m), FM_ERR_FORMAT);
    ck_assert_int_eq(fm_metrics_read_csv(in_dir("missing.csv"), &m), FM_ERR_IO);
    ck_assert_msg(strstr(fm_error_message(), "missing.csv") != NULL, "%s", fm_error_message());
}
END_TEST

/* ---- PNGs ----------------------------------------------------------------------------------- */

START_TEST(test_plots_from_metrics)
{
    fm_metrics m = sample_metrics(14);
    const char *res = in_dir("results/mlp");
    ck_assert_int_eq(fm_mkdirs(res), FM_OK);
    char path[4300];
    snprintf(path, sizeof path, "%s/metrics.csv", res);
    ck_assert_int_eq(fm_metrics_write_csv(path, &m), FM_OK);
    fm_metrics_free(&m);
    ck_assert_msg(fm_report_plots_from_metrics(res) == FM_OK, "%s", fm_error_message());
    snprintf(path, sizeof path, "%s/loss.png", res);
    check_png(path, 1000, 650);
    snprintf(path, sizeof path, "%s/acc.png", res);
    check_png(path, 1000, 650);

    /* Again in the same process: each plot has its own PLplot stream. */
    ck_assert_msg(fm_report_plots_from_metrics(res) == FM_OK, "%s", fm_error_message());
    check_png(path, 1000, 650);

    /* No metrics.csv: the error names the path. */
    const char *empty = in_dir("results/none");
    ck_assert_int_eq(fm_mkdirs(empty), FM_OK);
    ck_assert_int_eq(fm_report_plots_from_metrics(empty), FM_ERR_IO);
    ck_assert_msg(strstr(fm_error_message(), "results/none/metrics.csv") != NULL, "%s",
                  fm_error_message());
    /* A header only: nothing to plot. */
    snprintf(path, sizeof path, "%s/metrics.csv", empty);
    fm_test_write_file(path, FM_METRICS_HEADER "\n", strlen(FM_METRICS_HEADER) + 1);
    ck_assert_int_eq(fm_report_plots_from_metrics(empty), FM_ERR_FORMAT);
}
END_TEST

START_TEST(test_curves_with_gaps)
{
    double x[20], a[20], b[20], c[20];
    for (int i = 0; i < 20; i++) {
        x[i] = i + 1;
        a[i] = 0.3 - 0.005 * i;
        b[i] = i < 12 ? 0.28 - 0.004 * i : NAN;  /* stopped early */
        c[i] = i == 5 ? NAN : 0.26 - 0.006 * i + 0.0004 * i * i;
    }
    const double *ys[3] = {a, b, c};
    const char *labels[3] = {"mlp", "cnn", "rescnn #2"};
    const char *path = in_dir("cmp.png");
    ck_assert_msg(fm_report_curves(path, "Validation loss", "Epoch", "Loss", x, ys, labels, 3, 20,
                                   NAN, NULL) == FM_OK,
                  "%s", fm_error_message());
    check_png(path, 1000, 650);

    double none[2] = {NAN, NAN};
    const double *ys2[1] = {none};
    ck_assert_int_eq(fm_report_curves(path, "t", "x", "y", x, ys2, NULL, 1, 2, NAN, NULL),
                     FM_ERR_ARG);
    ck_assert_int_eq(fm_report_curves(path, "t", "x", "y", x, ys, labels, 0, 20, NAN, NULL),
                     FM_ERR_ARG);
    ck_assert_int_eq(fm_report_curves(path, "t", "x", "y", x, ys, labels, 3, 0, NAN, NULL),
                     FM_ERR_ARG);
    /* The failed calls left the earlier plot alone. */
    check_png(path, 1000, 650);
}
END_TEST

START_TEST(test_plot_unwritable)
{
    fm_metrics m = sample_metrics(3);
    char bad[4300];
    snprintf(bad, sizeof bad, "%s/no/such/dir", dir);
    ck_assert_int_eq(fm_report_plots(bad, "x", &m), FM_ERR_IO);
    ck_assert_msg(strstr(fm_error_message(), "no/such/dir/loss.png") != NULL, "%s",
                  fm_error_message());
    fm_metrics_free(&m);
    /* PLplot is still usable afterwards. */
    fm_confusion c = confusion_of(typical);
    const char *path = in_dir("cm.png");
    ck_assert_int_eq(fm_report_confusion_png(path, NULL, &c, NULL), FM_OK);
    check_png(path, 900, 900);
}
END_TEST

/* A PNG that cannot be written completely (file size limit, as a full disk
 * would) is refused and the previous one stays. */
START_TEST(test_plot_incomplete_keeps_old)
{
    fm_confusion c = confusion_of(typical);
    const char *path = in_dir("cm.png");
    ck_assert_int_eq(fm_report_confusion_png(path, NULL, &c, NULL), FM_OK);
    size_t before_len;
    char *before;
    ck_assert_int_eq(fm_file_read_all(path, 1 << 24, &before, &before_len), FM_OK);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old_lim, lim;
    getrlimit(RLIMIT_FSIZE, &old_lim);
    lim = old_lim;
    lim.rlim_cur = 20000;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    c.counts[0][0] = 1;
    fm_status st = fm_report_confusion_png(path, NULL, &c, NULL);
    setrlimit(RLIMIT_FSIZE, &old_lim);
    ck_assert_int_eq(st, FM_ERR_IO);
    ck_assert_msg(strstr(fm_error_message(), path) != NULL, "%s", fm_error_message());
    char *after;
    size_t after_len;
    ck_assert_int_eq(fm_file_read_all(path, 1 << 24, &after, &after_len), FM_OK);
    ck_assert_uint_eq(after_len, before_len);
    ck_assert(memcmp(after, before, before_len) == 0);
    free(before);
    free(after);
    check_png(path, 900, 900);
}
END_TEST

START_TEST(test_confusion_png)
{
    fm_confusion c = confusion_of(typical);
    const char *path = in_dir("confusion_matrix.png");
    ck_assert_msg(fm_report_confusion_png(path, NULL, &c, names) == FM_OK, "%s",
                  fm_error_message());
    check_png(path, 900, 900);
    fm_confusion_clear(&c);  /* all zero: no division by the largest count */
    ck_assert_int_eq(fm_report_confusion_png(path, "Empty", &c, names), FM_OK);
    check_png(path, 900, 900);
}
END_TEST

START_TEST(test_errors_png)
{
    enum { N = 40 };
    uint8_t *images = malloc(N * FM_IMAGE_PIXELS), labels[N], pred[N];
    uint32_t index[N];
    float conf[N];
    for (int i = 0; i < N; i++)
        labels[i] = (uint8_t)(i % 10);
    for (int i = 0; i < N; i++) {
        for (int p = 0; p < FM_IMAGE_PIXELS; p++) {
            int y = p / FM_IMAGE_W, x = p % FM_IMAGE_W;
            images[i * FM_IMAGE_PIXELS + p] = (uint8_t)((x - 14) * (x - 14) + (y - 14) * (y - 14) <
                                                                (i % 10 + 4) * (i % 10 + 4)
                                                            ? 255 - 5 * i
                                                            : 0);
        }
        index[i] = (uint32_t)(N - 1 - i);
        pred[i] = (uint8_t)(i % 3 == 0 ? (labels[N - 1 - i] + 1) % 10 : labels[N - 1 - i]);
        conf[i] = 0.5f + 0.01f * (float)i;
    }
    const char *path = in_dir("errors.png");
    ck_assert_msg(fm_report_errors_png(path, images, labels, index, pred, conf, N, 3, names) ==
                      FM_OK,
                  "%s", fm_error_message());
    check_png(path, 2 * 20 + 3 * 200, 70 + 20 + 3 * 170);
    /* No mistakes at all still gives a sheet saying so. */
    ck_assert_int_eq(fm_report_errors_png(path, images, labels, NULL, labels, conf, N, 0, NULL),
                     FM_OK);
    check_png(path, 2 * 20 + 8 * 200, 70 + 20 + 1 * 170);
    /* 13 mistakes in a 4-wide grid: 4 rows. */
    for (int i = 0; i < N; i++)
        pred[i] = (uint8_t)(i < 13 ? (labels[i] + 1) % 10 : labels[i]);
    ck_assert_int_eq(fm_report_errors_png(path, images, labels, NULL, pred, conf, N, 4, NULL),
                     FM_OK);
    check_png(path, 2 * 20 + 4 * 200, 70 + 20 + 4 * 170);
    free(images);
}
END_TEST

/* ---- summary.json ----------------------------------------------------------------------- */

START_TEST(test_summary_json)
{
    const char *hp[] = {"hidden1", "256", "dropout", "0.2", "act", "relu"};
    const char *opt[] = {"optimizer", "adam", "lr", "1e-3", "augment", "false"};
    fm_summary s = {
        .model = "mlp",
        .plugin_path = "plugins/mlp.so",
        .hparams = hp,
        .n_hparams = 3,
        .options = opt,
        .n_options = 3,
        .seed = 42,
        .epochs_run = 14,
        .best_epoch = 9,
        .val_loss = 0.3125,
        .val_acc = 0.8875,
        .test_loss = NAN,
        .test_acc = 0.8871,
        .num_params = 235146,
        .wall_seconds = 123.5,
        .checkpoint = NULL,
    };
    const char *path = in_dir("summary.json");
    ck_assert_int_eq(fm_summary_write(path, &s), FM_OK);
    char *text = slurp(path);
    const char *want[] = {
        "\"fmhost_version\": \"" FM_VERSION_STRING "\"", "\"model\": \"mlp\"",
        "\"hidden1\": 256",     "\"dropout\": 0.2",       "\"act\": \"relu\"",
        "\"lr\": 0.001",        "\"augment\": false",     "\"seed\": 42",
        "\"epochs_run\": 14",   "\"best_epoch\": 9",      "\"val_loss\": 0.3125",
        "\"test_loss\": null",  "\"test_acc\": 0.8871",   "\"num_params\": 235146",
        "\"wall_seconds\": 123.5", "\"checkpoint\": null",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(text, want[i]) != NULL, "summary lacks %s:\n%s", want[i], text);
    ck_assert_int_eq(text[0], '{');
    ck_assert_int_eq(text[strlen(text) - 1], '\n');
    free(text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("report");
    TCase *tc = tcase_create("tables");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_confusion_add);
    tcase_add_test(tc, test_classification_matches_sklearn);
    tcase_add_test(tc, test_classification_numbers);
    tcase_add_test(tc, test_confusion_csv);
    tcase_add_test(tc, test_per_class_csv);
    tcase_add_test(tc, test_metrics_round_trip);
    tcase_add_test(tc, test_metrics_corrupt);
    tcase_add_test(tc, test_summary_json);
    suite_add_tcase(s, tc);

    tc = tcase_create("plots");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_plots_from_metrics);
    tcase_add_test(tc, test_curves_with_gaps);
    tcase_add_test(tc, test_plot_unwritable);
    tcase_add_test(tc, test_confusion_png);
    tcase_add_test(tc, test_plot_incomplete_keeps_old);
    tcase_add_test(tc, test_errors_png);
    suite_add_tcase(s, tc);
    return fm_test_run(s);
}
