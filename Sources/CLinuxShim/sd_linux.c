#include "sd_linux.h"

#include <errno.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/resource.h>
#include <malloc.h>

void sd_malloc_trim(void) { malloc_trim(0); }

int sd_malloc_set_thresholds(int mmap_threshold, int trim_threshold) {
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1;
}

int sd_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

static long long soft_limit(int resource) {
    struct rlimit r;
    if (getrlimit(resource, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return -1;
    return (long long)r.rlim_cur;
}

static int set_soft_limit(int resource, long long value) {
    struct rlimit r;
    if (getrlimit(resource, &r) != 0) return -1;
    r.rlim_cur = value < 0 ? r.rlim_max : (rlim_t)value;
    return setrlimit(resource, &r);
}

long long sd_rlimit_nofile(void) { return soft_limit(RLIMIT_NOFILE); }
long long sd_rlimit_nproc(void) { return soft_limit(RLIMIT_NPROC); }
int sd_set_rlimit_nproc(long long value) { return set_soft_limit(RLIMIT_NPROC, value); }
int sd_set_rlimit_nofile(long long value) { return set_soft_limit(RLIMIT_NOFILE, value); }

int sd_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

int sd_affinity_cpu_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    return CPU_COUNT(&set);
}

int sd_restrict_affinity(int count) {
    cpu_set_t set, keep;
    CPU_ZERO(&set);
    CPU_ZERO(&keep);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    int kept = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && kept < count; cpu++) {
        if (CPU_ISSET(cpu, &set)) { CPU_SET(cpu, &keep); kept++; }
    }
    return sched_setaffinity(0, sizeof keep, &keep);
}

int sd_set_parent_death_signal(int sig) { return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0); }

void sd_set_thread_name(pthread_t thread, const char *name) {
    char buf[16];
    strncpy(buf, name, 15);
    buf[15] = 0;
    pthread_setname_np(thread, buf);
}

const char *sd_glibc_version(void) { return gnu_get_libc_version(); }

int sd_cpu_supports(const char *feature) {
    __builtin_cpu_init();
    if (strcmp(feature, "avx2") == 0) return __builtin_cpu_supports("avx2");
    if (strcmp(feature, "avx512f") == 0) return __builtin_cpu_supports("avx512f");
    if (strcmp(feature, "fma") == 0) return __builtin_cpu_supports("fma");
    if (strcmp(feature, "sse4.2") == 0) return __builtin_cpu_supports("sse4.2");
    if (strcmp(feature, "avx") == 0) return __builtin_cpu_supports("avx");
    return 0;
}

// Linux x86-64's signal names (without "SIG"), as sigabbrev_np gives them; a table of our own
// because sigabbrev_np needs glibc 2.32 and the release binary runs on glibc 2.28.
const char *sd_signal_abbrev(int sig) {
    static const char *const names[] = {
        NULL, "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM",
        "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF",
        "WINCH", "POLL", "PWR", "SYS",
    };
    if (sig > 0 && sig < (int)(sizeof names / sizeof names[0])) return names[sig];
    return NULL;
}

int sd_wifexited(int status) { return WIFEXITED(status); }
int sd_wexitstatus(int status) { return WEXITSTATUS(status); }
int sd_wifsignaled(int status) { return WIFSIGNALED(status); }
int sd_wtermsig(int status) { return WTERMSIG(status); }
int sd_wcoredump(int status) { return WCOREDUMP(status); }

// ---------------------------------------------------------------------------------------------
// Spawning. The child shares the parent's memory until execve (CLONE_VM|CLONE_VFORK), so it may
// only make raw system calls and write its result into `spawn_args`; the parent sleeps until
// the child has exec'ed or exited.

typedef struct {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    const sd_fd_map *fds;
    int nfds;
    int death_signal;
    int new_session;
    pid_t parent;
    sigset_t old_mask;
    volatile int err;
    const char *volatile step;
} spawn_args;

// The child runs on the parent's memory and thread-local storage until execve, so it makes raw
// system calls only: no libc wrapper that a sanitizer intercepts, no errno, no locks.
__attribute__((no_sanitize("thread", "address", "memory")))
static int in_map(const spawn_args *a, int fd) {
    for (int i = 0; i < a->nfds; i++) if (a->fds[i].child_fd == fd) return 1;
    return 0;
}

