/* Extra plugin functions called by signature through libffi, with no glue
 * code per function: the cif is prepared once at load, ffi_call per call. */
#include "plugin_internal.h"

#include <stdio.h>
#include <string.h>

static ffi_type *letter_type(char c)
{
    switch (c) {
    case 'v': return &ffi_type_void;
    case 'i': return &ffi_type_sint32;
    case 'l': return &ffi_type_sint64;
    case 'f': return &ffi_type_float;
    case 'd': return &ffi_type_double;
    case 's':
    case 'm': return &ffi_type_pointer;
    }
    return NULL;
}

bool fm_plugin_export_prepare(fm_plugin_export *e, const char *sig, char *why, size_t why_len)
{
    memset(e, 0, sizeof *e);
    if (!sig) {
        snprintf(why, why_len, "no signature");
        return false;
    }
    const char *p = sig;
    if (*p == '\0' || !strchr("vilfds", *p)) {
        snprintf(why, why_len, "signature \"%s\": return type '%c' is not one of v i l f d s",
                 sig, *p ? *p : '?');
        return false;
    }
    e->ret = *p++;
    if (*p++ != '(') {
        snprintf(why, why_len, "signature \"%s\": expected '(' after the return type", sig);
        return false;
    }
    for (; *p && *p != ')'; p++) {
        if (!strchr("ilfdsm", *p)) {
            snprintf(why, why_len,
                     "signature \"%s\": argument %d type '%c' is not one of i l f d s m", sig,
                     e->nargs + 1, *p);
            return false;
        }
        if (e->nargs == FM_EXPORT_MAX_ARGS) {
            snprintf(why, why_len, "signature \"%s\": more than %d arguments", sig,
                     FM_EXPORT_MAX_ARGS);
            return false;
        }
        e->takes_model |= *p == 'm';
        e->args[e->nargs] = *p;
        e->arg_types[e->nargs++] = letter_type(*p);
    }
    if (*p != ')' || p[1] != '\0') {
        snprintf(why, why_len, "signature \"%s\": %s", sig,
                 *p != ')' ? "missing ')'" : "characters after ')'");
        return false;
    }
    if (ffi_prep_cif(&e->cif, FFI_DEFAULT_ABI, (unsigned)e->nargs, letter_type(e->ret),
                     e->arg_types) != FFI_OK) {
        snprintf(why, why_len, "signature \"%s\": libffi cannot prepare this call", sig);
        return false;
    }
    return true;
}

int fm_plugin_export_find(const fm_plugin *p, const char *name)
{
    for (int i = 0; i < p->desc->n_exports; i++)
        if (!strcmp(p->desc->exports[i].name, name)) return i;
    return -1;
}

fm_status fm_plugin_export_call(const fm_plugin *p, int index, fm_model *model,
                                const fm_ffi_value *args, int nargs, fm_ffi_value *ret)
{
    FM_ASSERT(p && index >= 0 && index < p->desc->n_exports);
    const fm_export_decl *d = &p->desc->exports[index];
    const fm_plugin_export *e = &p->exports[index];
    const char *plugin = p->desc->name;

    if (nargs != e->nargs)
        return fm_error_set(FM_ERR_ARG, "%s.%s expects %d argument%s (signature %s), given %d",
                            plugin, d->name, e->nargs, e->nargs == 1 ? "" : "s", d->signature,
                            nargs);
    void *self = NULL;
    if (e->takes_model) {
        if (!model)
            return fm_error_set(FM_ERR_ARG, "%s.%s takes a model (signature %s): pass a model "
                                "made by plugin %s", plugin, d->name, d->signature, plugin);
        if (fm_model_owner(model) != p)
            return fm_error_set(FM_ERR_ARG, "%s.%s: the model given was not made by plugin %s "
                                "(%s)", plugin, d->name, plugin, p->path);
        self = fm_model_self(model);
    }

    void *values[FM_EXPORT_MAX_ARGS];
    for (int k = 0; k < nargs; k++) {
        /* libffi reads the arguments through non-const pointers but never writes them. */
        fm_ffi_value *a = (fm_ffi_value *)&args[k];
        switch (e->args[k]) {
        case 'i': values[k] = &a->i; break;
        case 'l': values[k] = &a->l; break;
        case 'f': values[k] = &a->f; break;
        case 'd': values[k] = &a->d; break;
        case 's':
            if (!a->s)
                return fm_error_set(FM_ERR_ARG, "%s.%s: argument %d is a string and must not "
                                    "be NULL", plugin, d->name, k + 1);
            values[k] = &a->s;
            break;
        case 'm': values[k] = &self; break;
        default: FM_ASSERT(!"signature letters are checked at load");
        }
    }

    /* Integral results narrower than ffi_arg come back widened to ffi_arg. */
    union {
        ffi_arg word;
        ffi_sarg sword;
        int64_t l;
        float f;
        double d;
        const char *s;
    } r;
    memset(&r, 0, sizeof r);
    ffi_call((ffi_cif *)&e->cif, d->fn, &r, values);

    if (!ret) return FM_OK;
    memset(ret, 0, sizeof *ret);
    switch (e->ret) {
    case 'i': ret->i = (int32_t)r.sword; break;
    case 'l': ret->l = r.l; break;
    case 'f': ret->f = r.f; break;
    case 'd': ret->d = r.d; break;
    case 's': ret->s = r.s; break;
    default: break;
    }
    return FM_OK;
}
