/* CPU backend thread pool: persistent pthreads running parallel-for jobs. Items are handed
 * out in chunks through an atomic counter; the caller works too and waits for the rest. */
#include "engine/cpu_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct zs_cpu_pool {
    int nworkers;              /* including the caller (worker 0) */
    pthread_t *threads;
    int nstarted;
    pthread_mutex_t mu;
    pthread_cond_t cv_start, cv_done;
    uint64_t generation;       /* bumped per job */
    int active;                /* threads still inside the current job */
    int quit;
    /* current job */
    zs_cpu_task_fn fn;
    void *ctx;
    int64_t n, grain;
    atomic_llong next;
};

typedef struct {
    zs_cpu_pool_t *p;
    int id;
} worker_arg_t;

static void run_chunks(zs_cpu_pool_t *p, int worker) {
    for (;;) {
        int64_t b = (int64_t)atomic_fetch_add(&p->next, (long long)p->grain);
        if (b >= p->n) break;
        int64_t e = b + p->grain < p->n ? b + p->grain : p->n;
        p->fn(p->ctx, b, e, worker);
    }
}

static void *worker_main(void *arg) {
    worker_arg_t wa = *(worker_arg_t *)arg;
    free(arg);
    zs_cpu_pool_t *p = wa.p;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->generation == seen) pthread_cond_wait(&p->cv_start, &p->mu);
        if (p->quit) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_chunks(p, wa.id);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0) pthread_cond_signal(&p->cv_done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int zs_cpu_pool_create(int nthreads, zs_cpu_pool_t **out, zs_err_t *err) {
    *out = NULL;
    if (nthreads < 1) nthreads = 1;
    zs_cpu_pool_t *p = calloc(1, sizeof *p);
    if (p == NULL) return zs_err_set(err, ZS_ENOMEM, "cpu backend: out of memory for thread pool");
    p->nworkers = nthreads;
    atomic_init(&p->next, 0);
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return zs_err_set(err, ZS_EIO, "cpu backend: pthread_mutex_init failed");
    }
    if (pthread_cond_init(&p->cv_start, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return zs_err_set(err, ZS_EIO, "cpu backend: pthread_cond_init failed");
    }
    if (pthread_cond_init(&p->cv_done, NULL) != 0) {
        pthread_cond_destroy(&p->cv_start);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return zs_err_set(err, ZS_EIO, "cpu backend: pthread_cond_init failed");
    }
    if (nthreads > 1) {
        p->threads = calloc((size_t)nthreads - 1, sizeof *p->threads);
        if (p->threads == NULL) {
            zs_cpu_pool_destroy(p);
            return zs_err_set(err, ZS_ENOMEM, "cpu backend: out of memory for thread pool");
        }
    }
    for (int i = 1; i < nthreads; i++) {
        worker_arg_t *wa = malloc(sizeof *wa);
        if (wa == NULL) {
            zs_cpu_pool_destroy(p);
            return zs_err_set(err, ZS_ENOMEM, "cpu backend: out of memory for thread pool");
        }
        wa->p = p;
        wa->id = i;
        int rc = pthread_create(&p->threads[i - 1], NULL, worker_main, wa);
        if (rc != 0) {
            free(wa);
            zs_cpu_pool_destroy(p);
            return zs_err_set(err, ZS_EIO, "cpu backend: pthread_create failed: %s", strerror(rc));
        }
        p->nstarted++;
    }
    *out = p;
    return 0;
}

void zs_cpu_pool_destroy(zs_cpu_pool_t *p) {
    if (p == NULL) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->cv_start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nstarted; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_cond_destroy(&p->cv_done);
    pthread_cond_destroy(&p->cv_start);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int zs_cpu_pool_workers(const zs_cpu_pool_t *p) { return p->nworkers; }

void zs_cpu_pool_run(zs_cpu_pool_t *p, int64_t n, int64_t grain, zs_cpu_task_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (p->nstarted == 0 || n <= grain) {
        fn(ctx, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->grain = grain;
    atomic_store(&p->next, 0);
    p->active = p->nstarted;
    p->generation++;
    pthread_cond_broadcast(&p->cv_start);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->active > 0) pthread_cond_wait(&p->cv_done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
