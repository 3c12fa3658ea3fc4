/* Monotonic time in seconds, for timings and timelines. */
#ifndef ZS_CLOCK_H
#define ZS_CLOCK_H

#include <time.h>

static inline double zs_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
