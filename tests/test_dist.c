/* test_dist — `mpirun -np N fmhost script`: fm.dist over Open MPI ranks.
 *
 * The same script runs as one process and under mpirun with 2 and 3 ranks:
 * fm.dist.map hands item i to rank (i - 1) % N, every rank gets all the
 * results in item order, and rank 0 alone writes the result file, which
 * must be byte-identical for every N — small training runs included (each
 * run on one rank is the run one process makes).  An error in one item
 * fails the whole job, naming the item and its rank.  `fmhost train`
 * under mpirun, data-parallel, ends with the one-process checkpoint and
 * metrics, bit for bit, for mlp, cnn and rescnn.
 *
 * Needs fmhost built with Open MPI and `mpirun` on the PATH; without them
 * the test exits 77, which CTest reports as skipped, saying why. */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm_test_util.h"

#define FMHOST FM_BINARY_DIR "/fmhost"
#define SAMPLE FM_SOURCE_DIR "/data/sample"

static char g_out[4096];
static char g_mpirun[4096];

/* Every test runs in a directory of its own (Check forks each test). */
static void setup(void)
{
    snprintf(g_out, sizeof g_out, "%s", fm_test_tmpdir());
    ck_assert_int_eq(chdir(g_out), 0);
}

static void teardown(void)
{
    if (g_out[0]) fm_test_rmtree(g_out);
}

/* Where mpirun is on the PATH, or false. */
static bool find_mpirun(void)
{
    const char *path = getenv("PATH");
    if (!path) return false;
    char *dirs = strdup(path), *save = NULL;
    bool found = false;
    for (char *d = strtok_r(dirs, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        snprintf(g_mpirun, sizeof g_mpirun, "%s/mpirun", d);
        found = access(g_mpirun, X_OK) == 0;
    }
    free(dirs);
    return found;
}

/* argv (40 slots) of `fmhost ARGS...`, as one process (ranks 0) or under
 * mpirun with `ranks` processes, and the environment its ranks need (NULL
 * for one process). */
static void fmhost_argv(int ranks, const char *const *args, const char **argv, const char **env)
{
    static char np[16];
    snprintf(np, sizeof np, "%d", ranks);
    int n = 0;
    if (ranks > 0) {
        argv[n++] = g_mpirun;
        /* More ranks than cores, and CI runs as root in a container. */
        argv[n++] = "--oversubscribe";
        if (geteuid() == 0) argv[n++] = "--allow-run-as-root";
        argv[n++] = "-np";
        argv[n++] = np;
    }
    argv[n++] = FMHOST;
    for (; *args && n < 39; args++) argv[n++] = *args;
    argv[n] = NULL;
    /* Open MPI's components, loaded and unloaded at run time, leave
     * allocations LeakSanitizer can neither attribute nor suppress: no leak
     * check in the ranks (the one-process runs keep it, and test_lua checks
     * fm.dist's own code with it). */
    static char asan[1024];
    const char *asan_now = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "ASAN_OPTIONS=%s%sdetect_leaks=0", asan_now ? asan_now : "",
             asan_now ? ":" : "");
    *env = ranks > 0 ? asan : NULL;
}

/* `fmhost ARGS...` in the test's directory, as one process (ranks 0) or
 * under mpirun with `ranks` processes; its exit status, and its output
 * (stdout, then stderr) in *log (the caller frees it). */
static int run_fmhost(int ranks, const char *const *args, char **log)
{
    const char *argv[40], *env;
    fmhost_argv(ranks, args, argv, &env);
    fm_test_proc r;
    fm_test_spawn(&r, (char *const *)argv, env, 300);
    *log = malloc(strlen(r.out) + strlen(r.err) + 1);
    strcat(strcpy(*log, r.out), r.err);
    int status = r.status;
    fm_test_proc_free(&r);
    return status;
}

/* `fmhost script FILE args...`, as run_fmhost. */
static int run_script(int ranks, const char *script, const char *const *args, char **log)
{
    const char *argv[40] = {"script", script};
    int n = 2;
    for (; *args && n < 39; args++) argv[n++] = *args;
    argv[n] = NULL;
    return run_fmhost(ranks, argv, log);
}

static char *slurp(const char *name) { return fm_test_read_file(name, NULL); }

static void write_file(const char *name, const char *text)
{
    fm_test_write_file(name, text, strlen(text));
}

