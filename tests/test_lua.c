/* test_lua — the embedded interpreter and the fm module: every fm function,
 * calls of plugin exports through libffi for every argument and return
 * type, type mismatches, script errors with their line, and training
 * callbacks (on a tiny generated dataset and a one-layer plugin compiled by
 * the fixture, so the test depends on nothing but the core). */
#define _GNU_SOURCE
#include <check.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm_test_util.h"
#include "../core/lua/fm_lua.h"

/* fm.plot and the run reports draw with PLplot's cairo driver, whose Pango
 * font map and fontconfig caches live until the process ends (a fixed
 * amount, not a leak of ours): LeakSanitizer skips them under FM_SANITIZE. */
const char *__lsan_default_suppressions(void);
__attribute__((used)) const char *__lsan_default_suppressions(void)
{
    return "leak:libfontconfig.so\nleak:libpango\n";
}

/* ---- fixture: a plugin with one export per type, and a tiny dataset --------- */

static char g_root[4096];    /* removed by the teardown */
static char g_plugin[4200];  /* ffitest.so */
static char g_data[4200];    /* four IDX files */

static const char plugin_source[] =
    "#include <ctype.h>\n"
    "#include <stdlib.h>\n"
    "#include <string.h>\n"
    "#include <fm/fm_plugin.h>\n"
    "typedef struct ffit { fm_linear_layer fc; int64_t scale; char upper[64]; } ffit;\n"
    "static void *ffit_create(fm_model *m, const fm_hparams *hp) {\n"
    "    ffit *s = calloc(1, sizeof *s);\n"
    "    s->fc = fm_nn_linear_new(m, \"fc\", 784, 10, true);\n"
    "    s->scale = fm_hparams_int(hp, \"scale\");\n"
    "    return s;\n"
    "}\n"
    "static fm_tensor *ffit_forward(void *self, fm_graph *g, fm_tensor *x) {\n"
    "    return fm_nn_linear(g, &((ffit *)self)->fc, fm_flatten(g, x));\n"
    "}\n"
    "static void ffit_destroy(void *self) { free(self); }\n"
    "static int32_t add_i(int32_t a, int32_t b) { return a + b; }\n"
    "static int64_t add_l(int64_t a, int64_t b) { return a + b; }\n"
    "static float half_f(float x) { return x * 0.5f; }\n"
    "static double mul_d(double a, double b) { return a * b; }\n"
    "static char upper[64];\n"
    "static const char *upper_s(const char *s) {\n"
    "    size_t i = 0;\n"
    "    for (; s[i] && i < sizeof upper - 1; i++) upper[i] = (char)toupper((unsigned char)s[i]);\n"
    "    upper[i] = 0;\n"
    "    return upper;\n"
    "}\n"
    "static int32_t len_i(const char *s) { return (int32_t)strlen(s); }\n"
    "static const char *null_s(void) { return NULL; }\n"
    "static int32_t counter;\n"
    "static void bump_v(int32_t by) { counter += by; }\n"
    "static int32_t counter_i(void) { return counter; }\n"
    "static int64_t scale_l(void *self, int64_t v) { return ((ffit *)self)->scale * v; }\n"
    "static double mix_d(int32_t i, int64_t l, float f, double d, const char *s) {\n"
    "    return i + (double)l + f + d + (double)strlen(s);\n"
    "}\n"
    "static const fm_hparam_decl hps[] = {{\"scale\", FM_HP_INT, \"3\", \"multiplier\"},\n"
    "    {\"rate\", FM_HP_FLOAT, \"0.5\", \"a float\"}, {\"on\", FM_HP_BOOL, \"true\", \"a bool\"}};\n"
    "static const fm_export_decl exps[] = {\n"
    "    {\"add_i\", \"i(ii)\", (void (*)(void))add_i, \"int sum\"},\n"
    "    {\"add_l\", \"l(ll)\", (void (*)(void))add_l, \"int64 sum\"},\n"
    "    {\"half_f\", \"f(f)\", (void (*)(void))half_f, \"float half\"},\n"
    "    {\"mul_d\", \"d(dd)\", (void (*)(void))mul_d, \"double product\"},\n"
    "    {\"upper_s\", \"s(s)\", (void (*)(void))upper_s, \"upper case\"},\n"
    "    {\"len_i\", \"i(s)\", (void (*)(void))len_i, \"length\"},\n"
    "    {\"null_s\", \"s()\", (void (*)(void))null_s, \"NULL\"},\n"
    "    {\"bump_v\", \"v(i)\", (void (*)(void))bump_v, \"counter += by\"},\n"
    "    {\"counter_i\", \"i()\", (void (*)(void))counter_i, \"counter\"},\n"
    "    {\"scale_l\", \"l(ml)\", (void (*)(void))scale_l, \"scale * v\"},\n"
    "    {\"mix_d\", \"d(ilfds)\", (void (*)(void))mix_d, \"every type\"},\n"
    "};\n"
    "static const fm_plugin_desc desc = {\n"
    "    .abi_version = FM_PLUGIN_ABI_VERSION, .struct_size = sizeof(fm_plugin_desc),\n"
    "    .name = \"ffitest\", .description = \"one linear layer and typed exports\",\n"
    "    .hparams = hps, .n_hparams = 3, .create = ffit_create, .forward = ffit_forward,\n"
    "    .destroy = ffit_destroy, .exports = exps, .n_exports = 11,\n"
    "};\n"
    "FM_PLUGIN_EXPORT const fm_plugin_desc *fm_plugin_descriptor(void) { return &desc; }\n";

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* IDX files (plain bytes: the reader's gzopen reads them transparently).
 * Class k is a bright 6x6 square at a position of its own plus noise, so a
 * linear model learns it within an epoch or two. */
static void write_split(const char *images_name, const char *labels_name, int n, uint64_t seed)
{
    size_t isize = 16 + (size_t)n * 784, lsize = 8 + (size_t)n;
    unsigned char *img = calloc(1, isize), *lab = calloc(1, lsize);
    put_be32(img, 0x803);
    put_be32(img + 4, (uint32_t)n);
    put_be32(img + 8, 28);
    put_be32(img + 12, 28);
    put_be32(lab, 0x801);
    put_be32(lab + 4, (uint32_t)n);
    fm_rng rng;
    fm_rng_seed(&rng, seed, FM_RNG_TEST);
    for (int i = 0; i < n; i++) {
        int k = i % 10;
        unsigned char *px = img + 16 + (size_t)i * 784;
        for (int p = 0; p < 784; p++) px[p] = (unsigned char)fm_rng_below(&rng, 60);
        int r0 = 2 + (k / 5) * 12, c0 = 1 + (k % 5) * 5;
        for (int r = r0; r < r0 + 6; r++)
            for (int c = c0; c < c0 + 6 && c < 28; c++) px[r * 28 + c] = 250;
        lab[8 + i] = (unsigned char)k;
    }
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", g_data, images_name);
    fm_test_write_file(path, img, isize);
    snprintf(path, sizeof path, "%s/%s", g_data, labels_name);
    fm_test_write_file(path, lab, lsize);
    free(img);
    free(lab);
}

static void fixture_setup(void)
{
    snprintf(g_root, sizeof g_root, "%s", fm_test_tmpdir());
    char src[4400], cmd[16384];
    snprintf(src, sizeof src, "%s/ffitest.c", g_root);
    fm_test_write_file(src, plugin_source, strlen(plugin_source));
    snprintf(g_plugin, sizeof g_plugin, "%s/ffitest.so", g_root);
    const char *cc = getenv("CC");
    snprintf(cmd, sizeof cmd, "%s -std=gnu11 -O1 -shared -fPIC -I'%s/core/include' -o '%s' '%s'",
             cc && *cc ? cc : "cc", FM_SOURCE_DIR, g_plugin, src);
    ck_assert_msg(system(cmd) == 0, "cannot build the test plugin: %s", cmd);

    snprintf(g_data, sizeof g_data, "%s/data", g_root);
    ck_assert_int_eq(mkdir(g_data, 0777), 0);
    write_split("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 400, 1);
    write_split("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 100, 2);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void fixture_teardown(void)
{
    if (g_root[0]) nftw(g_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- helpers ------------------------------------------------------------------ */

/* A fresh interpreter with the globals PLUGIN, DATA and TMP (an empty
 * directory of this test's own). */
static lua_State *new_state(void)
{
    lua_State *L = fm_lua_new();
    ck_assert_ptr_nonnull(L);
    char tmp[4400];
    snprintf(tmp, sizeof tmp, "%s/t.XXXXXX", g_root);
    ck_assert_ptr_nonnull(mkdtemp(tmp));
    lua_pushstring(L, g_plugin);
    lua_setglobal(L, "PLUGIN");
    lua_pushstring(L, g_data);
    lua_setglobal(L, "DATA");
    lua_pushstring(L, tmp);
    lua_setglobal(L, "TMP");
    return L;
}

static void run_ok(lua_State *L, const char *code)
{
    fm_status st = fm_lua_run_string(L, code, "=test");
    ck_assert_msg(st == FM_OK, "script failed: %s", fm_error_message());
}

/* Runs code that must fail with a message containing each of the needles. */
static void run_fails(lua_State *L, const char *code, const char *needle1, const char *needle2)
{
    fm_status st = fm_lua_run_string(L, code, "=test");
    ck_assert_msg(st == FM_ERR_SCRIPT, "script should have failed: %s", code);
    const char *msg = fm_error_message();
    ck_assert_msg(strstr(msg, needle1), "message lacks '%s': %s", needle1, msg);
    if (needle2) ck_assert_msg(strstr(msg, needle2), "message lacks '%s': %s", needle2, msg);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* ---- the module ------------------------------------------------------------------ */

START_TEST(test_fm_preloaded)
{
    lua_State *L = new_state();
    run_ok(L, "assert(type(package.preload.fm) == 'function')\n"
              "local fm = require 'fm'\n"
              "assert(require 'fm' == fm)\n"
              "assert(fm.version:match('^%d+%.%d+%.%d+$'), fm.version)\n"
              "assert(#fm.class_names == 10 and fm.class_names[1] == 'T-shirt/top'\n"
              "       and fm.class_names[10] == 'Ankle boot')\n"
              "for _, f in ipairs{'plugin', 'dataset', 'train', 'table', 'write_csv',\n"
              "                   'write_markdown', 'plot', 'mkdir', 'now', 'kernels'} do\n"
              "  assert(type(fm[f]) == 'function', f)\n"
              "end\n"
              "assert(type(fm.args) == 'table' and next(fm.args) == nil)\n"
              "local t0 = fm.now(); assert(type(t0) == 'number' and fm.now() >= t0)\n");
    fm_lua_free(L);
}
END_TEST

START_TEST(test_args_parsed)
{
    lua_State *L = new_state();
    char *argv[] = {"epochs=3", "models=mlp,cnn", "lr=1e-3", "quick=true", "plain", "2x=1",
                    "empty="};
    fm_lua_set_args(L, "scripts/x.lua", 7, argv);
    run_ok(L, "local fm = require 'fm'\n"
              "assert(arg[0] == 'scripts/x.lua' and #arg == 7 and arg[5] == 'plain')\n"
              "assert(fm.args.epochs == 3 and math.type(fm.args.epochs) == 'integer')\n"
              "assert(fm.args.models == 'mlp,cnn')\n"
              "assert(fm.args.lr == 0.001 and math.type(fm.args.lr) == 'float')\n"
              "assert(fm.args.quick == true)\n"
              "assert(fm.args.plain == nil and fm.args['2x'] == nil)\n"
              "assert(fm.args.empty == '')\n");
    /* Arguments set after the module was loaded reach fm.args too. */
    char *again[] = {"epochs=5"};
    fm_lua_set_args(L, "y.lua", 1, again);
    run_ok(L, "assert(require('fm').args.epochs == 5 and arg[0] == 'y.lua')");
    fm_lua_free(L);
}
END_TEST

/* ---- plugins and libffi ----------------------------------------------------------- */

START_TEST(test_plugin_fields)
{
    lua_State *L = new_state();
    run_ok(L, "local fm = require 'fm'\n"
              "local p = fm.plugin(PLUGIN)\n"
              "assert(p.name == 'ffitest' and p.path == PLUGIN)\n"
              "assert(p.description == 'one linear layer and typed exports')\n"
              "assert(p.hparams.scale.type == 'int' and p.hparams.scale.default == 3)\n"
              "assert(math.type(p.hparams.scale.default) == 'integer')\n"
              "assert(p.hparams.rate.type == 'float' and p.hparams.rate.default == 0.5)\n"
              "assert(p.hparams.on.default == true and p.hparams.on.index == 3)\n"
              "assert(p.hparams.scale.help == 'multiplier')\n"
              "assert(p.exports.mix_d.signature == 'd(ilfds)')\n"
              "assert(p.exports.scale_l.help == 'scale * v')\n"
              "local n = 0; for _ in pairs(p.exports) do n = n + 1 end; assert(n == 11)\n"
              "assert(tostring(p):find('fm.plugin ffitest', 1, true))\n"
              "assert(p.nonsense == nil)\n");
    fm_lua_free(L);
}
END_TEST

START_TEST(test_plugin_refused)
{
    lua_State *L = new_state();
    run_fails(L, "require('fm').plugin(TMP .. '/nothere.so')", "fm.plugin:", "nothere.so");
    run_fails(L, "local f = io.open(TMP .. '/text.so', 'w'); f:write('not elf'); f:close()\n"
                 "require('fm').plugin(TMP .. '/text.so')",
              "test:2:", "not a shared object");
    run_fails(L, "require('fm').plugin('no_such_model')", "not found", "no_such_model");
    fm_lua_free(L);
}
END_TEST

START_TEST(test_ffi_every_type)
{
    lua_State *L = new_state();
    run_ok(L, "local p = require('fm').plugin(PLUGIN)\n"
              "local r = p:call('add_i', -5, 3)\n"
              "assert(r == -2 and math.type(r) == 'integer')\n"
              "assert(p:call('add_i', 2147483647, 0) == 2147483647)\n"
              "assert(p:call('add_i', 4.0, 1) == 5)\n"
              "r = p:call('add_l', 1 << 40, 1 << 41)\n"
              "assert(r == 3 << 40 and math.type(r) == 'integer')\n"
              "assert(p:call('add_l', math.maxinteger, 0) == math.maxinteger)\n"
              "r = p:call('half_f', 3)\n"
              "assert(r == 1.5 and math.type(r) == 'float')\n"
              "assert(math.abs(p:call('half_f', 0.1) - 0.05) < 1e-8)\n"
              "r = p:call('mul_d', 0.1, 3)\n"
              "assert(r == 0.1 * 3 and math.type(r) == 'float')\n"
              "assert(p:call('upper_s', 'relu') == 'RELU')\n"
              "assert(p:call('len_i', '') == 0 and p:call('len_i', 'héllo') == 6)\n"
              "assert(p:call('null_s') == nil and select('#', p:call('null_s')) == 1)\n"
              "local before = p:call('counter_i')\n"
              "assert(select('#', p:call('bump_v', 7)) == 0)\n"
              "assert(p:call('counter_i') == before + 7)\n"
              "assert(p:call('mix_d', 1, 2, 0.5, 0.25, 'abc') == 6.75)\n");
    fm_lua_free(L);
}
END_TEST

START_TEST(test_ffi_model_argument)
{
    lua_State *L = new_state();
    run_ok(L, "local fm = require 'fm'\n"
              "local p = fm.plugin(PLUGIN)\n"
              "local m = p:model{scale = 5}\n"
              "assert(m.name == 'ffitest' and m.params == 7850 and m.plugin == p)\n"
              "assert(m.hparams == 'scale=5 rate=0.5 on=true', m.hparams)\n"
              "assert(m:call('scale_l', 7) == 35)\n"
              "assert(p:call('scale_l', m, 7) == 35)\n"
              "assert(p:model({scale = 2.0}):call('scale_l', 1) == 2)\n"
              "assert(p:model({rate = 0.3, on = false}).hparams == 'scale=3 rate=0.3 on=false')\n"
              /* A model keeps its plugin alive and usable. */
              "local m2 = fm.plugin(PLUGIN):model()\n"
              "collectgarbage(); collectgarbage()\n"
              "assert(m2:call('scale_l', 2) == 6)\n"
              "m2.plugin:close()\n"
              "assert(m2:call('scale_l', 2) == 6)\n"
              /* A model made by another instance of the plugin is refused. */
              "local other = fm.plugin(PLUGIN)\n"
              "local ok, err = pcall(other.call, other, 'scale_l', m, 1)\n"
              "assert(not ok and err:find('was not made by plugin ffitest', 1, true), err)\n");
    run_fails(L, "require('fm').plugin(PLUGIN):model{scale = 'big'}", "scale", "big");
    run_fails(L, "require('fm').plugin(PLUGIN):model{width = 3}", "width", NULL);
    fm_lua_free(L);
}
END_TEST

START_TEST(test_ffi_type_mismatch)
{
    lua_State *L = new_state();
    run_ok(L, "p = require('fm').plugin(PLUGIN)\n");
    run_fails(L, "p:call('add_i', 1, '2')",
              "test:1: bad argument #2 to 'add_i' (integer expected, got string)", NULL);
    run_fails(L, "\np:call('add_i', 1, 2.5)",
              "test:2: bad argument #2 to 'add_i' (number has no integer representation)", NULL);
    run_fails(L, "p:call('add_i', 1 << 31, 0)", "bad argument #1 to 'add_i'", "32-bit int");
    run_fails(L, "p:call('add_l', nil, 0)", "bad argument #1 to 'add_l' (integer expected, got nil)",
              NULL);
    run_fails(L, "p:call('mul_d', 1, true)", "bad argument #2 to 'mul_d' (number expected, got boolean)",
              NULL);
    run_fails(L, "p:call('half_f', '1.5')", "bad argument #1 to 'half_f' (number expected, got string)",
              NULL);
    run_fails(L, "p:call('upper_s', 5)", "bad argument #1 to 'upper_s' (string expected, got number)",
              NULL);
    run_fails(L, "p:call('upper_s', 'a\\0b')", "bad argument #1 to 'upper_s'", "zero byte");
    run_fails(L, "p:call('scale_l', p, 1)",
              "bad argument #1 to 'scale_l' (model expected, got fm.plugin)", NULL);
    run_fails(L, "p:call('mix_d', 1, 2, 0.5, 0.25, {})",
              "bad argument #5 to 'mix_d' (string expected, got table)", NULL);
    run_fails(L, "p:call('add_i', 1)", "'add_i' takes 2 arguments (signature i(ii)), got 1", NULL);
    run_fails(L, "p:call('add_i', 1, 2, 3)", "got 3", NULL);
    run_fails(L, "p:model():call('scale_l')", "'scale_l' takes 1 argument", "model is passed");
    run_fails(L, "p:call('nope')", "plugin ffitest has no export 'nope'", "add_i i(ii)");
    fm_lua_free(L);
}
END_TEST

/* ---- errors and the entry point ---------------------------------------------------------- */

START_TEST(test_script_error_has_line)
{
    lua_State *L = new_state();
    run_fails(L, "local x = 1\nlocal function f() error('boom') end\nf()\n", "test:2: boom",
              "stack traceback:");
    ck_assert_ptr_nonnull(strstr(fm_error_message(), "test:3:"));
    run_fails(L, "local x = \n\n  = 3", "test:3:", NULL);  /* a syntax error */
    run_fails(L, "local t = nil\nreturn t.field", "test:2: attempt to index a nil value", NULL);
    run_fails(L, "error({})", "(error object is a table value)", NULL);

    /* From a file: the message names it. */
    run_ok(L, "local f = assert(io.open(TMP .. '/bad.lua', 'w'))\n"
              "f:write('local fm = require \"fm\"\\n', 'fm.table(42)\\n'); f:close()");
    lua_getglobal(L, "TMP");
    char path[4400];
    snprintf(path, sizeof path, "%s/bad.lua", lua_tostring(L, -1));
    lua_pop(L, 1);
    ck_assert_int_eq(fm_lua_run_file(L, path), FM_ERR_SCRIPT);
    ck_assert_msg(strstr(fm_error_message(), "bad.lua:2:"), "%s", fm_error_message());
    ck_assert_ptr_nonnull(strstr(fm_error_message(), "table expected"));
    /* The state is still usable after errors. */
    run_ok(L, "assert(require('fm').table({{a = 1}}))");
    fm_lua_free(L);
}
END_TEST

START_TEST(test_main_exit_status)
{
    char dir[4400], good[4500], bad[4500], out[4500];
    snprintf(dir, sizeof dir, "%s/main.XXXXXX", g_root);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(good, sizeof good, "%s/good.lua", dir);
    snprintf(bad, sizeof bad, "%s/bad.lua", dir);
    snprintf(out, sizeof out, "%s/out.md", dir);
    const char *good_src = "local fm = require 'fm'\n"
                           "local n = select('#', ...)\n"
                           "fm.write_markdown(fm.args.out, {'# ' .. fm.args.title, tostring(n)})\n";
    const char *bad_src = "local fm = require 'fm'\n\nfm.dataset{dir = '/nonexistent/fm'}\n";
    fm_test_write_file(good, good_src, strlen(good_src));
    fm_test_write_file(bad, bad_src, strlen(bad_src));

    char out_arg[4600];
    snprintf(out_arg, sizeof out_arg, "out=%s", out);
    char *argv[] = {out_arg, "title=hello"};
    ck_assert_int_eq(fm_lua_main(good, 2, argv), 0);
    ck_assert_str_eq(read_text(out), "# hello\n2\n");
    ck_assert_int_eq(fm_lua_main(bad, 0, NULL), 1);  /* message: bad.lua:3: fm.dataset: ... */
    char missing[4500];
    snprintf(missing, sizeof missing, "%s/missing.lua", dir);
    ck_assert_int_eq(fm_lua_main(missing, 0, NULL), 1);
}
END_TEST

/* ---- tables and files ------------------------------------------------------------------------- */

START_TEST(test_table_markdown)
{
    lua_State *L = new_state();
    run_ok(L, "local fm = require 'fm'\n"
              "local rows = {{model = 'mlp', acc = 0.88712, params = 235146, note = 'a|b'},\n"
              "              {model = 'rescnn', acc = 0.9, params = 3}}\n"
              "local t = fm.table(rows, {'model', {'params', 'parameters'},\n"
              "  {key = 'acc', title = 'test acc', format = '%.3f'}, 'note',\n"
              "  {key = 'acc', title = 'pct', format = function(v, row)\n"
              "     return string.format('%.1f%% %s', 100 * v, row.model) end}})\n"
              "local want = '| model  | parameters | test acc | note | pct          |\\n'\n"
              "          .. '|:-------|-----------:|---------:|:-----|-------------:|\\n'\n"
              "          .. '| mlp    |     235146 |    0.887 | a\\\\|b |    88.7% mlp |\\n'\n"
              "          .. '| rescnn |          3 |    0.900 |      | 90.0% rescnn |\\n'\n"
              "assert(t == want, '\\n' .. t)\n"
              /* No columns: every key of the first row, sorted; default number formats. */
              "t = fm.table({{b = 1.23456, a = 'x', c = true}})\n"
              "assert(t == '| a   | b     | c    |\\n|:----|------:|:-----|\\n| x   | 1.235 | true |\\n', t)\n"
              /* UTF-8 counts one column per character. */
              "t = fm.table({{v = '0.91 ± 0.01'}, {v = 'x'}}, {'v'})\n"
              "assert(t:find('| x           |', 1, true), t)\n"
              "assert(fm.table({}, {'a'}) == '| a   |\\n|:----|\\n')\n");
    run_fails(L, "require('fm').table({{a = 1}, 5}, {'a'})", "fm.table: row 2 must be a table", NULL);
    run_fails(L, "require('fm').table({{a = 1}}, {{title = 'x'}})", "column 1 has no key", NULL);
    run_fails(L, "require('fm').table({{a = 1}}, {{'a', 'A', 5}})", "format must be a string", NULL);
    run_fails(L, "require('fm').table({{a = 1}}, {{'a', 'A', function() error('in fmt') end}})",
              "in fmt", NULL);
    fm_lua_free(L);
}
END_TEST

START_TEST(test_write_csv_and_markdown)
{
    lua_State *L = new_state();
    run_ok(L, "local fm = require 'fm'\n"
              "local path = TMP .. '/sub/dir/r.csv'\n"
              "assert(fm.write_csv(path, {{model = 'a,b', acc = 0.5, n = 3, q = 'say \"hi\"'},\n"
              "                           {model = 'c', acc = 1/3}}, {'model', 'acc', 'n', 'q'}) == path)\n"
              "local text = io.open(path):read('a')\n"
              "assert(text == 'model,acc,n,q\\n\"a,b\",0.5,3,\"say \"\"hi\"\"\"\\nc,0.3333333333,,\\n', text)\n"
              "fm.write_markdown(TMP .. '/a.md', '# title')\n"
              "assert(io.open(TMP .. '/a.md'):read('a') == '# title\\n')\n"
              "fm.write_markdown(TMP .. '/b.md', {'# t', '', fm.table({{x = 1}})})\n"
              "assert(io.open(TMP .. '/b.md'):read('a') == '# t\\n\\n| x   |\\n|----:|\\n|   1 |\\n\\n')\n"
              "assert(fm.mkdir(TMP .. '/m/n') == TMP .. '/m/n')\n"
              "fm.write_markdown(TMP .. '/m/n/c.md', 'in a made directory')\n");
    /* A failed write leaves the older file whole. */
    run_ok(L, "local fm = require 'fm'\n"
              "fm.write_csv(TMP .. '/keep.csv', {{a = 1}}, {'a'})\n"
              "fm.write_markdown(TMP .. '/keep.md', 'old')\n"
              "assert(not pcall(fm.write_csv, TMP .. '/keep.csv', {{a = 2}, 'bad'}, {'a'}))\n"
              "assert(not pcall(fm.write_markdown, TMP .. '/keep.md', {'x', {}}))\n"
              "assert(io.open(TMP .. '/keep.csv'):read('a') == 'a\\n1\\n')\n"
              "assert(io.open(TMP .. '/keep.md'):read('a') == 'old\\n')\n");
    run_fails(L, "local fm = require 'fm'\n"
                 "fm.write_markdown(TMP .. '/file', 'x')\n"
                 "fm.write_csv(TMP .. '/file/below.csv', {}, {'a'})",
              "test:3: fm.write_csv:", "file");
    fm_lua_free(L);
}
END_TEST

START_TEST(test_plot)
{
    lua_State *L = new_state();
    run_ok(L, "local fm = require 'fm'\n"
              "local file = TMP .. '/plots/curves.png'\n"
              "assert(fm.plot{file = file, title = 'val acc', ylabel = 'accuracy',\n"
              "  series = {{name = 'mlp', y = {0.8, 0.85, 0.87}}, {'cnn', {0.82, 0.9}}}} == file)\n"
              "local png = io.open(file, 'rb'):read('a')\n"
              "assert(png:sub(1, 8) == '\\137PNG\\r\\n\\26\\n' and #png > 1000)\n"
              "fm.plot{file = TMP .. '/x.png', x = {0, 10, 20}, mark = 10,\n"
              "        series = {{name = 'a', y = {1, 2, 3}}}}\n"
              "assert(io.open(TMP .. '/x.png', 'rb'):read(4) == '\\137PNG')\n");
    run_fails(L, "require('fm').plot{series = {{name = 'a', y = {1}}}}", "option 'file'", NULL);
    run_fails(L, "require('fm').plot{file = TMP .. '/e.png', series = {}}", "empty", NULL);
    run_fails(L, "require('fm').plot{file = TMP .. '/e.png', series = {{name = 'a', y = {1, 'x'}}}}",
              "series 1, value 2 must be a number", NULL);
    run_fails(L, "require('fm').plot{file = TMP .. '/e.png', series = {{y = {1}}}}", "needs a name",
              NULL);
    run_fails(L, "require('fm').plot{file = TMP .. '/e.png', colour = 1, series = {}}",
              "unknown option 'colour'", NULL);
    fm_lua_free(L);
}
END_TEST

/* ---- datasets and training --------------------------------------------------------------- */

START_TEST(test_dataset)
{
    lua_State *L = new_state();
    run_ok(L, "local fm = require 'fm'\n"
              "local d = fm.dataset{dir = DATA, val_split = 0.2, seed = 7, limit = 100, augment = true}\n"
              "assert(d.dir == DATA and d.train_size == 400 and d.test_size == 100)\n"
              "assert(d.val_split == 0.2 and d.seed == 7 and d.limit == 100 and d.augment == true)\n"
              "assert(tostring(d):find('400 train', 1, true))\n"
              "d:close(); d:close()\n"
              "assert(d.dir == nil and tostring(d) == 'fm.dataset (closed)')\n");
    run_fails(L, "require('fm').dataset{dir = TMP}", "fm.dataset:", NULL);
    run_fails(L, "require('fm').dataset{dir = DATA, val_split = 1.5}", "val_split", "(0, 1)");
    run_fails(L, "require('fm').dataset{dir = DATA, limt = 5}", "unknown option 'limt'",
              "did you mean 'limit'");
    run_fails(L, "require('fm').dataset{dir = DATA, seed = -1}", "'seed'", NULL);
    fm_lua_free(L);
}
END_TEST

START_TEST(test_train_run_object)
{
    lua_State *L = new_state();
    run_ok(L, "local fm = require 'fm'\n"
              "local data = fm.dataset{dir = DATA}\n"
              "local run = fm.train{plugin = PLUGIN, data = data, epochs = 3, out = TMP,\n"
              "                     quiet = true, set = {scale = 4}, lr = 0.01, seed = 3}\n"
              "assert(run.name == 'ffitest' and run.epochs == 3 and #run.history == 3)\n"
              "assert(run.best_epoch >= 1 and run.best_epoch <= 3)\n"
              "assert(run.best.epoch == run.best_epoch)\n"
              "assert(run.params == 7850 and run.hparams == 'scale=4 rate=0.5 on=true')\n"
              "assert(run.plugin.name == 'ffitest' and run.data == data)\n"
              "assert(run.seconds > 0)\n"
              "for i, m in ipairs(run.history) do\n"
              "  assert(m.epoch == i and math.abs(m.lr - 0.01) < 1e-7)\n"
              "  assert(m.val_acc >= 0 and m.val_acc <= 1 and m.train_loss > 0 and m.seconds >= 0)\n"
              "end\n"
              "assert(run.history[3].val_acc > 0.5, 'a linear model learns the squares')\n"
              "assert(run.checkpoint == TMP .. '/artifacts/ffitest_best.safetensors')\n"
              "assert(run.results_dir == TMP .. '/results/ffitest')\n"
              "for _, f in ipairs{'metrics.csv', 'classification_report.txt', 'acc.png'} do\n"
              "  assert(io.open(run.results_dir .. '/' .. f), f)\n"
              "end\n"
              "local test = run:evaluate('test')\n"
              "assert(test.split == 'test' and test.n == 100 and test.acc > 0.5)\n"
              "local n = 0; for t = 1, 10 do for q = 1, 10 do n = n + test.confusion[t][q] end end\n"
              "assert(n == 100)\n"
              "assert(run:evaluate().acc == test.acc)\n"
              "local val = run:evaluate('val')\n"
              "assert(val.n == 40 and math.abs(val.acc - run.best.val_acc) < 1e-12)\n"
              "assert(run:evaluate('train').n == 360)\n"
              "assert(run:save(TMP .. '/w/again.safetensors') == TMP .. '/w/again.safetensors')\n"
              "assert(io.open(TMP .. '/w/again.safetensors', 'rb'):read(8))\n"
              "assert(run:call('scale_l', 5) == 20)\n"
              "assert(run.plugin:call('scale_l', run, 5) == 20)\n"
              "assert(run:report() == run.results_dir)\n"
              "assert(tostring(run):find('fm.run ffitest', 1, true))\n"
              "run:close(); run:close()\n"
              "assert(run.epochs == nil and tostring(run) == 'fm.run (closed)')\n"
              "assert(not pcall(run.evaluate, run, 'test'))\n"
              /* Without data: loaded from data_dir; without artifacts: no files. */
              "do\n"
              "  local r <close> = fm.train{plugin = fm.plugin(PLUGIN), data_dir = DATA, epochs = 1,\n"
              "                             artifacts = false, quiet = true, limit = 50}\n"
              "  assert(r.checkpoint == nil and r.epochs == 1)\n"
              "  assert(not pcall(r.report, r))\n"
              "end\n");
    fm_lua_free(L);
}
END_TEST

START_TEST(test_train_callbacks)
{
    lua_State *L = new_state();
    run_ok(L, "local fm = require 'fm'\n"
              "local data = fm.dataset{dir = DATA}\n"
              "local epochs, steps, lrs, seen = {}, 0, {}, {}\n"
              "local run = fm.train{plugin = PLUGIN, data = data, epochs = 3, artifacts = false,\n"
              "  quiet = true, batch_size = 64, lr = 0.1,\n"
              "  schedule = function(epoch, step, base)\n"
              "    seen[#seen + 1] = {epoch, step}\n"
              "    return base / epoch\n"
              "  end,\n"
              "  on_step = function(s)\n"
              "    steps = steps + 1\n"
              "    assert(s.steps_per_epoch == 6 and s.global_step == steps - 1)\n"
              "    assert(s.loss > 0 and s.step >= 0 and s.step < 6)\n"
              "    lrs[s.epoch] = s.lr\n"
              "  end,\n"
              "  on_epoch = function(m) epochs[#epochs + 1] = m.epoch; return true end}\n"
              "assert(#epochs == 3 and epochs[3] == 3)\n"
              "assert(steps == 18 and #seen == 18 and seen[1][1] == 1 and seen[1][2] == 0)\n"
              "assert(seen[18][1] == 3 and seen[18][2] == 5)\n"
              "assert(math.abs(lrs[1] - 0.1) < 1e-7 and math.abs(lrs[3] - 0.1 / 3) < 1e-7)\n"
              "assert(math.abs(run.history[2].lr - 0.05) < 1e-7)\n"
              /* Returning false stops: after this epoch, or after this step. */
              "local r = fm.train{plugin = PLUGIN, data = data, epochs = 5, artifacts = false,\n"
              "  quiet = true, on_epoch = function(m) return m.epoch < 2 end}\n"
              "assert(r.epochs == 2)\n"
              "local n = 0\n"
              "r = fm.train{plugin = PLUGIN, data = data, epochs = 5, artifacts = false, quiet = true,\n"
              "  on_step = function(s) n = n + 1; return n < 3 end}\n"
              "assert(n == 3 and r.epochs == 1)\n"
              /* A callback's own training run (a run inside a run). */
              "local inner\n"
              "fm.train{plugin = PLUGIN, data = data, epochs = 1, artifacts = false, quiet = true,\n"
              "  on_epoch = function() inner = fm.train{plugin = PLUGIN, data = data, epochs = 1,\n"
              "                                         artifacts = false, quiet = true} end}\n"
              "assert(inner.epochs == 1)\n");
    fm_lua_free(L);
}
END_TEST

START_TEST(test_train_callback_error)
{
    lua_State *L = new_state();
    run_fails(L, "local fm = require 'fm'\n"
                 "data = fm.dataset{dir = DATA}\n"
                 "fm.train{plugin = PLUGIN, data = data, epochs = 4, out = TMP, quiet = true,\n"
                 "  on_epoch = function(m)\n"
                 "    if m.epoch == 2 then error('callback broke') end\n"
                 "  end}\n",
              "fm.train: on_epoch callback failed: test:5: callback broke", "stack traceback:");
    /* The traceback shows where fm.train was called. */
    ck_assert_msg(strstr(fm_error_message(), "test:3:"), "%s", fm_error_message());
    /* Training stopped at the failing epoch; what was written is whole. */
    run_ok(L, "local text = io.open(TMP .. '/results/ffitest/metrics.csv'):read('a')\n"
              "local _, lines = text:gsub('\\n', '')\n"
              "assert(lines == 3 and text:find('^epoch,train_loss'), text)\n"
              "assert(io.open(TMP .. '/artifacts/ffitest_best.safetensors', 'rb'))\n");
    run_fails(L, "require('fm').train{plugin = PLUGIN, data = data, epochs = 2, artifacts = false,\n"
                 "  quiet = true, schedule = function(e, s, lr) if e == 2 then return 'fast' end\n"
                 "  return lr end}",
              "schedule callback failed: schedule(2, 0) (function at test:2) returned string",
              NULL);
    run_fails(L, "require('fm').train{plugin = PLUGIN, data = data, epochs = 2, artifacts = false,\n"
                 "  quiet = true, schedule = function() return -1 end}",
              "returned -1", "finite number >= 0");
    run_fails(L, "require('fm').train{plugin = PLUGIN, data = data, epochs = 2, artifacts = false,\n"
                 "  quiet = true, on_step = function() return 1 end}",
              "on_step callback failed", "returned number");
    run_fails(L, "require('fm').train{plugin = PLUGIN, data = data, epochs = 2, artifacts = false,\n"
                 "  quiet = true, on_step = function() coroutine.yield() end}",
              "on_step callback failed", "yield");
    /* The interpreter and the core are fine afterwards. */
    run_ok(L, "assert(require('fm').train{plugin = PLUGIN, data = data, epochs = 1,\n"
              "  artifacts = false, quiet = true, on_epoch = function() end}.epochs == 1)");
    fm_lua_free(L);
}
END_TEST

START_TEST(test_train_bad_options)
{
    lua_State *L = new_state();
    run_ok(L, "fm = require 'fm'; data = fm.dataset{dir = DATA}\n"
              "base = {plugin = PLUGIN, data = data, artifacts = false, quiet = true}\n"
              "function with(t) local o = {} for k, v in pairs(base) do o[k] = v end\n"
              "  for k, v in pairs(t) do o[k] = v end return o end\n");
    run_fails(L, "fm.train(with{epoch = 2})", "fm.train: unknown option 'epoch'",
              "did you mean 'epochs'");
    run_fails(L, "fm.train(with{colour = 2})", "unknown option 'colour' (options: plugin, data",
              NULL);
    run_fails(L, "fm.train(with{epochs = '2'})", "option 'epochs' must be an integer, got string",
              NULL);
    run_fails(L, "fm.train(with{epochs = 1.5})", "option 'epochs' must be an integer", NULL);
    run_fails(L, "fm.train(with{epochs = 0})", "option 'epochs' is 0", NULL);
    run_fails(L, "fm.train(with{lr = -1})", "--lr", "positive");
    run_fails(L, "fm.train(with{augment = 1})", "option 'augment' must be a boolean", NULL);
    run_fails(L, "fm.train(with{optimizer = 'adagrad'})", "adagrad", NULL);
    run_fails(L, "fm.train(with{scheduler = 'linear'})", "unknown scheduler 'linear'", NULL);
    run_fails(L, "fm.train(with{nesterov = true})", "--nesterov", NULL);
    run_fails(L, "fm.train(with{schedule = 'cosine'})", "option 'schedule' must be a function",
              NULL);
    run_fails(L, "fm.train(with{set = {width = 3}})", "width", NULL);
    run_fails(L, "fm.train(with{set = {scale = {}}})", "hyper-parameter 'scale' must be", NULL);
    run_fails(L, "fm.train(with{set = 5})", "'set' must be a table", NULL);
    run_fails(L, "fm.train(with{data_dir = DATA})", "either 'data'", NULL);
    run_fails(L, "fm.train{data = data}", "option 'plugin' is required", NULL);
    run_fails(L, "fm.train(with{plugin = 5})", "option 'plugin' must be a plugin", NULL);
    run_fails(L, "fm.train(with{plugin = TMP .. '/none.so'})", "none.so", NULL);
    run_fails(L, "fm.train(with{data = fm})", "option 'data' must be a dataset", NULL);
    run_fails(L, "fm.train{plugin = PLUGIN, data_dir = TMP, quiet = true, artifacts = false}",
              "fm.train: data directory", NULL);
    run_fails(L, "fm.train(with{artifacts = true, out = '/proc/forbidden'})", "fm.train:",
              "/proc/forbidden");
    run_fails(L, "fm.train(42)", "table expected", NULL);
    fm_lua_free(L);
}
END_TEST

/* ---- kernel sets ------------------------------------------------------------------ */

/* fm.kernels() reports what the core does; fm.train{kernels = ...} runs one
 * set for one run, records it, and puts the previous set back whatever
 * happens. */
START_TEST(test_kernels)
{
    ck_assert(fm_kernels_use_env() == FM_OK);
    const fm_kernels before = fm_kernels_active();
    lua_State *L = new_state();
    lua_pushstring(L, fm_kernels_name(before));
    lua_setglobal(L, "ACTIVE");
    lua_newtable(L);
    for (int k = 0, n = 0; k < FM_KERNELS_COUNT; k++)
        if (fm_kernels_supported((fm_kernels)k)) {
            lua_pushstring(L, fm_kernels_name((fm_kernels)k));
            lua_rawseti(L, -2, ++n);
        }
    lua_setglobal(L, "SUPPORTED");
    run_ok(L, "fm = require 'fm'\n"
              "local name, sup = fm.kernels()\n"
              "assert(name == ACTIVE, name)\n"
              "assert(#sup == #SUPPORTED and sup[1] == 'portable')\n"
              "for i = 1, #sup do assert(sup[i] == SUPPORTED[i], sup[i]) end\n"
              "data = fm.dataset{dir = DATA}\n"
              /* The run trains, evaluates and reports on portable; before and after, the set
               * in use is the one it was. */
              "local seen\n"
              "local run = fm.train{plugin = PLUGIN, data = data, epochs = 2, out = TMP, quiet = true,\n"
              "  kernels = 'portable', on_epoch = function() seen = fm.kernels() end}\n"
              "assert(seen == 'portable' and run.kernels == 'portable')\n"
              "assert(fm.kernels() == ACTIVE)\n"
              "local summary = io.open(run.results_dir .. '/summary.json'):read('a')\n"
              "assert(summary:find('\"kernels\": \"portable\"', 1, true), summary)\n"
              "local ckpt = io.open(run.checkpoint, 'rb'):read('a')\n"
              "assert(ckpt:find('\"kernels\":%s*\"portable\"'), 'checkpoint metadata')\n"
              "assert(run:evaluate('test').acc == run:evaluate('test').acc)\n"
              "assert(run:evaluate('val').n == 40 and fm.kernels() == ACTIVE)\n"
              /* Without the option a run takes the set in use. */
              "local plain = fm.train{plugin = PLUGIN, data = data, epochs = 1, artifacts = false,\n"
              "  quiet = true}\n"
              "assert(plain.kernels == ACTIVE)\n"
              /* Every supported set trains, and is put back. */
              "for _, k in ipairs(sup) do\n"
              "  local r = fm.train{plugin = PLUGIN, data = data, epochs = 1, artifacts = false,\n"
              "                     quiet = true, kernels = k}\n"
              "  assert(r.kernels == k and fm.kernels() == ACTIVE)\n"
              "end\n");
    /* Errors name the value; the set in use stays. */
    run_fails(L, "fm.train{plugin = PLUGIN, data = data, artifacts = false, kernels = 'bogus'}",
              "fm.train: unknown kernel set 'bogus'", "portable");
    run_fails(L, "fm.train{plugin = PLUGIN, data = data, artifacts = false, kernels = 2}",
              "option 'kernels' must be a string", NULL);
    /* An error after the switch (no data here; a callback that fails) restores it too. */
    run_fails(L, "fm.train{plugin = PLUGIN, data_dir = TMP, artifacts = false, kernels = 'portable'}",
              "fm.train: data directory", NULL);
    ck_assert_int_eq(fm_kernels_active(), before);
    run_fails(L, "fm.train{plugin = PLUGIN, data = data, epochs = 2, artifacts = false, quiet = true,\n"
                 "  kernels = 'portable', on_epoch = function() error('stop here') end}",
              "on_epoch callback failed", "stop here");
    ck_assert_int_eq(fm_kernels_active(), before);
    run_ok(L, "assert(fm.kernels() == ACTIVE)");
    /* A set this processor cannot run: only checkable where one is missing
     * (on a processor with AVX-512 every set runs and this loop is empty). */
    for (int k = 0; k < FM_KERNELS_COUNT; k++) {
        if (fm_kernels_supported((fm_kernels)k)) continue;
        char code[256];
        snprintf(code, sizeof code,
                 "fm.train{plugin = PLUGIN, data = data, artifacts = false, kernels = '%s'}",
                 fm_kernels_name((fm_kernels)k));
        run_fails(L, code, "fm.train:", "cannot run");
        ck_assert_int_eq(fm_kernels_active(), before);
    }
    fm_lua_free(L);
}
END_TEST

/* ---- fm.dist in one process ------------------------------------------------------- */

static int request_stop(lua_State *L)
{
    (void)L;
    fm_stop_request(SIGINT);
    return 0;
}

/* One process is a job of one rank: map runs every item here, in order, and
 * the values still cross the byte encoding MPI ranks use (gather and
 * broadcast encode and decode them even alone). */
START_TEST(test_dist_single)
{
    lua_State *L = new_state();
    run_ok(L, "local fm = require 'fm'\n"
              "assert(fm.dist.rank() == 0 and fm.dist.size() == 1 and fm.dist.backend == 'single')\n"
              "local seen = {}\n"
              "local r = fm.dist.map({'a', 'b', 'c'}, function(v, i) seen[#seen + 1] = i\n"
              "  return {v = v, i = i, half = i / 2} end)\n"
              "assert(#seen == 3 and seen[1] == 1 and seen[3] == 3)\n"
              "assert(#r == 3 and r[2].v == 'b' and r[2].i == 2 and r[3].half == 1.5)\n"
              "assert(math.type(r[2].i) == 'integer' and math.type(r[2].half) == 'float')\n"
              "assert(#fm.dist.map({}, error) == 0)\n"
              "local v = {1, 2.5, 'x\\0y', true, false, [true] = 'k', [-7] = math.mininteger,\n"
              "  [0.5] = math.huge, deep = {{{{'d'}}}}, nan = 0/0, negz = -0.0}\n"
              "local g = fm.dist.gather(v)\n"
              "assert(#g == 1)\n"
              "local w = fm.dist.broadcast(g[1])\n"
              "assert(w[1] == 1 and w[2] == 2.5 and w[3] == 'x\\0y' and #w[3] == 3)\n"
              "assert(w[4] == true and w[5] == false and w[true] == 'k')\n"
              "assert(w[-7] == math.mininteger and w[0.5] == math.huge)\n"
              "assert(w.deep[1][1][1][1] == 'd' and w.nan ~= w.nan)\n"
              "assert(1 / w.negz == -math.huge)\n"
              "assert(fm.dist.gather(nil)[1] == nil and fm.dist.broadcast(nil) == nil)\n"
              "fm.dist.barrier()\n");
    /* An item's error names the item and the rank, after every item ran. */
    run_fails(L, "local fm = require 'fm'\n"
                 "N = 0\n"
                 "fm.dist.map({1, 2, 3, 4}, function(v) N = N + 1\n"
                 "  if v >= 3 then error('bad item ' .. v) end return v end)\n",
              "fm.dist.map: item 3 on rank 0:", "bad item 3");
    run_ok(L, "assert(N == 4)\n");
    /* What cannot cross between processes is refused, named. */
    run_fails(L, "local fm = require 'fm'\n"
                 "fm.dist.map({1}, function() return {run = io.stdout} end)\n",
              "item 1 on rank 0: its result holds a userdata", "plain values");
    run_fails(L, "local fm = require 'fm'\n fm.dist.gather(print)\n",
              "fm.dist.gather: rank 0: a function cannot be sent between ranks", NULL);
    run_fails(L, "local fm = require 'fm'\n local t = {} t.self = t\n fm.dist.broadcast(t)\n",
              "fm.dist.broadcast", "nested too deep");
    run_fails(L, "local fm = require 'fm'\n fm.dist.gather({[{}] = 1})\n",
              "fm.dist.gather", "key that is not a string");
    run_fails(L, "local fm = require 'fm'\n fm.dist.map(3, print)\n", "bad argument #1 to 'map'",
              "table expected");
    /* A signal during item 2 (as Ctrl-C would): items 3 and 4 are not
     * started, and the error is item 2's. */
    lua_pushcfunction(L, request_stop);
    lua_setglobal(L, "request_stop");
    run_fails(L, "local fm = require 'fm'\n"
                 "STARTED = 0\n"
                 "fm.dist.map({1, 2, 3, 4}, function(v) STARTED = STARTED + 1\n"
                 "  if v == 2 then request_stop() error('stopped here') end return v end)\n",
              "fm.dist.map: item 2 on rank 0:", "stopped here");
    fm_stop_clear();
    run_ok(L, "assert(STARTED == 2, STARTED)\n");
    fm_lua_free(L);
}
END_TEST

START_TEST(test_gc_and_close)
{
    lua_State *L = new_state();
    run_ok(L, "local fm = require 'fm'\n"
              "do local p <close> = fm.plugin(PLUGIN) end\n"
              "local p = fm.plugin(PLUGIN)\n"
              "p:close(); p:close()\n"
              "assert(p.name == nil and tostring(p) == 'fm.plugin (closed)')\n"
              "assert(not pcall(p.call, p, 'add_i', 1, 2))\n"
              "local m = fm.plugin(PLUGIN):model()\n"
              "m:close(); m:close()\n"
              "assert(m.params == nil and not pcall(m.call, m, 'scale_l', 1))\n"
              "local d = fm.dataset{dir = DATA}\n"
              "local r = fm.train{plugin = PLUGIN, data = d, epochs = 1, artifacts = false, quiet = true}\n"
              "d = nil; collectgarbage(); collectgarbage()\n"
              "assert(r:evaluate('test').n == 100, 'the run keeps its data alive')\n"
              /* Closing a dataset while a run uses it keeps its images for the run. */
              "local r2\n"
              "do\n"
              "  local d2 <close> = fm.dataset{dir = DATA}\n"
              "  r2 = fm.train{plugin = PLUGIN, data = d2, epochs = 1, artifacts = false, quiet = true}\n"
              "end\n"
              "assert(r2.data.dir == nil and not pcall(fm.train, {plugin = PLUGIN, data = r2.data}))\n"
              "assert(r2:evaluate('val').n == 40 and r2:evaluate('test').n == 100)\n"
              "r2:close()\n"
              "for i = 1, 3 do fm.plugin(PLUGIN):model() end\n"
              "collectgarbage()\n");
    fm_lua_free(L);  /* finalizers run on whatever is left, once */
}
END_TEST

static Suite *lua_suite(void)
{
    Suite *s = suite_create("lua");
    TCase *tc = tcase_create("fm");
    tcase_add_unchecked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fm_preloaded);
    tcase_add_test(tc, test_args_parsed);
    tcase_add_test(tc, test_plugin_fields);
    tcase_add_test(tc, test_plugin_refused);
    tcase_add_test(tc, test_ffi_every_type);
    tcase_add_test(tc, test_ffi_model_argument);
    tcase_add_test(tc, test_ffi_type_mismatch);
    tcase_add_test(tc, test_script_error_has_line);
    tcase_add_test(tc, test_main_exit_status);
    tcase_add_test(tc, test_table_markdown);
    tcase_add_test(tc, test_write_csv_and_markdown);
    tcase_add_test(tc, test_plot);
    tcase_add_test(tc, test_dataset);
    tcase_add_test(tc, test_train_run_object);
    tcase_add_test(tc, test_train_callbacks);
    tcase_add_test(tc, test_train_callback_error);
    tcase_add_test(tc, test_train_bad_options);
    tcase_add_test(tc, test_kernels);
    tcase_add_test(tc, test_gc_and_close);
    tcase_add_test(tc, test_dist_single);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(lua_suite()); }
