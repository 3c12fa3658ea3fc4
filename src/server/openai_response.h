/* OpenAI response bodies: model list, completion and chat completion objects, streaming
 * chunks and the usage chunk, as compact JSON strings (malloc'd; NULL when out of memory).
 * Generated text that is not valid UTF-8 has the bad bytes replaced by U+FFFD. */
#ifndef ZS_SERVER_OPENAI_RESPONSE_H
#define ZS_SERVER_OPENAI_RESPONSE_H

#include <stddef.h>
#include <stdint.h>

#include "server/openai_request.h"

typedef struct zs_oai_model_info {
    const char *id;
    int64_t created;
    int64_t max_model_len;
    const char *state;           /* lifecycle state; NULL: not shown */
    const char *location;        /* where the weights are: "device", "pool", "storage" */
    const char *device;          /* "cuda:0", "cpu" when resident, else "" */
    double keep_alive_s;
} zs_oai_model_info_t;

char *zs_oai_models_json(const zs_oai_model_info_t *m, int n);
char *zs_oai_model_json(const zs_oai_model_info_t *m);

typedef struct zs_oai_meta {
    zs_oai_kind_t kind;
    const char *id;
    int64_t created;
    const char *model;
} zs_oai_meta_t;

/* Token counts of a response: "usage" with prompt_tokens_details.cached_tokens and the
 * zerostart extension "kv_cache" (where the prompt's KV came from) when has_kv. */
typedef struct zs_oai_usage {
    int64_t prompt_tokens, completion_tokens, cached_tokens;
    int has_kv;
    int64_t gpu_tokens, host_tokens, disk_tokens, computed_tokens;
    double restore_s;
    uint64_t restore_bytes;
    double restore_began_s, admitted_s; /* since the request arrived */
} zs_oai_usage_t;

/* Non-streaming response. */
char *zs_oai_completion_json(const zs_oai_meta_t *m, const char *text, size_t len,
                             const char *finish_reason, const zs_oai_usage_t *u);
/* One streaming chunk. role_first: chat's first delta {"role": "assistant", "content": ""};
 * text may be NULL (no content); finish_reason NULL = null. usage_null adds "usage": null
 * (stream_options.include_usage). */
char *zs_oai_chunk_json(const zs_oai_meta_t *m, int role_first, const char *text, size_t len,
                        const char *finish_reason, int usage_null);
/* The final usage chunk: "choices": [] and "usage". */
char *zs_oai_usage_chunk_json(const zs_oai_meta_t *m, const zs_oai_usage_t *u);

/* Copy of s[0..n) (malloc'd, NUL-terminated) with each invalid UTF-8 byte replaced by
 * U+FFFD and NUL bytes dropped; *out_len gets its length. */
char *zs_utf8_sanitize(const char *s, size_t n, size_t *out_len);

#endif