/* Rank 0 writes what every rank computed; each rank says who it is. */
static const char map_script[] =
    "local fm = require 'fm'\n"
    "local items = {}\n"
    "for i = 1, 7 do items[i] = {x = i} end\n"
    "local r = fm.dist.map(items, function(it, i)\n"
    "  return {sq = it.x * it.x, rank = fm.dist.rank(), name = 'item ' .. i}\n"
    "end)\n"
    "print(string.format('rank %d of %d: %d results', fm.dist.rank(), fm.dist.size(), #r))\n"
    "assert(#r == 7)\n"
    "for i = 1, 7 do\n"
    "  assert(r[i].sq == i * i and r[i].name == 'item ' .. i)\n"
    "  assert(r[i].rank == (i - 1) % fm.dist.size(), 'item ' .. i .. ' ran on ' .. r[i].rank)\n"
    "end\n"
    "local g = fm.dist.gather(fm.dist.rank())\n"
    "if fm.dist.rank() == 0 then\n"
    "  local f = assert(io.open('squares.txt', 'w'))\n"
    "  for i = 1, 7 do f:write(r[i].name, ' ', r[i].sq, '\\n') end\n"
    "  for k = 1, #g do f:write('gathered ', g[k], '\\n') end\n"
    "  f:close()\n"
    "else\n"
    "  assert(g == nil)\n"
    "end\n";

START_TEST(test_map_over_ranks)
{
    write_file("map.lua", map_script);
    char *expect[4] = {NULL};
    for (int ranks = 0; ranks <= 3; ranks += ranks == 0 ? 2 : 1) {
        char *log;
        int rc = run_script(ranks, "map.lua", (const char *[]){NULL}, &log);
        ck_assert_msg(rc == 0, "%d ranks: exit %d\n%s", ranks, rc, log);
        int size = ranks ? ranks : 1;
        for (int r = 0; r < size; r++) {
            char line[64];
            snprintf(line, sizeof line, "rank %d of %d: 7 results", r, size);
            ck_assert_msg(strstr(log, line), "%d ranks: no '%s' in\n%s", ranks, line, log);
        }
        free(log);
        expect[size] = slurp("squares.txt");
        char want[64];
        snprintf(want, sizeof want, "gathered %d\n", size - 1);
        const char *text = expect[size];
        ck_assert_msg(strstr(text, "item 7 49\ngathered 0\n") &&
                          !strcmp(text + strlen(text) - strlen(want), want),
                      "%d ranks:\n%s", ranks, text);
        remove("squares.txt");
    }
    /* The results part is the same for every rank count. */
    for (int n = 2; n <= 3; n++)
        ck_assert_int_eq(strstr(expect[n], "gathered") - expect[n],
                         strstr(expect[1], "gathered") - expect[1]);
    for (int n = 2; n <= 3; n++)
        ck_assert(!strncmp(expect[n], expect[1], (size_t)(strstr(expect[1], "gathered") - expect[1])));
    for (int n = 1; n <= 3; n++) free(expect[n]);
}
END_TEST

START_TEST(test_error_fails_the_job)
{
    write_file("bad.lua", "local fm = require 'fm'\n"
                          "fm.dist.map({1, 2, 3, 4, 5}, function(v)\n"
                          "  if v == 5 then error('item five is bad') end\n"
                          "  return v\n"
                          "end)\n"
                          "print('not reached')\n");
    char *log;
    int rc = run_script(3, "bad.lua", (const char *[]){NULL}, &log);
    ck_assert_msg(rc != 0, "exit 0:\n%s", log);
    /* Item 5 is rank 1's (items 2 and 5 of 3 ranks). */
    ck_assert_msg(strstr(log, "fm.dist.map: item 5 on rank 1:") && strstr(log, "item five is bad"),
                  "%s", log);
    ck_assert_ptr_null(strstr(log, "not reached"));
    free(log);
}
END_TEST

/* Three short trainings spread over the ranks: each run is the run one
 * process makes, so the gathered table is byte-identical for 1 and 3
 * ranks (and each rank's artifacts go to its own directory). */
