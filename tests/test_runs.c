/* Integration tests of the run store: runs recorded by fmhost train, eval
 * and scripts, read back by fmhost runs and fm.runs; a killed run, many
 * concurrent writers, an older schema, and bad stores.  Runs are tiny
 * (data/sample, --limit, one or two epochs). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fm/fm_io.h"
#include "fm/fm_track.h"
#include "fm_test_util.h"

#define FMHOST FM_BINARY_DIR "/fmhost"
#define SAMPLE_DIR FM_SOURCE_DIR "/data/sample"
#define TIMEOUT 120

static char *tmp;

static void setup(void) { tmp = fm_xstrdup(fm_test_tmpdir()); }

static void teardown(void)
{
    fm_test_rmtree(tmp);
    free(tmp);
}

static char *path_in(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmp, name);
    return buf;
}

/* Runs fmhost with the NULL-terminated arguments; the result in *r. */
static void fmhost(fm_test_proc *r, ...)
{
    char *argv[64] = {FMHOST};
    int n = 1;
    va_list ap;
    va_start(ap, r);
    for (char *a; (a = va_arg(ap, char *));) {
        ck_assert_int_lt(n, 63);
        argv[n++] = a;
    }
    va_end(ap);
    argv[n] = NULL;
    fm_test_spawn(r, argv, NULL, TIMEOUT);
    ck_assert_msg(r->status < 128, "fmhost died of signal %d; stderr:\n%s", r->status - 128, r->err);
}

#define ASSERT_HAS(text, needle) \
    ck_assert_msg(strstr((text), (needle)) != NULL, "expected \"%s\" in:\n%s", (needle), (text))

/* A tiny training run of mlp into out, recorded in db. */
static void train(const char *out, const char *db, const char *seed)
{
    fm_test_proc r;
    fmhost(&r, "train", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--epochs", "2", "--limit",
           "200", "--threads", "1", "--quiet", "--seed", seed, "--out", out, "--runs-db", db, NULL);
    ck_assert_msg(r.status == 0, "train exit %d:\n%s", r.status, r.err);
    fm_test_proc_free(&r);
}

/* The store's runs as JSON (fmhost runs export --json). */
static json_t *export_json(const char *db)
{
    fm_test_proc r;
    fmhost(&r, "runs", "export", "--json", "--runs-db", db, NULL);
    ck_assert_msg(r.status == 0, "export exit %d:\n%s", r.status, r.err);
    json_error_t e;
    json_t *j = json_loads(r.out, 0, &e);
    ck_assert_msg(json_is_array(j), "not a JSON array (%s):\n%s", e.text, r.out);
    fm_test_proc_free(&r);
    return j;
}

static const char *str_of(json_t *o, const char *key) { return json_string_value(json_object_get(o, key)); }

static json_t *run_with_id(json_t *runs, json_int_t id)
{
    for (size_t i = 0; i < json_array_size(runs); i++)
        if (json_integer_value(json_object_get(json_array_get(runs, i), "id")) == id)
            return json_array_get(runs, i);
    ck_abort_msg("no run %lld", (long long)id);
    return NULL;
}

/* Two runs of one model into the same --out: both stay listed, with their
 * own files, the usual paths hold the newest, and compare shows them. */
