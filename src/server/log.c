/* Server log line formatting (timestamp, level, request id) and dispatch to the callback. */
#include "server/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static const char *level_name(zs_log_level_t lv) {
    switch (lv) {
    case ZS_LOG_ERROR: return "ERROR";
    case ZS_LOG_WARN: return "WARN";
    case ZS_LOG_INFO: return "INFO";
    default: return "DEBUG";
    }
}

void zs_slog(const zs_slog_t *l, zs_log_level_t lv, const char *rid, const char *fmt, ...) {
    if (l == NULL || l->fn == NULL || lv > l->level) return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t off = 0;
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && gmtime_r(&ts.tv_sec, &tm) != NULL) {
        size_t k = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
        int m = snprintf(line + k, sizeof line - k, ".%03ldZ ", ts.tv_nsec / 1000000L);
        off = k + (m > 0 ? (size_t)m : 0);
    }
    int m = snprintf(line + off, sizeof line - off, "%-5s %s%s%s", level_name(lv),
                     rid ? "[" : "", rid ? rid : "", rid ? "] " : "");
    if (m > 0) off += (size_t)m;
    if (off >= sizeof line) off = sizeof line - 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + off, sizeof line - off, fmt, ap);
    va_end(ap);
    l->fn(l->ctx, lv, line);
}
