/* fmhost eval: a checkpoint on the test set; fmhost report: redraw plots. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fm/fm_io.h"
#include "fm/fm_track.h"

static const char eval_usage[] =
    "usage: fmhost eval (--model NAME | --plugin PATH) [--weights FILE] [options]\n"
    "\n"
    "Evaluates a checkpoint on the 10,000 test images and writes the report files\n"
    "(confusion matrix, classification report, per-class table, errors) to\n"
    "OUT/results/<model>/.  The hyper-parameters come from the checkpoint's\n"
    "metadata unless --set is given.  Safetensors files saved by PyTorch from the\n"
    "equivalent module (same state_dict names) load as they are.\n"
    "\n"
    "  --weights FILE   safetensors checkpoint (OUT/artifacts/<model>_best.safetensors)\n"
    "  --set KEY=VALUE  a hyper-parameter of the plugin (repeatable)\n"
    "  --data-dir DIR   FashionMNIST IDX files\n"
    "  --out DIR        where artifacts/ and results/ are (.)\n"
    "  --threads N      worker threads, 0 = one per core (0)\n"
    "  --kernels NAME   kernel set: portable, avx2 or avx512 (default: $FMHOST_KERNELS,\n"
    "                   else the best this processor runs).  A checkpoint evaluates on\n"
    "                   any set; its metadata names the set that trained it\n"
    "  --precision P    fp32 or bf16: linear and convolution layers in bfloat16 with\n"
    "                   float32 accumulation, as PyTorch's CPU autocast (fp32)\n"
    "  --tta            test-time augmentation by horizontal flip: each image's logits\n"
    "                   are the mean of the model's on it and on its mirror image\n"
    "  --runs-db PATH   record the evaluation in this run store (else $FMHOST_RUNS_DB,\n"
    "                   else OUT/runs.db; its files are kept in OUT/runs/<id>/)\n"
    "  --no-track       do not record it\n";

enum {
    E_MODEL = 256, E_PLUGIN, E_WEIGHTS, E_SET, E_DATA, E_OUT, E_THREADS, E_KERNELS, E_HELP,
    E_PRECISION, E_RUNS_DB, E_NO_TRACK, E_TTA,
};

static const struct option eval_options[] = {
    {"model", required_argument, NULL, E_MODEL},
    {"plugin", required_argument, NULL, E_PLUGIN},
    {"weights", required_argument, NULL, E_WEIGHTS},
    {"set", required_argument, NULL, E_SET},
    {"data-dir", required_argument, NULL, E_DATA},
    {"out", required_argument, NULL, E_OUT},
    {"threads", required_argument, NULL, E_THREADS},
    {"kernels", required_argument, NULL, E_KERNELS},
    {"precision", required_argument, NULL, E_PRECISION},
    {"help", no_argument, NULL, E_HELP},
    {"runs-db", required_argument, NULL, E_RUNS_DB},
    {"no-track", no_argument, NULL, E_NO_TRACK},
    {"tta", no_argument, NULL, E_TTA},
    {NULL, 0, NULL, 0},
};

/* The evaluation's row in the run store (opened, or created, at
 * runs_db/$FMHOST_RUNS_DB/OUT/runs.db). */
static fm_status track_begin(fm_track **store, const char *runs_db, const char *out, const char *name,
                             const fm_plugin *plugin, const fm_hparams *hp, const char *weights,
                             const char *data_dir, int threads, bool tta, int64_t params,
                             const char *command)
{
    char path[4096], hs[512], sha[65] = "", th[16];
    fm_status st = fm_track_open(store, fm_track_default_path(runs_db, out, path, sizeof path), true);
    if (st != FM_OK) return st;
    int n = fm_hparams_count(hp);
    const char *hp_kv[2 * 64];
    for (int i = 0; i < n && i < 64; i++) {
        hp_kv[2 * i] = fm_hparams_name_at(hp, i);
        hp_kv[2 * i + 1] = fm_hparams_value_at(hp, i);
    }
    if (fm_sha256_file(weights, sha, NULL) != FM_OK) fm_error_clear();
    snprintf(th, sizeof th, "%d", threads);
    const char *opt_kv[] = {
        "weights", weights, "weights_sha256", sha, "threads", th,
        "kernels", fm_kernels_name(fm_kernels_active()),
        "precision", fm_precision_name(fm_precision_active()), "out", out, "data_dir", data_dir,
        "tta", tta ? "true" : "false",
    };
    fm_track_start s = {
        .kind = "eval", .model = name, .command = command, .plugin_path = fm_plugin_path(plugin),
        .hparams = fm_hparams_to_string(hp, hs, sizeof hs), .hp_kv = hp_kv, .n_hp = n < 64 ? n : 64,
        .opt_kv = opt_kv, .n_opt = (int)(sizeof opt_kv / sizeof opt_kv[0] / 2),
        .threads = threads, .kernels = fm_kernels_name(fm_kernels_active()),
        .precision = fm_precision_name(fm_precision_active()), .out_dir = out,
        .data_dir = data_dir, .params = params,
    };
    if ((st = fm_track_begin(*store, &s)) != FM_OK) {
        fm_track_close(*store);
        *store = NULL;
    }
    return st;
}

