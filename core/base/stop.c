/* The process's pending request to stop (see fm_stop_request). */
#include "fm/fm_base.h"

#include <signal.h>

static volatile sig_atomic_t stop_signal;

void fm_stop_request(int sig) { stop_signal = sig ? sig : -1; }
int fm_stop_requested(void) { return stop_signal; }
void fm_stop_clear(void) { stop_signal = 0; }