// A system call without libc: returns -errno on failure.
__attribute__((no_sanitize("thread", "address", "memory")))
static long raw_call(long number, long a1, long a2, long a3, long a4) {
#if defined(__x86_64__)
    long ret;
    register long r10 __asm__("r10") = a4;
    __asm__ volatile ("syscall" : "=a"(ret) : "a"(number), "D"(a1), "S"(a2), "d"(a3), "r"(r10) : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = number;
    register long x0 __asm__("x0") = a1;
    register long x1 __asm__("x1") = a2;
    register long x2 __asm__("x2") = a3;
    register long x3 __asm__("x3") = a4;
    __asm__ volatile ("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
#else
    long ret = syscall(number, a1, a2, a3, a4);
    return ret < 0 ? -errno : ret;
#endif
}

__attribute__((no_sanitize("thread", "address", "memory")))
static int child_main(void *arg) {
    spawn_args *a = (spawn_args *)arg;
    long r;
    // Every signal back to its default disposition, ignored ones included (a runtime that
    // ignores SIGPIPE must not pass that on), as posix_spawn's SETSIGDEF does. A zeroed kernel
    // sigaction is SIG_DFL with no flags and an empty mask.
    unsigned long kact[4] = {0, 0, 0, 0};
    for (int sig = 1; sig < _NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        raw_call(SYS_rt_sigaction, sig, (long)kact, 0, _NSIG / 8);
    }
    if (a->new_session && (r = raw_call(SYS_setsid, 0, 0, 0, 0)) < 0) { a->step = "setsid"; a->err = (int)-r; raw_call(SYS_exit_group, 127, 0, 0, 0); }
    if (a->death_signal > 0) {
        if ((r = raw_call(SYS_prctl, PR_SET_PDEATHSIG, a->death_signal, 0, 0)) < 0) { a->step = "prctl"; a->err = (int)-r; raw_call(SYS_exit_group, 127, 0, 0, 0); }
        // The parent may have died before prctl took effect.
        if (raw_call(SYS_getppid, 0, 0, 0, 0) != a->parent) raw_call(SYS_exit_group, 127, 0, 0, 0);
    }
    // Move descriptors in two passes so that a source that is also a target is not clobbered:
    // first lift every source above the highest target, then dup into place.
    int high = 3;
    for (int i = 0; i < a->nfds; i++) if (a->fds[i].child_fd >= high) high = a->fds[i].child_fd + 1;
    int lifted[64];
    int n = a->nfds < 64 ? a->nfds : 64;
    for (int i = 0; i < n; i++) {
        long src = a->fds[i].parent_fd;
        if (src < 0) {
            src = raw_call(SYS_openat, AT_FDCWD, (long)"/dev/null", O_RDWR | O_CLOEXEC, 0);
            if (src < 0) { a->step = "open /dev/null"; a->err = (int)-src; raw_call(SYS_exit_group, 127, 0, 0, 0); }
        }
        r = raw_call(SYS_fcntl, src, F_DUPFD_CLOEXEC, high, 0);
        if (r < 0) { a->step = "dup"; a->err = (int)-r; raw_call(SYS_exit_group, 127, 0, 0, 0); }
        lifted[i] = (int)r;
    }
    for (int i = 0; i < n; i++) {
        r = raw_call(SYS_dup3, lifted[i], a->fds[i].child_fd, 0, 0);
        if (r < 0) { a->step = "dup2"; a->err = (int)-r; raw_call(SYS_exit_group, 127, 0, 0, 0); }
    }
    // Close everything else above stderr that is not a target: no descriptor leaks into the child.
    int top = 2;
    for (int i = 0; i < n; i++) if (a->fds[i].child_fd > top) top = a->fds[i].child_fd;
    for (int fd = 3; fd <= top; fd++) if (!in_map(a, fd)) raw_call(SYS_close, fd, 0, 0, 0);
    if (raw_call(SYS_close_range, (long)top + 1, (long)~0U, 0, 0) != 0) {
        for (int fd = top + 1; fd < 65536; fd++) raw_call(SYS_close, fd, 0, 0, 0);
    }
    if (a->cwd && (r = raw_call(SYS_chdir, (long)a->cwd, 0, 0, 0)) < 0) { a->step = "chdir"; a->err = (int)-r; raw_call(SYS_exit_group, 127, 0, 0, 0); }
    unsigned long empty_mask = 0;
    raw_call(SYS_rt_sigprocmask, SIG_SETMASK, (long)&empty_mask, 0, _NSIG / 8);
    r = raw_call(SYS_execve, (long)a->path, (long)a->argv, (long)a->envp, 0);
    a->step = "execve";
    a->err = (int)-r;
    raw_call(SYS_exit_group, 127, 0, 0, 0);
    return 127;
}

extern int __clone(int (*fn)(void *), void *stack, int flags, void *arg, ...);

int sd_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
             const sd_fd_map *fds, int nfds, int death_signal, int new_session,
             pid_t *pid_out, const char **failed_step) {
    if (nfds > 64) { *failed_step = "arguments"; return E2BIG; }
    spawn_args a;
    memset(&a, 0, sizeof a);
    a.path = path; a.argv = argv; a.envp = envp; a.cwd = cwd; a.fds = fds; a.nfds = nfds;
    a.death_signal = death_signal; a.new_session = new_session; a.parent = getpid();
    a.err = 0; a.step = NULL;

    size_t stack_size = 256 * 1024;
    void *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) { *failed_step = "mmap"; return errno; }

    // Block every signal so that no handler of ours runs in the child before exec.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &a.old_mask);
    // glibc's __clone is the same function as clone, but sanitizers intercept only `clone` (and
    // treat it as a fork, which a CLONE_VM child is not).
    pid_t pid = __clone(child_main, (char *)stack + stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &a.old_mask, NULL);
    munmap(stack, stack_size);

    if (pid < 0) { *failed_step = "clone"; return clone_errno; }
    if (a.err != 0) {
        // The child failed before exec and has exited: reap it so it leaves no zombie.
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        *failed_step = a.step;
        return a.err;
    }
    *pid_out = pid;
    return 0;
}
