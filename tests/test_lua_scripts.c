/* test_lua_scripts — the shipped scripts, run end to end by the fmhost binary
 * on data/sample with few epochs and images: each must exit 0 and leave its
 * table, CSV and plot; a failing script must exit non-zero with its file:line. */
#define _GNU_SOURCE
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm_test_util.h"

extern char **environ;

#define FMHOST FM_BINARY_DIR "/fmhost"
#define SAMPLE FM_SOURCE_DIR "/data/sample"

/* PLplot's cairo driver keeps fontconfig and Pango caches until exit. */
const char *__lsan_default_suppressions(void);
__attribute__((used)) const char *__lsan_default_suppressions(void)
{
    return "leak:libfontconfig.so\nleak:libpango\n";
}

static char g_out[4096];  /* this test's directory */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void setup(void) { snprintf(g_out, sizeof g_out, "%s", fm_test_tmpdir()); }

static void teardown(void)
{
    if (g_out[0]) nftw(g_out, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Runs `fmhost script <args...>` in g_out with stdout and stderr in
 * g_out/log.txt; returns the exit status. */
static int fmhost_script(const char *const *args)
{
    ck_assert_msg(access(FMHOST, X_OK) == 0, "%s is not built", FMHOST);
    char log[4200];
    snprintf(log, sizeof log, "%s/log.txt", g_out);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)FMHOST;
    argv[n++] = (char *)"script";
    for (; *args && n < 31; args++) argv[n++] = (char *)*args;
    argv[n] = NULL;
    pid_t pid;
    ck_assert_int_eq(posix_spawn(&pid, FMHOST, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "fmhost died from a signal");
    return WEXITSTATUS(status);
}

static char *slurp(const char *name)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", g_out, name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s was not written", path);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static void check_png(const char *name)
{
    const char *png = slurp(name);
    ck_assert_msg(memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0, "%s is not a PNG", name);
}

static const char *out_arg(void)
{
    static char arg[4200];
    snprintf(arg, sizeof arg, "out=%s", g_out);
    return arg;
}

START_TEST(test_compare_all_quick)
{
    const char *args[] = {FM_SOURCE_DIR "/scripts/compare_all.lua", "epochs=1", "limit=1000",
                          "data=" SAMPLE, out_arg(), "quiet=true", NULL};
    int rc = fmhost_script(args);
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, slurp("log.txt"));

    const char *md = slurp("results/comparison.md");
    ck_assert_msg(strstr(md, "| model ") && strstr(md, "test acc") && strstr(md, "recipe"), "%s", md);
    ck_assert_msg(strstr(md, "| mlp ") && strstr(md, "| cnn ") && strstr(md, "| rescnn "), "%s", md);
    ck_assert_msg(strstr(md, "cosine") && strstr(md, "crop+flip"), "the recipe: %s", md);
    ck_assert_msg(strstr(md, "235146") && strstr(md, "421642") && strstr(md, "308074"), "%s", md);
    ck_assert_ptr_null(strstr(md, "Partial"));

    const char *csv = slurp("results/comparison.csv");
    ck_assert_msg(!strncmp(csv, "model,recipe,params,epochs,best_epoch,val_acc,test_acc,", 55),
                  "%s", csv);
    ck_assert_int_eq(count_lines(csv), 4);
    check_png("results/comparison_val_acc.png");
    /* And what fmhost train leaves, per model. */
    slurp("artifacts/rescnn_best.safetensors");
    slurp("results/cnn/metrics.csv");
}
END_TEST

START_TEST(test_compare_all_arguments_checked)
{
    const char *args[] = {FM_SOURCE_DIR "/scripts/compare_all.lua", "models=mlp,vgg", out_arg(),
                          NULL};
    ck_assert_int_eq(fmhost_script(args), 1);
    const char *log = slurp("log.txt");
    ck_assert_msg(strstr(log, "unknown model 'vgg'"), "%s", log);
}
END_TEST

START_TEST(test_seeds_quick)
{
    const char *args[] = {FM_SOURCE_DIR "/scripts/seeds.lua", "seeds=1,2", "models=mlp",
                          "epochs=1", "limit=300", "data=" SAMPLE, out_arg(), "quiet=true", NULL};
    int rc = fmhost_script(args);
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, slurp("log.txt"));
    const char *md = slurp("results/seeds.md");
    ck_assert_msg(strstr(md, "| mlp ") && strstr(md, " ± "), "%s", md);
    const char *csv = slurp("results/seeds.csv");
    ck_assert_msg(!strncmp(csv, "model,recipe,n,mean,std,", 24), "%s", csv);
    ck_assert_int_eq(count_lines(csv), 2);
    slurp("runs/seed-2/results/mlp/metrics.csv");
}
END_TEST

/* best.lua runs its own recipe through seeds.lua: its own table with the
 * plain protocol's row and the accuracy per class, its own run directories
 * (a row each: both train rescnn), the recipe's options in the summaries. */
