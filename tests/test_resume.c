/* Integration tests of stopping and resuming a run: a run killed at chosen
 * steps (SIGKILL: nothing saved since the last epoch end; SIGINT: the
 * current step finishes and the state is saved mid-epoch), resumed each
 * time, must end with the best checkpoint byte-identical to a run never
 * stopped and the same metrics.csv but for its seconds column -- for mlp,
 * cnn and rescnn, on every kernel set, with the thread count changed on
 * resume.  The kill comes from the run itself, an on_step callback of a Lua
 * script signalling its own process at an exact step, so each test stops
 * where it says.  Also: divergence, and what it leaves behind. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm_test_util.h"

#define FMHOST FM_BINARY_DIR "/fmhost"
#define SAMPLE_DIR FM_SOURCE_DIR "/data/sample"

/* Trains with the options given as KEY=VALUE arguments, and at global step
 * `kill_at` sends `signal` to its own process (popen, not os.execute:
 * system() would ignore the SIGINT it provokes). */
static const char kill_script[] =
    "local fm = require \"fm\"\n"
    "local a = fm.args\n"
    "local kill_at = tonumber(a.kill_at)\n"
    "fm.train{plugin = a.model, set = a.width and {width = tonumber(a.width)} or nil,\n"
    "  epochs = tonumber(a.epochs), limit = tonumber(a.limit), seed = 7, augment = true,\n"
    "  data_dir = a.data, out = a.out, threads = tonumber(a.threads), quiet = true,\n"
    "  resume = a.resume == \"1\",\n"
    "  ema = a.ema and tonumber(a.ema), label_smoothing = a.ls and tonumber(a.ls),\n"
    "  scheduler = a.sched, random_erasing = a.re and tonumber(a.re),\n"
    "  mixup = a.mixup and tonumber(a.mixup), cutmix = a.cutmix and tonumber(a.cutmix),\n"
    "  on_step = function(s)\n"
    "    if s.global_step == kill_at then io.popen(\"kill -\" .. a.signal .. \" $PPID\"):close() end\n"
    "  end}\n";

typedef struct run_case {
    const char *model, *width;  /* width: rescnn's, smaller for speed (NULL: the default) */
    const char *kernels;        /* FMHOST_KERNELS for every child (NULL: the default set) */
    bool recipe;                /* with the options of `recipe` */
} run_case;

/* The recipe options the recipe case trains with: the command line's
 * flag, the kill script's argument, the value. */
#define RECIPE_EMA "0.9"
#define RECIPE_N 6
static const struct {
    const char *flag, *arg, *value;
} recipe[RECIPE_N] = {
    {"--ema", "ema", RECIPE_EMA}, {"--label-smoothing", "ls", "0.1"},
    {"--scheduler", "sched", "onecycle"}, {"--random-erasing", "re", "0.5"},
    {"--mixup", "mixup", "0.4"}, {"--cutmix", "cutmix", "1"},
};

static const char *tmp;  /* this test's directory */

/* Runs argv (FMHOST first), stdout and stderr to files; returns the exit
 * status (128 + signal when killed). */
static int spawn(const run_case *rc, char *const *argv)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char log[4200];
        snprintf(log, sizeof log, "%s/child.log", tmp);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int null = open("/dev/null", O_RDONLY);
        if (fd < 0 || null < 0) _exit(126);
        dup2(null, 0), dup2(fd, 1), dup2(fd, 2);
        unsetenv("FMHOST_DATA");
        if (rc->kernels) setenv("FMHOST_KERNELS", rc->kernels, 1);
        execv(FMHOST, argv);
        _exit(127);
    }
    int ws;
    ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

#define EPOCHS "3"
#define LIMIT "320"  /* 5 steps an epoch */