START_TEST(test_two_runs_listed_and_compared)
{
    char out[4200], db[4200], a[4400], b[4400];
    path_in(out, sizeof out, "out");
    path_in(db, sizeof db, "out/runs.db");
    train(out, db, "1");
    train(out, db, "2");

    fm_test_proc r;
    fmhost(&r, "runs", "list", "--runs-db", db, "--model", "mlp", NULL);
    ck_assert_int_eq(r.status, 0);
    ASSERT_HAS(r.out, "\n2 runs in ");
    fm_test_proc_free(&r);

    json_t *runs = export_json(db);
    ck_assert_int_eq(json_array_size(runs), 2);
    for (json_int_t id = 1; id <= 2; id++) {
        json_t *run = run_with_id(runs, id);
        ck_assert_str_eq(str_of(run, "status"), "completed");
        ck_assert_str_eq(str_of(run, "model"), "mlp");
        ck_assert_int_eq(json_array_size(json_object_get(run, "epochs")), 2);
        ck_assert_int_eq(json_array_size(json_object_get(run, "per_class")), FM_NUM_CLASSES);
        ck_assert(json_is_real(json_object_get(run, "test_acc")));
        ck_assert_int_gt(json_integer_value(json_object_get(run, "peak_rss_kb")), 0);
        ck_assert_int_eq(strlen(str_of(run, "plugin_sha256")), 64);
        ASSERT_HAS(str_of(run, "command"), "fmhost train --model mlp");
        /* Every kept file is there, with the hash recorded. */
        json_t *arts = json_object_get(run, "artifacts");
        ck_assert_int_ge(json_array_size(arts), 9);
        for (size_t i = 0; i < json_array_size(arts); i++) {
            json_t *f = json_array_get(arts, i);
            char sha[65];
            ck_assert_int_eq(fm_sha256_file(str_of(f, "path"), sha, NULL), FM_OK);
            ck_assert_str_eq(sha, str_of(f, "sha256"));
        }
    }
    /* The runs' own metrics differ (other seeds); today's path holds the newest. */
    snprintf(a, sizeof a, "%s/runs/1/metrics.csv", out);
    snprintf(b, sizeof b, "%s/runs/2/metrics.csv", out);
    char *ma = fm_test_read_file(a, NULL), *mb = fm_test_read_file(b, NULL);
    ck_assert_str_ne(ma, mb);
    snprintf(a, sizeof a, "%s/results/mlp/metrics.csv", out);
    char *newest = fm_test_read_file(a, NULL);
    ck_assert_str_eq(newest, mb);
    free(ma), free(mb), free(newest);
    snprintf(a, sizeof a, "%s/runs/1/mlp_best.safetensors", out);
    snprintf(b, sizeof b, "%s/artifacts/mlp_best.safetensors", out);
    char sha1[65], sha_newest[65];
    ck_assert_int_eq(fm_sha256_file(a, sha1, NULL), FM_OK);
    ck_assert_int_eq(fm_sha256_file(b, sha_newest, NULL), FM_OK);
    ck_assert_str_ne(sha1, sha_newest);
    json_decref(runs);

    /* Filters and sorting. */
    fmhost(&r, "runs", "list", "--runs-db", db, "--where", "seed=2", NULL);
    ASSERT_HAS(r.out, "\n1 run in ");
    fm_test_proc_free(&r);
    fmhost(&r, "runs", "list", "--runs-db", db, "--where", "lr=0.001", "--sort", "test_acc",
           "--since", "2000-01-01", NULL);
    ASSERT_HAS(r.out, "\n2 runs in ");
    fm_test_proc_free(&r);
    fmhost(&r, "runs", "list", "--runs-db", db, "--status", "failed", NULL);
    ASSERT_HAS(r.out, "\n0 runs in ");
    fm_test_proc_free(&r);

    /* compare: the setting that differs, both results, the overlaid curves. */
    char prefix[4200];
    path_in(prefix, sizeof prefix, "cmp");
    fmhost(&r, "runs", "compare", "1", "2", "--runs-db", db, "--plot", prefix, NULL);
    ck_assert_msg(r.status == 0, "%s", r.err);
    ASSERT_HAS(r.out, "settings that differ:\n  seed ");
    ASSERT_HAS(r.out, "test acc");
    ck_assert_ptr_null(strstr(r.out, "\n  lr "));  /* the same in both */
    fm_test_proc_free(&r);
    snprintf(a, sizeof a, "%s_val_acc.png", prefix);
    size_t len;
    char *png = fm_test_read_file(a, &len);
    ck_assert(len > 1000 && !memcmp(png + 1, "PNG", 3));
    free(png);

    /* CSV: a header and one line per run. */
    fmhost(&r, "runs", "export", "--csv", "--runs-db", db, NULL);
    ck_assert_int_eq(r.status, 0);
    int lines = 0;
    for (const char *c = r.out; *c; c++) lines += *c == '\n';
    ck_assert_int_eq(lines, 3);
    ASSERT_HAS(r.out, "hp.hidden1");
    fm_test_proc_free(&r);

    /* rm forgets a run and removes its own folder's files, not the newest paths. */
    fmhost(&r, "runs", "rm", "1", "--runs-db", db, NULL);
    ck_assert_msg(r.status == 0, "%s", r.err);
    fm_test_proc_free(&r);
    snprintf(a, sizeof a, "%s/runs/1", out);
    ck_assert_int_ne(access(a, F_OK), 0);
    ck_assert_int_eq(access(b, F_OK), 0);
    fmhost(&r, "runs", "show", "1", "--runs-db", db, NULL);
    ck_assert_int_ne(r.status, 0);
    ASSERT_HAS(r.err, "no run 1 in");
    fm_test_proc_free(&r);
}
END_TEST

