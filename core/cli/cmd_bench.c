/* fmhost bench: training and evaluation throughput, side by side with
 * shared/anchors/torch_ref.py bench (same keys, same protocol). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "fm/fm_dist.h"

static const char bench_usage[] =
    "usage: fmhost bench (--model NAME | --plugin PATH) [options]\n"
    "       fmhost bench --gemm [--kernels NAME]\n"
    "\n"
    "Times --batches training steps (Adam, after 10 warm-up steps) and the evaluation\n"
    "of 5,000 test images, then prints one JSON line:\n"
    "  {\"model\", \"params\", \"threads\", \"batch\", \"train_img_s\", \"eval_img_s\",\n"
    "   \"gflops\", \"peak_rss_mb\", \"arena_mb\", \"eval_batch\", \"eval_peak_rss_mb\",\n"
    "   \"kernels\", \"precision\", \"ranks\", \"step_ms\", \"comm_ms_per_step\",\n"
    "   \"comm_bytes_per_step\"}\n"
    "gflops is the training arithmetic rate (3x the plugin's forward flops export).\n"
    "Under mpirun (mpirun -np 2 fmhost bench --model cnn --threads 1) the steps run\n"
    "data-parallel over the ranks as fmhost train runs them, and rank 0 prints the line:\n"
    "comm_ms_per_step is its time per step inside the exchanges between ranks (waiting\n"
    "for the others included), comm_bytes_per_step the bytes it sent and received.\n"
    "peak_rss_mb is the process's peak resident memory when the timed training steps\n"
    "end (before evaluation); arena_mb is the per-step arena's capacity at that point;\n"
    "eval_peak_rss_mb is the peak after evaluation, which runs --eval-batch images per\n"
    "forward pass, at most 256 (a larger batch, such as torch_ref.py's 1000, runs as\n"
    "passes of 256, as fmhost eval and train evaluate: faster, in less memory).\n"
    "kernels is the kernel set that ran: \"portable\" (C loops and OpenBLAS), \"avx2\" or\n"
    "\"avx512\" (fmhost's own kernels for AVX2 + FMA or AVX-512).  To compare like with\n"
    "like, restrict PyTorch the same way (tools/bench_side_by_side.sh does both).\n"
    "\n"
    "  --batches N      timed training steps (200)\n"
    "  --batch-size N   images per step (64)\n"
    "  --eval-batch N   images per evaluation batch (256; passes of at most 256)\n"
    "  --threads N      worker threads, 0 = one per core (2)\n"
    "  --kernels NAME   kernel set: portable, avx2 or avx512 (default: $FMHOST_KERNELS,\n"
    "                   else the best this processor runs)\n"
    "  --precision P    fp32 or bf16: linear and convolution layers in bfloat16 with\n"
    "                   float32 accumulation, as PyTorch's CPU autocast (fp32)\n"
    "  --set KEY=VALUE  a hyper-parameter of the plugin (repeatable)\n"
    "  --profile        also print time per op type, forward and backward, to stderr\n"
    "  --data-dir DIR   FashionMNIST IDX files\n"
    "  --gemm           instead: time ResCNN's matrix products, one thread, on the kernel\n"
    "                   set in use (avx2 or avx512) beside OpenBLAS, as GFLOP/s and share\n"
    "                   of the set's measured peak (a Markdown table)\n";

enum {
    B_MODEL = 256, B_PLUGIN, B_BATCHES, B_BATCH, B_THREADS, B_SET, B_PROFILE, B_DATA, B_HELP,
    B_EVAL_BATCH, B_KERNELS, B_GEMM, B_PRECISION,
};

static const struct option bench_options[] = {
    {"model", required_argument, NULL, B_MODEL},
    {"plugin", required_argument, NULL, B_PLUGIN},
    {"batches", required_argument, NULL, B_BATCHES},
    {"batch-size", required_argument, NULL, B_BATCH},
    {"eval-batch", required_argument, NULL, B_EVAL_BATCH},
    {"threads", required_argument, NULL, B_THREADS},
    {"kernels", required_argument, NULL, B_KERNELS},
    {"precision", required_argument, NULL, B_PRECISION},
    {"gemm", no_argument, NULL, B_GEMM},
    {"set", required_argument, NULL, B_SET},
    {"profile", no_argument, NULL, B_PROFILE},
    {"data-dir", required_argument, NULL, B_DATA},
    {"help", no_argument, NULL, B_HELP},
    {NULL, 0, NULL, 0},
};

/* One training step on images [first, first + b) of the dataset; an error
 * when the plugin's forward returns no logits. */
