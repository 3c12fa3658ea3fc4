/* The continuous-batching scheduler thread: admission with KV reservation, prefix reuse from
 * the GPU prefix cache and from the KV store's host and disk tiers (requests whose blocks are
 * read from disk wait aside, without holding up the others), mixed prefill/decode forward
 * steps, per-request sampling, incremental detokenizing, stop strings, publishing text to
 * waiting HTTP threads, cancellation; a finished conversation's KV (prompt and reply) is kept
 * as a prefix-cache holder, and holders leaving the GPU go to the store. */
#include "server/scheduler.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "gpu/gpu_rt.h"
#include "server/kv_predict.h"
#include "server/prefix_cache.h"
#include "server/textstop.h"

/* A prefix seen this many times (decayed) is worth bringing back while idle. */
#define PREDICT_MIN_COUNT 1.5

/* A request's progress through KV reuse at admission. */
enum { KV_NEW = 0, KV_FETCHING = 1, KV_READY = 2, KV_RUNNING = 3 };

/* Idle-time work: one prefix at a time brought into the GPU prefix cache while no live
 * request needs the engine: a registered context (restored or computed, and stored), or a
 * prefix the predictor expects next (restored from the store only). */
typedef struct pre_job {
    int active;
    int predicted;            /* 1: a prediction (ctx.ids is a copy, ctx.id empty) */
    uint64_t entry;           /* the predictor's entry */
    zs_ctx_t ctx;             /* copy of the registered context */
    zs_kv_ns_t ns;
    int phase;                /* KV_* */
    zs_kvt_restore_t rs;
    int32_t seq, gpu_blocks;
    int64_t pos, restored;
    double t0;
} pre_job_t;

struct zs_sched {
    zs_engine_t *e;           /* NULL while unloaded */
    const zs_tok_t *tok;
    zs_sched_opts_t o;
    int32_t eos[32];
    zs_metrics_t *m;
    zs_slog_t log;
    int32_t V, bs;
    uint32_t nblocks_total;

    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    zs_sreq_t *wait_head, *wait_tail;
    int nwait;
    int stopping, draining, cancel_all;
    atomic_int active;        /* submitted and not finished */
    zs_model_gauges_t g;      /* under mu */

    /* lifecycle */
    zs_sched_life_t life;
    int has_life;
    atomic_int state;         /* ZS_MODEL_*; written by the scheduler thread */
    atomic_int abort_load;    /* set at shutdown: a load waiting for memory gives up */
    pthread_cond_t state_cv;  /* state changes (under mu) */
    uint64_t reached[4];      /* under mu: times each state was entered (zs_sched_wait_state) */
    int want_load, want_unload, want_evict; /* under mu */
    double idle_since;        /* under mu */
    uint64_t load_failures;   /* under mu */
    char load_err[320];       /* under mu */
    int pc_ready;
    uint64_t kv_wake;         /* under mu: fetch jobs that finished (their callbacks) */
    uint64_t kv_seen;         /* scheduler thread: kv_wake when last looked */
    /* overlapped start and pre-warming */
    int weights_pending;      /* scheduler thread: the engine runs while the weights stream in */
    int want_prewarm;         /* under mu */
    double prewarm_hold;      /* under mu: keep-alive keeps an unused pre-warm until then */
    int prewarm_unused;       /* under mu: the engine came from a pre-warm no request has used */

    /* scheduler thread only */
    pre_job_t pre;            /* idle-time precompute */
    zs_kvp_t *pred;           /* prefix prediction (created at the first bind) */
    uint64_t prefetches, prefetched_blocks; /* under mu */
    zs_sreq_t *fetch_head;    /* requests waiting for their blocks to be read from disk */
    int nfetch;               /* written by the scheduler thread under mu */
    zs_sreq_t **run;
    int nrun;
    zs_pcache_t pc;
    zs_engine_item_t *items;
    zs_sreq_t **item_req;
    float *logits;
    uint8_t *bitmap;
};

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

static int buf_append(char **p, size_t *len, size_t *cap, const char *t, size_t n) {
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
}

/* --- scheduler internals ---------------------------------------------------------------- */

static void publish(zs_sched_t *s, zs_sreq_t *r, const char *t, size_t n) {
    if (n == 0) return;
    pthread_mutex_lock(&r->mu);
    int rc = buf_append(&r->out, &r->out_len, &r->out_cap, t, n);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (rc) zs_slog(&s->log, ZS_LOG_ERROR, r->id, "out of memory publishing %zu bytes", n);
}

/* Gives a restore job back (its host copies unpinned); call once the imported blocks have
 * been copied, i.e. after a forward step or a sync. */
static void restore_end(zs_sched_t *s, zs_sreq_t *r) {
    if (r->s.rs.job) zs_kvt_restore_end(s->o.kvt, &r->s.rs);
}

/* The tokens whose KV the request's sequence holds: the prompt, then its generated tokens
 * (malloc'd; NULL when out of memory). */
static int32_t *held_tokens(const zs_sreq_t *r, int64_t n) {
    int32_t *t = malloc((size_t)n * sizeof *t);
    if (t == NULL) return NULL;
    int64_t np = n < r->nprompt ? n : r->nprompt;
    memcpy(t, r->prompt, (size_t)np * sizeof *t);
    if (n > np) memcpy(t + np, r->s.out_ids, (size_t)(n - np) * sizeof *t);
    return t;
}

/* Frees the request's sequence. Its full blocks stay cached in a holder: the prompt's, or,
 * when the request got further (a conversation turn: prompt and reply), every full block it
 * computed, so that the next turn prefills only its new message. */
static void release_seq(zs_sched_t *s, zs_sreq_t *r) {
    restore_end(s, r);
    if (r->s.seq < 0) return;
    zs_err_t err = {0};
    int64_t len = zs_engine_seq_len(s->e, r->s.seq);
    int64_t have = (int64_t)r->nprompt + r->s.nout;
    if (len > have) len = have;
    int32_t nb = (int32_t)(len / s->bs);
    if (r->s.owner >= 0 && nb <= s->pc.owners[r->s.owner].nblocks) nb = 0; /* nothing beyond the prompt */
    if (nb > 0) { /* register the longer run under a new holder */
        int32_t *toks = held_tokens(r, (int64_t)nb * s->bs);
        int32_t holder = -1;
        if (toks != NULL && zs_engine_seq_fork_prefix(s->e, r->s.seq, (int64_t)nb * s->bs, &holder, &err) == 0) {
            if (r->s.owner >= 0) (void)zs_pcache_drop(&s->pc, r->s.owner); /* its seq is r's: freed below */
            r->s.owner = -1;
            int32_t idx = zs_pcache_register(&s->pc, &r->s.ns, holder, toks, nb, 1);
            if (idx < 0) {
                int32_t h = zs_pcache_lru_holder(&s->pc);
                if (h >= 0) {
                    int32_t hs = zs_pcache_drop(&s->pc, h);
                    if (hs >= 0) (void)zs_engine_seq_free(s->e, hs, NULL);
                    idx = zs_pcache_register(&s->pc, &r->s.ns, holder, toks, nb, 1);
                }
            }
            if (idx < 0) (void)zs_engine_seq_free(s->e, holder, NULL);
        }
        free(toks);
    }
    if (r->s.owner >= 0) {
        int32_t onb = s->pc.owners[r->s.owner].nblocks, holder = -1;
        if (zs_engine_seq_fork_prefix(s->e, r->s.seq, (int64_t)onb * s->bs, &holder, &err) == 0) {
            zs_pcache_rebind(&s->pc, r->s.owner, holder, 1);
        } else {
            zs_slog(&s->log, ZS_LOG_WARN, r->id, "prefix cache: cannot keep blocks: %s", err.msg);
            (void)zs_pcache_drop(&s->pc, r->s.owner);
        }
        r->s.owner = -1;
    }
    if (zs_engine_seq_free(s->e, r->s.seq, &err) != 0)
        zs_slog(&s->log, ZS_LOG_ERROR, r->id, "freeing sequence %d: %s", r->s.seq, err.msg);
    r->s.seq = -1;
}