/* Starts fmhost train in the background on a run long enough to be killed
 * while it trains; returns its pid. */
static pid_t start_long_run(const char *out, const char *db)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_RDWR);
        dup2(fd, 0), dup2(fd, 1), dup2(fd, 2);
        execl(FMHOST, FMHOST, "train", "--model", "cnn", "--data-dir", SAMPLE_DIR, "--epochs",
              "1000", "--patience", "0", "--limit", "1000", "--threads", "1", "--quiet", "--out",
              out, "--runs-db", db, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Waits until the store shows the run with at least one epoch. */
static void wait_for_epoch(const char *db)
{
    for (int tries = 0; tries < 600; tries++) {
        fm_track *t;
        if (access(db, F_OK) == 0 && fm_track_open(&t, db, false) == FM_OK) {
            fm_track_run r;
            bool ok = false;
            if (fm_track_get(t, 1, &r) == FM_OK) {
                ok = r.history.n >= 1;
                fm_track_run_clear(&r);
            }
            fm_track_close(t);
            if (ok) return;
        }
        usleep(50 * 1000);
    }
    ck_abort_msg("%s: the run recorded no epoch in 30 s", db);
}

/* A run killed with SIGKILL is shown failed, with a message that says so;
 * one stopped by SIGTERM is interrupted. */
START_TEST(test_killed_run_marked)
{
    static const struct { int sig; const char *status, *needle; } cases[] = {
        {SIGKILL, "failed", "killed"},
        {SIGTERM, "interrupted", "interrupted"},
    };
    for (size_t c = 0; c < 2; c++) {
        char out[4200], db[4300];
        snprintf(out, sizeof out, "%s/k%zu", tmp, c);
        snprintf(db, sizeof db, "%s/runs.db", out);
        pid_t pid = start_long_run(out, db);
        wait_for_epoch(db);
        fm_test_proc r;
        fmhost(&r, "runs", "list", "--runs-db", db, "--status", "running", NULL);
        ASSERT_HAS(r.out, "\n1 run in ");  /* alive: not reaped */
        fm_test_proc_free(&r);
        kill(pid, cases[c].sig);
        int ws;
        ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
        fmhost(&r, "runs", "show", "1", "--runs-db", db, NULL);
        ck_assert_int_eq(r.status, 0);
        char want[64];
        snprintf(want, sizeof want, "status            %s\n", cases[c].status);
        ASSERT_HAS(r.out, want);
        ASSERT_HAS(r.out, cases[c].needle);
        fm_test_proc_free(&r);
    }
}
END_TEST

/* A run whose loss became non-finite is recorded as diverged, with the
 * diagnosis. */
START_TEST(test_diverged_recorded)
{
    char out[4200], db[4300];
    path_in(out, sizeof out, "div");
    snprintf(db, sizeof db, "%s/runs.db", out);
    fm_test_proc r;
    fmhost(&r, "train", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--epochs", "2", "--limit",
           "200", "--optimizer", "sgd", "--lr", "1e6", "--threads", "1", "--quiet", "--out", out,
           NULL);
    ck_assert_int_eq(r.status, 3);
    fm_test_proc_free(&r);
    fmhost(&r, "runs", "show", "1", "--runs-db", db, NULL);
    ck_assert_int_eq(r.status, 0);
    ASSERT_HAS(r.out, "status            diverged\n");
    ASSERT_HAS(r.out, "training diverged at epoch 1");
    fm_test_proc_free(&r);
}
END_TEST

/* Eight short runs at once on one store: every run and every epoch row is
 * there, none left running. */
START_TEST(test_concurrent_runs)
{
    enum { N = 8 };
    char db[4200];
    path_in(db, sizeof db, "shared.db");
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        char out[4300], seed[16];
        snprintf(out, sizeof out, "%s/c%d", tmp, i);
        snprintf(seed, sizeof seed, "%d", i + 1);
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0) {
            int fd = open("/dev/null", O_RDWR);
            dup2(fd, 0), dup2(fd, 1);
            execl(FMHOST, FMHOST, "train", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--epochs",
                  "3", "--patience", "0", "--limit", "200", "--threads", "1", "--quiet", "--seed",
                  seed, "--out", out, "--runs-db", db, (char *)NULL);
            _exit(127);
        }
    }
    for (int i = 0; i < N; i++) {
        int ws;
        ck_assert_int_eq(waitpid(pids[i], &ws, 0), pids[i]);
        ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "run %d: status %d", i, ws);
    }
    json_t *runs = export_json(db);
    ck_assert_int_eq(json_array_size(runs), N);
    bool seen[N] = {false};
    for (size_t i = 0; i < N; i++) {
        json_t *run = json_array_get(runs, i);
        ck_assert_str_eq(str_of(run, "status"), "completed");
        ck_assert_int_eq(json_array_size(json_object_get(run, "epochs")), 3);
        json_int_t seed = json_integer_value(json_object_get(run, "seed"));
        ck_assert(seed >= 1 && seed <= N && !seen[seed - 1]);
        seen[seed - 1] = true;
    }
    json_decref(runs);
}
END_TEST

