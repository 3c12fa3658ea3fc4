/* zerostart HTTP server: an OpenAI-compatible API (/v1/models, /v1/completions,
 * /v1/chat/completions with server-sent-event streaming, /health, /metrics) over one or more
 * models, each driven by a continuous-batching scheduler thread that owns its engine.
 * See docs/server.md. The library never prints: log lines go to the config's log callback. */
#ifndef ZEROSTART_SERVER_H
#define ZEROSTART_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/err.h"
#include "zerostart/load.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ZS_SERVER_MAX_MODELS 16
#define ZS_SERVER_MAX_API_KEYS 64

typedef struct zs_server_model_cfg {
    char *name;                  /* served model id ("model" in requests) */
    char *path;                  /* model directory */
    zs_device_t device;
    int64_t ctx;                 /* context length; 0 = the model's max_position_embeddings */
    size_t kv_bytes;             /* KV cache bytes; 0 = engine default (64 MiB) */
    double keep_alive_s;         /* idle seconds before scale to zero; 0 = never; < 0 = the
                                    server's keep_alive_s */
    int any_gpu;                 /* device "cuda:any": placement picks the GPU */
} zs_server_model_cfg_t;

typedef enum zs_log_level { ZS_LOG_ERROR = 0, ZS_LOG_WARN = 1, ZS_LOG_INFO = 2, ZS_LOG_DEBUG = 3 } zs_log_level_t;

/* Receives one formatted line (no trailing newline); called from many threads. */
typedef void (*zs_log_fn)(void *ctx, zs_log_level_t level, const char *line);

typedef struct zs_server_config {
    char *host;                  /* bind address; default "127.0.0.1" */
    uint16_t port;               /* 0 = any free port (see zs_server_port) */
    char *api_keys[ZS_SERVER_MAX_API_KEYS]; /* none = no authentication; each key is a tenant of
                                               the KV cache (its blocks are not shared with
                                               another key's requests) */
    int napi_keys;
    int max_queue;               /* waiting requests per model before 503; default 256 */
    int max_batch;               /* running sequences per model; default 64 */
    int step_tokens;             /* token budget of one scheduler step; default 256 */
    size_t max_body;             /* request body cap in bytes (413 above); default 4 MiB */
    int max_connections;         /* default 512 */
    int threads;                 /* CPU backend threads; 0 = all cores */
    double shutdown_timeout_s;   /* in-flight grace period at shutdown; default 30 */
    int step_delay_ms;           /* testing aid: sleep per scheduler step; default 0 */
    /* scale from zero (docs/server.md) */
    uint64_t pool_size;          /* hot model pool capacity in bytes; 0 = no pool */
    char *pool_dir;              /* NULL: $ZS_POOL_DIR, else /dev/shm/zerostart-pool */
    double keep_alive_s;         /* default per-model keep-alive; default 300; 0 = never */
    uint64_t device_mem;         /* bytes of weights + KV + buffers allowed on each device;
                                    0 = CPU: unlimited, CUDA: free memory at start */
    int probe_bandwidth;         /* measure h2d / read bandwidth after start; default 1 */
    /* KV warm start (docs/kvstore.md): the store below each model's GPU prefix cache */
    uint64_t kv_host_bytes;      /* host tier per model; default 2 GiB; 0 = no store */
    char *kv_disk_dir;           /* disk tier directory (a subdirectory per model); NULL = none */
    uint64_t kv_disk_bytes;      /* disk tier capacity per model; 0 = unlimited */
    int kv_no_fsync;             /* testing aid: block files without fsync */
    int kv_read_delay_ms;        /* testing aid: sleep before each KV block read from disk */
    int prewarm;                 /* bring scaled-to-zero models back ahead of predicted
                                    requests (docs/server.md); default 0 */
    double prewarm_threshold;    /* probability of a request within the start-up lead time
                                    that triggers a pre-warm, in (0, 1]; default 0.5 */
    int warmup;                  /* kernel warm-up after each model's first start: -1 auto
                                    (models on a GPU), 0 off, 1 on; default -1 */
    int nmodels;
    zs_server_model_cfg_t models[ZS_SERVER_MAX_MODELS];
    zs_log_fn log;
    void *log_ctx;
    zs_log_level_t log_level;    /* default ZS_LOG_INFO */
} zs_server_config_t;

void zs_server_config_init(zs_server_config_t *c);
/* Frees the strings a config owns (it must have been zs_server_config_init'ed). */
void zs_server_config_free(zs_server_config_t *c);
/* Parses a device for serving: "cpu", "cuda", "cuda:N" or "cuda:any" (any GPU: placement
 * decides; *any is set). */
int zs_server_parse_device(const char *s, zs_device_t *dev, int *any, zs_err_t *err);
/* "on"/"true"/"1" -> 1, "off"/"false"/"0" -> 0, "auto" -> -1 when allow_auto; -1 otherwise. */
int zs_server_parse_switch(const char *s, int allow_auto, int *out);
/* Adds a model (strings are copied). */
int zs_server_config_add_model(zs_server_config_t *c, const char *name, const char *path,
                               zs_err_t *err);
/* Adds an API key (copied). */
int zs_server_config_add_api_key(zs_server_config_t *c, const char *key, zs_err_t *err);
/* Reads a JSON config file: {"host", "port", "api_key", "api_keys", "max_queue", "max_batch",
 * "step_tokens", "max_body", "shutdown_timeout", "pool_size", "pool_dir", "keep_alive",
 * "device_mem", "kv_host", "kv_disk", "kv_disk_size", "prewarm", "prewarm_threshold", "warmup",
 * "models": [{"name", "path", "device", "ctx", "kv_mem", "keep_alive"}]};
 * every key is optional except models[].path. Errors name the key. */
int zs_server_config_load(zs_server_config_t *c, const char *path, zs_err_t *err);
int zs_server_config_load_json(zs_server_config_t *c, const char *json, size_t len,
                               const char *what, zs_err_t *err);

typedef struct zs_server zs_server_t;

/* Loads every model (checkpoint, weights, tokenizer, chat template, engine) and starts the
 * scheduler threads; nothing listens yet. cfg is copied. */
int zs_server_create(const zs_server_config_t *cfg, zs_server_t **out, zs_err_t *err);
/* Starts listening (HTTP threads). */
int zs_server_start(zs_server_t *s, zs_err_t *err);
/* Port actually bound (useful with port 0). */
uint16_t zs_server_port(const zs_server_t *s);
/* Graceful stop: stops accepting connections, lets in-flight requests finish for up to
 * cfg->shutdown_timeout_s, cancels what is left, then stops the HTTP threads. Returns the
 * number of requests that had to be cancelled (>= 0). */
int zs_server_shutdown(zs_server_t *s);
void zs_server_free(zs_server_t *s);

#ifdef __cplusplus
}
#endif
#endif
