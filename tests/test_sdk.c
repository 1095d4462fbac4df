/* test_sdk: the plugin SDK as its users see it.
 *
 * Installs this build into a temporary prefix, then runs the shell and Lua
 * blocks that docs/writing-plugins.md marks with <!-- test_sdk: NAME -->,
 * verbatim, against that prefix alone: the one-line build and a short
 * training run whose loss must fall, the strict-warnings build, the CMake
 * package (find_package + fm_add_plugin), and the Lua exports.  The guide's
 * listings must equal plugins/template/ byte for byte, and the outputs it
 * shows must be what the commands print, so the guide cannot rot.
 *
 * The ABI version rules (an older minor loads, another major or a newer
 * minor is refused naming both versions) are tested in test_plugin. */
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm/fm_plugin.h"
#include "fm_test_util.h"

#define GUIDE FM_SOURCE_DIR "/docs/writing-plugins.md"
#define TEMPLATE_DIR FM_SOURCE_DIR "/plugins/template"

/* Set once by the unchecked fixture (in the parent, before the tests fork). */
static char g_root[PATH_MAX];     /* everything this test writes */
static char g_prefix[PATH_MAX];   /* the installed SDK: <root>/stage/sdk */
static char g_cmake_dir[PATH_MAX]; /* directory of the cmake that configured this build */
static int g_install_rc = -1;

/* ---- helpers ---------------------------------------------------------------- */

