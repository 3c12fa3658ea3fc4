/* CPU backend thread pool: a fixed set of pthreads that run parallel-for loops, the calling
 * thread taking part. Internal to the CPU backend. */
#ifndef ZS_ENGINE_CPU_POOL_H
#define ZS_ENGINE_CPU_POOL_H

#include <stdint.h>

#include "zerostart/err.h"

typedef struct zs_cpu_pool zs_cpu_pool_t;

/* fn handles items [begin, end); worker is in [0, nworkers) and unique among concurrent
 * calls (for per-worker scratch). */
typedef void (*zs_cpu_task_fn)(void *ctx, int64_t begin, int64_t end, int worker);

/* nthreads >= 1 counts the caller: nthreads - 1 threads are started. */
int zs_cpu_pool_create(int nthreads, zs_cpu_pool_t **out, zs_err_t *err);
void zs_cpu_pool_destroy(zs_cpu_pool_t *p);
int zs_cpu_pool_workers(const zs_cpu_pool_t *p);
/* Runs fn over [0, n) in chunks of `grain` items and returns when all are done. */
void zs_cpu_pool_run(zs_cpu_pool_t *p, int64_t n, int64_t grain, zs_cpu_task_fn fn, void *ctx);

#endif
