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