/* Ends a request: publishes the outcome, frees its KV. */
static void finish(zs_sched_t *s, zs_sreq_t *r, const char *reason, int err_status,
                   const char *err_msg) {
    if (reason && !r->s.stop_hit) {
        const char *t;
        size_t n;
        zs_err_t err = {0};
        if (r->ts && zs_tok_stream_flush(r->ts, &t, &n, &err) == 0 && n &&
            buf_append(&r->s.gen, &r->s.gen_len, &r->s.gen_cap, t, n) != 0)
            zs_slog(&s->log, ZS_LOG_ERROR, r->id, "out of memory for generated text");
        if (r->s.gen_len > r->s.emitted) publish(s, r, r->s.gen + r->s.emitted, r->s.gen_len - r->s.emitted);
        r->s.emitted = r->s.gen_len;
    }
    if (r->s.rs.job && r->s.seq >= 0 && s->e) {
        zs_err_t e2 = {0};
        (void)zs_engine_sync(s->e, &e2); /* imports in flight read the pinned host copies */
    }
    release_seq(s, r);
    int cancelled = atomic_load(&r->cancel) != ZS_CANCEL_NONE;
    double e2e = zs_now() - r->t_arrive;
    pthread_mutex_lock(&r->mu);
    r->done = 1;
    r->finish = reason;
    if (!reason) {
        r->err_status = err_status;
        snprintf(r->err_msg, sizeof r->err_msg, "%s", err_msg ? err_msg : "internal error");
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    zs_metrics_request_done(s->m, e2e, r->nprompt, r->ncompletion, cancelled);
    const zs_kv_usage_t *u = &r->kvu;
    zs_slog(&s->log, ZS_LOG_INFO, r->id,
            "done: %s prompt=%d cached=%lld (gpu %lld, host %lld, disk %lld in %.1f ms) completion=%lld %.1f ms",
            reason ? reason : (cancelled ? "cancelled" : "error"), r->nprompt, (long long)r->cached_tokens,
            (long long)u->gpu_tokens, (long long)u->host_tokens, (long long)u->disk_tokens, u->restore_s * 1e3,
            (long long)r->ncompletion, e2e * 1e3);
    r->s.finished = 1;
    atomic_fetch_sub(&s->active, 1);
    /* the scheduler's reference is dropped by compact_run (running requests) or by
     * finish_unqueued (requests that never ran): r may still be listed in run[] here */
}

static void finish_unqueued(zs_sched_t *s, zs_sreq_t *r, int err_status, const char *msg) {
    finish(s, r, NULL, err_status, msg);
    zs_sreq_release(r);
}

static int64_t free_budget(zs_sched_t *s) {
    int64_t avail = (int64_t)zs_kv_free_blocks(zs_engine_kv(s->e));
    for (int i = 0; i < s->nrun; i++) {
        zs_sreq_t *r = s->run[i];
        int32_t have = zs_engine_seq_blocks(s->e, r->s.seq, NULL);
        if (r->s.need_blocks > have) avail -= r->s.need_blocks - have;
    }
    return avail;
}

/* Drops a holder from the GPU prefix cache; its blocks go to the KV store first (host memory
 * now, disk in the background), so that leaving the GPU does not lose them. */
static void evict_holder(zs_sched_t *s, int32_t idx) {
    const zs_pc_owner_t *o = &s->pc.owners[idx];
    if (o->seq >= 0 && o->holder) zs_kvt_export(s->o.kvt, s->e, o->seq, &o->ns, o->tokens, o->nblocks, 1);
    int32_t seq = zs_pcache_drop(&s->pc, idx);
    zs_err_t err = {0};
    if (seq >= 0 && zs_engine_seq_free(s->e, seq, &err) != 0)
        zs_slog(&s->log, ZS_LOG_ERROR, NULL, "prefix cache: freeing holder %d: %s", seq, err.msg);
}

/* Every holder to the store (scale to zero, shutdown): waits until the copies have landed. */
static void save_holders(zs_sched_t *s) {
    if (!s->pc_ready || s->e == NULL || !zs_kvt_has_store(s->o.kvt)) return;
    for (int32_t i = 0; i < s->pc.max_owners; i++) {
        const zs_pc_owner_t *o = &s->pc.owners[i];
        if (o->seq >= 0 && o->holder) zs_kvt_export(s->o.kvt, s->e, o->seq, &o->ns, o->tokens, o->nblocks, 1);
    }
    zs_kvt_poll(s->o.kvt, s->e, 1);
}

static zs_sreq_t *pop_wait(zs_sched_t *s) {
    pthread_mutex_lock(&s->mu);
    zs_sreq_t *r = s->wait_head;
    if (r) {
        s->wait_head = r->s.next;
        if (s->wait_head == NULL) s->wait_tail = NULL;
        s->nwait--;
        r->s.next = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* Puts r back at the head of the wait queue (its blocks arrived from disk). */
static void push_wait_front(zs_sched_t *s, zs_sreq_t *r) {
    pthread_mutex_lock(&s->mu);
    r->s.next = s->wait_head;
    s->wait_head = r;
    if (s->wait_tail == NULL) s->wait_tail = r;
    s->nwait++;
    pthread_mutex_unlock(&s->mu);
}

/* A fetch job's disk reads finished (a store reader thread). */
static void kv_fetch_done(void *ctx) {
    zs_sched_t *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->kv_wake++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Requests whose disk reads are done go back to the head of the queue; cancelled ones end. */
static void collect_fetches(zs_sched_t *s) {
    zs_sreq_t **pp = &s->fetch_head;
    while (*pp) {
        zs_sreq_t *r = *pp;
        int c = atomic_load(&r->cancel);
        if (c == ZS_CANCEL_NONE && !zs_kvstore_job_finished(r->s.rs.job)) {
            pp = &r->s.next;
            continue;
        }
        *pp = r->s.next;
        r->s.next = NULL;
        pthread_mutex_lock(&s->mu);
        s->nfetch--;
        pthread_mutex_unlock(&s->mu);
        if (c != ZS_CANCEL_NONE) {
            finish_unqueued(s, r, c == ZS_CANCEL_SHUTDOWN ? 503 : 499,
                            c == ZS_CANCEL_SHUTDOWN ? "the server is shutting down" : "request cancelled");
            continue;
        }
        r->s.kv_phase = KV_READY;
        push_wait_front(s, r);
    }
}

/* First look at a request: its namespace, and a restore from the store when the store holds
 * more of its prompt than the GPU cache. Returns 1 when r left the queue to wait for disk. */
static int kv_plan(zs_sched_t *s, zs_sreq_t *r, int32_t maxb) {
    zs_err_t err = {0};
    r->s.kv_phase = KV_READY;
    if (zs_kvt_namespace(s->o.kvt, r->cache_salt, &r->s.ns, &err) != 0) {
        zs_slog(&s->log, ZS_LOG_WARN, r->id, "kv namespace: %s", err.msg); /* the zero namespace still works */
        return 0;
    }
    int32_t owner = -1;
    int32_t mb = zs_pcache_match(&s->pc, &r->s.ns, r->prompt, r->nprompt, maxb, &owner);
    int rc = zs_kvt_restore_begin(s->o.kvt, &r->s.ns, r->prompt, mb, maxb, kv_fetch_done, s, &r->s.rs, &err);
    if (rc < 0) zs_slog(&s->log, ZS_LOG_WARN, r->id, "kv restore: %s", err.msg);
    if (rc != 1 || zs_kvstore_job_finished(r->s.rs.job)) return 0;
    r->s.kv_phase = KV_FETCHING;
    (void)pop_wait(s); /* r is the head */
    r->s.next = s->fetch_head;
    s->fetch_head = r;
    pthread_mutex_lock(&s->mu);
    s->nfetch++;
    pthread_mutex_unlock(&s->mu);
    return 1;
}

/* Appends the restored blocks to a new sequence whose first mb blocks came from the GPU
 * cache; returns the blocks imported. */
static int32_t kv_import(zs_sched_t *s, zs_sreq_t *r, int32_t mb) {
    zs_kvt_restore_t *rs = &r->s.rs;
    if (rs->job == NULL || mb < rs->from) { /* the GPU lost blocks meanwhile: not contiguous */
        restore_end(s, r);
        return 0;
    }
    zs_err_t err = {0};
    int rc = ZS_OK;
    if (mb > rs->from) { /* the GPU cache has grown past the job's start: skip those blocks */
        const void *const *data = NULL;
        size_t ok = zs_kvstore_job_result(rs->job, &data, NULL);
        size_t skip = (size_t)(mb - rs->from);
        if (ok <= skip) {
            restore_end(s, r);
            return 0;
        }
        rc = zs_engine_seq_import(s->e, r->s.seq, data + skip, (int32_t)(ok - skip), &err);
        if (rc == ZS_OK) {
            rs->imported = (int32_t)(ok - skip);
            rs->host_blocks = rs->imported; /* counted as host: the disk part is indistinguishable here */
            rs->disk_blocks = 0;
            rs->seconds = zs_now() - rs->t0;
        }
    } else {
        rc = zs_kvt_restore_import(s->o.kvt, s->e, r->s.seq, rs, &err);
        if (rc > 0) rc = ZS_OK;
    }
    if (rc != ZS_OK) {
        zs_slog(&s->log, ZS_LOG_WARN, r->id, "kv restore: import failed, prefilling instead: %s", err.msg);
        restore_end(s, r);
        return 0;
    }
    return rs->imported;
}

/* --- idle-time precompute of registered contexts -------------------------------------------- */

/* Ends the precompute job: state READY / FAILED, or PENDING to requeue it (it gave its memory
 * to live requests, or the model is going away). */
static void pre_end(zs_sched_t *s, int state, const char *why) {
    pre_job_t *p = &s->pre;
    if (!p->active) return;
    if (p->rs.job && p->seq >= 0 && s->e) (void)zs_engine_sync(s->e, NULL); /* imports read pinned copies */
    if (p->rs.job) zs_kvt_restore_end(s->o.kvt, &p->rs);
    if (p->seq >= 0 && s->e) (void)zs_engine_seq_free(s->e, p->seq, NULL);
    int64_t cached = (int64_t)(p->ctx.n / s->bs) * s->bs;
    double dt = zs_now() - p->t0;
    if (p->predicted && state == ZS_CTX_READY && p->restored > 0) {
        pthread_mutex_lock(&s->mu);
        s->prefetches++;
        s->prefetched_blocks += (uint64_t)(p->restored / s->bs);
        pthread_mutex_unlock(&s->mu);
        zs_slog(&s->log, ZS_LOG_DEBUG, NULL, "model %s: predicted prefix of %d tokens back in the GPU cache (%lld "
                "restored) in %.1f ms", s->o.name, p->ctx.n, (long long)p->restored, dt * 1e3);
    } else if (!p->predicted) {
        zs_ctxreg_finish(s->o.contexts, p->ctx.id, state, cached, p->restored, dt, why);
        if (state == ZS_CTX_READY)
            zs_slog(&s->log, ZS_LOG_INFO, NULL, "model %s: context %s ready: %d tokens (%lld from the GPU cache, %lld "
                    "restored, the rest computed) in %.1f ms", s->o.name, p->ctx.id, p->ctx.n,
                    (long long)p->gpu_blocks * s->bs, (long long)p->restored, dt * 1e3);
        else if (state == ZS_CTX_FAILED)
            zs_slog(&s->log, ZS_LOG_WARN, NULL, "model %s: context %s failed: %s", s->o.name, p->ctx.id, why);
    }
    zs_ctx_free_copy(&p->ctx);
    memset(p, 0, sizeof *p);
    p->seq = -1;
}

/* Registers the computed context as a prefix-cache holder and copies it to the store. */
static void pre_publish(zs_sched_t *s) {
    pre_job_t *p = &s->pre;
    int32_t nb = (int32_t)(p->pos / s->bs);
    if (nb > 0) {
        if (!p->predicted) /* durable: written through to disk (a prediction came from the store) */
            zs_kvt_export(s->o.kvt, s->e, p->seq, &p->ns, p->ctx.ids, nb, 1);
        int32_t idx = zs_pcache_register(&s->pc, &p->ns, p->seq, p->ctx.ids, nb, 1);
        if (idx < 0) {
            int32_t h = zs_pcache_lru_holder(&s->pc);
            if (h >= 0) evict_holder(s, h);
            idx = zs_pcache_register(&s->pc, &p->ns, p->seq, p->ctx.ids, nb, 1);
        }
        if (idx >= 0) p->seq = -1; /* the holder owns it now */
    }
    pre_end(s, ZS_CTX_READY, NULL);
}

/* The best prediction whose prefix is not all in the GPU cache (a predicted prefix still in
 * the GPU needs nothing; it is looked at again once it has left). */
static int pick_prediction(zs_sched_t *s, zs_kvp_pred_t *out) {
    if (s->pred == NULL || !zs_kvt_has_store(s->o.kvt) || !s->pc_ready) return 0;
    zs_kvp_pred_t pr[4];
    int n = zs_kvp_predict(s->pred, zs_now(), PREDICT_MIN_COUNT, pr, 4);
    for (int i = 0; i < n; i++) {
        if (zs_pcache_peek(&s->pc, &pr[i].ns, pr[i].ids, (int64_t)pr[i].nblocks * s->bs, pr[i].nblocks) <
            pr[i].nblocks) {
            *out = pr[i];
            return 1;
        }
    }
    return 0;
}

/* One step of the precompute job, taking a pending context when there is none. Called only
 * when no live request is queued or running, so a live request waits at most one step. */
static void pre_step(zs_sched_t *s) {
    pre_job_t *p = &s->pre;
    zs_err_t err = {0};
    if (!p->active) {
        zs_kvp_pred_t pr;
        if (s->o.contexts != NULL && zs_ctxreg_take(s->o.contexts, s->o.name, &p->ctx)) {
            p->predicted = 0;
        } else if (pick_prediction(s, &pr)) {
            zs_kvp_mark_prefetched(s->pred, pr.entry); /* tried once per use, whatever happens */
            int32_t n = pr.nblocks * s->bs;
            if ((p->ctx.ids = malloc((size_t)n * sizeof *p->ctx.ids)) == NULL) return;
            memcpy(p->ctx.ids, pr.ids, (size_t)n * sizeof *p->ctx.ids);
            p->ctx.n = n;
            p->predicted = 1;
            p->entry = pr.entry;
            p->ns = pr.ns;
        } else {
            return;
        }
        p->active = 1;
        p->seq = -1;
        p->phase = KV_NEW;
        p->t0 = zs_now();
        for (int32_t i = 0; i < p->ctx.n; i++)
            if (p->ctx.ids[i] < 0 || p->ctx.ids[i] >= s->V) {
                pre_end(s, ZS_CTX_FAILED, "a token id is outside the model's vocabulary");
                return;
            }
        if (p->ctx.n >= s->o.ctx) {
            pre_end(s, ZS_CTX_FAILED, "longer than the model's context");
            return;
        }
        if (!p->predicted && zs_kvt_namespace(s->o.kvt, p->ctx.salt, &p->ns, &err) != 0) {
            pre_end(s, ZS_CTX_FAILED, err.msg);
            return;
        }
    }
    const int32_t nb = p->ctx.n / s->bs;
    int32_t owner = -1;
    if (p->phase == KV_NEW) {
        p->gpu_blocks = zs_pcache_match(&s->pc, &p->ns, p->ctx.ids, p->ctx.n, nb, &owner);
        if (p->gpu_blocks == nb && p->ctx.n % s->bs == 0 && nb > 0) { /* all there: make it durable too */
            if (!p->predicted) zs_kvt_export(s->o.kvt, s->e, s->pc.owners[owner].seq, &p->ns, p->ctx.ids, nb, 1);
            pre_end(s, ZS_CTX_READY, NULL);
            return;
        }
        int rc = zs_kvt_restore_begin(s->o.kvt, &p->ns, p->ctx.ids, p->gpu_blocks, nb, kv_fetch_done, s, &p->rs, &err);
        if (rc != 1 && p->predicted) { /* nothing to bring back: a prediction is never computed */
            pre_end(s, ZS_CTX_PENDING, NULL);
            return;
        }
        p->phase = rc == 1 && !zs_kvstore_job_finished(p->rs.job) ? KV_FETCHING : KV_READY;
        return;
    }
    if (p->phase == KV_FETCHING) {
        if (zs_kvstore_job_finished(p->rs.job)) p->phase = KV_READY;
        return;
    }
    if (p->phase == KV_READY) {
        int32_t mb = zs_pcache_match(&s->pc, &p->ns, p->ctx.ids, p->ctx.n, nb, &owner);
        int64_t need = (p->ctx.n + s->bs - 1) / s->bs;
        if (p->predicted) { /* only what the store holds: the restored blocks */
            size_t ok = p->rs.job ? zs_kvstore_job_result(p->rs.job, NULL, NULL) : 0;
            need = mb == p->rs.from ? mb + (int64_t)ok : mb;
        }
        while (need - mb > free_budget(s)) {
            int32_t h = zs_pcache_lru_holder(&s->pc);
            if (h < 0) break;
            evict_holder(s, h);
            mb = zs_pcache_match(&s->pc, &p->ns, p->ctx.ids, p->ctx.n, nb, &owner);
        }
        if (need - mb > free_budget(s)) {
            pre_end(s, ZS_CTX_FAILED, "does not fit in the KV cache");
            return;
        }
        int rc = mb > 0 ? zs_engine_seq_fork_prefix(s->e, s->pc.owners[owner].seq, (int64_t)mb * s->bs, &p->seq, &err)
                        : zs_engine_seq_new(s->e, &p->seq, &err);
        if (rc != 0) {
            p->seq = -1;
            pre_end(s, ZS_CTX_FAILED, err.msg);
            return;
        }
        int32_t imported = 0;
        if (p->rs.job && mb == p->rs.from) {
            int k = zs_kvt_restore_import(s->o.kvt, s->e, p->seq, &p->rs, &err);
            imported = k > 0 ? k : 0;
        }
        p->gpu_blocks = mb;
        p->restored = (int64_t)imported * s->bs;
        p->pos = (int64_t)(mb + imported) * s->bs;
        p->phase = KV_RUNNING;
        if (p->predicted) { /* published once the imports have been copied (the next step) */
            if (imported == 0) pre_end(s, ZS_CTX_PENDING, NULL);
            return;
        }
        zs_ctxreg_progress(s->o.contexts, p->ctx.id, p->pos);
        if (p->pos >= p->ctx.n) pre_publish(s);
        return;
    }
    if (p->predicted) { /* KV_RUNNING: wait for the copies, then hold the blocks in the cache */
        if (zs_engine_sync(s->e, &err) != 0) {
            pre_end(s, ZS_CTX_FAILED, err.msg);
            return;
        }
        if (p->rs.job) zs_kvt_restore_end(s->o.kvt, &p->rs);
        pre_publish(s);
        return;
    }
    /* KV_RUNNING: one forward step of the rest */
    int64_t take = p->ctx.n - p->pos;
    if (take > s->o.step_tokens) take = s->o.step_tokens;
    zs_engine_item_t it = {.seq = p->seq, .ids = p->ctx.ids + p->pos, .n = (int32_t)take};
    double t0 = zs_now();
    if (zs_engine_forward(s->e, &it, 1, NULL, 0, &err) != 0) {
        pre_end(s, ZS_CTX_FAILED, err.msg);
        return;
    }
    zs_kvt_note_prefill(s->o.kvt, take, zs_now() - t0);
    if (p->rs.job) zs_kvt_restore_end(s->o.kvt, &p->rs); /* the imports have been copied */
    p->pos += take;
    zs_ctxreg_progress(s->o.contexts, p->ctx.id, p->pos);
    if (p->pos >= p->ctx.n) pre_publish(s);
}

/* Idle-time work is waiting for this model. */
static int pre_pending(zs_sched_t *s) {
    if (s->pre.active) /* reading from disk: the reader's callback wakes the scheduler */
        return !(s->pre.phase == KV_FETCHING && !zs_kvstore_job_finished(s->pre.rs.job));
    if (s->o.contexts != NULL && zs_ctxreg_has_pending(s->o.contexts, s->o.name)) return 1;
    zs_kvp_pred_t pr;
    return pick_prediction(s, &pr);
}

static void admit(zs_sched_t *s) {
    while (s->nrun < s->o.max_batch) {
        pthread_mutex_lock(&s->mu);
        zs_sreq_t *r = s->wait_head;
        pthread_mutex_unlock(&s->mu);
        if (r == NULL) return;
        if (atomic_load(&r->cancel)) {
            finish_unqueued(s, pop_wait(s), 499, "request cancelled");
            continue;
        }
        int64_t need = (r->nprompt + r->max_tokens + s->bs - 1) / s->bs;
        int32_t maxb = (r->nprompt - 1) / s->bs;
        if (r->s.kv_phase == KV_NEW && kv_plan(s, r, maxb)) continue;
        int32_t owner = -1;
        int32_t mb = zs_pcache_match(&s->pc, &r->s.ns, r->prompt, r->nprompt, maxb, &owner);
        int64_t avail = free_budget(s);
        if (need - mb > avail && s->pre.active && s->pre.seq >= 0) { /* precompute yields its memory */
            pre_end(s, ZS_CTX_PENDING, NULL);
            avail = free_budget(s);
        }
        while (need - mb > avail) {
            int32_t h = zs_pcache_lru_holder(&s->pc);
            if (h < 0) break;
            evict_holder(s, h);
            mb = zs_pcache_match(&s->pc, &r->s.ns, r->prompt, r->nprompt, maxb, &owner);
            avail = free_budget(s);
        }
        if (need - mb > avail) {
            if (s->nrun == 0) {
                char msg[200];
                snprintf(msg, sizeof msg,
                         "the request needs %lld KV blocks but the cache holds %u",
                         (long long)need, s->nblocks_total);
                restore_end(s, r);
                finish_unqueued(s, pop_wait(s), 503, msg);
                continue;
            }
            return; /* wait for running requests to finish */
        }
        r = pop_wait(s);
        zs_err_t err = {0};
        int32_t seq = -1;
        int rc = mb > 0 ? zs_engine_seq_fork_prefix(s->e, s->pc.owners[owner].seq,
                                                    (int64_t)mb * s->bs, &seq, &err)
                        : zs_engine_seq_new(s->e, &seq, &err);
        if (rc != 0) {
            zs_slog(&s->log, ZS_LOG_ERROR, r->id, "admission: %s", err.msg);
            restore_end(s, r);
            finish_unqueued(s, r, 500, err.msg);
            continue;
        }
        r->s.seq = seq;
        int32_t imported = kv_import(s, r, mb);
        r->s.pos = (int64_t)(mb + imported) * s->bs;
        r->s.prefilling = 1;
        r->s.need_blocks = need;
        r->cached_tokens = r->s.pos;
        zs_kv_usage_t *u = &r->kvu;
        u->gpu_tokens = (int64_t)mb * s->bs;
        if (imported > 0) {
            u->host_tokens = (int64_t)r->s.rs.host_blocks * s->bs;
            u->disk_tokens = (int64_t)r->s.rs.disk_blocks * s->bs;
            u->restore_s = r->s.rs.seconds;
            u->restore_bytes = (uint64_t)imported * zs_engine_kv(s->e)->layout.block_bytes;
        }
        u->computed_tokens = r->nprompt - r->s.pos;
        zs_kvt_note_request(s->o.kvt, u->gpu_tokens, u->computed_tokens);
        if (s->pred) (void)zs_kvp_observe(s->pred, &r->s.ns, r->prompt, r->nprompt, zs_now());
        zs_metrics_prefix(s->m, r->s.pos);
        zs_metrics_kv_request(s->m, u->gpu_tokens, u->host_tokens, u->disk_tokens, u->computed_tokens,
                              imported > 0 ? u->restore_s : -1);
        s->run[s->nrun++] = r;
        zs_slog(&s->log, ZS_LOG_DEBUG, r->id,
                "admitted: seq %d, %d prompt tokens, %lld cached (gpu %lld, restored %lld)", seq, r->nprompt,
                (long long)r->s.pos, (long long)u->gpu_tokens, (long long)(u->host_tokens + u->disk_tokens));
    }
}

static void register_prefix(zs_sched_t *s, zs_sreq_t *r) {
    int32_t nb = r->nprompt / s->bs;
    if (nb <= 0) return;
    int32_t idx = zs_pcache_register(&s->pc, &r->s.ns, r->s.seq, r->prompt, nb, 0);
    if (idx < 0) {
        int32_t h = zs_pcache_lru_holder(&s->pc);
        if (h < 0) return;
        evict_holder(s, h);
        idx = zs_pcache_register(&s->pc, &r->s.ns, r->s.seq, r->prompt, nb, 0);
    }
    r->s.owner = idx;
}

/* Samples and handles the next token of r from its logits row. */
static void next_token(zs_sched_t *s, zs_sreq_t *r, float *row) {
    zs_err_t err = {0};
    int32_t tok = -1;
    if (zs_sampler_sample(&r->smp, row, &tok, &err) != 0) {
        finish(s, r, NULL, 500, err.msg);
        return;
    }
    int reason = zs_sampler_accept(&r->smp, tok, &err);
    if (reason < 0) {
        finish(s, r, NULL, 500, err.msg);
        return;
    }
    double now = zs_now();
    if (r->ncompletion == 0 && r->startup >= 0 && s->has_life && s->life.first_token)
        s->life.first_token(s->life.ctx, r->startup, now, r);
    if (r->ncompletion == 0) zs_metrics_ttft(s->m, now - r->t_arrive);
    else zs_metrics_itl(s->m, now - r->s.t_last);
    r->s.t_last = now;
    r->ncompletion++;
    if (r->s.nout == r->s.out_cap) { /* the reply's ids, for the session's KV (best effort) */
        int64_t cap = r->s.out_cap ? 2 * r->s.out_cap : 64;
        int32_t *p = realloc(r->s.out_ids, (size_t)cap * sizeof *p);
        if (p) {
            r->s.out_ids = p;
            r->s.out_cap = cap;
        }
    }
    if (r->s.nout < r->s.out_cap) r->s.out_ids[r->s.nout++] = tok;
    if (reason == ZS_SAMPLE_STOP_TOKEN) {
        finish(s, r, "stop", 0, NULL);
        return;
    }
    const char *t = NULL;
    size_t n = 0;
    zs_err_t terr = {0};
    if (zs_tok_stream_step(r->ts, tok, &t, &n, &terr) != 0) n = 0; /* id without a token */
    if (n && buf_append(&r->s.gen, &r->s.gen_len, &r->s.gen_cap, t, n) != 0) {
        finish(s, r, NULL, 500, "out of memory for generated text");
        return;
    }
    const zs_oai_req_t *q = &r->oai;
    long hit = zs_stop_find(r->s.gen, r->s.gen_len, r->s.emitted, q->stop, q->stop_len, q->nstop);
    if (hit >= 0) {
        publish(s, r, r->s.gen + r->s.emitted, (size_t)hit - r->s.emitted);
        r->s.emitted = (size_t)hit;
        r->s.stop_hit = 1;
        finish(s, r, "stop", 0, NULL);
        return;
    }
    size_t safe = zs_stop_safe_len(r->s.gen, r->s.gen_len, r->s.emitted, q->stop, q->stop_len,
                                   q->nstop);
    if (safe > r->s.emitted) {
        publish(s, r, r->s.gen + r->s.emitted, safe - r->s.emitted);
        r->s.emitted = safe;
    }
    if (reason == ZS_SAMPLE_STOP_MAX || reason == ZS_SAMPLE_STOP_HOOK ||
        r->nprompt + r->ncompletion >= s->o.ctx) {
        finish(s, r, reason == ZS_SAMPLE_STOP_HOOK ? "stop" : "length", 0, NULL);
        return;
    }
    r->s.last_tok = tok;
}

static void poll_weights(zs_sched_t *s, int block);

static void compact_run(zs_sched_t *s) {
    int w = 0;
    for (int i = 0; i < s->nrun; i++) {
        if (!s->run[i]->s.finished) s->run[w++] = s->run[i];
        else zs_sreq_release(s->run[i]);
    }
    s->nrun = w;
}

static void handle_cancels(zs_sched_t *s) {
    for (int i = 0; i < s->nrun; i++) {
        zs_sreq_t *r = s->run[i];
        int c = atomic_load(&r->cancel);
        if (c != ZS_CANCEL_NONE)
            finish(s, r, NULL, c == ZS_CANCEL_SHUTDOWN ? 503 : 499,
                   c == ZS_CANCEL_SHUTDOWN ? "the server is shutting down" : "request cancelled");
    }
    compact_run(s);
}

static void step(zs_sched_t *s) {
    int n = 0;
    int64_t budget = s->o.step_tokens;
    for (int i = 0; i < s->nrun; i++) {
        zs_sreq_t *r = s->run[i];
        if (r->s.prefilling) continue;
        s->items[n] = (zs_engine_item_t){.seq = r->s.seq, .ids = &r->s.last_tok, .n = 1};
        s->item_req[n++] = r;
        budget--;
    }
    for (int i = 0; i < s->nrun && budget > 0; i++) {
        zs_sreq_t *r = s->run[i];
        if (!r->s.prefilling) continue;
        int64_t take = r->nprompt - r->s.pos;
        if (take > budget) take = budget;
        s->items[n] = (zs_engine_item_t){.seq = r->s.seq, .ids = r->prompt + r->s.pos, .n = (int32_t)take};
        s->item_req[n++] = r;
        budget -= take;
    }
    if (n == 0) return;
    int64_t prefill_tokens = 0;
    for (int i = 0; i < n; i++)
        if (s->item_req[i]->s.prefilling) prefill_tokens += s->items[i].n;
    zs_err_t err = {0};
    double t0 = zs_now();
    int rc = zs_engine_forward(s->e, s->items, n, s->logits, 0, &err);
    if (rc == 0) {
        zs_kvt_note_prefill(s->o.kvt, prefill_tokens, zs_now() - t0);
        for (int i = 0; i < s->nrun; i++) restore_end(s, s->run[i]); /* imports have been copied */
    }
    if (rc != 0 && s->weights_pending) {
        poll_weights(s, 1); /* a failed overlapped load fails every request with its own error */
        if (s->e == NULL) return;
    }
    if (rc != 0) {
        zs_slog(&s->log, ZS_LOG_ERROR, NULL, "model %s: forward step of %d items failed: %s",
                s->o.name, n, err.msg);
        for (int i = 0; i < n; i++) finish(s, s->item_req[i], NULL, 500, err.msg);
        compact_run(s);
        return;
    }
    for (int i = 0; i < n; i++) {
        zs_sreq_t *r = s->item_req[i];
        if (r->s.prefilling) {
            r->s.pos += s->items[i].n;
            if (r->s.pos < r->nprompt) continue;
            r->s.prefilling = 0;
            register_prefix(s, r);
        }
        next_token(s, r, s->logits + (size_t)i * (size_t)s->V);
    }
    compact_run(s);
}

/* The KV store's numbers into g (s->mu held by the caller; st sampled before). */
static void kv_gauges(zs_model_gauges_t *g, const zs_kvt_stats_t *st) {
    const zs_kvstore_stats_t *k = &st->store;
    g->kvs_host_bytes = (int64_t)k->host.bytes;
    g->kvs_host_capacity = (int64_t)k->host.capacity;
    g->kvs_host_blocks = (int64_t)k->host.blocks;
    g->kvs_disk_bytes = (int64_t)k->disk.bytes;
    g->kvs_disk_capacity = (int64_t)k->disk.capacity;
    g->kvs_disk_blocks = (int64_t)k->disk.blocks;
    g->kvs_write_queue = (int64_t)k->writes_pending;
    g->kvs_host_evictions = (int64_t)k->host.evictions;
    g->kvs_disk_evictions = (int64_t)k->disk.evictions;
    g->kvs_writes = (int64_t)k->writes_done;
    g->kvs_writes_dropped = (int64_t)k->writes_dropped;
    g->kvs_write_errors = (int64_t)k->write_errors;
    g->kvs_rejected = (int64_t)k->disk.rejected;
    g->kvs_exported_blocks = (int64_t)st->exported_blocks;
    g->kvs_export_dropped = (int64_t)st->export_dropped;
    g->kvs_skipped_by_cost = (int64_t)st->skipped_by_cost;
}

static void update_gauges(zs_sched_t *s) {
    zs_kvt_stats_t kst;
    zs_kvt_stats(s->o.kvt, &kst);
    int64_t cready = 0, cpending = 0;
    uint64_t cdone = 0;
    if (s->o.contexts) zs_ctxreg_counts(s->o.contexts, s->o.name, &cready, &cpending, &cdone);
    if (s->e == NULL) {
        pthread_mutex_lock(&s->mu);
        kv_gauges(&s->g, &kst);
        s->g.ctx_ready = cready, s->g.ctx_pending = cpending, s->g.ctx_precomputed = (int64_t)cdone;
        s->g.kv_prefetches = (int64_t)s->prefetches, s->g.kv_prefetched_blocks = (int64_t)s->prefetched_blocks;
        s->g.queue = s->nwait + s->nfetch;
        s->g.running = s->nrun;
        s->g.kv_used = s->g.kv_in_use = s->g.kv_cached = s->g.kv_total = 0;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    const zs_kv_cache_t *kv = zs_engine_kv(s->e);
    int64_t used = (int64_t)s->nblocks_total - (int64_t)zs_kv_free_blocks(kv);
    memset(s->bitmap, 0, (s->nblocks_total + 7) / 8);
    int64_t in_use = 0;
    for (int i = 0; i < s->nrun; i++) {
        const int32_t *b = NULL;
        int32_t nb = zs_engine_seq_blocks(s->e, s->run[i]->s.seq, &b);
        for (int32_t k = 0; k < nb; k++) {
            uint32_t id = (uint32_t)b[k];
            if (id < s->nblocks_total && !(s->bitmap[id / 8] & (1u << (id % 8)))) {
                s->bitmap[id / 8] |= (uint8_t)(1u << (id % 8));
                in_use++;
            }
        }
    }
    pthread_mutex_lock(&s->mu);
    kv_gauges(&s->g, &kst);
    s->g.ctx_ready = cready, s->g.ctx_pending = cpending, s->g.ctx_precomputed = (int64_t)cdone;
    s->g.kv_prefetches = (int64_t)s->prefetches, s->g.kv_prefetched_blocks = (int64_t)s->prefetched_blocks;
    s->g.queue = s->nwait + s->nfetch;
    s->g.running = s->nrun;
    s->g.kv_used = used;
    s->g.kv_in_use = in_use;
    s->g.kv_cached = used - in_use;
    s->g.kv_total = s->nblocks_total;
    pthread_mutex_unlock(&s->mu);
}

/* Binds a (new) engine: the buffers sized by its vocabulary and KV cache. */
static int sched_bind(zs_sched_t *s, zs_engine_t *e) {
    const zs_kv_cache_t *kv = zs_engine_kv(e);
    int32_t V = zs_engine_config(e)->vocab;
    float *logits = malloc((size_t)s->o.max_batch * (size_t)V * sizeof(float));
    uint8_t *bitmap = malloc((kv->nblocks + 7) / 8);
    if (logits == NULL || bitmap == NULL) {
        free(logits);
        free(bitmap);
        return -1;
    }
    zs_err_t err = {0};
    if (zs_kvt_bind(s->o.kvt, e, &err) != 0) {
        zs_slog(&s->log, ZS_LOG_ERROR, NULL, "model %s: KV store: %s", s->o.name, err.msg);
        free(logits);
        free(bitmap);
        return -1;
    }
    if (s->pc_ready) zs_pcache_destroy(&s->pc);
    s->pc_ready = 0;
    if (zs_pcache_init(&s->pc, kv->layout.block_size, s->o.max_batch + 256, kv->nblocks) != 0) {
        free(logits);
        free(bitmap);
        return -1;
    }
    s->pc_ready = 1;
    free(s->logits);
    free(s->bitmap);
    s->logits = logits;
    s->bitmap = bitmap;
    if (s->pred == NULL) {
        zs_kvp_opts_t po = {.block_size = kv->layout.block_size};
        if (zs_kvp_create(&po, &s->pred) != 0) s->pred = NULL; /* no prediction: not fatal */
    }
    s->e = e;
    s->V = V;
    s->bs = kv->layout.block_size;
    s->nblocks_total = kv->nblocks;
    return 0;
}

static void set_state(zs_sched_t *s, int st) {
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->state, st);
    s->reached[st]++;
    if (st == ZS_MODEL_READY) {
        s->idle_since = zs_now();
        s->want_load = 0;
    }
    pthread_cond_broadcast(&s->state_cv);
    pthread_mutex_unlock(&s->mu);
}

/* Finishes every queued request that was cancelled (no engine needed). */
static void drop_cancelled_waiting(zs_sched_t *s) {
    zs_sreq_t *dropped = NULL;
    pthread_mutex_lock(&s->mu);
    zs_sreq_t **pp = &s->wait_head, *prev = NULL;
    while (*pp) {
        zs_sreq_t *r = *pp;
        if (atomic_load(&r->cancel) != ZS_CANCEL_NONE) {
            *pp = r->s.next;
            s->nwait--;
            r->s.next = dropped;
            dropped = r;
        } else {
            prev = r;
            pp = &r->s.next;
        }
    }
    s->wait_tail = prev;
    pthread_mutex_unlock(&s->mu);
    while (dropped) {
        zs_sreq_t *r = dropped;
        dropped = r->s.next;
        r->s.next = NULL;
        int c = atomic_load(&r->cancel);
        finish_unqueued(s, r, c == ZS_CANCEL_SHUTDOWN ? 503 : 499,
                        c == ZS_CANCEL_SHUTDOWN ? "the server is shutting down" : "request cancelled");
    }
}

static void sched_unload(zs_sched_t *s, const char *why) {
    pthread_mutex_lock(&s->mu);
    int unused = s->prewarm_unused;
    s->prewarm_unused = 0;
    pthread_mutex_unlock(&s->mu);
    if (unused) zs_metrics_prewarm(s->m, ZS_PREWARM_UNUSED);
    int cancelled = s->weights_pending; /* unload cancels a load still in progress */
    s->weights_pending = 0;
    set_state(s, ZS_MODEL_UNLOADING);
    pre_end(s, ZS_CTX_PENDING, NULL);
    save_holders(s); /* the cached prefixes survive scale to zero in the store */
    if (s->o.contexts) zs_ctxreg_requeue_model(s->o.contexts, s->o.name); /* back in the GPU at the next load */
    zs_kvt_unbind(s->o.kvt);
    if (s->pc_ready) zs_pcache_destroy(&s->pc); /* holder sequences die with the engine */
    s->pc_ready = 0;
    s->life.unload(s->life.ctx, why);
    s->e = NULL;
    pthread_mutex_lock(&s->mu);
    if (cancelled) { /* whoever waits for "ready" (admin load) learns that it will not come */
        s->load_failures++;
        snprintf(s->load_err, sizeof s->load_err, "model %.60s: the start was cancelled (unloaded: %.60s)",
                 s->o.name, why);
    }
    pthread_mutex_unlock(&s->mu);
    set_state(s, ZS_MODEL_UNLOADED);
    update_gauges(s);
}

/* A start failed: running and queued requests get 503 with the reason, the engine (an
 * overlapped start's) is unloaded, waiters of zs_sched_wait_state see the failure. */
static void load_failed(zs_sched_t *s, const char *rid, const zs_err_t *err) {
    char msg[320];
    snprintf(msg, sizeof msg, "model %.60s could not be loaded: %.220s", s->o.name, err->msg);
    zs_slog(&s->log, ZS_LOG_ERROR, rid, "%s", msg);
    if (s->e != NULL) {
        for (int i = 0; i < s->nrun; i++)
            if (!s->run[i]->s.finished) finish(s, s->run[i], NULL, 503, msg);
        compact_run(s);
        sched_unload(s, "load failed");
    }
    s->e = NULL;
    pthread_mutex_lock(&s->mu);
    s->load_failures++;
    snprintf(s->load_err, sizeof s->load_err, "%s", msg);
    atomic_store(&s->state, ZS_MODEL_UNLOADED);
    s->reached[ZS_MODEL_UNLOADED]++;
    pthread_cond_broadcast(&s->state_cv);
    pthread_mutex_unlock(&s->mu);
    zs_sreq_t *r;
    while ((r = pop_wait(s)) != NULL) finish_unqueued(s, r, 503, msg);
}

/* Overlapped start: looks at the weights still streaming in (block: waits for them). Once every
 * weight is resident the model is ready; a failed load fails its requests and unloads. */
static void poll_weights(zs_sched_t *s, int block) {
    if (!s->weights_pending) return;
    zs_err_t err = {0};
    int rc = s->life.load_poll(s->life.ctx, block, &err);
    if (rc > 0) return;
    s->weights_pending = 0;
    if (rc == 0) set_state(s, ZS_MODEL_READY);
    else load_failed(s, NULL, &err);
}

static void sched_load(zs_sched_t *s, int prewarm) {
    pthread_mutex_lock(&s->mu);
    zs_sreq_t *trigger = s->wait_head; /* only this thread pops: it stays queued meanwhile */
    pthread_mutex_unlock(&s->mu);
    const char *why = trigger ? "request" : prewarm ? "prewarm" : "admin";
    set_state(s, ZS_MODEL_LOADING);
    zs_engine_t *e = NULL;
    int64_t sid = -1;
    zs_err_t err = {0};
    int rc = s->life.load(s->life.ctx, trigger, why, &s->abort_load, &e, &sid, &err);
    if (rc == ZS_EBUSY && trigger == NULL && prewarm) { /* no idle room now: nothing was done */
        zs_slog(&s->log, ZS_LOG_DEBUG, NULL, "model %s: pre-warm skipped: %s", s->o.name, err.msg);
        set_state(s, ZS_MODEL_UNLOADED);
        return;
    }
    if (rc == 0 && sched_bind(s, e) != 0) {
        s->life.unload(s->life.ctx, "out of memory");
        rc = zs_err_set(&err, ZS_ENOMEM, "out of memory for the scheduler buffers");
    }
    if (rc != 0) {
        s->e = NULL;
        load_failed(s, trigger ? trigger->id : NULL, &err);
        return;
    }
    if (trigger) trigger->startup = sid;
    if (trigger == NULL && prewarm) zs_metrics_prewarm(s->m, ZS_PREWARM_STARTED);
    pthread_mutex_lock(&s->mu);
    s->prewarm_unused = trigger == NULL && prewarm && s->wait_head == NULL;
    pthread_mutex_unlock(&s->mu);
    s->weights_pending = s->life.load_poll != NULL; /* the state stays "loading" until they are in */
    poll_weights(s, 0);
    if (!s->weights_pending && s->e != NULL) set_state(s, ZS_MODEL_READY);
}

/* When keep-alive unloads an idle ready model (under mu). */
static double keep_alive_deadline(const zs_sched_t *s) {
    double dl = s->idle_since + s->o.keep_alive_s;
    if (s->prewarm_unused && s->prewarm_hold > dl) dl = s->prewarm_hold;
    return dl;
}

static void cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, double deadline) {
    double now = zs_now();
    if (deadline <= now) return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double d = deadline - now;
    if (d > 3600) d = 3600;
    ts.tv_sec += (time_t)d;
    ts.tv_nsec += (long)((d - (double)(time_t)d) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cv, mu, &ts); /* cv uses CLOCK_MONOTONIC */
}

static void *sched_main(void *arg) {
    zs_sched_t *s = arg;
    if (s->o.cuda_device >= 0) {
        zs_err_t err = {0};
        if (zs_gpu_set_device(s->o.cuda_device, &err) != 0)
            zs_slog(&s->log, ZS_LOG_ERROR, NULL, "model %s: %s", s->o.name, err.msg);
    }
    update_gauges(s);
    for (;;) {
        pthread_mutex_lock(&s->mu);
        for (;;) {
            int st = atomic_load(&s->state);
            if (s->stopping || s->cancel_all || s->wait_head != NULL || s->nrun > 0) break;
            if (s->nfetch > 0 && s->kv_wake != s->kv_seen) break; /* blocks arrived, or a cancel */
            if (s->e != NULL && zs_kvt_pending(s->o.kvt) > 0) { /* exports to publish as they land */
                cond_wait_until(&s->cv, &s->mu, zs_now() + 0.002);
                break;
            }
            if (s->nfetch > 0) {
                pthread_cond_wait(&s->cv, &s->mu);
                continue;
            }
            if (s->e != NULL && st == ZS_MODEL_READY && !s->want_unload && !s->want_evict && pre_pending(s))
                break; /* idle: compute registered contexts */
            if (!s->has_life) {
                pthread_cond_wait(&s->cv, &s->mu);
                continue;
            }
            if (s->weights_pending) { /* overlapped start, no work: look at the load again soon */
                if (!s->want_unload && !s->want_evict) cond_wait_until(&s->cv, &s->mu, zs_now() + 0.005);
                break;
            }
            if (st == ZS_MODEL_UNLOADED && (s->want_load || s->want_prewarm)) break;
            if (st == ZS_MODEL_READY && (s->want_unload || s->want_evict)) break;
            if (st == ZS_MODEL_READY && s->o.keep_alive_s > 0) {
                double dl = keep_alive_deadline(s);
                if (zs_now() >= dl) break;
                cond_wait_until(&s->cv, &s->mu, dl);
                continue;
            }
            s->want_unload = s->want_evict = 0; /* nothing to unload */
            pthread_cond_wait(&s->cv, &s->mu);
        }
        s->kv_seen = s->kv_wake;
        int cancel_all = s->cancel_all;
        s->cancel_all = 0;
        if (cancel_all)
            for (zs_sreq_t *w = s->wait_head; w; w = w->s.next) {
                int exp = ZS_CANCEL_NONE;
                atomic_compare_exchange_strong(&w->cancel, &exp, ZS_CANCEL_SHUTDOWN);
            }
        int idle = s->wait_head == NULL && s->nrun == 0 && s->nfetch == 0;
        int quit = s->stopping && idle;
        int st = atomic_load(&s->state);
        const char *unload_why = NULL;
        int do_load = 0;
        if (s->has_life && !quit) {
            if (s->weights_pending && idle) {
                /* a load in progress with no request: admin unload, or eviction of an unused
                 * pre-warm for a live request, cancels it */
                if (s->want_unload) unload_why = "admin";
                else if (s->want_evict && s->prewarm_unused) unload_why = "evicted";
                else s->want_evict = 0;
                if (unload_why) s->want_unload = s->want_evict = 0;
            } else if (st == ZS_MODEL_READY && idle) {
                if (s->want_unload) unload_why = "admin";
                else if (s->want_evict) unload_why = "evicted";
                else if (s->o.keep_alive_s > 0 && zs_now() >= keep_alive_deadline(s))
                    unload_why = s->prewarm_unused ? "pre-warm unused" : "keep-alive";
                if (unload_why) s->want_unload = s->want_evict = 0;
            }
            if (!idle) s->want_evict = 0; /* busy: not a victim any more */
            if (st == ZS_MODEL_UNLOADED && (s->wait_head != NULL || s->want_load || s->want_prewarm)) {
                do_load = s->want_load ? 2 : s->wait_head != NULL ? 1 : 3;
                s->want_load = s->want_prewarm = 0;
            }
        }
        pthread_mutex_unlock(&s->mu);
        if (cancel_all)
            for (zs_sreq_t *w = s->fetch_head; w; w = w->s.next) {
                int exp = ZS_CANCEL_NONE;
                atomic_compare_exchange_strong(&w->cancel, &exp, ZS_CANCEL_SHUTDOWN);
            }
        collect_fetches(s);
        if (quit) {
            pre_end(s, ZS_CTX_PENDING, NULL);
            save_holders(s); /* a restarted server finds them in the store */
            zs_kvt_unbind(s->o.kvt);
            break;
        }
        if (unload_why) {
            sched_unload(s, unload_why);
            continue;
        }
        if (do_load) {
            drop_cancelled_waiting(s);
            pthread_mutex_lock(&s->mu);
            int go = s->wait_head != NULL || (do_load >= 2 && !s->stopping);
            pthread_mutex_unlock(&s->mu);
            if (go) sched_load(s, do_load == 3);
            continue;
        }
        if (s->e == NULL) { /* unloaded: only cancelled requests can be here */
            drop_cancelled_waiting(s);
            continue;
        }
        poll_weights(s, 0); /* overlapped start: every weight resident by now? */
        if (s->e == NULL) continue; /* the load failed */
        if (cancel_all)
            for (int i = 0; i < s->nrun; i++) {
                int exp = ZS_CANCEL_NONE;
                atomic_compare_exchange_strong(&s->run[i]->cancel, &exp, ZS_CANCEL_SHUTDOWN);
            }
        handle_cancels(s);
        admit(s);
        step(s);
        int did_pre = 0;
        if (s->nrun == 0 && s->nfetch == 0 && !s->weights_pending) {
            pthread_mutex_lock(&s->mu);
            int waiting = s->wait_head != NULL;
            pthread_mutex_unlock(&s->mu);
            if (!waiting && pre_pending(s)) {
                pre_step(s);
                did_pre = 1;
            }
        }
        zs_kvt_poll(s->o.kvt, s->e, 0);
        update_gauges(s);
        if (s->nrun == 0) {
            pthread_mutex_lock(&s->mu);
            if (s->wait_head == NULL) s->idle_since = zs_now();
            pthread_mutex_unlock(&s->mu);
        }
        if (s->o.step_delay_ms > 0 && (s->nrun > 0 || did_pre)) {
            struct timespec d = {s->o.step_delay_ms / 1000, (long)(s->o.step_delay_ms % 1000) * 1000000L};
            while (nanosleep(&d, &d) != 0 && errno == EINTR) {
            }
        }
    }
    update_gauges(s);
    return NULL;
}

/* --- public ------------------------------------------------------------------------------ */

int zs_sched_create(zs_engine_t *e, const zs_tok_t *tok, const zs_sched_opts_t *o,
                    const zs_sched_life_t *life, zs_metrics_t *m, const zs_slog_t *log,
                    zs_sched_t **out, zs_err_t *err) {
    *out = NULL;
    if (o->max_batch < 1 || o->step_tokens < o->max_batch || o->max_queue < 0 || o->ctx < 2 ||
        o->neos < 0 || o->neos > 32 || o->kvt == NULL ||
        (e == NULL && (life == NULL || life->load == NULL)))
        return zs_err_set(err, ZS_EINVAL,
                          "scheduler: bad options (max_batch %d, step_tokens %d, max_queue %d, "
                          "ctx %lld): step_tokens must be >= max_batch >= 1, kvt set",
                          o->max_batch, o->step_tokens, o->max_queue, (long long)o->ctx);
    zs_sched_t *s = calloc(1, sizeof *s);
    if (s == NULL) return zs_err_set(err, ZS_ENOMEM, "scheduler: out of memory");
    s->tok = tok;
    s->o = *o;
    s->pre.seq = -1;
    memcpy(s->eos, o->eos, (size_t)o->neos * sizeof *o->eos);
    s->o.eos = s->eos;
    s->m = m;
    s->log = *log;
    if (life != NULL && life->load != NULL && life->unload != NULL) {
        s->life = *life;
        s->has_life = 1;
    }
    atomic_init(&s->state, e ? ZS_MODEL_READY : ZS_MODEL_UNLOADED);
    atomic_init(&s->abort_load, 0);
    atomic_init(&s->active, 0);
    s->idle_since = zs_now();
    pthread_condattr_t ca;
    int ca_ok = pthread_condattr_init(&ca) == 0;
    int mu = ca_ok && pthread_mutex_init(&s->mu, NULL) == 0;
    int cv = mu && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
             pthread_cond_init(&s->cv, &ca) == 0;
    int scv = cv && pthread_cond_init(&s->state_cv, &ca) == 0;
    if (ca_ok) pthread_condattr_destroy(&ca);
    s->run = calloc((size_t)o->max_batch, sizeof *s->run);
    s->items = calloc((size_t)o->max_batch, sizeof *s->items);
    s->item_req = calloc((size_t)o->max_batch, sizeof *s->item_req);
    int bound = e == NULL || sched_bind(s, e) == 0;
    if (!mu || !cv || !scv || !s->run || !s->items || !s->item_req || !bound) {
        if (s->pc_ready) zs_pcache_destroy(&s->pc);
        if (scv) pthread_cond_destroy(&s->state_cv);
        if (cv) pthread_cond_destroy(&s->cv);
        if (mu) pthread_mutex_destroy(&s->mu);
        free(s->run);
        free(s->items);
        free(s->item_req);
        free(s->logits);
        free(s->bitmap);
        free(s);
        return zs_err_set(err, ZS_ENOMEM, "scheduler: out of memory");
    }
    s->g.model = o->name;
    s->g.kv_total = s->nblocks_total;
    int rc = pthread_create(&s->th, NULL, sched_main, s);
    if (rc != 0) {
        s->started = 0;
        zs_sched_free(s);
        return zs_err_set(err, zs_status_from_errno(rc), "scheduler: pthread_create: %s",
                          strerror(rc));
    }
    s->started = 1;
    *out = s;
    return 0;
}

int zs_sched_state(zs_sched_t *s) { return atomic_load(&s->state); }

void zs_sched_kick(zs_sched_t *s) {
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void zs_sched_request_load(zs_sched_t *s) {
    pthread_mutex_lock(&s->mu);
    if (atomic_load(&s->state) != ZS_MODEL_READY) s->want_load = 1;
    s->want_unload = 0;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void zs_sched_request_prewarm(zs_sched_t *s, double hold_until) {
    pthread_mutex_lock(&s->mu);
    if (atomic_load(&s->state) == ZS_MODEL_UNLOADED && s->wait_head == NULL && !s->want_load &&
        !s->stopping && s->has_life) {
        s->want_prewarm = 1;
        s->prewarm_hold = hold_until;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

int zs_sched_prewarm_unused(zs_sched_t *s) {
    pthread_mutex_lock(&s->mu);
    int u = s->prewarm_unused && atomic_load(&s->active) == 0;
    pthread_mutex_unlock(&s->mu);
    return u;
}

void zs_sched_request_unload(zs_sched_t *s, int persistent) {
    pthread_mutex_lock(&s->mu);
    if (persistent) {
        s->want_unload = 1;
        s->want_load = s->want_prewarm = 0;
    } else {
        s->want_evict = 1;
    }
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int zs_sched_idle(zs_sched_t *s) { return atomic_load(&s->active) == 0; }

double zs_sched_idle_s(zs_sched_t *s) {
    if (atomic_load(&s->active) != 0) return 0;
    pthread_mutex_lock(&s->mu);
    double d = zs_now() - s->idle_since;
    pthread_mutex_unlock(&s->mu);
    return d > 0 ? d : 0;
}

int zs_sched_wait_state(zs_sched_t *s, int state, double timeout_s, char *msg, size_t cap) {
    double deadline = zs_now() + timeout_s;
    if (state < 0 || state > ZS_MODEL_UNLOADING) return 0;
    pthread_mutex_lock(&s->mu);
    uint64_t fails = s->load_failures, seen = s->reached[state];
    int rc = 0;
    for (;;) { /* reached, even if it was left again before this thread woke up */
        if (atomic_load(&s->state) == state || s->reached[state] != seen) {
            rc = 1;
            break;
        }
        if (s->load_failures != fails) {
            if (msg && cap) snprintf(msg, cap, "%s", s->load_err);
            rc = -1;
            break;
        }
        if (zs_now() >= deadline) break;
        cond_wait_until(&s->state_cv, &s->mu, deadline);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int zs_sched_submit(zs_sched_t *s, zs_sreq_t *r) {
    pthread_mutex_lock(&s->mu);
    if (s->draining || s->stopping) {
        pthread_mutex_unlock(&s->mu);
        return ZS_ECANCELED;
    }
    if (s->nwait >= s->o.max_queue) {
        pthread_mutex_unlock(&s->mu);
        return ZS_EBUSY;
    }
    if (s->prewarm_unused) { /* the first request after a pre-warm */
        s->prewarm_unused = 0;
        if (atomic_load(&s->state) == ZS_MODEL_READY) zs_metrics_prewarm(s->m, ZS_PREWARM_HIT);
    }
    zs_sreq_ref(r);
    atomic_fetch_add(&s->active, 1);
    r->sched = s;
    r->s.next = NULL;
    if (s->wait_tail) s->wait_tail->s.next = r;
    else s->wait_head = r;
    s->wait_tail = r;
    s->nwait++;
    s->g.queue = s->nwait;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void zs_sched_drain(zs_sched_t *s) {
    pthread_mutex_lock(&s->mu);
    s->draining = 1;
    pthread_mutex_unlock(&s->mu);
}

void zs_sched_cancel_all(zs_sched_t *s) {
    pthread_mutex_lock(&s->mu);
    s->cancel_all = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int zs_sched_active(zs_sched_t *s) { return atomic_load(&s->active); }

void zs_sched_gauges(zs_sched_t *s, zs_model_gauges_t *g) {
    pthread_mutex_lock(&s->mu);
    *g = s->g;
    g->queue = s->nwait + s->nfetch;
    pthread_mutex_unlock(&s->mu);
    /* the store and the contexts change while the scheduler sleeps (disk writes, HTTP): read them now */
    zs_kvt_stats_t kst;
    zs_kvt_stats(s->o.kvt, &kst);
    kv_gauges(g, &kst);
    if (s->o.contexts) {
        uint64_t done = 0;
        zs_ctxreg_counts(s->o.contexts, s->o.name, &g->ctx_ready, &g->ctx_pending, &done);
        g->ctx_precomputed = (int64_t)done;
    }
}

void zs_sched_free(zs_sched_t *s) {
    if (s == NULL) return;
    if (s->started) {
        atomic_store(&s->abort_load, 1);
        pthread_mutex_lock(&s->mu);
        s->stopping = 1;
        s->draining = 1;
        s->cancel_all = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
    }
    /* the thread finished every request; holders die with the engine */
    if (s->pc_ready) zs_pcache_destroy(&s->pc);
    zs_kvp_free(s->pred);
    pthread_cond_destroy(&s->state_cv);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->run);
    free(s->items);
    free(s->item_req);
    free(s->logits);
    free(s->bitmap);
    free(s);
}
