/* Shared state of a running server (server.c) and the pieces of the HTTP layer that the
 * router (router.c) and the SSE streamer (sse.c) use. */
#ifndef ZS_SERVER_INTERNAL_H
#define ZS_SERVER_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>

#include "server/contexts.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/openai_request.h"
#include "server/prewarm.h"
#include "server/residency.h"
#include "server/serve_model.h"
#include "zerostart/pool.h"
#include "zerostart/server.h"

struct zs_server {
    zs_server_config_t cfg;      /* deep copy */
    zs_slog_t log;
    zs_metrics_t metrics;
    int metrics_ready;
    zs_srv_model_t models[ZS_SERVER_MAX_MODELS];
    int nmodels;
    zs_pool_t *pool;             /* hot model pool; NULL without --pool-size */
    zs_res_t res;                /* device budgets, placement */
    int res_ready;
    zs_ctxreg_t contexts;        /* registered contexts (POST /v1/contexts) */
    int contexts_ready;
    zs_prewarm_t *prewarm;       /* pre-warming policy; NULL when off */
    struct MHD_Daemon *d;
    uint16_t port;
    atomic_int inflight;         /* HTTP requests between first callback and completion */
    atomic_int stopping;
    atomic_uint_fast64_t counter;
    uint64_t salt;
};

/* Per-request HTTP state (MHD's con_cls). */
typedef struct zs_conn {
    char rid[24];                /* request id: 16 hex digits */
    double t0;
    char *body;
    size_t len, cap;
    int too_big;
    int status;                  /* status sent, for the log line */
    char method[12];
    char url[160];
    char tenant[48];             /* "key-<hex>" of the API key used; "" without authentication */
} zs_conn_t;

/* The KV-cache salt of a request: its API key's tenant and its cache_salt (either may be
 * absent); malloc'd, NULL for "shared" (and when out of memory: *oom set). */
char *zs_tenant_salt(const zs_conn_t *cc, const char *cache_salt, int *oom);

/* Queues a response with a malloc'd body (taken over, also on failure). */
enum MHD_Result zs_http_send(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc, int status,
                             const char *content_type, char *body, size_t len);
/* Queues an OpenAI-style error (adds Retry-After to 503, WWW-Authenticate to 401). */
enum MHD_Result zs_http_error(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc,
                              const zs_oai_error_t *e);
/* 1 when the peer of the connection has closed its side (or the socket failed). */
int zs_http_peer_closed(struct MHD_Connection *c);
int zs_http_conn_fd(struct MHD_Connection *c);
int zs_fd_peer_closed(int fd);

/* Daemon lifecycle (http.c). */
int zs_http_start(zs_server_t *s, zs_err_t *err);
void zs_http_quiesce(zs_server_t *s);    /* stop accepting connections */
void zs_http_stop(zs_server_t *s);       /* close everything, join the threads */

/* The prompt token ids of a parsed request (chat template + encode, text encode, or ids),
 * validated against the model's vocabulary and context (router.c). */
int zs_build_prompt(const zs_srv_model_t *m, const zs_oai_req_t *q, int add_generation_prompt, int32_t **ids,
                    int32_t *n, zs_oai_error_t *e);
/* /v1/contexts[/{id}] (route_contexts.c). */
enum MHD_Result zs_route_contexts(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc, const char *url,
                                  const char *method);

/* Dispatches a complete request (router.c). */
enum MHD_Result zs_route(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc,
                         const char *url, const char *method);

/* Streaming responses (sse.c). */
struct zs_sreq;
/* Creates the SSE response for a submitted request (taking a reference to it), or NULL. */
struct MHD_Response *zs_sse_response(zs_server_t *s, struct zs_sreq *r, zs_oai_kind_t kind,
                                     const char *model, int include_usage, int fd);

#endif
