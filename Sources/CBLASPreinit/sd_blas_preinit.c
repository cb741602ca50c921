// OpenBLAS (pthread build) starts its worker threads in a library constructor, before main; when
// pthread_create fails there (a low `ulimit -u`, a container's pids limit) it prints
// "blas_thread_init: pthread_create failed" and raises SIGINT, so the process dies before any of
// our code runs. The engine never wants those threads (its own pool splits GEMMs; see
// BLAS.threadCount), so executables that link this object start OpenBLAS with one thread.
//
// OpenBLAS reads OPENBLAS_NUM_THREADS with getenv in that constructor. A function in the
// executable's .preinit_array runs before every shared library's constructor, but also before
// libc's, which installs the environment — so setenv here would be overwritten. Instead, when
// no thread count is in the environment (OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS,
// OMP_NUM_THREADS), the process re-executes itself once (/proc/self/exe, same arguments, same
// pid) with OPENBLAS_NUM_THREADS=1 and a marker added. Child processes inherit both, so they start
// directly. Without /proc (or with a huge environment) it carries on unchanged.
#include <string.h>
#include <unistd.h>
#include "sd_blas_preinit.h"

static const char marker_name[] = "SWIFTDETECTRON_BLAS_PREINIT=";
static char thread_setting[] = "OPENBLAS_NUM_THREADS=1";
static char marker_setting[] = "SWIFTDETECTRON_BLAS_PREINIT=1";
static int applied = 0;

static int has_prefix(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static void sd_blas_preinit(int argc, char **argv, char **envp) {
    (void)argc;
    if (envp == NULL || argv == NULL) return;
    size_t n = 0;
    int chosen = 0;
    for (; envp[n] != NULL; n++) {
        if (has_prefix(envp[n], "OPENBLAS_NUM_THREADS=") || has_prefix(envp[n], "GOTO_NUM_THREADS=")
            || has_prefix(envp[n], "OMP_NUM_THREADS=")) chosen = 1;
        if (strcmp(envp[n], marker_setting) == 0) applied = 1;
    }
    if (chosen) return;
    static char *env[8192];
    if (n + 3 > sizeof env / sizeof env[0]) return;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!has_prefix(envp[i], marker_name)) env[k++] = envp[i];
    }
    env[k++] = thread_setting;
    env[k++] = marker_setting;
    env[k] = NULL;
    execve("/proc/self/exe", argv, env);  // returns only on failure: carry on as we are
}

__attribute__((section(".preinit_array"), used))
static void (*const sd_blas_preinit_entry)(int, char **, char **) = sd_blas_preinit;

int sd_blas_preinit_applied(void) { return applied; }
