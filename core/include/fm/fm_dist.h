/* fm_dist.h — the processes of one job: who this one is, and the three
 * collective operations fmhost needs between them.
 *
 * The core knows nothing of MPI.  A job of one process (every `fmhost` run
 * not started by mpirun) uses the built-in single-process backend; under
 * mpirun, fmhost installs the Open MPI one (core/mpi/, built where Open MPI
 * is installed) before anything else runs.  Every collective is called by
 * every process of the job, in the same order; each returns FM_OK on all of
 * them or fails the job. */
#ifndef FM_DIST_H
#define FM_DIST_H

#include "fm/fm_base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fm_dist_backend {
    const char *name;  /* "single", "mpi" */
    int rank, size;    /* 0 <= rank < size */
    /* Rank 0 receives every rank's bytes in rank order: *all (malloc'ed,
     * the caller frees) holds them one after another, len[r] (an array of
     * size entries the caller provides) their lengths.  Other ranks get
     * *all = NULL. */
    fm_status (*gather)(const void *bytes, size_t n, void **all, size_t *len);
    /* Rank 0's bytes to every rank: on rank 0 *bytes and *n are read, elsewhere
     * they receive a malloc'ed copy (the caller frees). */
    fm_status (*broadcast)(void **bytes, size_t *n);
    fm_status (*barrier)(void);
} fm_dist_backend;

/* The variable an MPI launcher (mpirun) sets in each process it starts
 * (OMPI_COMM_WORLD_SIZE, else PMIx's or PMI's), or NULL: not started by one. */
FM_API const char *fm_dist_launcher(void);

/* Installs `b` (static storage) for the rest of the process; the single-
 * process backend until then. */
FM_API void fm_dist_set_backend(const fm_dist_backend *b);
FM_API const char *fm_dist_name(void);
FM_API int fm_dist_rank(void);
FM_API int fm_dist_size(void);

FM_API fm_status fm_dist_gather(const void *bytes, size_t n, void **all, size_t *len);
FM_API fm_status fm_dist_broadcast(void **bytes, size_t *n);
FM_API fm_status fm_dist_barrier(void);

#ifdef __cplusplus
}
#endif

#endif /* FM_DIST_H */