START_TEST(test_best_quick)
{
    const char *args[] = {FM_SOURCE_DIR "/scripts/best.lua", "seeds=3", "epochs=1", "limit=200",
                          "width=4", "data=" SAMPLE, out_arg(), "quiet=true", NULL};
    int rc = fmhost_script(args);
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, slurp("log.txt"));
    const char *md = slurp("results/best.md");
    ck_assert_msg(strstr(md, "# FashionMNIST: the best ResCNN recipe") && strstr(md, "| rescnn ") &&
                  strstr(md, "| rescnn-plain ") && strstr(md, "seeds 3,") &&
                  strstr(md, "| class ") && strstr(md, "| Shirt "), "%s", md);
    ck_assert_int_eq(count_lines(slurp("results/best.csv")), 3);
    const char *summary = slurp("runs/best/rescnn/seed-3/results/rescnn/summary.json");
    ck_assert_msg(strstr(summary, "\"ema\": 0.999,") && strstr(summary, "\"scheduler\": \"onecycle\"") &&
                  strstr(summary, "\"tta\": true,") && strstr(summary, "\"epochs_run\": 1,") &&
                  strstr(summary, "\"width\": 4,"), "%s", summary);
    summary = slurp("runs/best/rescnn-plain/seed-3/results/rescnn/summary.json");
    ck_assert_msg(strstr(summary, "\"optimizer\": \"adam\"") && strstr(summary, "\"ema\": 0,") &&
                  strstr(summary, "\"width\": 4,"), "%s", summary);
}
END_TEST

START_TEST(test_schedules_quick)
{
    const char *args[] = {FM_SOURCE_DIR "/scripts/schedules.lua", "model=mlp", "epochs=2",
                          "limit=300", "data=" SAMPLE, out_arg(), "quiet=true", NULL};
    int rc = fmhost_script(args);
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, slurp("log.txt"));
    const char *md = slurp("results/schedules.md");
    ck_assert_msg(strstr(md, "| constant ") && strstr(md, "| step ") && strstr(md, "| cosine ") &&
                  strstr(md, "| lua "), "%s", md);
    ck_assert_int_eq(count_lines(slurp("results/schedules.csv")), 9);  /* header + 4 x 2 */
    check_png("results/schedules_val_acc.png");
}
END_TEST

START_TEST(test_script_error_exit_status)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/broken.lua", g_out);
    const char *src = "local fm = require 'fm'\n"
                      "fm.write_markdown(arg[1] .. '/before.md', 'written before the error')\n"
                      "local t = nil\n"
                      "print(t.field)\n";
    fm_test_write_file(path, src, strlen(src));
    const char *args[] = {path, g_out, NULL};
    ck_assert_int_eq(fmhost_script(args), 1);
    const char *log = slurp("log.txt");
    ck_assert_msg(strstr(log, "broken.lua:4: attempt to index a nil value"), "%s", log);
    ck_assert_msg(strstr(log, "stack traceback:"), "%s", log);
    ck_assert_str_eq(slurp("before.md"), "written before the error\n");

    /* A C-side error surfaces with the core's message and the script's line. */
    const char *src2 = "local fm = require 'fm'\n\nfm.plugin('/nonexistent/model.so')\n";
    fm_test_write_file(path, src2, strlen(src2));
    ck_assert_int_eq(fmhost_script(args), 1);
    log = slurp("log.txt");
    ck_assert_msg(strstr(log, "broken.lua:3: fm.plugin:") && strstr(log, "/nonexistent/model.so"),
                  "%s", log);
}
END_TEST

/* fmhost script --kernels NAME: the script's runs use the set (fm.kernels()
 * says so); what follows the file belongs to the script, even --kernels. */
START_TEST(test_script_kernels)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/kernels.lua", g_out);
    const char *src = "local fm = require 'fm'\n"
                      "local name, supported = fm.kernels()\n"
                      "print('kernels=' .. name .. ' supported=' .. table.concat(supported, ','))\n"
                      "print('args=' .. table.concat(arg, ' '))\n";
    fm_test_write_file(path, src, strlen(src));
    const char *args[] = {"--kernels", "portable", path, "--kernels", "avx512", NULL};
    int rc = fmhost_script(args);
    const char *log = slurp("log.txt");
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, log);
    ck_assert_msg(strstr(log, "kernels=portable supported=portable"), "%s", log);
    ck_assert_msg(strstr(log, "args=--kernels avx512"), "%s", log);

    const char *bad[] = {"--kernels", "bogus", path, NULL};
    ck_assert_int_eq(fmhost_script(bad), 2);
    log = slurp("log.txt");
    ck_assert_msg(strstr(log, "--kernels 'bogus'") && strstr(log, "portable"), "%s", log);
    ck_assert_msg(!strstr(log, "kernels="), "the script ran: %s", log);
}
END_TEST

static Suite *scripts_suite(void)
{
    Suite *s = suite_create("lua_scripts");
    TCase *tc = tcase_create("scripts");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_compare_all_quick);
    tcase_add_test(tc, test_compare_all_arguments_checked);
    tcase_add_test(tc, test_seeds_quick);
    tcase_add_test(tc, test_best_quick);
    tcase_add_test(tc, test_schedules_quick);
    tcase_add_test(tc, test_script_error_exit_status);
    tcase_add_test(tc, test_script_kernels);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(scripts_suite()); }