static fm_status train_step(fm_model *m, const char *name, fm_graph *g, fm_optim *o,
                            const fm_dataset *d, int first, int b, int32_t *y)
{
    fm_graph_reset(g);
    /* Under mpirun, data-parallel as fmhost train: this rank's chunks. */
    int offset = 0, n = b;
    if (fm_dist_size() > 1) {
        fm_chunk_slice(b, &offset, &n);
        fm_graph_set_batch(g, b, offset, n);
    }
    int held = n ? n : 1;  /* a rank without a chunk runs a stand-in */
    fm_tensor *x = fm_graph_tensor(g, 4, (int[]){held, 1, FM_IMAGE_H, FM_IMAGE_W});
    for (int i = 0; i < held; i++) {
        int k = first + (n ? offset + i : 0);
        fm_image_normalize(d->images + (size_t)k * FM_IMAGE_PIXELS,
                           x->data + (size_t)i * FM_IMAGE_PIXELS);
        y[i] = d->labels[k];
    }
    fm_tensor *logits;
    fm_status st = fm_model_forward_checked(m, g, x, name, &logits);
    if (st != FM_OK) return st;
    fm_tensor *loss = fm_cross_entropy(g, logits, y);
    fm_model_zero_grad(m);
    fm_backward(g, loss);
    fm_optim_step(o);
    return FM_OK;
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;  /* kilobytes on Linux */
}

static void print_profile(const fm_graph *g, double total)
{
    fm_op_profile prof[64];
    int n = fm_graph_profile(g, prof, 64);
    fprintf(stderr, "%-16s %10s %10s %10s %7s\n", "op", "forward ms", "backward ms", "calls", "share");
    for (int i = 0; i < n && i < 64; i++) {
        if (!prof[i].forward_calls) continue;
        double s = prof[i].forward_s + prof[i].backward_s;
        fprintf(stderr, "%-16s %10.1f %10.1f %10lld %6.1f%%\n", prof[i].name, prof[i].forward_s * 1e3,
                prof[i].backward_s * 1e3, (long long)prof[i].forward_calls, 100.0 * s / total);
    }
}

