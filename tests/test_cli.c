/* Integration tests of the fmhost binary: options, exit statuses, messages
 * and the files a run leaves behind.  Runs are cut short (--limit, a couple of
 * epochs, data/sample) so the executable takes seconds. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* memrchr, nftw */
#endif
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm/fm_io.h"
#include "fm/fm_report.h"
#include "fm_test_util.h"

#define FMHOST FM_BINARY_DIR "/fmhost"
#define SAMPLE_DIR FM_SOURCE_DIR "/data/sample"

/* ---- running fmhost ---------------------------------------------------------- */

typedef struct cli_result {
    int status;  /* exit status, or 128 + signal */
    char *out, *err;
} cli_result;

/* A NAME=VALUE the next child gets in its environment (run_env), or NULL. */
static const char *child_env;

static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Runs fmhost with argv[1..] = the NULL-terminated list (fm_test_spawn). */
static void run_argv(cli_result *r, char *const *args)
{
    fm_test_proc p;
    fm_test_spawn(&p, args, child_env, 0);  /* no time limit: the Check timeout applies */
    *r = (cli_result){p.status, p.out, p.err};
    ck_assert_msg(r->status < 128, "fmhost died of signal %d; stderr:\n%s", r->status - 128, r->err);
}

/* run(&r, "train", "--model", "mlp", NULL) */
static void run(cli_result *r, ...)
{
    char *args[64];
    int n = 0;
    args[n++] = (char *)FMHOST;
    va_list ap;
    va_start(ap, r);
    for (char *a; (a = va_arg(ap, char *));) {
        ck_assert_int_lt(n, 63);
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    run_argv(r, args);
}

/* run() with `assignment` (NAME=VALUE) added to the child's environment. */
#define run_env(r, assignment, ...)  \
    do {                              \
        child_env = (assignment);     \
        run((r), __VA_ARGS__);        \
        child_env = NULL;             \
    } while (0)

static void result_free(cli_result *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

#define ASSERT_HAS(text, needle)                                                               \
    ck_assert_msg(strstr((text), (needle)) != NULL, "expected \"%s\" in:\n%s", (needle), (text))

/* ---- files --------------------------------------------------------------------- */

static char *new_tmpdir(void)
{
    return fm_xstrdup(fm_test_tmpdir());
}

static char *path_of(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static char *path_of(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    return buf;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A PNG: the signature, then an IHDR chunk with a non-empty size, ending in IEND. */
static void assert_png(const char *path)
{
    size_t len;
    unsigned char *p = (unsigned char *)fm_test_read_file(path, &len);
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    ck_assert_msg(len > 33 && !memcmp(p, sig, 8), "%s: not a PNG", path);
    ck_assert_msg(be32(p + 8) == 13 && !memcmp(p + 12, "IHDR", 4), "%s: no IHDR", path);
    ck_assert_msg(be32(p + 16) > 0 && be32(p + 20) > 0, "%s: empty image %ux%u", path, be32(p + 16),
                  be32(p + 20));
    ck_assert_msg(!memcmp(p + len - 8, "IEND", 4), "%s: truncated (no IEND)", path);
    free(p);
}

/* No temporary file of an atomic write may be left behind. */
static char tmp_found[4096];

static int find_tmp(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag;
    if (strstr(path + ftw->base, ".tmp")) snprintf(tmp_found, sizeof tmp_found, "%s", path);
    return 0;
}

static void assert_no_tmp_files(const char *dir)
{
    tmp_found[0] = '\0';
    nftw(dir, find_tmp, 16, FTW_PHYS);
    ck_assert_msg(tmp_found[0] == '\0', "temporary file left: %s", tmp_found);
}

/* metrics.csv without its last (seconds) column. */
/* The "accuracy" line of a scikit-learn style classification report. */
static double report_accuracy(const char *path, int *support)
{
    char *text = fm_test_read_file(path, NULL);
    double acc = NAN;
    *support = -1;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char word[32];
        double a;
        int n;
        if (sscanf(line, " %31s %lf %d", word, &a, &n) == 3 && !strcmp(word, "accuracy")) {
            acc = a;
            *support = n;
        }
    }
    free(text);
    ck_assert_msg(!isnan(acc), "%s: no accuracy line", path);
    return acc;
}

/* The kernel set a child runs without --kernels: $FMHOST_KERNELS when it is
 * set (ctest under a forced set), else the best the processor runs. */
static const char *default_kernels(void)
{
    fm_status st = fm_kernels_use_env();
    ck_assert_msg(st == FM_OK, "%s", fm_error_message());
    return fm_kernels_name(fm_kernels_active());
}

/* "test accuracy 0.7180" in fmhost's last line. */
static double stdout_accuracy(const char *out)
{
    const char *p = strstr(out, "test accuracy ");
    ck_assert_msg(p != NULL, "no test accuracy in:\n%s", out);
    return strtod(p + strlen("test accuracy "), NULL);
}

/* ---- help ---------------------------------------------------------------------- */

START_TEST(test_cli_help)
{
    cli_result r;
    run(&r, "--help", NULL);
    ck_assert_int_eq(r.status, 0);
    const char *cmds[] = {"train", "eval", "plugins", "report", "bench", "script"};
    for (int i = 0; i < 6; i++) ASSERT_HAS(r.out, cmds[i]);
    ASSERT_HAS(r.out, "dataset-fashion-mnist");
    ASSERT_HAS(r.out, "--kernels");
    ASSERT_HAS(r.out, "FMHOST_KERNELS");
    result_free(&r);

    run(&r, NULL);
    ck_assert_int_eq(r.status, 2);
    ASSERT_HAS(r.err, "usage: fmhost");
    result_free(&r);

    static const struct {
        const char *cmd;
        const char *opts[40];
    } helps[] = {
        {"train", {"--model", "--plugin", "--set", "--epochs", "--batch-size", "--patience",
                   "--val-split", "--seed", "--augment", "--limit", "--optimizer", "--lr",
                   "--momentum", "--nesterov", "--weight-decay", "--scheduler", "--step-size",
                   "--gamma", "--min-lr", "--warmup", "--threads", "--data-dir", "--out", "--quiet",
                   "summary.json", "--kernels", "FMHOST_KERNELS", "--save-dtype", "--precision",
                   "--label-smoothing", "--ema", "--tta", "--random-erasing", "onecycle",
                   "--pct-start", "--div-factor", "--final-div-factor", "--mixup", "--cutmix"}},
        {"eval", {"--model", "--plugin", "--weights", "--set", "--data-dir", "--out", "--threads",
                  "--kernels", "FMHOST_KERNELS", "--precision", "--tta"}},
        {"plugins", {"--dir"}},
        {"report", {"RESULTS_DIR", "metrics.csv"}},
        {"bench", {"--model", "--plugin", "--batches", "--batch-size", "--threads", "--set",
                   "--profile", "--data-dir", "--kernels", "FMHOST_KERNELS", "\"kernels\"",
                   "--precision", "\"precision\""}},
        {"script", {"FILE.lua", "--kernels", "FMHOST_KERNELS", "fm.kernels"}},
    };
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        run(&r, helps[i].cmd, "--help", NULL);
        ck_assert_msg(r.status == 0, "fmhost %s --help: exit %d", helps[i].cmd, r.status);
        char usage[64];
        snprintf(usage, sizeof usage, "usage: fmhost %s", helps[i].cmd);
        ASSERT_HAS(r.out, usage);
        for (int k = 0; helps[i].opts[k]; k++) ASSERT_HAS(r.out, helps[i].opts[k]);
        ck_assert_str_eq(r.err, "");
        result_free(&r);
    }
}
END_TEST

/* ---- bad command lines: exit 2 and one line naming the culprit --------------------- */

static const struct {
    const char *args[12];
    const char *needles[4];
} usage_errors[] = {
    {{"frob"}, {"frob"}},
    {{"train", "--model", "mlp", "--frob"}, {"--frob"}},
    {{"train", "--model", "mlp", "--epochs", "abc"}, {"--epochs", "abc"}},
    {{"train", "--model", "mlp", "--epochs", "0"}, {"--epochs", "0"}},
    {{"train", "--model", "mlp", "--epochs"}, {"--epochs", "value"}},
    {{"train", "--model", "mlp", "--lr", "-1"}, {"--lr", "-1"}},
    {{"train", "--model", "mlp", "--lr", "nan"}, {"--lr", "nan"}},
    {{"train", "--model", "mlp", "--optimizer", "foo"}, {"--optimizer", "foo"}},
    {{"train", "--model", "mlp", "--scheduler", "linear"}, {"--scheduler", "linear"}},
    {{"train", "--model", "mlp", "--val-split", "1.5"}, {"--val-split", "1.5"}},
    {{"train", "--model", "mlp", "--threads", "-2"}, {"--threads", "-2"}},
    {{"train", "--model", "mlp", "--batch-size", "12x"}, {"--batch-size", "12x"}},
    {{"train", "--model", "mlp", "--warmup", "3", "--epochs", "2"}, {"--warmup", "3"}},
    {{"train", "--model", "mlp", "--nesterov"}, {"--nesterov"}},
    {{"train", "--model", "mlp", "--label-smoothing", "1"}, {"--label-smoothing", "'1'", "[0, 1)"}},
    {{"train", "--model", "mlp", "--ema", "1"}, {"--ema", "'1'", "(0, 1)"}},
    {{"train", "--model", "mlp", "--ema", "0"}, {"--ema", "'0'"}},
    {{"train", "--model", "mlp", "--random-erasing", "1.5"}, {"--random-erasing", "'1.5'"}},
    {{"train", "--model", "mlp", "--pct-start", "1"}, {"--pct-start", "'1'"}},
    {{"train", "--model", "mlp", "--div-factor", "0"}, {"--div-factor", "'0'"}},
    {{"train", "--model", "mlp", "--final-div-factor", "-2"}, {"--final-div-factor", "'-2'"}},
    {{"train", "--model", "mlp", "--scheduler", "onecycle", "--warmup", "1"}, {"--warmup", "onecycle"}},
    {{"train", "--model", "mlp", "--mixup", "0"}, {"--mixup", "'0'"}},
    {{"train", "--model", "mlp", "--cutmix", "x"}, {"--cutmix", "'x'"}},
    {{"train", "--model", "mlp", "--set", "nokey"}, {"--set", "nokey"}},
    {{"train", "--model", "mlp", "--save-dtype", "f8"}, {"--save-dtype", "'f8'", "f32, bf16 or f16"}},
    {{"train", "--model", "mlp", "--precision", "fp16"}, {"--precision", "'fp16'", "fp32 or bf16"}},
    {{"eval", "--model", "mlp", "--precision", "half"}, {"--precision", "'half'", "fp32 or bf16"}},
    {{"bench", "--model", "mlp", "--precision", "x"}, {"--precision", "'x'", "fp32 or bf16"}},
    {{"train", "--model", "mlp", "--set", "nokey=3", "--data-dir", SAMPLE_DIR}, {"nokey", "hidden1"}},
    {{"train", "--model", "rescnn", "--set", "width=abc", "--data-dir", SAMPLE_DIR}, {"width", "abc"}},
    {{"train", "--model", "mlp", "--plugin", "x.so"}, {"--model", "--plugin"}},
    {{"train"}, {"--model", "--plugin"}},
    {{"train", "--model", "mlp", "stray"}, {"stray"}},
    {{"eval", "--model", "mlp", "--frob"}, {"--frob"}},
    {{"eval", "--model", "mlp", "--threads", "many"}, {"--threads", "many"}},
    {{"bench", "--model", "mlp", "--batches", "x"}, {"--batches", "x"}},
    {{"plugins", "--frob"}, {"--frob"}},
    {{"report"}, {"report"}},
    {{"script"}, {"script"}},
    {{"script", "--frob", "x.lua"}, {"--frob"}},
    {{"script", "--kernels"}, {"--kernels", "value"}},
    /* An unknown kernel set: the value, the sets this processor runs
     * (portable always among them), the fix. */
    {{"train", "--model", "mlp", "--kernels", "bogus"}, {"'bogus'", "portable", "leave out --kernels"}},
    {{"eval", "--model", "mlp", "--kernels", "avx3"}, {"'avx3'", "portable"}},
    {{"bench", "--model", "mlp", "--kernels", "AVX2"}, {"'AVX2'", "portable"}},
    {{"script", "--kernels", "bogus", "x.lua"}, {"'bogus'", "portable"}},
};

START_TEST(test_cli_usage_errors)
{
    for (size_t i = 0; i < sizeof usage_errors / sizeof usage_errors[0]; i++) {
        char *args[16] = {(char *)FMHOST};
        char shown[512] = "fmhost";
        int n = 1;
        for (; usage_errors[i].args[n - 1]; n++) {
            args[n] = (char *)usage_errors[i].args[n - 1];
            strncat(shown, " ", sizeof shown - strlen(shown) - 1);
            strncat(shown, args[n], sizeof shown - strlen(shown) - 1);
        }
        args[n] = NULL;
        cli_result r;
        run_argv(&r, args);
        ck_assert_msg(r.status == 2, "%s: exit %d (want 2); stderr:\n%s", shown, r.status, r.err);
        ck_assert_msg(count_lines(r.err) == 1, "%s: want one line on stderr, got:\n%s", shown, r.err);
        ck_assert_msg(!strncmp(r.err, "fmhost", 6), "%s: %s", shown, r.err);
        for (int k = 0; usage_errors[i].needles[k]; k++)
            ck_assert_msg(strstr(r.err, usage_errors[i].needles[k]), "%s: \"%s\" not in: %s", shown,
                          usage_errors[i].needles[k], r.err);
        ck_assert_msg(!strcmp(r.out, ""), "%s: unexpected stdout: %s", shown, r.out);
        result_free(&r);
    }
}
END_TEST

/* ---- the world is wrong: exit 1 and a message naming the file ----------------------- */

START_TEST(test_cli_missing_data)
{
    char *tmp = new_tmpdir();
    char out[4200], ckpt[4300];
    path_of(out, sizeof out, "%s/out", tmp);
    cli_result r;
    run(&r, "train", "--model", "mlp", "--data-dir", "/nonexistent/fashion", "--out", out, "--quiet",
        NULL);
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, "/nonexistent/fashion");
    ASSERT_HAS(r.err, "--data-dir");
    ck_assert(!exists(path_of(ckpt, sizeof ckpt, "%s/artifacts/mlp_best.safetensors", out)));
    result_free(&r);

    /* Without --data-dir or $FMHOST_DATA the system directory is the last
     * try; only a machine without the dataset package shows the message. */
    if (!exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) {
        run(&r, "train", "--model", "mlp", "--out", out, "--quiet", NULL);
        ck_assert_int_eq(r.status, 1);
        ASSERT_HAS(r.err, "/usr/share/datasets/fashion-mnist");
        ASSERT_HAS(r.err, "FMHOST_DATA");
        ASSERT_HAS(r.err, "apt-get install dataset-fashion-mnist");
        result_free(&r);
    }
    fm_test_rmtree(tmp);
    free(tmp);
}
END_TEST

START_TEST(test_cli_bad_plugin)
{
    char *tmp = new_tmpdir();
    char text[4200], missing[4200];
    path_of(text, sizeof text, "%s/notaplugin.so", tmp);
    fm_test_write_file(text, "this is text, not ELF\n", 22);
    cli_result r;
    run(&r, "train", "--plugin", text, "--data-dir", SAMPLE_DIR, "--out", tmp, "--quiet", NULL);
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, text);
    ck_assert_int_eq(count_lines(r.err), 1);
    result_free(&r);

    run(&r, "eval", "--plugin", text, "--data-dir", SAMPLE_DIR, "--out", tmp, NULL);
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, text);
    result_free(&r);

    path_of(missing, sizeof missing, "%s/missing.so", tmp);
    run(&r, "train", "--plugin", missing, "--data-dir", SAMPLE_DIR, "--out", tmp, NULL);
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, missing);
    result_free(&r);

    run(&r, "train", "--model", "nosuchmodel", "--data-dir", SAMPLE_DIR, "--out", tmp, NULL);
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, "nosuchmodel");
    result_free(&r);

    /* fmhost plugins --dir skips the bad file, saying why, and lists the rest. */
    run(&r, "plugins", "--dir", tmp, NULL);
    ck_assert_int_eq(r.status, 0);
    ASSERT_HAS(r.err, text);
    ASSERT_HAS(r.out, "mlp");
    result_free(&r);

    fm_test_rmtree(tmp);
    free(tmp);
}
END_TEST

