/* record.c — writing a run as it goes: its row at the start, a row per
 * epoch, the files it keeps in its folder, its end.  Each write is one
 * short transaction, so concurrent writers only ever wait for each other. */
#include "track_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm/fm_io.h"

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static void bind_real(sqlite3_stmt *st, int i, double v)
{
    if (isfinite(v))
        sqlite3_bind_double(st, i, v);
    else
        sqlite3_bind_null(st, i);
}

/* Steps a prepared write and finalizes it. */
static fm_status step_done(fm_track *t, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    fm_status s = rc == SQLITE_DONE ? FM_OK : track_error(t, what);
    sqlite3_finalize(st);
    return s;
}

static fm_status prepare(fm_track *t, const char *sql, sqlite3_stmt **st)
{
    return sqlite3_prepare_v2(t->db, sql, -1, st, NULL) == SQLITE_OK ? FM_OK
                                                                      : track_error(t, "prepare");
}

/* <out>/runs/<id>, or <id>.2, <id>.3, ... when another store's run took it. */
static fm_status make_run_dir(fm_track *t, const char *out_dir)
{
    char parent[4096];
    snprintf(parent, sizeof parent, "%s/runs", out_dir);
    fm_status st = fm_mkdirs(parent);
    if (st != FM_OK) return st;
    for (int k = 1; k < 1000; k++) {
        if (k == 1)
            snprintf(t->run_dir, sizeof t->run_dir, "%s/%lld", parent, (long long)t->run);
        else
            snprintf(t->run_dir, sizeof t->run_dir, "%s/%lld.%d", parent, (long long)t->run, k);
        if (mkdir(t->run_dir, 0777) == 0) {
            /* Absolute, so that readers anywhere find its files. */
            char abs[PATH_MAX];
            if (realpath(t->run_dir, abs)) snprintf(t->run_dir, sizeof t->run_dir, "%s", abs);
            return FM_OK;
        }
        if (errno != EEXIST) break;
    }
    st = fm_error_set(FM_ERR_IO, "%s: cannot create the run's folder (%s)", t->run_dir,
                      strerror(errno));
    t->run_dir[0] = '\0';
    return st;
}

static fm_status insert_settings(fm_track *t, const char *kind, const char *const *kv, int n)
{
    for (int i = 0; i < n; i++) {
        sqlite3_stmt *st;
        fm_status s = prepare(t, "INSERT OR REPLACE INTO settings VALUES(?1, ?2, ?3, ?4)", &st);
        if (s != FM_OK) return s;
        sqlite3_bind_int64(st, 1, t->run);
        bind_text(st, 2, kind);
        bind_text(st, 3, kv[2 * i]);
        bind_text(st, 4, kv[2 * i + 1]);
        if ((s = step_done(t, st, "record the run's settings")) != FM_OK) return s;
    }
    return FM_OK;
}

