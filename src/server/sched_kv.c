/* The scheduler's KV reuse beyond one request: at admission, the namespace of a request and a
 * restore of the blocks the KV store holds after the GPU cache's (requests reading from disk
 * wait aside); at the end of a request, its prompt and reply kept as a prefix-cache holder (the
 * next conversation turn reuses them); holders leaving the GPU exported to the store; in idle
 * time, registered contexts computed or restored and predicted prefixes brought back. All on
 * the scheduler thread (scheduler.c), except the fetch jobs' callback. */
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "server/sched_internal.h"

/* Gives a restore job back (its host copies unpinned), after the copies of the blocks it
 * imported (waits for them unless a forward step or a sync has). */
void kv_restore_end(zs_sched_t *s, zs_sreq_t *r) {
    if (r->s.rs.job == NULL) return;
    if (r->s.rs.imported > 0 && s->e) (void)zs_engine_sync(s->e, NULL);
    zs_kvt_restore_end(s->o.kvt, &r->s.rs);
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

/* Registers an owner in the prefix cache; when its owner slots are all taken, the least
 * recently used holder leaves (its blocks go to the store first; spare_kept: never a
 * registered context's) and the registration is tried again. The owner index, or -1. */
static int32_t register_owner(zs_sched_t *s, const zs_kv_ns_t *ns, int32_t seq, const int32_t *ids, int32_t nb,
                              int holder, int spare_kept) {
    int32_t idx = zs_pcache_register(&s->pc, ns, seq, ids, nb, holder);
    if (idx >= 0) return idx;
    int32_t h = spare_kept ? zs_pcache_lru_holder_unkept(&s->pc) : zs_pcache_lru_holder(&s->pc);
    if (h < 0) return -1;
    kv_evict_holder(s, h);
    return zs_pcache_register(&s->pc, ns, seq, ids, nb, holder);
}

/* Frees the request's sequence. Its full blocks stay cached in a holder: the prompt's, or,
 * when the request got further (a conversation turn: prompt and reply), every full block it
 * computed, so that the next turn prefills only its new message. */
void kv_release_seq(zs_sched_t *s, zs_sreq_t *r) {
    kv_restore_end(s, r);
    if (s->e == NULL) r->s.seq = -1; /* gone with the engine */
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
            if (register_owner(s, &r->s.ns, holder, toks, nb, 1, 0) < 0) (void)zs_engine_seq_free(s->e, holder, NULL);
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

/* Drops a holder from the GPU prefix cache; its blocks go to the KV store first (host memory
 * now, disk in the background), so that leaving the GPU does not lose them. */
void kv_evict_holder(zs_sched_t *s, int32_t idx) {
    const zs_pc_owner_t *o = &s->pc.owners[idx];
    if (o->seq >= 0 && o->holder) zs_kvt_export(s->o.kvt, s->e, o->seq, &o->ns, o->tokens, o->nblocks, 1);
    /* a registered context left the GPU: idle time brings it back (from the store) */
    if (o->kept && s->o.contexts) zs_ctxreg_requeue_model(s->o.contexts, s->o.name);
    int32_t seq = zs_pcache_drop(&s->pc, idx);
    zs_err_t err = {0};
    if (seq >= 0 && zs_engine_seq_free(s->e, seq, &err) != 0)
        zs_slog(&s->log, ZS_LOG_ERROR, NULL, "prefix cache: freeing holder %d: %s", seq, err.msg);
}

/* Every holder to the store (scale to zero, shutdown): waits until the copies have landed. */
void kv_save_holders(zs_sched_t *s) {
    if (!s->pc_ready || s->e == NULL || !zs_kvt_has_store(s->o.kvt)) return;
    zs_kvt_stats_t before, after;
    zs_kvt_stats(s->o.kvt, &before);
    int64_t holders = 0;
    for (int32_t i = 0; i < s->pc.max_owners; i++) {
        const zs_pc_owner_t *o = &s->pc.owners[i];
        if (o->seq >= 0 && o->holder) {
            zs_kvt_export(s->o.kvt, s->e, o->seq, &o->ns, o->tokens, o->nblocks, 1);
            holders++;
        }
    }
    zs_kvt_poll(s->o.kvt, s->e, 1);
    zs_kvt_stats(s->o.kvt, &after);
    uint64_t saved = after.exported_blocks - before.exported_blocks,
             dropped = after.export_dropped - before.export_dropped;
    if (dropped > 0)
        zs_slog(&s->log, ZS_LOG_WARN, NULL,
                "model %s: saving %lld cached prefixes to the KV store: %llu new blocks saved, %llu dropped (the host "
                "tier is full of blocks in use or waiting for the disk; raise --kv-host)",
                s->o.name, (long long)holders, (unsigned long long)saved, (unsigned long long)dropped);
    else if (holders > 0)
        zs_slog(&s->log, ZS_LOG_INFO, NULL, "model %s: %lld cached prefixes saved to the KV store (%llu new blocks)",
                s->o.name, (long long)holders, (unsigned long long)saved);
}

/* A fetch job read more blocks or finished (a store reader thread). */
static void kv_fetch_done(void *ctx, int finished) {
    (void)finished; /* progress or the end: the scheduler looks at its fetches either way */
    zs_sched_t *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->kv_wake++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Appends what a fetching request's job has read so far to its sequence (its copies to the
 * device run while the rest is read). An import that fails ends the restore: the blocks in
 * stay, the rest of the prompt is prefilled. */
static void kv_import_ready(zs_sched_t *s, zs_sreq_t *r) {
    if (r->s.rs.job == NULL) return;
    zs_err_t err = {0};
    int k = zs_kvt_restore_import(s->o.kvt, s->e, r->s.seq, r->s.gpu_blocks, &r->s.rs, &err);
    if (k >= 0) return;
    zs_slog(&s->log, ZS_LOG_WARN, r->id, "kv restore: import failed after %d blocks, prefilling the rest: %s",
            r->s.rs.imported, err.msg);
    kv_restore_end(s, r);
}

/* Takes *pp (a request waiting for its disk reads) off the fetch list. */
static zs_sreq_t *fetch_unlink(zs_sched_t *s, zs_sreq_t **pp) {
    zs_sreq_t *r = *pp;
    *pp = r->s.next;
    r->s.next = NULL;
    pthread_mutex_lock(&s->mu);
    s->nfetch--;
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* Requests whose disk reads are done go back to the head of the queue; cancelled ones end.
 * Those that have a sequence take in the blocks read so far. */
void kv_collect_fetches(zs_sched_t *s) {
    zs_sreq_t **pp = &s->fetch_head;
    while (*pp) {
        zs_sreq_t *r = *pp;
        int c = atomic_load(&r->cancel);
        if (c == ZS_CANCEL_NONE && r->s.seq >= 0) kv_import_ready(s, r);
        if (c == ZS_CANCEL_NONE && r->s.rs.job && !zs_kvstore_job_finished(r->s.rs.job)) {
            pp = &r->s.next;
            continue;
        }
        (void)fetch_unlink(s, pp);
        if (c != ZS_CANCEL_NONE) {
            sched_finish_unqueued(s, r, c == ZS_CANCEL_SHUTDOWN ? 503 : 499,
                            c == ZS_CANCEL_SHUTDOWN ? "the server is shutting down" : "request cancelled");
            continue;
        }
        r->s.kv_phase = KV_READY;
        sched_push_wait_front(s, r);
    }
}

/* Ends every request waiting for its disk reads (a failed start), its sequence freed. */
void kv_fail_fetches(zs_sched_t *s, int status, const char *msg) {
    while (s->fetch_head) sched_finish_unqueued(s, fetch_unlink(s, &s->fetch_head), status, msg);
}

/* First look at a request: its namespace, and a restore from the store when the store holds
 * more of its prompt than the GPU cache. Returns 1 when r left the queue to wait for disk. */
int kv_plan(zs_sched_t *s, zs_sreq_t *r, int32_t maxb) {
    zs_err_t err = {0};
    r->s.kv_phase = KV_READY;
    if (zs_kvt_namespace(s->o.kvt, r->cache_salt, &r->s.ns, &err) != 0) {
        zs_slog(&s->log, ZS_LOG_WARN, r->id, "kv namespace: %s", err.msg); /* the zero namespace still works */
        return 0;
    }
    int32_t owner = -1;
    int32_t mb = zs_pcache_match(&s->pc, &r->s.ns, r->prompt, r->nprompt, maxb, &owner);
    /* With room for the whole request now, a request that reads from disk gets its sequence at
     * once and takes blocks in as they are read (kv_collect_fetches); else they are all
     * imported at admission. */
    int room = sched_need_blocks(s, r) - mb <= sched_free_budget(s);
    int rc = zs_kvt_restore_begin(s->o.kvt, &r->s.ns, r->prompt, mb, maxb, room, kv_fetch_done, s, &r->s.rs, &err);
    if (rc < 0) zs_slog(&s->log, ZS_LOG_WARN, r->id, "kv restore: %s", err.msg);
    if (rc == 1) r->kvu.restore_began_s = r->s.rs.t0 - r->t_arrive;
    if (rc != 1 || zs_kvstore_job_finished(r->s.rs.job)) return 0;
    r->s.kv_phase = KV_FETCHING;
    zs_err_t serr = {0};
    if (room && sched_new_seq(s, r, mb, owner, &serr) != 0)
        zs_slog(&s->log, ZS_LOG_DEBUG, r->id, "kv restore: no sequence while reading (imported at admission): %s",
                serr.msg);
    (void)sched_pop_wait(s); /* r is the head */
    r->s.next = s->fetch_head;
    s->fetch_head = r;
    pthread_mutex_lock(&s->mu);
    s->nfetch++;
    pthread_mutex_unlock(&s->mu);
    return 1;
}

/* Appends the restored blocks to a new sequence whose first mb blocks came from the GPU
 * cache; returns the blocks imported. */
int32_t kv_import(zs_sched_t *s, zs_sreq_t *r, int32_t mb) {
    zs_err_t err = {0};
    int k = zs_kvt_restore_import(s->o.kvt, s->e, r->s.seq, mb, &r->s.rs, &err);
    if (k < 0) zs_slog(&s->log, ZS_LOG_WARN, r->id, "kv restore: import failed, prefilling instead: %s", err.msg);
    if (k <= 0) kv_restore_end(s, r);
    return k > 0 ? k : 0;
}

/* --- idle-time precompute of registered contexts -------------------------------------------- */

/* Ends the precompute job: state READY / FAILED, or PENDING to requeue it (it gave its memory
 * to live requests, or the model is going away). */
void kv_pre_end(zs_sched_t *s, int state, const char *why) {
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
static void kv_pre_publish(zs_sched_t *s) {
    pre_job_t *p = &s->pre;
    int32_t nb = (int32_t)(p->pos / s->bs);
    if (nb > 0) {
        if (!p->predicted) /* durable: written through to disk (a prediction came from the store) */
            zs_kvt_export(s->o.kvt, s->e, p->seq, &p->ns, p->ctx.ids, nb, 1);
        int32_t idx = register_owner(s, &p->ns, p->seq, p->ctx.ids, nb, 1, 1);
        if (idx >= 0) {
            p->seq = -1; /* the holder owns it now */
            if (!p->predicted) zs_pcache_keep(&s->pc, idx);
        }
    }
    kv_pre_end(s, ZS_CTX_READY, NULL);
}

/* The best prediction whose prefix is not all in the GPU cache (a predicted prefix still in
 * the GPU needs nothing; it is looked at again once it has left). */
static int kv_pick_prediction(zs_sched_t *s, zs_kvp_pred_t *out) {
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
void kv_pre_step(zs_sched_t *s) {
    pre_job_t *p = &s->pre;
    zs_err_t err = {0};
    if (!p->active) {
        zs_kvp_pred_t pr;
        if (s->o.contexts != NULL && zs_ctxreg_take(s->o.contexts, s->o.name, &p->ctx)) {
            p->predicted = 0;
        } else if (kv_pick_prediction(s, &pr)) {
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
                kv_pre_end(s, ZS_CTX_FAILED, "a token id is outside the model's vocabulary");
                return;
            }
        if (p->ctx.n >= s->o.ctx) {
            kv_pre_end(s, ZS_CTX_FAILED, "longer than the model's context");
            return;
        }
        if (!p->predicted && zs_kvt_namespace(s->o.kvt, p->ctx.salt, &p->ns, &err) != 0) {
            kv_pre_end(s, ZS_CTX_FAILED, err.msg);
            return;
        }
    }
    const int32_t nb = p->ctx.n / s->bs;
    int32_t owner = -1;
    if (p->phase == KV_NEW) {
        p->gpu_blocks = zs_pcache_match(&s->pc, &p->ns, p->ctx.ids, p->ctx.n, nb, &owner);
        if (p->gpu_blocks == nb && p->ctx.n % s->bs == 0 && nb > 0) { /* all there: make it durable too */
            if (!p->predicted) zs_kvt_export(s->o.kvt, s->e, s->pc.owners[owner].seq, &p->ns, p->ctx.ids, nb, 1);
            kv_pre_end(s, ZS_CTX_READY, NULL);
            return;
        }
        int rc = zs_kvt_restore_begin(s->o.kvt, &p->ns, p->ctx.ids, p->gpu_blocks, nb, 0, kv_fetch_done, s, &p->rs,
                                      &err);
        if (rc != 1 && p->predicted) { /* nothing to bring back: a prediction is never computed */
            kv_pre_end(s, ZS_CTX_PENDING, NULL);
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
            int64_t end = (int64_t)p->rs.from + (int64_t)ok;
            need = mb >= p->rs.from && end > mb ? end : mb;
        }
        while (need - mb > sched_free_budget(s)) { /* idle-time work never evicts a registered context */
            int32_t h = zs_pcache_lru_holder_unkept(&s->pc);
            if (h < 0) break;
            kv_evict_holder(s, h);
            mb = zs_pcache_match(&s->pc, &p->ns, p->ctx.ids, p->ctx.n, nb, &owner);
        }
        if (need - mb > sched_free_budget(s)) {
            kv_pre_end(s, ZS_CTX_FAILED, "does not fit in the KV cache next to the other registered contexts");
            return;
        }
        int rc = mb > 0 ? zs_engine_seq_fork_prefix(s->e, s->pc.owners[owner].seq, (int64_t)mb * s->bs, &p->seq, &err)
                        : zs_engine_seq_new(s->e, &p->seq, &err);
        if (rc != 0) {
            p->seq = -1;
            kv_pre_end(s, ZS_CTX_FAILED, err.msg);
            return;
        }
        int k = zs_kvt_restore_import(s->o.kvt, s->e, p->seq, mb, &p->rs, &err);
        int32_t imported = k > 0 ? k : 0;
        p->gpu_blocks = mb;
        p->restored = (int64_t)imported * s->bs;
        p->pos = (int64_t)(mb + imported) * s->bs;
        p->phase = KV_RUNNING;
        if (p->predicted) { /* published once the imports have been copied (the next step) */
            if (imported == 0) kv_pre_end(s, ZS_CTX_PENDING, NULL);
            return;
        }
        zs_ctxreg_progress(s->o.contexts, p->ctx.id, p->pos);
        if (p->pos >= p->ctx.n) kv_pre_publish(s);
        return;
    }
    if (p->predicted) { /* KV_RUNNING: wait for the copies, then hold the blocks in the cache */
        if (zs_engine_sync(s->e, &err) != 0) {
            kv_pre_end(s, ZS_CTX_FAILED, err.msg);
            return;
        }
        if (p->rs.job) zs_kvt_restore_end(s->o.kvt, &p->rs);
        kv_pre_publish(s);
        return;
    }
    /* KV_RUNNING: one forward step of the rest */
    int64_t take = p->ctx.n - p->pos;
    if (take > s->o.step_tokens) take = s->o.step_tokens;
    zs_engine_item_t it = {.seq = p->seq, .ids = p->ctx.ids + p->pos, .n = (int32_t)take};
    /* not timed for the cost model: without logits the step may return before the GPU ran it */
    if (zs_engine_forward(s->e, &it, 1, NULL, 0, &err) != 0) {
        kv_pre_end(s, ZS_CTX_FAILED, err.msg);
        return;
    }
    if (p->rs.job) zs_kvt_restore_end(s->o.kvt, &p->rs); /* the imports have been copied */
    p->pos += take;
    zs_ctxreg_progress(s->o.contexts, p->ctx.id, p->pos);
    if (p->pos >= p->ctx.n) kv_pre_publish(s);
}

/* Idle-time work is waiting for this model. */
int kv_pre_pending(zs_sched_t *s) {
    if (s->pre.active) /* reading from disk: the reader's callback wakes the scheduler */
        return !(s->pre.phase == KV_FETCHING && !zs_kvstore_job_finished(s->pre.rs.job));
    if (s->o.contexts != NULL && zs_ctxreg_has_pending(s->o.contexts, s->o.name)) return 1;
    zs_kvp_pred_t pr;
    return kv_pick_prediction(s, &pr);
}

void kv_register_prefix(zs_sched_t *s, zs_sreq_t *r) {
    int32_t nb = r->nprompt / s->bs;
    if (nb <= 0) return;
    r->s.owner = register_owner(s, &r->s.ns, r->s.seq, r->prompt, nb, 0, 0);
}

/* The KV store's numbers into g (s->mu held by the caller; st sampled before). */
void kv_gauges(zs_model_gauges_t *g, const zs_kvt_stats_t *st) {
    const zs_kvstore_stats_t *k = &st->store;
    g->kvs_host_bytes = (int64_t)k->host.bytes;
    g->kvs_host_capacity = (int64_t)k->host.capacity;
    g->kvs_host_blocks = (int64_t)k->host.blocks;
    g->kvs_disk_bytes = (int64_t)k->disk.bytes;
    g->kvs_disk_capacity = (int64_t)k->disk.capacity;
    g->kvs_disk_blocks = (int64_t)k->disk.blocks;
    g->kvs_write_queue = (int64_t)k->writes_pending;
    g->kvs_host_pinned = st->host_pinned;
    g->kvs_host_evictions = (int64_t)k->host.evictions;
    g->kvs_disk_evictions = (int64_t)k->disk.evictions;
    g->kvs_writes = (int64_t)k->writes_done;
    g->kvs_writes_dropped = (int64_t)k->writes_dropped;
    g->kvs_write_errors = (int64_t)k->write_errors;
    g->kvs_rejected = (int64_t)k->disk.rejected;
    g->kvs_exported_blocks = (int64_t)st->exported_blocks;
    g->kvs_export_dropped = (int64_t)st->export_dropped;
    g->kvs_skipped_by_cost = (int64_t)st->skipped_by_cost;
    g->kvs_restore_overlapped = (int64_t)st->restore_overlapped_blocks;
}