START_TEST(test_cli_plugins)
{
    cli_result r;
    run(&r, "plugins", NULL);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.err, "");
    const char *want[] = {"mlp", "cnn", "rescnn", "hidden1", "hidden2", "dropout", "width", "blocks",
                          "default 256", "default 32"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) ASSERT_HAS(r.out, want[i]);
    /* Each model's parameters under its own entry. */
    const char *mlp = strstr(r.out, "mlp —"), *res = strstr(r.out, "rescnn —");
    ck_assert(mlp && res);
    const char *h1 = strstr(mlp, "hidden1"), *w = strstr(res, "width");
    ck_assert(h1 && w);
    ck_assert_msg(!strstr(r.out, "skipped"), "%s", r.out);
    result_free(&r);
}
END_TEST

/* ---- a whole run: train, the artifacts, eval, report --------------------------------- */

static const char *const result_files[] = {
    "metrics.csv", "loss.png", "acc.png", "confusion_matrix.png", "classification_report.txt",
    "confusion_matrix.csv", "per_class.csv", "errors.png", "summary.json",
};

START_TEST(test_cli_train_pipeline)
{
    char *tmp = new_tmpdir();
    char res[4200], ckpt[4200], p[4400];
    path_of(res, sizeof res, "%s/results/mlp", tmp);
    path_of(ckpt, sizeof ckpt, "%s/artifacts/mlp_best.safetensors", tmp);
    cli_result r;
    run(&r, "train", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--epochs", "2", "--limit", "500",
        "--out", tmp, "--quiet", "--threads", "1", NULL);
    ck_assert_msg(r.status == 0, "train: exit %d:\n%s", r.status, r.err);
    ck_assert_msg(!strcmp(r.err, ""), "--quiet printed on stderr:\n%s", r.err);
    double train_acc = stdout_accuracy(r.out);
    char *train_out = r.out;
    free(r.err);

    /* SPEC §4 and the extra report files. */
    ck_assert_msg(exists(ckpt), "%s missing", ckpt);
    for (size_t i = 0; i < sizeof result_files / sizeof result_files[0]; i++)
        ck_assert_msg(exists(path_of(p, sizeof p, "%s/%s", res, result_files[i])), "%s missing", p);
    const char *pngs[] = {"loss.png", "acc.png", "confusion_matrix.png", "errors.png"};
    for (int i = 0; i < 4; i++) assert_png(path_of(p, sizeof p, "%s/%s", res, pngs[i]));
    assert_no_tmp_files(tmp);

    /* The checkpoint: a safetensors header that declares pt format and the run. */
    size_t clen;
    unsigned char *c = (unsigned char *)fm_test_read_file(ckpt, &clen);
    ck_assert_uint_gt(clen, 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | c[i];
    ck_assert_uint_eq(hlen % 8, 0);
    ck_assert_uint_le(8 + hlen, clen);
    json_error_t jerr;
    json_t *hdr = json_loadb((const char *)c + 8, hlen, 0, &jerr);
    ck_assert_msg(hdr != NULL, "checkpoint header: %s", jerr.text);
    json_t *meta = json_object_get(hdr, "__metadata__");
    ck_assert_str_eq(json_string_value(json_object_get(meta, "format")), "pt");
    ck_assert_str_eq(json_string_value(json_object_get(meta, "plugin")), "mlp");
    ck_assert_str_eq(json_string_value(json_object_get(meta, "kernels")), default_kernels());
    ck_assert(json_object_get(hdr, "fc1.weight") != NULL);
    json_decref(hdr);
    free(c);

    /* metrics.csv: the header and one row per epoch. */
    char *metrics = fm_test_read_file(path_of(p, sizeof p, "%s/metrics.csv", res), NULL);
    ck_assert_int_eq(count_lines(metrics), 3);
    ck_assert_msg(!strncmp(metrics, FM_METRICS_HEADER "\n", strlen(FM_METRICS_HEADER) + 1), "%s", metrics);
    fm_metrics m = {0};
    ck_assert(fm_metrics_read_csv(p, &m) == FM_OK);
    ck_assert_int_eq(m.n, 2);
    ck_assert_int_eq(m.rows[0].epoch, 1);
    ck_assert_int_eq(m.rows[1].epoch, 2);
    free(metrics);

    /* summary.json agrees with the classification report and metrics.csv. */
    json_t *sum = json_load_file(path_of(p, sizeof p, "%s/summary.json", res), 0, &jerr);
    ck_assert_msg(sum != NULL, "%s: %s (line %d)", p, jerr.text, jerr.line);
    ck_assert_str_eq(json_string_value(json_object_get(sum, "model")), "mlp");
    ck_assert_str_eq(json_string_value(json_object_get(sum, "kernels")), default_kernels());
    ck_assert_int_eq(json_integer_value(json_object_get(sum, "epochs_run")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(sum, "num_params")), 235146);
    json_t *jacc = json_object_get(sum, "test_acc");
    ck_assert(json_is_number(jacc));
    double sum_acc = json_number_value(jacc);
    int support;
    double rep_acc = report_accuracy(path_of(p, sizeof p, "%s/classification_report.txt", res), &support);
    ck_assert_int_eq(support, 500);
    ck_assert_msg(fabs(sum_acc - rep_acc) <= 0.00005 + 1e-12, "summary %g vs report %g", sum_acc, rep_acc);
    ck_assert_msg(fabs(sum_acc - train_acc) <= 0.00005 + 1e-12, "summary %g vs stdout %g", sum_acc,
                  train_acc);
    int best = (int)json_integer_value(json_object_get(sum, "best_epoch"));
    ck_assert(best == fm_metrics_best(&m) + 1);
    ck_assert_double_eq_tol(json_number_value(json_object_get(sum, "val_loss")), m.rows[best - 1].val_loss,
                            1e-6);
    json_decref(sum);
    fm_metrics_free(&m);

    /* eval of the saved checkpoint reproduces the test results exactly: the
     * report files it rewrites are byte-identical. */
    char *report_before = fm_test_read_file(path_of(p, sizeof p, "%s/classification_report.txt", res), NULL);
    char *confusion_before = fm_test_read_file(path_of(p, sizeof p, "%s/confusion_matrix.csv", res), NULL);
    unlink(path_of(p, sizeof p, "%s/classification_report.txt", res));
    run(&r, "eval", "--model", "mlp", "--out", tmp, "--data-dir", SAMPLE_DIR, NULL);
    ck_assert_msg(r.status == 0, "eval: exit %d:\n%s", r.status, r.err);
    ck_assert_double_eq(stdout_accuracy(r.out), train_acc);
    const char *tl = strstr(train_out, "test loss"), *el = strstr(r.out, "test loss");
    ck_assert(tl && el);
    ck_assert_msg(!strncmp(tl, el, strlen("test loss 0.0000, test accuracy 0.0000")), "train: %s\neval: %s",
                  tl, el);
    char *report_after = fm_test_read_file(path_of(p, sizeof p, "%s/classification_report.txt", res), NULL);
    char *confusion_after = fm_test_read_file(path_of(p, sizeof p, "%s/confusion_matrix.csv", res), NULL);
    ck_assert_str_eq(report_after, report_before);
    ck_assert_str_eq(confusion_after, confusion_before);
    free(report_before), free(report_after), free(confusion_before), free(confusion_after);
    result_free(&r);
    free(train_out);

    /* eval without the data names the directory. */
    run(&r, "eval", "--model", "mlp", "--out", tmp, "--data-dir", "/nonexistent/fm", NULL);
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, "/nonexistent/fm");
    result_free(&r);

    /* report redraws the plots from metrics.csv. */
    unlink(path_of(p, sizeof p, "%s/loss.png", res));
    unlink(path_of(p, sizeof p, "%s/acc.png", res));
    run(&r, "report", res, NULL);
    ck_assert_msg(r.status == 0, "report: exit %d:\n%s", r.status, r.err);
    assert_png(path_of(p, sizeof p, "%s/loss.png", res));
    assert_png(path_of(p, sizeof p, "%s/acc.png", res));
    result_free(&r);
    run(&r, "report", tmp, NULL);  /* no metrics.csv there */
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, "metrics.csv");
    result_free(&r);

    /* A truncated checkpoint is refused, and nothing is written. */
    const size_t cuts[] = {4, 200, clen - 100};
    for (int i = 0; i < 3; i++) {
        char trunc[4300], out2[4300], *full;
        size_t flen;
        full = fm_test_read_file(ckpt, &flen);
        path_of(trunc, sizeof trunc, "%s/trunc%d.safetensors", tmp, i);
        fm_test_write_file(trunc, full, cuts[i]);
        free(full);
        path_of(out2, sizeof out2, "%s/out-trunc%d", tmp, i);
        run(&r, "eval", "--model", "mlp", "--weights", trunc, "--out", out2, "--data-dir", SAMPLE_DIR, NULL);
        ck_assert_msg(r.status == 1, "cut at %zu: exit %d:\n%s", cuts[i], r.status, r.err);
        ASSERT_HAS(r.err, trunc);
        ck_assert_int_eq(count_lines(r.err), 1);
        ck_assert(!exists(path_of(p, sizeof p, "%s/results/mlp/classification_report.txt", out2)));
        result_free(&r);
    }

    fm_test_rmtree(tmp);
    free(tmp);
}
END_TEST

