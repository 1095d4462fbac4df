/* query.c — reading runs back: filters, sorting, one run with its epochs,
 * settings, per-class accuracy and artifacts. */
#include "track_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static const char *const sort_keys[] = {
    "id", "started", "ended", "model", "status", "test_acc", "test_loss", "val_acc", "val_loss",
    "best_epoch", "epochs_run", "wall_seconds", "peak_rss_kb", "params", "seed", NULL,
};

const char *const *fm_track_sort_keys(void) { return sort_keys; }

static char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    return s ? fm_xstrdup((const char *)s) : NULL;
}

static double col_real(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

#define RUN_COLUMNS                                                                               \
    "id, kind, model, status, message, sweep, started, ended, heartbeat, command, cwd, host, pid," \
    " pid_start, plugin_path, plugin_sha256, hparams, kernels, precision, fmhost_version,"        \
    " out_dir, data_dir, run_dir, seed, threads, params, peak_rss_kb, epochs_run, best_epoch,"   \
    " test_n, val_loss, val_acc, test_loss, test_acc, wall_seconds, confusion"

static void read_row(sqlite3_stmt *st, fm_track_run *r)
{
    int c = 0;
    r->id = sqlite3_column_int64(st, c++);
    char **texts[] = {&r->kind, &r->model, &r->status, &r->message, &r->sweep, &r->started,
                      &r->ended, &r->heartbeat, &r->command, &r->cwd, &r->host};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) *texts[i] = col_text(st, c++);
    r->pid = sqlite3_column_int64(st, c++);
    r->pid_start = sqlite3_column_int64(st, c++);
    char **more[] = {&r->plugin_path, &r->plugin_sha256, &r->hparams, &r->kernels, &r->precision,
                     &r->fmhost_version, &r->out_dir, &r->data_dir, &r->run_dir};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) *more[i] = col_text(st, c++);
    r->seed = sqlite3_column_int64(st, c++);
    r->threads = sqlite3_column_int64(st, c++);
    r->params = sqlite3_column_int64(st, c++);
    r->peak_rss_kb = sqlite3_column_int64(st, c++);
    r->epochs_run = sqlite3_column_int(st, c++);
    r->best_epoch = sqlite3_column_int(st, c++);
    r->test_n = sqlite3_column_int(st, c++);
    r->val_loss = col_real(st, c++);
    r->val_acc = col_real(st, c++);
    r->test_loss = col_real(st, c++);
    r->test_acc = col_real(st, c++);
    r->wall_seconds = col_real(st, c++);
    const char *conf = (const char *)sqlite3_column_text(st, c++);
    json_t *j = conf ? json_loads(conf, 0, NULL) : NULL;
    if (json_is_array(j) && json_array_size(j) == FM_NUM_CLASSES) {
        r->have_confusion = true;
        for (int a = 0; a < FM_NUM_CLASSES; a++)
            for (int b = 0; b < FM_NUM_CLASSES; b++)
                r->confusion[a][b] = json_integer_value(json_array_get(json_array_get(j, (size_t)a),
                                                                       (size_t)b));
    }
    json_decref(j);
}

/* The epochs, settings, classes and artifacts of r->id. */
static fm_status read_details(fm_track *t, fm_track_run *r)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(t->db, "SELECT epoch, train_loss, train_acc, val_loss, val_acc, lr,"
                           " seconds FROM epochs WHERE run_id = ?1 ORDER BY epoch", -1, &st,
                           NULL) != SQLITE_OK)
        return track_error(t, "read");
    sqlite3_bind_int64(st, 1, r->id);
    while (sqlite3_step(st) == SQLITE_ROW) {
        fm_metrics_row m = {sqlite3_column_int(st, 0), col_real(st, 1), col_real(st, 2),
                            col_real(st, 3), col_real(st, 4), col_real(st, 5), col_real(st, 6)};
        fm_metrics_append(&r->history, &m);
    }
    sqlite3_finalize(st);

    if (sqlite3_prepare_v2(t->db, "SELECT kind, key, value FROM settings WHERE run_id = ?1"
                           " ORDER BY kind, rowid", -1, &st, NULL) != SQLITE_OK)
        return track_error(t, "read");
    sqlite3_bind_int64(st, 1, r->id);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int n = r->n_settings++;
        r->setting_kind = fm_xrealloc(r->setting_kind, (size_t)(n + 1) * sizeof(char *));
        r->setting_key = fm_xrealloc(r->setting_key, (size_t)(n + 1) * sizeof(char *));
        r->setting_value = fm_xrealloc(r->setting_value, (size_t)(n + 1) * sizeof(char *));
        r->setting_kind[n] = col_text(st, 0);
        r->setting_key[n] = col_text(st, 1);
        r->setting_value[n] = col_text(st, 2);
    }
    sqlite3_finalize(st);

    if (sqlite3_prepare_v2(t->db, "SELECT class, accuracy, support FROM classes WHERE run_id = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return track_error(t, "read");
    sqlite3_bind_int64(st, 1, r->id);
    for (int c = 0; c < FM_NUM_CLASSES; c++) r->class_acc[c] = NAN;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int c = sqlite3_column_int(st, 0);
        if (c < 0 || c >= FM_NUM_CLASSES) continue;
        r->have_classes = true;
        r->class_acc[c] = col_real(st, 1);
        r->class_support[c] = sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);

    if (sqlite3_prepare_v2(t->db, "SELECT name, path, sha256, bytes FROM artifacts WHERE"
                           " run_id = ?1 ORDER BY name", -1, &st, NULL) != SQLITE_OK)
        return track_error(t, "read");
    sqlite3_bind_int64(st, 1, r->id);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int n = r->n_artifacts++;
        r->artifact_name = fm_xrealloc(r->artifact_name, (size_t)(n + 1) * sizeof(char *));
        r->artifact_path = fm_xrealloc(r->artifact_path, (size_t)(n + 1) * sizeof(char *));
        r->artifact_sha256 = fm_xrealloc(r->artifact_sha256, (size_t)(n + 1) * sizeof(char *));
        r->artifact_bytes = fm_xrealloc(r->artifact_bytes, (size_t)(n + 1) * sizeof(int64_t));
        r->artifact_name[n] = col_text(st, 0);
        r->artifact_path[n] = col_text(st, 1);
        r->artifact_sha256[n] = col_text(st, 2);
        r->artifact_bytes[n] = sqlite3_column_int64(st, 3);
    }
    sqlite3_finalize(st);
    return FM_OK;
}