static const char train_script[] =
    "local fm = require 'fm'\n"
    "local data = fm.args.data\n"
    "local runs = {{model = 'mlp', seed = 1}, {model = 'cnn', seed = 2}, {model = 'mlp', seed = 3}}\n"
    "local r = fm.dist.map(runs, function(spec, i)\n"
    "  local run = fm.train{plugin = spec.model, seed = spec.seed, epochs = 1, limit = 300,\n"
    "                       threads = 1, data_dir = data, quiet = true, report = false,\n"
    "                       out = 'run' .. i}\n"
    "  local t = run:evaluate('test')\n"
    "  return {model = spec.model, seed = spec.seed, val_loss = run.best.val_loss,\n"
    "          test_acc = t.acc, test_loss = t.loss}\n"
    "end)\n"
    "if fm.dist.rank() == 0 then\n"
    "  local f = assert(io.open('runs.txt', 'w'))\n"
    "  for i, x in ipairs(r) do\n"
    "    f:write(string.format('%d %s %d %.17g %.17g %.17g\\n', i, x.model, x.seed, x.val_loss,\n"
    "                          x.test_acc, x.test_loss))\n"
    "  end\n"
    "  f:close()\n"
    "end\n";

START_TEST(test_training_runs_over_ranks)
{
    write_file("train.lua", train_script);
    const char *args[] = {"data=" SAMPLE, NULL};
    char *log;
    int rc = run_script(0, "train.lua", args, &log);
    ck_assert_msg(rc == 0, "one process: exit %d\n%s", rc, log);
    free(log);
    char *one = slurp("runs.txt");
    ck_assert_msg(strstr(one, "1 mlp 1 ") && strstr(one, "2 cnn 2 ") && strstr(one, "3 mlp 3 "),
                  "%s", one);
    remove("runs.txt");
    rc = run_script(3, "train.lua", args, &log);
    ck_assert_msg(rc == 0, "3 ranks: exit %d\n%s", rc, log);
    free(log);
    char *three = slurp("runs.txt");
    ck_assert_str_eq(three, one);
    free(one);
    free(three);
}
END_TEST

/* Each line without its last field (CSV) or its last cell (a Markdown
 * table row): the time columns, which differ from run to run. */
static char *without_last_column(const char *text)
{
    char *out = calloc(1, strlen(text) + 1), *o = out;
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        if (!end) end = line + strlen(line);
        const char *cut = end;
        if (*line == '|') {
            /* "| a | b | time |": keep up to the bar before the last cell. */
            const char *bar = end - 1;
            while (bar > line && *bar != '|') bar--;     /* the closing bar */
            while (bar > line && *--bar != '|') {}       /* the one before */
            cut = bar;
        } else {
            const char *comma = memrchr(line, ',', (size_t)(end - line));
            if (comma) cut = comma;
        }
        memcpy(o, line, (size_t)(cut - line));
        o += cut - line;
        *o++ = '\n';
        line = *end ? end + 1 : end;
    }
    return out;
}

/* scripts/compare_all.lua over 1 and 3 ranks: the same table and CSV but
 * for the training times. */
START_TEST(test_compare_all_over_ranks)
{
    /* Two models over three ranks: rank 2 has none and still takes part. */
    const char *args[] = {"models=mlp,cnn", "epochs=1", "limit=300", "data=" SAMPLE, "threads=1",
                          "quiet=true", "sweep=ranks", NULL};
    char *md[2], *csv[2];
    for (int k = 0; k < 2; k++) {
        char *log;
        int rc = run_script(k == 0 ? 0 : 3, FM_SOURCE_DIR "/scripts/compare_all.lua", args, &log);
        ck_assert_msg(rc == 0, "%d ranks: exit %d\n%s", k == 0 ? 1 : 3, rc, log);
        if (k == 1)
            ck_assert_msg(strstr(log, "rank 0: [1/2] mlp") && strstr(log, "rank 1: [2/2] cnn"),
                          "%s", log);
        free(log);
        char *text = slurp("results/comparison.md");
        md[k] = without_last_column(text);
        free(text);
        text = slurp("results/comparison.csv");
        csv[k] = without_last_column(text);
        free(text);
        remove("results/comparison.md");
        remove("results/comparison.csv");
    }
    ck_assert_msg(strstr(md[0], "| cnn ") && !strstr(md[0], "Partial"), "%s", md[0]);
    ck_assert_str_eq(md[1], md[0]);
    ck_assert_str_eq(csv[1], csv[0]);
    for (int k = 0; k < 2; k++) {
        free(md[k]);
        free(csv[k]);
    }
}
END_TEST

/* The arguments (40 slots) of `fmhost train` of a short run of `model` (a
 * small width for rescnn) on `limit` images into out/, as one process with
 * two threads (ranks 0) or data-parallel over `ranks` ranks of one thread
 * each. */