START_TEST(test_cli_shape_mismatch)
{
    char *tmp = new_tmpdir();
    char ckpt[4200], out2[4200];
    path_of(ckpt, sizeof ckpt, "%s/artifacts/mlp_best.safetensors", tmp);
    cli_result r;
    run(&r, "train", "--model", "mlp", "--set", "hidden1=128", "--data-dir", SAMPLE_DIR, "--epochs", "1",
        "--limit", "200", "--out", tmp, "--quiet", "--threads", "1", NULL);
    ck_assert_msg(r.status == 0, "train: exit %d:\n%s", r.status, r.err);
    result_free(&r);

    path_of(out2, sizeof out2, "%s/other", tmp);
    run(&r, "eval", "--model", "mlp", "--set", "hidden1=256", "--weights", ckpt, "--out", out2,
        "--data-dir", SAMPLE_DIR, NULL);
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, ckpt);
    ASSERT_HAS(r.err, "fc1.weight");
    ASSERT_HAS(r.err, "[128, 784]");
    ASSERT_HAS(r.err, "[256, 784]");
    ck_assert_int_eq(count_lines(r.err), 1);
    result_free(&r);

    /* Without --set, eval takes the hyper-parameters from the checkpoint. */
    run(&r, "eval", "--model", "mlp", "--weights", ckpt, "--out", out2, "--data-dir", SAMPLE_DIR, NULL);
    ck_assert_msg(r.status == 0, "eval: exit %d:\n%s", r.status, r.err);
    result_free(&r);

    /* A checkpoint of another plugin does not fit. */
    run(&r, "eval", "--model", "cnn", "--weights", ckpt, "--out", out2, "--data-dir", SAMPLE_DIR, NULL);
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, ckpt);
    result_free(&r);

    fm_test_rmtree(tmp);
    free(tmp);
}
END_TEST

