/* Persistent threads for the ranks of a tensor-parallel engine: one thread per rank, each
 * driving its rank's backend; a job runs on every rank at once (the ranks meet in their
 * collectives) and the caller waits for all of them. Internal to the engine. */
#ifndef ZS_ENGINE_RANK_THREADS_H
#define ZS_ENGINE_RANK_THREADS_H

#include "zerostart/err.h"

typedef struct zs_rank_threads zs_rank_threads_t;

/* A job for one rank: 0 or a negative zs_status with err filled. */
typedef int (*zs_rank_job_fn)(void *ctx, int rank, zs_err_t *err);

int zs_rank_threads_create(int nranks, zs_rank_threads_t **out, zs_err_t *err);
/* Runs job(ctx, r) on rank r's thread for every rank and returns once all have returned.
 * When a rank's job fails, on_fail(fail_ctx) (may be NULL) is called at once from that
 * rank's thread, so that ranks waiting for it in a collective give up. The error returned
 * names the rank; a rank's own failure is preferred over ZS_ECANCELED from ranks that were
 * stopped because of it. */
int zs_rank_threads_run(zs_rank_threads_t *t, zs_rank_job_fn job, void *ctx,
                        void (*on_fail)(void *), void *fail_ctx, zs_err_t *err);
void zs_rank_threads_destroy(zs_rank_threads_t *t);

#endif
