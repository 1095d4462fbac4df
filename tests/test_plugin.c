/* test_plugin — the loader's refusals, search path, hyper-parameters, libffi
 * calls, and the three model plugins (counts, names, shapes, forward). */
#include <dlfcn.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/fm_graph.h"
#include "fm/fm_model.h"
#include "fm/fm_plugin.h"
#include "fm_test_util.h"

#ifndef FM_TEST_PLUGIN_DIR
#error "tests/plugins/CMakeLists.txt defines FM_TEST_PLUGIN_DIR"
#endif

#define TEST_PLUGIN(name) FM_TEST_PLUGIN_DIR "/" name ".so"
#define MODEL_PLUGIN(name) FM_PLUGIN_DIR "/" name ".so"

static void assert_message_has(const char *needle)
{
    ck_assert_msg(strstr(fm_error_message(), needle) != NULL, "message \"%s\" lacks \"%s\"",
                  fm_error_message(), needle);
}

/* Opening `path` fails with FM_ERR_PLUGIN and a message that starts with the
 * path and names the reason. */
static void assert_refused(const char *path, const char *reason)
{
    fm_error_clear();
    fm_plugin *p = fm_plugin_open(path);
    ck_assert_msg(p == NULL, "%s was loaded", path);
    ck_assert_int_eq(fm_error_status(), FM_ERR_PLUGIN);
    ck_assert_msg(strncmp(fm_error_message(), path, strlen(path)) == 0,
                  "message \"%s\" does not start with %s", fm_error_message(), path);
    assert_message_has(reason);
}

static fm_plugin *open_ok(const char *path)
{
    fm_plugin *p = fm_plugin_open(path);
    ck_assert_msg(p != NULL, "cannot open %s: %s", path, fm_error_message());
    return p;
}

static fm_hparams *hparams_ok(const fm_plugin *p, const char *const *kv, int n)
{
    fm_hparams *hp = fm_hparams_new(p, kv, n);
    ck_assert_msg(hp != NULL, "hparams refused: %s", fm_error_message());
    return hp;
}

static fm_model *model_ok(fm_plugin *p, const char *const *kv, int n)
{
    fm_hparams *hp = hparams_ok(p, kv, n);
    fm_model *m = fm_plugin_create_model(p, hp, 1);
    ck_assert_msg(m != NULL, "create failed: %s", fm_error_message());
    fm_hparams_free(hp);
    return m;
}

static void assert_entry(const fm_model *m, const char *name, fm_dtype dtype, int ndim,
                         const int *shape)
{
    fm_tensor *t = fm_model_find(m, name);
    ck_assert_msg(t != NULL, "no entry %s", name);
    ck_assert_int_eq(t->dtype, dtype);
    ck_assert_int_eq(t->ndim, ndim);
    for (int i = 0; i < ndim; i++) ck_assert_int_eq(t->shape[i], shape[i]);
}

/* Forward of a [2, 1, 28, 28] batch, in training and in eval mode. */
static void assert_forward_gives_logits(fm_model *m)
{
    fm_graph *g = fm_graph_new();
    for (int training = 1; training >= 0; training--) {
        fm_graph_reset(g);
        fm_graph_set_training(g, training);
        fm_tensor *x = fm_graph_tensor(g, 4, (int[]){2, 1, 28, 28});
        fm_test_fill(x->data, (size_t)x->numel, -1.0f, 2.0f, 7);
        fm_tensor *y = fm_model_forward(m, g, x);
        ck_assert_int_eq(y->ndim, 2);
        ck_assert_int_eq(y->shape[0], 2);
        ck_assert_int_eq(y->shape[1], 10);
        for (int i = 0; i < 20; i++) ck_assert(isfinite(y->data[i]));
        ck_assert(y->data[0] != y->data[1] || y->data[0] != y->data[10]);
    }
    fm_graph_free(g);
}

static fm_ffi_value call(const fm_plugin *p, fm_model *m, const char *name, fm_ffi_value *args,
                         int nargs)
{
    int idx = fm_plugin_export_find(p, name);
    ck_assert_msg(idx >= 0, "no export %s", name);
    fm_ffi_value ret;
    fm_status st = fm_plugin_export_call(p, idx, m, args, nargs, &ret);
    ck_assert_msg(st == FM_OK, "%s: %s", name, fm_error_message());
    return ret;
}