/* ---- reproducibility ------------------------------------------------------------------ */

START_TEST(test_cli_deterministic)
{
    const char *threads[3] = {"1", "1", "2"};
    char *dirs[3];
    for (int i = 0; i < 3; i++) {
        dirs[i] = new_tmpdir();
        cli_result r;
        run(&r, "train", "--model", "cnn", "--data-dir", SAMPLE_DIR, "--epochs", "2", "--limit", "300",
            "--batch-size", "32", "--seed", "5", "--augment", "--threads", threads[i], "--out", dirs[i],
            "--quiet", NULL);
        ck_assert_msg(r.status == 0, "train: exit %d:\n%s", r.status, r.err);
        result_free(&r);
    }
    char p[4400];
    int lines0;
    char *m0 = fm_test_metrics_without_seconds(path_of(p, sizeof p, "%s/results/cnn/metrics.csv", dirs[0]), &lines0);
    ck_assert_int_eq(lines0, 3);
    size_t len0;
    char *c0 = fm_test_read_file(path_of(p, sizeof p, "%s/artifacts/cnn_best.safetensors", dirs[0]), &len0);
    char *rep0 = fm_test_read_file(path_of(p, sizeof p, "%s/results/cnn/classification_report.txt", dirs[0]), NULL);
    for (int i = 1; i < 3; i++) {
        int lines;
        char *m = fm_test_metrics_without_seconds(path_of(p, sizeof p, "%s/results/cnn/metrics.csv", dirs[i]), &lines);
        ck_assert_msg(!strcmp(m, m0), "metrics differ (--threads 1 vs %s):\n%s---\n%s", threads[i], m0, m);
        size_t len;
        char *c = fm_test_read_file(path_of(p, sizeof p, "%s/artifacts/cnn_best.safetensors", dirs[i]), &len);
        ck_assert_msg(len == len0 && !memcmp(c, c0, len), "checkpoints differ (--threads 1 vs %s)",
                      threads[i]);
        char *rep = fm_test_read_file(path_of(p, sizeof p, "%s/results/cnn/classification_report.txt", dirs[i]), NULL);
        ck_assert_str_eq(rep, rep0);
        free(rep);
        free(c);
        free(m);
    }
    free(rep0);
    free(c0);
    free(m0);
    for (int i = 0; i < 3; i++) {
        fm_test_rmtree(dirs[i]);
        free(dirs[i]);
    }
}
END_TEST

