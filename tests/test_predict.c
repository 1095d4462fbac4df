/* fmhost predict: the first test images written as PNG files (grey, RGB,
 * inverted, twice the size) are classified as fmhost eval classifies them
 * (fm_evaluate, on a model trained for one short epoch), and so are the
 * images of the IDX file itself; bad files are errors naming them. */
#include <jansson.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm/fm_io.h"
#include "fm/fm_train.h"
#include "fm_test_util.h"

#define FMHOST FM_BINARY_DIR "/fmhost"
#define SAMPLE_DIR FM_SOURCE_DIR "/data/sample"
#define N_IMAGES 24

typedef enum variant { GREY, RGB, INVERTED, DOUBLE, N_VARIANTS } variant;

/* Test image i of d as a PNG file in `variant`. */
static void write_png(const char *path, const uint8_t *img, variant v)
{
    int scale = v == DOUBLE ? 2 : 1, side = 28 * scale, channels = v == RGB ? 3 : 1;
    uint8_t *px = malloc((size_t)side * side * channels);
    for (int y = 0; y < side; y++)
        for (int x = 0; x < side; x++) {
            uint8_t p = img[(y / scale) * 28 + x / scale];
            if (v == INVERTED) p = (uint8_t)(255 - p);
            for (int c = 0; c < channels; c++) px[((size_t)y * side + x) * channels + c] = p;
        }
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = (png_uint_32)side;
    image.height = (png_uint_32)side;
    image.format = v == RGB ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    ck_assert_msg(png_image_write_to_file(&image, path, 0, px, 0, NULL), "%s: %s", path,
                  image.message);
    free(px);
}

/* The top class of each object of predict's --json output, into cls. */
static void parse_classes(const char *out, int *cls, int n)
{
    json_error_t err;
    json_t *root = json_loads(out, 0, &err);
    ck_assert_msg(root && json_is_array(root), "not a JSON array (%s): %s", err.text, out);
    ck_assert_int_eq((int)json_array_size(root), n);
    for (int i = 0; i < n; i++) {
        json_t *top = json_object_get(json_array_get(root, (size_t)i), "top");
        ck_assert_int_eq((int)json_array_size(top), 1);
        cls[i] = (int)json_integer_value(json_object_get(json_array_get(top, 0), "class"));
    }
    json_decref(root);
}

START_TEST(test_predict_as_eval)
{
    const char *dir = fm_test_tmpdir();
    char out_dir[2048], weights[4096];
    snprintf(out_dir, sizeof out_dir, "%s/run", dir);
    snprintf(weights, sizeof weights, "%s/artifacts/mlp_best.safetensors", out_dir);
    fm_test_proc r;
    fm_test_spawn(&r, (char *[]){FMHOST, "train", "--model", "mlp", "--data-dir", SAMPLE_DIR,
                                 "--epochs", "1", "--limit", "2000", "--seed", "3", "--out",
                                 out_dir, "--quiet", NULL}, NULL, 120);
    ck_assert_msg(r.status == 0, "train: %d\n%s", r.status, r.err);
    fm_test_proc_free(&r);

    /* eval's classes for the first test images. */
    fm_dataset test = {0};
    ck_assert_int_eq(fm_dataset_load_split(&test, SAMPLE_DIR, "test"), FM_OK);
    fm_plugin *p = fm_plugin_open(FM_PLUGIN_DIR "/mlp.so");
    fm_hparams *hp = fm_hparams_new(p, NULL, 0);
    fm_model *m = fm_plugin_create_model(p, hp, 0);
    ck_assert_int_eq(fm_safetensors_load(weights, m, NULL), FM_OK);
    fm_subset first = {0};
    fm_subset_all(&first, &test, N_IMAGES);
    uint8_t eval_pred[N_IMAGES];
    float conf[N_IMAGES];
    fm_eval_result res;
    ck_assert_int_eq(fm_evaluate(m, &first, 8, &res, eval_pred, conf), FM_OK);
    int distinct = 0;
    for (int k = 0; k < 10; k++)
        for (int i = 0; i < N_IMAGES; i++)
            if (eval_pred[i] == k) {
                distinct++;
                break;
            }
    ck_assert_msg(distinct >= 3, "the model predicts only %d classes: a weak check", distinct);

    /* Each variant of the images as PNG files, classified in one call. */
    for (int v = 0; v < N_VARIANTS; v++) {
        char *argv[N_IMAGES + 16], paths[N_IMAGES][4096];
        int argc = 0;
        argv[argc++] = FMHOST, argv[argc++] = "predict", argv[argc++] = "--model";
        argv[argc++] = "mlp", argv[argc++] = "--weights", argv[argc++] = weights;
        argv[argc++] = "--json", argv[argc++] = "--top", argv[argc++] = "1";
        if (v == INVERTED) argv[argc++] = "--invert";
        for (int i = 0; i < N_IMAGES; i++) {
            snprintf(paths[i], sizeof paths[i], "%s/test_%d_%d.png", dir, i, v);
            write_png(paths[i], test.images + (size_t)i * 784, (variant)v);
            argv[argc++] = paths[i];
        }
        argv[argc] = NULL;
        fm_test_spawn(&r, argv, NULL, 60);
        ck_assert_msg(r.status == 0, "predict (variant %d): %d\n%s", v, r.status, r.err);
        int cls[N_IMAGES];
        parse_classes(r.out, cls, N_IMAGES);
        for (int i = 0; i < N_IMAGES; i++)
            ck_assert_msg(cls[i] == eval_pred[i], "variant %d, image %d: predict says %d, eval %d",
                          v, i, cls[i], eval_pred[i]);
        fm_test_proc_free(&r);
    }

    /* The IDX file itself: its first images in the same classes. */
    fm_test_spawn(&r, (char *[]){FMHOST, "predict", "--model", "mlp", "--weights", weights,
                                 "--json", "--top", "1",
                                 SAMPLE_DIR "/t10k-images-idx3-ubyte.gz", NULL}, NULL, 60);
    ck_assert_msg(r.status == 0, "predict IDX: %d\n%s", r.status, r.err);
    int *cls = malloc((size_t)test.n * sizeof *cls);
    parse_classes(r.out, cls, test.n);
    for (int i = 0; i < N_IMAGES; i++) ck_assert_int_eq(cls[i], eval_pred[i]);
    free(cls);
    fm_test_proc_free(&r);

    /* The table: three classes with probabilities per image. */
    fm_test_spawn(&r, (char *[]){FMHOST, "predict", "--model", "mlp", "--out", out_dir,
                                 (char *)dir, NULL}, NULL, 60);
    ck_assert_int_eq(r.status, 1);  /* a directory is no image */
    ck_assert_msg(strstr(r.err, dir) && strstr(r.err, "not a regular file"), "%s", r.err);
    fm_test_proc_free(&r);
    char png0[4096];
    snprintf(png0, sizeof png0, "%s/test_0_0.png", dir);
    fm_test_spawn(&r, (char *[]){FMHOST, "predict", "--model", "mlp", "--out", out_dir, png0,
                                 NULL}, NULL, 60);
    ck_assert_int_eq(r.status, 0);
    ck_assert_msg(strstr(r.out, png0) && strstr(r.out, fm_class_name(eval_pred[0])) &&
                      strstr(r.out, "%, ") && strchr(r.out, '\n') == strrchr(r.out, '\n'),
                  "%s", r.out);
    fm_test_proc_free(&r);

    fm_subset_free(&first);
    fm_model_free(m);
    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_dataset_free(&test);
    fm_test_rmtree(dir);
}
END_TEST

