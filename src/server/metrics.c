/* Prometheus metrics: counters and histograms under one mutex, text exposition rendering. */
#include "server/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const zs_metrics_source_names[ZS_METRICS_SOURCES] = {"pool", "pool-filled", "page-cache", "disk"};
const char *const zs_kv_source_names[ZS_KV_SOURCES] = {"gpu", "host", "disk", "computed"};

static void hist_init(zs_hist_t *h, const double *b, int nb) {
    memset(h, 0, sizeof *h);
    h->nb = nb;
    memcpy(h->bounds, b, (size_t)nb * sizeof *b);
}

static void hist_add(zs_hist_t *h, double v) {
    int i = 0;
    while (i < h->nb && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->n++;
}

int zs_metrics_init(zs_metrics_t *m) {
    memset(m, 0, sizeof *m);
    if (pthread_mutex_init(&m->mu, NULL) != 0) return -1;
    static const double lat[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                 0.5,   1,      2.5,   5,    10,    30,   60};
    static const double itl[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04,
                                 0.06,   0.08,  0.1,    0.25,  0.5,  1,    2.5};
    static const double e2e[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
    hist_init(&m->ttft, lat, (int)(sizeof lat / sizeof lat[0]));
    hist_init(&m->itl, itl, (int)(sizeof itl / sizeof itl[0]));
    hist_init(&m->e2e, e2e, (int)(sizeof e2e / sizeof e2e[0]));
    static const double st[] = {0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300};
    for (int i = 0; i < ZS_METRICS_SOURCES; i++) hist_init(&m->startup[i], st, (int)(sizeof st / sizeof st[0]));
    static const double kr[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
    hist_init(&m->kv_restore, kr, (int)(sizeof kr / sizeof kr[0]));
    return 0;
}

void zs_metrics_destroy(zs_metrics_t *m) { pthread_mutex_destroy(&m->mu); }

void zs_metrics_status(zs_metrics_t *m, int status) {
    if (status < 100 || status >= 600) return;
    pthread_mutex_lock(&m->mu);
    m->by_status[status]++;
    pthread_mutex_unlock(&m->mu);
}

void zs_metrics_ttft(zs_metrics_t *m, double s) {
    pthread_mutex_lock(&m->mu);
    hist_add(&m->ttft, s);
    pthread_mutex_unlock(&m->mu);
}

void zs_metrics_itl(zs_metrics_t *m, double s) {
    pthread_mutex_lock(&m->mu);
    hist_add(&m->itl, s);
    pthread_mutex_unlock(&m->mu);
}

void zs_metrics_request_done(zs_metrics_t *m, double e2e_s, int64_t prompt, int64_t completion,
                             int cancelled) {
    pthread_mutex_lock(&m->mu);
    hist_add(&m->e2e, e2e_s);
    m->prompt_tokens += (uint64_t)(prompt > 0 ? prompt : 0);
    m->completion_tokens += (uint64_t)(completion > 0 ? completion : 0);
    if (cancelled) m->cancelled++;
    pthread_mutex_unlock(&m->mu);
}

void zs_metrics_prefix(zs_metrics_t *m, int64_t hit_tokens) {
    pthread_mutex_lock(&m->mu);
    m->prefix_lookups++;
    if (hit_tokens > 0) {
        m->prefix_hit_requests++;
        m->prefix_hit_tokens += (uint64_t)hit_tokens;
    }
    pthread_mutex_unlock(&m->mu);
}

void zs_metrics_kv_request(zs_metrics_t *m, int64_t gpu, int64_t host, int64_t disk, int64_t computed,
                           double restore_s) {
    int64_t v[ZS_KV_SOURCES] = {gpu, host, disk, computed};
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < ZS_KV_SOURCES; i++) m->kv_tokens[i] += (uint64_t)(v[i] > 0 ? v[i] : 0);
    if (restore_s >= 0) hist_add(&m->kv_restore, restore_s);
    pthread_mutex_unlock(&m->mu);
}

void zs_metrics_startup(zs_metrics_t *m, const char *source, double seconds, int ok) {
    int k = -1;
    for (int i = 0; i < ZS_METRICS_SOURCES && source; i++)
        if (strcmp(source, zs_metrics_source_names[i]) == 0) k = i;
    pthread_mutex_lock(&m->mu);
    if (!ok || k < 0) {
        m->start_failures++;
    } else {
        hist_add(&m->startup[k], seconds);
        m->starts[k]++;
    }
    pthread_mutex_unlock(&m->mu);
}

void zs_metrics_prewarm(zs_metrics_t *m, int event) {
    pthread_mutex_lock(&m->mu);
    if (event == ZS_PREWARM_STARTED) m->prewarms++;
    else if (event == ZS_PREWARM_HIT) m->prewarm_hits++;
    else if (event == ZS_PREWARM_UNUSED) m->prewarm_unused++;
    pthread_mutex_unlock(&m->mu);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf_t;

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf_t *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + (size_t)n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (np == NULL) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

static void render_hist(sbuf_t *b, const char *name, const char *help, const zs_hist_t *h) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->nb; i++) {
        cum += h->counts[i];
        sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)cum);
    }
    cum += h->counts[h->nb];
    sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    sb_printf(b, "%s_sum %.9g\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->n);
}