/* The recipe options: recorded in summary.json, the checkpoint says it
 * holds the average, and `eval --tta` on the checkpoint gives the test
 * numbers of `train --tta`. */
START_TEST(test_cli_recipe_options)
{
    char *tmp = new_tmpdir();
    char p[4400];
    cli_result r;
    run(&r, "train", "--model", "cnn", "--data-dir", SAMPLE_DIR, "--epochs", "2", "--limit", "300",
        "--seed", "3", "--augment", "--out", tmp, "--quiet", "--no-track", "--label-smoothing", "0.1",
        "--ema", "0.8", "--tta", "--random-erasing", "0.25", "--scheduler", "onecycle", "--lr", "0.01",
        "--pct-start", "0.4", "--mixup", "0.3", "--cutmix", "1", NULL);
    ck_assert_msg(r.status == 0, "train: exit %d:\n%s", r.status, r.err);
    double train_acc = stdout_accuracy(r.out);
    result_free(&r);
    json_t *sum = json_load_file(path_of(p, sizeof p, "%s/results/cnn/summary.json", tmp), 0, NULL);
    ck_assert_ptr_nonnull(sum);
    json_t *o = json_object_get(sum, "options");
    ck_assert_ptr_nonnull(o);
    ck_assert_double_eq(json_number_value(json_object_get(o, "label_smoothing")), 0.1);
    ck_assert_double_eq(json_number_value(json_object_get(o, "ema")), 0.8);
    ck_assert(json_is_true(json_object_get(o, "tta")));
    ck_assert_double_eq(json_number_value(json_object_get(o, "random_erasing")), 0.25);
    ck_assert_str_eq(json_string_value(json_object_get(o, "scheduler")), "onecycle");
    ck_assert_double_eq(json_number_value(json_object_get(o, "pct_start")), 0.4);
    ck_assert_double_eq(json_number_value(json_object_get(o, "mixup")), 0.3);
    ck_assert_double_eq(json_number_value(json_object_get(o, "cutmix")), 1);
    ck_assert_double_eq_tol(json_number_value(json_object_get(sum, "test_acc")), train_acc, 1e-4);
    json_decref(sum);
    size_t len;
    char *ckpt = fm_test_read_file(path_of(p, sizeof p, "%s/artifacts/cnn_best.safetensors", tmp), &len);
    ck_assert_ptr_nonnull(memmem(ckpt, len, "\"ema\":\"0.8\"", 11));
    free(ckpt);
    run(&r, "eval", "--model", "cnn", "--data-dir", SAMPLE_DIR, "--out", tmp, "--no-track", "--tta", NULL);
    ck_assert_msg(r.status == 0, "eval: exit %d:\n%s", r.status, r.err);
    ck_assert_double_eq_tol(stdout_accuracy(r.out), train_acc, 1e-9);
    result_free(&r);
    fm_test_rmtree(tmp);
    free(tmp);
}
END_TEST

/* ---- progress output ---------------------------------------------------------------- */

