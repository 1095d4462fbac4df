/* fmhost summary: a model layer by layer, read from the graph of one forward
 * pass, so that any plugin gets it without declaring anything. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fm_internal.h"

static const char summary_usage[] =
    "usage: fmhost summary (--model NAME | --plugin PATH) [--set KEY=VALUE]... [options]\n"
    "\n"
    "Prints the model one row per op of its forward pass, as the plugin builds it:\n"
    "the module (named after its parameters, e.g. layers.0.conv1), the op, the\n"
    "output shape, the trainable parameters it uses and its FLOPs (2 per\n"
    "multiply-add of linear and convolution layers, the convention of the plugins'\n"
    "`flops` export); then the totals.  The pass runs in evaluation mode on zeros.\n"
    "\n"
    "  --set KEY=VALUE  a hyper-parameter of the plugin (repeatable)\n"
    "  --weights FILE   take the hyper-parameters from this checkpoint's metadata\n"
    "  --batch N        images in the pass: the shapes' and FLOPs' batch (1)\n"
    "  --json           one JSON object instead of the table\n";

enum { S_MODEL = 256, S_PLUGIN, S_SET, S_WEIGHTS, S_BATCH, S_JSON, S_HELP };

static const struct option summary_options[] = {
    {"model", required_argument, NULL, S_MODEL},
    {"plugin", required_argument, NULL, S_PLUGIN},
    {"set", required_argument, NULL, S_SET},
    {"weights", required_argument, NULL, S_WEIGHTS},
    {"batch", required_argument, NULL, S_BATCH},
    {"json", no_argument, NULL, S_JSON},
    {"help", no_argument, NULL, S_HELP},
    {NULL, 0, NULL, 0},
};

typedef struct layer_row {
    char module[128];  /* parameters' common prefix, "" for an op without */
    const char *op;
    const fm_tensor *out;
    int64_t params;    /* trainable scalars this op is the first to use */
    double flops;
} layer_row;

/* 2 per multiply-add of the products; the other ops move memory. */
static double node_flops(const fm_node *n)
{
    const fm_tensor *y = n->out, *w = n->in[1];
    switch (n->op) {
    case FM_OP_LINEAR: return 2.0 * y->shape[0] * y->shape[1] * w->shape[1];
    case FM_OP_CONV2D:
        return 2.0 * (double)y->numel * w->shape[1] * w->shape[2] * w->shape[3];
    default: return 0.0;
    }
}

/* The module of a parameter "layers.0.conv1.weight": "layers.0.conv1". */
static void module_of(const char *param, char *out, size_t len)
{
    snprintf(out, len, "%s", param);
    char *dot = strrchr(out, '.');
    if (dot) *dot = '\0';
}

static bool seen_before(const fm_tensor *const *seen, int n, const fm_tensor *t)
{
    for (int i = 0; i < n; i++)
        if (seen[i] == t) return true;
    return false;
}

/* One row per traced node; a parameter shared by several ops counts once. */
static layer_row *summary_rows(const fm_node *const *nodes, int n, int64_t *total_params,
                               double *total_flops)
{
    layer_row *rows = fm_xcalloc((size_t)n + 1, sizeof *rows);
    const fm_tensor **seen = fm_xcalloc((size_t)n * FM_NODE_MAX_IN + 1, sizeof *seen);
    int n_seen = 0;
    *total_params = 0;
    *total_flops = 0.0;
    for (int i = 0; i < n; i++) {
        const fm_node *node = nodes[i];
        layer_row *r = &rows[i];
        r->op = fm_op_table[node->op].name;
        r->out = node->out;
        r->flops = node_flops(node);
        for (int k = 0; k < node->n_in; k++) {
            const fm_tensor *t = node->in[k];
            if (!t || !t->name) continue;  /* an activation, or an absent bias */
            if (!r->module[0]) module_of(t->name, r->module, sizeof r->module);
            if (!t->requires_grad || seen_before(seen, n_seen, t)) continue;  /* a buffer */
            seen[n_seen++] = t;
            r->params += t->numel;
        }
        *total_params += r->params;
        *total_flops += r->flops;
    }
    free(seen);
    return rows;
}

static int64_t buffer_values(const fm_model *m)
{
    int64_t n = 0;
    for (int i = 0; i < fm_model_count(m); i++) {
        fm_model_entry e = fm_model_entry_at(m, i);
        if (e.is_buffer) n += e.tensor->numel;
    }
    return n;
}