int fm_cmd_bench(int argc, char **argv)
{
    const char *cmd = "bench", *model = NULL, *plugin_path = NULL, *data_dir = NULL;
    const char *sets[FM_CLI_MAX_SETS];
    int n_sets = 0, batches = 200, batch = 64, threads = 2, eval_batch = 256;
    bool profile = false, gemm = false;
    opterr = 0;
    optind = 1;
    /* The leading ':' makes a missing value come back as ':', not '?'. */
    for (int c; (c = getopt_long(argc, argv, ":", bench_options, NULL)) != -1;) {
        switch (c) {
        case B_MODEL: model = optarg; break;
        case B_PLUGIN: plugin_path = optarg; break;
        case B_BATCHES:
            if (!fm_cli_int(optarg, 1, 1000000, &batches))
                return fm_cli_usage_error(cmd, "--batches '%s': expected a positive integer", optarg);
            break;
        case B_BATCH:
            if (!fm_cli_int(optarg, 1, 4096, &batch))
                return fm_cli_usage_error(cmd, "--batch-size '%s': expected an integer from 1 to 4096", optarg);
            break;
        case B_EVAL_BATCH:
            if (!fm_cli_int(optarg, 1, 4096, &eval_batch))
                return fm_cli_usage_error(cmd, "--eval-batch '%s': expected an integer from 1 to 4096", optarg);
            break;
        case B_THREADS:
            if (!fm_cli_int(optarg, 0, 256, &threads))
                return fm_cli_usage_error(cmd, "--threads '%s': expected an integer from 0 to 256", optarg);
            break;
        case B_SET:
            if (!fm_cli_add_set(cmd, optarg, sets, &n_sets)) return FM_EXIT_USAGE;
            break;
        case B_KERNELS:
            if (!fm_cli_use_kernels(cmd, optarg)) return FM_EXIT_USAGE;
            break;
        case B_PRECISION: {
            fm_precision p;
            if (!fm_cli_precision(cmd, optarg, &p)) return FM_EXIT_USAGE;
            fm_precision_use(p);
            break;
        }
        case B_PROFILE: profile = true; break;
        case B_GEMM: gemm = true; break;
        case B_DATA: data_dir = optarg; break;
        case B_HELP: fputs(bench_usage, stdout); return FM_EXIT_OK;
        case ':': return fm_cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return fm_cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return fm_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (gemm) {
        if (plugin_path || model)
            return fm_cli_usage_error(cmd, "--gemm times matrix products alone: drop --model/--plugin");
        return fm_cli_bench_gemm(1.0);
    }
    if (!plugin_path == !model)
        return fm_cli_usage_error(cmd, "give exactly one of --model NAME or --plugin PATH");

    fm_fashion data;
    fm_status st = fm_fashion_load(&data, data_dir);
    if (st != FM_OK) return fm_cli_fail(cmd, st);
    if (data.train.n <= batch) {
        fprintf(stderr, "fmhost bench: %s holds only %d training images; --batch-size %d needs "
                "more\n", data.dir, data.train.n, batch);
        fm_fashion_free(&data);
        return FM_EXIT_FAIL;
    }
    fm_plugin *plugin = fm_cli_open_plugin(cmd, plugin_path, model);
    if (!plugin) {
        fm_fashion_free(&data);
        return FM_EXIT_FAIL;
    }
    fm_hparams *hp = fm_hparams_new(plugin, sets, n_sets);
    fm_model *m = hp ? fm_plugin_create_model(plugin, hp, 42) : NULL;
    if (!m) {
        st = fm_error_status();
        fm_hparams_free(hp);
        fm_plugin_release(plugin);
        fm_fashion_free(&data);
        return fm_cli_fail(cmd, st);
    }
    fm_set_threads(threads);
    int n_params;
    fm_tensor *const *params = fm_model_params(m, &n_params);
    fm_optim_config oc = fm_optim_defaults(FM_OPTIM_ADAM);
    fm_optim *opt = fm_optim_new(params, n_params, &oc);
    fm_graph *g = fm_graph_new();
    int32_t *y = fm_xcalloc((size_t)batch, sizeof *y);
    const int span = data.train.n - batch;

    const char *name = fm_plugin_descriptor_of(plugin)->name;
    for (int i = 0; i < 10 && st == FM_OK; i++)
        st = train_step(m, name, g, opt, &data.train, (i * batch) % span, batch, y);
    fm_graph_set_profile(g, profile);
    double comm0, comm_s;
    uint64_t bytes0, bytes;
    if (st == FM_OK) st = fm_dist_barrier();
    fm_dist_traffic(&comm0, &bytes0);
    double t0 = fm_now();
    for (int i = 0; i < batches && st == FM_OK; i++)
        st = train_step(m, name, g, opt, &data.train, (i * batch) % span, batch, y);
    double train_s = fm_now() - t0;
    fm_dist_traffic(&comm_s, &bytes);
    comm_s -= comm0;
    bytes -= bytes0;
    if (profile) print_profile(g, train_s);
    /* Training's footprint on its own: evaluation's larger batches and its
     * own arena would otherwise set the peak. */
    double train_rss_mb = peak_rss_mb();
    double arena_mb = (double)fm_arena_capacity(fm_graph_arena(g)) / (1 << 20);

    fm_subset eval_set;
    fm_subset_all(&eval_set, &data.test, 5000);
    fm_eval_result res;
    t0 = fm_now();
    if (st == FM_OK) st = fm_evaluate(m, &eval_set, eval_batch, &res, NULL, NULL);
    double eval_s = fm_now() - t0;
    int rc = FM_EXIT_OK;
    if (st != FM_OK) {
        rc = fm_cli_fail(cmd, st);
        goto done;
    }

    double gflops = 0.0;
    int fi = fm_plugin_export_find(plugin, "flops");
    if (fi >= 0) {
        fm_ffi_value args[2] = {{.m = NULL}, {.i = batch}}, ret;
        if (fm_plugin_export_call(plugin, fi, m, args, 2, &ret) == FM_OK)
            gflops = 3.0 * ret.d * batches / train_s / 1e9;
    }
    if (fm_dist_rank() == 0)
        printf("{\"model\": \"%s\", \"params\": %lld, \"threads\": %d, \"batch\": %d, "
               "\"train_img_s\": %.1f, \"eval_img_s\": %.1f, \"gflops\": %.1f, \"peak_rss_mb\": %.1f, "
               "\"arena_mb\": %.1f, \"eval_batch\": %d, \"eval_peak_rss_mb\": %.1f, \"kernels\": \"%s\", "
               "\"precision\": \"%s\", \"ranks\": %d, \"step_ms\": %.2f, \"comm_ms_per_step\": %.2f, "
               "\"comm_bytes_per_step\": %.0f}\n",
               fm_plugin_descriptor_of(plugin)->name, (long long)fm_model_num_params(m),
               fm_get_threads(), batch, (double)batches * batch / train_s, eval_set.n / eval_s, gflops,
               train_rss_mb, arena_mb, eval_batch, peak_rss_mb(), fm_kernels_name(fm_kernels_active()),
               fm_precision_name(fm_precision_active()), fm_dist_size(), 1e3 * train_s / batches,
               1e3 * comm_s / batches, (double)bytes / batches);
done:
    fm_subset_free(&eval_set);
    free(y);
    fm_graph_free(g);
    fm_optim_free(opt);
    fm_model_free(m);
    fm_hparams_free(hp);
    fm_plugin_release(plugin);
    fm_fashion_free(&data);
    return rc;
}
