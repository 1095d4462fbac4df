/* fmhost export --onnx, checked by the real runtime: ONNX Runtime (the npm
 * package onnxruntime-node, installed into tests/onnx by `npm install
 * --ignore-scripts`) runs each exported model on the first 1,000 test
 * images in batches of 256 (the last one shorter: the batch dimension is
 * free), and its logits must equal fmhost's to 1e-4 with the same predicted
 * class for every image.  Batch-norm statistics and 1-D parameters are
 * randomised first, so that BatchNormalization is checked with real
 * statistics.  Skips (status 77) only when node or the package is absent. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/fm_io.h"
#include "fm/fm_train.h"
#include "fm_test_util.h"

#define FMHOST FM_BINARY_DIR "/fmhost"
#define ORT_DIR FM_SOURCE_DIR "/tests/onnx"
#define N_IMAGES 1000

static char node_path[4096];

/* `node` on $PATH, into node_path. */
static bool find_node(void)
{
    const char *path = getenv("PATH");
    if (!path) return false;
    char *dirs = strdup(path);
    bool found = false;
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d && !found;
         d = strtok_r(NULL, ":", &save)) {
        snprintf(node_path, sizeof node_path, "%s/node", d);
        found = access(node_path, X_OK) == 0;
    }
    free(dirs);
    return found;
}

typedef struct onnx_case {
    const char *plugin;
    const char *set[2];
} onnx_case;

