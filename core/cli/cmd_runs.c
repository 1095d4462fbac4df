/* fmhost runs: the run store (fm_track.h) from the command line — list,
 * show, compare, export, rm and the offline dashboard. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fm/fm_io.h"
#include "fm/fm_track.h"

static const char runs_usage[] =
    "usage: fmhost runs <list|show|compare|export|rm|html> [options]\n"
    "\n"
    "Every fmhost train, eval and script run is recorded in a run store, an SQLite file\n"
    "(OUT/runs.db by default), with its command and settings, its epochs, its results and\n"
    "its files (kept in OUT/runs/<id>/).\n"
    "\n"
    "  fmhost runs list [filters]         the runs, newest first\n"
    "  fmhost runs show ID                everything recorded about one run\n"
    "  fmhost runs compare ID ID...       settings that differ and results, side by side;\n"
    "                                     overlaid validation curves as PNGs\n"
    "  fmhost runs export --csv|--json [filters] [-o FILE]   to stdout or FILE\n"
    "  fmhost runs rm ID...               forget runs (and remove their OUT/runs/<id>/ files)\n"
    "  fmhost runs html DIR [filters]     a static dashboard, DIR/index.html (works offline)\n"
    "\n"
    "options:\n"
    "  --runs-db PATH      the run store (else $FMHOST_RUNS_DB, else ./runs.db)\n"
    "filters (list, export, html):\n"
    "  --model NAME        runs of this model\n"
    "  --status S          running, completed, stopped, interrupted, diverged or failed\n"
    "  --kind K            train or eval\n"
    "  --sweep ID          runs of one sweep (a script's runs)\n"
    "  --where KEY=VALUE   a hyper-parameter or option has this value (repeatable;\n"
    "                      numbers match to 6 digits: --where lr=0.001, --where width=64)\n"
    "  --since DATE        started on or after DATE (UTC, YYYY-MM-DD[ HH:MM:SS])\n"
    "  --until DATE        started before DATE\n"
    "  --sort KEY          id, started, ended, model, status, test_acc, test_loss, val_acc,\n"
    "                      val_loss, best_epoch, epochs_run, wall_seconds, peak_rss_kb,\n"
    "                      params or seed (started); highest first\n"
    "  --asc               lowest first\n"
    "  --limit N           at most N runs\n"
    "compare:\n"
    "  --plot PREFIX       write PREFIX_val_acc.png and PREFIX_val_loss.png (runs_compare)\n"
    "export:\n"
    "  -o, --output FILE   write to FILE (atomically) instead of stdout\n"
    "rm:\n"
    "  --keep-files        forget the runs but leave their files in OUT/runs/<id>/\n"
    "\n"
    "A run whose process died without recording its end (SIGKILL, a crash) is shown as\n"
    "failed as soon as any fmhost on the same host reads the store.\n";

enum {
    R_DB = 256, R_MODEL, R_STATUS, R_KIND, R_SWEEP, R_WHERE, R_SINCE, R_UNTIL, R_SORT, R_ASC,
    R_LIMIT, R_CSV, R_JSON, R_OUT, R_PLOT, R_KEEP, R_HELP,
};

static const struct option runs_options[] = {
    {"runs-db", required_argument, NULL, R_DB},
    {"model", required_argument, NULL, R_MODEL},
    {"status", required_argument, NULL, R_STATUS},
    {"kind", required_argument, NULL, R_KIND},
    {"sweep", required_argument, NULL, R_SWEEP},
    {"where", required_argument, NULL, R_WHERE},
    {"since", required_argument, NULL, R_SINCE},
    {"until", required_argument, NULL, R_UNTIL},
    {"sort", required_argument, NULL, R_SORT},
    {"asc", no_argument, NULL, R_ASC},
    {"limit", required_argument, NULL, R_LIMIT},
    {"csv", no_argument, NULL, R_CSV},
    {"json", no_argument, NULL, R_JSON},
    {"output", required_argument, NULL, R_OUT},
    {"plot", required_argument, NULL, R_PLOT},
    {"keep-files", no_argument, NULL, R_KEEP},
    {"help", no_argument, NULL, R_HELP},
    {NULL, 0, NULL, 0},
};

typedef struct runs_args {
    const char *db, *output, *plot;
    fm_track_filter filter;
    const char *where[FM_CLI_MAX_SETS];
    bool csv, json, keep_files;
    int n_pos;
    char **pos;  /* the words after the subcommand that are not options */
} runs_args;

