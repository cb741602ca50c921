#ifndef SD_MPI_H
#define SD_MPI_H
#include <stddef.h>

/// Loads Open MPI (libmpi.so.40, or the file named by SD_MPI_LIBRARY) at run time and starts it
/// (MPI_Init_thread, funneled). 0 on success; else -1 with a message in `error`. Idempotent.
int sd_mpi_start(char *error, size_t error_length);
int sd_mpi_rank(void);
int sd_mpi_size(void);
/// In-place sum over all ranks (MPI_Allreduce, MPI_IN_PLACE, MPI_FLOAT, MPI_SUM). 0 on success.
int sd_mpi_allreduce_sum(float *buffer, long count);
/// Rank 0's values everywhere (MPI_Bcast). 0 on success.
int sd_mpi_broadcast(float *buffer, long count);
/// MPI_Abort on MPI_COMM_WORLD: every rank of the job stops.
void sd_mpi_abort(int code);

#endif
