#ifndef SD_BLAS_PREINIT_H
#define SD_BLAS_PREINIT_H

/// 1 if this process (or the one that started it) had SwiftDetectron set OPENBLAS_NUM_THREADS=1
/// before OpenBLAS loaded; 0 if the environment chose the thread count itself.
int sd_blas_preinit_applied(void);

#endif
