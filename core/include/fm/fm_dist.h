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

/* What this process's collectives cost so far: wall seconds inside them
 * (waiting for the other ranks included) and bytes it sent and received
 * (a broadcast counted as rank 0 sending to each rank in turn). */
FM_API void fm_dist_traffic(double *seconds, uint64_t *bytes);

/* ---- a batch in chunks (core/dist/chunks.c) ----
 *
 * Data-parallel training cuts each batch into chunks that depend on the
 * batch's size only (never on ranks or threads): FM_BATCH_CHUNKS of
 * fm_chunk_size(batch) images, the last one shorter, or fewer when the
 * batch is small.  A rank computes a contiguous range of chunks
 * (fm_chunk_share); every sum over the batch is the sum of per-chunk parts
 * in one fixed binary tree over chunk index (fm_chunk_sum), so one process
 * and any number of ranks get the same bits. */
#define FM_BATCH_CHUNKS 8

FM_API int fm_chunk_size(int batch);
FM_API int fm_chunk_count(int batch);
/* Chunks [*first, *end) of n_chunks that rank `rank` of `size` computes:
 * contiguous, in rank order, as even as can be (empty past n_chunks ranks). */
FM_API void fm_chunk_share(int n_chunks, int rank, int size, int *first, int *end);
/* The images [*offset, *offset + *n) of a batch of `batch` that this rank
 * computes: its chunks (fm_chunk_share of the job's rank and size); *n is 0
 * for a rank with none. */
FM_API void fm_chunk_slice(int batch, int *offset, int *n);

/* The tree's shape: node [lo, hi) of chunks (hi - lo >= 2) is the sum of
 * its left child [lo, mid) and its right child [mid, hi), in that order. */
static inline int fm_chunk_tree_mid(int lo, int hi) { return lo + (hi - lo) / 2; }

typedef enum fm_chunk_type { FM_CHUNK_F32, FM_CHUNK_F64 } fm_chunk_type;

/* The tree sum over all n_chunks chunks of len elements each:
 * node [lo, hi) = node [lo, mid) + node [mid, hi), mid = lo + (hi - lo) / 2,
 * a leaf one chunk's part.  parts [end - first, len] holds this process's
 * chunks [first, end) (fm_chunk_share of the job's rank and size) and is
 * used as scratch; sum [len] (which may be parts itself) receives the
 * root.  With `across` and more than one rank in the job, each rank sends
 * its whole subtrees to rank 0, which completes the tree and broadcasts the
 * root (fm_dist_gather, fm_dist_broadcast): every rank calls it, in the
 * same order, and gets the same bits.  Without, the process holds every
 * chunk.  Element-wise, over the thread pool. */
FM_API fm_status fm_chunk_sum(fm_chunk_type type, void *sum, void *parts, int64_t len,
                              int n_chunks, int first, int end, bool across);
/* fm_chunk_sum for the ops, inside a step: a failure of the job's
 * communication there cannot be handed back, so it ends the process with
 * its message (mpirun then ends the other ranks). */
FM_API void fm_chunk_sum_or_die(fm_chunk_type type, void *sum, void *parts, int64_t len,
                                int n_chunks, int first, int end, bool across);

#ifdef __cplusplus
}
#endif

#endif /* FM_DIST_H */