/* snprintf into an array, failing the test when the text does not fit. */
#define FMT(buf, ...)                                                                  \
    ck_assert_msg(snprintf(buf, sizeof buf, __VA_ARGS__) < (int)sizeof buf, "%s: too long", #buf)

static char *read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (size_t got; (got = fread(buf + len, 1, cap - len - 1, f)) > 0;) {
        len += got;
        if (cap - len - 1 == 0) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    buf[len] = '\0';
    if (len_out) *len_out = len;
    return buf;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void make_dir(const char *path)
{
    ck_assert_msg(mkdir(path, 0755) == 0, "mkdir %s: %s", path, strerror(errno));
}

/* Runs `sh -e script` in `dir` with PREFIX set to the installed SDK and the
 * build's cmake first in PATH; stdout and stderr go to `log`.  Returns the
 * exit status (-1 when it did not exit). */
static int run_script(const char *dir, const char *script, const char *log)
{
    char cmd[4 * PATH_MAX + 256];
    FMT(cmd, "cd '%s' && env -u LD_LIBRARY_PATH -u PKG_CONFIG_PATH -u CMAKE_PREFIX_PATH "
        "PREFIX='%s' PATH='%s':\"$PATH\" sh -e '%s' > '%s' 2>&1",
        dir, g_prefix, g_cmake_dir, script, log);
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The tail of a log, for failure messages. */
static const char *log_tail(const char *log)
{
    static char tail[2048];
    size_t len;
    char *s = read_file(log, &len);
    FMT(tail, "%s", len > sizeof tail - 1 ? s + len - (sizeof tail - 1) : s);
    free(s);
    return tail;
}

/* The body of the fenced block that follows "<!-- test_sdk: NAME -->" in the
 * guide (without the fences). */
static char *guide_block(const char *name)
{
    char *doc = read_file(GUIDE, NULL);
    char marker[128];
    FMT(marker, "<!-- test_sdk: %s -->\n```", name);
    char *at = strstr(doc, marker);
    ck_assert_msg(at != NULL, "%s: no block marked '%s'", GUIDE, marker);
    char *body = strchr(at + strlen(marker), '\n');
    ck_assert(body != NULL);
    body++;
    char *end = strstr(body, "\n```\n");
    ck_assert_msg(end != NULL, "%s: block '%s' is not closed", GUIDE, name);
    end[1] = '\0';
    char *out = strdup(body);
    free(doc);
    return out;
}

/* Writes the guide's block NAME to dir/file and runs it there.  Returns the
 * exit status; the output is in dir/NAME.log. */
static int run_guide_block(const char *dir, const char *name)
{
    char script[PATH_MAX], log[PATH_MAX];
    FMT(script, "%s/%s.sh", dir, name);
    FMT(log, "%s/%s.log", dir, name);
    char *body = guide_block(name);
    fm_test_write_file(script, body, strlen(body));
    free(body);
    return run_script(dir, script, log);
}

/* A directory under the test root, created empty. */
static const char *work_dir(const char *name)
{
    static char dir[PATH_MAX];
    FMT(dir, "%s/%s", g_root, name);
    make_dir(dir);
    return dir;
}

/* Copies the installed example into dir and builds lenet.so there with the
 * guide's strict one-line build. */
static void build_lenet(const char *dir)
{
    char src[PATH_MAX], dst[PATH_MAX];
    FMT(src, "%s/share/doc/fmhost/template/lenet.c", g_prefix);
    FMT(dst, "%s/lenet.c", dir);
    size_t len;
    char *code = read_file(src, &len);
    fm_test_write_file(dst, code, len);
    free(code);
    char script[PATH_MAX + 32], log[PATH_MAX + 32];
    FMT(script, "%s/build.sh", dir);
    FMT(log, "%s/build.log", dir);
    char *line = guide_block("strict");
    char body[4096];
    FMT(body, "export PKG_CONFIG_PATH=\"$PREFIX/lib/pkgconfig\"\n%s", line);
    free(line);
    fm_test_write_file(script, body, strlen(body));
    ck_assert_msg(run_script(dir, script, log) == 0, "strict build failed:\n%s", log_tail(log));
}

/* pkg-config's answer about the installed fmcore, trailing space/newline cut. */
static void pkg_config(const char *args, char *out, size_t len)
{
    char cmd[2 * PATH_MAX];
    FMT(cmd, "PKG_CONFIG_PATH='%s/lib/pkgconfig' pkg-config %s fmcore", g_prefix,
             args);
    FILE *p = popen(cmd, "r");
    ck_assert(p != NULL);
    size_t got = fread(out, 1, len - 1, p);
    out[got] = '\0';
    ck_assert_msg(pclose(p) == 0, "%s failed", cmd);
    while (got > 0 && (out[got - 1] == '\n' || out[got - 1] == ' ')) out[--got] = '\0';
}

static void assert_installed(const char *rel)
{
    char path[2 * PATH_MAX];
    FMT(path, "%s/%s", g_prefix, rel);
    ck_assert_msg(exists(path), "not installed: %s", path);
}

/* ---- fixture: install this build into <root>/stage/sdk ----------------------- */

/* The fixture runs outside any test, so it reports instead of asserting. */
static bool fits(int written, size_t size) { return written >= 0 && (size_t)written < size; }

static void read_cmake_command(void)
{
    snprintf(g_cmake_dir, sizeof g_cmake_dir, "/usr/bin");
    FILE *f = fopen(FM_BINARY_DIR "/CMakeCache.txt", "r");
    if (!f) return;
    char line[PATH_MAX + 64];
    const char *key = "CMAKE_COMMAND:INTERNAL=";
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, strlen(key))) continue;
        line[strcspn(line, "\n")] = '\0';
        const char *dir = dirname(line + strlen(key));
        if (strlen(dir) < sizeof g_cmake_dir) strcpy(g_cmake_dir, dir);
        break;
    }
    fclose(f);
}

static void install_sdk(void)
{
    const char *base = getenv("TMPDIR");
    if (!fits(snprintf(g_root, sizeof g_root, "%s/fmsdk.XXXXXX", base && *base ? base : "/tmp"),
              sizeof g_root) ||
        !mkdtemp(g_root)) {
        g_root[0] = '\0';
        return;
    }
    read_cmake_command();
    /* DESTDIR keeps a destination that ignores the prefix inside the test's
     * directory, where test_install_layout finds it, instead of in /usr/local. */
    char cmd[4 * PATH_MAX];
    if (!fits(snprintf(g_prefix, sizeof g_prefix, "%s/stage/sdk", g_root), sizeof g_prefix) ||
        !fits(snprintf(cmd, sizeof cmd,
                       "DESTDIR='%s/stage' '%s/cmake' --install '%s' --prefix /sdk "
                       "> '%s/install.log' 2>&1",
                       g_root, g_cmake_dir, FM_BINARY_DIR, g_root),
              sizeof cmd))
        return;
    int st = system(cmd);
    g_install_rc = st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void remove_root(void)
{
    char cmd[PATH_MAX + 16];
    if (!g_root[0] || !fits(snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root), sizeof cmd)) return;
    if (system(cmd) != 0) fprintf(stderr, "test_sdk: could not remove %s\n", g_root);
}