/* fmhost train with the protocol of these tests into `out`. */
static int train_cli(const run_case *rc, const char *out, const char *threads, bool resume)
{
    char set[64];
    snprintf(set, sizeof set, "width=%s", rc->width ? rc->width : "32");
    char *argv[40] = {FMHOST, "train", "--model", (char *)rc->model, "--epochs", EPOCHS,
                      "--limit", LIMIT, "--seed", "7", "--augment", "--data-dir", SAMPLE_DIR,
                      "--out", (char *)out, "--threads", (char *)threads, "--quiet"};
    int n = 18;
    if (rc->width) argv[n++] = "--set", argv[n++] = set;
    for (int k = 0; rc->recipe && k < RECIPE_N; k++)
        argv[n++] = (char *)recipe[k].flag, argv[n++] = (char *)recipe[k].value;
    if (resume) argv[n++] = "--resume";
    argv[n] = NULL;
    return spawn(rc, argv);
}

/* The same run through the Lua script, signalled at global step kill_at. */
static int train_killed(const run_case *rc, const char *out, int kill_at, const char *signal,
                        bool resume)
{
    char script[4200], a[10 + RECIPE_N][4200];
    snprintf(script, sizeof script, "%s/kill.lua", tmp);
    snprintf(a[0], sizeof a[0], "model=%s", rc->model);
    snprintf(a[1], sizeof a[1], "epochs=%s", EPOCHS);
    snprintf(a[2], sizeof a[2], "limit=%s", LIMIT);
    snprintf(a[3], sizeof a[3], "data=%s", SAMPLE_DIR);
    snprintf(a[4], sizeof a[4], "out=%s", out);
    snprintf(a[5], sizeof a[5], "threads=2");
    snprintf(a[6], sizeof a[6], "kill_at=%d", kill_at);
    snprintf(a[7], sizeof a[7], "signal=%s", signal);
    snprintf(a[8], sizeof a[8], "resume=%d", resume);
    snprintf(a[9], sizeof a[9], "width=%s", rc->width ? rc->width : "");
    for (int k = 0; k < RECIPE_N; k++)
        snprintf(a[10 + k], sizeof a[10 + k], "%s=%s", recipe[k].arg, recipe[k].value);
    char *argv[16 + RECIPE_N] = {FMHOST, "script", script};
    int n = 3;
    for (int i = 0; i < 10 + RECIPE_N; i++)
        if (i < 9 || (i == 9 && rc->width) || (i >= 10 && rc->recipe)) argv[n++] = a[i];
    argv[n] = NULL;
    return spawn(rc, argv);
}

static char *path_in(const char *out, const char *file)
{
    static char buf[4][8600];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", out, file);
    return p;
}

/* The best checkpoint of `out` is byte-identical to the reference's, and
 * its metrics.csv the same but for the seconds. */
static void assert_same_run(const run_case *rc, const char *ref, const char *out)
{
    char file[256];
    snprintf(file, sizeof file, "artifacts/%s_best.safetensors", rc->model);
    size_t la, lb;
    char *a = fm_test_read_file(path_in(ref, file), &la), *b = fm_test_read_file(path_in(out, file), &lb);
    ck_assert_msg(la == lb && memcmp(a, b, la) == 0, "%s (%s kernels): %s differs from the "
                  "uninterrupted run's", rc->model, rc->kernels ? rc->kernels : "default", file);
    free(a);
    free(b);
    snprintf(file, sizeof file, "results/%s/metrics.csv", rc->model);
    int na, nb;
    a = fm_test_metrics_without_seconds(path_in(ref, file), &na);
    b = fm_test_metrics_without_seconds(path_in(out, file), &nb);
    ck_assert_int_eq(na, 4);  /* header and three epochs */
    ck_assert_msg(na == nb && strcmp(a, b) == 0, "%s: metrics differ:\n%s\nvs\n%s", rc->model, a, b);
    free(a);
    free(b);
}

/* A temporary file ("*.tmp.*") in dir. */
static bool tmp_files_in(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "%s", dir);
    bool found = false;
    for (struct dirent *e; (e = readdir(d)) != NULL;) found = found || strstr(e->d_name, ".tmp.");
    closedir(d);
    return found;
}

