/* dist_mpi.c — fm_dist's backend over Open MPI: rank and size of
 * MPI_COMM_WORLD, gather and broadcast of byte strings, barrier.  Only the
 * main thread calls MPI (MPI_THREAD_FUNNELED); errors are returned, never
 * fatal inside MPI, and reported with MPI's own message. */
#include "dist_mpi.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "fm/fm_dist.h"

static fm_dist_backend mpi_backend;
static bool mpi_started;

static fm_status mpi_error(int rc, const char *what)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    return fm_error_set(FM_ERR_IO, "MPI %s failed on rank %d of %d: %.*s", what,
                        mpi_backend.rank, mpi_backend.size, len, text);
}

static fm_status mpi_gather(const void *bytes, size_t n, void **all, size_t *len)
{
    if (n > INT_MAX)
        return fm_error_set(FM_ERR_ARG, "MPI gather: %zu bytes from rank %d (at most %d a rank)",
                            n, mpi_backend.rank, INT_MAX);
    int size = mpi_backend.size, mine = (int)n;
    int *counts = NULL, *displs = NULL;
    char *buf = NULL;
    bool root = mpi_backend.rank == 0;
    if (root) {
        counts = fm_xmalloc((size_t)size * sizeof *counts);
        displs = fm_xmalloc((size_t)size * sizeof *displs);
    }
    int rc = MPI_Gather(&mine, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rc == MPI_SUCCESS && root) {
        size_t total = 0;
        for (int r = 0; r < size; r++) total += (size_t)counts[r];
        if (total > (size_t)INT_MAX) {
            /* The others have sent their counts and wait in MPI_Gatherv: end the job. */
            fprintf(stderr, "fmhost: MPI gather: %zu bytes in all (at most %d)\n", total, INT_MAX);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        total = 0;
        for (int r = 0; r < size; r++) {
            displs[r] = (int)total;
            len[r] = (size_t)counts[r];
            total += (size_t)counts[r];
        }
        buf = fm_xmalloc(total ? total : 1);
    }
    if (rc == MPI_SUCCESS)
        rc = MPI_Gatherv(bytes, mine, MPI_BYTE, buf, counts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
    free(counts);
    free(displs);
    if (rc != MPI_SUCCESS) {
        free(buf);
        return mpi_error(rc, "gather");
    }
    *all = buf;
    return FM_OK;
}

static fm_status mpi_broadcast(void **bytes, size_t *n)
{
    unsigned long long len = *n;
    int rc = MPI_Bcast(&len, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_error(rc, "broadcast");
    if (len > INT_MAX)
        return fm_error_set(FM_ERR_ARG, "MPI broadcast: %llu bytes (at most %d)", len, INT_MAX);
    if (mpi_backend.rank != 0) {
        *bytes = fm_xmalloc(len ? (size_t)len : 1);
        *n = (size_t)len;
    }
    rc = MPI_Bcast(*bytes, (int)len, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
        if (mpi_backend.rank != 0) {
            free(*bytes);
            *bytes = NULL;
        }
        return mpi_error(rc, "broadcast");
    }
    return FM_OK;
}

static fm_status mpi_barrier(void)
{
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? FM_OK : mpi_error(rc, "barrier");
}

bool fm_mpi_start(int *argc, char ***argv)
{
    if (!fm_dist_launcher()) return true;
    int provided = 0;
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) {
        fprintf(stderr, "fmhost: MPI_Init_thread failed (error %d)\n", rc);
        return false;
    }
    mpi_started = true;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &mpi_backend.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &mpi_backend.size);
    mpi_backend.name = "mpi";
    mpi_backend.gather = mpi_gather;
    mpi_backend.broadcast = mpi_broadcast;
    mpi_backend.barrier = mpi_barrier;
    fm_dist_set_backend(&mpi_backend);
    return true;
}

int fm_mpi_end(int status)
{
    if (!mpi_started) return status;
    if (status != 0) MPI_Abort(MPI_COMM_WORLD, status);
    MPI_Finalize();
    return status;
}
