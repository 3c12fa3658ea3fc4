/* Continuous batching. One scheduler thread per model owns the engine: each step it admits
 * waiting requests (prefix-cache lookup, KV reservation), builds one zs_engine_forward call
 * with a decode token for every running sequence plus prefill chunks of admitted prompts
 * (bounded by a token budget), samples per request, detokenizes incrementally, applies stop
 * strings (holding back text that may start one) and publishes text to the request, whose
 * HTTP thread waits on it. Requests are reference counted: the HTTP side and the scheduler
 * each hold one reference.
 *
 * The scheduler thread also owns the model's lifecycle (scale from zero): it unloads the
 * engine when the model has been idle longer than its keep-alive (or when asked: admin
 * endpoint, another model needing the memory), and loads it again when a request arrives
 * (requests queue meanwhile) or when pre-warming asks. Loading and unloading go through
 * callbacks (serve_model.c), always on this thread, so the engine is never touched by two
 * threads. An overlapped start hands over the engine while the weights still stream in: the
 * model stays `loading`, requests are admitted and prefilled at once (each layer is waited for
 * at first use), and the scheduler polls the load between steps until every weight is
 * resident (`ready`); a load that fails fails its requests and unloads. */
#ifndef ZS_SERVER_SCHEDULER_H
#define ZS_SERVER_SCHEDULER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "server/contexts.h"
#include "server/kv_tier.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "zerostart/engine.h"
#include "zerostart/sampling.h"
#include "zerostart/tokenizer.h"

typedef struct zs_sched zs_sched_t;
typedef struct zs_sreq zs_sreq_t;

enum { ZS_CANCEL_NONE = 0, ZS_CANCEL_CLIENT = 1, ZS_CANCEL_SHUTDOWN = 2 };

/* Where a request's prompt KV came from. */
typedef struct zs_kv_usage {
    int64_t gpu_tokens;          /* found in the GPU prefix cache */
    int64_t host_tokens, disk_tokens; /* restored from the store's tiers */
    int64_t computed_tokens;     /* prefilled */
    double restore_s;            /* lookup + disk reads + import of the restored blocks */
    uint64_t restore_bytes;
    double restore_began_s;      /* arrival -> the store began bringing blocks back (0: none) */
    double admitted_s;           /* arrival -> admitted to the batch (its KV restored) */
} zs_kv_usage_t;

struct zs_sreq {
    atomic_int refs;
    char id[48];                 /* response id; also the request id in log lines */
    zs_oai_req_t oai;            /* the parsed request (stop strings, stream flags, ...) */
    /* input, fixed before submit */
    int32_t *prompt;
    int32_t nprompt;
    int64_t max_tokens;
    zs_sampler_t smp;
    int smp_ready;
    zs_tok_stream_t *ts;
    double t_arrive;
    char *cache_salt;            /* tenant of the KV cache (malloc'd; NULL = shared) */
    atomic_int cancel;           /* ZS_CANCEL_* */
    zs_sched_t *sched;
    int64_t startup;             /* start-up this request triggered (first token recorded), -1 */

    /* output, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *out;                   /* text published and not yet taken */
    size_t out_len, out_cap;
    int done;
    const char *finish;          /* "stop" / "length"; NULL with err_status */
    int err_status;
    char err_msg[320];
    int64_t ncompletion, cached_tokens;
    zs_kv_usage_t kvu;

    /* scheduler thread only */
    struct {
        zs_sreq_t *next;
        int32_t seq;
        int64_t pos;             /* prompt tokens in the KV cache */
        int prefilling, finished;
        int32_t last_tok;
        int64_t need_blocks;     /* worst-case KV blocks of the whole request */
        int32_t owner;           /* prefix-cache owner index, -1 */
        zs_kv_ns_t ns;           /* KV namespace (model identity + cache_salt) */
        int kv_phase;            /* KV_* in scheduler.c */
        int32_t gpu_blocks;      /* seq made while its disk reads run: the blocks it forked */
        zs_kvt_restore_t rs;     /* restore from the store in progress */
        int32_t *out_ids;        /* generated tokens (kept for the session's KV) */
        int64_t nout, out_cap;
        char *gen;
        size_t gen_len, gen_cap, emitted;
        int stop_hit;
        double t_last;
    } s;
};

/* A new request with one reference, or NULL (out of memory). */
zs_sreq_t *zs_sreq_new(void);
void zs_sreq_ref(zs_sreq_t *r);
void zs_sreq_release(zs_sreq_t *r);
/* Asks the scheduler to stop the request and free its sequence (no-op once done). */
void zs_sreq_cancel(zs_sreq_t *r, int why);

typedef struct zs_sreq_out {
    char *text;                  /* malloc'd or NULL */
    size_t len;
    int done;
    const char *finish;
    int err_status;
    char err_msg[320];
    int64_t ncompletion, cached_tokens;
    zs_kv_usage_t kvu;
} zs_sreq_out_t;

/* Waits up to timeout_ms for text or completion, then takes what is there. Returns 1 when
 * something was taken (text, or done), 0 on timeout, -1 out of memory. */