/* Processes creating the same new store at the same moment (the ranks of
 * an mpirun sweep): each opens it, whichever turns it into WAL first. */
START_TEST(test_concurrent_create)
{
    enum { N = 8 };
    for (int round = 0; round < 20; round++) {
        char db[4200], name[32];
        snprintf(name, sizeof name, "fresh%d.db", round);
        path_in(db, sizeof db, name);
        int go[2];
        ck_assert_int_eq(pipe(go), 0);
        pid_t pids[N];
        for (int i = 0; i < N; i++) {
            pids[i] = fork();
            ck_assert_int_ge(pids[i], 0);
            if (pids[i] == 0) {
                char c;
                close(go[1]);
                if (read(go[0], &c, 1) != 0) _exit(3);  /* waits for the parent's close */
                fm_track *t;
                fm_status st = fm_track_open(&t, db, true);
                if (st != FM_OK) {
                    fprintf(stderr, "%s\n", fm_error_message());
                    _exit(1);
                }
                fm_track_close(t);
                _exit(0);
            }
        }
        close(go[0]);
        close(go[1]);  /* all start now */
        for (int i = 0; i < N; i++) {
            int ws;
            ck_assert_int_eq(waitpid(pids[i], &ws, 0), pids[i]);
            ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "round %d, opener %d: status %d",
                          round, i, ws);
        }
    }
}
END_TEST

