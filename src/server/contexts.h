/* Registered contexts (POST /v1/contexts): named token sequences — a system prompt, a
 * document — whose KV the server computes while a model is idle and keeps in its caches, so
 * that requests beginning with one skip that prefill. The registry is shared by the HTTP
 * threads (register, list, delete) and the models' scheduler threads (take a pending one,
 * report it computed); it persists its definitions in a JSON file (next to the KV disk tier)
 * so that a restarted server knows them again and finds their blocks on disk. Thread-safe.
 * Also the parser of the registration body (fuzzed: tests/fuzz/fuzz_contexts.c). */
#ifndef ZS_SERVER_CONTEXTS_H
#define ZS_SERVER_CONTEXTS_H

#include <pthread.h>
#include <stdint.h>

#include "server/openai_request.h"
#include "zerostart/err.h"

#define ZS_CTX_MAX 256            /* contexts a server keeps */
#define ZS_CTX_NAME_MAX 64

typedef enum zs_ctx_state {
    ZS_CTX_PENDING = 0,           /* waiting for an idle moment of its model */
    ZS_CTX_COMPUTING = 1,
    ZS_CTX_READY = 2,             /* its KV is in the caches (GPU, and host/disk when a store is on) */
    ZS_CTX_FAILED = 3,
} zs_ctx_state_t;

typedef struct zs_ctx {
    char id[ZS_CTX_NAME_MAX + 1];
    char *model;
    int32_t *ids;
    int32_t n;
    char *salt;                   /* cache_salt, NULL = shared */
    int state;                    /* zs_ctx_state_t */
    int64_t created;              /* unix seconds */
    int64_t progress;             /* tokens whose KV is computed or restored so far */
    int64_t cached_tokens;        /* when ready: tokens held as full blocks */
    int64_t restored_tokens;      /* of those, brought back from the store instead of computed */
    double compute_s;             /* the last precompute: take -> ready */
    uint64_t computes;            /* precomputes finished */
    char error[256];
} zs_ctx_t;

typedef struct zs_ctxreg {
    pthread_mutex_t mu;
    zs_ctx_t *v[ZS_CTX_MAX];
    int n;
    char *path;                   /* persistence file, NULL = none */
    uint64_t seq;                 /* generated ids */
} zs_ctxreg_t;

/* A parsed POST /v1/contexts body: the model, an optional name, and the prompt as an OpenAI
 * request (completions: "prompt" text or token ids; chat: "messages") with cache_salt. */
typedef struct zs_ctx_request {
    char name[ZS_CTX_NAME_MAX + 1]; /* "" = generate one */
    zs_oai_req_t oai;
} zs_ctx_request_t;

/* Parses a registration body. On failure returns -1 with e filled; 0 on success (free with
 * zs_ctx_request_free). */
int zs_ctx_request_parse(const char *body, size_t len, zs_ctx_request_t *r, zs_oai_error_t *e);
void zs_ctx_request_free(zs_ctx_request_t *r);

/* path: the persistence file (loaded if it exists; a damaged file is an error naming it), or
 * NULL. */
int zs_ctxreg_init(zs_ctxreg_t *g, const char *path, zs_err_t *err);
void zs_ctxreg_destroy(zs_ctxreg_t *g);
/* Parses a persistence file's text into g (used by init; exposed for the fuzz target). */
int zs_ctxreg_load_json(zs_ctxreg_t *g, const char *json, size_t len, const char *what, zs_err_t *err);

/* Adds a pending context (ids and salt are copied) and saves the definitions; name ""
 * generates "ctx-<hex>". ZS_EBUSY when the name exists, ZS_ERANGE when the registry is full,
 * the save's error when it cannot be persisted (then it is not added). The new context's JSON
 * is returned in *json (malloc'd) when json is not NULL. */
int zs_ctxreg_add(zs_ctxreg_t *g, const char *name, const char *model, const int32_t *ids, int32_t n,
                  const char *salt, char **json, zs_err_t *err);
/* tenant (may be NULL or ""): only contexts whose cache salt begins with it are visible —
 * an API key sees the contexts registered with it. */
/* Removes a context: 1 removed, 0 unknown. */
int zs_ctxreg_delete(zs_ctxreg_t *g, const char *id, const char *tenant);
/* JSON of one context (NULL when unknown or out of memory) / of all, or those of one model. */
char *zs_ctxreg_get_json(zs_ctxreg_t *g, const char *id, const char *tenant, int *found);
char *zs_ctxreg_list_json(zs_ctxreg_t *g, const char *model, const char *tenant);

/* For a model's scheduler: the oldest pending context of model, marked COMPUTING, copied into
 * *out (free with zs_ctx_free_copy). 1 when one was taken, 0 when none. */
int zs_ctxreg_take(zs_ctxreg_t *g, const char *model, zs_ctx_t *out);
int zs_ctxreg_has_pending(zs_ctxreg_t *g, const char *model);
/* Progress of a context being computed. */
void zs_ctxreg_progress(zs_ctxreg_t *g, const char *id, int64_t tokens);
/* The end of a precompute: state READY (with the token counts) or FAILED (why), or back to
 * PENDING (requeue: it yielded its memory to live requests). A context deleted meanwhile is
 * ignored. */
void zs_ctxreg_finish(zs_ctxreg_t *g, const char *id, int state, int64_t cached, int64_t restored, double seconds,
                      const char *why);
/* Every context of model back to PENDING (its KV left the GPU: the model scaled to zero). */
void zs_ctxreg_requeue_model(zs_ctxreg_t *g, const char *model);
/* Contexts of model ready / waiting, and precomputes finished (of the contexts still kept). */
void zs_ctxreg_counts(zs_ctxreg_t *g, const char *model, int64_t *ready, int64_t *pending, uint64_t *precomputed);
void zs_ctx_free_copy(zs_ctx_t *c);

#endif
