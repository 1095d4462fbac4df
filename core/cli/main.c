/* fmhost: train, evaluate and compare FashionMNIST classifiers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fm/fm_dist.h"
#ifdef FM_HAVE_MPI
#include "dist_mpi.h"
#endif

static const char usage[] =
    "usage: fmhost <command> [options]\n"
    "\n"
    "Train, evaluate and compare image classifiers on FashionMNIST.\n"
    "\n"
    "commands:\n"
    "  train     train a model plugin with early stopping; writes artifacts/ and results/\n"
    "  eval      evaluate a checkpoint on the test set and write its report\n"
    "  plugins   list the model plugins found, with hyper-parameters and exports\n"
    "  report    redraw the plots of a past run from its metrics.csv\n"
    "  summary   a model layer by layer: op, output shape, parameters, FLOPs\n"
    "  predict   classify PNG or IDX images with a trained model\n"
    "  export    write a trained model as ONNX or safetensors (f32, bf16, f16)\n"
    "  bench     measure training and evaluation throughput (one JSON line)\n"
    "  script    run a Lua script with the fm module (fmhost script FILE.lua [args])\n"
    "  runs      list, show, compare, export the recorded runs; an offline dashboard\n"
    "\n"
    "Run 'fmhost <command> --help' for the options of a command.\n"
    "  fmhost train --model rescnn --epochs 20\n"
    "  fmhost train --plugin plugins/rescnn.so --set width=64 --set blocks=2\n"
    "  fmhost script scripts/compare_all.lua epochs=1 limit=2000\n"
    "\n"
    "Data is read from --data-dir, else $FMHOST_DATA, else " FM_DATA_SYSTEM_DIR "\n"
    "(apt-get install dataset-fashion-mnist).\n"
    "\n"
    "Kernels: one set runs the whole process: portable (C + OpenBLAS, any processor),\n"
    "avx2 (AVX2 + FMA) or avx512.  train, eval, bench and script take --kernels NAME;\n"
    "else $FMHOST_KERNELS names it; else the best this processor runs is used.\n"
    "fmhost --version shows the set in use and the ones this processor runs.\n";

/* PLplot's cairo driver draws text with Pango, whose font map and
 * fontconfig's caches live until the process ends; LeakSanitizer (an
 * FM_SANITIZE build) calls this hook, so that they do not turn every run
 * that plots into exit status 23. */
const char *__lsan_default_suppressions(void);
__attribute__((used)) const char *__lsan_default_suppressions(void)
{
    return "leak:libfontconfig.so\nleak:libpango\n";
}

/* ... and keeps its list of used suppressions off stderr, which --quiet
 * promises to leave empty. */
const char *__lsan_default_options(void);
__attribute__((used)) const char *__lsan_default_options(void)
{
    return "print_suppressions=0";
}

static int run_command(int argc, char **argv);

int main(int argc, char **argv)
{
#ifdef FM_HAVE_MPI
    /* Under mpirun every rank joins the job before anything else runs. */
    if (!fm_mpi_start(&argc, &argv)) return FM_EXIT_FAIL;
    return fm_mpi_end(run_command(argc, argv));
#else
    if (fm_dist_launcher()) {
        fprintf(stderr, "fmhost: started by mpirun (%s is set), but this fmhost was built "
                "without Open MPI: install libopenmpi-dev and openmpi-bin, then build again\n",
                fm_dist_launcher());
        return FM_EXIT_FAIL;
    }
    return run_command(argc, argv);
#endif
}

static int run_command(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return FM_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage, stdout);
        return FM_EXIT_OK;
    }
    /* Before --version, which reports the set this choice makes. */
    if (fm_kernels_use_env() != FM_OK) {
        fprintf(stderr, "fmhost: %s\n", fm_error_message());
        return FM_EXIT_USAGE;
    }
    if (!strcmp(cmd, "--version")) {
        char list[64];
        printf("fmhost %s (plugin ABI %d.%d)\nkernels: %s (this processor runs: %s)\n",
               FM_VERSION_STRING, FM_PLUGIN_ABI_MAJOR, FM_PLUGIN_ABI_MINOR,
               fm_kernels_name(fm_kernels_active()), fm_cli_supported_kernels(list, sizeof list));
        return FM_EXIT_OK;
    }
    /* train and script stop gracefully and install their own handlers. */
    fm_cli_signals(false);
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } commands[] = {
        {"train", fm_cmd_train}, {"eval", fm_cmd_eval},   {"plugins", fm_cmd_plugins},
        {"report", fm_cmd_report}, {"bench", fm_cmd_bench}, {"script", fm_cmd_script},
        {"runs", fm_cmd_runs},
        {"summary", fm_cmd_summary}, {"predict", fm_cmd_predict}, {"export", fm_cmd_export},
    };
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "fmhost: unknown command '%s' (commands: train, eval, plugins, report, bench, "
            "script, runs, summary, predict, export; see fmhost --help)\n", cmd);
    return FM_EXIT_USAGE;
}
