/* Internals shared by the scheduler's files: the scheduler state (scheduler.c owns it), the
 * request helpers (sreq.c) and the KV reuse (sched_kv.c). Not a public interface. */
#ifndef ZS_SERVER_SCHED_INTERNAL_H
#define ZS_SERVER_SCHED_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "server/kv_predict.h"
#include "server/prefix_cache.h"
#include "server/scheduler.h"

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
    double pin_busy_at;       /* scheduler thread: busy since / last page-locking step while busy; 0 idle */
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


/* scheduler.c */
void sched_finish(zs_sched_t *s, zs_sreq_t *r, const char *reason, int err_status, const char *err_msg);
void sched_finish_unqueued(zs_sched_t *s, zs_sreq_t *r, int err_status, const char *msg);
int64_t sched_free_budget(zs_sched_t *s);
/* Worst-case KV blocks of the whole request. */
int64_t sched_need_blocks(const zs_sched_t *s, const zs_sreq_t *r);
/* A sequence for r: the first mb blocks forked from prefix-cache owner `owner`, or empty. */
int sched_new_seq(zs_sched_t *s, zs_sreq_t *r, int32_t mb, int32_t owner, zs_err_t *err);
zs_sreq_t *sched_pop_wait(zs_sched_t *s);
void sched_push_wait_front(zs_sched_t *s, zs_sreq_t *r);

/* sreq.c */
int sreq_buf_append(char **p, size_t *len, size_t *cap, const char *t, size_t n);

/* sched_kv.c */
void kv_restore_end(zs_sched_t *s, zs_sreq_t *r);
void kv_release_seq(zs_sched_t *s, zs_sreq_t *r);
void kv_evict_holder(zs_sched_t *s, int32_t idx);
void kv_save_holders(zs_sched_t *s);
void kv_collect_fetches(zs_sched_t *s);
void kv_fail_fetches(zs_sched_t *s, int status, const char *msg);
int kv_plan(zs_sched_t *s, zs_sreq_t *r, int32_t maxb);
int32_t kv_import(zs_sched_t *s, zs_sreq_t *r, int32_t mb);
void kv_register_prefix(zs_sched_t *s, zs_sreq_t *r);
void kv_pre_end(zs_sched_t *s, int state, const char *why);
void kv_pre_step(zs_sched_t *s);
int kv_pre_pending(zs_sched_t *s);
void kv_gauges(zs_model_gauges_t *g, const zs_kvt_stats_t *st);

#endif
