/* The continuous-batching scheduler thread: admission with KV reservation and prefix reuse
 * (sched_kv.c), mixed prefill/decode forward steps, per-request sampling, incremental
 * detokenizing, stop strings, publishing text to waiting HTTP threads, cancellation, the
 * model's lifecycle (load, overlapped start, scale to zero, pre-warm) and the public API. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "gpu/gpu_rt.h"
#include "server/sched_internal.h"
#include "server/textstop.h"

/* --- scheduler internals ---------------------------------------------------------------- */

static void publish(zs_sched_t *s, zs_sreq_t *r, const char *t, size_t n) {
    if (n == 0) return;
    pthread_mutex_lock(&r->mu);
    int rc = sreq_buf_append(&r->out, &r->out_len, &r->out_cap, t, n);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (rc) zs_slog(&s->log, ZS_LOG_ERROR, r->id, "out of memory publishing %zu bytes", n);
}

/* Ends a request: publishes the outcome, frees its KV. */
void sched_finish(zs_sched_t *s, zs_sreq_t *r, const char *reason, int err_status,
                   const char *err_msg) {
    if (reason && !r->s.stop_hit) {
        const char *t;
        size_t n;
        zs_err_t err = {0};
        if (r->ts && zs_tok_stream_flush(r->ts, &t, &n, &err) == 0 && n &&
            sreq_buf_append(&r->s.gen, &r->s.gen_len, &r->s.gen_cap, t, n) != 0)
            zs_slog(&s->log, ZS_LOG_ERROR, r->id, "out of memory for generated text");
        if (r->s.gen_len > r->s.emitted) publish(s, r, r->s.gen + r->s.emitted, r->s.gen_len - r->s.emitted);
        r->s.emitted = r->s.gen_len;
    }
    kv_release_seq(s, r); /* waits for imports in flight first (kv_restore_end) */
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

void sched_finish_unqueued(zs_sched_t *s, zs_sreq_t *r, int err_status, const char *msg) {
    sched_finish(s, r, NULL, err_status, msg);
    zs_sreq_release(r);
}

static int64_t still_needs(zs_sched_t *s, const zs_sreq_t *r) {
    int32_t have = zs_engine_seq_blocks(s->e, r->s.seq, NULL);
    return r->s.need_blocks > have ? r->s.need_blocks - have : 0;
}

/* Free KV blocks less what admitted requests (running, or reading their prefix from disk into
 * a sequence of their own) may still take. */
int64_t sched_free_budget(zs_sched_t *s) {
    int64_t avail = (int64_t)zs_kv_free_blocks(zs_engine_kv(s->e));
    for (int i = 0; i < s->nrun; i++) avail -= still_needs(s, s->run[i]);
    for (const zs_sreq_t *r = s->fetch_head; r; r = r->s.next)
        if (r->s.seq >= 0) avail -= still_needs(s, r);
    return avail;
}

zs_sreq_t *sched_pop_wait(zs_sched_t *s) {
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
void sched_push_wait_front(zs_sched_t *s, zs_sreq_t *r) {
    pthread_mutex_lock(&s->mu);
    r->s.next = s->wait_head;
    s->wait_head = r;
    if (s->wait_tail == NULL) s->wait_tail = r;
    s->nwait++;
    pthread_mutex_unlock(&s->mu);
}

/* One step of page-locking the KV host tier (kv_tier.h: zs_kvt_pin_step). */
static void pin_step(zs_sched_t *s) {
    zs_err_t err = {0};
    if (zs_kvt_pin_step(s->o.kvt, &err) != 0)
        zs_slog(&s->log, ZS_LOG_WARN, NULL, "model %s: KV host tier stays pageable (GPU copies are synchronous): %s",
                s->o.name, err.msg);
}

int64_t sched_need_blocks(const zs_sched_t *s, const zs_sreq_t *r) {
    return (r->nprompt + r->max_tokens + s->bs - 1) / s->bs;
}

int sched_new_seq(zs_sched_t *s, zs_sreq_t *r, int32_t mb, int32_t owner, zs_err_t *err) {
    int32_t seq = -1;
    int rc = mb > 0 ? zs_engine_seq_fork_prefix(s->e, s->pc.owners[owner].seq, (int64_t)mb * s->bs, &seq, err)
                    : zs_engine_seq_new(s->e, &seq, err);
    if (rc != 0) return rc;
    r->s.seq = seq;
    r->s.gpu_blocks = mb;
    r->s.need_blocks = sched_need_blocks(s, r);
    return 0;
}

static void admit(zs_sched_t *s) {
    while (s->nrun < s->o.max_batch) {
        pthread_mutex_lock(&s->mu);
        zs_sreq_t *r = s->wait_head;
        pthread_mutex_unlock(&s->mu);
        if (r == NULL) return;
        if (atomic_load(&r->cancel)) {
            sched_finish_unqueued(s, sched_pop_wait(s), 499, "request cancelled");
            continue;
        }
        int64_t need = sched_need_blocks(s, r);
        int32_t maxb = (r->nprompt - 1) / s->bs;
        if (r->s.kv_phase == KV_NEW && kv_plan(s, r, maxb)) continue;
        /* early: its sequence was made (and filled as blocks were read) while its disk reads ran */
        const int early = r->s.seq >= 0;
        int32_t owner = -1;
        int32_t mb = early ? r->s.gpu_blocks : zs_pcache_match(&s->pc, &r->s.ns, r->prompt, r->nprompt, maxb, &owner);
        int64_t held = early ? zs_engine_seq_blocks(s->e, r->s.seq, NULL) : mb;
        int64_t avail = sched_free_budget(s);
        if (need - held > avail && s->pre.active && s->pre.seq >= 0) { /* precompute yields its memory */
            kv_pre_end(s, ZS_CTX_PENDING, NULL);
            avail = sched_free_budget(s);
        }
        while (need - held > avail) {
            int32_t h = zs_pcache_lru_holder(&s->pc);
            if (h < 0) break;
            kv_evict_holder(s, h);
            if (!early) held = mb = zs_pcache_match(&s->pc, &r->s.ns, r->prompt, r->nprompt, maxb, &owner);
            avail = sched_free_budget(s);
        }
        if (need - held > avail && s->nrun == 0 && zs_kvt_pending(s->o.kvt) > 0) {
            /* the evicted holders' blocks stay taken until their copies to the store land */
            zs_kvt_poll(s->o.kvt, s->e, 1);
            avail = sched_free_budget(s);
        }
        if (need - held > avail) {
            if (s->nrun == 0) {
                char msg[200];
                snprintf(msg, sizeof msg,
                         "the request needs %lld KV blocks but the cache holds %u",
                         (long long)need, s->nblocks_total);
                kv_restore_end(s, r);
                sched_finish_unqueued(s, sched_pop_wait(s), 503, msg);
                continue;
            }
            return; /* wait for running requests to finish */
        }
        r = sched_pop_wait(s);
        if (!early) {
            zs_err_t err = {0};
            if (sched_new_seq(s, r, mb, owner, &err) != 0) {
                zs_slog(&s->log, ZS_LOG_ERROR, r->id, "admission: %s", err.msg);
                kv_restore_end(s, r);
                sched_finish_unqueued(s, r, 500, err.msg);
                continue;
            }
        }
        int32_t seq = r->s.seq;
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
        u->admitted_s = zs_now() - r->t_arrive;
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

/* Samples and handles the next token of r from its logits row. */
static void next_token(zs_sched_t *s, zs_sreq_t *r, float *row) {
    zs_err_t err = {0};
    int32_t tok = -1;
    if (zs_sampler_sample(&r->smp, row, &tok, &err) != 0) {
        sched_finish(s, r, NULL, 500, err.msg);
        return;
    }
    int reason = zs_sampler_accept(&r->smp, tok, &err);
    if (reason < 0) {
        sched_finish(s, r, NULL, 500, err.msg);
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
        sched_finish(s, r, "stop", 0, NULL);
        return;
    }
    const char *t = NULL;
    size_t n = 0;
    zs_err_t terr = {0};
    if (zs_tok_stream_step(r->ts, tok, &t, &n, &terr) != 0) n = 0; /* id without a token */
    if (n && sreq_buf_append(&r->s.gen, &r->s.gen_len, &r->s.gen_cap, t, n) != 0) {
        sched_finish(s, r, NULL, 500, "out of memory for generated text");
        return;
    }
    const zs_oai_req_t *q = &r->oai;
    long hit = zs_stop_find(r->s.gen, r->s.gen_len, r->s.emitted, q->stop, q->stop_len, q->nstop);
    if (hit >= 0) {
        publish(s, r, r->s.gen + r->s.emitted, (size_t)hit - r->s.emitted);
        r->s.emitted = (size_t)hit;
        r->s.stop_hit = 1;
        sched_finish(s, r, "stop", 0, NULL);
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
        sched_finish(s, r, reason == ZS_SAMPLE_STOP_HOOK ? "stop" : "length", 0, NULL);
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
            sched_finish(s, r, NULL, c == ZS_CANCEL_SHUTDOWN ? 503 : 499,
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
    double attn_positions = 0; /* positions the prefilled tokens attend to */
    for (int i = 0; i < n; i++)
        if (s->item_req[i]->s.prefilling) {
            double k = s->items[i].n, p0 = (double)s->item_req[i]->s.pos;
            prefill_tokens += s->items[i].n;
            attn_positions += k * p0 + k * (k - 1) / 2;
        }
    zs_err_t err = {0};
    double t0 = zs_now();
    int rc = zs_engine_forward(s->e, s->items, n, s->logits, 0, &err);
    if (rc == 0) {
        zs_kvt_note_prefill(s->o.kvt, prefill_tokens, attn_positions, zs_now() - t0);
        for (int i = 0; i < s->nrun; i++) kv_restore_end(s, s->run[i]); /* imports have been copied */
    }
    if (rc != 0 && s->weights_pending) {
        poll_weights(s, 1); /* a failed overlapped load fails every request with its own error */
        if (s->e == NULL) return;
    }
    if (rc != 0) {
        zs_slog(&s->log, ZS_LOG_ERROR, NULL, "model %s: forward step of %d items failed: %s",
                s->o.name, n, err.msg);
        for (int i = 0; i < n; i++) sched_finish(s, s->item_req[i], NULL, 500, err.msg);
        compact_run(s);
        return;
    }
    for (int i = 0; i < n; i++) {
        zs_sreq_t *r = s->item_req[i];
        if (r->s.prefilling) {
            r->s.pos += s->items[i].n;
            if (r->s.pos < r->nprompt) continue;
            r->s.prefilling = 0;
            kv_register_prefix(s, r);
        }
        next_token(s, r, s->logits + (size_t)i * (size_t)s->V);
    }
    compact_run(s);
}

/* The gauges only the scheduler thread can sample (the KV store's and the contexts' are read
 * when the metrics are rendered: zs_sched_gauges). */
static void update_gauges(zs_sched_t *s) {
    if (s->e == NULL) {
        pthread_mutex_lock(&s->mu);
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
        sched_finish_unqueued(s, r, c == ZS_CANCEL_SHUTDOWN ? 503 : 499,
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
    kv_pre_end(s, ZS_CTX_PENDING, NULL);
    kv_save_holders(s); /* the cached prefixes survive scale to zero in the store */
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
            if (!s->run[i]->s.finished) sched_finish(s, s->run[i], NULL, 503, msg);
        compact_run(s);
        kv_fail_fetches(s, 503, msg);
        zs_sreq_t *w; /* while the engine exists: a request whose reads finished holds a sequence */
        while ((w = sched_pop_wait(s)) != NULL) sched_finish_unqueued(s, w, 503, msg);
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
    while ((r = sched_pop_wait(s)) != NULL) sched_finish_unqueued(s, r, 503, msg);
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
            if (s->e != NULL && st == ZS_MODEL_READY && !s->want_unload && !s->want_evict &&
                (kv_pre_pending(s) || (!s->weights_pending && zs_kvt_pin_pending(s->o.kvt))))
                break; /* idle: compute registered contexts, page-lock the KV host tier */
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
        kv_collect_fetches(s);
        if (quit) {
            kv_pre_end(s, ZS_CTX_PENDING, NULL);
            kv_save_holders(s); /* a restarted server finds them in the store */
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
        int did_pre = 0, did_pin = 0;
        if (s->nrun == 0 && s->nfetch == 0 && !s->weights_pending) {
            pthread_mutex_lock(&s->mu);
            int waiting = s->wait_head != NULL;
            pthread_mutex_unlock(&s->mu);
            if (!waiting && kv_pre_pending(s)) {
                kv_pre_step(s);
                did_pre = 1;
            } else if (!waiting && zs_kvt_pin_pending(s->o.kvt)) {
                pin_step(s);
                did_pin = 1;
            }
            s->pin_busy_at = 0;
        } else if (s->nrun > 0 && !s->weights_pending && zs_kvt_pin_pending(s->o.kvt)) {
            /* busy without a break for a second: one step a second between engine steps */
            double now = zs_now();
            if (s->pin_busy_at == 0) {
                s->pin_busy_at = now;
            } else if (now - s->pin_busy_at >= 1.0) {
                pin_step(s);
                s->pin_busy_at = now;
            }
        }
        zs_kvt_poll(s->o.kvt, s->e, 0);
        update_gauges(s);
        if (s->nrun == 0 && !did_pin) { /* page-locking is not activity (keep-alive) */
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
    g->kv_prefetches = (int64_t)s->prefetches;
    g->kv_prefetched_blocks = (int64_t)s->prefetched_blocks;
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

