/* Server logging: formatted lines with a UTC timestamp, level and request id, handed to the
 * configured callback (the CLI writes them to stderr). Thread-safe. */
#ifndef ZS_SERVER_LOG_H
#define ZS_SERVER_LOG_H

#include "zerostart/server.h"

typedef struct zs_slog {
    zs_log_fn fn;
    void *ctx;
    zs_log_level_t level;
} zs_slog_t;

/* rid may be NULL (server-wide message). */
void zs_slog(const zs_slog_t *l, zs_log_level_t lv, const char *rid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