int zs_sreq_take(zs_sreq_t *r, int timeout_ms, zs_sreq_out_t *o);
/* The response's usage from a finished request's outcome. */
void zs_sreq_usage(const zs_sreq_t *r, const zs_sreq_out_t *o, zs_oai_usage_t *u);

typedef struct zs_sched_opts {
    const char *name;            /* model name, for logs */
    int max_queue, max_batch, step_tokens, step_delay_ms;
    int64_t ctx;
    const int32_t *eos;
    int neos;
    double keep_alive_s;         /* idle seconds before unloading; <= 0 = never */
    int cuda_device;             /* made current on the thread at start; -1 = none */
    zs_kvt_t *kvt;               /* the model's KV warm start (store may be off); not owned */
    zs_ctxreg_t *contexts;       /* registered contexts, computed while idle (may be NULL) */
} zs_sched_opts_t;

/* Model lifecycle states. */
enum { ZS_MODEL_UNLOADED = 0, ZS_MODEL_LOADING = 1, ZS_MODEL_READY = 2, ZS_MODEL_UNLOADING = 3 };
const char *zs_model_state_name(int state);

/* Lifecycle callbacks, called on the scheduler thread only. */
typedef struct zs_sched_life {
    void *ctx;
    /* Brings the model up and returns its engine. why: "request" (trigger: the queued request
     * that caused the start), "admin" or "prewarm" (trigger NULL); abort becomes nonzero when
     * the server stops (a load waiting for memory gives up). *startup: id of the start-up
     * record. A "prewarm" start that finds no idle room answers ZS_EBUSY (nothing happened). */
    int (*load)(void *ctx, const zs_sreq_t *trigger, const char *why, const atomic_int *abort,
                zs_engine_t **e, int64_t *startup, zs_err_t *err);
    /* Overlapped start (optional): after a successful load, the weights may still be arriving.
     * Returns 1 while they are (only when block is 0), 0 once every weight is resident (the
     * start is complete and recorded), < 0 when the load failed (err set): the engine must not
     * run again; the scheduler fails its requests and calls unload. NULL: load returns a
     * complete start. */
    int (*load_poll)(void *ctx, int block, zs_err_t *err);
    /* Frees the engine and device weights (the pool segment stays); cancels a load still in
     * progress. */
    void (*unload)(void *ctx, const char *why);
    /* The request r that triggered start-up `startup` got its first token at zs_now() == t
     * (r->kvu says how its prompt KV was obtained). */
    void (*first_token)(void *ctx, int64_t startup, double t, const zs_sreq_t *r);
} zs_sched_life_t;

/* e: the engine when the model is already loaded (state READY), NULL to start unloaded.
 * life may be NULL (no scale to zero: e must be given). */
int zs_sched_create(zs_engine_t *e, const zs_tok_t *tok, const zs_sched_opts_t *o,
                    const zs_sched_life_t *life, zs_metrics_t *m, const zs_slog_t *log,
                    zs_sched_t **out, zs_err_t *err);
/* Current lifecycle state (ZS_MODEL_*). */
int zs_sched_state(zs_sched_t *s);
/* Wakes the scheduler: idle-time work arrived (a context was registered). */
void zs_sched_kick(zs_sched_t *s);
/* Asks the scheduler to load the model now (admin "load"). */
void zs_sched_request_load(zs_sched_t *s);
/* Pre-warming: asks the scheduler to load the unloaded, idle model ahead of a predicted
 * request (start-up trigger "prewarm"); until a request arrives, keep-alive does not unload it
 * before hold_until (zs_now() clock), and placement may evict it (or abort its load) for any
 * live request. Ignored unless the model is unloaded with nothing queued. */
void zs_sched_request_prewarm(zs_sched_t *s, double hold_until);
/* 1 when the model's engine came from a pre-warm that no request has used yet. */
int zs_sched_prewarm_unused(zs_sched_t *s);
/* Asks the scheduler to unload: persistent = 1 (admin): as soon as it is idle; 0 (another
 * model needs the memory): only if it is idle when the scheduler looks, else forgotten. */
void zs_sched_request_unload(zs_sched_t *s, int persistent);
/* 1 when nothing is queued or running. */
int zs_sched_idle(zs_sched_t *s);
/* Seconds since the model last had work (0 while it has). */
double zs_sched_idle_s(zs_sched_t *s);
/* Waits until the state is (or has been, since the call) `state`, or a load failed or was
 * cancelled after the call (returns -1 with the reason in msg), up to timeout_s (returns 0 on
 * timeout, 1 when reached). */
int zs_sched_wait_state(zs_sched_t *s, int state, double timeout_s, char *msg, size_t cap);
/* Queues r (taking a reference). ZS_EBUSY: queue full; ZS_ECANCELED: draining. */
int zs_sched_submit(zs_sched_t *s, zs_sreq_t *r);
/* Refuse new submissions from now on. */
void zs_sched_drain(zs_sched_t *s);
/* Cancel every queued and running request (shutdown deadline). */
void zs_sched_cancel_all(zs_sched_t *s);
/* Requests queued or running. */
int zs_sched_active(zs_sched_t *s);
void zs_sched_gauges(zs_sched_t *s, zs_model_gauges_t *g);
/* Cancels what is left, stops and joins the thread, frees. */
void zs_sched_free(zs_sched_t *s);

#endif