/* The options of `fmhost runs SUB ...`; FM_EXIT_OK or the usage error's status. */
static int parse(const char *cmd, int argc, char **argv, runs_args *a)
{
    memset(a, 0, sizeof *a);
    a->filter.where = a->where;
    opterr = 0;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":o:", runs_options, NULL)) != -1;) {
        const char *v = optarg;
        switch (c) {
        case R_DB: a->db = v; break;
        case R_MODEL: a->filter.model = v; break;
        case R_STATUS: a->filter.status = v; break;
        case R_KIND: a->filter.kind = v; break;
        case R_SWEEP: a->filter.sweep = v; break;
        case R_WHERE:
            if (a->filter.n_where == FM_CLI_MAX_SETS)
                return fm_cli_usage_error(cmd, "too many --where options");
            a->where[a->filter.n_where++] = v;
            break;
        case R_SINCE: a->filter.since = v; break;
        case R_UNTIL: a->filter.until = v; break;
        case R_SORT: a->filter.sort = v; break;
        case R_ASC: a->filter.ascending = true; break;
        case R_LIMIT:
            if (!fm_cli_int(v, 1, 1000000000, &a->filter.limit))
                return fm_cli_usage_error(cmd, "--limit '%s': expected an integer >= 1", v);
            break;
        case R_CSV: a->csv = true; break;
        case R_JSON: a->json = true; break;
        case 'o':
        case R_OUT: a->output = v; break;
        case R_PLOT: a->plot = v; break;
        case R_KEEP: a->keep_files = true; break;
        case R_HELP: fputs(runs_usage, stdout); return -1;
        case ':': return fm_cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return fm_cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    a->pos = argv + optind;
    a->n_pos = argc - optind;
    return FM_EXIT_OK;
}

static fm_track *open_store(const char *cmd, const runs_args *a)
{
    char path[4096];
    fm_track *t;
    if (fm_track_open(&t, fm_track_default_path(a->db, ".", path, sizeof path), false) != FM_OK) {
        fprintf(stderr, "fmhost %s: %s\n", cmd, fm_error_message());
        return NULL;
    }
    return t;
}

/* The runs a's filters select, from a's store (whose path goes to path[4096]);
 * FM_EXIT_OK, or the failure's status after printing it. */
static int load_runs(const char *cmd, const runs_args *a, fm_track_run **runs, int *n, char *path)
{
    *runs = NULL;
    *n = 0;
    fm_track *t = open_store(cmd, a);
    if (!t) return FM_EXIT_FAIL;
    snprintf(path, 4096, "%s", fm_track_path(t));
    fm_status st = fm_track_query(t, &a->filter, runs, n);
    fm_track_close(t);
    return st == FM_OK ? FM_EXIT_OK : fm_cli_fail(cmd, st);
}

static bool parse_id(const char *cmd, const char *s, int64_t *id)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 1) {
        fm_cli_usage_error(cmd, "'%s' is not a run id (a number from fmhost runs list)", s);
        return false;
    }
    *id = v;
    return true;
}

static void fmt_real(char *buf, size_t n, const char *fmt, double v)
{
    if (isfinite(v))
        snprintf(buf, n, fmt, v);
    else
        snprintf(buf, n, "-");
}

/* ---- list -------------------------------------------------------------------------- */