/* The first schema (version 1), as fmhost wrote it before sweeps. */
static const char schema_v1[] =
    "CREATE TABLE schema_version(version INTEGER NOT NULL);"
    "INSERT INTO schema_version VALUES(1);"
    "CREATE TABLE runs(id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
    " model TEXT NOT NULL, status TEXT NOT NULL, message TEXT, started TEXT NOT NULL,"
    " ended TEXT, command TEXT, cwd TEXT, host TEXT, pid INTEGER, plugin_path TEXT,"
    " plugin_sha256 TEXT, hparams TEXT, seed INTEGER, threads INTEGER, kernels TEXT,"
    " precision TEXT, fmhost_version TEXT, out_dir TEXT, data_dir TEXT, run_dir TEXT,"
    " params INTEGER, epochs_run INTEGER, best_epoch INTEGER, val_loss REAL, val_acc REAL,"
    " test_loss REAL, test_acc REAL, test_n INTEGER, confusion TEXT, wall_seconds REAL,"
    " peak_rss_kb INTEGER);"
    "CREATE TABLE settings(run_id INTEGER NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,"
    " value TEXT, PRIMARY KEY(run_id, kind, key));"
    "CREATE TABLE epochs(run_id INTEGER NOT NULL, epoch INTEGER NOT NULL, train_loss REAL,"
    " train_acc REAL, val_loss REAL, val_acc REAL, lr REAL, seconds REAL,"
    " PRIMARY KEY(run_id, epoch));"
    "CREATE TABLE classes(run_id INTEGER NOT NULL, class INTEGER NOT NULL, name TEXT,"
    " accuracy REAL, support INTEGER, PRIMARY KEY(run_id, class));"
    "CREATE TABLE artifacts(run_id INTEGER NOT NULL, name TEXT NOT NULL, path TEXT,"
    " sha256 TEXT, bytes INTEGER, PRIMARY KEY(run_id, name));"
    "INSERT INTO runs(kind, model, status, started, ended, epochs_run, best_epoch, test_acc,"
    " hparams) VALUES('train', 'cnn', 'completed', '2026-01-02 03:04:05', '2026-01-02 03:14:05',"
    " 1, 1, 0.91, 'dropout=0.3');"
    "INSERT INTO epochs VALUES(1, 1, 0.5, 0.8, 0.4, 0.85, 0.001, 60.0);"
    "INSERT INTO settings VALUES(1, 'option', 'lr', '0.00100000005');";

static void sql_exec(const char *db, const char *sql)
{
    sqlite3 *h;
    ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
    char *err = NULL;
    ck_assert_msg(sqlite3_exec(h, sql, NULL, NULL, &err) == SQLITE_OK, "%s", err ? err : "");
    sqlite3_close(h);
}

static int schema_version_of(const char *db)
{
    sqlite3 *h;
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(h, "SELECT version FROM schema_version", -1, &st, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    int v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return v;
}

/* A version-1 store is migrated in place: its run stays, new runs join it. */
START_TEST(test_migration_from_v1)
{
    char db[4200], out[4200];
    path_in(db, sizeof db, "old.db");
    path_in(out, sizeof out, "out");
    sql_exec(db, schema_v1);
    fm_test_proc r;
    fmhost(&r, "runs", "show", "1", "--runs-db", db, NULL);
    ck_assert_msg(r.status == 0, "%s", r.err);
    ASSERT_HAS(r.out, "dropout=0.3");
    ASSERT_HAS(r.out, "1,0.500000,0.800000,0.400000,0.850000,0.001,60.000");
    fm_test_proc_free(&r);
    ck_assert_int_eq(schema_version_of(db), FM_TRACK_SCHEMA_VERSION);
    train(out, db, "3");
    fmhost(&r, "runs", "list", "--runs-db", db, "--sort", "id", "--asc", NULL);
    ASSERT_HAS(r.out, "\n2 runs in ");
    fm_test_proc_free(&r);
    /* A store from a newer fmhost is refused, untouched. */
    sql_exec(db, "UPDATE schema_version SET version = 99");
    fmhost(&r, "runs", "list", "--runs-db", db, NULL);
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, "schema version 99 is newer");
    fm_test_proc_free(&r);
    ck_assert_int_eq(schema_version_of(db), 99);
}
END_TEST

