// Compiled to nothing unless SD_GLIBC_COMPAT is defined, which only ci/release does. That build
// links against Debian 11's glibc 2.31 and promises hosts with glibc 2.28 (RHEL 8, Debian 10):
// every glibc symbol the binary needs must have a version of at most GLIBC_2.28. The static
// Swift runtime and GCC 12's static libstdc++ were built against a newer glibc, so:
//
// - libstdc++ reads __libc_single_threaded (glibc 2.32) to skip atomics in single-threaded
//   processes: ours is always 0, so it always uses them (correct, a little slower); and calls
//   arc4random (2.36) for std::random_device: ours draws from getrandom (2.25).
// - Foundation's Process calls posix_spawn_file_actions_addchdir_np (2.29): ours calls glibc's
//   when the host has it and returns ENOSYS otherwise (this engine spawns through Portability,
//   never through Foundation's Process).
// - exp, exp2, log, log2 and pow got new symbol versions in glibc 2.29 (same results, no SVID
//   error handling); the link wraps every reference (--wrap) into calls of their GLIBC_2.2.5
//   versions, which every glibc still has (found with dlvsym before main).
#ifdef SD_GLIBC_COMPAT
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <spawn.h>
#include <stdint.h>
#include <sys/random.h>
#include <unistd.h>

char __libc_single_threaded = 0;

uint32_t arc4random(void) {
    uint32_t v;
    while (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) {}
    return v;
}

int posix_spawn_file_actions_addchdir_np(posix_spawn_file_actions_t *actions, const char *path) {
    typedef int (*addchdir)(posix_spawn_file_actions_t *, const char *);
    addchdir real = (addchdir)dlsym(RTLD_NEXT, "posix_spawn_file_actions_addchdir_np");
    return real ? real(actions, path) : ENOSYS;
}

// The GLIBC_2.2.5 versions are looked up once, before main, with dlvsym (itself GLIBC_2.2.5). A
// `.symver` alias cannot name them here: --wrap redirects that reference too, and each wrapper
// became a jump to itself (a hang at the first log()).
static double (*sd_old_exp)(double), (*sd_old_exp2)(double), (*sd_old_log)(double), (*sd_old_log2)(double);
static double (*sd_old_pow)(double, double);

__attribute__((constructor)) static void sd_resolve_old_math(void) {
    sd_old_exp = (double (*)(double))dlvsym(RTLD_DEFAULT, "exp", "GLIBC_2.2.5");
    sd_old_exp2 = (double (*)(double))dlvsym(RTLD_DEFAULT, "exp2", "GLIBC_2.2.5");
    sd_old_log = (double (*)(double))dlvsym(RTLD_DEFAULT, "log", "GLIBC_2.2.5");
    sd_old_log2 = (double (*)(double))dlvsym(RTLD_DEFAULT, "log2", "GLIBC_2.2.5");
    sd_old_pow = (double (*)(double, double))dlvsym(RTLD_DEFAULT, "pow", "GLIBC_2.2.5");
    if (!sd_old_exp || !sd_old_exp2 || !sd_old_log || !sd_old_log2 || !sd_old_pow) {
        static const char message[] = "detectron: this glibc lacks exp/exp2/log/log2/pow@GLIBC_2.2.5\n";
        (void)!write(2, message, sizeof message - 1);
        _exit(127);
    }
}

double __wrap_exp(double x) { return sd_old_exp(x); }
double __wrap_exp2(double x) { return sd_old_exp2(x); }
double __wrap_log(double x) { return sd_old_log(x); }
double __wrap_log2(double x) { return sd_old_log2(x); }
double __wrap_pow(double x, double y) { return sd_old_pow(x, y); }
#endif
