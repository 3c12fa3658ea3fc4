/* Requests as the HTTP threads and the scheduler share them: creation, reference counting,
 * cancellation, taking published text and the outcome, the response's usage. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "server/sched_internal.h"

/* --- requests ------------------------------------------------------------------------- */

const char *zs_model_state_name(int state) {
    switch (state) {
    case ZS_MODEL_UNLOADED: return "unloaded";
    case ZS_MODEL_LOADING: return "loading";
    case ZS_MODEL_READY: return "ready";
    case ZS_MODEL_UNLOADING: return "unloading";
    }
    return "unknown";
}

zs_sreq_t *zs_sreq_new(void) {
    zs_sreq_t *r = calloc(1, sizeof *r);
    if (r == NULL) return NULL;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return NULL;
    }
    if (pthread_cond_init(&r->cv, NULL) != 0) {
        pthread_mutex_destroy(&r->mu);
        free(r);
        return NULL;
    }
    atomic_init(&r->refs, 1);
    atomic_init(&r->cancel, ZS_CANCEL_NONE);
    r->s.seq = -1;
    r->s.owner = -1;
    r->startup = -1;
    r->t_arrive = zs_now();
    return r;
}

void zs_sreq_ref(zs_sreq_t *r) { atomic_fetch_add(&r->refs, 1); }

void zs_sreq_release(zs_sreq_t *r) {
    if (r == NULL || atomic_fetch_sub(&r->refs, 1) != 1) return;
    zs_oai_request_free(&r->oai);
    free(r->prompt);
    if (r->smp_ready) zs_sampler_free(&r->smp);
    zs_tok_stream_free(r->ts);
    free(r->out);
    free(r->s.gen);
    free(r->s.out_ids);
    free(r->cache_salt);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void zs_sreq_cancel(zs_sreq_t *r, int why) {
    int expected = ZS_CANCEL_NONE;
    atomic_compare_exchange_strong(&r->cancel, &expected, why);
    zs_sched_t *s = r->sched;
    if (s) {
        pthread_mutex_lock(&s->mu);
        s->kv_wake++; /* a request waiting for its blocks notices too */
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
}

int sreq_buf_append(char **p, size_t *len, size_t *cap, const char *t, size_t n) {
    if (n == 0) return 0;
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + n + 1) c *= 2;
        char *np = realloc(*p, c);
        if (np == NULL) return -1;
        *p = np;
        *cap = c;
    }
    memcpy(*p + *len, t, n);
    *len += n;
    (*p)[*len] = 0;
    return 0;
}

int zs_sreq_take(zs_sreq_t *r, int timeout_ms, zs_sreq_out_t *o) {
    memset(o, 0, sizeof *o);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->mu);
    while (r->out_len == 0 && !r->done) {
        int rc = pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        if (rc == ETIMEDOUT) break;
    }
    int got = 0;
    if (r->out_len) {
        o->text = r->out; /* hand the buffer over */
        o->len = r->out_len;
        r->out = NULL;
        r->out_len = r->out_cap = 0;
        got = 1;
    }
    if (r->done) {
        o->done = 1;
        o->finish = r->finish;
        o->err_status = r->err_status;
        memcpy(o->err_msg, r->err_msg, sizeof o->err_msg);
        o->ncompletion = r->ncompletion;
        o->cached_tokens = r->cached_tokens;
        o->kvu = r->kvu;
        got = 1;
    }
    pthread_mutex_unlock(&r->mu);
    return got;
}

void zs_sreq_usage(const zs_sreq_t *r, const zs_sreq_out_t *o, zs_oai_usage_t *u) {
    memset(u, 0, sizeof *u);
    u->prompt_tokens = r->nprompt;
    u->completion_tokens = o->ncompletion;
    u->cached_tokens = o->cached_tokens;
    u->has_kv = 1;
    u->gpu_tokens = o->kvu.gpu_tokens;
    u->host_tokens = o->kvu.host_tokens;
    u->disk_tokens = o->kvu.disk_tokens;
    u->computed_tokens = o->kvu.computed_tokens;
    u->restore_s = o->kvu.restore_s;
    u->restore_bytes = o->kvu.restore_bytes;
    u->restore_began_s = o->kvu.restore_began_s;
    u->admitted_s = o->kvu.admitted_s;
}