static void setup_dir(void)
{
    tmp = fm_test_tmpdir();
    char script[4200];
    snprintf(script, sizeof script, "%s/kill.lua", tmp);
    fm_test_write_file(script, kill_script, strlen(kill_script));
}

static const run_case model_cases[] = {
    {"mlp", NULL, NULL, false}, {"cnn", NULL, NULL, false}, {"rescnn", "8", NULL, false}};

/* Three stops in one run: SIGKILL in epoch 2 (nothing saved since epoch
 * 1's end), resumed by the script and stopped by SIGINT in epoch 3 (the step
 * finishes, the state is saved mid-epoch, exit 130), resumed by
 * `fmhost train --resume` with another thread count to the end. */
START_TEST(test_resume_after_kills)
{
    const run_case *rc = &model_cases[_i];
    setup_dir();
    char ref[4200], out[4200];
    snprintf(ref, sizeof ref, "%s/ref", tmp);
    snprintf(out, sizeof out, "%s/stopped", tmp);
    ck_assert_int_eq(train_cli(rc, ref, "2", false), 0);
    ck_assert_int_eq(train_killed(rc, out, 7, "KILL", false), 128 + 9);
    ck_assert_int_eq(train_killed(rc, out, 12, "INT", true), 130);
    /* Nothing half-written is left behind, and the report of the epochs
     * done says how the run stopped. */
    char results[256];
    snprintf(results, sizeof results, "results/%s", rc->model);
    ck_assert(!tmp_files_in(path_in(out, "artifacts")));
    ck_assert(!tmp_files_in(path_in(out, results)));
    snprintf(results, sizeof results, "results/%s/summary.json", rc->model);
    json_t *summary = json_load_file(path_in(out, results), 0, NULL);
    ck_assert_ptr_nonnull(summary);
    ck_assert_str_eq(json_string_value(json_object_get(summary, "status")), "interrupted");
    ck_assert_int_eq(json_integer_value(json_object_get(summary, "epochs_run")), 2);
    json_decref(summary);
    ck_assert_int_eq(train_cli(rc, out, "1", true), 0);
    assert_same_run(rc, ref, out);
}
END_TEST

/* The recipe options (the weights' moving average, label smoothing, the
 * one-cycle schedule, random erasing, mixup and cutmix) resume
 * exactly too: SIGKILL in epoch 2, SIGINT mid-epoch 3, resumed with another
 * thread count; and a resume under another --ema is refused. */
START_TEST(test_resume_recipe)
{
    run_case rc = {"rescnn", "8", NULL, true};
    setup_dir();
    char ref[4200], out[4200];
    snprintf(ref, sizeof ref, "%s/ref", tmp);
    snprintf(out, sizeof out, "%s/stopped", tmp);
    ck_assert_int_eq(train_cli(&rc, ref, "2", false), 0);
    ck_assert_int_eq(train_killed(&rc, out, 7, "KILL", false), 128 + 9);
    ck_assert_int_eq(train_killed(&rc, out, 12, "INT", true), 130);
    run_case plain = {"rescnn", "8", NULL, false};
    ck_assert_int_eq(train_cli(&plain, out, "1", true), 2);  /* a usage error */
    ck_assert_int_eq(train_cli(&rc, out, "1", true), 0);
    assert_same_run(&rc, ref, out);
    /* The average is what was checkpointed: not the plain run's weights. */
    ck_assert_int_eq(train_cli(&plain, path_in(tmp, "plain"), "2", false), 0);
    size_t la, lb;
    char *a = fm_test_read_file(path_in(ref, "artifacts/rescnn_best.safetensors"), &la);
    char *b = fm_test_read_file(path_in(tmp, "plain/artifacts/rescnn_best.safetensors"), &lb);
    ck_assert(la != lb || memcmp(a, b, la) != 0);
    const char meta[] = "\"ema\":\"" RECIPE_EMA "\"";
    ck_assert_ptr_nonnull(memmem(a, la, meta, strlen(meta)));
    free(a);
    free(b);
}
END_TEST

