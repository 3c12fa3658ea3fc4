/* Continuous batching. One scheduler thread per model owns the engine: each step it admits
 * waiting requests (prefix-cache lookup, KV reservation), builds one zs_engine_forward call
 * with a decode token for every running sequence plus prefill chunks of admitted prompts
 * (bounded by a token budget), samples per request, detokenizes incrementally, applies stop
 * strings (holding back text that may start one) and publishes text to the request, whose
 * HTTP thread waits on it. Requests are reference counted: the HTTP side and the scheduler
 * each hold one reference. */
#ifndef ZS_SERVER_SCHEDULER_H
#define ZS_SERVER_SCHEDULER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "server/log.h"
#include "server/metrics.h"
#include "server/openai_request.h"
#include "zerostart/engine.h"
#include "zerostart/sampling.h"
#include "zerostart/tokenizer.h"

typedef struct zs_sched zs_sched_t;
typedef struct zs_sreq zs_sreq_t;

enum { ZS_CANCEL_NONE = 0, ZS_CANCEL_CLIENT = 1, ZS_CANCEL_SHUTDOWN = 2 };

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
    atomic_int cancel;           /* ZS_CANCEL_* */
    zs_sched_t *sched;

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

    /* scheduler thread only */
    struct {
        zs_sreq_t *next;
        int32_t seq;
        int64_t pos;             /* prompt tokens in the KV cache */
        int prefilling, finished;
        int32_t last_tok;
        int64_t need_blocks;     /* worst-case KV blocks of the whole request */
        int32_t owner;           /* prefix-cache owner index, -1 */
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
} zs_sreq_out_t;

/* Waits up to timeout_ms for text or completion, then takes what is there. Returns 1 when
 * something was taken (text, or done), 0 on timeout, -1 out of memory. */
int zs_sreq_take(zs_sreq_t *r, int timeout_ms, zs_sreq_out_t *o);

typedef struct zs_sched_opts {
    const char *name;            /* model name, for logs */
    int max_queue, max_batch, step_tokens, step_delay_ms;
    int64_t ctx;
    const int32_t *eos;
    int neos;
} zs_sched_opts_t;

int zs_sched_create(zs_engine_t *e, const zs_tok_t *tok, const zs_sched_opts_t *o,
                    zs_metrics_t *m, const zs_slog_t *log, zs_sched_t **out, zs_err_t *err);
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
