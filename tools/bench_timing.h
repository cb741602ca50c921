// Timing helpers shared by the C benchmark tools (bench_sgemm.c, bench_decode.c).
#ifndef BENCH_TIMING_H
#define BENCH_TIMING_H

#include <time.h>

// Seconds on the monotonic clock.
static inline double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// qsort order for doubles (medians of runs).
static inline int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
