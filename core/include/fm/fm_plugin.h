/* fm_plugin.h — the model plugin ABI.
 *
 * A plugin is a shared object that exports one function,
 *
 *     FM_PLUGIN_EXPORT const fm_plugin_desc *fm_plugin_descriptor(void);
 *
 * returning a pointer to a static const descriptor.  The descriptor starts
 * with the ABI version and its own size; fields are only ever appended, so a
 * host reads a descriptor from an older minor version and ignores what it
 * does not know.  The host refuses another major version.
 *
 * Ownership: the descriptor and every string and array it points to are the
 * plugin's and stay valid while it is loaded (the host keeps it loaded while a
 * model made from it lives).  create() returns the plugin's own instance;
 * destroy() frees it.  Parameters and buffers belong to the fm_model.
 */
#ifndef FM_PLUGIN_H
#define FM_PLUGIN_H

#include "fm_model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FM_PLUGIN_ABI_MAJOR 1
#define FM_PLUGIN_ABI_MINOR 0
#define FM_PLUGIN_ABI_VERSION ((uint32_t)((FM_PLUGIN_ABI_MAJOR << 16) | FM_PLUGIN_ABI_MINOR))
#define FM_PLUGIN_SYMBOL "fm_plugin_descriptor"
#define FM_PLUGIN_EXPORT __attribute__((visibility("default")))

typedef enum fm_hparam_type {
    FM_HP_INT = 1,
    FM_HP_FLOAT,
    FM_HP_BOOL,
    FM_HP_STRING,
} fm_hparam_type;

/* "int", "float", "bool", "string" (for help text and messages). */
FM_API const char *fm_hparam_type_name(fm_hparam_type type);

/* One declared hyper-parameter.  `def` is the default written as on the
 * command line ("256", "0.2", "true"); it must parse as `type`. */
typedef struct fm_hparam_decl {
    const char *name;  /* [a-z_][a-z0-9_]*, unique */
    fm_hparam_type type;
    const char *def;
    const char *help;
} fm_hparam_decl;

/* An extra function that Lua may call through libffi.  The signature is
 * "R(A...)": R the return type and A the argument types, one letter each:
 *   v void (return only), i int, l int64_t, f float, d double,
 *   s const char * (NUL-terminated; a returned string belongs to the plugin),
 *   m the model instance (the void * create() returned; arguments only).
 * Example: "d(mi)" is double fn(void *self, int batch). */
typedef struct fm_export_decl {
    const char *name;
    const char *signature;
    void (*fn)(void);  /* cast from the real function type */
    const char *help;
} fm_export_decl;

/* The values of the hyper-parameters for one model, defaults already applied
 * and checked against the declared types by the host. */
typedef struct fm_hparams fm_hparams;
/* Programmer error (abort) when `name` is not declared with that type. */
FM_API int64_t fm_hparams_int(const fm_hparams *hp, const char *name);
FM_API double fm_hparams_float(const fm_hparams *hp, const char *name);
FM_API bool fm_hparams_bool(const fm_hparams *hp, const char *name);
FM_API const char *fm_hparams_string(const fm_hparams *hp, const char *name);

typedef struct fm_plugin_desc {
    uint32_t abi_version;  /* FM_PLUGIN_ABI_VERSION */
    uint32_t struct_size;  /* sizeof(fm_plugin_desc) */
    const char *name;      /* [a-z0-9_]+: artifacts are named after it */
    const char *description;
    const fm_hparam_decl *hparams;
    int n_hparams;
    /* Registers parameters and buffers on `m` (fm_model_param, fm_nn_*), and
     * returns the instance, or NULL after fm_error_set() when the
     * hyper-parameter values are unusable (say, width=0). */
    void *(*create)(fm_model *m, const fm_hparams *hp);
    /* x: [N, 1, 28, 28] normalised pixels -> logits [N, 10], built from the
     * core's ops so that autograd differentiates it. */
    fm_tensor *(*forward)(void *self, fm_graph *g, fm_tensor *x);
    void (*destroy)(void *self);
    const fm_export_decl *exports;
    int n_exports;
} fm_plugin_desc;

