/* fmhost export --safetensors: the weights again in f32, bf16 or f16, each
 * value the rounding of the checkpoint's, with the plugin and its
 * hyper-parameters in the metadata so that eval and predict read the file
 * as they are; and export's usage errors.  (--onnx: test_onnx.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm/fm_io.h"
#include "fm/fm_plugin.h"
#include "fm_test_util.h"

#define FMHOST FM_BINARY_DIR "/fmhost"

static float rounded(float x, fm_float_dtype as)
{
    if (as == FM_FLOAT_BF16) return fm_f32_from_bf16(fm_bf16_from_f32(x));
    if (as == FM_FLOAT_F16) return fm_f32_from_f16(fm_f16_from_f32(x));
    return x;
}

START_TEST(test_export_safetensors_dtypes)
{
    const fm_float_dtype as = (fm_float_dtype)_i;
    const char *dir = fm_test_tmpdir();
    char weights[4096], out[4096];
    snprintf(weights, sizeof weights, "%s/w.safetensors", dir);
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    fm_plugin *p = fm_plugin_open(FM_PLUGIN_DIR "/rescnn.so");
    ck_assert_msg(p, "%s", fm_error_message());
    const char *set[] = {"width=4"};
    fm_hparams *hp = fm_hparams_new(p, set, 1);
    fm_model *a = fm_plugin_create_model(p, hp, 5);
    const char *meta[] = {"plugin", "rescnn", "hparams", "width=4 blocks=1"};
    ck_assert_int_eq(fm_safetensors_save(weights, a, meta, 2), FM_OK);

    fm_test_proc r;
    fm_test_spawn(&r, (char *[]){FMHOST, "export", "--model", "rescnn", "--weights", weights,
                                 "--safetensors", out, "--dtype",
                                 (char *)fm_float_dtype_name(as), NULL}, NULL, 60);
    ck_assert_msg(r.status == 0, "%d\n%s", r.status, r.err);
    ck_assert_msg(strstr(r.out, fm_float_dtype_name(as)), "%s", r.out);
    fm_test_proc_free(&r);

    /* The hyper-parameters travel with the file: a width-4 model loads it. */
    fm_model *b = fm_plugin_create_model(p, hp, 6);
    fm_meta *got = NULL;
    ck_assert_msg(fm_safetensors_load(out, b, &got) == FM_OK, "%s", fm_error_message());
    ck_assert_str_eq(fm_meta_get(got, "plugin"), "rescnn");
    ck_assert_str_eq(fm_meta_get(got, "hparams"), "width=4 blocks=1");
    for (int i = 0; i < fm_model_count(a); i++) {
        const fm_tensor *t = fm_model_entry_at(a, i).tensor, *u = fm_model_entry_at(b, i).tensor;
        for (int64_t k = 0; k < t->numel; k++)
            if (t->dtype == FM_I64 ? u->i64[k] != t->i64[k]
                                   : fm_test_bits_of(u->data[k]) != fm_test_bits_of(rounded(t->data[k], as)))
                ck_abort_msg("%s[%lld] differs", fm_model_entry_at(a, i).name, (long long)k);
    }
    fm_meta_free(got);
    fm_model_free(a);
    fm_model_free(b);
    fm_hparams_free(hp);
    fm_plugin_release(p);
    fm_test_rmtree(dir);
}
END_TEST

START_TEST(test_export_usage_errors)
{
    fm_test_proc r;
    fm_test_spawn(&r, (char *[]){FMHOST, "export", "--model", "mlp", NULL}, NULL, 60);
    ck_assert_int_eq(r.status, 2);
    ck_assert_msg(strstr(r.err, "--onnx FILE") && strstr(r.err, "--safetensors FILE"), "%s", r.err);
    fm_test_proc_free(&r);
    fm_test_spawn(&r, (char *[]){FMHOST, "export", "--model", "mlp", "--safetensors", "x",
                                 "--dtype", "f8", NULL}, NULL, 60);
    ck_assert_int_eq(r.status, 2);
    ck_assert_msg(strstr(r.err, "'f8'") && strstr(r.err, "f16"), "%s", r.err);
    fm_test_proc_free(&r);
    fm_test_spawn(&r, (char *[]){FMHOST, "export", "--help", NULL}, NULL, 60);
    ck_assert_int_eq(r.status, 0);
    ck_assert_msg(strstr(r.out, "usage: fmhost export") && strstr(r.out, "opset 13"), "%s", r.out);
    fm_test_proc_free(&r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("export");
    TCase *tc = tcase_create("export");
    tcase_add_loop_test(tc, test_export_safetensors_dtypes, FM_FLOAT_F32, FM_FLOAT_F16 + 1);
    tcase_add_test(tc, test_export_usage_errors);
    suite_add_tcase(s, tc);
    return fm_test_run(s);
}
