/* proc.c — what the run store records about the process that runs: host,
 * start time (so that a reused pid is not taken for the run's), peak RSS. */
#include "track_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

const char *track_now(char buf[20])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, 20, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

const char *track_host(char *buf, size_t size)
{
    if (gethostname(buf, size) != 0) snprintf(buf, size, "localhost");
    buf[size - 1] = '\0';
    return buf;
}

int64_t track_proc_start(int64_t pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    /* The command name (field 2) may hold spaces and parentheses: count
     * the fields after its last ')'.  starttime is field 22. */
    char *p = strrchr(line, ')');
    if (!p) return 0;
    int field = 2;
    for (char *save = NULL, *tok = strtok_r(p + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
        if (++field == 22) return strtoll(tok, NULL, 10);
    return 0;
}

int64_t fm_peak_rss_kb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (int64_t)ru.ru_maxrss;  /* KiB on Linux */
}

bool fm_track_run_alive(const fm_track_run *r)
{
    if (!r->status || strcmp(r->status, "running") != 0) return false;
    char host[256];
    if (!r->host || strcmp(r->host, track_host(host, sizeof host)) != 0) return false;
    int64_t start = r->pid > 0 ? track_proc_start(r->pid) : 0;
    return start != 0 && (r->pid_start == 0 || r->pid_start == start);
}