static int cmd_list(const runs_args *a)
{
    const char *cmd = "runs list";
    if (a->n_pos) return fm_cli_usage_error(cmd, "unexpected argument '%s'", a->pos[0]);
    fm_track_run *runs;
    int n;
    char path[4096];
    int rc = load_runs(cmd, a, &runs, &n, path);
    if (rc != FM_EXIT_OK) return rc;
    printf("%-5s %-19s %-5s %-7s %-11s %5s %4s %8s %8s %8s  %-36s %s\n", "id", "started (UTC)",
           "kind", "model", "status", "epoch", "best", "val_acc", "test_acc", "seconds",
           "hyper-parameters", "sweep");
    for (int i = 0; i < n; i++) {
        const fm_track_run *r = &runs[i];
        char va[16], ta[16], secs[16];
        fmt_real(va, sizeof va, "%.4f", r->val_acc);
        fmt_real(ta, sizeof ta, "%.4f", r->test_acc);
        fmt_real(secs, sizeof secs, "%.1f", r->wall_seconds);
        printf("%-5lld %-19s %-5s %-7s %-11s %5d %4d %8s %8s %8s  %-36s %s\n", (long long)r->id,
               r->started ? r->started : "-", r->kind, r->model, r->status, r->epochs_run,
               r->best_epoch, va, ta, secs, r->hparams ? r->hparams : "", r->sweep ? r->sweep : "");
    }
    printf("%d run%s in %s\n", n, n == 1 ? "" : "s", path);
    fm_track_runs_free(runs, n);
    return FM_EXIT_OK;
}

/* ---- show -------------------------------------------------------------------------- */