static void render_counter(sbuf_t *b, const char *name, const char *help, uint64_t v) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
              (unsigned long long)v);
}

char *zs_metrics_render(zs_metrics_t *m, const zs_model_gauges_t *g, int ng, size_t *len) {
    sbuf_t b = {0};
    pthread_mutex_lock(&m->mu);
    zs_metrics_t c = *m; /* snapshot; the copied mutex is never used */
    pthread_mutex_unlock(&m->mu);

    sb_printf(&b, "# HELP zerostart_requests_total HTTP requests answered, by status code.\n"
                  "# TYPE zerostart_requests_total counter\n");
    int any = 0;
    for (int s = 100; s < 600; s++)
        if (c.by_status[s]) {
            sb_printf(&b, "zerostart_requests_total{code=\"%d\"} %llu\n", s,
                      (unsigned long long)c.by_status[s]);
            any = 1;
        }
    if (!any) sb_printf(&b, "zerostart_requests_total{code=\"200\"} 0\n");
    render_hist(&b, "zerostart_time_to_first_token_seconds",
                "Time from request arrival to its first generated token.", &c.ttft);
    render_hist(&b, "zerostart_inter_token_latency_seconds",
                "Time between consecutive generated tokens of a request.", &c.itl);
    render_hist(&b, "zerostart_request_duration_seconds",
                "Time from request arrival to its last token (generation requests).", &c.e2e);
    render_counter(&b, "zerostart_prompt_tokens_total", "Prompt tokens of finished requests.",
                   c.prompt_tokens);
    render_counter(&b, "zerostart_completion_tokens_total", "Generated tokens.",
                   c.completion_tokens);
    render_counter(&b, "zerostart_prefix_cache_queries_total",
                   "Admitted requests looked up in the prefix cache.", c.prefix_lookups);
    render_counter(&b, "zerostart_prefix_cache_hits_total",
                   "Admitted requests that reused cached KV blocks.", c.prefix_hit_requests);
    render_counter(&b, "zerostart_prefix_cache_hit_tokens_total",
                   "Prompt tokens not prefilled thanks to the prefix cache.", c.prefix_hit_tokens);
    render_counter(&b, "zerostart_requests_cancelled_total",
                   "Requests stopped early (client gone, shutdown deadline).", c.cancelled);

    sb_printf(&b, "# HELP zerostart_model_startup_seconds Model start (initial or scale from zero): "
                  "start -> engine ready, by weights source.\n# TYPE zerostart_model_startup_seconds histogram\n");
    for (int k = 0; k < ZS_METRICS_SOURCES; k++) {
        const zs_hist_t *h = &c.startup[k];
        const char *src = zs_metrics_source_names[k];
        uint64_t cum = 0;
        for (int i = 0; i < h->nb; i++) {
            cum += h->counts[i];
            sb_printf(&b, "zerostart_model_startup_seconds_bucket{source=\"%s\",le=\"%g\"} %llu\n", src,
                      h->bounds[i], (unsigned long long)cum);
        }
        cum += h->counts[h->nb];
        sb_printf(&b, "zerostart_model_startup_seconds_bucket{source=\"%s\",le=\"+Inf\"} %llu\n", src,
                  (unsigned long long)cum);
        sb_printf(&b, "zerostart_model_startup_seconds_sum{source=\"%s\"} %.9g\n", src, h->sum);
        sb_printf(&b, "zerostart_model_startup_seconds_count{source=\"%s\"} %llu\n", src, (unsigned long long)h->n);
    }
    sb_printf(&b, "# HELP zerostart_model_starts_total Model starts by weights source.\n"
                  "# TYPE zerostart_model_starts_total counter\n");
    for (int k = 0; k < ZS_METRICS_SOURCES; k++)
        sb_printf(&b, "zerostart_model_starts_total{source=\"%s\"} %llu\n", zs_metrics_source_names[k],
                  (unsigned long long)c.starts[k]);
    render_counter(&b, "zerostart_model_start_failures_total", "Model starts that failed.", c.start_failures);
    render_counter(&b, "zerostart_prewarms_total", "Models brought back ahead of a predicted request.", c.prewarms);
    render_counter(&b, "zerostart_prewarm_hits_total", "Requests that found a pre-warmed model ready.",
                   c.prewarm_hits);
    render_counter(&b, "zerostart_prewarm_unused_total",
                   "Pre-warmed models unloaded (or their load aborted) before any request used them.",
                   c.prewarm_unused);

    sb_printf(&b, "# HELP zerostart_kv_prompt_tokens_total Prompt tokens of admitted requests by where their "
                  "KV came from: GPU prefix cache, the store's host or disk tier, or computed (prefill).\n"
                  "# TYPE zerostart_kv_prompt_tokens_total counter\n");
    for (int k = 0; k < ZS_KV_SOURCES; k++)
        sb_printf(&b, "zerostart_kv_prompt_tokens_total{source=\"%s\"} %llu\n", zs_kv_source_names[k],
                  (unsigned long long)c.kv_tokens[k]);
    render_hist(&b, "zerostart_kv_restore_seconds",
                "Time to restore a request's cached prefix from the KV store (lookup, disk reads, import).",
                &c.kv_restore);

#define G(n, h, f) {n, h, "gauge", offsetof(zs_model_gauges_t, f)}
#define C(n, h, f) {n, h, "counter", offsetof(zs_model_gauges_t, f)}
    static const struct {
        const char *name, *help, *type;
        size_t off;
    } gauges[] = {
        G("zerostart_model_loaded", "1 when the model's engine is up, 0 when scaled to zero.", loaded),
        G("zerostart_queue_length", "Requests waiting for admission.", queue),
        G("zerostart_running_requests", "Sequences in the running batch.", running),
        G("zerostart_kv_blocks_in_use", "KV blocks referenced by live requests.", kv_in_use),
        G("zerostart_kv_blocks_cached", "KV blocks held only by the prefix cache.", kv_cached),
        G("zerostart_kv_blocks_allocated", "KV blocks allocated (in use or cached).", kv_used),
        G("zerostart_kv_blocks_total", "KV cache capacity in blocks.", kv_total),
        G("zerostart_kv_store_host_bytes", "KV store: bytes of blocks in host memory.", kvs_host_bytes),
        G("zerostart_kv_store_host_capacity_bytes", "KV store: host tier capacity.", kvs_host_capacity),
        G("zerostart_kv_store_host_blocks", "KV store: blocks in host memory.", kvs_host_blocks),
        G("zerostart_kv_store_disk_bytes", "KV store: bytes of block files on disk.", kvs_disk_bytes),
        G("zerostart_kv_store_disk_capacity_bytes", "KV store: disk tier capacity (0: unlimited).", kvs_disk_capacity),
        G("zerostart_kv_store_disk_blocks", "KV store: block files on disk.", kvs_disk_blocks),
        G("zerostart_kv_store_write_queue", "KV store: blocks waiting to be written to disk.", kvs_write_queue),
        G("zerostart_kv_store_host_pinned", "KV store: 1 when the host tier is page-locked for GPU copies, 0 not "
          "(yet, or a CPU model), -1 when page-locking failed.", kvs_host_pinned),
        C("zerostart_kv_store_host_evictions_total", "KV store: blocks evicted from host memory.", kvs_host_evictions),
        C("zerostart_kv_store_disk_evictions_total", "KV store: block files evicted from disk.", kvs_disk_evictions),
        C("zerostart_kv_store_disk_writes_total", "KV store: block files written.", kvs_writes),
        C("zerostart_kv_store_disk_writes_dropped_total", "KV store: disk writes dropped (queue full).", kvs_writes_dropped),
        C("zerostart_kv_store_disk_write_errors_total", "KV store: failed disk writes.", kvs_write_errors),
        C("zerostart_kv_store_rejected_files_total", "KV store: damaged, foreign or tampered block files removed.", kvs_rejected),
        C("zerostart_kv_exported_blocks_total", "KV blocks copied from the GPU cache into the store.", kvs_exported_blocks),
        C("zerostart_kv_export_dropped_blocks_total", "KV blocks leaving the GPU that the store had no room for.", kvs_export_dropped),
        C("zerostart_kv_restore_skipped_blocks_total", "Stored KV blocks recomputed because that was estimated faster.", kvs_skipped_by_cost),
        C("zerostart_kv_restore_overlapped_blocks_total",
          "Restored KV blocks copied into the KV cache while later blocks of the same restore were still being read from disk.",
          kvs_restore_overlapped),
        G("zerostart_contexts_ready", "Registered contexts whose KV is computed.", ctx_ready),
        G("zerostart_contexts_pending", "Registered contexts waiting for idle time to be computed.", ctx_pending),
        C("zerostart_contexts_precomputed_total", "Context prefills run in idle time.", ctx_precomputed),
        C("zerostart_kv_prefetches_total", "Predicted prefixes brought back into the GPU cache while idle.", kv_prefetches),
        C("zerostart_kv_prefetched_blocks_total", "KV blocks those prefetches restored.", kv_prefetched_blocks),
#undef G
#undef C
    };
    for (size_t k = 0; k < sizeof gauges / sizeof gauges[0]; k++) {
        sb_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", gauges[k].name, gauges[k].help, gauges[k].name,
                  gauges[k].type ? gauges[k].type : "gauge");
        for (int i = 0; i < ng; i++) {
            int64_t v;
            memcpy(&v, (const char *)&g[i] + gauges[k].off, sizeof v);
            sb_printf(&b, "%s{model=\"%s\"} %lld\n", gauges[k].name, g[i].model, (long long)v);
        }
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len) *len = b.len;
    return b.p;
}