START_TEST(test_cli_progress_lines)
{
    char *tmp = new_tmpdir();
    cli_result r;
    run(&r, "train", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--epochs", "3", "--limit", "300",
        "--out", tmp, "--threads", "1", "--patience", "0", NULL);
    ck_assert_msg(r.status == 0, "train: exit %d:\n%s", r.status, r.err);
    /* stderr is a file here: no bar, no carriage returns or escapes, one
     * plain line per epoch. */
    ck_assert_msg(!strchr(r.err, '\r') && !strchr(r.err, '\033'), "terminal codes in:\n%s", r.err);
    int epochs = 0;
    char *save = NULL;
    for (char *line = strtok_r(r.err, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int e, of;
        if (sscanf(line, "mlp epoch %d/%d", &e, &of) == 2) {
            ck_assert_int_eq(e, ++epochs);
            ck_assert_int_eq(of, 3);
            ck_assert_msg(strstr(line, "val loss") && strstr(line, "train loss"), "%s", line);
        }
    }
    ck_assert_int_eq(epochs, 3);
    ASSERT_HAS(r.out, "test accuracy");
    result_free(&r);
    fm_test_rmtree(tmp);
    free(tmp);
}
END_TEST

/* fmhost bench prints one JSON line with the reference script's keys and
 * its own, every rate positive. */
START_TEST(test_cli_bench_json)
{
    cli_result r;
    run(&r, "bench", "--model", "cnn", "--data-dir", SAMPLE_DIR, "--batches", "3", "--threads", "2",
        NULL);
    ck_assert_msg(r.status == 0, "bench: exit %d:\n%s", r.status, r.err);
    json_error_t jerr;
    json_t *j = json_loads(r.out, 0, &jerr);
    ck_assert_msg(j != NULL, "not JSON (%s): %s", jerr.text, r.out);
    ck_assert_str_eq(json_string_value(json_object_get(j, "model")), "cnn");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "params")), 421642);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "threads")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "batch")), 64);
    const char *rates[] = {"train_img_s", "eval_img_s", "gflops", "peak_rss_mb", "eval_peak_rss_mb"};
    for (int i = 0; i < 5; i++) {
        json_t *v = json_object_get(j, rates[i]);
        ck_assert_msg(json_is_number(v) && json_number_value(v) > 0.0, "%s in %s", rates[i], r.out);
    }
    /* The set that ran: $FMHOST_KERNELS when the test run forces one, else the best. */
    const char *kernels = json_string_value(json_object_get(j, "kernels"));
    ck_assert_msg(kernels && !strcmp(kernels, default_kernels()), "want \"kernels\": \"%s\" in %s",
                  default_kernels(), r.out);
    ck_assert_ptr_null(json_object_get(j, "kernel"));
    json_decref(j);
    result_free(&r);

    /* --kernels chooses the set, whatever $FMHOST_KERNELS says. */
    run_env(&r, "FMHOST_KERNELS=", "bench", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--batches",
            "2", "--threads", "1", "--kernels", "portable", NULL);
    ck_assert_msg(r.status == 0, "bench --kernels portable: exit %d:\n%s", r.status, r.err);
    j = json_loads(r.out, 0, &jerr);
    ck_assert_msg(j != NULL, "not JSON (%s): %s", jerr.text, r.out);
    ck_assert_str_eq(json_string_value(json_object_get(j, "kernels")), "portable");
    json_decref(j);
    result_free(&r);
}
END_TEST

/* ---- kernel sets -------------------------------------------------------------------- */

/* The sets this processor runs, as fmhost --version lists them. */
static const char *supported_list(void)
{
    static char list[64];
    list[0] = '\0';
    for (int k = 0; k < FM_KERNELS_COUNT; k++)
        if (fm_kernels_supported((fm_kernels)k))
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "",
                     fm_kernels_name((fm_kernels)k));
    return list;
}

START_TEST(test_cli_kernels_version)
{
    cli_result r;
    char want[160];
    run(&r, "--version", NULL);
    ck_assert_int_eq(r.status, 0);
    ASSERT_HAS(r.out, "fmhost " FM_VERSION_STRING);
    snprintf(want, sizeof want, "kernels: %s (this processor runs: %s)\n", default_kernels(),
             supported_list());
    ASSERT_HAS(r.out, want);
    result_free(&r);

    /* FMHOST_KERNELS chooses; empty means the best. */
    for (int k = 0; k < FM_KERNELS_COUNT; k++) {
        if (!fm_kernels_supported((fm_kernels)k)) continue;
        char env[64];
        snprintf(env, sizeof env, "FMHOST_KERNELS=%s", fm_kernels_name((fm_kernels)k));
        run_env(&r, env, "--version", NULL);
        ck_assert_msg(r.status == 0, "%s fmhost --version: exit %d:\n%s", env, r.status, r.err);
        snprintf(want, sizeof want, "kernels: %s (", fm_kernels_name((fm_kernels)k));
        ASSERT_HAS(r.out, want);
        result_free(&r);
    }
    run_env(&r, "FMHOST_KERNELS=", "--version", NULL);
    ck_assert_int_eq(r.status, 0);
    snprintf(want, sizeof want, "kernels: %s (", fm_kernels_name(fm_kernels_best()));
    ASSERT_HAS(r.out, want);
    result_free(&r);
}
END_TEST

/* A bad $FMHOST_KERNELS stops every command with a usage error naming the
 * variable and its value, before any work. */
START_TEST(test_cli_kernels_env_errors)
{
    const char *const cmds[][4] = {{"--version"}, {"plugins"}, {"train", "--model", "mlp"}};
    for (int i = 0; i < 3; i++) {
        cli_result r;
        run_env(&r, "FMHOST_KERNELS=bogus", cmds[i][0], cmds[i][1], cmds[i][2], NULL);
        ck_assert_msg(r.status == 2, "FMHOST_KERNELS=bogus fmhost %s: exit %d", cmds[i][0], r.status);
        ASSERT_HAS(r.err, "FMHOST_KERNELS=bogus");
        ASSERT_HAS(r.err, "portable");
        ck_assert_int_eq(count_lines(r.err), 1);
        ck_assert_str_eq(r.out, "");
        result_free(&r);
    }
}
END_TEST

/* Forcing a set the processor lacks is a usage error naming the set and
 * the ones it runs.  Only a processor without some set can show it: on one
 * that runs all three (AVX-512, e.g. the Zen 4 this was written on) the
 * loop finds nothing to check, and says so. */
START_TEST(test_cli_kernels_unsupported)
{
    int checked = 0;
    for (int k = 0; k < FM_KERNELS_COUNT; k++) {
        if (fm_kernels_supported((fm_kernels)k)) continue;
        const char *name = fm_kernels_name((fm_kernels)k);
        cli_result r;
        run(&r, "bench", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--kernels", name, NULL);
        ck_assert_msg(r.status == 2, "--kernels %s: exit %d:\n%s", name, r.status, r.err);
        ASSERT_HAS(r.err, name);
        ASSERT_HAS(r.err, supported_list());
        ck_assert_str_eq(r.out, "");
        result_free(&r);
        char env[64];
        snprintf(env, sizeof env, "FMHOST_KERNELS=%s", name);
        run_env(&r, env, "--version", NULL);
        ck_assert_msg(r.status == 2, "%s: exit %d", env, r.status);
        ASSERT_HAS(r.err, env);
        ASSERT_HAS(r.err, supported_list());
        result_free(&r);
        checked++;
    }
    if (!checked) fprintf(stderr, "test_cli_kernels_unsupported: this processor runs every kernel "
                                  "set (%s); nothing to refuse\n", supported_list());
}
END_TEST

/* --kernels on train: the run uses the set, and its checkpoint metadata and
 * summary.json name it; eval of that checkpoint on the same set reproduces
 * the test accuracy. */
START_TEST(test_cli_kernels_train)
{
    char *tmp = new_tmpdir();
    char p[4400];
    cli_result r;
    run(&r, "train", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--epochs", "1", "--limit", "300",
        "--out", tmp, "--quiet", "--threads", "1", "--kernels", "portable", NULL);
    ck_assert_msg(r.status == 0, "train --kernels portable: exit %d:\n%s", r.status, r.err);
    double acc = stdout_accuracy(r.out);
    result_free(&r);

    json_error_t jerr;
    json_t *sum = json_load_file(path_of(p, sizeof p, "%s/results/mlp/summary.json", tmp), 0, &jerr);
    ck_assert_msg(sum != NULL, "%s: %s", p, jerr.text);
    ck_assert_str_eq(json_string_value(json_object_get(sum, "kernels")), "portable");
    json_decref(sum);

    size_t clen;
    unsigned char *c = (unsigned char *)fm_test_read_file(
        path_of(p, sizeof p, "%s/artifacts/mlp_best.safetensors", tmp), &clen);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | c[i];
    ck_assert_uint_le(8 + hlen, clen);
    json_t *hdr = json_loadb((const char *)c + 8, hlen, 0, &jerr);
    ck_assert_msg(hdr != NULL, "checkpoint header: %s", jerr.text);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(hdr, "__metadata__"), "kernels")),
                     "portable");
    json_decref(hdr);
    free(c);

    run(&r, "eval", "--model", "mlp", "--out", tmp, "--data-dir", SAMPLE_DIR, "--kernels", "portable",
        NULL);
    ck_assert_msg(r.status == 0, "eval: exit %d:\n%s", r.status, r.err);
    ck_assert_double_eq(stdout_accuracy(r.out), acc);
    ASSERT_HAS(r.out, "portable kernels");
    result_free(&r);

    fm_test_rmtree(tmp);
    free(tmp);
}
END_TEST