static void assert_sdk_installed(void)
{
    ck_assert_msg(g_root[0], "could not create a temporary directory");
    char log[PATH_MAX + 16];
    FMT(log, "%s/install.log", g_root);
    ck_assert_msg(g_install_rc == 0, "cmake --install %s failed (%d):\n%s", FM_BINARY_DIR,
                  g_install_rc, log_tail(log));
}

/* ---- the guide and the template ------------------------------------------------ */

static void assert_listing(const char *doc, const char *lang, const char *path)
{
    char *file = read_file(path, NULL);
    size_t n = strlen(lang) + strlen(file) + 16;
    char *block = malloc(n);
    snprintf(block, n, "```%s\n%s```\n", lang, file);
    ck_assert_msg(strstr(doc, block) != NULL,
                  "%s no longer shows %s as it is: paste the file into its ```%s block", GUIDE,
                  path, lang);
    free(block);
    free(file);
}

START_TEST(test_guide_shows_the_template)
{
    char *doc = read_file(GUIDE, NULL);
    assert_listing(doc, "c", TEMPLATE_DIR "/lenet.c");
    assert_listing(doc, "cmake", TEMPLATE_DIR "/CMakeLists.txt");
    /* The build line of the issue, word for word. */
    ck_assert(strstr(doc, "cc -shared -fPIC lenet.c $(pkg-config --cflags --libs fmcore) "
                          "-o lenet.so\n") != NULL);
    char abi[64];
    FMT(abi, "speaks %d.%d (", FM_PLUGIN_ABI_MAJOR, FM_PLUGIN_ABI_MINOR);
    ck_assert_msg(strstr(doc, abi) != NULL, "the guide does not say the SDK '%s'", abi);
    free(doc);
}
END_TEST

/* ---- the installed layout ------------------------------------------------------- */

