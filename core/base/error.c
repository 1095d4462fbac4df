/* The per-thread error slot and programmer-error aborts. */
#include "fm/fm_base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char err_message[2048];
static _Thread_local fm_status err_status;

fm_status fm_error_setv(fm_status status, const char *fmt, va_list ap)
{
    /* Formatted aside: a caller adding context passes fm_error_message() as
     * an argument, and vsnprintf must not read the buffer it writes. */
    char message[sizeof err_message];
    vsnprintf(message, sizeof message, fmt, ap);
    memcpy(err_message, message, sizeof message);
    err_status = status;
    return status;
}

fm_status fm_error_set(fm_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fm_error_setv(status, fmt, ap);
    va_end(ap);
    return status;
}

const char *fm_error_message(void) { return err_message; }

fm_status fm_error_status(void) { return err_status; }

void fm_error_clear(void)
{
    err_message[0] = '\0';
    err_status = FM_OK;
}

const char *fm_status_name(fm_status status)
{
    switch (status) {
    case FM_OK: return "ok";
    case FM_ERR_IO: return "I/O error";
    case FM_ERR_FORMAT: return "format error";
    case FM_ERR_ARG: return "invalid argument";
    case FM_ERR_PLUGIN: return "plugin error";
    case FM_ERR_NOMEM: return "out of memory";
    case FM_ERR_SCRIPT: return "script error";
    case FM_ERR_STOP: return "stopped";
    }
    return "unknown error";
}

__attribute__((noreturn)) void fm_abort(const char *file, int line, const char *expr)
{
    fflush(stdout);
    fprintf(stderr, "%s:%d: fmhost internal error: assertion failed: %s\n", file, line, expr);
    abort();
}