/* Rewrites the safetensors file `path` without the metadata keys `drop`,
 * as a file from before those keys existed: the header keeps its length
 * (padded with spaces, which the format allows), the tensors their bytes. */
static void drop_metadata(const char *path, const char *const *drop, int n_drop)
{
    size_t len;
    unsigned char *f = (unsigned char *)fm_test_read_file(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f[i];
    ck_assert_uint_le(8 + hlen, len);
    json_error_t err;
    json_t *h = json_loadb((const char *)f + 8, hlen, 0, &err);
    ck_assert_msg(h != NULL, "%s: %s", path, err.text);
    json_t *meta = json_object_get(h, "__metadata__");
    for (int i = 0; i < n_drop; i++) ck_assert_int_eq(json_object_del(meta, drop[i]), 0);
    char *text = json_dumps(h, JSON_COMPACT);
    size_t tlen = strlen(text);
    ck_assert_uint_le(tlen, hlen);
    memset(f + 8, ' ', hlen);
    memcpy(f + 8, text, tlen);
    fm_test_write_file(path, f, len);
    free(text);
    json_decref(h);
    free(f);
}

/* A run state saved before the recipe options existed lacks their keys: it
 * resumes to the same run when they are at their defaults, and is refused
 * (a usage error) when the resuming run sets one. */
START_TEST(test_resume_older_state)
{
    run_case rc = {"mlp", NULL, NULL, false};
    setup_dir();
    char ref[4200], out[4200];
    snprintf(ref, sizeof ref, "%s/ref", tmp);
    snprintf(out, sizeof out, "%s/old", tmp);
    ck_assert_int_eq(train_cli(&rc, ref, "2", false), 0);
    ck_assert_int_eq(train_killed(&rc, out, 7, "KILL", false), 128 + 9);
    static const char *const newer[] = {"pct_start", "div_factor", "final_div_factor",
                                        "random_erasing", "mixup", "cutmix",
                                        "label_smoothing", "ema", "tta"};
    drop_metadata(path_in(out, "artifacts/mlp_last.safetensors"), newer,
                  (int)(sizeof newer / sizeof *newer));
    run_case ema = {"mlp", NULL, NULL, false};
    char *argv[] = {FMHOST, "train", "--model", "mlp", "--epochs", EPOCHS, "--limit", LIMIT,
                    "--seed", "7", "--augment", "--data-dir", SAMPLE_DIR, "--out", out,
                    "--ema", "0.9", "--resume", "--quiet", NULL};
    ck_assert_int_eq(spawn(&ema, argv), 2);
    ck_assert_int_eq(train_cli(&rc, out, "1", true), 0);
    assert_same_run(&rc, ref, out);
}
END_TEST

/* Every kernel set this processor runs, each its own reference: SIGKILL
 * in epoch 2, resumed with another thread count. */
START_TEST(test_resume_each_kernel_set)
{
    fm_kernels sets[FM_KERNELS_COUNT];
    int n = fm_test_kernel_sets(sets);
    ck_assert_int_lt(_i, n);
    run_case rc = {"rescnn", "8", fm_kernels_name(sets[_i]), false};
    setup_dir();
    char ref[4200], out[4200];
    snprintf(ref, sizeof ref, "%s/ref", tmp);
    snprintf(out, sizeof out, "%s/killed", tmp);
    ck_assert_int_eq(train_cli(&rc, ref, "1", false), 0);
    ck_assert_int_eq(train_killed(&rc, out, 9, "KILL", false), 128 + 9);
    ck_assert_int_eq(train_cli(&rc, out, "2", true), 0);
    assert_same_run(&rc, ref, out);
}
END_TEST

/* A non-finite loss in the first epoch: exit 3, the diagnosis names the
 * epoch, the step and the fix, and nothing claims a checkpoint. */
START_TEST(test_diverged_first_epoch)
{
    setup_dir();
    run_case rc = {"mlp", NULL, NULL, false};
    char out[4200];
    snprintf(out, sizeof out, "%s/diverged", tmp);
    char *argv[] = {FMHOST, "train", "--model", "mlp", "--epochs", "2", "--limit", LIMIT,
                    "--optimizer", "sgd", "--lr", "1e6", "--data-dir", SAMPLE_DIR, "--out", out,
                    "--quiet", NULL};
    ck_assert_int_eq(spawn(&rc, argv), 3);
    char log[4300];
    snprintf(log, sizeof log, "%s/child.log", tmp);
    char *text = fm_test_read_file(log, NULL);
    ck_assert_msg(strstr(text, "diverged at epoch 1, step") && strstr(text, "--lr") &&
                  strstr(text, "--clip-grad-norm") && strstr(text, "no checkpoint was written"),
                  "%s", text);
    free(text);
    json_t *summary = json_load_file(path_in(out, "results/mlp/summary.json"), 0, NULL);
    ck_assert_ptr_nonnull(summary);
    ck_assert_str_eq(json_string_value(json_object_get(summary, "status")), "diverged");
    ck_assert(json_is_null(json_object_get(summary, "checkpoint")));
    ck_assert(json_is_null(json_object_get(summary, "test_acc")));
    json_decref(summary);
    ck_assert_int_ne(access(path_in(out, "artifacts/mlp_best.safetensors"), F_OK), 0);
}
END_TEST

/* Divergence in epoch 2 (a Lua schedule throws the rate up): the run keeps
 * epoch 1's checkpoint and says so; Lua gets the status and the message. */
START_TEST(test_diverged_later_keeps_checkpoint)
{
    setup_dir();
    run_case rc = {"mlp", NULL, NULL, false};
    char script[4200], out[4200];
    snprintf(script, sizeof script, "%s/diverge.lua", tmp);
    snprintf(out, sizeof out, "%s/diverged", tmp);
    char *lua = NULL;
    ck_assert_int_gt(asprintf(&lua,
        "local fm = require \"fm\"\n"
        "local r = fm.train{plugin = \"mlp\", epochs = 3, limit = %s, optimizer = \"sgd\",\n"
        "  data_dir = \"%s\", out = \"%s\", quiet = true,\n"
        "  schedule = function(epoch) return epoch == 2 and 1e6 or 0.01 end}\n"
        "assert(r.status == \"diverged\", r.status)\n"
        "assert(r.message:find(\"epoch 2\"), r.message)\n"
        "assert(r.checkpoint and r.best_epoch == 1, tostring(r.checkpoint))\n",
        LIMIT, SAMPLE_DIR, out), 0);
    fm_test_write_file(script, lua, strlen(lua));
    free(lua);
    char *argv[] = {FMHOST, "script", script, NULL};
    ck_assert_int_eq(spawn(&rc, argv), 0);
    json_t *summary = json_load_file(path_in(out, "results/mlp/summary.json"), 0, NULL);
    ck_assert_ptr_nonnull(summary);
    ck_assert_str_eq(json_string_value(json_object_get(summary, "status")), "diverged");
    const char *ckpt = json_string_value(json_object_get(summary, "checkpoint"));
    ck_assert_msg(ckpt && access(ckpt, F_OK) == 0, "%s", ckpt ? ckpt : "(null)");
    ck_assert(json_is_number(json_object_get(summary, "test_acc")));
    json_decref(summary);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("resume");
    TCase *tc = tcase_create("resume");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_resume_after_kills, 0, 3);
    tcase_add_test(tc, test_resume_recipe);
    tcase_add_test(tc, test_resume_older_state);
    tcase_add_test(tc, test_diverged_first_epoch);
    tcase_add_test(tc, test_diverged_later_keeps_checkpoint);
    fm_kernels sets[FM_KERNELS_COUNT];
    tcase_add_loop_test(tc, test_resume_each_kernel_set, 0, fm_test_kernel_sets(sets));
    suite_add_tcase(s, tc);
    return fm_test_run(s);
}
