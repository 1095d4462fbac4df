/* track_internal.h — the run store's handle and the helpers its files
 * share.  Private to core/track/. */
#ifndef FM_TRACK_INTERNAL_H
#define FM_TRACK_INTERNAL_H

#include <sqlite3.h>

#include "fm/fm_track.h"

struct fm_track {
    sqlite3 *db;
    char path[4096];
    int64_t run;          /* the open run's id, 0 before fm_track_begin */
    char run_dir[4200];   /* its folder, "" without one */
    bool warned;          /* a failed write during the run was reported once */
};

/* FM_ERR_IO "<path>: <what>: <SQLite's message>". */
fm_status track_error(const fm_track *t, const char *what);

/* Runs one statement (no results), binding text arguments ?1.. from
 * args[0..n); NULL binds NULL. */
fm_status track_exec(fm_track *t, const char *sql, const char *const *args, int n);

/* Copies a whole file to dst atomically (fm_file_write_atomic). */
fm_status track_copy_file(const char *src, const char *dst);

/* Now, UTC, as "YYYY-MM-DD HH:MM:SS" into buf[20]. */
const char *track_now(char buf[20]);

/* The process: its host name, and the start time of process pid (clock
 * ticks since boot, /proc/<pid>/stat), 0 when it does not exist. */
const char *track_host(char *buf, size_t size);
int64_t track_proc_start(int64_t pid);

#endif /* FM_TRACK_INTERNAL_H */
