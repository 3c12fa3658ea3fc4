/* Argument parsing and formatting helpers for the `zerostart` command. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"

int zs_cli_parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int zs_cli_parse_size(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (s[0] < '0' || s[0] > '9') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s) return -1;
    uint64_t mul = 1;
    if (*end == '\0' || strcasecmp(end, "B") == 0) mul = 1;
    else if (strcasecmp(end, "K") == 0 || strcasecmp(end, "KiB") == 0) mul = 1ull << 10;
    else if (strcasecmp(end, "M") == 0 || strcasecmp(end, "MiB") == 0) mul = 1ull << 20;
    else if (strcasecmp(end, "G") == 0 || strcasecmp(end, "GiB") == 0) mul = 1ull << 30;
    else return -1;
    if (v > UINT64_MAX / mul) return -1;
    *out = v * mul;
    return 0;
}

const char *zs_cli_fmt_bytes(uint64_t b, char *buf, unsigned len) {
    if (b >= 1000000000ull) snprintf(buf, len, "%.2f GB", (double)b / 1e9);
    else if (b >= 1000000ull) snprintf(buf, len, "%.2f MB", (double)b / 1e6);
    else if (b >= 1000ull) snprintf(buf, len, "%.2f kB", (double)b / 1e3);
    else snprintf(buf, len, "%llu B", (unsigned long long)b);
    return buf;
}