/* ---- refusals ---------------------------------------------------------------- */

START_TEST(test_missing_file)
{
    assert_refused("/nonexistent/fmhost/missing.so", "No such file");
}
END_TEST

START_TEST(test_not_elf)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/fake.so", fm_test_tmpdir());
    const char *text = "this is a text file, not a plugin\n";
    fm_test_write_file(path, text, strlen(text));
    assert_refused(path, "not a shared object (no ELF header)");
}
END_TEST

START_TEST(test_elf_object_file)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/object.o", fm_test_tmpdir());
    unsigned char h[64] = {0x7f, 'E', 'L', 'F', 2, 1, 1};
    h[16] = 1;  /* ET_REL: a .o, not a shared object */
    fm_test_write_file(path, h, sizeof h);
    assert_refused(path, "not a shared object (ELF type 1");
}
END_TEST

START_TEST(test_directory)
{
    assert_refused(FM_TEST_PLUGIN_DIR, "not a regular file");
}
END_TEST

/* A bare file name is the file in the current directory, not a name for
 * dlopen to look up on the library path (where no such plugin is). */
START_TEST(test_bare_name_in_cwd)
{
    const char *dir = fm_test_tmpdir();
    size_t len;
    char *so = fm_test_read_file(TEST_PLUGIN("old_minor"), &len);
    char path[4200];
    snprintf(path, sizeof path, "%s/localtiny.so", dir);
    fm_test_write_file(path, so, len);
    free(so);
    char cwd[4200];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_eq(chdir(dir), 0);
    fm_plugin *p = fm_plugin_open("localtiny.so");
    ck_assert_int_eq(chdir(cwd), 0);
    ck_assert_msg(p != NULL, "%s", fm_error_message());
    ck_assert_str_eq(fm_plugin_descriptor_of(p)->name, "tiny");
    fm_plugin_release(p);
}
END_TEST

/* A plugin whose forward returns no logits is refused by the host's
 * checked call, naming the plugin and what came back, rather than crashing
 * or aborting on an assertion. */
START_TEST(test_forward_result_checked)
{
    static const char *const paths[2] = {TEST_PLUGIN("broken_forward_null"),
                                         TEST_PLUGIN("broken_forward_shape")};
    static const char *const want[2] = {"returned NULL", "[4, 784]"};
    fm_plugin *p = open_ok(paths[_i]);
    fm_model *m = model_ok(p, NULL, 0);
    fm_graph *g = fm_graph_new();
    fm_tensor *x = fm_graph_tensor(g, 4, (int[]){4, 1, 28, 28});
    memset(x->data, 0, (size_t)x->numel * sizeof(float));
    fm_tensor *logits = (fm_tensor *)1;
    ck_assert_int_eq(fm_model_forward_checked(m, g, x, "tiny", &logits), FM_ERR_PLUGIN);
    const char *msg = fm_error_message();
    ck_assert_msg(strstr(msg, "plugin tiny") && strstr(msg, want[_i]), "%s", msg);
    fm_graph_free(g);
    fm_model_free(m);
    fm_plugin_release(p);
}
END_TEST