/* Its end: the report files kept in the run's folder, the test numbers.
 * A failed write here is reported, not fatal: the evaluation is done. */
static void track_end(fm_track *store, const char *results, const char *weights,
                      const fm_eval_result *res, double seconds)
{
    static const char *const files[] = {
        "confusion_matrix.png", "confusion_matrix.csv", "classification_report.txt",
        "per_class.csv", "errors.png",
    };
    char path[4200];
    fm_status st = FM_OK;
    for (size_t i = 0; st == FM_OK && i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", results, files[i]);
        st = fm_track_keep(store, path, NULL);
    }
    if (st == FM_OK) st = fm_track_keep(store, weights, NULL);
    fm_track_end e = {
        .status = "completed", .val_loss = NAN, .val_acc = NAN, .test_loss = res->loss,
        .test_acc = res->acc, .test_n = res->n,
        .confusion = (const int64_t(*)[FM_NUM_CLASSES])res->confusion, .wall_seconds = seconds,
    };
    if (st == FM_OK) st = fm_track_finish(store, &e);
    if (st != FM_OK)
        fm_log(FM_LOG_WARN, "the run store missed a write: %s", fm_error_message());
}

int fm_cmd_eval(int argc, char **argv)
{
    const char *cmd = "eval", *model = NULL, *plugin_path = NULL, *weights = NULL;
    const char *data_dir = NULL, *out = ".";
    const char *sets[FM_CLI_MAX_SETS];
    int n_sets = 0, threads = 0;
    const char *runs_db = NULL;
    bool track = true, tta = false;
    opterr = 0;
    optind = 1;
    /* The leading ':' makes a missing value come back as ':', not '?'. */
    for (int c; (c = getopt_long(argc, argv, ":", eval_options, NULL)) != -1;) {
        switch (c) {
        case E_MODEL: model = optarg; break;
        case E_PLUGIN: plugin_path = optarg; break;
        case E_WEIGHTS: weights = optarg; break;
        case E_SET:
            if (!fm_cli_add_set(cmd, optarg, sets, &n_sets)) return FM_EXIT_USAGE;
            break;
        case E_DATA: data_dir = optarg; break;
        case E_OUT: out = optarg; break;
        case E_THREADS:
            if (!fm_cli_int(optarg, 0, 256, &threads))
                return fm_cli_usage_error(cmd, "--threads '%s': expected an integer from 0 to 256", optarg);
            break;
        case E_KERNELS:
            if (!fm_cli_use_kernels(cmd, optarg)) return FM_EXIT_USAGE;
            break;
        case E_PRECISION: {
            fm_precision p;
            if (!fm_cli_precision(cmd, optarg, &p)) return FM_EXIT_USAGE;
            fm_precision_use(p);
            break;
        }
        case E_RUNS_DB: runs_db = optarg; break;
        case E_NO_TRACK: track = false; break;
        case E_TTA: tta = true; break;
        case E_HELP: fputs(eval_usage, stdout); return FM_EXIT_OK;
        case ':': return fm_cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return fm_cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return fm_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!plugin_path == !model)
        return fm_cli_usage_error(cmd, "give exactly one of --model NAME or --plugin PATH");
    fm_set_threads(threads);

    fm_plugin *plugin = fm_cli_open_plugin(cmd, plugin_path, model);
    if (!plugin) return FM_EXIT_FAIL;
    const char *name = fm_plugin_descriptor_of(plugin)->name;
    char default_weights[4096], results[4096], meta_hp[512] = "";
    snprintf(default_weights, sizeof default_weights, "%s/artifacts/%s_best.safetensors", out, name);
    snprintf(results, sizeof results, "%s/results/%s", out, name);
    if (!weights) weights = default_weights;

    int rc = FM_EXIT_FAIL;
    fm_status st;
    fm_meta *meta = NULL;
    fm_hparams *hp = NULL;
    fm_model *m = NULL;
    fm_fashion data = {0};
    fm_subset test = {0};
    uint8_t *pred = NULL;
    float *conf = NULL;
    fm_track *store = NULL;
    char *command = fm_cli_command_line("fmhost", argc, argv);
    double t0 = fm_now();
    if ((st = fm_safetensors_read_meta(weights, &meta)) != FM_OK) {
        rc = fm_cli_fail(cmd, st);
        goto done;
    }
    const char *ckpt_plugin = fm_meta_get(meta, "plugin");
    bool same_plugin = !ckpt_plugin || strcmp(ckpt_plugin, name) == 0;
    if (!same_plugin)
        fm_log(FM_LOG_WARN, "%s was saved by plugin '%s', evaluating it with '%s'", weights,
               ckpt_plugin, name);
    const char *ckpt_kernels = fm_meta_get(meta, "kernels");
    const char *own_kernels = fm_kernels_name(fm_kernels_active());
    /* avx2 and avx512 agree bit for bit; portable rounds otherwise. */
    if (ckpt_kernels && (strcmp(ckpt_kernels, "portable") == 0) != (strcmp(own_kernels, "portable") == 0))
        fm_log(FM_LOG_INFO, "%s was trained with the %s kernels and is evaluated with %s, which "
               "round differently: the last digits may differ from the training run's report "
               "(--kernels %s reproduces it)", weights, ckpt_kernels, own_kernels, ckpt_kernels);
    /* Another plugin's hyper-parameters would be refused as unknown keys the
     * user never typed; the tensor check below names the real mismatch. */
    if (n_sets == 0 && same_plugin && fm_meta_get(meta, "hparams")) {
        snprintf(meta_hp, sizeof meta_hp, "%s", fm_meta_get(meta, "hparams"));
        n_sets = fm_cli_split_hparams(meta_hp, sets, FM_CLI_MAX_SETS);
    }
    if (!(hp = fm_hparams_new(plugin, sets, n_sets)) || !(m = fm_plugin_create_model(plugin, hp, 0))) {
        rc = fm_cli_fail(cmd, fm_error_status());
        goto done;
    }
    if ((st = fm_safetensors_load(weights, m, NULL)) != FM_OK ||
        (st = fm_fashion_load(&data, data_dir)) != FM_OK || (st = fm_mkdirs(results)) != FM_OK ||
        (track && (st = track_begin(&store, runs_db, out, name, plugin, hp, weights, data.dir,
                                    threads, tta, fm_model_num_params(m), command)) != FM_OK)) {
        rc = fm_cli_fail(cmd, st);
        goto done;
    }
    fm_subset_all(&test, &data.test, 0);
    pred = fm_xcalloc((size_t)test.n, 1);
    conf = fm_xcalloc((size_t)test.n, sizeof *conf);
    fm_eval_result res;
    if ((st = fm_evaluate_tta(m, &test, 256, tta, &res, pred, conf)) != FM_OK ||
        (st = fm_eval_write_report(&res, results, name)) != FM_OK) {
        rc = fm_cli_fail(cmd, st);
        goto done;
    }
    printf("%s: test loss %.4f, test accuracy %.4f on %d images (%s, %s kernels, %s); report "
           "in %s\n", name, res.loss, res.acc, res.n, weights, fm_kernels_name(fm_kernels_active()),
           fm_precision_name(fm_precision_active()), results);
    rc = FM_EXIT_OK;
    if (store) {
        track_end(store, results, weights, &res, fm_now() - t0);
        printf("run %lld recorded in %s\n", (long long)fm_track_run_id(store), fm_track_path(store));
    }
done:
    if (store && rc != FM_EXIT_OK) {
        fm_track_end e = {.status = "failed", .message = fm_error_message(), .test_loss = NAN,
                          .test_acc = NAN, .val_loss = NAN, .val_acc = NAN,
                          .wall_seconds = fm_now() - t0};
        fm_track_finish(store, &e);
    }
    fm_track_close(store);
    free(command);
    free(pred);
    free(conf);
    fm_subset_free(&test);
    fm_fashion_free(&data);
    fm_model_free(m);
    fm_hparams_free(hp);
    fm_meta_free(meta);
    fm_plugin_release(plugin);
    return rc;
}

static const char report_usage[] =
    "usage: fmhost report RESULTS_DIR\n"
    "\n"
    "Redraws loss.png and acc.png in RESULTS_DIR (e.g. results/cnn) from its\n"
    "metrics.csv, for any past run.\n";

int fm_cmd_report(int argc, char **argv)
{
    if (argc != 2) return fm_cli_usage_error("report", "expected one results directory");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(report_usage, stdout);
        return FM_EXIT_OK;
    }
    fm_status st = fm_report_plots_from_metrics(argv[1]);
    if (st != FM_OK) return fm_cli_fail("report", st);
    printf("redrew %s/loss.png and %s/acc.png\n", argv[1], argv[1]);
    return FM_EXIT_OK;
}
