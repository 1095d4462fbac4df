/* The plugin loader: file checks, dlopen, descriptor validation, refcount,
 * search path, and models that keep their plugin loaded. */
#include "plugin_internal.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef FM_PLUGIN_INSTALL_RELDIR
#define FM_PLUGIN_INSTALL_RELDIR "lib/fmhost/plugins"
#endif
#ifndef FM_PLUGIN_INSTALL_DIR
#define FM_PLUGIN_INSTALL_DIR "/usr/local/lib/fmhost/plugins"
#endif

/* ABI 1.0 ends with n_exports: every plugin, whatever its minor version,
 * has at least this much descriptor.  Fields appended by later minors must
 * be read only when struct_size covers them. */
#define FM_DESC_SIZE_1_0 (offsetof(fm_plugin_desc, n_exports) + sizeof(int))
#define FM_DESC_SIZE_MAX 65536
#define FM_PLUGIN_NAME_MAX 64

/* Sets FM_ERR_PLUGIN with "<path>: <reason><fix>". */
static void vrefuse(const char *path, const char *fix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void vrefuse(const char *path, const char *fix, const char *fmt, va_list ap)
{
    char why[1024];
    vsnprintf(why, sizeof why, fmt, ap);
    fm_error_set(FM_ERR_PLUGIN, "%s: %s%s", path, why, fix);
}

static void refuse(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse(const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrefuse(path, "", fmt, ap);
    va_end(ap);
}

/* The same for a descriptor that breaks a rule of fm_plugin.h, which only
 * the plugin's author can fix. */
static void refuse_desc(const char *path, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void refuse_desc(const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrefuse(path, "; fix the plugin's descriptor and rebuild it (see docs/writing-plugins.md)",
            fmt, ap);
    va_end(ap);
}

static bool is_name(const char *s, bool digit_first)
{
    if (!s || !*s || (!digit_first && *s >= '0' && *s <= '9')) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return false;
    return true;
}

/* dlopen's own message for a text file is obscure; say what is wrong. */
static bool check_file(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        refuse(path, "cannot open plugin: %s", strerror(errno));
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        refuse(path, "not a regular file (give the path of a plugin .so)");
        return false;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        refuse(path, "cannot open plugin: %s", strerror(errno));
        return false;
    }
    unsigned char h[EI_NIDENT + 2];
    size_t got = fread(h, 1, sizeof h, f);
    fclose(f);
    if (got < SELFMAG || memcmp(h, ELFMAG, SELFMAG) != 0) {
        refuse(path, "not a shared object (no ELF header): give the path of a plugin .so");
        return false;
    }
    if (got < sizeof h) {
        refuse(path, "not a shared object (truncated ELF header): give the path of a plugin .so");
        return false;
    }
    unsigned type = h[EI_DATA] == ELFDATA2MSB ? (unsigned)h[EI_NIDENT] << 8 | h[EI_NIDENT + 1]
                                              : (unsigned)h[EI_NIDENT + 1] << 8 | h[EI_NIDENT];
    if (type != ET_DYN) {
        refuse(path, "not a shared object (ELF type %u: an executable or object file; build "
               "the plugin with -shared -fPIC)", type);
        return false;
    }
    return true;
}

static bool check_version(const char *path, const fm_plugin_desc *d)
{
    unsigned major = d->abi_version >> 16, minor = d->abi_version & 0xffff;
    if (major != FM_PLUGIN_ABI_MAJOR) {
        refuse(path, "plugin ABI %u.%u, this fmhost speaks %d.%d: rebuild the plugin against "
               "this fmhost's fm_plugin.h", major, minor, FM_PLUGIN_ABI_MAJOR,
               FM_PLUGIN_ABI_MINOR);
        return false;
    }
    if (minor > FM_PLUGIN_ABI_MINOR) {
        refuse(path, "plugin ABI %u.%u is newer than this fmhost, which speaks %d.%d: upgrade "
               "fmhost or rebuild the plugin against its fm_plugin.h", major, minor,
               FM_PLUGIN_ABI_MAJOR, FM_PLUGIN_ABI_MINOR);
        return false;
    }
    if (d->struct_size < FM_DESC_SIZE_1_0 || d->struct_size > FM_DESC_SIZE_MAX) {
        refuse(path, "descriptor struct_size %u is impossible for ABI %u.%u (at least %zu): set "
               "it to sizeof(fm_plugin_desc)", d->struct_size, major, minor, FM_DESC_SIZE_1_0);
        return false;
    }
    return true;
}

static bool check_hparams(const char *path, const fm_plugin_desc *d)
{
    if (d->n_hparams < 0 || d->n_hparams > FM_PLUGIN_MAX_HPARAMS ||
        (d->n_hparams > 0 && !d->hparams)) {
        refuse_desc(path, "n_hparams is %d with hparams %s (at most %d)", d->n_hparams,
               d->hparams ? "set" : "NULL", FM_PLUGIN_MAX_HPARAMS);
        return false;
    }
    for (int i = 0; i < d->n_hparams; i++) {
        const fm_hparam_decl *h = &d->hparams[i];
        const char *name = h->name ? h->name : "(null)";
        if (!is_name(h->name, false)) {
            refuse_desc(path, "hyper-parameter %d: name '%s' must match [a-z_][a-z0-9_]*", i + 1,
                        name);
            return false;
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(d->hparams[j].name, h->name)) {
                refuse_desc(path, "hyper-parameter '%s' is declared twice", name);
                return false;
            }
        if (h->type < FM_HP_INT || h->type > FM_HP_STRING) {
            refuse_desc(path, "hyper-parameter '%s': invalid type %d (use FM_HP_INT, FM_HP_FLOAT, "
                   "FM_HP_BOOL or FM_HP_STRING)", name, (int)h->type);
            return false;
        }
        if (!h->def || !fm_hparam_parse(h->type, h->def, NULL)) {
            refuse_desc(path, "hyper-parameter '%s': default '%s' is not a valid %s", name,
                   h->def ? h->def : "(null)", fm_hparam_type_name(h->type));
            return false;
        }
        if (!h->help) {
            refuse_desc(path, "hyper-parameter '%s' has no help text", name);
            return false;
        }
    }
    return true;
}

static bool prepare_exports(const char *path, fm_plugin *p)
{
    const fm_plugin_desc *d = p->desc;
    if (d->n_exports < 0 || d->n_exports > FM_PLUGIN_MAX_EXPORTS ||
        (d->n_exports > 0 && !d->exports)) {
        refuse_desc(path, "n_exports is %d with exports %s (at most %d)", d->n_exports,
               d->exports ? "set" : "NULL", FM_PLUGIN_MAX_EXPORTS);
        return false;
    }
    p->exports = fm_xcalloc((size_t)d->n_exports + 1, sizeof *p->exports);
    for (int i = 0; i < d->n_exports; i++) {
        const fm_export_decl *x = &d->exports[i];
        const char *name = x->name ? x->name : "(null)";
        char why[256];
        if (!x->name || !*x->name) {
            refuse_desc(path, "export %d has no name", i + 1);
            return false;
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(d->exports[j].name, x->name)) {
                refuse_desc(path, "export '%s' is declared twice", name);
                return false;
            }
        if (!x->fn) {
            refuse_desc(path, "export '%s' has no function", name);
            return false;
        }
        if (!fm_plugin_export_prepare(&p->exports[i], x->signature, why, sizeof why)) {
            refuse_desc(path,
                        "export '%s': %s (grammar: R(A...), R in v i l f d s, A in i l f d s m)",
                        name, why);
            return false;
        }
    }
    return true;
}

static bool check_desc(const char *path, fm_plugin *p)
{
    const fm_plugin_desc *d = p->desc;
    if (!d) {
        refuse_desc(path, FM_PLUGIN_SYMBOL "() returned NULL (it must return the descriptor)");
        return false;
    }
    if (!check_version(path, d)) return false;
    if (!is_name(d->name, true) || strlen(d->name) > FM_PLUGIN_NAME_MAX) {
        refuse_desc(path, "plugin name '%s' must match [a-z0-9_]+ (at most %d characters): "
               "artifacts are named after it", d->name ? d->name : "(null)", FM_PLUGIN_NAME_MAX);
        return false;
    }
    if (!d->description) {
        refuse_desc(path, "plugin %s has no description", d->name);
        return false;
    }
    if (!d->create || !d->forward || !d->destroy) {
        refuse_desc(path, "plugin %s lacks %s(): create, forward and destroy are required", d->name,
               !d->create ? "create" : !d->forward ? "forward" : "destroy");
        return false;
    }
    return check_hparams(path, d) && prepare_exports(path, p);
}

static void plugin_free(fm_plugin *p)
{
    if (p->dl) dlclose(p->dl);
    free(p->exports);
    free(p->path);
    free(p);
}

fm_plugin *fm_plugin_from_desc(const fm_plugin_desc *desc, const char *what)
{
    FM_ASSERT(what != NULL);
    fm_plugin *p = fm_xcalloc(1, sizeof *p);
    p->refs = 1;
    p->path = fm_xstrdup(what);
    p->desc = desc;
    if (!check_desc(what, p)) {
        plugin_free(p);
        return NULL;
    }
    return p;
}

fm_plugin *fm_plugin_open(const char *path)
{
    FM_ASSERT(path != NULL);
    if (!check_file(path)) return NULL;

    /* dlopen searches the library path for a name without a slash: the
     * file checked above is the one in the current directory. */
    char local[PATH_MAX];
    const char *open_as = path;
    if (!strchr(path, '/') && snprintf(local, sizeof local, "./%s", path) < (int)sizeof local)
        open_as = local;
    void *dl = dlopen(open_as, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        const char *err = dlerror();
        refuse(path, "cannot load: %s (rebuild the plugin against this fmhost, with every "
               "library it uses installed: see docs/writing-plugins.md)",
               err ? err : "unknown dlopen error");
        return NULL;
    }
    dlerror();
    void *sym = dlsym(dl, FM_PLUGIN_SYMBOL);
    if (!sym) {
        refuse(path, "no symbol " FM_PLUGIN_SYMBOL " — is this an fmhost plugin? see "
               "docs/writing-plugins.md");
        dlclose(dl);
        return NULL;
    }
    fm_plugin_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry);  /* POSIX: data and function pointers convert */
    fm_plugin *p = fm_plugin_from_desc(entry(), path);
    if (!p) {
        dlclose(dl);
        return NULL;
    }
    p->dl = dl;
    return p;
}

void fm_plugin_retain(fm_plugin *p)
{
    FM_ASSERT(p != NULL);
    __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
}

void fm_plugin_release(fm_plugin *p)
{
    if (!p) return;
    int left = __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
    FM_ASSERT(left >= 0);
    if (left == 0) plugin_free(p);
}

const fm_plugin_desc *fm_plugin_descriptor_of(const fm_plugin *p) { return p->desc; }

const char *fm_plugin_path(const fm_plugin *p) { return p->path; }

/* ---- search path --------------------------------------------------------------- */

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Appends "<dir><sep><file>" to the candidates unless it does not fit. */
static void add_candidate(char (*cand)[PATH_MAX], int *n, const char *dir, const char *file)
{
    int len = snprintf(cand[*n], PATH_MAX, "%s%s%s", dir, *dir ? "/" : "", file);
    if (len > 0 && len < PATH_MAX) (*n)++;
}

fm_status fm_plugin_resolve(const char *name_or_path, char *out, size_t out_len)
{
    FM_ASSERT(out != NULL && out_len > 0);
    if (!name_or_path || !*name_or_path)
        return fm_error_set(FM_ERR_ARG, "no plugin given: pass a model name (mlp, cnn, rescnn) "
                            "or the path to a plugin .so");
    const char *n = name_or_path;
    bool has_slash = strchr(n, '/') != NULL, is_path = has_slash || ends_with(n, ".so");

    char cand[5][PATH_MAX];
    int nc = 0;
    if (is_path) add_candidate(cand, &nc, "", n);
    if (n[0] != '/') {
        /* A bare name means the .so of that name; a relative path is also tried
         * relative to the executable, so "plugins/rescnn.so" works from anywhere. */
        char file[PATH_MAX];
        if (snprintf(file, sizeof file, "%s%s", n, is_path ? "" : ".so") >= (int)sizeof file)
            return fm_error_set(FM_ERR_ARG, "plugin name '%.64s...' is too long", n);
        char exe[PATH_MAX];
        ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (len > 0) {
            exe[len] = '\0';
            char *slash = strrchr(exe, '/');
            if (slash) *slash = '\0';
            add_candidate(cand, &nc, exe, file);
            if (!has_slash) {
                char sub[PATH_MAX + 64];
                snprintf(sub, sizeof sub, "%s/plugins", exe);
                add_candidate(cand, &nc, sub, file);
                /* An installed tree moved as a whole: <prefix>/bin/../lib/fmhost/plugins. */
                snprintf(sub, sizeof sub, "%s/../%s", exe, FM_PLUGIN_INSTALL_RELDIR);
                add_candidate(cand, &nc, sub, file);
            }
        }
        if (!has_slash) add_candidate(cand, &nc, FM_PLUGIN_INSTALL_DIR, file);
    }

    char tried[5 * PATH_MAX + 16] = "";
    size_t used = 0;
    for (int i = 0; i < nc; i++) {
        if (is_file(cand[i])) {
            size_t len = strlen(cand[i]);
            if (len >= out_len)
                return fm_error_set(FM_ERR_ARG, "plugin path %s is longer than %zu bytes",
                                    cand[i], out_len - 1);
            memcpy(out, cand[i], len + 1);
            return FM_OK;
        }
        int w = snprintf(tried + used, sizeof tried - used, "%s%s", i ? ", " : "", cand[i]);
        if (w > 0) used += (size_t)w;
    }
    return fm_error_set(FM_ERR_ARG, "plugin '%s' not found; tried: %s (build the plugins, or "
                        "give the path to the .so)", n, tried);
}

/* ---- models -------------------------------------------------------------------- */

static void release_plugin(void *ctx) { fm_plugin_release(ctx); }

/* Bytes of the block fm_model_finalize will allocate for what create()
 * registered: every tensor's values, and a gradient per parameter. */
static double model_bytes(const fm_model *m)
{
    double bytes = 0.0;
    for (int i = 0; i < fm_model_count(m); i++) {
        fm_model_entry e = fm_model_entry_at(m, i);
        double values = (double)e.tensor->numel * (e.tensor->dtype == FM_I64 ? 8.0 : 4.0);
        bytes += e.is_buffer ? values : 2.0 * values;
    }
    return bytes;
}

/* Hyper-parameters (from --set, or a checkpoint's metadata) can ask for a
 * model larger than the machine: refused here, before the allocation that
 * would abort the process. */
static bool fits_in_memory(const fm_plugin *p, const fm_model *m, const fm_hparams *hp)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    double bytes = model_bytes(m), memory = pages > 0 && page > 0 ? (double)pages * page : 0.0;
    if (memory == 0.0 || bytes <= memory) return true;
    char values[512];
    fm_hparams_to_string(hp, values, sizeof values);
    fm_error_set(FM_ERR_NOMEM, "%s: %s makes a model of %.1f GB (parameters and gradients), more "
                 "than this machine's %.1f GB of memory: choose smaller hyper-parameters",
                 p->desc->name, values, bytes / 1e9, memory / 1e9);
    return false;
}

fm_model *fm_plugin_create_model(fm_plugin *p, const fm_hparams *hp, uint64_t seed)
{
    FM_ASSERT(p != NULL && hp != NULL);
    const fm_plugin_desc *d = p->desc;
    fm_model *m = fm_model_new();
    fm_error_clear();
    void *self = d->create(m, hp);
    if (self && !fits_in_memory(p, m, hp)) {
        d->destroy(self);
        fm_model_free(m);
        return NULL;
    }
    if (!self) {
        /* Keep the plugin's status: FM_ERR_ARG is a bad --set value, a usage error. */
        char why[1024];
        snprintf(why, sizeof why, "%s", fm_error_message());
        fm_status st = fm_error_status() == FM_ERR_ARG ? FM_ERR_ARG : FM_ERR_PLUGIN;
        fm_model_free(m);
        if (why[0])
            fm_error_set(st, "%s: %s", d->name, why);
        else
            fm_error_set(FM_ERR_PLUGIN, "%s: create() failed without saying why (%s)", d->name,
                         p->path);
        return NULL;
    }
    fm_model_finalize(m, seed);
    fm_plugin_retain(p);
    fm_model_set_impl(m, self, d->forward, d->destroy, release_plugin, p);
    return m;
}