START_TEST(test_broken_plugins)
{
    char abi_major[128], newer_minor[128];
    snprintf(abi_major, sizeof abi_major, "plugin ABI %d.0, this fmhost speaks %d.%d",
             FM_PLUGIN_ABI_MAJOR + 1, FM_PLUGIN_ABI_MAJOR, FM_PLUGIN_ABI_MINOR);
    snprintf(newer_minor, sizeof newer_minor, "plugin ABI %d.%d is newer than this fmhost",
             FM_PLUGIN_ABI_MAJOR, FM_PLUGIN_ABI_MINOR + 1);
    static const struct {
        const char *path, *reason;
    } cases[] = {
        {TEST_PLUGIN("broken_no_symbol"),
         "no symbol fm_plugin_descriptor — is this an fmhost plugin? see docs/writing-plugins.md"},
        {TEST_PLUGIN("broken_null_desc"), "fm_plugin_descriptor() returned NULL"},
        {TEST_PLUGIN("broken_small_struct"), "struct_size 8"},
        {TEST_PLUGIN("broken_bad_name"), "plugin name 'Tiny-Model' must match [a-z0-9_]+"},
        {TEST_PLUGIN("broken_null_create"), "lacks create()"},
        {TEST_PLUGIN("broken_hp_bad_name"), "name 'Width' must match [a-z_][a-z0-9_]*"},
        {TEST_PLUGIN("broken_hp_duplicate"), "hyper-parameter 'width' is declared twice"},
        {TEST_PLUGIN("broken_hp_bad_default"), "default 'wide' is not a valid int"},
        {TEST_PLUGIN("broken_hp_bad_type"), "invalid type 9"},
        {TEST_PLUGIN("broken_hp_no_help"), "'width' has no help text"},
        {TEST_PLUGIN("broken_bad_signature"), "export 'answer': signature \"i(x)\": argument 1"},
        {TEST_PLUGIN("broken_duplicate_export"), "export 'answer' is declared twice"},
        {TEST_PLUGIN("broken_undefined_symbol"), "fm_test_no_such_function"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_refused(cases[i].path, cases[i].reason);
    assert_refused(TEST_PLUGIN("broken_abi_major"), abi_major);
    assert_refused(TEST_PLUGIN("broken_newer_minor"), newer_minor);
}
END_TEST

START_TEST(test_old_minor_loads)
{
    fm_plugin *p = open_ok(TEST_PLUGIN("old_minor"));
    const fm_plugin_desc *d = fm_plugin_descriptor_of(p);
    ck_assert_str_eq(d->name, "tiny");
    ck_assert_uint_eq(d->struct_size, offsetof(fm_plugin_desc, n_exports) + sizeof(int));
    ck_assert_int_eq(d->abi_version & 0xffff, 0);
    fm_model *m = model_ok(p, NULL, 0);
    ck_assert_int_eq(call(p, NULL, "answer", NULL, 0).i, 42);
    fm_model_free(m);
    fm_plugin_release(p);
}
END_TEST

/* The plugin stays loaded while a model made from it lives, and no longer. */
START_TEST(test_refcount_keeps_loaded)
{
    const char *path = TEST_PLUGIN("typed");
    fm_plugin *p = open_ok(path);
    fm_model *m = model_ok(p, NULL, 0);
    ck_assert_ptr_eq(fm_model_owner(m), p);
    fm_plugin_release(p);

    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    ck_assert_msg(h != NULL, "plugin unloaded while its model lives");
    dlclose(h);
    assert_forward_gives_logits(m);
    ck_assert_str_eq(call(p, m, "tag", (fm_ffi_value[1]){0}, 1).s, "plain");

    fm_model_free(m);
    ck_assert_msg(dlopen(path, RTLD_NOW | RTLD_NOLOAD) == NULL, "plugin still loaded");
}
END_TEST

/* ---- search path -------------------------------------------------------------- */

START_TEST(test_resolve)
{
    char out[4096];
    ck_assert_int_eq(fm_plugin_resolve(MODEL_PLUGIN("mlp"), out, sizeof out), FM_OK);
    ck_assert_str_eq(out, MODEL_PLUGIN("mlp"));

    /* Bare names: beside the executable (build/tests) in its plugins/ folder. */
    ck_assert_int_eq(fm_plugin_resolve("typed", out, sizeof out), FM_OK);
    ck_assert_msg(strstr(out, "/plugins/typed.so") != NULL, "resolved to %s", out);
    fm_plugin *p = open_ok(out);
    ck_assert_str_eq(fm_plugin_descriptor_of(p)->name, "typed");
    fm_plugin_release(p);

    /* A relative path is also tried relative to the executable. */
    ck_assert_int_eq(chdir("/"), 0);
    ck_assert_int_eq(fm_plugin_resolve("plugins/typed.so", out, sizeof out), FM_OK);
    ck_assert_msg(strstr(out, "/tests/plugins/typed.so") != NULL, "resolved to %s", out);

    ck_assert_int_eq(fm_plugin_resolve("no_such_model", out, sizeof out), FM_ERR_ARG);
    assert_message_has("plugin 'no_such_model' not found; tried: ");
    assert_message_has("/plugins/no_such_model.so");
    assert_message_has(FM_PLUGIN_INSTALL_DIR_FOR_TEST "/no_such_model.so");

    ck_assert_int_eq(fm_plugin_resolve("/nonexistent/x.so", out, sizeof out), FM_ERR_ARG);
    assert_message_has("tried: /nonexistent/x.so");
    ck_assert_int_eq(fm_plugin_resolve("", out, sizeof out), FM_ERR_ARG);
    ck_assert_int_eq(fm_plugin_resolve(MODEL_PLUGIN("mlp"), out, 8), FM_ERR_ARG);
}
END_TEST

/* ---- hyper-parameters ------------------------------------------------------------ */

START_TEST(test_hparams_defaults_and_overrides)
{
    fm_plugin *p = open_ok(TEST_PLUGIN("typed"));
    char buf[256];
    fm_hparams *hp = hparams_ok(p, NULL, 0);
    ck_assert_int_eq(fm_hparams_count(hp), 4);
    ck_assert_int_eq(fm_hparams_int(hp, "n"), 3);
    ck_assert_double_eq(fm_hparams_float(hp, "lr"), 0.001);
    ck_assert(fm_hparams_bool(hp, "bias"));
    ck_assert_str_eq(fm_hparams_string(hp, "tag"), "plain");
    ck_assert_str_eq(fm_hparams_to_string(hp, buf, sizeof buf), "n=3 lr=0.001 bias=true tag=plain");
    fm_hparams_free(hp);

    const char *kv[] = {"n=-7", "lr=2.5e-4", "bias=No", "tag=hello world", "n=12"};
    hp = hparams_ok(p, kv, 5);
    ck_assert_int_eq(fm_hparams_int(hp, "n"), 12);  /* the last assignment wins */
    ck_assert_double_eq(fm_hparams_float(hp, "lr"), 2.5e-4);
    ck_assert(!fm_hparams_bool(hp, "bias"));
    ck_assert_str_eq(fm_hparams_string(hp, "tag"), "hello world");
    ck_assert_str_eq(fm_hparams_name_at(hp, 1), "lr");
    ck_assert_str_eq(fm_hparams_value_at(hp, 1), "0.00025");
    ck_assert_str_eq(fm_hparams_value_at(hp, 2), "false");
    ck_assert_str_eq(fm_hparams_to_string(hp, buf, sizeof buf),
                     "n=12 lr=0.00025 bias=false tag=hello world");
    /* A short buffer truncates instead of overflowing. */
    ck_assert_str_eq(fm_hparams_to_string(hp, buf, 6), "n=12 ");
    fm_hparams_free(hp);

    ck_assert_str_eq(fm_hparam_type_name(FM_HP_BOOL), "bool");
    fm_plugin_release(p);
}
END_TEST

START_TEST(test_hparams_refused)
{
    fm_plugin *p = open_ok(TEST_PLUGIN("typed"));
    static const struct {
        const char *kv, *needle1, *needle2;
    } cases[] = {
        {"depth=3", "unknown hyper-parameter 'depth'", "declared: n, lr, bias, tag"},
        {"n=3x", "hyper-parameter n", "'3x' is not a valid int"},
        {"n=", "hyper-parameter n", "'' is not a valid int"},
        {"n=99999999999999999999", "hyper-parameter n", "not a valid int"},
        {"lr=fast", "hyper-parameter lr", "'fast' is not a valid float"},
        {"lr=nan", "hyper-parameter lr", "'nan' is not a valid float"},
        {"bias=maybe", "hyper-parameter bias", "'maybe' is not a valid bool"},
        {"n", "'n'", "expected key=value"},
        {"=3", "'=3'", "expected key=value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fm_error_clear();
        ck_assert_ptr_null(fm_hparams_new(p, &cases[i].kv, 1));
        ck_assert_int_eq(fm_error_status(), FM_ERR_ARG);
        assert_message_has(cases[i].needle1);
        assert_message_has(cases[i].needle2);
    }
    fm_plugin_release(p);
}
END_TEST

START_TEST(test_create_failure_keeps_message)
{
    fm_plugin *p = open_ok(TEST_PLUGIN("typed"));
    const char *loud[] = {"tag=fail"}, *silent[] = {"tag=fail_silently"};
    fm_hparams *hp = hparams_ok(p, loud, 1);
    ck_assert_ptr_null(fm_plugin_create_model(p, hp, 1));
    ck_assert_int_eq(fm_error_status(), FM_ERR_ARG);
    assert_message_has("typed: tag=fail: asked to fail");
    fm_hparams_free(hp);

    hp = hparams_ok(p, silent, 1);
    ck_assert_ptr_null(fm_plugin_create_model(p, hp, 1));
    ck_assert_int_eq(fm_error_status(), FM_ERR_PLUGIN);
    assert_message_has("create() failed");
    fm_hparams_free(hp);
    fm_plugin_release(p);
}
END_TEST

/* ---- exports through libffi ----------------------------------------------------- */

START_TEST(test_export_every_type)
{
    fm_plugin *p = open_ok(TEST_PLUGIN("typed"));
    const char *kv[] = {"tag=labelled"};
    fm_model *m = model_ok(p, kv, 1);
    ck_assert_int_eq(fm_plugin_export_find(p, "nope"), -1);

    fm_ffi_value a[6];
    a[0].i = -5, a[1].i = 2;
    ck_assert_int_eq(call(p, NULL, "add_i", a, 2).i, -3);
    a[0].l = (int64_t)1 << 40, a[1].l = -1;
    ck_assert(call(p, NULL, "add_l", a, 2).l == ((int64_t)1 << 40) - 1);
    a[0].f = 1.5f, a[1].f = -2.0f;
    ck_assert_float_eq(call(p, NULL, "mul_f", a, 2).f, -3.0f);
    a[0].d = 1e300, a[1].d = 0.125;  /* out of float range: passed as a double */
    ck_assert_double_eq(call(p, NULL, "mul_d", a, 2).d, 1.25e299);
    a[0].s = "abcd";
    ck_assert(call(p, NULL, "length", a, 1).l == 4);
    ck_assert_str_eq(call(p, m, "tag", a, 1).s, "labelled");
    call(p, m, "bump", a, 1);
    call(p, m, "bump", a, 1);
    ck_assert_int_eq(call(p, m, "calls", a, 1).i, 2);
    a[1].s = "world";
    ck_assert_str_eq(call(p, m, "greet", a, 2).s, "hello, world");
    a[0].i = 1, a[1].m = NULL, a[2].l = 10, a[3].f = 0.5f, a[4].d = 0.25, a[5].s = "abc";
    ck_assert_double_eq(call(p, m, "mix", a, 6).d, 1 + 3 + 10 + 0.5 + 0.25 + 3);

    /* ret may be NULL when the result is not wanted. */
    ck_assert_int_eq(fm_plugin_export_call(p, fm_plugin_export_find(p, "bump"), m, a, 1, NULL),
                     FM_OK);
    fm_model_free(m);
    fm_plugin_release(p);
}
END_TEST

START_TEST(test_export_refused)
{
    fm_plugin *p = open_ok(TEST_PLUGIN("typed"));
    fm_plugin *other = open_ok(TEST_PLUGIN("old_minor"));
    fm_model *m = model_ok(p, NULL, 0), *foreign = model_ok(other, NULL, 0);
    fm_ffi_value a[3] = {{.i = 1}, {.i = 2}, {.i = 3}}, r;

    ck_assert_int_eq(fm_plugin_export_call(p, fm_plugin_export_find(p, "add_i"), NULL, a, 1, &r),
                     FM_ERR_ARG);
    assert_message_has("typed.add_i expects 2 arguments (signature i(ii)), given 1");
    ck_assert_int_eq(fm_plugin_export_call(p, fm_plugin_export_find(p, "add_i"), NULL, a, 3, &r),
                     FM_ERR_ARG);
    assert_message_has("given 3");

    int tag = fm_plugin_export_find(p, "tag");
    ck_assert_int_eq(fm_plugin_export_call(p, tag, NULL, a, 1, &r), FM_ERR_ARG);
    assert_message_has("typed.tag takes a model");
    ck_assert_int_eq(fm_plugin_export_call(p, tag, foreign, a, 1, &r), FM_ERR_ARG);
    assert_message_has("not made by plugin typed");

    fm_ffi_value s[1] = {{.s = NULL}};
    ck_assert_int_eq(fm_plugin_export_call(p, fm_plugin_export_find(p, "length"), m, s, 1, &r),
                     FM_ERR_ARG);
    assert_message_has("typed.length: argument 1 is a string");

    fm_model_free(foreign);
    fm_model_free(m);
    fm_plugin_release(other);
    fm_plugin_release(p);
}
END_TEST

/* ---- the three model plugins ----------------------------------------------------- */

static void assert_names_in_order(const fm_model *m, const char *const *names, int n)
{
    ck_assert_int_eq(fm_model_count(m), n);
    for (int i = 0; i < n; i++)
        ck_assert_str_eq(fm_model_entry_at(m, i).name, names[i]);
}

START_TEST(test_mlp)
{
    fm_plugin *p = open_ok(MODEL_PLUGIN("mlp"));
    ck_assert_str_eq(fm_plugin_descriptor_of(p)->name, "mlp");
    fm_model *m = model_ok(p, NULL, 0);
    ck_assert_int_eq(fm_model_num_params(m), 235146);
    static const char *const names[] = {"fc1.weight", "fc1.bias", "fc2.weight",
                                        "fc2.bias",   "fc3.weight", "fc3.bias"};
    assert_names_in_order(m, names, 6);
    assert_entry(m, "fc1.weight", FM_F32, 2, (int[]){256, 784});
    assert_entry(m, "fc3.bias", FM_F32, 1, (int[]){10});
    assert_forward_gives_logits(m);

    fm_ffi_value a[2] = {{.m = NULL}, {.i = 1}};
    ck_assert_double_eq(call(p, m, "flops", a, 2).d, 2.0 * (784 * 256 + 256 * 128 + 128 * 10));
    ck_assert_str_eq(call(p, m, "describe", a, 1).s, "mlp: 784-256-128-10, ReLU, dropout 0.2");
    fm_model_free(m);

    const char *small[] = {"hidden1=64", "hidden2=32", "dropout=0"};
    m = model_ok(p, small, 3);
    ck_assert_int_eq(fm_model_num_params(m), 784 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10);
    assert_forward_gives_logits(m);
    fm_model_free(m);

    const char *bad[] = {"dropout=1"};
    fm_hparams *hp = hparams_ok(p, bad, 1);
    ck_assert_ptr_null(fm_plugin_create_model(p, hp, 1));
    assert_message_has("mlp: dropout=1: must be in [0, 1)");
    fm_hparams_free(hp);
    fm_plugin_release(p);
}
END_TEST

START_TEST(test_cnn)
{
    fm_plugin *p = open_ok(MODEL_PLUGIN("cnn"));
    fm_model *m = model_ok(p, NULL, 0);
    ck_assert_int_eq(fm_model_num_params(m), 421642);
    static const char *const names[] = {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                        "fc1.weight",   "fc1.bias",   "fc2.weight",   "fc2.bias"};
    assert_names_in_order(m, names, 8);
    assert_entry(m, "conv1.weight", FM_F32, 4, (int[]){32, 1, 3, 3});
    assert_entry(m, "conv2.weight", FM_F32, 4, (int[]){64, 32, 3, 3});
    assert_entry(m, "fc1.weight", FM_F32, 2, (int[]){128, 3136});
    assert_forward_gives_logits(m);

    fm_ffi_value a[2] = {{.m = NULL}, {.i = 2}};
    ck_assert_int_eq(call(p, m, "receptive_field", a, 1).i, 10);
    ck_assert_double_eq(call(p, m, "flops", a, 2).d,
                        2.0 * 2 * (28 * 28 * 32 * 9 + 14 * 14 * 64 * 288 + 3136 * 128 + 1280));
    ck_assert_ptr_nonnull(strstr(call(p, m, "describe", a, 1).s, "dropout 0.3"));
    fm_model_free(m);

    const char *bad[] = {"dropout=-0.1"};
    fm_hparams *hp = hparams_ok(p, bad, 1);
    ck_assert_ptr_null(fm_plugin_create_model(p, hp, 1));
    assert_message_has("dropout=-0.1");
    fm_hparams_free(hp);
    fm_plugin_release(p);
}
END_TEST

/* PyTorch's state_dict order for ResCNN(width, blocks). */
static int rescnn_names(char names[][64], int blocks)
{
    static const char *const bn[] = {"weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"};
    int n = 0;
    snprintf(names[n++], 64, "stem.0.weight");
    for (int k = 0; k < 5; k++) snprintf(names[n++], 64, "stem.1.%s", bn[k]);
    for (int i = 0; i < 3 * blocks; i++) {
        snprintf(names[n++], 64, "layers.%d.conv1.weight", i);
        for (int k = 0; k < 5; k++) snprintf(names[n++], 64, "layers.%d.bn1.%s", i, bn[k]);
        snprintf(names[n++], 64, "layers.%d.conv2.weight", i);
        for (int k = 0; k < 5; k++) snprintf(names[n++], 64, "layers.%d.bn2.%s", i, bn[k]);
        if (i > 0 && i % blocks == 0) {
            snprintf(names[n++], 64, "layers.%d.short.0.weight", i);
            for (int k = 0; k < 5; k++) snprintf(names[n++], 64, "layers.%d.short.1.%s", i, bn[k]);
        }
    }
    snprintf(names[n++], 64, "fc.weight");
    snprintf(names[n++], 64, "fc.bias");
    return n;
}

START_TEST(test_rescnn)
{
    fm_plugin *p = open_ok(MODEL_PLUGIN("rescnn"));
    fm_model *m = model_ok(p, NULL, 0);
    ck_assert_int_eq(fm_model_num_params(m), 308074);
    static char names[256][64];
    int n = rescnn_names(names, 1);
    ck_assert_int_eq(n, 56);  /* len(ResCNN().state_dict()) */
    ck_assert_int_eq(fm_model_count(m), n);
    for (int i = 0; i < n; i++) ck_assert_str_eq(fm_model_entry_at(m, i).name, names[i]);
    assert_entry(m, "layers.1.short.0.weight", FM_F32, 4, (int[]){64, 32, 1, 1});
    assert_entry(m, "stem.1.num_batches_tracked", FM_I64, 1, (int[]){1});
    assert_entry(m, "layers.2.conv1.weight", FM_F32, 4, (int[]){128, 64, 3, 3});
    assert_entry(m, "fc.weight", FM_F32, 2, (int[]){10, 128});
    ck_assert_ptr_null(fm_model_find(m, "layers.0.short.0.weight"));
    ck_assert(fm_model_entry_at(m, 3).is_buffer);  /* stem.1.running_mean */
    assert_forward_gives_logits(m);

    fm_ffi_value a[2] = {{.m = NULL}, {.i = 1}};
    ck_assert_int_eq(call(p, m, "receptive_field", a, 1).i, 25);
    double flops = call(p, m, "flops", a, 2).d;
    ck_assert_msg(flops > 2 * 28.0 * 28 * 32 * 9 && flops < 1e8, "flops %g", flops);
    ck_assert_str_eq(call(p, m, "describe", a, 1).s,
                     "rescnn: width 32, 1 block per stage (32, 64, 128 channels), global avg pool, fc");
    fm_model_free(m);
    fm_plugin_release(p);
}
END_TEST

START_TEST(test_rescnn_hparams)
{
    fm_plugin *p = open_ok(MODEL_PLUGIN("rescnn"));
    const char *big[] = {"width=64", "blocks=2"};
    fm_model *m = model_ok(p, big, 2);
    ck_assert_int_eq(fm_model_num_params(m), 2776522);  /* ResCNN(64, 2) in PyTorch */
    static char names[256][64];
    int n = rescnn_names(names, 2);
    ck_assert_int_eq(fm_model_count(m), n);
    for (int i = 0; i < n; i++) ck_assert_str_eq(fm_model_entry_at(m, i).name, names[i]);
    ck_assert_ptr_nonnull(fm_model_find(m, "layers.5.bn2.weight"));
    ck_assert_ptr_null(fm_model_find(m, "layers.6.conv1.weight"));
    assert_entry(m, "layers.4.short.0.weight", FM_F32, 4, (int[]){256, 128, 1, 1});
    assert_entry(m, "fc.weight", FM_F32, 2, (int[]){10, 256});
    fm_model_free(m);

    static const struct {
        const char *kv, *needle;
    } bad[] = {{"width=0", "rescnn: width=0: must be in [1, 1024]"},
               {"blocks=0", "rescnn: blocks=0: must be in [1, 64]"},
               {"width=-3", "width=-3"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fm_hparams *hp = hparams_ok(p, &bad[i].kv, 1);
        ck_assert_ptr_null(fm_plugin_create_model(p, hp, 1));
        ck_assert_int_eq(fm_error_status(), FM_ERR_ARG);
        assert_message_has(bad[i].needle);
        fm_hparams_free(hp);
    }
    const char *typo[] = {"widht=64"};
    ck_assert_ptr_null(fm_hparams_new(p, typo, 1));
    assert_message_has("unknown hyper-parameter 'widht' for plugin rescnn (declared: width, blocks)");
    fm_plugin_release(p);
}
END_TEST

/* A model made from the same seed is the same model. */
START_TEST(test_seeded_init)
{
    fm_plugin *p = open_ok(MODEL_PLUGIN("cnn"));
    fm_model *a = model_ok(p, NULL, 0), *b = model_ok(p, NULL, 0);
    fm_tensor *wa = fm_model_find(a, "fc1.weight"), *wb = fm_model_find(b, "fc1.weight");
    ck_assert_mem_eq(wa->data, wb->data, (size_t)wa->numel * sizeof(float));
    float bound = 1.0f / sqrtf(3136.0f), lo = 1, hi = -1;
    for (int64_t i = 0; i < wa->numel; i++) {
        lo = fminf(lo, wa->data[i]);
        hi = fmaxf(hi, wa->data[i]);
    }
    ck_assert(lo >= -bound && hi <= bound && hi - lo > bound);
    fm_model_free(a);
    fm_model_free(b);
    fm_plugin_release(p);
}
END_TEST

static Suite *plugin_suite(void)
{
    Suite *s = suite_create("plugin");
    TCase *load = tcase_create("loader");
    tcase_add_test(load, test_missing_file);
    tcase_add_test(load, test_not_elf);
    tcase_add_test(load, test_elf_object_file);
    tcase_add_test(load, test_directory);
    tcase_add_test(load, test_bare_name_in_cwd);
    tcase_add_loop_test(load, test_forward_result_checked, 0, 2);
    tcase_add_test(load, test_broken_plugins);
    tcase_add_test(load, test_old_minor_loads);
    tcase_add_test(load, test_refcount_keeps_loaded);
    tcase_add_test(load, test_resolve);
    suite_add_tcase(s, load);

    TCase *hp = tcase_create("hparams");
    tcase_add_test(hp, test_hparams_defaults_and_overrides);
    tcase_add_test(hp, test_hparams_refused);
    tcase_add_test(hp, test_create_failure_keeps_message);
    suite_add_tcase(s, hp);

    TCase *ffi = tcase_create("exports");
    tcase_add_test(ffi, test_export_every_type);
    tcase_add_test(ffi, test_export_refused);
    suite_add_tcase(s, ffi);

    TCase *models = tcase_create("models");
    tcase_add_test(models, test_mlp);
    tcase_add_test(models, test_cnn);
    tcase_add_test(models, test_rescnn);
    tcase_add_test(models, test_rescnn_hparams);
    tcase_add_test(models, test_seeded_init);
    suite_add_tcase(s, models);
    return s;
}

int main(void) { return fm_test_run(plugin_suite()); }
