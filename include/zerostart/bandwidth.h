/* Measuring the bandwidth of each tier weights pass through: storage or page cache to host
 * memory (O_DIRECT or buffered reads by parallel threads) and pinned host memory to a GPU.
 * Used for benchmark ceilings and for start-up-aware decisions. */
#ifndef ZEROSTART_BANDWIDTH_H
#define ZEROSTART_BANDWIDTH_H

#include <stddef.h>

#include "zerostart/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zs_bw_result {
    double seconds;
    double bytes;
    double gbps;        /* 1e9 bytes per second */
} zs_bw_result_t;

/* Reads every byte of the n files with `threads` threads in `chunk`-byte pieces, O_DIRECT
 * when direct is set (buffered otherwise), into per-thread buffers. */
int zs_bw_read_files(const char *const *paths, int n, int direct, int threads, size_t chunk,
                     zs_bw_result_t *out, zs_err_t *err);
/* Copies `bytes` from page-locked host memory to GPU `dev` `reps` times over `streams`
 * streams; returns the best repetition. */
int zs_bw_h2d(int dev, size_t bytes, int streams, int reps, zs_bw_result_t *out, zs_err_t *err);

#ifdef __cplusplus
}
#endif
#endif
