/* HTTP layer on libmicrohttpd: daemon set-up (thread per connection), request bodies with a
 * size cap (413), request ids, response helpers that count statuses for /metrics, peer-gone
 * detection, the per-request log line, graceful stop (quiesce + drain). */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "server/server_internal.h"

int zs_fd_peer_closed(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    int n = poll(&p, 1, 0);
    return n > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

int zs_http_conn_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? (int)ci->connect_fd : -1;
}

int zs_http_peer_closed(struct MHD_Connection *c) { return zs_fd_peer_closed(zs_http_conn_fd(c)); }

static enum MHD_Result send_resp(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc, int status,
                                 const char *ctype, char *body, size_t len, const char *h1,
                                 const char *v1) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(body);
        zs_slog(&s->log, ZS_LOG_ERROR, cc->rid, "cannot create a response (out of memory)");
        return MHD_NO;
    }
    enum MHD_Result ok = MHD_YES;
    if (ctype && MHD_add_response_header(r, "Content-Type", ctype) != MHD_YES) ok = MHD_NO;
    if (MHD_add_response_header(r, "X-Request-Id", cc->rid) != MHD_YES) ok = MHD_NO;
    if (h1 && MHD_add_response_header(r, h1, v1) != MHD_YES) ok = MHD_NO;
    if (ok == MHD_YES) ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    if (ok == MHD_YES) {
        cc->status = status;
        zs_metrics_status(&s->metrics, status);
    }
    return ok;
}

enum MHD_Result zs_http_send(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc, int status,
                             const char *content_type, char *body, size_t len) {
    return send_resp(s, c, cc, status, content_type, body, len, NULL, NULL);
}

enum MHD_Result zs_http_error(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc,
                              const zs_oai_error_t *e) {
    size_t len = 0;
    char *body = zs_oai_error_body(e, &len);
    if (body == NULL) {
        static const char fallback[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                                       "\"server_error\",\"param\":null,\"code\":null}}";
        body = strdup(fallback);
        if (body == NULL) return MHD_NO;
        len = strlen(body);
    }
    zs_slog(&s->log, e->status >= 500 ? ZS_LOG_WARN : ZS_LOG_INFO, cc->rid, "%d %s: %s",
            e->status, cc->url, e->message);
    const char *h = NULL, *v = NULL;
    if (e->status == 503) h = "Retry-After", v = "1";
    if (e->status == 401) h = "WWW-Authenticate", v = "Bearer";
    return send_resp(s, c, cc, e->status, "application/json", body, len, h, v);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    zs_server_t *s = cls;
    zs_conn_t *cc = *con_cls;
    if (cc == NULL) {
        cc = calloc(1, sizeof *cc);
        if (cc == NULL) {
            zs_slog(&s->log, ZS_LOG_ERROR, NULL, "out of memory for a connection");
            return MHD_NO;
        }
        uint64_t n = atomic_fetch_add(&s->counter, 1);
        snprintf(cc->rid, sizeof cc->rid, "%08" PRIx64 "%08" PRIx64, (s->salt >> 32) & 0xffffffffu,
                 n & 0xffffffffu);
        cc->t0 = zs_now();
        snprintf(cc->method, sizeof cc->method, "%s", method);
        snprintf(cc->url, sizeof cc->url, "%s", url);
        atomic_fetch_add(&s->inflight, 1);
        *con_cls = cc;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (errno || end == cl || v > s->cfg.max_body) {
                cc->too_big = 1;
                zs_oai_error_t e;
                zs_oai_error_set(&e, 413, "invalid_request_error", NULL, "request_too_large",
                                 "request body exceeds the limit of %zu bytes", s->cfg.max_body);
                if (zs_http_error(s, c, cc, &e) == MHD_YES) return MHD_YES;
                /* could not answer before the body: discard it and answer at the end */
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (cc->too_big) return MHD_YES;
        if (cc->len + n > s->cfg.max_body) {
            cc->too_big = 1;
            free(cc->body);
            cc->body = NULL;
            cc->len = cc->cap = 0;
            return MHD_YES;
        }
        if (cc->len + n + 1 > cc->cap) {
            size_t cap = cc->cap ? cc->cap : 4096;
            while (cap < cc->len + n + 1) cap *= 2;
            char *nb = realloc(cc->body, cap);
            if (nb == NULL) {
                zs_slog(&s->log, ZS_LOG_ERROR, cc->rid, "out of memory for a %zu-byte body", cap);
                return MHD_NO;
            }
            cc->body = nb;
            cc->cap = cap;
        }
        memcpy(cc->body + cc->len, upload, n);
        cc->len += n;
        cc->body[cc->len] = 0;
        return MHD_YES;
    }
    if (cc->status) return MHD_YES; /* answered already (413 before the body) */
    if (cc->too_big) {
        zs_oai_error_t e;
        zs_oai_error_set(&e, 413, "invalid_request_error", NULL, "request_too_large",
                         "request body exceeds the limit of %zu bytes", s->cfg.max_body);
        return zs_http_error(s, c, cc, &e);
    }
    return zs_route(s, c, cc, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)c;
    zs_server_t *s = cls;
    zs_conn_t *cc = *con_cls;
    if (cc == NULL) return;
    *con_cls = NULL;
    const char *how = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed early)";
    zs_slog(&s->log, strcmp(cc->url, "/metrics") == 0 || strcmp(cc->url, "/health") == 0 ? ZS_LOG_DEBUG : ZS_LOG_INFO,
            cc->rid, "%s %s -> %d in %.1f ms%s", cc->method, cc->url, cc->status,
            (zs_now() - cc->t0) * 1e3, how);
    free(cc->body);
    free(cc);
    atomic_fetch_sub(&s->inflight, 1);
}

__attribute__((format(printf, 2, 0))) static void mhd_logger(void *cls, const char *fmt, va_list ap) {
    zs_server_t *s = cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    zs_slog(&s->log, ZS_LOG_DEBUG, NULL, "http: %s", buf);
}

int zs_http_start(zs_server_t *s, zs_err_t *err) {
    const char *host = s->cfg.host ? s->cfg.host : "127.0.0.1";
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    int g = getaddrinfo(host, NULL, &hints, &ai);
    if (g != 0 || ai == NULL)
        return zs_err_set(err, ZS_EINVAL, "server: cannot resolve host '%s': %s", host,
                          gai_strerror(g));
    struct sockaddr_storage sa;
    memset(&sa, 0, sizeof sa);
    memcpy(&sa, ai->ai_addr, ai->ai_addrlen);
    int v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    if (v6) ((struct sockaddr_in6 *)&sa)->sin6_port = htons(s->cfg.port);
    else ((struct sockaddr_in *)&sa)->sin_port = htons(s->cfg.port);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    s->d = MHD_start_daemon(flags, s->cfg.port, NULL, NULL, on_request, s,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->cfg.max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, s,
                            MHD_OPTION_END);
    if (s->d == NULL)
        return zs_err_set(err, ZS_EIO, "server: cannot listen on %s:%u (address in use or not "
                          "permitted)", host, (unsigned)s->cfg.port);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di && di->port ? di->port : s->cfg.port;
    return 0;
}

void zs_http_quiesce(zs_server_t *s) {
    if (s->d == NULL) return;
    MHD_socket fd = MHD_quiesce_daemon(s->d);
    if (fd != MHD_INVALID_SOCKET && close(fd) != 0)
        zs_slog(&s->log, ZS_LOG_WARN, NULL, "closing the listening socket: %s", strerror(errno));
}

void zs_http_stop(zs_server_t *s) {
    if (s->d) MHD_stop_daemon(s->d);
    s->d = NULL;
}