void fm_track_run_clear(fm_track_run *r)
{
    char *texts[] = {r->kind, r->model, r->status, r->message, r->sweep, r->started, r->ended,
                     r->heartbeat, r->command, r->cwd, r->host, r->plugin_path, r->plugin_sha256,
                     r->hparams, r->kernels, r->precision, r->fmhost_version, r->out_dir,
                     r->data_dir, r->run_dir};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) free(texts[i]);
    for (int i = 0; i < r->n_settings; i++) {
        free(r->setting_kind[i]);
        free(r->setting_key[i]);
        free(r->setting_value[i]);
    }
    free(r->setting_kind);
    free(r->setting_key);
    free(r->setting_value);
    for (int i = 0; i < r->n_artifacts; i++) {
        free(r->artifact_name[i]);
        free(r->artifact_path[i]);
        free(r->artifact_sha256[i]);
    }
    free(r->artifact_name);
    free(r->artifact_path);
    free(r->artifact_sha256);
    free(r->artifact_bytes);
    fm_metrics_free(&r->history);
    memset(r, 0, sizeof *r);
}

void fm_track_runs_free(fm_track_run *runs, int n)
{
    for (int i = 0; i < n; i++) fm_track_run_clear(&runs[i]);
    free(runs);
}

const char *fm_track_run_setting(const fm_track_run *r, const char *key)
{
    for (int i = 0; i < r->n_settings; i++)
        if (!strcmp(r->setting_key[i], key)) return r->setting_value[i];
    return NULL;
}

/* One run, without first reaping the dead ones. */
static fm_status load_run(fm_track *t, int64_t id, fm_track_run *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(t->db, "SELECT " RUN_COLUMNS " FROM runs WHERE id = ?1", -1, &st,
                           NULL) != SQLITE_OK)
        return track_error(t, "read");
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) read_row(st, out);
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE)
        return fm_error_set(FM_ERR_ARG, "no run %lld in %s (fmhost runs list shows the runs)",
                            (long long)id, t->path);
    if (rc != SQLITE_ROW) return track_error(t, "read");
    fm_status s = read_details(t, out);
    if (s != FM_OK) fm_track_run_clear(out);
    return s;
}

fm_status fm_track_get(fm_track *t, int64_t id, fm_track_run *out)
{
    fm_track_reap(t);
    return load_run(t, id, out);
}

/* "YYYY-MM-DD", optionally followed by " HH:MM" and ":SS": what compares
 * with the stored times as text. */
static bool is_date(const char *s)
{
    static const char *const shapes[] = {"dddd-dd-dd", "dddd-dd-dd dd:dd", "dddd-dd-dd dd:dd:dd"};
    for (int k = 0; k < 3; k++) {
        const char *p = shapes[k], *q = s;
        while (*p && *q && (*p == 'd' ? (*q >= '0' && *q <= '9') : *p == *q)) p++, q++;
        if (!*p && !*q) return true;
    }
    return false;
}

/* A setting's value against a wanted one: the same text, or the same
 * number to 6 significant digits ("lr=0.001" finds 0.00100000005, the
 * float32 1e-3 as recorded). */
