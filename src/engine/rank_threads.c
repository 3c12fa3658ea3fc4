/* One persistent thread per tensor-parallel rank running jobs in lockstep
 * (engine/rank_threads.h): a generation counter starts a job on every thread, a pending count
 * tells the caller when all have finished, and each rank keeps its own status and error. */
#include "engine/rank_threads.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct rank_slot {
    zs_rank_threads_t *t;
    int rank;
    pthread_t th;
    int started;
    int rc;
    zs_err_t err;
} rank_slot_t;

struct zs_rank_threads {
    int nranks;
    rank_slot_t *slots;
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    uint64_t gen;
    int pending, quit;
    zs_rank_job_fn job;
    void *ctx;
    void (*on_fail)(void *);
    void *fail_ctx;
};

static void *rank_main(void *arg) {
    rank_slot_t *s = arg;
    zs_rank_threads_t *t = s->t;
    uint64_t seen = 0;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (t->gen == seen && !t->quit) pthread_cond_wait(&t->start, &t->mu);
        if (t->quit) break;
        seen = t->gen;
        zs_rank_job_fn job = t->job;
        void *ctx = t->ctx;
        void (*on_fail)(void *) = t->on_fail;
        void *fail_ctx = t->fail_ctx;
        pthread_mutex_unlock(&t->mu);
        memset(&s->err, 0, sizeof s->err);
        int rc = job(ctx, s->rank, &s->err);
        if (rc != 0 && on_fail != NULL) on_fail(fail_ctx);
        pthread_mutex_lock(&t->mu);
        s->rc = rc;
        if (--t->pending == 0) pthread_cond_broadcast(&t->done);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

void zs_rank_threads_destroy(zs_rank_threads_t *t) {
    if (t == NULL) return;
    pthread_mutex_lock(&t->mu);
    t->quit = 1;
    pthread_cond_broadcast(&t->start);
    pthread_mutex_unlock(&t->mu);
    for (int r = 0; r < t->nranks; r++)
        if (t->slots[r].started) pthread_join(t->slots[r].th, NULL);
    pthread_cond_destroy(&t->start);
    pthread_cond_destroy(&t->done);
    pthread_mutex_destroy(&t->mu);
    free(t->slots);
    free(t);
}

int zs_rank_threads_create(int nranks, zs_rank_threads_t **out, zs_err_t *err) {
    *out = NULL;
    if (nranks < 1 || nranks > 4096) return zs_err_set(err, ZS_EINVAL, "rank threads: %d ranks", nranks);
    zs_rank_threads_t *t = calloc(1, sizeof *t);
    if (t == NULL) return zs_err_set(err, ZS_ENOMEM, "rank threads: out of memory");
    t->slots = calloc((size_t)nranks, sizeof *t->slots);
    if (t->slots == NULL || pthread_mutex_init(&t->mu, NULL) != 0) {
        free(t->slots);
        free(t);
        return zs_err_set(err, ZS_ENOMEM, "rank threads: out of memory");
    }
    int started = pthread_cond_init(&t->start, NULL) == 0;
    if (!started || pthread_cond_init(&t->done, NULL) != 0) {
        if (started) pthread_cond_destroy(&t->start);
        pthread_mutex_destroy(&t->mu);
        free(t->slots);
        free(t);
        return zs_err_set(err, ZS_ENOMEM, "rank threads: cannot create condition variables");
    }
    t->nranks = nranks;
    for (int r = 0; r < nranks; r++) {
        rank_slot_t *s = &t->slots[r];
        s->t = t;
        s->rank = r;
        int e = pthread_create(&s->th, NULL, rank_main, s);
        if (e != 0) {
            zs_rank_threads_destroy(t);
            return zs_err_set(err, ZS_ENOMEM, "rank threads: cannot start the thread of rank %d: %s", r,
                              strerror(e));
        }
        s->started = 1;
    }
    *out = t;
    return ZS_OK;
}

int zs_rank_threads_run(zs_rank_threads_t *t, zs_rank_job_fn job, void *ctx, void (*on_fail)(void *),
                        void *fail_ctx, zs_err_t *err) {
    pthread_mutex_lock(&t->mu);
    t->job = job;
    t->ctx = ctx;
    t->on_fail = on_fail;
    t->fail_ctx = fail_ctx;
    t->pending = t->nranks;
    t->gen++;
    pthread_cond_broadcast(&t->start);
    while (t->pending > 0) pthread_cond_wait(&t->done, &t->mu);
    pthread_mutex_unlock(&t->mu);
    const rank_slot_t *worst = NULL;
    for (int r = 0; r < t->nranks; r++) {
        const rank_slot_t *s = &t->slots[r];
        if (s->rc == 0) continue;
        if (worst == NULL || (worst->rc == ZS_ECANCELED && s->rc != ZS_ECANCELED)) worst = s;
    }
    if (worst == NULL) return ZS_OK;
    return zs_err_set(err, worst->rc, "rank %d: %s", worst->rank, worst->err.msg);
}
