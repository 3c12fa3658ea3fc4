/* Pre-warming policy thread (prewarm.h): predictions per model, idle-device checks, the
 * pre-warm requests to the schedulers and the yield of pre-warms still loading. Lock order:
 * p->mu is never held while calling into the residency or a scheduler. */
#include "server/prewarm.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "server/arrival_predict.h"

#define PREWARM_TICK_S 0.05
#define PREWARM_HALF_LIFE_S 300.0

struct zs_prewarm {
    zs_srv_model_t *models;
    int nmodels;
    zs_res_t *res;
    zs_slog_t log;
    double threshold;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* CLOCK_MONOTONIC; signalled to stop */
    int stop;                    /* under mu */
    int joined;                  /* zs_prewarm_stop's caller */
    zs_pred_t pred[ZS_SERVER_MAX_MODELS];    /* under mu */
    uint64_t done_for[ZS_SERVER_MAX_MODELS]; /* under mu: arrivals seen when the last pre-warm was asked */
    int yielding[ZS_SERVER_MAX_MODELS];      /* policy thread: a yield was asked (logged once) */
};

void zs_prewarm_observe(zs_prewarm_t *p, int idx, double t) {
    if (p == NULL || idx < 0 || idx >= p->nmodels) return;
    pthread_mutex_lock(&p->mu);
    zs_pred_observe(&p->pred[idx], t);
    pthread_mutex_unlock(&p->mu);
}

/* A pre-warm still loading while live requests want its device: cancel it. */
static void prewarm_yield(zs_prewarm_t *p, int i) {
    zs_srv_model_t *m = &p->models[i];
    int loading = zs_sched_state(m->sched) == ZS_MODEL_LOADING && zs_sched_prewarm_unused(m->sched);
    if (!loading) {
        p->yielding[i] = 0;
        return;
    }
    if (!zs_res_device_busy(p->res, i)) return;
    zs_sched_request_unload(m->sched, 0);
    if (!p->yielding[i])
        zs_slog(&p->log, ZS_LOG_INFO, NULL, "pre-warm of model %s yields: live requests want its device", m->name);
    p->yielding[i] = 1;
}

static void prewarm_consider(zs_prewarm_t *p, int i, double now) {
    zs_srv_model_t *m = &p->models[i];
    if (zs_sched_state(m->sched) != ZS_MODEL_UNLOADED || zs_sched_active(m->sched) > 0) return;
    double lead = 1.0 + 2.0 * zs_res_start_estimate(p->res, i);
    pthread_mutex_lock(&p->mu);
    zs_pred_t pr = p->pred[i];
    uint64_t done_for = p->done_for[i];
    pthread_mutex_unlock(&p->mu);
    if (pr.n == 0 || done_for == pr.n) return; /* nothing seen, or already pre-warmed for it */
    double prob = zs_pred_prob(&pr, now, lead);
    if (prob < p->threshold || zs_res_idle_devices(p->res, i) == 0) return;
    double sd = 0, next = zs_pred_next(&pr, &sd);
    /* unused, it stays until the predicted arrival (and its spread) has passed */
    double hold = (next >= 0 ? next + 3 * sd : now) + lead;
    zs_sched_request_prewarm(m->sched, hold);
    pthread_mutex_lock(&p->mu);
    p->done_for[i] = pr.n;
    pthread_mutex_unlock(&p->mu);
    if (next >= 0)
        zs_slog(&p->log, ZS_LOG_INFO, NULL,
                "pre-warm: model %s, next request expected in %.2f s (every %.2f s; p = %.2f within %.2f s)",
                m->name, next - now, pr.gap, prob, lead);
    else
        zs_slog(&p->log, ZS_LOG_INFO, NULL, "pre-warm: model %s, %.3f requests/s (p = %.2f within %.2f s)",
                m->name, zs_pred_rate(&pr, now), prob, lead);
}

static void *prewarm_main(void *arg) {
    zs_prewarm_t *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)(PREWARM_TICK_S * 1e9);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        if (p->stop) break;
        pthread_mutex_unlock(&p->mu);
        double now = zs_now();
        for (int i = 0; i < p->nmodels; i++) {
            if (p->models[i].sched == NULL) continue;
            prewarm_yield(p, i);
            prewarm_consider(p, i, now);
        }
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int zs_prewarm_start(zs_srv_model_t *models, int nmodels, zs_res_t *res, double threshold,
                     const zs_slog_t *log, zs_prewarm_t **out, zs_err_t *err) {
    *out = NULL;
    if (!(threshold > 0 && threshold <= 1))
        return zs_err_set(err, ZS_EINVAL, "pre-warm threshold %g must be in (0, 1]", threshold);
    if (nmodels < 0 || nmodels > ZS_SERVER_MAX_MODELS)
        return zs_err_set(err, ZS_EINVAL, "pre-warm: %d models", nmodels);
    zs_prewarm_t *p = calloc(1, sizeof *p);
    if (p == NULL) return zs_err_set(err, ZS_ENOMEM, "pre-warm: out of memory");
    p->models = models;
    p->nmodels = nmodels;
    p->res = res;
    p->log = *log;
    p->threshold = threshold;
    for (int i = 0; i < nmodels; i++) zs_pred_init(&p->pred[i], PREWARM_HALF_LIFE_S);
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        free(p);
        return zs_err_set(err, ZS_ENOMEM, "pre-warm: cannot initialize a condition variable");
    }
    int cv = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&p->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    int mu = cv && pthread_mutex_init(&p->mu, NULL) == 0;
    if (!mu) {
        if (cv) pthread_cond_destroy(&p->cv);
        free(p);
        return zs_err_set(err, ZS_ENOMEM, "pre-warm: cannot initialize a mutex");
    }
    int rc = pthread_create(&p->th, NULL, prewarm_main, p);
    if (rc != 0) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return zs_err_set(err, zs_status_from_errno(rc), "pre-warm: pthread_create: %s", strerror(rc));
    }
    *out = p;
    return 0;
}

void zs_prewarm_stop(zs_prewarm_t *p) {
    if (p == NULL || p->joined) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->th, NULL);
    p->joined = 1;
}

void zs_prewarm_free(zs_prewarm_t *p) {
    if (p == NULL) return;
    zs_prewarm_stop(p);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