/* ---- --save-dtype ----------------------------------------------------------------- */

/* A safetensors file's parsed header; *file gets the whole file (free it)
 * and *data the start of its data section. */
static json_t *st_header(const char *path, char **file, const unsigned char **data)
{
    size_t len;
    *file = fm_test_read_file(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (unsigned char)(*file)[i];
    ck_assert_uint_le(8 + hlen, len);
    json_error_t jerr;
    json_t *hdr = json_loadb(*file + 8, hlen, 0, &jerr);
    ck_assert_msg(hdr != NULL, "%s: header: %s", path, jerr.text);
    *data = (const unsigned char *)*file + 8 + hlen;
    return hdr;
}

static json_int_t offset_of(json_t *desc, int which)
{
    return json_integer_value(json_array_get(json_object_get(desc, "data_offsets"), (size_t)which));
}

/* train --save-dtype bf16 keeps the float32 checkpoint and writes beside it
 * the best weights as BF16: the same tensors and metadata plus "dtype":
 * "bf16", every value fm_bf16_from_f32 of the checkpoint's, I64 as is.
 * eval --weights loads it.  Lua's save_dtype does the same. */
START_TEST(test_cli_save_dtype_bf16)
{
    char *tmp = new_tmpdir();
    char ckpt[4200], half[4200], out2[4200], p[4400];
    path_of(ckpt, sizeof ckpt, "%s/artifacts/mlp_best.safetensors", tmp);
    path_of(half, sizeof half, "%s/artifacts/mlp_best.bf16.safetensors", tmp);
    cli_result r;
    run(&r, "train", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--epochs", "2", "--limit", "300",
        "--out", tmp, "--quiet", "--threads", "1", "--save-dtype", "bf16", NULL);
    ck_assert_msg(r.status == 0, "train --save-dtype bf16: exit %d:\n%s", r.status, r.err);
    double acc = stdout_accuracy(r.out);
    result_free(&r);
    ck_assert_msg(exists(half), "%s missing", half);
    assert_no_tmp_files(tmp);

    char *ffile, *hfile;
    const unsigned char *fdata, *hdata;
    json_t *fh = st_header(ckpt, &ffile, &fdata), *hh = st_header(half, &hfile, &hdata);
    json_t *fmeta = json_object_get(fh, "__metadata__"), *hmeta = json_object_get(hh, "__metadata__");
    ck_assert_ptr_null(json_object_get(fmeta, "dtype"));
    ck_assert_str_eq(json_string_value(json_object_get(hmeta, "dtype")), "bf16");
    ck_assert_uint_eq(json_object_size(hmeta), json_object_size(fmeta) + 1);
    const char *key;
    json_t *value;
    json_object_foreach(fmeta, key, value) {
        const char *got = json_string_value(json_object_get(hmeta, key));
        ck_assert_msg(got && !strcmp(got, json_string_value(value)), "metadata \"%s\": %s, want %s",
                      key, got ? got : "(none)", json_string_value(value));
    }
    ck_assert_uint_eq(json_object_size(hh), json_object_size(fh));
    int floats = 0;
    json_object_foreach(fh, key, value) {
        if (!strcmp(key, "__metadata__")) continue;
        json_t *hd = json_object_get(hh, key);
        ck_assert_msg(hd != NULL, "%s missing from %s", key, half);
        ck_assert(json_equal(json_object_get(value, "shape"), json_object_get(hd, "shape")));
        const char *fdt = json_string_value(json_object_get(value, "dtype"));
        const char *hdt = json_string_value(json_object_get(hd, "dtype"));
        json_int_t fb = offset_of(value, 0), fe = offset_of(value, 1), hb = offset_of(hd, 0);
        if (!strcmp(fdt, "I64")) {
            ck_assert_str_eq(hdt, "I64");
            ck_assert_int_eq(offset_of(hd, 1) - hb, fe - fb);
            ck_assert(memcmp(fdata + fb, hdata + hb, (size_t)(fe - fb)) == 0);
            continue;
        }
        ck_assert_str_eq(fdt, "F32");
        ck_assert_msg(!strcmp(hdt, "BF16"), "%s: dtype %s", key, hdt);
        ck_assert_int_eq(offset_of(hd, 1) - hb, (fe - fb) / 2);
        for (json_int_t i = 0; i < (fe - fb) / 4; i++) {
            float f;
            uint16_t h;
            memcpy(&f, fdata + fb + 4 * i, 4);
            memcpy(&h, hdata + hb + 2 * i, 2);
            if (h != fm_bf16_from_f32(f))
                ck_abort_msg("%s[%lld]: %04x, want %04x", key, (long long)i, h, fm_bf16_from_f32(f));
            floats++;
        }
    }
    ck_assert_int_eq(floats, 235146);
    json_decref(fh);
    json_decref(hh);
    free(ffile);
    free(hfile);

    /* eval loads the BF16 file: its accuracy is the rounded weights', near
     * the float32 one's. */
    path_of(out2, sizeof out2, "%s/bf16-eval", tmp);
    run(&r, "eval", "--model", "mlp", "--weights", half, "--out", out2, "--data-dir", SAMPLE_DIR, NULL);
    ck_assert_msg(r.status == 0, "eval of %s: exit %d:\n%s", half, r.status, r.err);
    double half_acc = stdout_accuracy(r.out);
    ck_assert_msg(fabs(half_acc - acc) <= 0.02, "bf16 accuracy %g, float32 %g", half_acc, acc);
    result_free(&r);

    /* Lua: save_dtype = "bf16" writes the same file; another name is refused. */
    char script[4300], out_arg[4300], data_arg[4300];
    path_of(script, sizeof script, "%s/bf16.lua", tmp);
    path_of(out_arg, sizeof out_arg, "out=%s/lua", tmp);
    path_of(data_arg, sizeof data_arg, "data=%s", SAMPLE_DIR);
    const char *body = "local fm = require 'fm'\n"
                       "fm.train{plugin = 'mlp', data_dir = fm.args.data, out = fm.args.out,\n"
                       "  epochs = 1, limit = 300, quiet = true, threads = 1, report = false,\n"
                       "  save_dtype = fm.args.dtype}\n";
    fm_test_write_file(script, body, strlen(body));
    run(&r, "script", script, out_arg, data_arg, "dtype=bf16", NULL);
    ck_assert_msg(r.status == 0, "fm.train{save_dtype = 'bf16'}: exit %d:\n%s", r.status, r.err);
    ck_assert_msg(exists(path_of(p, sizeof p, "%s/lua/artifacts/mlp_best.bf16.safetensors", tmp)),
                  "%s missing", p);
    result_free(&r);
    run(&r, "script", script, out_arg, data_arg, "dtype=f8", NULL);
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, "bf16.lua:2");
    ASSERT_HAS(r.err, "save_dtype");
    ASSERT_HAS(r.err, "'f8'");
    result_free(&r);

    fm_test_rmtree(tmp);
    free(tmp);
}
END_TEST

