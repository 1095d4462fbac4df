/* Fuzz target: the plugin loader's descriptor checks.  The input is read as
 * a descriptor — ABI version, struct_size, names, hyper-parameter and export
 * declarations with their signature strings, function pointers present or
 * NULL — which fm_plugin_from_desc checks as fm_plugin_open checks the one a
 * shared object returns.  A descriptor that passes is then used: its
 * exports looked up, and the strings that follow given to fm_hparams_new
 * as "key=value" assignments.
 *
 * The encoding (every read past the end gives zeros):
 *   flags u8: bit 0 a raw ABI version (u32 follows), else the host's;
 *             bit 1 a raw struct_size (u32 follows), else sizeof;
 *             bits 2-4 create, forward, destroy NULL; bit 5 hparams NULL;
 *             bit 6 exports NULL; bit 7 no descriptor at all
 *   name str, description str
 *   n_hparams i8, then per declaration (at most 70 read):
 *             name str, type i8, def str, help str
 *   n_exports i8, then per export (at most 70 read):
 *             name str, signature str, fn u8 (0: NULL), help str
 *   the rest: str after str, the assignments for fm_hparams_new
 * where str is a length byte (255: NULL) and that many bytes. */
#include <stdlib.h>
#include <string.h>

#include "fm/fm_plugin.h"
#include "fuzz_util.h"
#include "plugin_internal.h"

/* A little over the loader's limit of 64, so that its count check is met
 * with arrays that really are that long. */
#define MAX_DECLS 70
#define MAX_STRINGS 1024
#define MAX_ASSIGNMENTS 32

typedef struct reader {
    const uint8_t *p;
    size_t left;
    char *strings[MAX_STRINGS];  /* every string made, freed at the end */
    int n_strings;
} reader;

static uint8_t take_u8(reader *r)
{
    if (r->left == 0) return 0;
    r->left--;
    return *r->p++;
}

static uint32_t take_u32(reader *r)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)take_u8(r) << (8 * i);
    return v;
}

/* Each string gets an allocation of its own size, so that an overread is
 * caught by AddressSanitizer. */
static const char *take_str(reader *r)
{
    uint8_t len = take_u8(r);
    if (len == 255 || r->n_strings == MAX_STRINGS) return NULL;
    size_t n = len < r->left ? len : r->left;
    char *s = malloc(n + 1);
    if (!s) abort();
    memcpy(s, r->p, n);
    s[n] = '\0';
    r->p += n, r->left -= n;
    return r->strings[r->n_strings++] = s;
}

static void *dummy_create(fm_model *m, const fm_hparams *hp)
{
    (void)m, (void)hp;
    abort();  /* the checks never call the plugin */
}

static fm_tensor *dummy_forward(void *self, fm_graph *g, fm_tensor *x)
{
    (void)self, (void)g, (void)x;
    abort();
}

static void dummy_destroy(void *self)
{
    (void)self;
    abort();
}

static void dummy_export(void) { abort(); }

/* n declarations as the descriptor claims; the array as long as the claim
 * when it is one the loader could accept, else empty. */
static int decl_count(int claimed) { return claimed > 0 && claimed <= MAX_DECLS ? claimed : 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {.p = data, .left = size};
    uint8_t flags = take_u8(&r);
    fm_plugin_desc d = {
        .abi_version = flags & 1 ? take_u32(&r) : FM_PLUGIN_ABI_VERSION,
        .struct_size = flags & 2 ? take_u32(&r) : (uint32_t)sizeof(fm_plugin_desc),
        .create = flags & 4 ? NULL : dummy_create,
        .forward = flags & 8 ? NULL : dummy_forward,
        .destroy = flags & 16 ? NULL : dummy_destroy,
    };
    d.name = take_str(&r);
    d.description = take_str(&r);

    d.n_hparams = (int8_t)take_u8(&r);
    int nh = decl_count(d.n_hparams);
    fm_hparam_decl *hparams = malloc((size_t)(nh ? nh : 1) * sizeof *hparams);
    for (int i = 0; i < nh; i++) {
        hparams[i].name = take_str(&r);
        hparams[i].type = (fm_hparam_type)(int8_t)take_u8(&r);
        hparams[i].def = take_str(&r);
        hparams[i].help = take_str(&r);
    }
    d.hparams = flags & 32 ? NULL : hparams;

    d.n_exports = (int8_t)take_u8(&r);
    int nx = decl_count(d.n_exports);
    fm_export_decl *exports = malloc((size_t)(nx ? nx : 1) * sizeof *exports);
    for (int i = 0; i < nx; i++) {
        exports[i].name = take_str(&r);
        exports[i].signature = take_str(&r);
        exports[i].fn = take_u8(&r) ? dummy_export : NULL;
        exports[i].help = take_str(&r);
    }
    d.exports = flags & 64 ? NULL : exports;

    fm_plugin *p = fm_plugin_from_desc(flags & 128 ? NULL : &d, "fuzz.so");
    if (p) {
        for (int i = 0; i < d.n_exports; i++)
            if (fm_plugin_export_find(p, d.exports[i].name) < 0) abort();
        const char *lines[MAX_ASSIGNMENTS];
        int n = 0;
        while (r.left > 0 && n < MAX_ASSIGNMENTS) {
            const char *s = take_str(&r);
            if (s) lines[n++] = s;
        }
        fm_hparams *hp = fm_hparams_new(p, lines, n);
        fm_hparams_free(hp);
        fm_plugin_release(p);
    }

    for (int i = 0; i < r.n_strings; i++) free(r.strings[i]);
    free(hparams);
    free(exports);
    return 0;
}
