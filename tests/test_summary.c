/* fmhost summary: its totals, read from the graph of one forward pass, equal
 * the model's own parameter count and the plugin's `flops` export, for every
 * shipped plugin and the template's LeNet, with non-default hyper-parameters
 * too; its errors name what is wrong. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "fm/fm_plugin.h"
#include "fm_test_util.h"

#define FMHOST FM_BINARY_DIR "/fmhost"

typedef struct summary_case {
    const char *plugin;  /* file in FM_PLUGIN_DIR */
    const char *set[2];  /* --set values, NULL-ended */
} summary_case;

static const summary_case cases[] = {
    {"mlp.so", {NULL}},
    {"cnn.so", {NULL}},
    {"rescnn.so", {NULL}},
    {"lenet.so", {NULL}},
    {"mlp.so", {"hidden1=64", NULL}},
    {"rescnn.so", {"width=8", "blocks=2"}},
    {"lenet.so", {"batchnorm=true", "c1=4"}},
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

START_TEST(test_summary_totals)
{
    const summary_case *c = &cases[_i];
    const int batch = 3;
    char path[4096], batch_s[16];
    snprintf(path, sizeof path, "%s/%s", FM_PLUGIN_DIR, c->plugin);
    snprintf(batch_s, sizeof batch_s, "%d", batch);
    char *argv[16] = {FMHOST, "summary", "--plugin", path, "--json", "--batch", batch_s};
    int argc = 7, n_set = 0;
    for (; n_set < 2 && c->set[n_set]; n_set++) {
        argv[argc++] = "--set";
        argv[argc++] = (char *)c->set[n_set];
    }
    argv[argc] = NULL;
    fm_test_proc r;
    fm_test_spawn(&r, argv, NULL, 60);
    ck_assert_msg(r.status == 0, "%s: status %d\n%s", c->plugin, r.status, r.err);
    json_error_t jerr;
    json_t *root = json_loads(r.out, 0, &jerr);
    ck_assert_msg(root, "%s: not JSON (%s): %s", c->plugin, jerr.text, r.out);

    /* The same model, made through the library. */
    fm_plugin *p = fm_plugin_open(path);
    ck_assert_msg(p, "%s", fm_error_message());
    fm_hparams *hp = fm_hparams_new(p, c->set, n_set);
    ck_assert_msg(hp, "%s", fm_error_message());
    fm_model *m = fm_plugin_create_model(p, hp, 0);
    ck_assert_msg(m, "%s", fm_error_message());
    int fi = fm_plugin_export_find(p, "flops");
    ck_assert_int_ge(fi, 0);
    fm_ffi_value args[2] = {{.m = NULL}, {.i = batch}}, ret;
    ck_assert_int_eq(fm_plugin_export_call(p, fi, m, args, 2, &ret), FM_OK);

    json_int_t total_params = json_integer_value(json_object_get(root, "total_params"));
    double total_flops = json_number_value(json_object_get(root, "total_flops"));
    ck_assert_msg(total_params == fm_model_num_params(m), "%s: summary %lld params, model %lld",
                  c->plugin, (long long)total_params, (long long)fm_model_num_params(m));
    ck_assert_msg(total_flops == ret.d, "%s: summary %.0f FLOPs, flops export %.0f", c->plugin,
                  total_flops, ret.d);

    /* The rows add up to the totals, and the last one is the logits. */
    json_t *layers = json_object_get(root, "layers");
    ck_assert(json_array_size(layers) > 0);
    json_int_t sum_params = 0;
    double sum_flops = 0;
    size_t i;
    json_t *row;
    json_array_foreach(layers, i, row) {
        sum_params += json_integer_value(json_object_get(row, "params"));
        sum_flops += json_number_value(json_object_get(row, "flops"));
    }
    ck_assert_int_eq(sum_params, total_params);
    ck_assert(sum_flops == total_flops);
    json_t *last = json_object_get(json_array_get(layers, json_array_size(layers) - 1), "shape");
    ck_assert_int_eq(json_array_size(last), 2);
    ck_assert_int_eq(json_integer_value(json_array_get(last, 0)), batch);
    ck_assert_int_eq(json_integer_value(json_array_get(last, 1)), 10);

    json_decref(root);
    fm_model_free(m);
    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_test_proc_free(&r);
}
END_TEST

/* The table names the modules; bad input is a usage error naming it. */
START_TEST(test_summary_table_and_errors)
{
    fm_test_proc r;
    fm_test_spawn(&r, (char *[]){FMHOST, "summary", "--model", "rescnn", NULL}, NULL, 60);
    ck_assert_int_eq(r.status, 0);
    ck_assert_msg(strstr(r.out, "layers.1.short.0 (conv2d)") && strstr(r.out, "Total params: 308,074"),
                  "%s", r.out);
    fm_test_proc_free(&r);

    fm_test_spawn(&r, (char *[]){FMHOST, "summary", "--model", "rescnn", "--set", "depth=3", NULL},
                  NULL, 60);
    ck_assert_int_eq(r.status, 2);
    ck_assert_msg(strstr(r.err, "depth"), "%s", r.err);
    fm_test_proc_free(&r);

    fm_test_spawn(&r, (char *[]){FMHOST, "summary", "--model", "nosuchmodel", NULL}, NULL, 60);
    ck_assert_int_ne(r.status, 0);
    ck_assert_msg(strstr(r.err, "nosuchmodel"), "%s", r.err);
    fm_test_proc_free(&r);

    fm_test_spawn(&r, (char *[]){FMHOST, "summary", "--model", "mlp", "--batch", "0", NULL}, NULL, 60);
    ck_assert_int_eq(r.status, 2);
    ck_assert_msg(strstr(r.err, "--batch '0'"), "%s", r.err);
    fm_test_proc_free(&r);

    fm_test_spawn(&r, (char *[]){FMHOST, "summary", "--help", NULL}, NULL, 60);
    ck_assert_int_eq(r.status, 0);
    ck_assert_msg(strstr(r.out, "usage: fmhost summary"), "%s", r.out);
    fm_test_proc_free(&r);
}
END_TEST

static Suite *summary_suite(void)
{
    Suite *s = suite_create("summary");
    TCase *tc = tcase_create("summary");
    tcase_add_loop_test(tc, test_summary_totals, 0, N_CASES);
    tcase_add_test(tc, test_summary_table_and_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return fm_test_run(summary_suite()); }
