/* export.c — runs out of the store as CSV (a line per run, for a
 * spreadsheet or pandas) and JSON (everything, for programs and the
 * dashboard). */
#include "fm/fm_track.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/fm_io.h"

static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }
static json_t *real_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *run_object(const fm_track_run *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(r->id));
    const struct { const char *key, *value; } texts[] = {
        {"kind", r->kind}, {"model", r->model}, {"status", r->status}, {"message", r->message},
        {"sweep", r->sweep}, {"started", r->started}, {"ended", r->ended},
        {"heartbeat", r->heartbeat}, {"command", r->command}, {"cwd", r->cwd}, {"host", r->host},
        {"plugin_path", r->plugin_path}, {"plugin_sha256", r->plugin_sha256},
        {"hparams", r->hparams}, {"kernels", r->kernels}, {"precision", r->precision},
        {"fmhost_version", r->fmhost_version}, {"out_dir", r->out_dir}, {"data_dir", r->data_dir},
        {"run_dir", r->run_dir},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        json_object_set_new(o, texts[i].key, str_or_null(texts[i].value));
    const struct { const char *key; int64_t value; } ints[] = {
        {"pid", r->pid}, {"seed", r->seed}, {"threads", r->threads}, {"params", r->params},
        {"peak_rss_kb", r->peak_rss_kb}, {"epochs_run", r->epochs_run},
        {"best_epoch", r->best_epoch}, {"test_n", r->test_n},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        json_object_set_new(o, ints[i].key, json_integer(ints[i].value));
    const struct { const char *key; double value; } reals[] = {
        {"val_loss", r->val_loss}, {"val_acc", r->val_acc}, {"test_loss", r->test_loss},
        {"test_acc", r->test_acc}, {"wall_seconds", r->wall_seconds},
    };
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++)
        json_object_set_new(o, reals[i].key, real_or_null(reals[i].value));

    json_t *hp = json_object(), *opt = json_object();
    for (int i = 0; i < r->n_settings; i++)
        json_object_set_new(strcmp(r->setting_kind[i], "hparam") ? opt : hp, r->setting_key[i],
                            str_or_null(r->setting_value[i]));
    json_object_set_new(o, "hyperparameters", hp);
    json_object_set_new(o, "options", opt);

    json_t *epochs = json_array();
    for (int i = 0; i < r->history.n; i++) {
        const fm_metrics_row *m = &r->history.rows[i];
        json_t *e = json_object();
        json_object_set_new(e, "epoch", json_integer(m->epoch));
        json_object_set_new(e, "train_loss", real_or_null(m->train_loss));
        json_object_set_new(e, "train_acc", real_or_null(m->train_acc));
        json_object_set_new(e, "val_loss", real_or_null(m->val_loss));
        json_object_set_new(e, "val_acc", real_or_null(m->val_acc));
        json_object_set_new(e, "lr", real_or_null(m->lr));
        json_object_set_new(e, "seconds", real_or_null(m->seconds));
        json_array_append_new(epochs, e);
    }
    json_object_set_new(o, "epochs", epochs);

    json_t *classes = json_array();
    for (int c = 0; r->have_classes && c < FM_NUM_CLASSES; c++) {
        json_t *e = json_object();
        json_object_set_new(e, "class", json_string(fm_class_name(c)));
        json_object_set_new(e, "accuracy", real_or_null(r->class_acc[c]));
        json_object_set_new(e, "support", json_integer(r->class_support[c]));
        json_array_append_new(classes, e);
    }
    json_object_set_new(o, "per_class", classes);
    if (r->have_confusion) {
        json_t *cm = json_array();
        for (int a = 0; a < FM_NUM_CLASSES; a++) {
            json_t *row = json_array();
            for (int b = 0; b < FM_NUM_CLASSES; b++)
                json_array_append_new(row, json_integer(r->confusion[a][b]));
            json_array_append_new(cm, row);
        }
        json_object_set_new(o, "confusion", cm);
    }

    json_t *arts = json_array();
    for (int i = 0; i < r->n_artifacts; i++) {
        json_t *e = json_object();
        json_object_set_new(e, "name", str_or_null(r->artifact_name[i]));
        json_object_set_new(e, "path", str_or_null(r->artifact_path[i]));
        json_object_set_new(e, "sha256", str_or_null(r->artifact_sha256[i]));
        json_object_set_new(e, "bytes", json_integer(r->artifact_bytes[i]));
        json_array_append_new(arts, e);
    }
    json_object_set_new(o, "artifacts", arts);
    return o;
}