fm_status fm_track_begin(fm_track *t, const fm_track_start *s)
{
    FM_ASSERT(t->run == 0);
    char now[20], host[256], cwd[4096], sha[65] = "";
    if (s->plugin_path && fm_sha256_file(s->plugin_path, sha, NULL) != FM_OK) sha[0] = '\0';
    fm_error_clear();
    if (!getcwd(cwd, sizeof cwd)) cwd[0] = '\0';
    sqlite3_stmt *st;
    fm_status rc;
    if (sqlite3_exec(t->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return track_error(t, "record the run's start");
    if ((rc = prepare(t, "INSERT INTO runs(kind, model, status, started, heartbeat, command, cwd,"
                      " host, pid, pid_start, plugin_path, plugin_sha256, hparams, seed, threads,"
                      " kernels, precision, fmhost_version, out_dir, data_dir, params, sweep)"
                      " VALUES(?1, ?2, 'running', ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,"
                      " ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)", &st)) != FM_OK)
        goto fail;
    track_now(now);
    bind_text(st, 1, s->kind);
    bind_text(st, 2, s->model);
    bind_text(st, 3, now);
    bind_text(st, 4, s->command);
    bind_text(st, 5, cwd[0] ? cwd : NULL);
    bind_text(st, 6, track_host(host, sizeof host));
    sqlite3_bind_int64(st, 7, getpid());
    sqlite3_bind_int64(st, 8, track_proc_start(getpid()));
    bind_text(st, 9, s->plugin_path);
    bind_text(st, 10, sha[0] ? sha : NULL);
    bind_text(st, 11, s->hparams);
    sqlite3_bind_int64(st, 12, (sqlite3_int64)s->seed);
    sqlite3_bind_int(st, 13, s->threads);
    bind_text(st, 14, s->kernels);
    bind_text(st, 15, s->precision);
    bind_text(st, 16, FM_VERSION_STRING);
    bind_text(st, 17, s->out_dir);
    bind_text(st, 18, s->data_dir);
    sqlite3_bind_int64(st, 19, s->params);
    bind_text(st, 20, s->sweep);
    if ((rc = step_done(t, st, "record the run's start")) != FM_OK) goto fail;
    t->run = sqlite3_last_insert_rowid(t->db);
    if ((rc = insert_settings(t, "hparam", s->hp_kv, s->n_hp)) != FM_OK ||
        (rc = insert_settings(t, "option", s->opt_kv, s->n_opt)) != FM_OK)
        goto fail;
    if (sqlite3_exec(t->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        rc = track_error(t, "record the run's start");
        goto fail;
    }
    if (s->out_dir && (rc = make_run_dir(t, s->out_dir)) != FM_OK) return rc;
    if (t->run_dir[0]) {
        char id[32];
        snprintf(id, sizeof id, "%lld", (long long)t->run);
        const char *args[] = {t->run_dir, id};
        return track_exec(t, "UPDATE runs SET run_dir = ?1 WHERE id = ?2", args, 2);
    }
    return FM_OK;
fail:
    sqlite3_exec(t->db, "ROLLBACK", NULL, NULL, NULL);
    t->run = 0;
    return rc;
}

fm_status fm_track_epoch(fm_track *t, const fm_metrics_row *m)
{
    FM_ASSERT(t->run > 0);
    sqlite3_stmt *st;
    fm_status rc;
    char now[20];
    if (sqlite3_exec(t->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return track_error(t, "record an epoch");
    if ((rc = prepare(t, "INSERT OR REPLACE INTO epochs VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                      &st)) != FM_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, t->run);
    sqlite3_bind_int(st, 2, m->epoch);
    bind_real(st, 3, m->train_loss);
    bind_real(st, 4, m->train_acc);
    bind_real(st, 5, m->val_loss);
    bind_real(st, 6, m->val_acc);
    bind_real(st, 7, m->lr);
    bind_real(st, 8, m->seconds);
    if ((rc = step_done(t, st, "record an epoch")) != FM_OK) goto fail;
    if ((rc = prepare(t, "UPDATE runs SET heartbeat = ?1, epochs_run = ?2 WHERE id = ?3", &st)) !=
        FM_OK)
        goto fail;
    bind_text(st, 1, track_now(now));
    sqlite3_bind_int(st, 2, m->epoch);
    sqlite3_bind_int64(st, 3, t->run);
    if ((rc = step_done(t, st, "record an epoch")) != FM_OK) goto fail;
    if (sqlite3_exec(t->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) return FM_OK;
    rc = track_error(t, "record an epoch");
fail:
    sqlite3_exec(t->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

fm_status track_copy_file(const char *src, const char *dst)
{
    char *data;
    size_t len;
    fm_status st = fm_file_read_all(src, (size_t)1 << 31, &data, &len);
    if (st != FM_OK) return st;
    st = fm_file_write_atomic(dst, data, len);
    free(data);
    return st;
}

fm_status fm_track_keep(fm_track *t, const char *path, const char *name)
{
    FM_ASSERT(t->run > 0);
    if (!t->run_dir[0]) return FM_OK;
    if (!name) {
        name = strrchr(path, '/');
        name = name ? name + 1 : path;
    }
    char dst[4400], tmp[4500];
    snprintf(dst, sizeof dst, "%s/%s", t->run_dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dst, (long)getpid());
    fm_status st;
    unlink(tmp);
    if (link(path, tmp) == 0) {
        if (rename(tmp, dst) != 0) {
            st = fm_error_set(FM_ERR_IO, "%s: cannot rename into place (%s)", dst, strerror(errno));
            unlink(tmp);
            return st;
        }
        unlink(tmp);  /* left when dst already was this very file (rename did nothing) */
    } else if ((st = track_copy_file(path, dst)) != FM_OK) {
        return st;
    }
    char sha[65], id[32], bytes_s[32];
    int64_t bytes;
    if ((st = fm_sha256_file(dst, sha, &bytes)) != FM_OK) return st;
    snprintf(id, sizeof id, "%lld", (long long)t->run);
    snprintf(bytes_s, sizeof bytes_s, "%lld", (long long)bytes);
    const char *args[] = {id, name, dst, sha, bytes_s};
    return track_exec(t, "INSERT OR REPLACE INTO artifacts VALUES(?1, ?2, ?3, ?4, CAST(?5 AS INTEGER))",
                      args, 5);
}

fm_status fm_track_finish(fm_track *t, const fm_track_end *e)
{
    FM_ASSERT(t->run > 0);
    sqlite3_stmt *st;
    fm_status rc;
    char now[20], confusion[FM_NUM_CLASSES * FM_NUM_CLASSES * 12 + 64];
    if (e->confusion) {
        size_t n = 0;
        n += (size_t)snprintf(confusion + n, sizeof confusion - n, "[");
        for (int i = 0; i < FM_NUM_CLASSES; i++)
            for (int j = 0; j < FM_NUM_CLASSES; j++)
                n += (size_t)snprintf(confusion + n, sizeof confusion - n, "%s%s%lld",
                                      j == 0 ? (i ? "]," : "") : ",", j == 0 ? "[" : "",
                                      (long long)e->confusion[i][j]);
        snprintf(confusion + n, sizeof confusion - n, "]]");
    }
    if (sqlite3_exec(t->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return track_error(t, "record the run's end");
    if ((rc = prepare(t, "UPDATE runs SET status = ?1, message = ?2, ended = ?3, heartbeat = ?3,"
                      " epochs_run = ?4, best_epoch = ?5, val_loss = ?6, val_acc = ?7,"
                      " test_loss = ?8, test_acc = ?9, test_n = ?10, confusion = ?11,"
                      " wall_seconds = ?12, peak_rss_kb = ?13 WHERE id = ?14", &st)) != FM_OK)
        goto fail;
    bind_text(st, 1, e->status);
    bind_text(st, 2, e->message && *e->message ? e->message : NULL);
    bind_text(st, 3, track_now(now));
    sqlite3_bind_int(st, 4, e->epochs_run);
    sqlite3_bind_int(st, 5, e->best_epoch);
    bind_real(st, 6, e->val_loss);
    bind_real(st, 7, e->val_acc);
    bind_real(st, 8, e->test_loss);
    bind_real(st, 9, e->test_acc);
    if (e->test_n > 0)
        sqlite3_bind_int(st, 10, e->test_n);
    else
        sqlite3_bind_null(st, 10);
    bind_text(st, 11, e->confusion ? confusion : NULL);
    bind_real(st, 12, e->wall_seconds);
    sqlite3_bind_int64(st, 13, fm_peak_rss_kb());
    sqlite3_bind_int64(st, 14, t->run);
    if ((rc = step_done(t, st, "record the run's end")) != FM_OK) goto fail;
    for (int c = 0; e->confusion && c < FM_NUM_CLASSES; c++) {
        int64_t support = 0;
        for (int j = 0; j < FM_NUM_CLASSES; j++) support += e->confusion[c][j];
        if ((rc = prepare(t, "INSERT OR REPLACE INTO classes VALUES(?1, ?2, ?3, ?4, ?5)", &st)) !=
            FM_OK)
            goto fail;
        sqlite3_bind_int64(st, 1, t->run);
        sqlite3_bind_int(st, 2, c);
        bind_text(st, 3, fm_class_name(c));
        bind_real(st, 4, support ? (double)e->confusion[c][c] / (double)support : NAN);
        sqlite3_bind_int64(st, 5, support);
        if ((rc = step_done(t, st, "record the per-class accuracy")) != FM_OK) goto fail;
    }
    if (sqlite3_exec(t->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) return FM_OK;
    rc = track_error(t, "record the run's end");
fail:
    sqlite3_exec(t->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}
