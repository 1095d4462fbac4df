/* plugin_internal.h — what the loader, the hyper-parameter parser and the
 * libffi caller share.  Not installed. */
#ifndef FM_PLUGIN_INTERNAL_H
#define FM_PLUGIN_INTERNAL_H

#include <ffi.h>

#include "fm/fm_plugin.h"

#define FM_PLUGIN_MAX_HPARAMS 64
#define FM_PLUGIN_MAX_EXPORTS 64
#define FM_EXPORT_MAX_ARGS 16

/* One export, its signature parsed and its call interface prepared at load. */
typedef struct fm_plugin_export {
    ffi_cif cif;
    ffi_type *arg_types[FM_EXPORT_MAX_ARGS];
    char ret;                             /* signature letter */
    char args[FM_EXPORT_MAX_ARGS + 1];    /* signature letters, NUL-terminated */
    int nargs;
    bool takes_model;
} fm_plugin_export;

struct fm_plugin {
    int refs;  /* atomic: models may be freed on any thread */
    void *dl;
    const fm_plugin_desc *desc;
    char *path;
    fm_plugin_export *exports;  /* [desc->n_exports] */
};

typedef struct fm_hparam_value {
    int64_t i;
    double f;
    bool b;
} fm_hparam_value;

/* Parses `text` as `type` (int: the whole string as a decimal integer; float:
 * a finite number; bool: true/false/1/0/yes/no; string: anything).
 * Exported for the fuzz targets. */
FM_API bool fm_hparam_parse(fm_hparam_type type, const char *text, fm_hparam_value *out);

/* Parses `sig` ("d(mi)") into `e` and prepares its cif; on failure returns
 * false with the reason in why[0..why_len). */
bool fm_plugin_export_prepare(fm_plugin_export *e, const char *sig, char *why, size_t why_len);

/* A plugin from a descriptor in memory, checked as fm_plugin_open checks
 * the one a shared object returns (fm_plugin_open ends here): every field,
 * the hyper-parameter declarations and their defaults, the exports and
 * their signatures.  `what` names it in messages and is its path.  NULL
 * with FM_ERR_PLUGIN when a check fails.  The descriptor and what it points
 * to must outlive the result (release it with fm_plugin_release).  For the
 * fuzz targets, which build descriptors from bytes. */
FM_API fm_plugin *fm_plugin_from_desc(const fm_plugin_desc *desc, const char *what);

#endif /* FM_PLUGIN_INTERNAL_H */