/* Bad ids, missing, corrupt, foreign and unwritable stores: a clear error,
 * a non-zero exit, no crash, and a bad store refused before any training. */
START_TEST(test_bad_stores)
{
    char missing[4200], corrupt[4200], foreign[4200], file[4200], under_file[4300], out[4200];
    path_in(missing, sizeof missing, "none/runs.db");
    path_in(corrupt, sizeof corrupt, "corrupt.db");
    path_in(foreign, sizeof foreign, "foreign.db");
    path_in(file, sizeof file, "plain");
    snprintf(under_file, sizeof under_file, "%s/runs.db", file);
    path_in(out, sizeof out, "out");
    char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)(i * 131 + 7);
    fm_test_write_file(corrupt, junk, sizeof junk);
    fm_test_write_file(file, "x", 1);
    sql_exec(foreign, "CREATE TABLE t(x)");

    static const struct { const char *args[6]; int status; const char *needle; } cases[] = {
        {{"runs", "show", "nosuch"}, 2, "'nosuch' is not a run id"},
        {{"runs", "show"}, 2, "expected one run id"},
        {{"runs", "compare", "1"}, 2, "two run ids"},
        {{"runs", "frob"}, 2, "unknown subcommand 'frob'"},
        {{"runs", "list", "--sort", "bogus"}, 2, "--sort 'bogus'"},
        {{"runs", "list", "--where", "nokey"}, 2, "--where 'nokey'"},
        {{"runs", "export"}, 2, "--csv or --json"},
        {{"runs", "list", "--since", "yesterday"}, 2, "--since 'yesterday'"},
    };
    char db[4300];
    snprintf(db, sizeof db, "%s/runs.db", out);
    train(out, db, "4");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *argv[12] = {FMHOST};
        int n = 1;
        for (int k = 0; k < 6 && cases[i].args[k]; k++) argv[n++] = (char *)cases[i].args[k];
        argv[n++] = "--runs-db";
        argv[n++] = db;
        argv[n] = NULL;
        fm_test_proc r;
        fm_test_spawn(&r, argv, NULL, TIMEOUT);
        ck_assert_msg(r.status == cases[i].status, "case %zu: exit %d:\n%s", i, r.status, r.err);
        ASSERT_HAS(r.err, cases[i].needle);
        fm_test_proc_free(&r);
    }

    fm_test_proc r;
    fmhost(&r, "runs", "show", "42", "--runs-db", db, NULL);
    ck_assert_int_ne(r.status, 0);
    ASSERT_HAS(r.err, "no run 42 in");
    fm_test_proc_free(&r);
    fmhost(&r, "runs", "list", "--runs-db", missing, NULL);
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, missing);
    ASSERT_HAS(r.err, "no run store there");
    fm_test_proc_free(&r);
    fmhost(&r, "runs", "list", "--runs-db", corrupt, NULL);
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, corrupt);
    ASSERT_HAS(r.err, "not a readable run store");
    fm_test_proc_free(&r);
    fmhost(&r, "runs", "list", "--runs-db", foreign, NULL);
    ck_assert_int_eq(r.status, 1);
    ASSERT_HAS(r.err, "not an fmhost run store");
    fm_test_proc_free(&r);

    /* train and eval refuse a store they cannot use, before writing anything;
     * the corrupt file stays as it was. */
    const char *bad[] = {corrupt, under_file, foreign};
    for (int i = 0; i < 3; i++) {
        char out2[4300];
        snprintf(out2, sizeof out2, "%s/refused%d", tmp, i);
        fmhost(&r, "train", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--epochs", "1", "--limit",
               "100", "--quiet", "--out", out2, "--runs-db", bad[i], NULL);
        ck_assert_msg(r.status == 1, "train --runs-db %s: exit %d\n%s", bad[i], r.status, r.err);
        ASSERT_HAS(r.err, bad[i]);
        fm_test_proc_free(&r);
        char ckpt[4400];
        snprintf(ckpt, sizeof ckpt, "%s/artifacts/mlp_best.safetensors", out2);
        ck_assert_int_ne(access(ckpt, F_OK), 0);
        fmhost(&r, "eval", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--out", out,
               "--runs-db", bad[i], NULL);
        ck_assert_msg(r.status == 1, "eval --runs-db %s: exit %d\n%s", bad[i], r.status, r.err);
        fm_test_proc_free(&r);
    }
    size_t len;
    char *after = fm_test_read_file(corrupt, &len);
    ck_assert(len == sizeof junk && !memcmp(after, junk, len));
    free(after);

    /* --no-track and $FMHOST_RUNS_DB. */
    char out3[4300], env[4500], envdb[4400];
    snprintf(out3, sizeof out3, "%s/untracked", tmp);
    fmhost(&r, "train", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--epochs", "1", "--limit",
           "100", "--quiet", "--out", out3, "--no-track", NULL);
    ck_assert_int_eq(r.status, 0);
    fm_test_proc_free(&r);
    snprintf(envdb, sizeof envdb, "%s/runs.db", out3);
    ck_assert_int_ne(access(envdb, F_OK), 0);
    snprintf(envdb, sizeof envdb, "%s/env.db", tmp);
    snprintf(env, sizeof env, "FMHOST_RUNS_DB=%s", envdb);
    char *argv[] = {FMHOST, "eval", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--out", out, NULL};
    fm_test_spawn(&r, argv, env, TIMEOUT);
    ck_assert_msg(r.status == 0, "%s", r.err);
    fm_test_proc_free(&r);
    fmhost(&r, "runs", "show", "1", "--runs-db", envdb, NULL);
    ck_assert_msg(r.status == 0, "%s", r.err);
    ASSERT_HAS(r.out, "run 1 (eval)");
    ASSERT_HAS(r.out, "mlp_best.safetensors");
    fm_test_proc_free(&r);
}
END_TEST

