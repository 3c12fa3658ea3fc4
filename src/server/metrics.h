/* Server metrics: request counts by HTTP status, latency histograms (time to first token,
 * inter-token latency, end-to-end), token counters, prefix-cache hits; rendered in the
 * Prometheus text exposition format together with per-model gauges. Thread-safe. */
#ifndef ZS_SERVER_METRICS_H
#define ZS_SERVER_METRICS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define ZS_HIST_MAX 20

typedef struct zs_hist {
    int nb;
    double bounds[ZS_HIST_MAX];
    uint64_t counts[ZS_HIST_MAX + 1];   /* last: +Inf */
    double sum;
    uint64_t n;
} zs_hist_t;

typedef struct zs_metrics {
    pthread_mutex_t mu;
    uint64_t by_status[600];
    zs_hist_t ttft, itl, e2e;
    uint64_t prompt_tokens, completion_tokens;
    uint64_t prefix_hit_requests, prefix_hit_tokens, prefix_lookups;
    uint64_t cancelled;
    zs_hist_t startup[4];            /* by source: pool, pool-filled, page-cache, disk */
    uint64_t starts[4], start_failures;
    uint64_t kv_tokens[4];           /* prompt tokens by where their KV came from: gpu, host, disk, computed */
    zs_hist_t kv_restore;            /* seconds to restore a prefix from the store */
    uint64_t prewarms, prewarm_hits, prewarm_unused;
} zs_metrics_t;

/* Pre-warming events (zs_metrics_prewarm). */
enum {
    ZS_PREWARM_STARTED = 0,          /* a pre-warm start was placed and began */
    ZS_PREWARM_HIT = 1,              /* a request found a pre-warmed model ready */
    ZS_PREWARM_UNUSED = 2,           /* a pre-warmed model was unloaded (or its load aborted) unused */
};

#define ZS_METRICS_SOURCES 4
/* Source label of startup[i] / starts[i]. */
extern const char *const zs_metrics_source_names[ZS_METRICS_SOURCES];

/* Per-model gauges, sampled by the caller (the scheduler) for rendering. */
typedef struct zs_model_gauges {
    const char *model;
    int64_t queue, running, kv_used, kv_in_use, kv_cached, kv_total;
    int64_t loaded;              /* 1 when the model's engine is up (state ready) */
    /* the KV store (0 without one) */
    int64_t kvs_host_bytes, kvs_host_capacity, kvs_host_blocks;
    int64_t kvs_disk_bytes, kvs_disk_capacity, kvs_disk_blocks;
    int64_t kvs_write_queue;
    int64_t kvs_host_pinned;     /* 1 the host tier is page-locked (fast GPU copies), 0 not (yet), -1 failed */
    int64_t ctx_ready, ctx_pending;  /* registered contexts */
    /* per-model counters */
    int64_t kvs_host_evictions, kvs_disk_evictions, kvs_writes, kvs_writes_dropped, kvs_write_errors;
    int64_t kvs_rejected, kvs_exported_blocks, kvs_export_dropped, kvs_skipped_by_cost;
    int64_t kvs_restore_overlapped;
    int64_t ctx_precomputed;
    int64_t kv_prefetches, kv_prefetched_blocks; /* predicted prefixes brought back while idle */
} zs_model_gauges_t;

#define ZS_KV_SOURCES 4
extern const char *const zs_kv_source_names[ZS_KV_SOURCES]; /* gpu, host, disk, computed */

int zs_metrics_init(zs_metrics_t *m);
void zs_metrics_destroy(zs_metrics_t *m);
void zs_metrics_status(zs_metrics_t *m, int status);
void zs_metrics_ttft(zs_metrics_t *m, double s);
void zs_metrics_itl(zs_metrics_t *m, double s);
/* One finished request: end-to-end seconds and its token counts. */
void zs_metrics_request_done(zs_metrics_t *m, double e2e_s, int64_t prompt, int64_t completion,
                             int cancelled);
void zs_metrics_prefix(zs_metrics_t *m, int64_t hit_tokens);
/* Where one admitted request's prompt KV came from; restore_s < 0: nothing restored. */
void zs_metrics_kv_request(zs_metrics_t *m, int64_t gpu, int64_t host, int64_t disk, int64_t computed,
                           double restore_s);
/* One model start from `source` ("pool", "pool-filled", "page-cache", "disk") that took
 * `seconds` (start -> engine ready); ok = 0 counts a failed start. */
void zs_metrics_startup(zs_metrics_t *m, const char *source, double seconds, int ok);
/* Counts one pre-warming event (ZS_PREWARM_*). */
void zs_metrics_prewarm(zs_metrics_t *m, int event);
/* Renders everything; returns a malloc'd NUL-terminated string or NULL (out of memory). */
char *zs_metrics_render(zs_metrics_t *m, const zs_model_gauges_t *g, int ng, size_t *len);

#endif
