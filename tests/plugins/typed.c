/* A valid plugin that declares every hyper-parameter type and exports one
 * function per signature letter, for test_plugin's libffi calls. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fm/fm_plugin.h>

typedef struct typed {
    fm_linear_layer fc;
    int n, calls;
    char tag[64];
    char greeting[128];
} typed;

static void *typed_create(fm_model *m, const fm_hparams *hp)
{
    const char *tag = fm_hparams_string(hp, "tag");
    if (!strcmp(tag, "fail")) {
        fm_error_set(FM_ERR_ARG, "tag=fail: asked to fail");
        return NULL;
    }
    if (!strcmp(tag, "fail_silently")) return NULL;
    typed *t = fm_xcalloc(1, sizeof *t);
    t->n = (int)fm_hparams_int(hp, "n");
    snprintf(t->tag, sizeof t->tag, "%s", tag);
    t->fc = fm_nn_linear_new(m, "fc", 28 * 28, 10, fm_hparams_bool(hp, "bias"));
    return t;
}

static fm_tensor *typed_forward(void *self, fm_graph *g, fm_tensor *x /* [N, 1, 28, 28] */)
{
    return fm_nn_linear(g, &((typed *)self)->fc, fm_flatten(g, x));  // [N, 10]
}

static void typed_destroy(void *self) { free(self); }

static int add_i(int a, int b) { return a + b; }
static int64_t add_l(int64_t a, int64_t b) { return a + b; }
static float mul_f(float a, float b) { return a * b; }
static double mul_d(double a, double b) { return a * b; }
static int64_t length(const char *s) { return (int64_t)strlen(s); }
static const char *tag(void *self) { return ((typed *)self)->tag; }
static void bump(void *self) { ((typed *)self)->calls++; }
static int calls(void *self) { return ((typed *)self)->calls; }

static const char *greet(void *self, const char *who)
{
    typed *t = self;
    snprintf(t->greeting, sizeof t->greeting, "hello, %s", who);
    return t->greeting;
}

/* Every argument type at once, the instance in the middle. */
static double mix(int i, void *self, int64_t l, float f, double d, const char *s)
{
    return i + ((typed *)self)->n + (double)l + f + d + (double)strlen(s);
}

static const fm_hparam_decl typed_hparams[] = {
    {"n", FM_HP_INT, "3", "an int"},
    {"lr", FM_HP_FLOAT, "0.001", "a float"},
    {"bias", FM_HP_BOOL, "yes", "a bool"},
    {"tag", FM_HP_STRING, "plain", "a string; \"fail\" makes create() fail"},
};

static const fm_export_decl typed_exports[] = {
    {"add_i", "i(ii)", (void (*)(void))add_i, NULL},
    {"add_l", "l(ll)", (void (*)(void))add_l, NULL},
    {"mul_f", "f(ff)", (void (*)(void))mul_f, NULL},
    {"mul_d", "d(dd)", (void (*)(void))mul_d, NULL},
    {"length", "l(s)", (void (*)(void))length, NULL},
    {"tag", "s(m)", (void (*)(void))tag, NULL},
    {"bump", "v(m)", (void (*)(void))bump, NULL},
    {"calls", "i(m)", (void (*)(void))calls, NULL},
    {"greet", "s(ms)", (void (*)(void))greet, NULL},
    {"mix", "d(imlfds)", (void (*)(void))mix, NULL},
};

static const fm_plugin_desc typed_desc = {
    .abi_version = FM_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(fm_plugin_desc),
    .name = "typed",
    .description = "one linear layer; exports of every signature type",
    .hparams = typed_hparams,
    .n_hparams = sizeof typed_hparams / sizeof typed_hparams[0],
    .create = typed_create,
    .forward = typed_forward,
    .destroy = typed_destroy,
    .exports = typed_exports,
    .n_exports = sizeof typed_exports / sizeof typed_exports[0],
};

FM_PLUGIN_EXPORT const fm_plugin_desc *fm_plugin_descriptor(void) { return &typed_desc; }