static bool same_value(const char *have, const char *want)
{
    if (!strcmp(have, want)) return true;
    char *e1, *e2;
    double a = strtod(have, &e1), b = strtod(want, &e2);
    if (e1 == have || *e1 || e2 == want || *e2 || !isfinite(a) || !isfinite(b)) return false;
    return fabs(a - b) <= 1e-6 * fmax(fabs(a), fabs(b));
}

static bool matches(const fm_track_run *r, const fm_track_filter *f)
{
    for (int i = 0; i < f->n_where; i++) {
        const char *eq = strchr(f->where[i], '=');
        bool found = false;
        for (int k = 0; k < r->n_settings && !found; k++)
            found = strlen(r->setting_key[k]) == (size_t)(eq - f->where[i]) &&
                    !strncmp(r->setting_key[k], f->where[i], (size_t)(eq - f->where[i])) &&
                    r->setting_value[k] && same_value(r->setting_value[k], eq + 1);
        if (!found) return false;
    }
    return true;
}

fm_status fm_track_query(fm_track *t, const fm_track_filter *f, fm_track_run **runs_out, int *n_out)
{
    *runs_out = NULL;
    *n_out = 0;
    const char *sort = f->sort ? f->sort : "started";
    bool known = false;
    for (int i = 0; sort_keys[i]; i++) known = known || !strcmp(sort, sort_keys[i]);
    if (!known) {
        char list[512] = "";
        for (int i = 0; sort_keys[i]; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                     sort_keys[i]);
        return fm_error_set(FM_ERR_ARG, "--sort '%s': not a column to sort by; choose one of %s",
                            sort, list);
    }
    const char *dates[2][2] = {{"--since", f->since}, {"--until", f->until}};
    for (int i = 0; i < 2; i++)
        if (dates[i][1] && !is_date(dates[i][1]))
            return fm_error_set(FM_ERR_ARG, "%s '%s': expected a UTC date, YYYY-MM-DD or "
                                "'YYYY-MM-DD HH:MM[:SS]'", dates[i][0], dates[i][1]);
    for (int i = 0; i < f->n_where; i++)
        if (!strchr(f->where[i], '=') || f->where[i][0] == '=')
            return fm_error_set(FM_ERR_ARG, "--where '%s': expected KEY=VALUE, e.g. --where lr=0.001"
                                " or --where width=64", f->where[i]);
    fm_track_reap(t);

    /* Every value is bound; only the whitelisted sort key is spliced in. */
    char sql[4096];
    int n = snprintf(sql, sizeof sql, "SELECT id FROM runs WHERE (?1 IS NULL OR model = ?1) AND"
                     " (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR kind = ?3) AND"
                     " (?4 IS NULL OR sweep = ?4) AND (?5 IS NULL OR started >= ?5) AND"
                     " (?6 IS NULL OR started < ?6)");
    snprintf(sql + n, sizeof sql - (size_t)n, " ORDER BY %s IS NULL, %s %s, id %s", sort, sort,
             f->ascending ? "ASC" : "DESC", f->ascending ? "ASC" : "DESC");
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(t->db, sql, -1, &st, NULL) != SQLITE_OK) return track_error(t, "query");
    const char *binds[] = {f->model, f->status, f->kind, f->sweep, f->since, f->until};
    for (int i = 0; i < 6; i++)
        if (binds[i]) sqlite3_bind_text(st, i + 1, binds[i], -1, SQLITE_TRANSIENT);
    int64_t *ids = NULL;
    int count = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ids = fm_xrealloc(ids, (size_t)(count + 1) * sizeof *ids);
        ids[count++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        free(ids);
        return track_error(t, "query");
    }
    fm_track_run *runs = fm_xcalloc((size_t)count + 1, sizeof *runs);
    int kept = 0;
    for (int i = 0; i < count && (f->limit <= 0 || kept < f->limit); i++) {
        fm_status s = load_run(t, ids[i], &runs[kept]);
        if (s != FM_OK) {
            free(ids);
            fm_track_runs_free(runs, kept);
            return s;
        }
        if (matches(&runs[kept], f))
            kept++;
        else
            fm_track_run_clear(&runs[kept]);
    }
    free(ids);
    *runs_out = runs;
    *n_out = kept;
    return FM_OK;
}

fm_status fm_track_delete(fm_track *t, int64_t id)
{
    char s[32];
    snprintf(s, sizeof s, "%lld", (long long)id);
    const char *args[] = {s};
    if (sqlite3_exec(t->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return track_error(t, "delete");
    static const char *const tables[] = {"epochs", "settings", "classes", "artifacts"};
    fm_status st = FM_OK;
    for (size_t i = 0; st == FM_OK && i < 4; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "DELETE FROM %s WHERE run_id = ?1", tables[i]);
        st = track_exec(t, sql, args, 1);
    }
    if (st == FM_OK) st = track_exec(t, "DELETE FROM runs WHERE id = ?1", args, 1);
    if (st == FM_OK && sqlite3_exec(t->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) return FM_OK;
    if (st == FM_OK) st = track_error(t, "delete");
    sqlite3_exec(t->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}