/* ---- --precision ------------------------------------------------------------------ */

/* train --precision bf16 records the precision in summary.json and the
 * checkpoint's metadata, trains to other weights than fp32, and its
 * checkpoint evaluates in either precision; bench reports it. */
START_TEST(test_cli_precision_bf16)
{
    char *tmp = new_tmpdir();
    char p[4400], out32[4400], out16[4400];
    cli_result r;
    path_of(out32, sizeof out32, "%s/fp32", tmp);
    path_of(out16, sizeof out16, "%s/bf16", tmp);
    const char *outs[2] = {out32, out16}, *names[2] = {"fp32", "bf16"};
    char *ckpt[2];
    const unsigned char *data[2];
    size_t dlen[2];
    for (int k = 0; k < 2; k++) {
        run(&r, "train", "--model", "cnn", "--data-dir", SAMPLE_DIR, "--epochs", "1", "--limit",
            "200", "--out", outs[k], "--quiet", "--threads", "2", "--precision", names[k], NULL);
        ck_assert_msg(r.status == 0, "train --precision %s: exit %d:\n%s", names[k], r.status, r.err);
        result_free(&r);
        json_error_t jerr;
        json_t *sum = json_load_file(path_of(p, sizeof p, "%s/results/cnn/summary.json", outs[k]),
                                     0, &jerr);
        ck_assert_msg(sum != NULL, "%s: %s", p, jerr.text);
        ck_assert_str_eq(json_string_value(json_object_get(sum, "precision")), names[k]);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(sum, "options"),
                                                           "precision")), names[k]);
        json_decref(sum);
        json_t *hdr = st_header(path_of(p, sizeof p, "%s/artifacts/cnn_best.safetensors", outs[k]),
                                &ckpt[k], &data[k]);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(hdr, "__metadata__"),
                                                           "precision")), names[k]);
        size_t len;
        free(fm_test_read_file(p, &len));
        dlen[k] = len - (size_t)(data[k] - (const unsigned char *)ckpt[k]);
        json_decref(hdr);
    }
    /* bf16 arithmetic trains other weights: the data sections differ. */
    ck_assert(dlen[0] == dlen[1] && memcmp(data[0], data[1], dlen[0]) != 0);
    free(ckpt[0]);
    free(ckpt[1]);

    run(&r, "eval", "--model", "cnn", "--out", out16, "--data-dir", SAMPLE_DIR, "--precision",
        "bf16", NULL);
    ck_assert_msg(r.status == 0, "eval --precision bf16: exit %d:\n%s", r.status, r.err);
    ASSERT_HAS(r.out, "bf16");
    result_free(&r);

    run(&r, "bench", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--batches", "2", "--threads", "1",
        "--precision", "bf16", NULL);
    ck_assert_msg(r.status == 0, "bench --precision bf16: exit %d:\n%s", r.status, r.err);
    json_error_t jerr;
    json_t *j = json_loads(r.out, 0, &jerr);
    ck_assert_msg(j != NULL, "not JSON (%s): %s", jerr.text, r.out);
    ck_assert_str_eq(json_string_value(json_object_get(j, "precision")), "bf16");
    json_decref(j);
    result_free(&r);

    /* Lua: precision = "bf16", read back as run.precision; another name is refused. */
    char script[4300], out_arg[4300], data_arg[4300];
    path_of(script, sizeof script, "%s/prec.lua", tmp);
    path_of(out_arg, sizeof out_arg, "out=%s/lua", tmp);
    path_of(data_arg, sizeof data_arg, "data=%s", SAMPLE_DIR);
    const char *body = "local fm = require 'fm'\n"
                       "local run = fm.train{plugin = 'mlp', data_dir = fm.args.data, out = fm.args.out,\n"
                       "  epochs = 1, limit = 300, quiet = true, threads = 1, report = false,\n"
                       "  precision = fm.args.p}\n"
                       "print('precision=' .. run.precision)\n";
    fm_test_write_file(script, body, strlen(body));
    run(&r, "script", script, out_arg, data_arg, "p=bf16", NULL);
    ck_assert_msg(r.status == 0, "fm.train{precision = 'bf16'}: exit %d:\n%s", r.status, r.err);
    ASSERT_HAS(r.out, "precision=bf16");
    result_free(&r);
    run(&r, "script", script, out_arg, data_arg, "p=fp16", NULL);
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, "prec.lua:2");
    ASSERT_HAS(r.err, "precision");
    ASSERT_HAS(r.err, "'fp16'");
    result_free(&r);

    fm_test_rmtree(tmp);
    free(tmp);
}
END_TEST

static Suite *cli_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("fmhost");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_cli_help);
    tcase_add_test(tc, test_cli_usage_errors);
    tcase_add_test(tc, test_cli_missing_data);
    tcase_add_test(tc, test_cli_bad_plugin);
    tcase_add_test(tc, test_cli_plugins);
    tcase_add_test(tc, test_cli_train_pipeline);
    tcase_add_test(tc, test_cli_shape_mismatch);
    tcase_add_test(tc, test_cli_deterministic);
    tcase_add_test(tc, test_cli_recipe_options);
    tcase_add_test(tc, test_cli_progress_lines);
    tcase_add_test(tc, test_cli_bench_json);
    tcase_add_test(tc, test_cli_kernels_version);
    tcase_add_test(tc, test_cli_kernels_env_errors);
    tcase_add_test(tc, test_cli_kernels_unsupported);
    tcase_add_test(tc, test_cli_kernels_train);
    tcase_add_test(tc, test_cli_save_dtype_bf16);
    tcase_add_test(tc, test_cli_precision_bf16);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return fm_test_run(cli_suite());
}
