/* dist.c — the job's backend: a single process unless fmhost installs
 * another (core/mpi/ under mpirun). */
#include "fm/fm_dist.h"

#include <stdlib.h>
#include <string.h>

const char *fm_dist_launcher(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return vars[i];
    return NULL;
}

static fm_status single_gather(const void *bytes, size_t n, void **all, size_t *len)
{
    *all = fm_xmalloc(n ? n : 1);
    if (n) memcpy(*all, bytes, n);
    len[0] = n;
    return FM_OK;
}

static fm_status single_broadcast(void **bytes, size_t *n)
{
    (void)bytes;
    (void)n;
    return FM_OK;
}

static fm_status single_barrier(void) { return FM_OK; }

static const fm_dist_backend single = {
    .name = "single", .rank = 0, .size = 1,
    .gather = single_gather, .broadcast = single_broadcast, .barrier = single_barrier,
};

static const fm_dist_backend *backend = &single;

void fm_dist_set_backend(const fm_dist_backend *b)
{
    FM_ASSERT(b && b->size >= 1 && b->rank >= 0 && b->rank < b->size);
    backend = b;
}

const char *fm_dist_name(void) { return backend->name; }
int fm_dist_rank(void) { return backend->rank; }
int fm_dist_size(void) { return backend->size; }

static double traffic_seconds;
static uint64_t traffic_bytes;

void fm_dist_traffic(double *seconds, uint64_t *bytes)
{
    *seconds = traffic_seconds;
    *bytes = traffic_bytes;
}

fm_status fm_dist_gather(const void *bytes, size_t n, void **all, size_t *len)
{
    FM_ASSERT(all && len && (bytes || n == 0));
    *all = NULL;
    double t0 = fm_now();
    fm_status st = backend->gather(bytes, n, all, len);
    traffic_seconds += fm_now() - t0;
    if (backend->size > 1 && backend->rank != 0)
        traffic_bytes += n;
    else if (backend->size > 1 && st == FM_OK)
        for (int r = 1; r < backend->size; r++) traffic_bytes += len[r];
    return st;
}

fm_status fm_dist_broadcast(void **bytes, size_t *n)
{
    FM_ASSERT(bytes && n);
    double t0 = fm_now();
    fm_status st = backend->broadcast(bytes, n);
    traffic_seconds += fm_now() - t0;
    if (backend->size > 1 && st == FM_OK)
        traffic_bytes += backend->rank == 0 ? *n * (uint64_t)(backend->size - 1) : *n;
    return st;
}

fm_status fm_dist_barrier(void)
{
    double t0 = fm_now();
    fm_status st = backend->barrier();
    traffic_seconds += fm_now() - t0;
    return st;
}
