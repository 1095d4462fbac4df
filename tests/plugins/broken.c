/* A tiny valid plugin, built once per -DBROKEN_<KIND> with that one thing
 * wrong, so that test_plugin can check every refusal of the loader. */
#include <stddef.h>
#include <stdlib.h>

#include <fm/fm_plugin.h>

typedef struct tiny {
    fm_linear_layer fc;
} tiny;

/* unused: BROKEN_NULL_CREATE leaves it out of the descriptor */
__attribute__((unused)) static void *tiny_create(fm_model *m, const fm_hparams *hp)
{
    (void)hp;
    tiny *t = fm_xcalloc(1, sizeof *t);
    t->fc = fm_nn_linear_new(m, "fc", 28 * 28, 10, true);
    return t;
}

static fm_tensor *tiny_forward(void *self, fm_graph *g, fm_tensor *x /* [N, 1, 28, 28] */)
{
#if defined(BROKEN_FORWARD_NULL)
    (void)self, (void)g, (void)x;
    return NULL;
#elif defined(BROKEN_FORWARD_SHAPE)
    (void)self;
    return fm_flatten(g, x);  // [N, 784]: not logits
#else
    return fm_nn_linear(g, &((tiny *)self)->fc, fm_flatten(g, x));  // [N, 10]
#endif
}

static void tiny_destroy(void *self) { free(self); }

static int tiny_answer(void) { return 42; }

#if defined(BROKEN_UNDEFINED_SYMBOL)
/* Defined nowhere: dlopen(RTLD_NOW) must fail. */
extern int fm_test_no_such_function(void);
FM_PLUGIN_EXPORT int fm_test_use_missing(void) { return fm_test_no_such_function(); }
#endif

#if defined(BROKEN_ABI_MAJOR)
#define ABI_VERSION ((uint32_t)((FM_PLUGIN_ABI_MAJOR + 1) << 16))
#elif defined(BROKEN_NEWER_MINOR)
#define ABI_VERSION ((uint32_t)((FM_PLUGIN_ABI_MAJOR << 16) | (FM_PLUGIN_ABI_MINOR + 1)))
#elif defined(BROKEN_OLD_MINOR)
/* Not broken: what a plugin built against ABI 1.0 looks like to a later host. */
#define ABI_VERSION ((uint32_t)(FM_PLUGIN_ABI_MAJOR << 16))
#else
#define ABI_VERSION FM_PLUGIN_ABI_VERSION
#endif

#if defined(BROKEN_SMALL_STRUCT)
#define STRUCT_SIZE 8
#elif defined(BROKEN_OLD_MINOR)
#define STRUCT_SIZE (offsetof(fm_plugin_desc, n_exports) + sizeof(int))
#else
#define STRUCT_SIZE sizeof(fm_plugin_desc)
#endif

static const fm_hparam_decl tiny_hparams[] = {
#if defined(BROKEN_HP_BAD_NAME)
    {"Width", FM_HP_INT, "8", "not a valid name"},
#elif defined(BROKEN_HP_DUPLICATE)
    {"width", FM_HP_INT, "8", "first"},
    {"width", FM_HP_INT, "16", "second"},
#elif defined(BROKEN_HP_BAD_DEFAULT)
    {"width", FM_HP_INT, "wide", "default is not an int"},
#elif defined(BROKEN_HP_BAD_TYPE)
    {"width", (fm_hparam_type)9, "8", "no such type"},
#elif defined(BROKEN_HP_NO_HELP)
    {"width", FM_HP_INT, "8", NULL},
#else
    {"width", FM_HP_INT, "8", "unused"},
#endif
};

static const fm_export_decl tiny_exports[] = {
#if defined(BROKEN_BAD_SIGNATURE)
    {"answer", "i(x)", (void (*)(void))tiny_answer, "argument type x does not exist"},
#elif defined(BROKEN_DUPLICATE_EXPORT)
    {"answer", "i()", (void (*)(void))tiny_answer, "first"},
    {"answer", "i()", (void (*)(void))tiny_answer, "second"},
#else
    {"answer", "i()", (void (*)(void))tiny_answer, "returns 42"},
#endif
};

static const fm_plugin_desc tiny_desc = {
    .abi_version = ABI_VERSION,
    .struct_size = STRUCT_SIZE,
#if defined(BROKEN_BAD_NAME)
    .name = "Tiny-Model",
#else
    .name = "tiny",
#endif
    .description = "one linear layer, for loader tests",
    .hparams = tiny_hparams,
    .n_hparams = sizeof tiny_hparams / sizeof tiny_hparams[0],
#if !defined(BROKEN_NULL_CREATE)
    .create = tiny_create,
#endif
    .forward = tiny_forward,
    .destroy = tiny_destroy,
    .exports = tiny_exports,
    .n_exports = sizeof tiny_exports / sizeof tiny_exports[0],
};

#if defined(BROKEN_NO_SYMBOL)
FM_PLUGIN_EXPORT const fm_plugin_desc *fm_plugin_descriptor_v2(void) { return &tiny_desc; }
#elif defined(BROKEN_NULL_DESC)
FM_PLUGIN_EXPORT const fm_plugin_desc *fm_plugin_descriptor(void) { return NULL; }
FM_PLUGIN_EXPORT const fm_plugin_desc *fm_plugin_descriptor_unused(void) { return &tiny_desc; }
#else
FM_PLUGIN_EXPORT const fm_plugin_desc *fm_plugin_descriptor(void) { return &tiny_desc; }
#endif