static int cmd_show(const runs_args *a)
{
    const char *cmd = "runs show";
    if (a->n_pos != 1) return fm_cli_usage_error(cmd, "expected one run id");
    int64_t id;
    if (!parse_id(cmd, a->pos[0], &id)) return FM_EXIT_USAGE;
    fm_track *t = open_store(cmd, a);
    if (!t) return FM_EXIT_FAIL;
    fm_track_run r;
    fm_status st = fm_track_get(t, id, &r);
    if (st != FM_OK) {
        fm_track_close(t);
        return fm_cli_fail(cmd, st);
    }
    char buf[64];
    printf("run %lld (%s) in %s\n", (long long)r.id, r.kind, fm_track_path(t));
    const struct { const char *k, *v; } rows[] = {
        {"model", r.model}, {"status", r.status}, {"message", r.message}, {"sweep", r.sweep},
        {"started", r.started}, {"ended", r.ended}, {"last heartbeat", r.heartbeat},
        {"command", r.command}, {"cwd", r.cwd}, {"host", r.host}, {"plugin", r.plugin_path},
        {"plugin sha256", r.plugin_sha256}, {"hyper-parameters", r.hparams},
        {"kernels", r.kernels}, {"precision", r.precision}, {"fmhost", r.fmhost_version},
        {"data", r.data_dir}, {"out", r.out_dir}, {"files", r.run_dir},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (rows[i].v) printf("  %-17s %s\n", rows[i].k, rows[i].v);
    printf("  %-17s %lld\n  %-17s %lld\n  %-17s %lld\n  %-17s %lld\n", "pid", (long long)r.pid,
           "seed", (long long)r.seed, "threads", (long long)r.threads, "parameters",
           (long long)r.params);
    printf("  %-17s %d (best %d)\n", "epochs", r.epochs_run, r.best_epoch);
    const struct { const char *k; double v; const char *f; } nums[] = {
        {"val loss", r.val_loss, "%.6f"}, {"val acc", r.val_acc, "%.4f"},
        {"test loss", r.test_loss, "%.6f"}, {"test acc", r.test_acc, "%.4f"},
        {"wall time (s)", r.wall_seconds, "%.2f"},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        fmt_real(buf, sizeof buf, nums[i].f, nums[i].v);
        printf("  %-17s %s\n", nums[i].k, buf);
    }
    if (r.peak_rss_kb) printf("  %-17s %.1f MiB\n", "peak RSS", (double)r.peak_rss_kb / 1024.0);
    if (r.n_settings) printf("settings:\n");
    for (int i = 0; i < r.n_settings; i++)
        printf("  %-6s %-17s %s\n", r.setting_kind[i], r.setting_key[i],
               r.setting_value[i] ? r.setting_value[i] : "");
    if (r.history.n) printf("epochs:\n  %s\n", FM_METRICS_HEADER);
    for (int i = 0; i < r.history.n; i++) {
        const fm_metrics_row *m = &r.history.rows[i];
        printf("  %d,%.6f,%.6f,%.6f,%.6f,%.6g,%.3f\n", m->epoch, m->train_loss, m->train_acc,
               m->val_loss, m->val_acc, m->lr, m->seconds);
    }
    if (r.have_classes) printf("per-class test accuracy:\n");
    for (int c = 0; r.have_classes && c < FM_NUM_CLASSES; c++) {
        fmt_real(buf, sizeof buf, "%.4f", r.class_acc[c]);
        printf("  %-12s %s (%lld images)\n", fm_class_name(c), buf, (long long)r.class_support[c]);
    }
    if (r.n_artifacts) printf("files:\n");
    for (int i = 0; i < r.n_artifacts; i++)
        printf("  %-28s %10lld  sha256 %s\n", r.artifact_path[i], (long long)r.artifact_bytes[i],
               r.artifact_sha256[i]);
    fm_track_run_clear(&r);
    fm_track_close(t);
    return FM_EXIT_OK;
}

/* ---- compare ------------------------------------------------------------------------- */

static const char *value_or_dash(const char *s) { return s && *s ? s : "-"; }

static int cmd_compare(const runs_args *a)
{
    const char *cmd = "runs compare";
    if (a->n_pos < 2) return fm_cli_usage_error(cmd, "expected two run ids or more");
    int n = a->n_pos;
    int64_t *ids = fm_xcalloc((size_t)n, sizeof *ids);
    for (int i = 0; i < n; i++)
        if (!parse_id(cmd, a->pos[i], &ids[i])) {
            free(ids);
            return FM_EXIT_USAGE;
        }
    fm_track *t = open_store(cmd, a);
    if (!t) {
        free(ids);
        return FM_EXIT_FAIL;
    }
    fm_track_run *runs = fm_xcalloc((size_t)n, sizeof *runs);
    int rc = FM_EXIT_OK, got = 0;
    for (; got < n; got++) {
        fm_status st = fm_track_get(t, ids[got], &runs[got]);
        if (st != FM_OK) {
            rc = fm_cli_fail(cmd, st);
            goto done;
        }
    }
    /* Rows: the fields and settings whose values are not all the same. */
    printf("%-18s", "");
    for (int i = 0; i < n; i++) {
        char head[32];
        snprintf(head, sizeof head, "run %lld", (long long)runs[i].id);
        printf(" %18s", head);
    }
    printf("\nsettings that differ:\n");
    int shown = 0;
    const char *fields[] = {"model", "kind", "hparams", "kernels", "precision", "sweep", "fmhost"};
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
        const char *vals[64];
        bool differ = false;
        for (int i = 0; i < n && i < 64; i++) {
            const fm_track_run *r = &runs[i];
            const char *all[] = {r->model, r->kind, r->hparams, r->kernels, r->precision, r->sweep,
                                 r->fmhost_version};
            vals[i] = value_or_dash(all[f]);
            differ = differ || strcmp(vals[i], vals[0]) != 0;
        }
        if (!differ) continue;
        shown++;
        printf("  %-16s", fields[f]);
        for (int i = 0; i < n && i < 64; i++) printf(" %18.18s", vals[i]);
        printf("\n");
    }
    /* Every setting key any run has, once. */
    for (int i = 0; i < n; i++)
        for (int s = 0; s < runs[i].n_settings; s++) {
            const char *key = runs[i].setting_key[s];
            bool earlier = false;
            for (int j = 0; j <= i && !earlier; j++)
                for (int u = 0; u < (j == i ? s : runs[j].n_settings) && !earlier; u++)
                    earlier = !strcmp(runs[j].setting_key[u], key);
            if (earlier || !strcmp(key, "out") || !strcmp(key, "data_dir")) continue;
            bool differ = false;
            const char *first = value_or_dash(fm_track_run_setting(&runs[0], key));
            for (int j = 1; j < n; j++)
                differ = differ || strcmp(first, value_or_dash(fm_track_run_setting(&runs[j], key)));
            if (!differ) continue;
            shown++;
            printf("  %-16s", key);
            for (int j = 0; j < n; j++)
                printf(" %18.18s", value_or_dash(fm_track_run_setting(&runs[j], key)));
            printf("\n");
        }
    if (!shown) printf("  (none: the same settings)\n");
    printf("results:\n");
    const char *names[] = {"status", "epochs", "best epoch", "val loss", "val acc", "test loss",
                           "test acc", "wall time (s)", "peak RSS (MiB)"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        printf("  %-16s", names[k]);
        for (int i = 0; i < n; i++) {
            const fm_track_run *r = &runs[i];
            char buf[32];
            switch (k) {
            case 0: snprintf(buf, sizeof buf, "%s", r->status); break;
            case 1: snprintf(buf, sizeof buf, "%d", r->epochs_run); break;
            case 2: snprintf(buf, sizeof buf, "%d", r->best_epoch); break;
            case 3: fmt_real(buf, sizeof buf, "%.4f", r->val_loss); break;
            case 4: fmt_real(buf, sizeof buf, "%.4f", r->val_acc); break;
            case 5: fmt_real(buf, sizeof buf, "%.4f", r->test_loss); break;
            case 6: fmt_real(buf, sizeof buf, "%.4f", r->test_acc); break;
            case 7: fmt_real(buf, sizeof buf, "%.1f", r->wall_seconds); break;
            default: fmt_real(buf, sizeof buf, "%.1f", (double)r->peak_rss_kb / 1024.0); break;
            }
            printf(" %18s", buf);
        }
        printf("\n");
    }
    char acc[4200], loss[4200];
    const char *prefix = a->plot ? a->plot : "runs_compare";
    snprintf(acc, sizeof acc, "%s_val_acc.png", prefix);
    snprintf(loss, sizeof loss, "%s_val_loss.png", prefix);
    fm_status st = fm_track_plot_overlay(acc, loss, runs, n);
    if (st == FM_OK)
        printf("validation curves: %s, %s\n", acc, loss);
    else if (st == FM_ERR_ARG)
        printf("no validation curves: %s\n", fm_error_message());
    else
        rc = fm_cli_fail(cmd, st);
done:
    fm_track_runs_free(runs, got);
    free(ids);
    fm_track_close(t);
    return rc;
}

