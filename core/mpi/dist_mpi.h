/* dist_mpi.h — the Open MPI backend of fm_dist.h, linked into fmhost where
 * Open MPI is installed (FM_HAVE_MPI). */
#ifndef FM_DIST_MPI_H
#define FM_DIST_MPI_H

#include <stdbool.h>

/* Under mpirun: MPI_Init and the MPI backend for fm_dist, so that every
 * rank knows its place before the command runs.  Without a launcher
 * (fm_dist_launcher) does nothing (one process, no MPI at all).  False,
 * with a message on stderr, when MPI cannot start. */
bool fm_mpi_start(int *argc, char ***argv);

/* The process's exit: MPI_Finalize after a success; after a failure
 * MPI_Abort, so that the other ranks stop instead of waiting for this one
 * in a collective.  Returns status. */
int fm_mpi_end(int status);

#endif /* FM_DIST_MPI_H */
