/* What summary, export and predict share: a model from --model/--plugin,
 * --set and --weights, and one traced evaluation-mode forward pass of it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fm/fm_io.h"
#include "fm_internal.h"

int fm_cli_split_hparams(char *s, const char **out, int max)
{
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(s, " ", &save); tok && n < max;
         tok = strtok_r(NULL, " ", &save))
        out[n++] = tok;
    return n;
}

int fm_cli_model_open(fm_cli_model *cm, const fm_cli_model_args *a)
{
    memset(cm, 0, sizeof *cm);
    int rc = FM_EXIT_FAIL;
    const char *sets[FM_CLI_MAX_SETS];
    int n_sets = a->n_sets;
    memcpy(sets, a->sets, (size_t)n_sets * sizeof *sets);
    if (!(cm->plugin = fm_cli_open_plugin(a->cmd, a->plugin_path, a->model_name))) return rc;
    cm->name = fm_plugin_descriptor_of(cm->plugin)->name;
    if (a->weights)
        snprintf(cm->weights, sizeof cm->weights, "%s", a->weights);
    else if (a->need_weights)
        snprintf(cm->weights, sizeof cm->weights, "%s/artifacts/%s_best.safetensors",
                 a->out_dir ? a->out_dir : ".", cm->name);
    if (cm->weights[0] && access(cm->weights, F_OK) != 0) {
        fprintf(stderr, "fmhost %s: %s: no such checkpoint; train the model first (fmhost train "
                "--model %s) or give --weights FILE\n", a->cmd, cm->weights, cm->name);
        goto fail;
    }

    /* The checkpoint's hyper-parameters unless --set is given (as eval). */
    fm_meta *meta = NULL;
    char meta_hp[512] = "";
    if (cm->weights[0]) {
        if (fm_safetensors_read_meta(cm->weights, &meta) != FM_OK) {
            fprintf(stderr, "fmhost %s: %s\n", a->cmd, fm_error_message());
            goto fail;
        }
        const char *ckpt_plugin = fm_meta_get(meta, "plugin");
        bool same_plugin = !ckpt_plugin || strcmp(ckpt_plugin, cm->name) == 0;
        if (!same_plugin)
            fm_log(FM_LOG_WARN, "%s was saved by plugin '%s', reading it with '%s'", cm->weights,
                   ckpt_plugin, cm->name);
        if (n_sets == 0 && same_plugin && fm_meta_get(meta, "hparams")) {
            snprintf(meta_hp, sizeof meta_hp, "%s", fm_meta_get(meta, "hparams"));
            n_sets = fm_cli_split_hparams(meta_hp, sets, FM_CLI_MAX_SETS);
        }
        fm_meta_free(meta);
    }
    if (!(cm->hp = fm_hparams_new(cm->plugin, sets, n_sets)) ||
        !(cm->model = fm_plugin_create_model(cm->plugin, cm->hp, 0))) {
        rc = fm_cli_fail(a->cmd, fm_error_status());
        goto fail;
    }
    if (cm->weights[0] && fm_safetensors_load(cm->weights, cm->model, NULL) != FM_OK) {
        rc = fm_cli_fail(a->cmd, fm_error_status());
        goto fail;
    }
    return FM_EXIT_OK;
fail:
    fm_cli_model_close(cm);
    return rc;
}

void fm_cli_model_close(fm_cli_model *cm)
{
    fm_model_free(cm->model);
    fm_hparams_free(cm->hp);
    if (cm->plugin) fm_plugin_release(cm->plugin);
    memset(cm, 0, sizeof *cm);
}

fm_status fm_cli_model_trace(fm_cli_model *cm, fm_graph *g, const float *pixels, int batch,
                             fm_tensor **x, fm_tensor **logits)
{
    fm_graph_reset(g);
    fm_graph_set_training(g, false);
    fm_graph_set_grad(g, false);
    fm_graph_set_precision(g, FM_PRECISION_FP32);
    fm_graph_set_trace(g, true);
    *x = fm_graph_tensor(g, 4, (int[]){batch, 1, 28, 28});
    if (pixels)
        memcpy((*x)->data, pixels, (size_t)(*x)->numel * sizeof(float));
    else
        memset((*x)->data, 0, (size_t)(*x)->numel * sizeof(float));
    return fm_model_forward_checked(cm->model, g, *x, cm->name, logits);
}