/* A script's runs, one sweep, read back with fm.runs.query. */
START_TEST(test_lua_query)
{
    char script[4200], out[4200];
    path_in(script, sizeof script, "sweep.lua");
    path_in(out, sizeof out, "lua");
    char *lua = NULL;
    ck_assert_int_gt(asprintf(&lua,
        "local fm = require \"fm\"\n"
        "local ids = {}\n"
        "for _, lr in ipairs{1e-3, 3e-3} do\n"
        "  local r = fm.train{plugin = \"mlp\", epochs = 2, limit = 200, lr = lr, threads = 1,\n"
        "    data_dir = \"%s\", out = \"%s\", quiet = true, sweep = \"lrs\"}\n"
        "  ids[#ids + 1] = r.id\n"
        "end\n"
        "fm.train{plugin = \"mlp\", epochs = 1, limit = 200, data_dir = \"%s\", out = \"%s\",\n"
        "  quiet = true, track = false}\n"
        "local db = \"%s/runs.db\"\n"
        "local runs = fm.runs.query{db = db, sweep = \"lrs\", sort = \"val_loss\", asc = true}\n"
        "assert(#runs == 2, #runs)\n"
        "assert(runs[1].val_loss <= runs[2].val_loss)\n"
        "assert(runs[1].set.hidden1 == \"256\" and #runs[1].history == 2)\n"
        "assert(runs[1].command:find(\"fmhost script\", 1, true), runs[1].command)\n"
        "local one = fm.runs.query{db = db, where = {lr = 0.003}}\n"
        "assert(#one == 1 and one[1].id == ids[2], #one)\n"
        "assert(#fm.runs.query{db = db} == 2)\n"
        "assert(not pcall(fm.runs.query, {db = db, bogus = 1}))\n"
        "print(fm.runs.html{dir = \"%s/dash\", db = db, sweep = \"lrs\"})\n"
        "assert(not pcall(fm.train, {plugin = \"mlp\", epochs = 2, limit = 200, data_dir = \"%s\",\n"
        "  out = \"%s\", quiet = true, on_epoch = function() error(\"boom\") end}))\n"
        "local failed = fm.runs.query{db = db, status = \"failed\"}\n"
        "assert(#failed == 1 and failed[1].message:find(\"boom\"), #failed)\n",
        SAMPLE_DIR, out, SAMPLE_DIR, out, out, out, SAMPLE_DIR, out), 0);
    fm_test_write_file(script, lua, strlen(lua));
    free(lua);
    fm_test_proc r;
    fmhost(&r, "script", script, NULL);
    ck_assert_msg(r.status == 0, "%s%s", r.out, r.err);
    ASSERT_HAS(r.out, "/dash/index.html");
    fm_test_proc_free(&r);
}
END_TEST