static const onnx_case cases[] = {
    {"mlp.so", {NULL}},
    {"cnn.so", {NULL}},
    {"rescnn.so", {NULL}},
    {"lenet.so", {NULL}},
    {"lenet.so", {"batchnorm=true", "dropout=0.5"}},
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

/* Batch-norm statistics and every 1-D parameter (biases, scales) drawn at
 * random: the initial ones (mean 0, variance 1, scale 1, shift 0) would let
 * a wrong mapping of them pass. */
static void randomise_vectors(fm_model *m, uint64_t seed)
{
    for (int i = 0; i < fm_model_count(m); i++) {
        fm_model_entry e = fm_model_entry_at(m, i);
        if (e.tensor->dtype != FM_F32 || e.tensor->ndim != 1) continue;
        size_t len = strlen(e.name);
        bool var = len >= 11 && !strcmp(e.name + len - 11, "running_var");
        fm_test_fill(e.tensor->data, (size_t)e.tensor->numel, var ? 0.5f : -0.5f,
                     var ? 2.0f : 0.5f, seed + (uint64_t)i);
    }
}

START_TEST(test_onnx_runtime_matches)
{
    const onnx_case *c = &cases[_i];
    const char *dir = fm_test_tmpdir();
    char plugin[4096], weights[4096], onnx[4096], images_path[4096], logits_path[4096];
    snprintf(plugin, sizeof plugin, "%s/%s", FM_PLUGIN_DIR, c->plugin);
    snprintf(weights, sizeof weights, "%s/w.safetensors", dir);
    snprintf(onnx, sizeof onnx, "%s/model.onnx", dir);
    snprintf(images_path, sizeof images_path, "%s/images.f32", dir);
    snprintf(logits_path, sizeof logits_path, "%s/logits.f32", dir);

    /* The model and its weights, as a checkpoint. */
    int n_set = 0;
    while (n_set < 2 && c->set[n_set]) n_set++;
    fm_plugin *p = fm_plugin_open(plugin);
    ck_assert_msg(p, "%s", fm_error_message());
    fm_hparams *hp = fm_hparams_new(p, c->set, n_set);
    ck_assert_msg(hp, "%s", fm_error_message());
    fm_model *m = fm_plugin_create_model(p, hp, 7);
    ck_assert_msg(m, "%s", fm_error_message());
    randomise_vectors(m, 100);
    char hp_text[256];
    fm_hparams_to_string(hp, hp_text, sizeof hp_text);
    const char *meta[] = {"plugin", fm_plugin_descriptor_of(p)->name, "hparams", hp_text};
    ck_assert_int_eq(fm_safetensors_save(weights, m, meta, 2), FM_OK);

    fm_test_proc r;
    fm_test_spawn(&r, (char *[]){FMHOST, "export", "--plugin", plugin, "--weights", weights,
                                 "--onnx", onnx, NULL}, NULL, 120);
    ck_assert_msg(r.status == 0, "%s: export status %d\n%s", c->plugin, r.status, r.err);
    fm_test_proc_free(&r);

    /* fmhost's logits for the first 1,000 test images, in evaluation mode. */
    char data_dir[4096];
    ck_assert_msg(fm_data_find_dir(NULL, data_dir, sizeof data_dir) == FM_OK, "%s",
                  fm_error_message());
    fm_dataset test = {0};
    ck_assert_int_eq(fm_dataset_load_split(&test, data_dir, "test"), FM_OK);
    ck_assert_int_ge(test.n, N_IMAGES);
    float *images = malloc((size_t)N_IMAGES * 784 * sizeof *images);
    float *ours = malloc((size_t)N_IMAGES * 10 * sizeof *ours);
    for (int i = 0; i < N_IMAGES; i++)
        fm_image_normalize(test.images + (size_t)i * 784, images + (size_t)i * 784);
    fm_graph *g = fm_graph_new();
    fm_graph_set_training(g, false);
    fm_graph_set_grad(g, false);
    for (int start = 0; start < N_IMAGES; start += 200) {
        fm_graph_reset(g);
        fm_tensor *x = fm_graph_tensor(g, 4, (int[]){200, 1, 28, 28}), *y;
        memcpy(x->data, images + (size_t)start * 784, (size_t)x->numel * sizeof(float));
        ck_assert_int_eq(fm_model_forward_checked(m, g, x, c->plugin, &y), FM_OK);
        memcpy(ours + (size_t)start * 10, y->data, (size_t)y->numel * sizeof(float));
    }
    fm_graph_free(g);
    fm_test_write_file(images_path, images, (size_t)N_IMAGES * 784 * sizeof *images);

    /* ONNX Runtime's. */
    char n_text[16];
    snprintf(n_text, sizeof n_text, "%d", N_IMAGES);
    fm_test_spawn(&r, (char *[]){node_path, ORT_DIR "/run_onnx.js", onnx, images_path, n_text,
                                 logits_path, "256", NULL}, NULL, 120);
    ck_assert_msg(r.status == 0, "%s: node status %d\n%s%s", c->plugin, r.status, r.out, r.err);
    printf("%s %s: %s", c->plugin, hp_text, r.out);
    fm_test_proc_free(&r);
    size_t len;
    float *theirs = (float *)fm_test_read_file(logits_path, &len);
    ck_assert_uint_eq(len, (size_t)N_IMAGES * 10 * sizeof(float));

    double worst = 0.0;
    int worst_at = 0;
    for (int i = 0; i < N_IMAGES * 10; i++) {
        double d = fabs((double)ours[i] - theirs[i]) / fmax(1.0, fabs((double)ours[i]));
        if (!(d <= worst)) {  /* a NaN is the worst */
            worst = d;
            worst_at = i;
            if (isnan(d)) break;
        }
    }
    ck_assert_msg(worst <= 1e-4, "%s: logit %d of image %d: fmhost %.9g, ONNX Runtime %.9g",
                  c->plugin, worst_at % 10, worst_at / 10, ours[worst_at], theirs[worst_at]);
    for (int i = 0; i < N_IMAGES; i++) {
        int a = 0, b = 0;
        for (int k = 1; k < 10; k++) {
            if (ours[i * 10 + k] > ours[i * 10 + a]) a = k;
            if (theirs[i * 10 + k] > theirs[i * 10 + b]) b = k;
        }
        ck_assert_msg(a == b, "%s: image %d is class %d for fmhost, %d for ONNX Runtime",
                      c->plugin, i, a, b);
    }
    printf("%s: largest logit difference %.3g (relative to max(1, |logit|))\n", c->plugin, worst);

    free(theirs);
    free(images);
    free(ours);
    fm_dataset_free(&test);
    fm_model_free(m);
    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_test_rmtree(dir);
}
END_TEST

/* An op with no ONNX mapping is an error naming it, and writes nothing; so
 * is a checkpoint that is not there. */
START_TEST(test_onnx_refuses_unmapped_op)
{
    const char *dir = fm_test_tmpdir();
    char weights[4096], onnx[4096];
    snprintf(weights, sizeof weights, "%s/w.safetensors", dir);
    snprintf(onnx, sizeof onnx, "%s/x.onnx", dir);
    const char *plugin = FM_TEST_PLUGIN_DIR "/unmapped.so";
    fm_plugin *p = fm_plugin_open(plugin);
    ck_assert_msg(p, "%s", fm_error_message());
    fm_hparams *hp = fm_hparams_new(p, NULL, 0);
    fm_model *m = fm_plugin_create_model(p, hp, 1);
    ck_assert_int_eq(fm_safetensors_save(weights, m, NULL, 0), FM_OK);

    fm_test_proc r;
    fm_test_spawn(&r, (char *[]){FMHOST, "export", "--plugin", (char *)plugin, "--weights",
                                 weights, "--onnx", onnx, NULL}, NULL, 60);
    ck_assert_int_eq(r.status, 1);
    ck_assert_msg(strstr(r.err, "'to_bf16'") && strstr(r.err, "no ONNX mapping"), "%s", r.err);
    ck_assert(access(onnx, F_OK) != 0);
    fm_test_proc_free(&r);

    fm_test_spawn(&r, (char *[]){FMHOST, "export", "--model", "mlp", "--weights",
                                 "/nonexistent/w.safetensors", "--onnx", onnx, NULL}, NULL, 60);
    ck_assert_int_eq(r.status, 1);
    ck_assert_msg(strstr(r.err, "/nonexistent/w.safetensors"), "%s", r.err);
    ck_assert(access(onnx, F_OK) != 0);
    fm_test_proc_free(&r);

    fm_model_free(m);
    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_test_rmtree(dir);
}
END_TEST

int main(void)
{
    if (!find_node()) {
        printf("test_onnx: SKIPPED: no `node` on $PATH (apt-get install nodejs; .ci/run "
               "installs it)\n");
        return 77;
    }
    if (access(ORT_DIR "/node_modules/onnxruntime-node/package.json", R_OK) != 0) {
        printf("test_onnx: SKIPPED: onnxruntime-node is not installed in " ORT_DIR
               " (cd tests/onnx && npm ci --ignore-scripts; .ci/run does it)\n");
        return 77;
    }
    Suite *s = suite_create("onnx");
    TCase *tc = tcase_create("onnx");
    tcase_add_loop_test(tc, test_onnx_runtime_matches, 0, N_CASES);
    tcase_add_test(tc, test_onnx_refuses_unmapped_op);
    suite_add_tcase(s, tc);
    return fm_test_run(s);
}