static void train_args(const char **args, const char *model, int ranks, const char *out,
                       const char *limit, const char *epochs, bool resume)
{
    const char *fixed[] = {"train", "--model", model, "--data-dir", SAMPLE, "--limit", limit,
                           "--batch-size", "32", "--epochs", epochs, "--patience", "0",
                           "--seed", "5", "--augment", "--threads", ranks ? "1" : "2",
                           "--out", out, "--no-track", "--quiet"};
    int n = 0;
    for (; n < (int)(sizeof fixed / sizeof *fixed); n++) args[n] = fixed[n];
    if (!strcmp(model, "rescnn")) {
        args[n++] = "--set";
        args[n++] = "width=4";
    }
    if (resume) args[n++] = "--resume";
    args[n] = NULL;
}

static void train_run(const char *model, int ranks, const char *out, const char *epochs)
{
    const char *args[40];
    train_args(args, model, ranks, out, "330", epochs, false);
    char *log;
    int rc = run_fmhost(ranks, args, &log);
    ck_assert_msg(rc == 0, "%s on %d ranks: exit %d\n%s", model, ranks, rc, log);
    free(log);
}

/* The file, and metrics.csv without its seconds column, of two runs. */
static void assert_same_run(const char *model, const char *a, const char *b, const char *what)
{
    char pa[256], pb[256];
    snprintf(pa, sizeof pa, "%s/artifacts/%s_best.safetensors", a, model);
    snprintf(pb, sizeof pb, "%s/artifacts/%s_best.safetensors", b, model);
    size_t la, lb;
    char *ca = fm_test_read_file(pa, &la), *cb = fm_test_read_file(pb, &lb);
    ck_assert_msg(ca && cb, "%s: %s: no checkpoint", model, what);
    ck_assert_msg(la == lb && memcmp(ca, cb, la) == 0,
                  "%s: %s: the checkpoint differs from one process's", model, what);
    free(ca);
    free(cb);
    snprintf(pa, sizeof pa, "%s/results/%s/metrics.csv", a, model);
    snprintf(pb, sizeof pb, "%s/results/%s/metrics.csv", b, model);
    char *ma = slurp(pa), *mb = slurp(pb);
    char *ta = without_last_column(ma), *tb = without_last_column(mb);
    ck_assert_msg(!strcmp(ta, tb), "%s: %s: metrics differ:\n%s\n%s", model, what, ma, mb);
    free(ma);
    free(mb);
    free(ta);
    free(tb);
}

/* Data-parallel training: the batch's chunks over 2 and 3 ranks give the
 * one-process checkpoint and metrics, bit for bit (297 training images:
 * batches of 32 in 8 chunks, the last of 9 images in 5 chunks of 2 and 1,
 * which 3 ranks share unevenly), with dropout, batch norm and
 * augmentation. */
static void check_data_parallel(const char *model)
{
    train_run(model, 0, "one", "1");
    train_run(model, 2, "two", "1");
    assert_same_run(model, "one", "two", "2 ranks");
    train_run(model, 3, "three", "1");
    assert_same_run(model, "one", "three", "3 ranks");
}

START_TEST(test_data_parallel_mlp) { check_data_parallel("mlp"); }
END_TEST

START_TEST(test_data_parallel_cnn) { check_data_parallel("cnn"); }
END_TEST

START_TEST(test_data_parallel_rescnn) { check_data_parallel("rescnn"); }
END_TEST

/* ---- faults ---------------------------------------------------------------- */

#define FAULT_LIMIT "1000"  /* 29 steps of 32 an epoch: the faults land mid-epoch */
#define FAULT_EPOCHS "3"
#define FAULT_STATE "faulty/artifacts/cnn_last.safetensors"

/* Starts `fmhost ARGS...` as run_fmhost runs it (output to async.log), and
 * returns at once: mpirun's pid (or fmhost's, for one process). */
