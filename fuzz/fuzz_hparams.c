/* Fuzz target: hyper-parameter assignments, as `--set` and fm.train{set}
 * pass them.  The first byte picks one of the model plugins (mlp, cnn,
 * rescnn, lenet: int, float and bool declarations); the rest, split at
 * newlines, are the "key=value" assignments given to fm_hparams_new.  Each
 * line is also parsed as every type by fm_hparam_parse. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm/fm_plugin.h"
#include "fuzz_util.h"
#include "plugin_internal.h"

#ifndef FM_FUZZ_PLUGIN_DIR
#error "FM_FUZZ_PLUGIN_DIR: the directory of the built model plugins"
#endif

#define MAX_ASSIGNMENTS 32

static const char *const plugin_names[] = {"mlp", "cnn", "rescnn", "lenet"};
#define N_PLUGINS (int)(sizeof plugin_names / sizeof plugin_names[0])
static fm_plugin *plugins[N_PLUGINS];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    for (int i = 0; i < N_PLUGINS; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.so", FM_FUZZ_PLUGIN_DIR, plugin_names[i]);
        plugins[i] = fm_plugin_open(path);
        if (!plugins[i]) {
            fprintf(stderr, "fuzz_hparams: %s\n", fm_error_message());
            abort();
        }
    }
    return 0;
}

/* Reads every value back the way a plugin's create() does. */
static void read_back(const fm_plugin *p, const fm_hparams *hp)
{
    const fm_plugin_desc *d = fm_plugin_descriptor_of(p);
    char small[16], big[4096];
    fm_hparams_to_string(hp, small, sizeof small);
    fm_hparams_to_string(hp, big, sizeof big);
    if (fm_hparams_count(hp) != d->n_hparams) abort();
    for (int i = 0; i < d->n_hparams; i++) {
        const char *name = fm_hparams_name_at(hp, i), *text = fm_hparams_value_at(hp, i);
        if (strcmp(name, d->hparams[i].name) != 0 || !text) abort();
        /* The canonical text must read back as the same type. */
        if (!fm_hparam_parse(d->hparams[i].type, text, NULL)) abort();
        switch (d->hparams[i].type) {
        case FM_HP_INT: (void)fm_hparams_int(hp, name); break;
        case FM_HP_FLOAT: (void)fm_hparams_float(hp, name); break;
        case FM_HP_BOOL: (void)fm_hparams_bool(hp, name); break;
        case FM_HP_STRING: (void)fm_hparams_string(hp, name); break;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    if (!plugins[0]) LLVMFuzzerInitialize(NULL, NULL);
    const fm_plugin *p = plugins[data[0] % N_PLUGINS];
    char *lines[MAX_ASSIGNMENTS];
    int n = 0;
    for (size_t at = 1; at < size && n < MAX_ASSIGNMENTS;) {
        const uint8_t *nl = memchr(data + at, '\n', size - at);
        size_t len = nl ? (size_t)(nl - (data + at)) : size - at;
        /* Exactly as long as the line, so that any overread is caught. */
        char *s = malloc(len + 1);
        if (!s) abort();
        memcpy(s, data + at, len);
        s[len] = '\0';
        lines[n++] = s;
        at += len + 1;
    }
    for (int i = 0; i < n; i++)
        for (int type = 0; type <= FM_HP_STRING + 1; type++) {
            fm_hparam_value v;
            (void)fm_hparam_parse((fm_hparam_type)type, lines[i], &v);
        }
    fm_hparams *hp = fm_hparams_new(p, (const char *const *)lines, n);
    if (hp) read_back(p, hp);
    fm_hparams_free(hp);
    for (int i = 0; i < n; i++) free(lines[i]);
    return 0;
}