START_TEST(test_install_layout)
{
    assert_sdk_installed();
    static const char *const files[] = {
        "bin/fmhost",
        "lib/libfmcore.so",
        "lib/libfmcore.so.0",
        "lib/fmhost/plugins/mlp.so",
        "lib/fmhost/plugins/cnn.so",
        "lib/fmhost/plugins/rescnn.so",
        "lib/fmhost/plugins/lenet.so",
        "lib/pkgconfig/fmcore.pc",
        "lib/cmake/fmcore/fmcoreConfig.cmake",
        "lib/cmake/fmcore/fmcoreConfigVersion.cmake",
        "lib/cmake/fmcore/fmcoreTargets.cmake",
        "share/fmhost/scripts/compare_all.lua",
        "share/fmhost/data/sample/train-images-idx3-ubyte.gz",
        "share/fmhost/data/sample/t10k-labels-idx1-ubyte.gz",
        "share/doc/fmhost/writing-plugins.md",
        "share/doc/fmhost/template/lenet.c",
        "share/doc/fmhost/template/CMakeLists.txt",
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) assert_installed(files[i]);

    /* Every public header, unchanged. */
    DIR *d = opendir(FM_SOURCE_DIR "/core/include/fm");
    ck_assert(d != NULL);
    int headers = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n < 3 || strcmp(e->d_name + n - 2, ".h")) continue;
        char src[PATH_MAX], dst[2 * PATH_MAX];
        FMT(src, FM_SOURCE_DIR "/core/include/fm/%s", e->d_name);
        FMT(dst, "%s/include/fm/%s", g_prefix, e->d_name);
        char *a = read_file(src, NULL), *b = read_file(dst, NULL);
        ck_assert_msg(!strcmp(a, b), "%s differs from %s", dst, src);
        free(a);
        free(b);
        headers++;
    }
    closedir(d);
    ck_assert_int_ge(headers, 5);

    /* Nothing went anywhere but the prefix (an absolute DESTINATION would). */
    char stage[PATH_MAX + 8];
    FMT(stage, "%s/stage", g_root);
    d = opendir(stage);
    ck_assert(d != NULL);
    for (struct dirent *e; (e = readdir(d));)
        ck_assert_msg(!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
                      !strcmp(e->d_name, "sdk"),
                      "cmake --install wrote %s/%s, outside the prefix", stage, e->d_name);
    closedir(d);

    /* pkg-config points into the installed tree, never at the build. */
    char out[4096], want[64];
    pkg_config("--modversion", out, sizeof out);
    ck_assert_str_eq(out, FM_VERSION_STRING);
    pkg_config("--variable=plugin_abi", out, sizeof out);
    FMT(want, "%d.%d", FM_PLUGIN_ABI_MAJOR, FM_PLUGIN_ABI_MINOR);
    ck_assert_str_eq(out, want);
    pkg_config("--cflags --libs", out, sizeof out);
    ck_assert_msg(strstr(out, "/stage/sdk/") && strstr(out, "-lfmcore"), "pkg-config: %s", out);
    ck_assert_msg(!strstr(out, FM_SOURCE_DIR "/") && !strstr(out, FM_BINARY_DIR "/"),
                  "pkg-config points at the build tree: %s", out);
    static const char *const vars[] = {"plugindir", "sampledir", "scriptdir"};
    for (int i = 0; i < 3; i++) {
        char arg[64];
        FMT(arg, "--variable=%s", vars[i]);
        pkg_config(arg, out, sizeof out);
        struct stat st;
        ck_assert_msg(stat(out, &st) == 0 && S_ISDIR(st.st_mode), "%s=%s is not a directory",
                      vars[i], out);
    }

    /* The installed example is the tree's. */
    char inst[2 * PATH_MAX];
    FMT(inst, "%s/share/doc/fmhost/template/lenet.c", g_prefix);
    char *a = read_file(inst, NULL), *b = read_file(TEMPLATE_DIR "/lenet.c", NULL);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
}
END_TEST

/* ---- the guide's blocks, run as written ------------------------------------------ */

