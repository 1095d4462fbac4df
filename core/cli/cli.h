/* cli.h — what the fmhost subcommands share. */
#ifndef FM_CLI_H
#define FM_CLI_H

#include "fm/fm_train.h"

/* Exit statuses: 0 success, 1 the work failed (bad data, bad file, failed
 * write), 2 the command line is wrong, 3 training diverged; 128 + the
 * signal (130 SIGINT, 143 SIGTERM) when a signal stopped the work. */
enum { FM_EXIT_OK = 0, FM_EXIT_FAIL = 1, FM_EXIT_USAGE = 2, FM_EXIT_DIVERGED = 3 };

/* Signal handling for a command.  `graceful`: the first SIGINT or SIGTERM
 * asks the work to stop after its current step (fm_stop_request); a second
 * one exits at once.  Otherwise the first one exits at once.  Exiting at
 * once removes the process's temporary files first, so every artifact
 * already written stays whole. */
void fm_cli_signals(bool graceful);
/* 128 + the signal that asked to stop. */
int fm_cli_signal_exit(void);

/* Prints "fmhost <cmd>: <message>" and a hint to run --help; returns 2. */
int fm_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "fmhost <cmd>: <fm_error_message()>"; returns 1 (or 2 for FM_ERR_ARG). */
int fm_cli_fail(const char *cmd, fm_status st);

/* Strict number parsing for option values: the whole string must parse. */
bool fm_cli_int(const char *s, long lo, long hi, int *out);
bool fm_cli_double(const char *s, double *out);

/* Takes one --set KEY=VALUE into sets[*n] (room for FM_CLI_MAX_SETS); false
 * after printing the usage error. */
#define FM_CLI_MAX_SETS 64
bool fm_cli_add_set(const char *cmd, const char *value, const char **sets, int *n);

/* Applies --kernels NAME (fm_kernels_use); false after printing the usage
 * error, which names the value, the sets this processor runs and the fix. */
bool fm_cli_use_kernels(const char *cmd, const char *name);
/* Parses --precision's value into *out; false after a usage error naming it. */
bool fm_cli_precision(const char *cmd, const char *name, fm_precision *out);
/* The sets this processor runs, "portable, avx2, avx512", into buf. */
const char *fm_cli_supported_kernels(char *buf, size_t size);

/* "fmhost train --model mlp ...": argv[0..argc) after `program`, each word
 * shell-quoted when it needs it; malloc'ed (the caller frees it). */
char *fm_cli_command_line(const char *program, int argc, char **argv);

/* Loads the plugin named by --plugin PATH or --model NAME. */
fm_plugin *fm_cli_open_plugin(const char *cmd, const char *plugin_path, const char *model_name);

/* ---- a model for summary, export and predict (cli_model.c) ---- */

/* What the command line named.  weights NULL: OUT/artifacts/<model>_best
 * .safetensors when need_weights, else none (the seed-0 initialisation). */
typedef struct fm_cli_model_args {
    const char *cmd, *plugin_path, *model_name, *weights, *out_dir;
    const char *const *sets;
    int n_sets;
    bool need_weights;
} fm_cli_model_args;

typedef struct fm_cli_model {
    fm_plugin *plugin;
    fm_hparams *hp;  /* --set, else the checkpoint's "hparams" metadata */
    fm_model *model;
    const char *name;     /* the plugin's */
    char weights[4096];   /* the checkpoint loaded, "" when none */
} fm_cli_model;

/* Splits a checkpoint's "hparams" metadata ("width=32 blocks=1") into at
 * most max assignments, in place; returns how many. */
int fm_cli_split_hparams(char *s, const char **out, int max);
/* Opens the plugin, makes the model and loads its weights: FM_EXIT_OK, or
 * the exit status after printing the error (naming the file and the fix).
 * Close with fm_cli_model_close, which is also safe on a failed open. */
int fm_cli_model_open(fm_cli_model *cm, const fm_cli_model_args *a);
void fm_cli_model_close(fm_cli_model *cm);
/* Resets g and runs one evaluation-mode, float32 forward pass with tracing
 * on (fm_graph_trace then lists its nodes): x [batch, 1, 28, 28] holds
 * `pixels` (normalised, batch * 784 floats) or zeros when NULL. */
fm_status fm_cli_model_trace(fm_cli_model *cm, fm_graph *g, const float *pixels, int batch,
                             fm_tensor **x, fm_tensor **logits);

/* Writes the traced forward pass nodes[0..n) (from fm_cli_model_trace: x
 * its input, logits its result) to path as an ONNX model (onnx_write.c);
 * FM_ERR_PLUGIN naming an op without an ONNX mapping. */
struct fm_node;
fm_status fm_cli_onnx_write(const char *path, const fm_cli_model *cm,
                            const struct fm_node *const *nodes, int n, const fm_tensor *x,
                            const fm_tensor *logits);

/* A PNG picture as a FashionMNIST image (image.c): grey (colour converted,
 * transparency composited on black), grey levels inverted with `invert`,
 * resized to 28x28 by area averaging, into out[784].  FM_ERR_FORMAT naming
 * the file for anything libpng refuses or a picture too large to hold. */
fm_status fm_cli_png_load(const char *path, bool invert, uint8_t *out);

int fm_cmd_summary(int argc, char **argv);
int fm_cmd_predict(int argc, char **argv);
int fm_cmd_export(int argc, char **argv);

int fm_cmd_train(int argc, char **argv);
int fm_cmd_eval(int argc, char **argv);
int fm_cmd_plugins(int argc, char **argv);
int fm_cmd_report(int argc, char **argv);
int fm_cmd_bench(int argc, char **argv);
int fm_cmd_script(int argc, char **argv);
int fm_cmd_runs(int argc, char **argv);

/* fmhost bench --gemm: ResCNN's matrix products on the kernel set in use
 * beside OpenBLAS, each timed for about `seconds` (cmd_bench_gemm.c). */
int fm_cli_bench_gemm(double seconds);

#endif /* FM_CLI_H */