/* A cut PNG, a file that is neither PNG nor IDX, and no checkpoint: errors
 * naming the file, exit 1; no image at all: a usage error. */
START_TEST(test_predict_errors)
{
    const char *dir = fm_test_tmpdir();
    char png[4096], txt[4096];
    snprintf(png, sizeof png, "%s/cut.png", dir);
    snprintf(txt, sizeof txt, "%s/notes.txt", dir);
    uint8_t img[784] = {0};
    write_png(png, img, GREY);
    size_t len;
    char *bytes = fm_test_read_file(png, &len);
    fm_test_write_file(png, bytes, len / 2);
    free(bytes);
    fm_test_write_file(txt, "hello, not a picture\n", 21);

    /* A FIFO nobody writes to: refused, not waited on. */
    char fifo[4096];
    snprintf(fifo, sizeof fifo, "%s/fifo.png", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    const char *files[] = {png, txt, fifo};
    for (int i = 0; i < 3; i++) {
        fm_test_proc r;
        fm_test_spawn(&r, (char *[]){FMHOST, "predict", "--model", "mlp", (char *)files[i], NULL},
                      NULL, 60);
        ck_assert_int_eq(r.status, 1);
        ck_assert_msg(strstr(r.err, files[i]), "%s", r.err);
        fm_test_proc_free(&r);
    }
    char good[4096];
    snprintf(good, sizeof good, "%s/good.png", dir);
    write_png(good, img, GREY);
    fm_test_proc r;
    fm_test_spawn(&r, (char *[]){FMHOST, "predict", "--model", "mlp", "--out", (char *)dir, good,
                                 NULL}, NULL, 60);
    ck_assert_int_eq(r.status, 1);
    ck_assert_msg(strstr(r.err, "mlp_best.safetensors") && strstr(r.err, "--weights"), "%s",
                  r.err);
    fm_test_proc_free(&r);
    fm_test_spawn(&r, (char *[]){FMHOST, "predict", "--model", "mlp", NULL}, NULL, 60);
    ck_assert_int_eq(r.status, 2);
    ck_assert_msg(strstr(r.err, "no IMAGE"), "%s", r.err);
    fm_test_proc_free(&r);
    fm_test_rmtree(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("predict");
    TCase *tc = tcase_create("predict");
    tcase_add_test(tc, test_predict_as_eval);
    tcase_add_test(tc, test_predict_errors);
    suite_add_tcase(s, tc);
    return fm_test_run(s);
}