START_TEST(test_quickstart_trains)
{
    assert_sdk_installed();
    const char *dir = work_dir("quickstart");
    char log[PATH_MAX + 32];
    FMT(log, "%s/quickstart.log", dir);
    ck_assert_msg(run_guide_block(dir, "quickstart") == 0, "the quick start failed:\n%s",
                  log_tail(log));

    char path[PATH_MAX + 64];
    FMT(path, "%s/artifacts/lenet_best.safetensors", dir);
    ck_assert_msg(exists(path), "no checkpoint %s", path);
    FMT(path, "%s/results/lenet/metrics.csv", dir);
    char *csv = read_file(path, NULL);
    ck_assert_msg(!strncmp(csv, "epoch,train_loss,", 17), "%s: unexpected header", path);
    double loss[3] = {0};
    int rows = 0;
    for (char *line = strchr(csv, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        int epoch;
        double l;
        ck_assert_msg(sscanf(line + 1, "%d,%lf,", &epoch, &l) == 2, "%s: bad row", path);
        ck_assert_int_eq(epoch, rows + 1);
        ck_assert_int_lt(rows, 2);
        loss[rows++] = l;
    }
    free(csv);
    ck_assert_int_eq(rows, 2);
    ck_assert_msg(loss[1] < loss[0] && loss[0] < 2.6, "train loss %g then %g: it must fall",
                  loss[0], loss[1]);

    /* The out-of-tree model in use: summary, predict, export. */
    FMT(log, "%s/use.log", dir);
    ck_assert_msg(run_guide_block(dir, "use") == 0, "summary, predict or export failed:\n%s",
                  log_tail(log));
    char *out = read_file(log, NULL);
    ck_assert_msg(strstr(out, "conv2 (conv2d)") && strstr(out, "Total params: 61,706") &&
                      strstr(out, "lenet: wrote lenet.onnx"), "%s", out);
    free(out);
    FMT(path, "%s/predictions.txt", dir);
    char *pred = read_file(path, NULL);
    ck_assert_msg(strstr(pred, "t10k-images-idx3-ubyte.gz[499]: "), "%s", pred);
    free(pred);
    FMT(path, "%s/lenet.onnx", dir);
    ck_assert_msg(exists(path), "no %s", path);
}
END_TEST

START_TEST(test_strict_build)
{
    assert_sdk_installed();
    const char *dir = work_dir("strict");
    build_lenet(dir);
    char so[PATH_MAX + 16];
    FMT(so, "%s/lenet.so", dir);
    fm_plugin *p = fm_plugin_open(so);
    ck_assert_msg(p != NULL, "%s", fm_error_message());
    const fm_plugin_desc *d = fm_plugin_descriptor_of(p);
    ck_assert_str_eq(d->name, "lenet");
    ck_assert_uint_eq(d->abi_version, FM_PLUGIN_ABI_VERSION);
    fm_plugin_release(p);
}
END_TEST

START_TEST(test_lua_exports)
{
    assert_sdk_installed();
    const char *dir = work_dir("lua");
    build_lenet(dir);
    char lua[PATH_MAX + 16], script[PATH_MAX + 16], log[PATH_MAX + 16];
    FMT(lua, "%s/flops.lua", dir);
    FMT(script, "%s/run.sh", dir);
    FMT(log, "%s/run.log", dir);
    char *code = guide_block("lua");
    fm_test_write_file(lua, code, strlen(code));
    free(code);
    /* stdout only: that is what the guide shows. */
    const char *run = "\"$PREFIX/bin/fmhost\" script flops.lua 2>/dev/null\n";
    fm_test_write_file(script, run, strlen(run));
    ck_assert_msg(run_script(dir, script, log) == 0, "fmhost script failed:\n%s", log_tail(log));
    char *got = read_file(log, NULL), *want = guide_block("lua-output");
    ck_assert_str_eq(got, want);
    free(got);
    free(want);
}
END_TEST

START_TEST(test_cmake_package)
{
    assert_sdk_installed();
    const char *dir = work_dir("cmake");
    char log[PATH_MAX + 32];
    FMT(log, "%s/cmake.log", dir);
    ck_assert_msg(run_guide_block(dir, "cmake") == 0, "the CMake build failed:\n%s",
                  log_tail(log));
    /* It printed what the guide says `fmhost plugins --dir build` prints. */
    char *got = read_file(log, NULL), *want = guide_block("plugins-output");
    ck_assert_msg(strstr(got, want) != NULL, "fmhost plugins printed:\n%s\nthe guide shows:\n%s",
                  log_tail(log), want);
    free(got);
    free(want);

    /* fm_add_plugin installs the plugin under the project's prefix. */
    char script[PATH_MAX + 32], ilog[PATH_MAX + 32], so[PATH_MAX + 64];
    FMT(script, "%s/install.sh", dir);
    FMT(ilog, "%s/install.log", dir);
    const char *inst = "cmake --install lenet/build --prefix \"$PWD/user\"\n";
    fm_test_write_file(script, inst, strlen(inst));
    ck_assert_msg(run_script(dir, script, ilog) == 0, "%s", log_tail(ilog));
    FMT(so, "%s/user/lib/fmhost/plugins/lenet.so", dir);
    ck_assert_msg(exists(so), "fm_add_plugin did not install %s", so);

    /* The CMake-built plugin is the model the guide describes. */
    FMT(so, "%s/lenet/build/lenet.so", dir);
    fm_plugin *p = fm_plugin_open(so);
    ck_assert_msg(p != NULL, "%s", fm_error_message());
    const fm_plugin_desc *d = fm_plugin_descriptor_of(p);
    ck_assert_int_eq(d->n_hparams, 4);
    ck_assert_int_eq(d->n_exports, 2);

    fm_hparams *hp = fm_hparams_new(p, NULL, 0);
    fm_model *m = fm_plugin_create_model(p, hp, 42);
    ck_assert_msg(m != NULL, "%s", fm_error_message());
    ck_assert_int_eq(fm_model_num_params(m), 61706);
    static const char *const names[] = {"conv1.weight", "conv1.bias", "conv2.weight",
                                        "conv2.bias",   "fc1.weight", "fc1.bias",
                                        "fc2.weight",   "fc2.bias",   "fc3.weight",
                                        "fc3.bias"};
    ck_assert_int_eq(fm_model_count(m), 10);
    for (int i = 0; i < 10; i++) ck_assert_str_eq(fm_model_entry_at(m, i).name, names[i]);

    fm_graph *g = fm_graph_new();
    fm_tensor *x = fm_graph_tensor(g, 4, (int[]){3, 1, 28, 28});
    fm_test_fill(x->data, (size_t)x->numel, -1.0f, 1.0f, 7);
    fm_tensor *y = fm_model_forward(m, g, x);
    ck_assert_int_eq(y->ndim, 2);
    ck_assert_int_eq(y->shape[0], 3);
    ck_assert_int_eq(y->shape[1], 10);

    int fi = fm_plugin_export_find(p, "flops");
    ck_assert_int_ge(fi, 0);
    fm_ffi_value args[2] = {{.m = NULL}, {.i = 64}}, ret;
    ck_assert_int_eq(fm_plugin_export_call(p, fi, m, args, 2, &ret), FM_OK);
    double macs = 28.0 * 28 * 6 * 25 + 10.0 * 10 * 16 * 6 * 25 + 400.0 * 120 + 120 * 84 + 84 * 10;
    ck_assert_double_eq(ret.d, 2 * macs * 64);
    fm_graph_free(g);
    fm_model_free(m);
    fm_hparams_free(hp);

    const char *bn[] = {"batchnorm=true"};
    hp = fm_hparams_new(p, bn, 1);
    m = fm_plugin_create_model(p, hp, 42);
    ck_assert_msg(m != NULL, "%s", fm_error_message());
    ck_assert_int_eq(fm_model_num_params(m), 61706 - 6 - 16 + 2 * (6 + 16));
    ck_assert_ptr_nonnull(fm_model_find(m, "bn2.running_var"));
    ck_assert_ptr_null(fm_model_find(m, "conv1.bias"));
    fm_model_free(m);
    fm_hparams_free(hp);

    const char *bad[] = {"c1=0"};
    hp = fm_hparams_new(p, bad, 1);
    ck_assert_ptr_null(fm_plugin_create_model(p, hp, 42));
    ck_assert_int_eq(fm_error_status(), FM_ERR_ARG);
    ck_assert_msg(strstr(fm_error_message(), "lenet: c1=0 c2=16: channel counts must be in"),
                  "%s", fm_error_message());
    fm_hparams_free(hp);
    fm_plugin_release(p);
}
END_TEST

static Suite *sdk_suite(void)
{
    Suite *s = suite_create("sdk");
    TCase *guide = tcase_create("guide");
    tcase_add_test(guide, test_guide_shows_the_template);
    suite_add_tcase(s, guide);

    TCase *inst = tcase_create("installed");
    /* One install for all the tests below; they only read the prefix. */
    tcase_add_unchecked_fixture(inst, install_sdk, remove_root);
    tcase_set_timeout(inst, 120);
    tcase_add_test(inst, test_install_layout);
    tcase_add_test(inst, test_quickstart_trains);
    tcase_add_test(inst, test_strict_build);
    tcase_add_test(inst, test_lua_exports);
    tcase_add_test(inst, test_cmake_package);
    suite_add_tcase(s, inst);
    return s;
}

int main(void) { return fm_test_run(sdk_suite()); }
