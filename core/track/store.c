/* store.c — the run store's file: opening it in WAL mode with a busy
 * timeout, its schema and the migrations from older versions, and the
 * readers' check for runs whose process died. */
#include "track_internal.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fm/fm_io.h"

/* Writers wait this long for each other before giving up (a sweep's runs
 * end their epochs at the same moments). */
#define BUSY_TIMEOUT_MS 60000

/* migrations[v] takes a store from version v to v + 1 (0: an empty file).
 * Only ever append: a file written by an older fmhost is migrated by the
 * steps it lacks. */
static const char *const migrations[FM_TRACK_SCHEMA_VERSION] = {
    /* 0 -> 1 */
    "CREATE TABLE schema_version(version INTEGER NOT NULL);"
    "INSERT INTO schema_version VALUES(0);"
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
    " sha256 TEXT, bytes INTEGER, PRIMARY KEY(run_id, name));",
    /* 1 -> 2: sweeps, and a process identity that survives pid reuse */
    "ALTER TABLE runs ADD COLUMN sweep TEXT;"
    "ALTER TABLE runs ADD COLUMN pid_start INTEGER;"
    "ALTER TABLE runs ADD COLUMN heartbeat TEXT;"
    "CREATE INDEX runs_model ON runs(model);"
    "CREATE INDEX runs_sweep ON runs(sweep);",
};

fm_status track_error(const fm_track *t, const char *what)
{
    int code = t->db ? sqlite3_errcode(t->db) : SQLITE_CANTOPEN;
    const char *msg = t->db ? sqlite3_errmsg(t->db) : "out of memory";
    if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT)
        return fm_error_set(FM_ERR_FORMAT, "%s: %s: not a readable run store (%s); move it away "
                            "or give another --runs-db", t->path, what, msg);
    return fm_error_set(FM_ERR_IO, "%s: %s: %s", t->path, what, msg);
}

fm_status track_exec(fm_track *t, const char *sql, const char *const *args, int n)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(t->db, sql, -1, &st, NULL) != SQLITE_OK) return track_error(t, "prepare");
    for (int i = 0; i < n; i++)
        if (args[i])
            sqlite3_bind_text(st, i + 1, args[i], -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? FM_OK : track_error(t, "write");
}

/* The schema's version: 0 for an empty file; -1 for a database that is
 * not a run store (tables, but no schema_version). */
static fm_status schema_version(fm_track *t, int *version)
{
    sqlite3_stmt *st;
    *version = 0;
    if (sqlite3_prepare_v2(t->db, "SELECT (SELECT count(*) FROM sqlite_master),"
                           " (SELECT count(*) FROM sqlite_master WHERE name = 'schema_version')",
                           -1, &st, NULL) != SQLITE_OK)
        return track_error(t, "read");
    int rc = sqlite3_step(st);
    int tables = sqlite3_column_int(st, 0), ours = sqlite3_column_int(st, 1);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) return track_error(t, "read");
    if (tables == 0) return FM_OK;
    if (!ours) {
        *version = -1;
        return FM_OK;
    }
    if (sqlite3_prepare_v2(t->db, "SELECT max(version) FROM schema_version", -1, &st, NULL) !=
        SQLITE_OK)
        return track_error(t, "read");
    rc = sqlite3_step(st);
    *version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? FM_OK : track_error(t, "read");
}

/* Brings the schema to this build's version, in one transaction that
 * concurrent openers wait for (so one of them migrates). */
