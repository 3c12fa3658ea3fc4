/* OpenAI request bodies (/v1/completions, /v1/chat/completions): parsing and validation of
 * the JSON into a plain struct, with OpenAI-style errors (HTTP status, message, param) that
 * name the offending field. Fields the reference API knows but this server cannot honour
 * (n > 1, logprobs, echo, best_of > 1, suffix) are refused with a clear message; unknown
 * fields are ignored as the reference API does. */
#ifndef ZS_SERVER_OPENAI_REQUEST_H
#define ZS_SERVER_OPENAI_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef enum zs_oai_kind { ZS_OAI_COMPLETIONS = 0, ZS_OAI_CHAT = 1 } zs_oai_kind_t;

typedef struct zs_oai_error {
    int status;                 /* HTTP status */
    const char *type;           /* "invalid_request_error", "server_error", ... */
    char code[48];              /* "" = null */
    char param[96];             /* "" = null */
    char message[640];
} zs_oai_error_t;

void zs_oai_error_set(zs_oai_error_t *e, int status, const char *type, const char *param,
                      const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* {"error": {"message", "type", "param", "code"}} as compact JSON (malloc'd), or NULL. */
char *zs_oai_error_body(const zs_oai_error_t *e, size_t *len);

#define ZS_OAI_MAX_STOP 16
#define ZS_OAI_MAX_STOP_LEN 256

typedef struct zs_oai_req {
    zs_oai_kind_t kind;
    char *model;
    json_t *messages;           /* chat: normalized array of {role, content: string, ...} */
    char *prompt;               /* completions: text (NUL-terminated, prompt_len bytes) */
    size_t prompt_len;
    int32_t *prompt_ids;        /* completions: token ids given instead of text */
    size_t nprompt_ids;
    int64_t max_tokens;         /* -1 = not given */
    double temperature, top_p, min_p;
    int32_t top_k;
    double presence_penalty, frequency_penalty, repetition_penalty;
    int has_seed;
    uint64_t seed;
    char *stop[ZS_OAI_MAX_STOP];
    size_t stop_len[ZS_OAI_MAX_STOP];
    int nstop;
    int stream, include_usage;
    int ignore_eos;             /* extension (as vLLM): keep generating past end-of-sequence tokens */
    char *cache_salt;           /* extension (as vLLM): KV cache tenant; NULL = not given */
} zs_oai_req_t;

/* Parses a request body. On failure returns -1 with e filled (and r freed); 0 on success. */
int zs_oai_request_parse(zs_oai_kind_t kind, const char *body, size_t len, zs_oai_req_t *r,
                         zs_oai_error_t *e);
void zs_oai_request_free(zs_oai_req_t *r);

#endif
