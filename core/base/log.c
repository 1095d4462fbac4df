#include "fm/fm_base.h"

#include <stdio.h>
#include <time.h>

static fm_log_level log_level = FM_LOG_INFO;

void fm_log_set_level(fm_log_level level) { log_level = level; }

fm_log_level fm_log_get_level(void) { return log_level; }

void fm_log(fm_log_level level, const char *fmt, ...)
{
    static const char *const prefix[] = {"error: ", "warning: ", "", "debug: "};
    if (level > log_level) return;
    va_list ap;
    va_start(ap, fmt);
    fputs(prefix[level], stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

double fm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