char *fm_track_run_json(const fm_track_run *r)
{
    json_t *o = run_object(r);
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    FM_ASSERT(s != NULL);
    return s;
}

fm_status fm_track_write_json(FILE *f, const fm_track_run *runs, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, run_object(&runs[i]));
    int rc = json_dumpf(a, f, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
    json_decref(a);
    fputc('\n', f);
    if (rc != 0 || ferror(f)) return fm_error_set(FM_ERR_IO, "cannot write the JSON export");
    return FM_OK;
}

static void csv_real(FILE *f, double v)
{
    if (isfinite(v)) fprintf(f, "%.9g", v);
}

fm_status fm_track_write_csv(FILE *f, const fm_track_run *runs, int n)
{
    /* The union of the settings' keys, in order of first appearance. */
    int n_keys = 0;
    const char **keys = NULL, **kinds = NULL;
    for (int i = 0; i < n; i++)
        for (int s = 0; s < runs[i].n_settings; s++) {
            bool seen = false;
            for (int k = 0; k < n_keys && !seen; k++)
                seen = !strcmp(keys[k], runs[i].setting_key[s]) &&
                       !strcmp(kinds[k], runs[i].setting_kind[s]);
            if (seen) continue;
            keys = fm_xrealloc(keys, (size_t)(n_keys + 1) * sizeof *keys);
            kinds = fm_xrealloc(kinds, (size_t)(n_keys + 1) * sizeof *kinds);
            keys[n_keys] = runs[i].setting_key[s];
            kinds[n_keys++] = runs[i].setting_kind[s];
        }
    fputs("id,kind,model,status,started,ended,sweep,hparams,seed,threads,kernels,precision,"
          "epochs_run,best_epoch,val_loss,val_acc,test_loss,test_acc,wall_seconds,peak_rss_kb,"
          "params,plugin_sha256,run_dir,command,message", f);
    for (int k = 0; k < n_keys; k++)
        fprintf(f, ",%s.%s", strcmp(kinds[k], "hparam") ? "opt" : "hp", keys[k]);
    fputc('\n', f);
    for (int i = 0; i < n; i++) {
        const fm_track_run *r = &runs[i];
        fprintf(f, "%lld", (long long)r->id);
        const char *texts[] = {r->kind, r->model, r->status, r->started, r->ended, r->sweep,
                               r->hparams};
        for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
            fputc(',', f);
            if (texts[t]) fm_csv_write_field(f, texts[t]);
        }
        fprintf(f, ",%lld,%lld,", (long long)r->seed, (long long)r->threads);
        if (r->kernels) fm_csv_write_field(f, r->kernels);
        fputc(',', f);
        if (r->precision) fm_csv_write_field(f, r->precision);
        fprintf(f, ",%d,%d,", r->epochs_run, r->best_epoch);
        csv_real(f, r->val_loss);
        fputc(',', f);
        csv_real(f, r->val_acc);
        fputc(',', f);
        csv_real(f, r->test_loss);
        fputc(',', f);
        csv_real(f, r->test_acc);
        fputc(',', f);
        csv_real(f, r->wall_seconds);
        fprintf(f, ",%lld,%lld", (long long)r->peak_rss_kb, (long long)r->params);
        const char *tail[] = {r->plugin_sha256, r->run_dir, r->command, r->message};
        for (size_t t = 0; t < sizeof tail / sizeof tail[0]; t++) {
            fputc(',', f);
            if (tail[t]) fm_csv_write_field(f, tail[t]);
        }
        for (int k = 0; k < n_keys; k++) {
            fputc(',', f);
            for (int s = 0; s < r->n_settings; s++)
                if (!strcmp(keys[k], r->setting_key[s]) && !strcmp(kinds[k], r->setting_kind[s]) &&
                    r->setting_value[s]) {
                    fm_csv_write_field(f, r->setting_value[s]);
                    break;
                }
        }
        fputc('\n', f);
    }
    free(keys);
    free(kinds);
    if (ferror(f)) return fm_error_set(FM_ERR_IO, "cannot write the CSV export");
    return FM_OK;
}