/* ---- export ---------------------------------------------------------------------------- */

static int cmd_export(const runs_args *a)
{
    const char *cmd = "runs export";
    if (a->csv == a->json) return fm_cli_usage_error(cmd, "give one of --csv or --json");
    if (a->n_pos) return fm_cli_usage_error(cmd, "unexpected argument '%s'", a->pos[0]);
    fm_track_run *runs;
    int n;
    char path[4096];
    int rc = load_runs(cmd, a, &runs, &n, path);
    if (rc != FM_EXIT_OK) return rc;
    fm_status st;
    FILE *f = stdout;
    char tmp[4200];
    if (a->output && !(f = fm_atomic_open(a->output, tmp, sizeof tmp))) {
        fm_track_runs_free(runs, n);
        return fm_cli_fail(cmd, fm_error_status());
    }
    st = a->csv ? fm_track_write_csv(f, runs, n) : fm_track_write_json(f, runs, n);
    if (a->output) {
        if (st == FM_OK)
            st = fm_atomic_commit(f, tmp, a->output);
        else
            fm_atomic_abort(f, tmp);
    }
    fm_track_runs_free(runs, n);
    if (st != FM_OK) return fm_cli_fail(cmd, st);
    if (a->output) fprintf(stderr, "wrote %d run%s to %s\n", n, n == 1 ? "" : "s", a->output);
    return FM_EXIT_OK;
}