/* Numbers and files are the same with and without the store. */
START_TEST(test_tracking_changes_no_result)
{
    char a[4200], b[4200], pa[4400], pb[4400];
    path_in(a, sizeof a, "tracked");
    path_in(b, sizeof b, "untracked");
    fm_test_proc r;
    for (int i = 0; i < 2; i++) {
        /* The second run's last argument is its list's end without --no-track. */
        fmhost(&r, "train", "--model", "mlp", "--data-dir", SAMPLE_DIR, "--epochs", "2", "--limit",
               "200", "--threads", "1", "--quiet", "--out", i ? b : a, i ? "--no-track" : NULL,
               NULL);
        ck_assert_int_eq(r.status, 0);
        fm_test_proc_free(&r);
    }
    snprintf(pa, sizeof pa, "%s/artifacts/mlp_best.safetensors", a);
    snprintf(pb, sizeof pb, "%s/artifacts/mlp_best.safetensors", b);
    char sa[65], sb[65];
    ck_assert_int_eq(fm_sha256_file(pa, sa, NULL), FM_OK);
    ck_assert_int_eq(fm_sha256_file(pb, sb, NULL), FM_OK);
    ck_assert_str_eq(sa, sb);
    snprintf(pa, sizeof pa, "%s/results/mlp/metrics.csv", a);
    snprintf(pb, sizeof pb, "%s/results/mlp/metrics.csv", b);
    int la, lb;
    char *ma = fm_test_metrics_without_seconds(pa, &la), *mb = fm_test_metrics_without_seconds(pb, &lb);
    ck_assert_str_eq(ma, mb);
    free(ma), free(mb);
}
END_TEST

/* fm_sha256_file against the FIPS 180-4 examples. */
START_TEST(test_sha256)
{
    static const struct { const char *in, *hex; } cases[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char path[4200], hex[65];
    path_in(path, sizeof path, "h");
    for (size_t i = 0; i < 3; i++) {
        fm_test_write_file(path, cases[i].in, strlen(cases[i].in));
        int64_t bytes;
        ck_assert_int_eq(fm_sha256_file(path, hex, &bytes), FM_OK);
        ck_assert_str_eq(hex, cases[i].hex);
        ck_assert_int_eq(bytes, (int64_t)strlen(cases[i].in));
    }
    /* A million 'a': many blocks. */
    char *m = fm_xmalloc(1000000);
    memset(m, 'a', 1000000);
    fm_test_write_file(path, m, 1000000);
    free(m);
    ck_assert_int_eq(fm_sha256_file(path, hex, NULL), FM_OK);
    ck_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("runs");
    TCase *tc = tcase_create("runs");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_sha256);
    tcase_add_test(tc, test_two_runs_listed_and_compared);
    tcase_add_test(tc, test_killed_run_marked);
    tcase_add_test(tc, test_diverged_recorded);
    tcase_add_test(tc, test_concurrent_runs);
    tcase_add_test(tc, test_concurrent_create);
    tcase_add_test(tc, test_migration_from_v1);
    tcase_add_test(tc, test_bad_stores);
    tcase_add_test(tc, test_lua_query);
    tcase_add_test(tc, test_tracking_changes_no_result);
    suite_add_tcase(s, tc);
    return fm_test_run(s);
}