static pid_t start_fmhost(int ranks, const char *const *args)
{
    const char *argv[40], *env;
    fmhost_argv(ranks, args, argv, &env);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int log = open("async.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
        int null = open("/dev/null", O_RDONLY);
        if (log < 0 || null < 0) _exit(126);
        dup2(null, 0), dup2(log, 1), dup2(log, 2);
        unsetenv("FMHOST_DATA");
        if (env) putenv((char *)env);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits (up to 5 minutes) until the run state is written anew: a
 * modification time other than *seen, which it updates. */
static void wait_for_state(struct timespec *seen)
{
    for (int i = 0; i < 30000; i++) {
        struct stat st;
        if (stat(FAULT_STATE, &st) == 0 &&
            (st.st_mtim.tv_sec != seen->tv_sec || st.st_mtim.tv_nsec != seen->tv_nsec)) {
            *seen = st.st_mtim;
            return;
        }
        usleep(10000);
    }
    ck_abort_msg("no new %s in 5 minutes:\n%s", FAULT_STATE, slurp("async.log"));
}

/* A rank of the job under mpirun `job`: a child of it that runs fmhost. */
static pid_t rank_of(pid_t job)
{
    DIR *d = opendir("/proc");
    ck_assert_ptr_nonnull(d);
    pid_t found = 0;
    for (struct dirent *e; !found && (e = readdir(d)) != NULL;) {
        char path[300], stat_line[512], *exe = NULL;
        pid_t pid = (pid_t)atoi(e->d_name), ppid = 0;
        if (pid <= 0) continue;
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        bool read = fgets(stat_line, sizeof stat_line, f) != NULL;
        fclose(f);
        const char *close = read ? strrchr(stat_line, ')') : NULL;  /* after the name */
        if (!close || sscanf(close + 1, " %*c %d", &ppid) != 1 || ppid != job) continue;
        snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
        exe = realpath(path, NULL);
        if (exe && strstr(exe, "fmhost")) found = pid;
        free(exe);
    }
    closedir(d);
    ck_assert_msg(found > 0, "no rank of mpirun %d found", (int)job);
    return found;
}

static int wait_exit(pid_t pid)
{
    int ws;
    ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

/* A data-parallel run that loses a rank (SIGKILL) after its first epoch,
 * resumed on another number of ranks and interrupted again (SIGINT to
 * mpirun) after another epoch, then finished by one process: the run
 * state written at each epoch's end stays valid (only rank 0 writes it,
 * atomically), and the end is the uninterrupted one-process run, bit for
 * bit. */
START_TEST(test_data_parallel_faults)
{
    const char *args[40];
    train_args(args, "cnn", 0, "whole", FAULT_LIMIT, FAULT_EPOCHS, false);
    char *log;
    int rc = run_fmhost(0, args, &log);
    ck_assert_msg(rc == 0, "one process: exit %d\n%s", rc, log);
    free(log);

    struct timespec seen = {0, 0};
    train_args(args, "cnn", 3, "faulty", FAULT_LIMIT, FAULT_EPOCHS, false);
    pid_t job = start_fmhost(3, args);
    wait_for_state(&seen);  /* epoch 1 saved */
    ck_assert_int_eq(kill(rank_of(job), SIGKILL), 0);
    rc = wait_exit(job);
    ck_assert_msg(rc != 0, "3 ranks, one killed: exit 0\n%s", slurp("async.log"));

    train_args(args, "cnn", 2, "faulty", FAULT_LIMIT, FAULT_EPOCHS, true);
    job = start_fmhost(2, args);
    wait_for_state(&seen);  /* a later epoch saved */
    ck_assert_int_eq(kill(job, SIGINT), 0);
    rc = wait_exit(job);
    ck_assert_msg(rc != 0, "2 ranks, interrupted: exit 0\n%s", slurp("async.log"));

    train_args(args, "cnn", 0, "faulty", FAULT_LIMIT, FAULT_EPOCHS, true);
    rc = run_fmhost(0, args, &log);
    ck_assert_msg(rc == 0, "resumed by one process: exit %d\n%s\n%s", rc, log, slurp("async.log"));
    free(log);
    assert_same_run("cnn", "whole", "faulty", "killed on 3 ranks, interrupted on 2, resumed");
}
END_TEST

static Suite *dist_suite(void)
{
    Suite *s = suite_create("dist");
    TCase *tc = tcase_create("mpirun");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_map_over_ranks);
    tcase_add_test(tc, test_error_fails_the_job);
    tcase_add_test(tc, test_training_runs_over_ranks);
    tcase_add_test(tc, test_compare_all_over_ranks);
    tcase_add_test(tc, test_data_parallel_mlp);
    tcase_add_test(tc, test_data_parallel_cnn);
    tcase_add_test(tc, test_data_parallel_rescnn);
    tcase_add_test(tc, test_data_parallel_faults);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
#ifndef FM_TEST_HAVE_MPI
    puts("test_dist: skipped: fmhost was built without Open MPI "
         "(apt-get install libopenmpi-dev openmpi-bin, then configure again)");
    return 77;
#else
    if (!find_mpirun()) {
        puts("test_dist: skipped: no mpirun on the PATH (apt-get install openmpi-bin)");
        return 77;
    }
    return fm_test_run(dist_suite());
#endif
}