/* ---- rm ------------------------------------------------------------------------------ */

static int cmd_rm(const runs_args *a)
{
    const char *cmd = "runs rm";
    if (a->n_pos < 1) return fm_cli_usage_error(cmd, "expected one run id or more");
    for (int i = 0; i < a->n_pos; i++) {
        int64_t id;
        if (!parse_id(cmd, a->pos[i], &id)) return FM_EXIT_USAGE;
    }
    fm_track *t = open_store(cmd, a);
    if (!t) return FM_EXIT_FAIL;
    int rc = FM_EXIT_OK;
    for (int i = 0; i < a->n_pos && rc == FM_EXIT_OK; i++) {
        int64_t id = 0;
        parse_id(cmd, a->pos[i], &id);
        fm_track_run r;
        fm_status st = fm_track_get(t, id, &r);
        if (st != FM_OK) {
            rc = fm_cli_fail(cmd, st);
            break;
        }
        if (fm_track_run_alive(&r)) {
            fprintf(stderr, "fmhost %s: run %lld is still running (pid %lld); stop it first\n", cmd,
                    (long long)id, (long long)r.pid);
            rc = FM_EXIT_FAIL;
        } else if ((st = fm_track_delete(t, id)) != FM_OK) {
            rc = fm_cli_fail(cmd, st);
        } else {
            int removed = 0;
            /* Only the files the run kept in its own folder, then the folder if empty. */
            for (int k = 0; !a->keep_files && k < r.n_artifacts; k++)
                if (r.run_dir && r.artifact_path[k] &&
                    !strncmp(r.artifact_path[k], r.run_dir, strlen(r.run_dir)) &&
                    unlink(r.artifact_path[k]) == 0)
                    removed++;
            if (!a->keep_files && r.run_dir) rmdir(r.run_dir);
            printf("removed run %lld (%s %s)%s", (long long)id, r.model, r.status,
                   removed ? "" : "\n");
            if (removed) printf(" and its %d files in %s\n", removed, r.run_dir);
        }
        fm_track_run_clear(&r);
    }
    fm_track_close(t);
    return rc;
}

/* ---- html ------------------------------------------------------------------------------ */

static int cmd_html(const runs_args *a)
{
    const char *cmd = "runs html";
    if (a->n_pos != 1) return fm_cli_usage_error(cmd, "expected one output directory");
    fm_track_run *runs;
    int n;
    char path[4096];
    int rc = load_runs(cmd, a, &runs, &n, path);
    if (rc != FM_EXIT_OK) return rc;
    fm_status st = fm_track_write_html(a->pos[0], runs, n, path);
    fm_track_runs_free(runs, n);
    if (st != FM_OK) return fm_cli_fail(cmd, st);
    printf("wrote %s/index.html (%d run%s); open it in a browser, no server needed\n", a->pos[0], n,
           n == 1 ? "" : "s");
    return FM_EXIT_OK;
}

int fm_cmd_runs(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(const runs_args *);
    } subs[] = {
        {"list", cmd_list}, {"show", cmd_show}, {"compare", cmd_compare},
        {"export", cmd_export}, {"rm", cmd_rm}, {"html", cmd_html},
    };
    if (argc < 2) {
        fputs(runs_usage, stderr);
        return FM_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(runs_usage, stdout);
        return FM_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (!strcmp(argv[1], subs[i].name)) {
            char cmd[32];
            snprintf(cmd, sizeof cmd, "runs %s", subs[i].name);
            runs_args a;
            int rc = parse(cmd, argc - 1, argv + 1, &a);
            if (rc < 0) return FM_EXIT_OK;  /* --help */
            if (rc != FM_EXIT_OK) return rc;
            return subs[i].run(&a);
        }
    return fm_cli_usage_error("runs", "unknown subcommand '%s' (list, show, compare, export, rm, "
                              "html)", argv[1]);
}
