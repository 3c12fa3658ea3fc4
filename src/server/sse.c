/* Server-sent-event streaming of a request's output: a libmicrohttpd content-reader that
 * waits on the request (thread-per-connection, so blocking is fine), frames chunks as
 * `data: {...}\n\n`, ends with `data: [DONE]`, and cancels the request when the client goes
 * away. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "server/openai_response.h"
#include "server/scheduler.h"
#include "server/server_internal.h"

typedef struct zs_sse {
    zs_server_t *srv;
    zs_sreq_t *r;
    zs_oai_meta_t meta;
    char model[160];
    int include_usage, fd;
    int state;                   /* 0: before the first chunk, 1: streaming, 2: [DONE] queued */
    char *buf;
    size_t len, off, cap;
} zs_sse_t;

/* Appends "data: <json>\n\n" (json malloc'd, taken). */
static int sse_event(zs_sse_t *x, char *json) {
    if (json == NULL) return -1;
    size_t n = strlen(json), need = x->len + n + 8;
    if (need > x->cap) {
        size_t c = x->cap ? x->cap : 1024;
        while (c < need) c *= 2;
        char *nb = realloc(x->buf, c);
        if (nb == NULL) {
            free(json);
            return -1;
        }
        x->buf = nb;
        x->cap = c;
    }
    memcpy(x->buf + x->len, "data: ", 6);
    memcpy(x->buf + x->len + 6, json, n);
    memcpy(x->buf + x->len + 6 + n, "\n\n", 2);
    x->len += n + 8;
    free(json);
    return 0;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max) {
    (void)pos;
    zs_sse_t *x = cls;
    for (;;) {
        if (x->off < x->len) {
            size_t n = x->len - x->off < max ? x->len - x->off : max;
            memcpy(out, x->buf + x->off, n);
            x->off += n;
            if (x->off == x->len) x->off = x->len = 0;
            return (ssize_t)n;
        }
        if (x->state == 2) return MHD_CONTENT_READER_END_OF_STREAM;
        int rc = 0;
        if (x->state == 0) {
            x->state = 1;
            if (x->meta.kind == ZS_OAI_CHAT)
                rc = sse_event(x, zs_oai_chunk_json(&x->meta, 1, NULL, 0, NULL, x->include_usage));
            if (rc) goto oom;
            continue;
        }
        zs_sreq_out_t o;
        int got = zs_sreq_take(x->r, 100, &o);
        if (!got) {
            if (zs_fd_peer_closed(x->fd)) {
                zs_slog(&x->srv->log, ZS_LOG_INFO, x->r->id, "client disconnected mid-stream");
                zs_sreq_cancel(x->r, ZS_CANCEL_CLIENT);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            continue;
        }
        if (o.text) {
            rc = sse_event(x, zs_oai_chunk_json(&x->meta, 0, o.text, o.len, NULL, x->include_usage));
            free(o.text);
            if (rc) goto oom;
        }
        if (o.done) {
            if (o.err_status) {
                zs_oai_error_t e;
                zs_oai_error_set(&e, o.err_status, o.err_status >= 500 ? "server_error" : "invalid_request_error",
                                 NULL, NULL, "%s", o.err_msg);
                rc = sse_event(x, zs_oai_error_body(&e, NULL));
            } else {
                rc = sse_event(x, zs_oai_chunk_json(&x->meta, 0, NULL, 0, o.finish, x->include_usage));
                if (!rc && x->include_usage) {
                    zs_oai_usage_t u;
                    zs_sreq_usage(x->r, &o, &u);
                    rc = sse_event(x, zs_oai_usage_chunk_json(&x->meta, &u));
                }
            }
            if (rc) goto oom;
            size_t need = x->len + 14;
            if (need > x->cap) {
                char *nb = realloc(x->buf, need);
                if (nb == NULL) goto oom;
                x->buf = nb;
                x->cap = need;
            }
            memcpy(x->buf + x->len, "data: [DONE]\n\n", 14);
            x->len += 14;
            x->state = 2;
        }
    }
oom:
    zs_slog(&x->srv->log, ZS_LOG_ERROR, x->r->id, "out of memory while streaming");
    zs_sreq_cancel(x->r, ZS_CANCEL_CLIENT);
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

static void sse_free(void *cls) {
    zs_sse_t *x = cls;
    if (x->state != 2) zs_sreq_cancel(x->r, ZS_CANCEL_CLIENT); /* connection closed early */
    zs_sreq_release(x->r);
    free(x->buf);
    free(x);
}

struct MHD_Response *zs_sse_response(zs_server_t *s, zs_sreq_t *r, zs_oai_kind_t kind,
                                     const char *model, int include_usage, int fd) {
    zs_sse_t *x = calloc(1, sizeof *x);
    if (x == NULL) return NULL;
    x->srv = s;
    x->r = r;
    x->include_usage = include_usage;
    x->fd = fd;
    snprintf(x->model, sizeof x->model, "%s", model);
    x->meta = (zs_oai_meta_t){.kind = kind, .id = r->id, .created = (int64_t)time(NULL),
                              .model = x->model};
    zs_sreq_ref(r);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, x, sse_free);
    if (resp == NULL) {
        zs_sreq_release(r);
        free(x);
        return NULL;
    }
    if (MHD_add_response_header(resp, "Content-Type", "text/event-stream") != MHD_YES ||
        MHD_add_response_header(resp, "Cache-Control", "no-cache") != MHD_YES) {
        MHD_destroy_response(resp); /* calls sse_free */
        return NULL;
    }
    return resp;
}
