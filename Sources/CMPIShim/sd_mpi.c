// Open MPI, loaded with dlopen so that building and running SwiftDetectron never needs it; only
// `mpirun … detectron train` does. Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM) are the
// addresses of its predefined objects, found by name; MPI_IN_PLACE is (void *)1 in its ABI.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include "sd_mpi.h"

typedef int (*init_thread_fn)(int *, char ***, int, int *);
typedef int (*initialized_fn)(int *);
typedef int (*comm_int_fn)(void *, int *);
typedef int (*allreduce_fn)(const void *, void *, int, void *, void *, void *);
typedef int (*bcast_fn)(void *, int, void *, int, void *);
typedef int (*abort_fn)(void *, int);
typedef int (*finalize_fn)(void);

static struct {
    int started;
    void *world, *float_type, *sum;
    comm_int_fn rank, size;
    allreduce_fn allreduce;
    bcast_fn bcast;
    abort_fn abort_;
    finalize_fn finalize;
    initialized_fn is_finalized;
} mpi;

static void finish(void) {
    int done = 0;
    if (mpi.started && mpi.is_finalized && mpi.is_finalized(&done) == 0 && !done) mpi.finalize();
}

int sd_mpi_start(char *error, size_t length) {
    if (mpi.started) return 0;
    const char *path = getenv("SD_MPI_LIBRARY");
    void *lib = dlopen(path ? path : "libmpi.so.40", RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        snprintf(error, length, "cannot load Open MPI (%s): %s; install it with apt-get install openmpi-bin libopenmpi3, "
                 "or set SD_MPI_LIBRARY to its libmpi.so", path ? path : "libmpi.so.40", dlerror());
        return -1;
    }
    init_thread_fn init = (init_thread_fn)dlsym(lib, "MPI_Init_thread");
    initialized_fn initialized = (initialized_fn)dlsym(lib, "MPI_Initialized");
    mpi.is_finalized = (initialized_fn)dlsym(lib, "MPI_Finalized");
    mpi.rank = (comm_int_fn)dlsym(lib, "MPI_Comm_rank");
    mpi.size = (comm_int_fn)dlsym(lib, "MPI_Comm_size");
    mpi.allreduce = (allreduce_fn)dlsym(lib, "MPI_Allreduce");
    mpi.bcast = (bcast_fn)dlsym(lib, "MPI_Bcast");
    mpi.abort_ = (abort_fn)dlsym(lib, "MPI_Abort");
    mpi.finalize = (finalize_fn)dlsym(lib, "MPI_Finalize");
    mpi.world = dlsym(lib, "ompi_mpi_comm_world");
    mpi.float_type = dlsym(lib, "ompi_mpi_float");
    mpi.sum = dlsym(lib, "ompi_mpi_op_sum");
    if (!init || !initialized || !mpi.is_finalized || !mpi.rank || !mpi.size || !mpi.allreduce || !mpi.bcast || !mpi.abort_
        || !mpi.finalize || !mpi.world || !mpi.float_type || !mpi.sum) {
        snprintf(error, length, "%s is not Open MPI (a symbol such as ompi_mpi_comm_world is missing)", path ? path : "libmpi.so.40");
        return -1;
    }
    int already = 0, provided = 0;
    initialized(&already);
    if (!already && init(NULL, NULL, 1 /* MPI_THREAD_FUNNELED */, &provided) != 0) {
        snprintf(error, length, "MPI_Init_thread failed");
        return -1;
    }
    mpi.started = 1;
    atexit(finish);
    return 0;
}

int sd_mpi_rank(void) { int r = -1; if (mpi.started) mpi.rank(mpi.world, &r); return r; }
int sd_mpi_size(void) { int s = -1; if (mpi.started) mpi.size(mpi.world, &s); return s; }

int sd_mpi_allreduce_sum(float *buffer, long count) {
    for (long done = 0; done < count;) {
        int n = count - done > INT_MAX ? INT_MAX : (int)(count - done);
        if (mpi.allreduce((void *)1, buffer + done, n, mpi.float_type, mpi.sum, mpi.world) != 0) return -1;
        done += n;
    }
    return 0;
}

int sd_mpi_broadcast(float *buffer, long count) {
    for (long done = 0; done < count;) {
        int n = count - done > INT_MAX ? INT_MAX : (int)(count - done);
        if (mpi.bcast(buffer + done, n, mpi.float_type, 0, mpi.world) != 0) return -1;
        done += n;
    }
    return 0;
}

void sd_mpi_abort(int code) { if (mpi.started) mpi.abort_(mpi.world, code); }