typedef const fm_plugin_desc *(*fm_plugin_entry_fn)(void);

/* ---- host side: loading ----------------------------------------------------- */

typedef struct fm_plugin fm_plugin;

/* Opens a plugin (RTLD_NOW | RTLD_LOCAL) and checks every field of its
 * descriptor.  On failure returns NULL with FM_ERR_PLUGIN and a message naming
 * the file and the reason.  The result is refcounted (starts at 1). */
FM_API fm_plugin *fm_plugin_open(const char *path);
FM_API void fm_plugin_retain(fm_plugin *p);
FM_API void fm_plugin_release(fm_plugin *p);
FM_API const fm_plugin_desc *fm_plugin_descriptor_of(const fm_plugin *p);
FM_API const char *fm_plugin_path(const fm_plugin *p);

/* Resolves a plugin given as a path or a bare model name ("rescnn"): tried as
 * given, then beside the running executable (and its plugins/ folder), then
 * in the installed plugin directory.  Writes the path found to `out`. */
FM_API fm_status fm_plugin_resolve(const char *name_or_path, char *out, size_t out_len);

/* Hyper-parameter values: the declared defaults, overridden by "key=value"
 * strings.  Unknown keys and values that do not parse are FM_ERR_ARG naming
 * the key, the value and the declared type. */
FM_API fm_hparams *fm_hparams_new(const fm_plugin *p, const char *const *assignments, int n);
FM_API void fm_hparams_free(fm_hparams *hp);
/* "width=32 blocks=1" (all values, declared order). */
FM_API char *fm_hparams_to_string(const fm_hparams *hp, char *buf, size_t len);
FM_API int fm_hparams_count(const fm_hparams *hp);
/* Name and value (as text) of the i-th declared hyper-parameter. */
FM_API const char *fm_hparams_name_at(const fm_hparams *hp, int i);
FM_API const char *fm_hparams_value_at(const fm_hparams *hp, int i);

/* Creates a model: runs create(), finalises (allocation + init with `seed`),
 * and keeps the plugin loaded while the model lives.  NULL with the error
 * slot set when create() fails: FM_ERR_ARG when the plugin refused a
 * hyper-parameter value with FM_ERR_ARG (a usage error), else FM_ERR_PLUGIN;
 * FM_ERR_NOMEM, before allocating, when the model create() registered
 * (parameters and gradients) is larger than the machine's memory.  The
 * message starts with the plugin's name. */
FM_API fm_model *fm_plugin_create_model(fm_plugin *p, const fm_hparams *hp, uint64_t seed);

/* ---- host side: calling exports through libffi ------------------------------ */

typedef union fm_ffi_value {
    int32_t i;
    int64_t l;
    float f;
    double d;
    const char *s;
    void *m;
} fm_ffi_value;

/* Index of an export by name, or -1. */
FM_API int fm_plugin_export_find(const fm_plugin *p, const char *name);
/* Calls export `index` with args[0..nargs) typed as its signature says (the
 * `m` argument is the instance of `model`, which must come from this plugin).
 * The arity is checked: FM_ERR_ARG on a mismatch.
 * args[k] matches the k-th argument letter of the signature, `m` included:
 * for "d(mi)", nargs is 2, args[1].i is the batch and args[0] is ignored (the
 * host passes fm_model_self(model) there).  `model` may be NULL when the
 * signature has no `m`.  A string argument must not be NULL.  `ret` (may be
 * NULL) receives the member named by the return letter. */
FM_API fm_status fm_plugin_export_call(const fm_plugin *p, int index, fm_model *model,
                                       const fm_ffi_value *args, int nargs, fm_ffi_value *ret);

#ifdef __cplusplus
}
#endif
#endif /* FM_PLUGIN_H */
