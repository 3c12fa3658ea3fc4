/* CPU communicator (engine/comm.h) for ranks that are threads of one process: each collective
 * publishes the rank's buffer, meets the other ranks at a barrier, and reads the others'
 * buffers directly. All-reduce: rank r sums elements [n*r/N, n*(r+1)/N) over the ranks in rank
 * order 0, 1, ..., N-1 into a shared buffer, and every rank copies the sums back, so the result
 * never depends on thread timing and is the same on every rank. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/comm.h"

enum { OP_REDUCE = 1, OP_GATHER = 2 };

typedef struct cpu_comm {
    zs_comm_t base;              /* first member */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;
    uint64_t gen;                /* barrier generation */
    int aborted;
    int status;                  /* result of the last barrier's serial check */
    char why[256];
    /* per rank, published before the first barrier of a collective */
    const float **src;
    float **dst;
    size_t *n;
    int *op;
    float *sum;                  /* all-reduce result, shared */
    size_t sum_cap;
} cpu_comm_t;

static cpu_comm_t *CC(zs_comm_t *c) { return (cpu_comm_t *)c; }

/* Runs with the mutex held by the last rank to arrive: every rank called the same collective
 * with the same count; the shared sum buffer is large enough. */
static int cc_serial(cpu_comm_t *c) {
    const int N = c->base.nranks;
    for (int r = 1; r < N; r++)
        if (c->op[r] != c->op[0] || c->n[r] != c->n[0]) {
            snprintf(c->why, sizeof c->why,
                     "cpu communicator: rank %d called %s of %zu floats, rank 0 %s of %zu floats", r,
                     c->op[r] == OP_REDUCE ? "all-reduce" : "all-gather", c->n[r],
                     c->op[0] == OP_REDUCE ? "all-reduce" : "all-gather", c->n[0]);
            return ZS_EINVAL;
        }
    if (c->op[0] == OP_REDUCE && c->n[0] > c->sum_cap) {
        float *s = realloc(c->sum, c->n[0] * sizeof(float));
        if (s == NULL) {
            snprintf(c->why, sizeof c->why, "cpu communicator: out of memory for %zu floats", c->n[0]);
            return ZS_ENOMEM;
        }
        c->sum = s;
        c->sum_cap = c->n[0];
    }
    return ZS_OK;
}