/* 1234567 -> "1,234,567" */
static const char *grouped(double v, char *buf, size_t len)
{
    char digits[64];
    snprintf(digits, sizeof digits, "%.0f", v);
    size_t nd = strlen(digits), o = 0;
    for (size_t i = 0; i < nd && o + 2 < len; i++) {
        if (i && (nd - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

static void print_table(const fm_cli_model *cm, const layer_row *rows, int n, int batch,
                        int64_t params, double flops)
{
    double activation_bytes = 0.0;  /* op outputs; flatten's is a view */
    for (int i = 0; i < n; i++)
        if (strcmp(rows[i].op, "flatten")) activation_bytes += 4.0 * (double)rows[i].out->numel;
    char hp[512], a[64], b[64], shape[64], label[160];
    fm_hparams_to_string(cm->hp, hp, sizeof hp);
    printf("%s (%s)%s%s\ninput [%d, 1, 28, 28]\n\n", cm->name,
           fm_plugin_descriptor_of(cm->plugin)->description, hp[0] ? ": " : "", hp, batch);
    const char *rule = "-----------------------------------------------------------------------"
                       "-------------";
    printf("%-36s %-20s %12s %14s\n%s\n", "Layer (op)", "Output shape", "Params", "FLOPs", rule);
    for (int i = 0; i < n; i++) {
        const layer_row *r = &rows[i];
        if (r->module[0])
            snprintf(label, sizeof label, "%s (%s)", r->module, r->op);
        else
            snprintf(label, sizeof label, "(%s)", r->op);
        printf("%-36s %-20s %12s %14s\n", label, fm_tensor_shape_str(r->out, shape, sizeof shape),
               r->params ? grouped((double)r->params, a, sizeof a) : "-",
               r->flops ? grouped(r->flops, b, sizeof b) : "-");
    }
    printf("%s\n", rule);
    printf("Total params: %s (%.2f MB as float32); buffers: %s values\n",
           grouped((double)params, a, sizeof a), (double)params * 4 / 1e6,
           grouped((double)buffer_values(cm->model), b, sizeof b));
    printf("Total FLOPs for a batch of %d: %s (%.2f MFLOPs per image)\n", batch,
           grouped(flops, a, sizeof a), flops / batch / 1e6);
    printf("Forward activations (evaluation, batch %d): %.1f kB\n", batch,
           activation_bytes / 1e3);
}

static void print_json(const fm_cli_model *cm, const layer_row *rows, int n, int batch,
                       int64_t params, double flops)
{
    char hp[512];
    fm_hparams_to_string(cm->hp, hp, sizeof hp);
    json_t *layers = json_array();
    for (int i = 0; i < n; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < rows[i].out->ndim; d++)
            json_array_append_new(shape, json_integer(rows[i].out->shape[d]));
        json_array_append_new(layers, json_pack("{s:s, s:s, s:o, s:I, s:f}", "module",
                                                rows[i].module, "op", rows[i].op, "shape", shape,
                                                "params", (json_int_t)rows[i].params, "flops",
                                                rows[i].flops));
    }
    json_t *root = json_pack("{s:s, s:s, s:i, s:o, s:I, s:I, s:f}", "model", cm->name, "hparams",
                             hp, "batch", batch, "layers", layers, "total_params",
                             (json_int_t)params, "buffer_values",
                             (json_int_t)buffer_values(cm->model), "total_flops", flops);
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    puts(text);
    free(text);
    json_decref(root);
}

int fm_cmd_summary(int argc, char **argv)
{
    const char *cmd = "summary";
    fm_cli_model_args a = {.cmd = cmd};
    const char *sets[FM_CLI_MAX_SETS];
    int batch = 1;
    bool json = false;
    opterr = 0;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":", summary_options, NULL)) != -1;) {
        switch (c) {
        case S_MODEL: a.model_name = optarg; break;
        case S_PLUGIN: a.plugin_path = optarg; break;
        case S_SET:
            if (!fm_cli_add_set(cmd, optarg, sets, &a.n_sets)) return FM_EXIT_USAGE;
            break;
        case S_WEIGHTS: a.weights = optarg; break;
        case S_BATCH:
            if (!fm_cli_int(optarg, 1, 4096, &batch))
                return fm_cli_usage_error(cmd, "--batch '%s': expected an integer from 1 to 4096",
                                          optarg);
            break;
        case S_JSON: json = true; break;
        case S_HELP: fputs(summary_usage, stdout); return FM_EXIT_OK;
        case ':': return fm_cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return fm_cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return fm_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!a.plugin_path == !a.model_name)
        return fm_cli_usage_error(cmd, "give exactly one of --model NAME or --plugin PATH");
    a.sets = sets;

    fm_cli_model cm;
    int rc = fm_cli_model_open(&cm, &a);
    if (rc != FM_EXIT_OK) return rc;
    fm_graph *g = fm_graph_new();
    fm_tensor *x, *logits;
    fm_status st = fm_cli_model_trace(&cm, g, NULL, batch, &x, &logits);
    if (st != FM_OK) {
        rc = fm_cli_fail(cmd, st);
    } else {
        const fm_node *const *nodes;
        int n = fm_graph_trace(g, &nodes);
        int64_t params;
        double flops;
        layer_row *rows = summary_rows(nodes, n, &params, &flops);
        if (json)
            print_json(&cm, rows, n, batch, params, flops);
        else
            print_table(&cm, rows, n, batch, params, flops);
        free(rows);
    }
    fm_graph_free(g);
    fm_cli_model_close(&cm);
    return rc;
}
