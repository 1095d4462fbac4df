#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fm/fm_io.h"

int fm_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fmhost %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see fmhost %s --help)\n", cmd);
    va_end(ap);
    return FM_EXIT_USAGE;
}

int fm_cli_fail(const char *cmd, fm_status st)
{
    fprintf(stderr, "fmhost %s: %s\n", cmd, fm_error_message());
    return st == FM_ERR_ARG ? FM_EXIT_USAGE : FM_EXIT_FAIL;
}

bool fm_cli_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

bool fm_cli_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

bool fm_cli_add_set(const char *cmd, const char *value, const char **sets, int *n)
{
    if (*n == FM_CLI_MAX_SETS) {
        fm_cli_usage_error(cmd, "too many --set options (at most %d)", FM_CLI_MAX_SETS);
        return false;
    }
    if (!strchr(value, '=')) {
        fm_cli_usage_error(cmd, "--set '%s': expected KEY=VALUE, e.g. --set width=64", value);
        return false;
    }
    sets[(*n)++] = value;
    return true;
}

const char *fm_cli_supported_kernels(char *buf, size_t size)
{
    buf[0] = '\0';
    for (int k = 0; k < FM_KERNELS_COUNT; k++)
        if (fm_kernels_supported((fm_kernels)k)) {
            size_t len = strlen(buf);
            snprintf(buf + len, size - len, "%s%s", len ? ", " : "", fm_kernels_name((fm_kernels)k));
        }
    return buf;
}

bool fm_cli_use_kernels(const char *cmd, const char *name)
{
    char list[64];
    fm_cli_supported_kernels(list, sizeof list);
    fm_kernels k;
    if (fm_kernels_parse(name, &k) != FM_OK) {
        fm_cli_usage_error(cmd, "--kernels '%s': no such kernel set; this processor runs %s: give "
                           "one of those, or leave out --kernels for the best", name, list);
        return false;
    }
    if (fm_kernels_use(k) != FM_OK) {
        fm_cli_usage_error(cmd, "--kernels %s: this processor (or build) cannot run the %s kernels; "
                           "it runs %s: give one of those, or leave out --kernels for the best",
                           name, name, list);
        return false;
    }
    return true;
}

bool fm_cli_precision(const char *cmd, const char *name, fm_precision *out)
{
    if (fm_precision_parse(name, out) == FM_OK) return true;
    fm_cli_usage_error(cmd, "--precision '%s': expected fp32 or bf16", name);
    return false;
}

char *fm_cli_command_line(const char *program, int argc, char **argv)
{
    size_t cap = strlen(program) + 1;
    for (int i = 0; i < argc; i++) cap += 4 * strlen(argv[i]) + 3;
    char *out = fm_xmalloc(cap + 1), *p = out;
    p += sprintf(p, "%s", program);
    for (int i = 0; i < argc; i++) {
        bool plain = argv[i][0] && strspn(argv[i], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                   "0123456789-_=./,:+@%") == strlen(argv[i]);
        *p++ = ' ';
        if (plain) {
            p += sprintf(p, "%s", argv[i]);
            continue;
        }
        *p++ = '\'';
        for (const char *c = argv[i]; *c; c++)
            p += *c == '\'' ? sprintf(p, "'\\''") : sprintf(p, "%c", *c);
        *p++ = '\'';
    }
    *p = '\0';
    return out;
}

fm_plugin *fm_cli_open_plugin(const char *cmd, const char *plugin_path, const char *model_name)
{
    char path[4096];
    const char *want = plugin_path ? plugin_path : model_name;
    if (fm_plugin_resolve(want, path, sizeof path) != FM_OK) {
        fprintf(stderr, "fmhost %s: %s\n", cmd, fm_error_message());
        return NULL;
    }
    fm_plugin *p = fm_plugin_open(path);
    if (!p) fprintf(stderr, "fmhost %s: %s\n", cmd, fm_error_message());
    return p;
}

static void on_signal_exit(int sig)
{
    fm_atomic_cleanup();
    _exit(128 + sig);
}

static void on_signal_stop(int sig)
{
    if (fm_stop_requested()) on_signal_exit(sig);
    fm_stop_request(sig);
    static const char msg[] =
        "\nfmhost: stopping after the current step; the run's state will be saved "
        "(press Ctrl-C again to quit at once)\n";
    ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
}

void fm_cli_signals(bool graceful)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = graceful ? on_signal_stop : on_signal_exit;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int fm_cli_signal_exit(void)
{
    int sig = fm_stop_requested();
    return 128 + (sig > 0 ? sig : SIGINT);
}
