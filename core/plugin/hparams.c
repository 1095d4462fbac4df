/* Hyper-parameter values: declared defaults overridden by "key=value". */
#include "plugin_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct hp_entry {
    char *name;
    fm_hparam_type type;
    char *text;  /* canonical: what fm_hparams_to_string and checkpoints show */
    fm_hparam_value v;
} hp_entry;

/* Names and values are copied: the values outlive an unloaded plugin. */
struct fm_hparams {
    int n;
    hp_entry *e;
};

const char *fm_hparam_type_name(fm_hparam_type type)
{
    switch (type) {
    case FM_HP_INT: return "int";
    case FM_HP_FLOAT: return "float";
    case FM_HP_BOOL: return "bool";
    case FM_HP_STRING: return "string";
    }
    return "invalid";
}

bool fm_hparam_parse(fm_hparam_type type, const char *text, fm_hparam_value *out)
{
    fm_hparam_value v = {0};
    char *end;
    switch (type) {
    case FM_HP_INT:
        errno = 0;
        v.i = strtoll(text, &end, 10);
        if (end == text || *end != '\0' || errno == ERANGE) return false;
        break;
    case FM_HP_FLOAT:
        errno = 0;
        v.f = strtod(text, &end);
        if (end == text || *end != '\0' || errno == ERANGE || !isfinite(v.f)) return false;
        break;
    case FM_HP_BOOL:
        if (!strcasecmp(text, "true") || !strcmp(text, "1") || !strcasecmp(text, "yes"))
            v.b = true;
        else if (!strcasecmp(text, "false") || !strcmp(text, "0") || !strcasecmp(text, "no"))
            v.b = false;
        else
            return false;
        break;
    case FM_HP_STRING:
        break;
    default:
        return false;
    }
    if (out) *out = v;
    return true;
}

/* The shortest text that reads back as the same double: "0.2", not
 * "0.20000000000000001". */
static char *float_text(double f)
{
    char buf[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, f);
        if (strtod(buf, NULL) == f) break;
    }
    return fm_xstrdup(buf);
}

static void set_value(hp_entry *e, const char *text, fm_hparam_value v)
{
    char buf[32];
    free(e->text);
    e->v = v;
    switch (e->type) {
    case FM_HP_INT:
        snprintf(buf, sizeof buf, "%lld", (long long)v.i);
        e->text = fm_xstrdup(buf);
        break;
    case FM_HP_FLOAT: e->text = float_text(v.f); break;
    case FM_HP_BOOL: e->text = fm_xstrdup(v.b ? "true" : "false"); break;
    default: e->text = fm_xstrdup(text); break;
    }
}

static int find(const fm_hparams *hp, const char *name, size_t len)
{
    for (int i = 0; i < hp->n; i++)
        if (strlen(hp->e[i].name) == len && !strncmp(hp->e[i].name, name, len)) return i;
    return -1;
}

static fm_status unknown_key(const fm_plugin_desc *d, const char *key, size_t len)
{
    char names[1024] = "";
    size_t used = 0;
    for (int i = 0; i < d->n_hparams && used < sizeof names; i++)
        used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                                 d->hparams[i].name);
    if (d->n_hparams == 0)
        return fm_error_set(FM_ERR_ARG, "unknown hyper-parameter '%.*s': plugin %s declares none",
                            (int)len, key, d->name);
    return fm_error_set(FM_ERR_ARG, "unknown hyper-parameter '%.*s' for plugin %s (declared: %s)",
                        (int)len, key, d->name, names);
}

fm_hparams *fm_hparams_new(const fm_plugin *p, const char *const *assignments, int n)
{
    const fm_plugin_desc *d = fm_plugin_descriptor_of(p);
    fm_hparams *hp = fm_xcalloc(1, sizeof *hp);
    hp->n = d->n_hparams;
    hp->e = fm_xcalloc((size_t)hp->n + 1, sizeof *hp->e);
    for (int i = 0; i < hp->n; i++) {
        const fm_hparam_decl *decl = &d->hparams[i];
        fm_hparam_value v;
        FM_ASSERT(fm_hparam_parse(decl->type, decl->def, &v));  /* checked at load */
        hp->e[i].name = fm_xstrdup(decl->name);
        hp->e[i].type = decl->type;
        set_value(&hp->e[i], decl->def, v);
    }

    for (int a = 0; a < n; a++) {
        const char *s = assignments[a];
        const char *eq = strchr(s, '=');
        if (!eq || eq == s) {
            fm_error_set(FM_ERR_ARG, "hyper-parameter '%s' for plugin %s: expected key=value",
                         s, d->name);
            goto fail;
        }
        int i = find(hp, s, (size_t)(eq - s));
        if (i < 0) {
            unknown_key(d, s, (size_t)(eq - s));
            goto fail;
        }
        fm_hparam_value v;
        if (!fm_hparam_parse(hp->e[i].type, eq + 1, &v)) {
            fm_error_set(FM_ERR_ARG, "hyper-parameter %s of plugin %s: '%s' is not a valid %s%s",
                         hp->e[i].name, d->name, eq + 1, fm_hparam_type_name(hp->e[i].type),
                         hp->e[i].type == FM_HP_BOOL ? " (true/false/1/0/yes/no)" : "");
            goto fail;
        }
        set_value(&hp->e[i], eq + 1, v);
    }
    return hp;

fail:
    fm_hparams_free(hp);
    return NULL;
}

void fm_hparams_free(fm_hparams *hp)
{
    if (!hp) return;
    for (int i = 0; i < hp->n; i++) {
        free(hp->e[i].name);
        free(hp->e[i].text);
    }
    free(hp->e);
    free(hp);
}

static const hp_entry *get(const fm_hparams *hp, const char *name, fm_hparam_type type)
{
    int i = find(hp, name, strlen(name));
    FM_ASSERT(i >= 0 && hp->e[i].type == type);  /* the plugin reads what it declared */
    return &hp->e[i];
}

int64_t fm_hparams_int(const fm_hparams *hp, const char *name)
{
    return get(hp, name, FM_HP_INT)->v.i;
}

double fm_hparams_float(const fm_hparams *hp, const char *name)
{
    return get(hp, name, FM_HP_FLOAT)->v.f;
}

bool fm_hparams_bool(const fm_hparams *hp, const char *name)
{
    return get(hp, name, FM_HP_BOOL)->v.b;
}

const char *fm_hparams_string(const fm_hparams *hp, const char *name)
{
    return get(hp, name, FM_HP_STRING)->text;
}

char *fm_hparams_to_string(const fm_hparams *hp, char *buf, size_t len)
{
    FM_ASSERT(len > 0);
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < hp->n && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%s=%s", i ? " " : "", hp->e[i].name,
                                 hp->e[i].text);
    return buf;
}

int fm_hparams_count(const fm_hparams *hp) { return hp->n; }

const char *fm_hparams_name_at(const fm_hparams *hp, int i)
{
    FM_ASSERT(i >= 0 && i < hp->n);
    return hp->e[i].name;
}

const char *fm_hparams_value_at(const fm_hparams *hp, int i)
{
    FM_ASSERT(i >= 0 && i < hp->n);
    return hp->e[i].text;
}
