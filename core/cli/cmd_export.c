/* fmhost export: a trained model for other runtimes — ONNX, or safetensors
 * in another dtype. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fm/fm_io.h"
#include "fm_internal.h"

static const char export_usage[] =
    "usage: fmhost export (--model NAME | --plugin PATH) [--weights FILE]\n"
    "                     [--onnx OUT.onnx] [--safetensors OUT.safetensors] [options]\n"
    "\n"
    "Writes a trained model for use outside fmhost (one or both of the files).\n"
    "--onnx walks the graph of one evaluation-mode forward pass and writes it as\n"
    "ONNX (opset 13, the IR version of the onnx.proto built with, the batch\n"
    "dimension free): input \"input\" [batch, 1, 28, 28] of normalised pixels\n"
    "((pixel/255 - 0.2860) / 0.3530), output \"logits\" [batch, 10].  Linear,\n"
    "convolution, batch norm, ReLU, max and global average pooling, addition and\n"
    "flatten map to Gemm, Conv, BatchNormalization, Relu, MaxPool, GlobalAveragePool,\n"
    "Add and Flatten; dropout is left out.  --safetensors writes the weights again,\n"
    "in --dtype.  The hyper-parameters come from the checkpoint unless --set is given.\n"
    "\n"
    "  --weights FILE       safetensors checkpoint (OUT/artifacts/<model>_best.safetensors)\n"
    "  --set KEY=VALUE      a hyper-parameter of the plugin (repeatable)\n"
    "  --out DIR            where artifacts/ is, for the default --weights (.)\n"
    "  --onnx FILE          write the model as ONNX\n"
    "  --safetensors FILE   write the weights as safetensors\n"
    "  --dtype NAME         f32, bf16 or f16: the float tensors' dtype in --safetensors (f32)\n";

enum { X_MODEL = 256, X_PLUGIN, X_WEIGHTS, X_SET, X_OUT, X_ONNX, X_SAFETENSORS, X_DTYPE, X_HELP };

static const struct option export_options[] = {
    {"model", required_argument, NULL, X_MODEL},
    {"plugin", required_argument, NULL, X_PLUGIN},
    {"weights", required_argument, NULL, X_WEIGHTS},
    {"set", required_argument, NULL, X_SET},
    {"out", required_argument, NULL, X_OUT},
    {"onnx", required_argument, NULL, X_ONNX},
    {"safetensors", required_argument, NULL, X_SAFETENSORS},
    {"dtype", required_argument, NULL, X_DTYPE},
    {"help", no_argument, NULL, X_HELP},
    {NULL, 0, NULL, 0},
};

static fm_status export_onnx(fm_cli_model *cm, const char *path)
{
    fm_graph *g = fm_graph_new();
    fm_tensor *x, *logits;
    fm_status st = fm_cli_model_trace(cm, g, NULL, 1, &x, &logits);
    if (st == FM_OK) {
        const fm_node *const *nodes;
        int n = fm_graph_trace(g, &nodes);
        st = fm_cli_onnx_write(path, cm, nodes, n, x, logits);
    }
    fm_graph_free(g);
    return st;
}

static fm_status export_safetensors(const fm_cli_model *cm, const char *path, fm_float_dtype as)
{
    char hp[512];
    fm_hparams_to_string(cm->hp, hp, sizeof hp);
    const char *meta[] = {"plugin", cm->name, "hparams", hp, "exported_from",
                          cm->weights[0] ? cm->weights : "(initial, seed 0)"};
    return fm_safetensors_save_as(path, cm->model, meta, 3, as);
}

int fm_cmd_export(int argc, char **argv)
{
    const char *cmd = "export", *onnx = NULL, *safetensors = NULL;
    fm_cli_model_args a = {.cmd = cmd, .out_dir = ".", .need_weights = true};
    const char *sets[FM_CLI_MAX_SETS];
    fm_float_dtype dtype = FM_FLOAT_F32;
    opterr = 0;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":", export_options, NULL)) != -1;) {
        switch (c) {
        case X_MODEL: a.model_name = optarg; break;
        case X_PLUGIN: a.plugin_path = optarg; break;
        case X_WEIGHTS: a.weights = optarg; break;
        case X_SET:
            if (!fm_cli_add_set(cmd, optarg, sets, &a.n_sets)) return FM_EXIT_USAGE;
            break;
        case X_OUT: a.out_dir = optarg; break;
        case X_ONNX: onnx = optarg; break;
        case X_SAFETENSORS: safetensors = optarg; break;
        case X_DTYPE:
            if (fm_float_dtype_parse(optarg, &dtype) != FM_OK)
                return fm_cli_usage_error(cmd, "--dtype: %s", fm_error_message());
            break;
        case X_HELP: fputs(export_usage, stdout); return FM_EXIT_OK;
        case ':': return fm_cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return fm_cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return fm_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!a.plugin_path == !a.model_name)
        return fm_cli_usage_error(cmd, "give exactly one of --model NAME or --plugin PATH");
    if (!onnx && !safetensors)
        return fm_cli_usage_error(cmd, "nothing to write: give --onnx FILE and/or "
                                  "--safetensors FILE");
    a.sets = sets;

    fm_cli_model cm;
    int rc = fm_cli_model_open(&cm, &a);
    if (rc != FM_EXIT_OK) return rc;
    fm_status st;
    if (onnx) {
        if ((st = export_onnx(&cm, onnx)) != FM_OK) {
            rc = fm_cli_fail(cmd, st);
            goto done;
        }
        printf("%s: wrote %s (ONNX opset 13, from %s)\n", cm.name, onnx,
               cm.weights[0] ? cm.weights : "the initial weights");
    }
    if (safetensors) {
        if ((st = export_safetensors(&cm, safetensors, dtype)) != FM_OK) {
            rc = fm_cli_fail(cmd, st);
            goto done;
        }
        printf("%s: wrote %s (%s)\n", cm.name, safetensors, fm_float_dtype_name(dtype));
    }
done:
    fm_cli_model_close(&cm);
    return rc;
}
