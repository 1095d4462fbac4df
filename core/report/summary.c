/* summary.c — summary.json: one run, machine-readable. */
#include "fm/fm_report.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm/fm_io.h"

/* "256" -> 256, "0.2" -> 0.2, "true" -> true, anything else stays a string.
 * Only plain decimal notation counts as a number ("nan", "0x10" stay strings). */
static json_t *typed_value(const char *v)
{
    if (strcmp(v, "true") == 0)
        return json_true();
    if (strcmp(v, "false") == 0)
        return json_false();
    if (*v != '\0' && strspn(v, "0123456789+-.eE") == strlen(v)) {
        char *end;
        errno = 0;
        long long i = strtoll(v, &end, 10);
        if (*end == '\0' && errno == 0)
            return json_integer(i);
        errno = 0;
        double d = strtod(v, &end);
        if (*end == '\0' && errno == 0 && isfinite(d))
            return json_real(d);
    }
    return json_string(v);
}

static json_t *pairs_object(const char *const *kv, int n)
{
    json_t *o = json_object();
    for (int i = 0; i < n; i++) {
        FM_ASSERT(kv[2 * i] != NULL && kv[2 * i + 1] != NULL);
        json_object_set_new(o, kv[2 * i], typed_value(kv[2 * i + 1]));
    }
    return o;
}

static json_t *real_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *string_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

fm_status fm_summary_write(const char *path, const fm_summary *s)
{
    FM_ASSERT(path != NULL && s != NULL);
    FM_ASSERT(s->n_hparams == 0 || s->hparams != NULL);
    FM_ASSERT(s->n_options == 0 || s->options != NULL);
    json_t *o = json_object();
    json_object_set_new(o, "fmhost_version", json_string(FM_VERSION_STRING));
    json_object_set_new(o, "kernels",
                        json_string(s->kernels ? s->kernels : fm_kernels_name(fm_kernels_active())));
    if (s->precision) json_object_set_new(o, "precision", json_string(s->precision));
    if (s->status) json_object_set_new(o, "status", json_string(s->status));
    json_object_set_new(o, "model", string_or_null(s->model));
    json_object_set_new(o, "plugin_path", string_or_null(s->plugin_path));
    json_object_set_new(o, "hyperparameters", pairs_object(s->hparams, s->n_hparams));
    json_object_set_new(o, "options", pairs_object(s->options, s->n_options));
    if (s->seed <= (uint64_t)INT64_MAX) {
        json_object_set_new(o, "seed", json_integer((json_int_t)s->seed));
    } else {
        char seed[32];
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)s->seed);
        json_object_set_new(o, "seed", json_string(seed));
    }
    json_object_set_new(o, "epochs_run", json_integer(s->epochs_run));
    json_object_set_new(o, "best_epoch", json_integer(s->best_epoch));
    json_object_set_new(o, "val_loss", real_or_null(s->val_loss));
    json_object_set_new(o, "val_acc", real_or_null(s->val_acc));
    json_object_set_new(o, "test_loss", real_or_null(s->test_loss));
    json_object_set_new(o, "test_acc", real_or_null(s->test_acc));
    json_object_set_new(o, "num_params", json_integer(s->num_params));
    json_object_set_new(o, "wall_seconds", real_or_null(s->wall_seconds));
    json_object_set_new(o, "checkpoint", string_or_null(s->checkpoint));

    char *text = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    json_decref(o);
    FM_ASSERT(text != NULL);
    char tmp[PATH_MAX + 64];
    FILE *f = fm_atomic_open(path, tmp, sizeof tmp);
    if (f == NULL) {
        free(text);
        return fm_error_status();
    }
    fputs(text, f);
    fputc('\n', f);
    free(text);
    fm_status st = fm_atomic_commit(f, tmp, path);
    return st;
}