static fm_status migrate(fm_track *t, bool writable)
{
    int version;
    fm_status st = schema_version(t, &version);
    if (st != FM_OK) return st;
    if (version == FM_TRACK_SCHEMA_VERSION) return FM_OK;
    if (version < 0)
        return fm_error_set(FM_ERR_FORMAT, "%s: an SQLite database, but not an fmhost run store "
                            "(no schema_version table); give another --runs-db", t->path);
    if (version > FM_TRACK_SCHEMA_VERSION)
        return fm_error_set(FM_ERR_FORMAT, "%s: run store schema version %d is newer than this "
                            "fmhost's (%d); use a newer fmhost", t->path, version,
                            FM_TRACK_SCHEMA_VERSION);
    if (!writable)
        return fm_error_set(FM_ERR_IO, "%s: run store schema version %d needs migrating to %d, "
                            "but the file is read-only", t->path, version, FM_TRACK_SCHEMA_VERSION);
    if (sqlite3_exec(t->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return track_error(t, "lock for migration");
    if ((st = schema_version(t, &version)) != FM_OK) goto fail;  /* another process may have */
    for (; version >= 0 && version < FM_TRACK_SCHEMA_VERSION; version++) {
        char set[64];
        snprintf(set, sizeof set, "UPDATE schema_version SET version = %d", version + 1);
        if (sqlite3_exec(t->db, migrations[version], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(t->db, set, NULL, NULL, NULL) != SQLITE_OK) {
            st = track_error(t, "migrate the schema");
            goto fail;
        }
    }
    if (sqlite3_exec(t->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) return FM_OK;
    st = track_error(t, "migrate the schema");
fail:
    sqlite3_exec(t->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

/* sqlite3_exec, retried while the file is busy for up to the busy timeout:
 * switching a new file to WAL needs it alone, and a second process opening
 * it at the same moment gets SQLITE_BUSY at once, without the busy handler. */
static int exec_when_free(sqlite3 *db, const char *sql)
{
    for (int waited_ms = 0;; waited_ms += 10) {
        int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        if (rc != SQLITE_BUSY || waited_ms >= BUSY_TIMEOUT_MS) return rc;
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
}

const char *fm_track_default_path(const char *explicit_path, const char *out_dir, char *buf,
                                  size_t size)
{
    const char *env = getenv("FMHOST_RUNS_DB");
    if (explicit_path && *explicit_path)
        snprintf(buf, size, "%s", explicit_path);
    else if (env && *env)
        snprintf(buf, size, "%s", env);
    else
        snprintf(buf, size, "%s/runs.db", out_dir && *out_dir ? out_dir : ".");
    return buf;
}

fm_status fm_track_open(fm_track **out, const char *path, bool create)
{
    *out = NULL;
    fm_track *t = fm_xcalloc(1, sizeof *t);
    snprintf(t->path, sizeof t->path, "%s", path);
    fm_status st;
    if (!create && access(path, F_OK) != 0) {
        st = fm_error_set(FM_ERR_IO, "%s: no run store there (%s); runs are recorded in "
                          "<out>/runs.db by fmhost train and eval, or give --runs-db PATH",
                          path, strerror(errno));
        free(t);
        return st;
    }
    if (create) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        if (fm_mkdirs(dirname(dir)) != FM_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", fm_error_message());
            st = fm_error_set(FM_ERR_IO, "%s: cannot create the run store: %s; give a writable "
                              "--runs-db PATH (or --no-track)", path, why);
            free(t);
            return st;
        }
    }
    bool writable = true;
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path, &t->db, flags, NULL) != SQLITE_OK && !create) {
        sqlite3_close(t->db);
        t->db = NULL;
        writable = false;
        sqlite3_open_v2(path, &t->db, SQLITE_OPEN_READONLY, NULL);
    }
    if (!t->db || sqlite3_errcode(t->db) != SQLITE_OK) {
        st = fm_error_set(FM_ERR_IO, "%s: cannot %s the run store: %s; give a writable --runs-db "
                          "PATH (or --no-track)", path, create ? "create or open" : "open",
                          t->db ? sqlite3_errmsg(t->db) : "out of memory");
        fm_track_close(t);
        return st;
    }
    sqlite3_busy_timeout(t->db, BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(t->db, 0);
    if (writable &&
        (exec_when_free(t->db, "PRAGMA journal_mode=WAL") != SQLITE_OK ||
         sqlite3_exec(t->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL) != SQLITE_OK)) {
        st = track_error(t, "open");
        fm_track_close(t);
        return st;
    }
    if ((st = migrate(t, writable)) != FM_OK) {
        fm_track_close(t);
        return st;
    }
    *out = t;
    return FM_OK;
}

void fm_track_close(fm_track *t)
{
    if (!t) return;
    sqlite3_close(t->db);
    free(t);
}

const char *fm_track_path(const fm_track *t) { return t->path; }
int64_t fm_track_run_id(const fm_track *t) { return t->run; }
const char *fm_track_run_dir(const fm_track *t) { return t->run_dir; }

int fm_track_reap(fm_track *t)
{
    sqlite3_stmt *st;
    char host[256];
    track_host(host, sizeof host);
    if (sqlite3_prepare_v2(t->db, "SELECT id, pid, pid_start FROM runs WHERE status = 'running'"
                           " AND host = ?1", -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, host, -1, SQLITE_TRANSIENT);
    int64_t dead[256];
    int n = 0;
    while (n < 256 && sqlite3_step(st) == SQLITE_ROW) {
        int64_t pid = sqlite3_column_int64(st, 1), start = sqlite3_column_int64(st, 2);
        int64_t now = pid > 0 ? track_proc_start(pid) : 0;
        if (now == 0 || (start != 0 && now != start)) dead[n++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    int reaped = 0;
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "%lld", (long long)dead[i]);
        const char *args[] = {id};
        /* Only if still "running": its process may have ended it meanwhile. */
        if (track_exec(t, "UPDATE runs SET status = 'failed', ended = coalesce(heartbeat, started),"
                       " message = 'the process (pid ' || pid || ' on ' || host || ') ended without"
                       " recording the end of the run: it was killed (SIGKILL, out of memory) or"
                       " crashed' WHERE id = ?1 AND status = 'running'", args, 1) == FM_OK)
            reaped += sqlite3_changes(t->db) > 0;
    }
    fm_error_clear();
    return reaped;
}
