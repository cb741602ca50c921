// Linux calls that Swift cannot make directly: they need _GNU_SOURCE, take variadic or macro
// arguments, or must run between clone and exec where no Swift code may run.
#ifndef SD_LINUX_H
#define SD_LINUX_H

#include <stddef.h>
#include <pthread.h>
#include <sys/types.h>

/// memfd_create(name, MFD_CLOEXEC); -1 with errno when unavailable.
int sd_memfd_create(const char *name);

/// The number of CPUs in this thread's affinity mask (0 on failure).
int sd_affinity_cpu_count(void);

/// Restricts the calling thread to the first `count` CPUs of its current mask (tests, 1-CPU legs).
int sd_restrict_affinity(int count);

/// prctl(PR_SET_PDEATHSIG, sig).
int sd_set_parent_death_signal(int sig);

/// Names a thread (at most 15 bytes are kept).
void sd_set_thread_name(pthread_t thread, const char *name);

/// glibc's version string, e.g. "2.36".
const char *sd_glibc_version(void);

/// 1 when the CPU supports the feature ("avx2", "avx512f", "fma", "sse4.2"), else 0.
int sd_cpu_supports(const char *feature);

/// The abbreviation of a signal ("KILL"), or NULL.
const char *sd_signal_abbrev(int sig);

/// WIFEXITED & co. on a wait status.
int sd_wifexited(int status);
int sd_wexitstatus(int status);
int sd_wifsignaled(int status);
int sd_wtermsig(int status);
int sd_wcoredump(int status);

/// One descriptor the child gets: `parent_fd` is dup2'ed to `child_fd` (-1 parent_fd opens
/// /dev/null there).
typedef struct sd_fd_map {
    int parent_fd;
    int child_fd;
} sd_fd_map;

/// Starts `path` with `argv` and `envp` the way posix_spawn does (clone with CLONE_VM|CLONE_VFORK,
/// so nothing of the parent runs in the child but the few system calls below), and before exec:
/// resets signal dispositions and the mask, moves the descriptors in `fds`, closes every other
/// descriptor above 2 that is not in `fds`, changes to `cwd` (if not NULL), optionally starts a
/// new session, and sets the parent-death signal (if `death_signal` > 0) and exits at once if
/// the parent is already gone.
///
/// Returns 0 and the child's pid, or an errno value and the step that failed in *failed_step
/// ("clone", "dup2", "chdir", "setsid", "prctl", "execve").
int sd_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
             const sd_fd_map *fds, int nfds, int death_signal, int new_session,
             pid_t *pid_out, const char **failed_step);

/// pipe2(fds, O_CLOEXEC).
int sd_pipe_cloexec(int fds[2]);

/// Soft resource limits; -1 means unlimited.
long long sd_rlimit_nofile(void);
long long sd_rlimit_nproc(void);
/// Sets the soft RLIMIT_NPROC / RLIMIT_NOFILE (tests and CI legs).
int sd_set_rlimit_nproc(long long value);
int sd_set_rlimit_nofile(long long value);

/// malloc_trim(0): return freed heap pages to the kernel.
void sd_malloc_trim(void);

/// mallopt(M_MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD): 1 when glibc took both, else 0.
int sd_malloc_set_thresholds(int mmap_threshold, int trim_threshold);

#endif