/* Waits until every rank has arrived (check: run cc_serial once, by the last to arrive). */
static int cc_barrier(cpu_comm_t *c, int check, int rank, zs_err_t *err) {
    pthread_mutex_lock(&c->mu);
    int rc = ZS_OK;
    if (!c->aborted) {
        const uint64_t gen = c->gen;
        if (++c->arrived == c->base.nranks) {
            c->arrived = 0;
            c->status = check ? cc_serial(c) : ZS_OK;
            c->gen++;
            pthread_cond_broadcast(&c->cv);
        } else {
            while (c->gen == gen && !c->aborted) pthread_cond_wait(&c->cv, &c->mu);
        }
        /* the next generation cannot start (and overwrite status) before this rank arrives */
        if (!c->aborted) rc = c->status;
    }
    if (c->aborted) rc = zs_err_set(err, ZS_ECANCELED, "cpu communicator: rank %d: the group was aborted", rank);
    else if (rc != ZS_OK) zs_err_set(err, rc, "%s", c->why);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int cc_check_rank(const cpu_comm_t *c, int rank, const zs_backend_t *be, zs_err_t *err) {
    if (rank < 0 || rank >= c->base.nranks)
        return zs_err_set(err, ZS_EINVAL, "cpu communicator: rank %d of %d", rank, c->base.nranks);
    if (be != NULL && be->device != ZS_DEV_CPU)
        return zs_err_set(err, ZS_EINVAL, "cpu communicator: rank %d: backend memory is not host memory", rank);
    return ZS_OK;
}

static int cc_all_reduce(zs_comm_t *cm, int rank, zs_backend_t *be, float *buf, size_t n, zs_err_t *err) {
    cpu_comm_t *c = CC(cm);
    int rc = cc_check_rank(c, rank, be, err);
    if (rc != ZS_OK) return rc;
    c->dst[rank] = buf;
    c->n[rank] = n;
    c->op[rank] = OP_REDUCE;
    if ((rc = cc_barrier(c, 1, rank, err)) != ZS_OK) return rc;
    const int N = c->base.nranks;
    const size_t b = (size_t)((uint64_t)n * (uint64_t)rank / (uint64_t)N),
                 e = (size_t)((uint64_t)n * (uint64_t)(rank + 1) / (uint64_t)N);
    for (size_t i = b; i < e; i++) {
        float s = c->dst[0][i];
        for (int r = 1; r < N; r++) s += c->dst[r][i];
        c->sum[i] = s;
    }
    /* every sum is written and every rank's buffer read before anyone writes its own */
    if ((rc = cc_barrier(c, 0, rank, err)) != ZS_OK) return rc;
    if (n) memcpy(buf, c->sum, n * sizeof(float));
    return ZS_OK;
}

static int cc_all_gather(zs_comm_t *cm, int rank, zs_backend_t *be, float *dst, const float *src, size_t n,
                         zs_err_t *err) {
    cpu_comm_t *c = CC(cm);
    int rc = cc_check_rank(c, rank, be, err);
    if (rc != ZS_OK) return rc;
    c->src[rank] = src;
    c->n[rank] = n;
    c->op[rank] = OP_GATHER;
    if ((rc = cc_barrier(c, 1, rank, err)) != ZS_OK) return rc;
    for (int r = 0; r < c->base.nranks; r++)
        if (n) memcpy(dst + (size_t)r * n, c->src[r], n * sizeof(float));
    /* the sources stay untouched until every rank has copied them */
    return cc_barrier(c, 0, rank, err);
}

static void cc_abort(zs_comm_t *cm) {
    cpu_comm_t *c = CC(cm);
    pthread_mutex_lock(&c->mu);
    c->aborted = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void cc_destroy(zs_comm_t *cm) {
    cpu_comm_t *c = CC(cm);
    if (c == NULL) return;
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->src);
    free(c->dst);
    free(c->n);
    free(c->op);
    free(c->sum);
    free(c);
}

static const zs_comm_ops_t cpu_comm_ops = {
    .name = "cpu",
    .destroy = cc_destroy,
    .all_reduce_sum = cc_all_reduce,
    .all_gather = cc_all_gather,
    .abort = cc_abort,
};

int zs_comm_cpu_create(int nranks, zs_comm_t **out, zs_err_t *err) {
    *out = NULL;
    if (nranks < 1 || nranks > 4096) return zs_err_set(err, ZS_EINVAL, "cpu communicator: %d ranks", nranks);
    cpu_comm_t *c = calloc(1, sizeof *c);
    if (c == NULL) return zs_err_set(err, ZS_ENOMEM, "cpu communicator: out of memory");
    c->base.ops = &cpu_comm_ops;
    c->base.nranks = nranks;
    c->src = calloc((size_t)nranks, sizeof *c->src);
    c->dst = calloc((size_t)nranks, sizeof *c->dst);
    c->n = calloc((size_t)nranks, sizeof *c->n);
    c->op = calloc((size_t)nranks, sizeof *c->op);
    int mu = c->src && c->dst && c->n && c->op && pthread_mutex_init(&c->mu, NULL) == 0;
    int cv = mu && pthread_cond_init(&c->cv, NULL) == 0;
    if (!cv) {
        if (mu) pthread_mutex_destroy(&c->mu);
        free(c->src);
        free(c->dst);
        free(c->n);
        free(c->op);
        free(c);
        return zs_err_set(err, ZS_ENOMEM, "cpu communicator: out of memory");
    }
    *out = &c->base;
    return ZS_OK;
}
